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
//
// Heads split over dies (tensor parallelism inside one NPU; AttentionWork::head_split = s > 1):
// the die computes num_heads / s of the heads for ALL of the NPU's `seqs` sequences, holding
// and reading only its share of the weights: the per-head projections (MLA: q_b, the absorbed
// kv_b parts, o_proj; GQA: the q/k/v columns of its heads, o_proj rows) split by heads, and
// the shared MLA down-projections (q_a, kv_a) split by output columns (each die computes
// ceil(cols / s) of the latent columns; the dies then exchange their halves, which the caller
// models as a sync of the dies between the two stages). The input RMSNorm and the latent
// norms run on every die over all rows (cheap; they need whole rows). The core reads the
// cache of all `seqs`: MLA's latent cache is shared by every head, so each die reads all of
// it; GQA reads its ceil(kv_heads / s) KV heads. o_proj leaves a partial output on each die
// that the caller sums (one on-chip add) before the residual.
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
  // Dies the heads are split over (1: this die runs every head). Precondition: divides
  // config.num_heads.
  uint32_t head_split = 1;
};

// The whole block on one die: attention_input_costs + attention_head_costs + the residual
// add. Precondition: work.head_split == 1 (a split block is launched stage by stage).
std::vector<KernelCost> attention_block_costs(const ModelConfig& config, const AttentionWork& work,
                                              dev::Precision precision);
// Stage 1, before the dies exchange the latent when the heads are split: the input RMSNorm
// and (MLA) the down-projections q_a / kv_a, this die's share of their output columns.
std::vector<KernelCost> attention_input_costs(const ModelConfig& config, const AttentionWork& work,
                                              dev::Precision precision);
// Stage 2: the latent norms, the per-head projections, rotary, the core and o_proj for this
// die's num_heads / head_split heads (a partial output when head_split > 1; no residual).
std::vector<KernelCost> attention_head_costs(const ModelConfig& config, const AttentionWork& work,
                                             dev::Precision precision);

// Weight bytes of one layer's attention block at `precision` (norm weights counted at the
// same size), as held by one die when the heads are split over `head_split` dies (1: the
// whole block, ModelConfig::attention_params()). Precondition: head_split divides num_heads.
double attention_weight_bytes(const ModelConfig& config, dev::Precision precision,
                              uint32_t head_split = 1);
// KV-cache bytes of one sequence position in one layer (BF16) held per NPU when the heads
// are split over `head_split` dies: MLA's latent serves every head, so each die keeps its own
// copy (head_split copies); GQA keeps each die's ceil(kv_heads / head_split) heads.
double kv_cache_bytes_per_token(const ModelConfig& config, uint32_t head_split = 1);

}  // namespace moe::models::cost
