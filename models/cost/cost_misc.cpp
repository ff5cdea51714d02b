// Embedding, LM head and sampling costs (see cost_misc.h).
#include "models/cost/cost_misc.h"

#include "models/cost/cost_linear.h"

namespace moe::models::cost {

KernelCost embedding_cost(uint64_t tokens, uint64_t hidden) {
  return {"embedding", 0, 2.0 * double(tokens) * double(hidden) * kActivationBytes,
          dev::KernelClass::kVector, dev::Precision::kBf16};
}

KernelCost lm_head_cost(uint64_t tokens, uint64_t hidden, uint64_t vocab,
                        dev::Precision precision) {
  return linear_cost(tokens, hidden, vocab, precision, "lm_head");
}

KernelCost sampling_cost(uint64_t tokens, uint64_t vocab) {
  const double entries = double(tokens) * double(vocab);
  return {"sampling", 10.0 * entries, 2.0 * entries * kActivationBytes + double(tokens) * 8.0,
          dev::KernelClass::kVector, dev::Precision::kFp32};
}

}  // namespace moe::models::cost
