// Seeded initialisation: deterministic per tensor and element (any subset equals the full
// materialisation), seed-sensitive, and scaled as documented.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "interconnect/quant_int8.h"
#include "models/weights/weight_init.h"
#include "models/weights/weight_store.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;
using moe::models::testing::tiny_config;

TEST_CASE("models.weights: partial materialisation equals the full one, per tensor") {
  const ModelConfig c = tiny_config();
  ModelWeights a = ModelWeights::random(c, 42).value();
  ModelWeights b = ModelWeights::random(c, 42).value();
  ModelWeights other = ModelWeights::random(c, 43).value();
  uint32_t rng = 1;
  for (const TensorSpec& spec : a.specs()) {
    CAPTURE(spec.name);
    const Tensor full = a.tensor(spec.name).value();
    REQUIRE(full.bytes.size() == spec.size_bytes());
    CHECK(full.shape == spec.shape);
    // Another instance, asked in another order, in pieces: the same bytes.
    const uint64_t n = spec.num_elements();
    const uint32_t elem = dtype_size(spec.dtype);
    const uint64_t first = (rng = rng * 1664525u + 1013904223u) % n;
    const uint64_t count = 1 + (rng >> 8) % (n - first);
    std::vector<uint8_t> piece(count * elem);
    REQUIRE(b.read_into(spec.name, piece, first).ok());
    CHECK(std::memcmp(piece.data(), full.bytes.data() + first * elem, piece.size()) == 0);
    if (spec.role != TensorRole::kNorm)
      CHECK(other.tensor(spec.name).value().bytes != full.bytes);  // the seed matters
    else
      CHECK(other.tensor(spec.name).value().bytes == full.bytes);  // norms are all ones
  }
  // One expert's tensors alone equal those of the full list.
  const ExpertTensors e = b.expert(2, 5).value();
  CHECK(e.gate.bytes == a.tensor(expert_tensor_name(2, 5, ExpertProj::kGate)).value().bytes);
  CHECK(e.up.bytes == a.tensor(expert_tensor_name(2, 5, ExpertProj::kUp)).value().bytes);
  CHECK(e.down.bytes == a.tensor(expert_tensor_name(2, 5, ExpertProj::kDown)).value().bytes);
  CHECK(e.gate.bytes != e.up.bytes);  // different names, different values
  // The value depends on the name, not on the position in the list or the config's size.
  ModelConfig bigger = c;
  bigger.num_experts = 16;
  ModelWeights big = ModelWeights::random(bigger, 42).value();
  CHECK(big.tensor("model.layers.2.self_attn.q_proj.weight").value().bytes ==
        a.tensor("model.layers.2.self_attn.q_proj.weight").value().bytes);
}

TEST_CASE("models.weights: initial values are scaled to keep a forward pass tame") {
  const ModelConfig c = model_config("builtin").value();
  ModelWeights w = ModelWeights::random(c, 1).value();
  auto stats = [&](const std::string& name, double* mean, double* stddev, double* max_abs) {
    const Tensor t = w.tensor(name).value();
    double sum = 0, sq = 0, mx = 0;
    size_t n = 0;
    if (t.dtype == DType::kBf16) {
      for (const uint16_t v : t.bf16()) {
        const double x = ic::bf16_to_float(v);
        sum += x, sq += x * x, mx = std::max(mx, std::abs(x)), ++n;
      }
    } else {
      for (const float x : t.f32()) sum += x, sq += double(x) * x, mx = std::max(mx, std::abs(double(x))), ++n;
    }
    *mean = sum / n;
    *stddev = std::sqrt(sq / n - *mean * *mean);
    *max_abs = mx;
  };
  double mean, sd, mx;
  stats("model.layers.1.self_attn.q_proj.weight", &mean, &sd, &mx);  // [128, 128]
  CHECK(std::abs(mean) < 0.01);
  CHECK(sd == doctest::Approx(1 / std::sqrt(128.0)).epsilon(0.05));
  CHECK(mx <= 2 * std::sqrt(3.0) / std::sqrt(128.0) * 1.01);  // Irwin-Hall bound
  stats("model.embed_tokens.weight", &mean, &sd, &mx);
  CHECK(sd == doctest::Approx(1.0).epsilon(0.05));
  stats("model.layers.2.mlp.experts.7.down_proj.weight", &mean, &sd, &mx);  // [128, 64]
  CHECK(sd == doctest::Approx(1 / std::sqrt(64.0) / std::sqrt(8.0)).epsilon(0.1));
  stats("model.layers.3.mlp.gate.e_score_correction_bias", &mean, &sd, &mx);
  CHECK(mx < 0.05);
  CHECK(sd > 0.005);
  stats("model.norm.weight", &mean, &sd, &mx);
  CHECK(mean == 1.0);
  CHECK(sd == 0.0);
  // init_value agrees with the stored (rounded) value.
  const TensorSpec* spec = w.find_spec("lm_head.weight");
  const Tensor head = w.tensor("lm_head.weight").value();
  for (uint64_t i = 0; i < 100; ++i)
    CHECK(head.bf16()[i * 37] == ic::float_to_bf16(init_value(c, *spec, 1, i * 37)));
}
