// Attention-core costs: count the products and the single pass over the cache (see
// cost_attention.h for the formulas and what is left to the projections).
#include "models/cost/cost_attention.h"

namespace moe::models::cost {

namespace {
constexpr double kSoftmaxFlops = 5.0;  // max, subtract, exp, sum, scale per score
}

KernelCost gqa_decode_cost(uint64_t batch, uint64_t q_heads, uint64_t kv_heads,
                           uint64_t head_dim, uint64_t kv_len) {
  const double scores = double(batch) * double(q_heads) * double(kv_len);
  const double flops = scores * (4.0 * double(head_dim) + kSoftmaxFlops);
  const double cache = double(batch) * double(kv_len) * 2.0 * double(kv_heads) *
                       double(head_dim) * kActivationBytes;
  const double qo = 2.0 * double(batch) * double(q_heads) * double(head_dim) * kActivationBytes;
  return {"gqa_decode", flops, cache + qo, dev::KernelClass::kMatmul, dev::Precision::kBf16};
}

KernelCost causal_prefill_attention_cost(uint64_t seqs, uint64_t seq_len, uint64_t q_heads,
                                         uint64_t kv_heads, uint64_t qk_dim, uint64_t v_dim) {
  const double pairs = double(seq_len) * (double(seq_len) + 1.0) / 2.0;
  const double flops = double(seqs) * double(q_heads) * pairs *
                       (2.0 * double(qk_dim) + 2.0 * double(v_dim) + kSoftmaxFlops);
  const double per_token = double(q_heads) * (double(qk_dim) + double(v_dim)) +
                           double(kv_heads) * (double(qk_dim) + double(v_dim));
  const double bytes = double(seqs) * double(seq_len) * per_token * kActivationBytes;
  return {"attention_prefill", flops, bytes, dev::KernelClass::kMatmul, dev::Precision::kBf16};
}

KernelCost mla_decode_cost(uint64_t batch, uint64_t heads, uint64_t kv_lora_rank,
                           uint64_t rope_dim, uint64_t kv_len) {
  const double c = double(kv_lora_rank), r = double(rope_dim);
  const double scores = double(batch) * double(heads) * double(kv_len);
  const double flops = scores * (2.0 * (c + r) + 2.0 * c + kSoftmaxFlops);
  const double cache = double(batch) * double(kv_len) * (c + r) * kActivationBytes;
  const double qo = double(batch) * double(heads) * ((c + r) + c) * kActivationBytes;
  return {"mla_decode", flops, cache + qo, dev::KernelClass::kMatmul, dev::Precision::kBf16};
}

}  // namespace moe::models::cost
