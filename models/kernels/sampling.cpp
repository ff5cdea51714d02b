// Sampling: validation, greedy argmax, softmax with temperature, nucleus cut, seeded draw.
//
// Design: the random number is a pure function of (seed, position) rather than a stream
// state, so batching, ordering and expert placement cannot change a request's tokens. With
// top_p == 1 the draw walks the probabilities in id order (O(vocab), no sort); with
// top_p < 1 the tokens of nonzero probability are sorted by (probability desc, id asc) and
// the walk stops at the nucleus' edge. Sums are in double so the nucleus edge and the walk
// are not shifted by FP32 rounding over a 100k+ vocabulary.
#include "models/kernels/sampling.h"

#include <algorithm>
#include <cmath>

#include "runtime/base/check.h"

namespace moe::models::kernels {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Status check_logits(std::span<const float> logits, uint32_t* argmax) {
  if (logits.empty()) return make_error(StatusCode::kInvalidArgument, "sampling: empty vocabulary");
  uint32_t best = 0;
  bool any_finite = false;
  for (uint32_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    if (std::isnan(l) || l == INFINITY)
      return make_error(StatusCode::kInvalidArgument, "sampling: logit %u is %g", i, l);
    if (l != -INFINITY) any_finite = true;
    if (l > logits[best]) best = i;
  }
  if (!any_finite)
    return make_error(StatusCode::kInvalidArgument,
                      "sampling: all %zu logits are -inf", logits.size());
  *argmax = best;
  return ok_status();
}

}  // namespace

Status validate_sampling_params(const SamplingParams& params) {
  if (!(params.temperature >= 0.0f) || std::isinf(params.temperature))
    return make_error(StatusCode::kInvalidArgument,
                      "sampling: temperature %g must be finite and >= 0 (0 is greedy)",
                      params.temperature);
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f))
    return make_error(StatusCode::kInvalidArgument, "sampling: top_p %g must be in (0, 1]",
                      params.top_p);
  return ok_status();
}

double sampling_uniform(uint64_t seed, uint64_t position) {
  const uint64_t x = splitmix64(splitmix64(seed) ^ position);
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

StatusOr<uint32_t> sample_token(std::span<const float> logits, const SamplingParams& params,
                                uint64_t position, SamplingScratch& scratch) {
  MOE_TRY(validate_sampling_params(params));
  uint32_t argmax = 0;
  MOE_TRY(check_logits(logits, &argmax));
  if (params.temperature == 0.0f) return argmax;

  const uint32_t vocab = static_cast<uint32_t>(logits.size());
  if (scratch.probs.size() < vocab) scratch.probs.resize(vocab);
  float* p = scratch.probs.data();
  const float max_logit = logits[argmax];
  const float inv_t = 1.0f / params.temperature;
  double total = 0.0;
  for (uint32_t i = 0; i < vocab; ++i) {
    p[i] = std::exp((logits[i] - max_logit) * inv_t);  // -inf logits give 0
    total += p[i];
  }
  const double u = sampling_uniform(params.seed, position);

  if (params.top_p >= 1.0f) {
    const double target = u * total;
    double cum = 0.0;
    uint32_t last_nonzero = argmax;
    for (uint32_t i = 0; i < vocab; ++i) {
      if (p[i] == 0.0f) continue;
      cum += p[i];
      last_nonzero = i;
      if (cum > target) return i;
    }
    return last_nonzero;  // rounding left target at the very end
  }

  std::vector<uint32_t>& order = scratch.order;
  order.clear();
  for (uint32_t i = 0; i < vocab; ++i)
    if (p[i] > 0.0f) order.push_back(i);
  std::sort(order.begin(), order.end(),
            [p](uint32_t a, uint32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  const double nucleus_mass = static_cast<double>(params.top_p) * total;
  size_t nucleus = 0;
  double cum = 0.0;
  while (nucleus < order.size()) {
    cum += p[order[nucleus++]];
    if (cum >= nucleus_mass) break;
  }
  const double target = u * cum;
  double walk = 0.0;
  for (size_t k = 0; k < nucleus; ++k) {
    walk += p[order[k]];
    if (walk > target) return order[k];
  }
  return order[nucleus - 1];
}

Status sample_tokens(const float* logits, uint32_t rows, uint32_t vocab,
                     std::span<const SamplingParams> params, std::span<const uint64_t> positions,
                     SamplingScratch& scratch, std::span<uint32_t> tokens) {
  if (params.size() != rows || positions.size() != rows || tokens.size() != rows)
    return make_error(StatusCode::kInvalidArgument,
                      "sampling: %u rows but %zu params, %zu positions, %zu token slots", rows,
                      params.size(), positions.size(), tokens.size());
  for (uint32_t r = 0; r < rows; ++r) {
    StatusOr<uint32_t> t = sample_token({logits + size_t{r} * vocab, vocab}, params[r],
                                        positions[r], scratch);
    if (!t.ok()) {
      Status s = t.status();
      return s.with_context(strformat("row %u", r));
    }
    tokens[r] = *t;
  }
  return ok_status();
}

}  // namespace moe::models::kernels
