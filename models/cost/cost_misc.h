// Costs of the step's ends: embedding lookup, LM head, sampling.
// Embedding: a gather of `tokens` rows of `hidden` BF16 (read + write). LM head: a linear
// hidden -> vocab (cost_linear), BF16 logits. Sampling: per token a few vector passes over
// the vocabulary (temperature, softmax, top-p selection: ~10 flops and two reads of the
// logits per entry).
#pragma once

#include <cstdint>

#include "models/cost/cost.h"

namespace moe::models::cost {

KernelCost embedding_cost(uint64_t tokens, uint64_t hidden);
KernelCost lm_head_cost(uint64_t tokens, uint64_t hidden, uint64_t vocab,
                        dev::Precision precision);
KernelCost sampling_cost(uint64_t tokens, uint64_t vocab);

}  // namespace moe::models::cost
