// Attention-block cost lists from a ModelConfig (see cost_layer.h). A block is built in two
// stages (before and after the latent exchange of a head-split block) so the simulation can
// launch a split block with a sync of the dies between them; the unsplit list is the two
// stages and the residual add.
#include "models/cost/cost_layer.h"

#include "models/cost/cost_attention.h"
#include "models/cost/cost_linear.h"
#include "models/cost/cost_norm.h"
#include "models/cost/cost_rope.h"
#include "runtime/base/check.h"

namespace moe::models::cost {

namespace {

uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
uint64_t split_of(const AttentionWork& w) { return w.head_split == 0 ? 1 : w.head_split; }

}  // namespace

std::vector<KernelCost> attention_input_costs(const ModelConfig& c, const AttentionWork& w,
                                              dev::Precision precision) {
  std::vector<KernelCost> out;
  if (w.seqs == 0 || w.tokens_per_seq == 0) return out;
  const uint64_t n = w.seqs * w.tokens_per_seq;  // tokens on this die
  const uint64_t h = c.hidden, s = split_of(w);
  out.push_back(rmsnorm_cost(n, h));
  if (c.attention == AttentionKind::kMla) {
    const MlaShape& m = c.mla;
    if (m.q_lora_rank != 0)
      out.push_back(linear_cost(n, h, ceil_div(m.q_lora_rank, s), precision, "q_a_proj"));
    out.push_back(linear_cost(n, h, ceil_div(uint64_t{m.kv_lora_rank} + m.qk_rope_head_dim, s),
                              precision, "kv_a_proj"));
  }
  return out;
}

std::vector<KernelCost> attention_head_costs(const ModelConfig& c, const AttentionWork& w,
                                             dev::Precision precision) {
  std::vector<KernelCost> out;
  if (w.seqs == 0 || w.tokens_per_seq == 0) return out;
  const uint64_t n = w.seqs * w.tokens_per_seq;
  const uint64_t h = c.hidden, s = split_of(w);
  MOE_ASSERT(c.num_heads % s == 0);
  const uint64_t heads = c.num_heads / s;  // this die's heads
  if (c.attention == AttentionKind::kMla) {
    const MlaShape& m = c.mla;
    const uint64_t qk_head = uint64_t{m.qk_nope_head_dim} + m.qk_rope_head_dim;
    if (m.q_lora_rank != 0) {
      out.push_back(rmsnorm_cost(n, m.q_lora_rank));
      out.push_back(linear_cost(n, m.q_lora_rank, heads * qk_head, precision, "q_b_proj"));
    } else {
      out.push_back(linear_cost(n, h, heads * qk_head, precision, "q_proj"));
    }
    out.push_back(rmsnorm_cost(n, m.kv_lora_rank));
    out.push_back(rope_cost(n, heads + 1, m.qk_rope_head_dim));
    if (!w.prefill) {
      // Absorbed: q_nope into the latent space, the core over the latent cache, the latent
      // output back through W_UV; per head, BF16.
      out.push_back(batched_linear_cost(heads, n, m.qk_nope_head_dim, m.kv_lora_rank,
                                        dev::Precision::kBf16, "mla_absorb_q"));
      out.push_back(mla_decode_cost(w.seqs, heads * w.tokens_per_seq, m.kv_lora_rank,
                                    m.qk_rope_head_dim, w.kv_len + w.tokens_per_seq));
      out.push_back(batched_linear_cost(heads, n, m.kv_lora_rank, m.v_head_dim,
                                        dev::Precision::kBf16, "mla_absorb_out"));
    } else {
      out.push_back(linear_cost(n, m.kv_lora_rank,
                                heads * (uint64_t{m.qk_nope_head_dim} + m.v_head_dim), precision,
                                "kv_b_proj"));
      out.push_back(causal_prefill_attention_cost(w.seqs, w.tokens_per_seq, heads, heads,
                                                  qk_head, m.v_head_dim));
    }
    out.push_back(linear_cost(n, heads * m.v_head_dim, h, precision, "o_proj"));
  } else {
    const uint64_t kvh = ceil_div(c.num_kv_heads, s), d = c.head_dim;
    out.push_back(linear_cost(n, h, (heads + 2 * kvh) * d, precision, "qkv_proj"));
    if (c.qk_norm) out.push_back(rmsnorm_cost(n * (heads + kvh), d));
    out.push_back(rope_cost(n, heads + kvh, d));
    if (!w.prefill)
      out.push_back(gqa_decode_cost(w.seqs, heads * w.tokens_per_seq, kvh, d,
                                    w.kv_len + w.tokens_per_seq));
    else
      out.push_back(causal_prefill_attention_cost(w.seqs, w.tokens_per_seq, heads, kvh, d, d));
    out.push_back(linear_cost(n, heads * d, h, precision, "o_proj"));
  }
  return out;
}

std::vector<KernelCost> attention_block_costs(const ModelConfig& c, const AttentionWork& w,
                                              dev::Precision precision) {
  MOE_ASSERT(split_of(w) == 1);
  std::vector<KernelCost> out = attention_input_costs(c, w, precision);
  if (out.empty()) return out;
  const std::vector<KernelCost> heads = attention_head_costs(c, w, precision);
  out.insert(out.end(), heads.begin(), heads.end());
  out.push_back(residual_add_cost(w.seqs * w.tokens_per_seq, c.hidden));
  return out;
}

double attention_weight_bytes(const ModelConfig& c, dev::Precision precision, uint32_t head_split) {
  // Projections at `precision`; the few norm weights are counted at the same size (they
  // are under 0.01% of the block) and held whole by every die.
  const uint64_t s = head_split == 0 ? 1 : head_split;
  MOE_ASSERT(c.num_heads % s == 0);
  if (s == 1) return double(c.attention_params()) * weight_bytes_per_elem(precision);
  const uint64_t h = c.hidden, heads = c.num_heads / s;
  uint64_t p = 2 * h;  // the layer's two RMSNorm weights
  if (c.attention == AttentionKind::kMla) {
    const MlaShape& m = c.mla;
    const uint64_t qk_head = uint64_t{m.qk_nope_head_dim} + m.qk_rope_head_dim;
    if (m.q_lora_rank != 0)
      p += h * ceil_div(m.q_lora_rank, s) + m.q_lora_rank + uint64_t{m.q_lora_rank} * heads * qk_head;
    else
      p += h * heads * qk_head;
    p += h * ceil_div(uint64_t{m.kv_lora_rank} + m.qk_rope_head_dim, s) + m.kv_lora_rank;
    p += uint64_t{m.kv_lora_rank} * heads * (uint64_t{m.qk_nope_head_dim} + m.v_head_dim);
    p += heads * m.v_head_dim * h;
  } else {
    const uint64_t kvh = ceil_div(c.num_kv_heads, s), d = c.head_dim;
    p += h * heads * d + 2 * h * kvh * d;
    p += heads * d * h;
    if (c.qk_norm) p += 2 * d;
  }
  return double(p) * weight_bytes_per_elem(precision);
}

double kv_cache_bytes_per_token(const ModelConfig& c, uint32_t head_split) {
  const uint64_t s = head_split == 0 ? 1 : head_split;
  if (s == 1) return double(c.kv_cache_elems_per_token()) * kActivationBytes;
  if (c.attention == AttentionKind::kMla)
    return double(s) * double(c.kv_cache_elems_per_token()) * kActivationBytes;
  return double(s) * 2.0 * double(ceil_div(c.num_kv_heads, s)) * double(c.head_dim) *
         kActivationBytes;
}

}  // namespace moe::models::cost
