// Costs of the attention cores (the projections around them are linear costs, built by
// cost_layer.h). All products run on the matrix engine (kMatmul, BF16); the KV cache is
// BF16.
//
// GQA decode: `batch` sequences, one new token each, attending to kv_len cached positions:
//   FLOPs  batch x q_heads x kv_len x (2 head_dim for q.k + 2 head_dim for p.v + 5 softmax)
//   bytes  the K and V cache read once (batch x kv_len x 2 kv_heads x head_dim x 2 B) +
//          q read and the output written.
// Causal prefill (GQA, and MLA in its non-absorbed form): `seqs` sequences of seq_len new
// tokens; position i attends to positions 0..i: seq_len (seq_len + 1) / 2 pairs per head:
//   FLOPs  seqs x q_heads x pairs x (2 qk_dim + 2 v_dim + 5)
//   bytes  q, k, v read and the output written once (flash-style tiling keeps the score
//          matrix on chip).
// MLA decode, absorbed form (DeepSeek-V2/V3): the cache holds per position the latent
// (kv_lora_rank) and the shared rotary key (rope_dim); each head's query is projected into
// the latent space (cost_linear batched product, in the layer list) so the core reads the
// latent cache once for all heads (MQA-like):
//   FLOPs  batch x heads x kv_len x (2 (kv_lora_rank + rope_dim) + 2 kv_lora_rank + 5)
//   bytes  batch x kv_len x (kv_lora_rank + rope_dim) x 2 B + queries and outputs.
#pragma once

#include <cstdint>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost gqa_decode_cost(uint64_t batch, uint64_t q_heads, uint64_t kv_heads,
                           uint64_t head_dim, uint64_t kv_len);
KernelCost causal_prefill_attention_cost(uint64_t seqs, uint64_t seq_len, uint64_t q_heads,
                                         uint64_t kv_heads, uint64_t qk_dim, uint64_t v_dim);
KernelCost mla_decode_cost(uint64_t batch, uint64_t heads, uint64_t kv_lora_rank,
                           uint64_t rope_dim, uint64_t kv_len);

}  // namespace moe::models::cost
