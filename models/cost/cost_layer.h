// A layer's kernel costs built from a ModelConfig: what the engine (functional mode) and the
// timing simulation (models/simulate.h) launch, per die, for one attention block, and the
// weight figures of the HBM budget.
//
// AttentionWork: `seqs` sequences on this die, each with `tokens_per_seq` new tokens
//   (decode: 1, or 2 when a multi-token-prediction draft is verified; prefill: the prompt
//   length) after `kv_len` cached positions (prefill: 0). Decode with 2 tokens per sequence
//   reads each sequence's cache once for both queries (a fused verification kernel).
// The attention block: input RMSNorm, projections (at `precision`: BF16, or W8A8 INT8),
// their norms, rotary embeddings, the core (cost_attention.h: MLA decode in the absorbed
// form reading the latent cache; prefill non-absorbed with the latent decompressed by
// kv_b), the output projection, and the residual add. The router, the FFN and the second
// residual are listed by the simulation, which knows the per-die rows.
#pragma once

#include <cstdint>
#include <vector>

#include "models/cost/cost.h"
#include "models/model_config.h"

namespace moe::models::cost {

struct AttentionWork {
  uint64_t seqs = 0;
  uint64_t tokens_per_seq = 1;
  uint64_t kv_len = 0;
  bool prefill = false;
};

std::vector<KernelCost> attention_block_costs(const ModelConfig& config, const AttentionWork& work,
                                              dev::Precision precision);

// Weight bytes of one layer's attention block at `precision` (norm weights BF16).
double attention_weight_bytes(const ModelConfig& config, dev::Precision precision);
// KV-cache bytes of one sequence position in one layer (BF16).
double kv_cache_bytes_per_token(const ModelConfig& config);

}  // namespace moe::models::cost
