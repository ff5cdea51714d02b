// Helpers for the models kernel and layer tests: seeded random weights in BF16, and naive
// references in double precision written independently of the code under test (router,
// SwiGLU expert, whole MoE layer).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/kernels/expert_ffn.h"
#include "models/kernels/router.h"
#include "models/moe/moe_layer.h"

namespace modeltest {

using namespace moe;
using namespace moe::models;

// splitmix64: fast, seeded, the same on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-a, a).
  float uniform(float a) { return static_cast<float>((next() >> 11) * 0x1.0p-53 * 2.0 - 1.0) * a; }
};

inline std::vector<uint16_t> random_bf16(Rng& rng, uint64_t n, float a) {
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = ic::float_to_bf16(rng.uniform(a));
  return v;
}
// BF16-representable floats (what a model's activations are).
inline std::vector<float> random_bf16_floats(Rng& rng, uint64_t n, float a) {
  std::vector<float> v(n);
  for (auto& x : v) x = ic::round_to_bf16(rng.uniform(a));
  return v;
}

// ---- router reference ----
struct RefRoute {
  std::vector<int32_t> ids;  // per token top_k
  std::vector<double> weights;
};
inline RefRoute ref_route(const RouterConfig& c, std::span<const float> logits, uint32_t tokens,
                          std::span<const float> bias) {
  const uint32_t E = c.num_experts, K = c.top_k, G = c.num_groups, per = E / G;
  RefRoute r;
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* l = logits.data() + uint64_t{t} * E;
    std::vector<double> s(E), sel(E);
    if (c.score == RouterScore::kSoftmax) {
      double mx = *std::max_element(l, l + E), sum = 0;
      for (uint32_t e = 0; e < E; ++e) sum += std::exp(double(l[e]) - mx);
      for (uint32_t e = 0; e < E; ++e) s[e] = std::exp(double(l[e]) - mx) / sum;
    } else {
      for (uint32_t e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-double(l[e])));
    }
    for (uint32_t e = 0; e < E; ++e) sel[e] = s[e] + (bias.empty() ? 0.0 : double(bias[e]));
    std::vector<uint32_t> order_g(G);
    std::iota(order_g.begin(), order_g.end(), 0);
    std::vector<double> gs(G);
    for (uint32_t g = 0; g < G; ++g) {
      std::vector<double> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(v.rbegin(), v.rend());
      gs[g] = v[0] + (per > 1 ? v[1] : 0.0);
    }
    std::stable_sort(order_g.begin(), order_g.end(),
                     [&](uint32_t a, uint32_t b) { return gs[a] > gs[b]; });
    std::vector<uint32_t> cand;
    for (uint32_t e = 0; e < E; ++e)
      for (uint32_t k = 0; k < (G > 1 ? c.topk_groups : G); ++k)
        if (e / per == order_g[k]) cand.push_back(e);
    std::stable_sort(cand.begin(), cand.end(),
                     [&](uint32_t a, uint32_t b) { return sel[a] > sel[b]; });
    double sum = 0;
    for (uint32_t k = 0; k < K; ++k) sum += s[cand[k]];
    for (uint32_t k = 0; k < K; ++k) {
      r.ids.push_back(static_cast<int32_t>(cand[k]));
      r.weights.push_back(s[cand[k]] / (c.normalize_topk ? sum : 1.0) * c.routed_scaling);
    }
  }
  return r;
}

// ---- SwiGLU expert reference (double) ----
inline std::vector<double> ref_expert(const float* x, uint32_t H, uint32_t I,
                                      const ExpertWeights& w) {
  std::vector<double> h(I), y(H, 0.0);
  for (uint32_t i = 0; i < I; ++i) {
    double g = 0, u = 0;
    for (uint32_t k = 0; k < H; ++k) {
      g += double(x[k]) * ic::bf16_to_float(w.gate_bf16[uint64_t{i} * H + k]);
      u += double(x[k]) * ic::bf16_to_float(w.up_bf16[uint64_t{i} * H + k]);
    }
    h[i] = g / (1.0 + std::exp(-g)) * u;
  }
  for (uint32_t o = 0; o < H; ++o)
    for (uint32_t i = 0; i < I; ++i) y[o] += h[i] * ic::bf16_to_float(w.down_bf16[uint64_t{o} * I + i]);
  return y;
}

// Storage for one expert's random weights, scaled like a trained layer (~1/sqrt(fan-in)).
struct ExpertData {
  std::vector<uint16_t> gate, up, down;
  ExpertData(Rng& rng, uint32_t H, uint32_t I)
      : gate(random_bf16(rng, uint64_t{I} * H, 1.7f / std::sqrt(float(H)))),
        up(random_bf16(rng, uint64_t{I} * H, 1.7f / std::sqrt(float(H)))),
        down(random_bf16(rng, uint64_t{H} * I, 1.7f / std::sqrt(float(I)))) {}
  ExpertWeights view() const { return {gate, up, down}; }
};

// A whole MoE layer's random weights.
struct LayerData {
  std::vector<float> gate, bias;
  std::vector<ExpertData> routed, shared;
  LayerData(const ModelConfig& c, uint64_t seed) {
    Rng rng(seed);
    gate.resize(uint64_t{c.num_experts} * c.hidden);
    for (auto& g : gate) g = rng.uniform(2.0f / std::sqrt(float(c.hidden)));
    if (c.router_bias) {
      bias.resize(c.num_experts);
      for (auto& b : bias) b = rng.uniform(0.05f);
    }
    for (uint32_t e = 0; e < c.num_experts; ++e)
      routed.emplace_back(rng, c.hidden, c.expert_intermediate);
    for (uint32_t e = 0; e < c.num_shared_experts; ++e)
      shared.emplace_back(rng, c.hidden, c.expert_intermediate);
  }
  RouterWeights router() const { return {gate, bias}; }
  std::vector<ExpertWeights> shared_views() const {
    std::vector<ExpertWeights> v;
    for (const auto& s : shared) v.push_back(s.view());
    return v;
  }
  MoeLayerWeights weights() const {
    MoeLayerWeights w;
    w.router = router();
    for (const auto& e : routed) w.routed.push_back(e.view());
    w.shared = shared_views();
    return w;
  }
};

// The layer in double: logits, routing (ref_route), experts, weighted sum, shared experts.
// *ids (optional) gets the reference routing.
inline std::vector<double> ref_layer(const ModelConfig& c, const LayerData& d,
                                     std::span<const float> x, uint32_t tokens,
                                     std::vector<int32_t>* ids = nullptr) {
  const uint32_t H = c.hidden, E = c.num_experts, I = c.expert_intermediate;
  std::vector<float> logits(uint64_t{tokens} * E);
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t e = 0; e < E; ++e) {
      double acc = 0;
      for (uint32_t h = 0; h < H; ++h) acc += double(x[uint64_t{t} * H + h]) * d.gate[uint64_t{e} * H + h];
      logits[uint64_t{t} * E + e] = static_cast<float>(acc);
    }
  const RefRoute r = ref_route(RouterConfig::from_model(c), logits, tokens, d.bias);
  if (ids != nullptr) *ids = r.ids;
  std::vector<double> out(uint64_t{tokens} * H, 0.0);
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* xt = x.data() + uint64_t{t} * H;
    for (uint32_t k = 0; k < c.top_k; ++k) {
      const auto y = ref_expert(xt, H, I, d.routed[r.ids[uint64_t{t} * c.top_k + k]].view());
      for (uint32_t h = 0; h < H; ++h) out[uint64_t{t} * H + h] += r.weights[uint64_t{t} * c.top_k + k] * y[h];
    }
    for (const auto& s : d.shared) {
      const auto y = ref_expert(xt, H, I, s.view());
      for (uint32_t h = 0; h < H; ++h) out[uint64_t{t} * H + h] += y[h];
    }
  }
  return out;
}

}  // namespace modeltest
