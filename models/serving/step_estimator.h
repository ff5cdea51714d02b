// Predicting the modelled duration of an engine step from what it carries, for the TPOT
// target of the scheduler (server.h).
//
// The engine reports each step's modelled duration (StepStats::modelled_ns: the timing
// model's figure, in functional mode too). A step's DP ranks run in parallel and meet at
// every MoE layer's dispatch and combine, so its duration follows its busiest rank: the
// estimator fits
//     step_ns ~ a + b * tokens + c * kv_positions / 1024
// (tokens: the most any DP rank put through the step; kv_positions: the most KV positions
// any rank's attention read) by least squares over the last kWindow observed steps, with
// a small ridge term so a window of equal shapes (a steady batch) still gives a finite,
// non-negative fit. Coefficients are clamped at >= 0: a step never gets cheaper with more
// work. Until kMinObservations steps are seen, ready() is false and estimates are 0 (the
// scheduler then relies on feedback: it holds admissions after a step over the target).
//
// Multi-token prediction (MTP): a decode step that verifies one draft token per sequence
// carries 2 tokens per sequence and yields 1 + accept tokens on average, so
// tpot = step(2 tokens per sequence) / (1 + accept) (models/simulate.h's definition).
//
// Thread-safety: none (the server's driving thread).
#pragma once

#include <cstdint>
#include <vector>

namespace moe::models::serving {

class StepTimeEstimator {
 public:
  static constexpr uint32_t kWindow = 256;
  static constexpr uint32_t kMinObservations = 3;

  void observe(uint32_t tokens, uint64_t kv_positions, double modelled_ns);
  bool ready() const { return count_ >= kMinObservations; }
  uint32_t observations() const { return count_; }
  // Modelled ns of a step whose busiest rank carries `tokens` tokens reading `kv_positions`
  // cached positions; 0 until ready().
  double estimate_ns(uint32_t tokens, uint64_t kv_positions) const;
  // Modelled TPOT of decode at `batch` sequences per DP rank of `kv_len` positions each;
  // mtp 0 or 1 (one draft token verified per step, accepted with probability `accept`).
  double estimate_tpot_ns(uint32_t batch, uint32_t kv_len, uint32_t mtp = 0, double accept = 0.7) const;
  // The largest batch per DP rank (1..max_batch) whose estimated step stays within
  // target_ns at kv_len positions per sequence; 1 when even one does not; max_batch when
  // not ready().
  uint32_t max_batch_within(double target_ns, uint32_t kv_len, uint32_t max_batch) const;
  // The most tokens a step may carry (1..max_tokens) within target_ns when the busiest rank
  // reads kv_positions; max_tokens when not ready().
  uint32_t max_tokens_within(double target_ns, uint64_t kv_positions, uint32_t max_tokens) const;
  // The fitted coefficients: a (ns), b (ns per token), c (ns per 1024 positions).
  double fixed_ns() const { return coef_[0]; }
  double per_token_ns() const { return coef_[1]; }
  double per_kkv_ns() const { return coef_[2]; }

 private:
  struct Sample {
    double x[3];
    double y;
  };
  void refit();
  std::vector<Sample> window_;  // ring of the last kWindow samples
  uint32_t next_ = 0;
  uint32_t count_ = 0;
  double coef_[3] = {0, 0, 0};
};

}  // namespace moe::models::serving
