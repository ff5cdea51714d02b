// StepTimeEstimator: ridge least squares over a ring of samples, refit on every observation
// (3 unknowns: a 3x3 system solved by Gaussian elimination with partial pivoting; the
// window is small, so the refit costs microseconds of wall time per step).
#include "models/serving/step_estimator.h"

#include <algorithm>
#include <cmath>

namespace moe::models::serving {

void StepTimeEstimator::observe(uint32_t tokens, uint64_t kv_positions, double modelled_ns) {
  if (!(modelled_ns >= 0) || !std::isfinite(modelled_ns)) return;
  Sample s{{1.0, double(tokens), double(kv_positions) / 1024.0}, modelled_ns};
  if (window_.size() < kWindow) {
    window_.push_back(s);
  } else {
    window_[next_] = s;
  }
  next_ = (next_ + 1) % kWindow;
  ++count_;
  refit();
}

void StepTimeEstimator::refit() {
  double a[3][4] = {};
  double mean_y = 0;
  for (const Sample& s : window_) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) a[i][j] += s.x[i] * s.x[j];
      a[i][3] += s.x[i] * s.y;
    }
    mean_y += s.y;
  }
  mean_y /= double(window_.size());
  // Ridge on the slopes only, scaled to the data, so equal shapes still solve.
  const double lambda = 1e-3 * double(window_.size());
  a[1][1] += lambda;
  a[2][2] += lambda;
  for (int col = 0; col < 3; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 3; ++r)
      if (std::fabs(a[r][col]) > std::fabs(a[pivot][col])) pivot = r;
    if (std::fabs(a[pivot][col]) < 1e-12) {
      coef_[0] = mean_y;  // degenerate: the mean
      coef_[1] = coef_[2] = 0;
      return;
    }
    for (int j = 0; j < 4; ++j) std::swap(a[col][j], a[pivot][j]);
    for (int r = 0; r < 3; ++r) {
      if (r == col) continue;
      const double f = a[r][col] / a[col][col];
      for (int j = col; j < 4; ++j) a[r][j] -= f * a[col][j];
    }
  }
  for (int i = 0; i < 3; ++i) coef_[i] = a[i][3] / a[i][i];
  // Monotone: clamp negative slopes, then refit the intercept to the mean residual.
  if (coef_[1] < 0 || coef_[2] < 0) {
    coef_[1] = std::max(coef_[1], 0.0);
    coef_[2] = std::max(coef_[2], 0.0);
    double r = 0;
    for (const Sample& s : window_) r += s.y - coef_[1] * s.x[1] - coef_[2] * s.x[2];
    coef_[0] = r / double(window_.size());
  }
  coef_[0] = std::max(coef_[0], 0.0);
}

double StepTimeEstimator::estimate_ns(uint32_t tokens, uint64_t kv_positions) const {
  if (!ready()) return 0;
  return coef_[0] + coef_[1] * double(tokens) + coef_[2] * double(kv_positions) / 1024.0;
}

double StepTimeEstimator::estimate_tpot_ns(uint32_t batch, uint32_t kv_len, uint32_t mtp,
                                           double accept) const {
  const uint32_t per_seq = mtp > 0 ? 2 : 1;
  const double step = estimate_ns(batch * per_seq, uint64_t{batch} * kv_len);
  return mtp > 0 ? step / (1.0 + std::clamp(accept, 0.0, 1.0)) : step;
}

uint32_t StepTimeEstimator::max_batch_within(double target_ns, uint32_t kv_len,
                                             uint32_t max_batch) const {
  if (!ready()) return max_batch;
  uint32_t best = 1;
  for (uint32_t b = 1; b <= max_batch; ++b)
    if (estimate_ns(b, uint64_t{b} * kv_len) <= target_ns) best = b;
  return best;
}

uint32_t StepTimeEstimator::max_tokens_within(double target_ns, uint64_t kv_positions,
                                              uint32_t max_tokens) const {
  if (!ready()) return max_tokens;
  uint32_t best = 1;
  for (uint32_t t = 1; t <= max_tokens; ++t)
    if (estimate_ns(t, kv_positions) <= target_ns) best = t;
  return best;
}

}  // namespace moe::models::serving
