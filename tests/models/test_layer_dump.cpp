// `moe layer-dump`'s library (models/moe/layer_dump.h): the files are read back with the
// safetensors reader and the layer is recomputed FROM THE FILES ALONE by a naive
// double-precision reference written here (what an outside checker does: sigmoid/softmax
// scores, bias for selection only, group-limited top-k, normalisation, scaling, SwiGLU
// experts, fused shared experts), for the built-in model (sigmoid, bias, 8 groups, one shared
// expert) and for a softmax variant (no bias, no groups, no normalisation, scaling 2.5, two
// shared experts fused). Plus the refusals, the size guard, --force and the input generator.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "interconnect/quant_int8.h"
#include "models/moe/layer_dump.h"
#include "models/weights/safetensors_reader.h"
#include "models/weights/weight_spec.h"
#include "models/weights/weight_store.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;
using moe::models::testing::TempDir;

namespace {

// ---- reading the dump ----
struct Dump {
  SafetensorsFile input, weights, router, output;
};

Dump open_dump(const std::string& dir) {
  Dump d;
  for (auto [file, name] : {std::pair{&d.input, "input"}, {&d.weights, "weights"},
                            {&d.router, "router"}, {&d.output, "output"}}) {
    auto f = SafetensorsFile::open(dir + "/" + name + ".safetensors");
    REQUIRE_MESSAGE(f.ok(), f.status().to_string());
    *file = std::move(f).value();
  }
  return d;
}

const TensorInfo& info(const SafetensorsFile& f, const std::string& name, DType dtype,
                       std::vector<uint64_t> shape) {
  const TensorInfo* t = f.find(name);
  REQUIRE_MESSAGE(t != nullptr, name);
  REQUIRE_MESSAGE(t->dtype == dtype, name);
  REQUIRE_MESSAGE(t->shape == shape, name << " " << shape_to_string(t->shape));
  return *t;
}

std::vector<double> read_f32(const SafetensorsFile& f, const std::string& name,
                             std::vector<uint64_t> shape) {
  const auto bytes = f.data(info(f, name, DType::kF32, shape));
  std::vector<double> v(bytes.size() / 4);
  for (size_t i = 0; i < v.size(); ++i) {
    float x;
    std::memcpy(&x, bytes.data() + 4 * i, 4);
    v[i] = x;
  }
  return v;
}

std::vector<double> read_bf16(const SafetensorsFile& f, const std::string& name,
                              std::vector<uint64_t> shape) {
  const auto bytes = f.data(info(f, name, DType::kBf16, shape));
  std::vector<double> v(bytes.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    v[i] = ic::bf16_to_float(b);
  }
  return v;
}

std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name,
                              std::vector<uint64_t> shape) {
  const auto bytes = f.data(info(f, name, DType::kI32, shape));
  std::vector<int32_t> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

// ---- the reference, from the files only ----
std::string mlp(uint32_t layer, const std::string& rest) {
  return "model.layers." + std::to_string(layer) + ".mlp." + rest;
}

// y = W_down (silu(W_gate x) * (W_up x)), W_gate/W_up [I][H], W_down [H][I].
std::vector<double> ref_ffn(const double* x, uint32_t H, uint32_t I, const std::vector<double>& g,
                            const std::vector<double>& u, const std::vector<double>& d) {
  std::vector<double> h(I), y(H, 0.0);
  for (uint32_t i = 0; i < I; ++i) {
    double a = 0, b = 0;
    for (uint32_t k = 0; k < H; ++k) {
      a += x[k] * g[uint64_t{i} * H + k];
      b += x[k] * u[uint64_t{i} * H + k];
    }
    h[i] = a / (1.0 + std::exp(-a)) * b;
  }
  for (uint32_t o = 0; o < H; ++o)
    for (uint32_t i = 0; i < I; ++i) y[o] += d[uint64_t{o} * I + i] * h[i];
  return y;
}

struct Reference {
  std::vector<double> logits;   // T x E
  std::vector<int32_t> ids;     // T x K
  std::vector<double> weights;  // T x K
  std::vector<double> y;        // T x H
};

Reference reference(const ModelConfig& c, uint32_t layer, const Dump& d, uint32_t T) {
  const uint32_t H = c.hidden, E = c.num_experts, K = c.top_k, I = c.expert_intermediate;
  const uint32_t S = c.num_shared_experts;
  Reference r;
  const std::vector<double> x = read_f32(d.input, "x", {T, H});
  const std::vector<double> gate = read_bf16(d.weights, mlp(layer, "gate.weight"), {E, H});
  std::vector<double> bias(E, 0.0);
  if (c.router_bias)
    bias = read_f32(d.weights, mlp(layer, "gate.e_score_correction_bias"), {E});
  else
    CHECK(d.weights.find(mlp(layer, "gate.e_score_correction_bias")) == nullptr);
  // Logits: double accumulation in h order of exact products, rounded to float.
  r.logits.resize(uint64_t{T} * E);
  for (uint32_t t = 0; t < T; ++t)
    for (uint32_t e = 0; e < E; ++e) {
      double acc = 0;
      for (uint32_t h = 0; h < H; ++h) acc += x[uint64_t{t} * H + h] * gate[uint64_t{e} * H + h];
      r.logits[uint64_t{t} * E + e] = static_cast<float>(acc);
    }
  const uint32_t G = c.num_groups, per = E / G;
  for (uint32_t t = 0; t < T; ++t) {
    const double* l = r.logits.data() + uint64_t{t} * E;
    std::vector<double> s(E), sel(E);
    if (c.router_score == RouterScore::kSigmoid) {
      for (uint32_t e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-l[e]));
    } else {
      const double mx = *std::max_element(l, l + E);
      double sum = 0;
      for (uint32_t e = 0; e < E; ++e) sum += std::exp(l[e] - mx);
      for (uint32_t e = 0; e < E; ++e) s[e] = std::exp(l[e] - mx) / sum;
    }
    for (uint32_t e = 0; e < E; ++e) sel[e] = s[e] + bias[e];
    // Group scores: sum of the two best selection scores of each group.
    std::vector<double> gs(G);
    for (uint32_t g = 0; g < G; ++g) {
      std::vector<double> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(v.rbegin(), v.rend());
      gs[g] = v[0] + (per > 1 ? v[1] : 0.0);
    }
    std::vector<uint32_t> groups(G);
    std::iota(groups.begin(), groups.end(), 0u);
    std::stable_sort(groups.begin(), groups.end(), [&](uint32_t a, uint32_t b) { return gs[a] > gs[b]; });
    groups.resize(G > 1 ? c.topk_groups : 1);
    std::vector<uint32_t> cand;
    for (uint32_t e = 0; e < E; ++e)
      if (std::find(groups.begin(), groups.end(), e / per) != groups.end()) cand.push_back(e);
    std::stable_sort(cand.begin(), cand.end(), [&](uint32_t a, uint32_t b) { return sel[a] > sel[b]; });
    double sum = 0;
    for (uint32_t k = 0; k < K; ++k) sum += s[cand[k]];
    for (uint32_t k = 0; k < K; ++k) {
      r.ids.push_back(static_cast<int32_t>(cand[k]));
      r.weights.push_back(s[cand[k]] / (c.normalize_topk ? sum : 1.0) * c.routed_scaling);
    }
  }
  // Experts: routed (the reference's own routing) and the fused shared MLP.
  r.y.assign(uint64_t{T} * H, 0.0);
  auto expert = [&](uint32_t e) {
    auto name = [&](const char* p) { return mlp(layer, "experts." + std::to_string(e) + "." + p + "_proj.weight"); };
    return std::array<std::vector<double>, 3>{read_bf16(d.weights, name("gate"), {I, H}),
                                              read_bf16(d.weights, name("up"), {I, H}),
                                              read_bf16(d.weights, name("down"), {H, I})};
  };
  std::vector<double> sg, su, sd;
  if (S > 0) {
    sg = read_bf16(d.weights, mlp(layer, "shared_experts.gate_proj.weight"), {S * I, H});
    su = read_bf16(d.weights, mlp(layer, "shared_experts.up_proj.weight"), {S * I, H});
    sd = read_bf16(d.weights, mlp(layer, "shared_experts.down_proj.weight"), {H, S * I});
  } else {
    CHECK(d.weights.find(mlp(layer, "shared_experts.gate_proj.weight")) == nullptr);
  }
  for (uint32_t t = 0; t < T; ++t) {
    const double* xt = x.data() + uint64_t{t} * H;
    for (uint32_t k = 0; k < K; ++k) {
      const auto w = expert(static_cast<uint32_t>(r.ids[uint64_t{t} * K + k]));
      const auto y = ref_ffn(xt, H, I, w[0], w[1], w[2]);
      for (uint32_t h = 0; h < H; ++h) r.y[uint64_t{t} * H + h] += r.weights[uint64_t{t} * K + k] * y[h];
    }
    if (S > 0) {
      const auto y = ref_ffn(xt, H, S * I, sg, su, sd);
      for (uint32_t h = 0; h < H; ++h) r.y[uint64_t{t} * H + h] += y[h];
    }
  }
  return r;
}

// Checks a dump against the reference. y_rel: tolerance relative to the token row's max.
void check_dump(const ModelConfig& c, uint32_t layer, const std::string& dir, uint32_t T,
                uint64_t seed, double y_rel) {
  const uint32_t H = c.hidden, E = c.num_experts, K = c.top_k;
  const Dump d = open_dump(dir);
  // The input is the documented generator's, BF16-representable.
  const std::vector<double> x = read_f32(d.input, "x", {T, H});
  const std::vector<float> want_x = make_layer_dump_input(seed, T, H);
  for (uint64_t i = 0; i < x.size(); ++i) {
    REQUIRE(x[i] == double(want_x[i]));
    REQUIRE(double(ic::round_to_bf16(float(x[i]))) == x[i]);
  }
  // Every MoE tensor of the layer, and nothing else, with the weight store's values.
  auto mw = ModelWeights::random(c, seed);
  REQUIRE(mw.ok());
  size_t want_tensors = 0;
  for (const TensorSpec& s : layer_tensor_specs(c, layer)) {
    if (s.name.find(".mlp.") == std::string::npos) continue;
    ++want_tensors;
    const TensorInfo& t = info(d.weights, s.name, s.dtype, s.shape);
    auto stored = mw->tensor(s.name);
    REQUIRE(stored.ok());
    const auto bytes = d.weights.data(t);
    REQUIRE_MESSAGE(std::equal(bytes.begin(), bytes.end(), stored->bytes.begin(), stored->bytes.end()),
                    s.name);
  }
  CHECK(d.weights.tensors().size() == want_tensors);

  const Reference r = reference(c, layer, d, T);
  // Logits: bit-identical (same exact products, same order, one rounding).
  const std::vector<double> logits = read_f32(d.router, "logits", {T, E});
  CHECK(logits == r.logits);
  // Routing: identical ids; weights to float rounding.
  const std::vector<int32_t> ids = read_i32(d.router, "topk_ids", {T, K});
  const std::vector<double> w = read_f32(d.router, "topk_weights", {T, K});
  CHECK(ids == r.ids);
  for (uint64_t i = 0; i < w.size(); ++i) CHECK(w[i] == doctest::Approx(r.weights[i]).epsilon(1e-6));
  const std::vector<int32_t> counts = read_i32(d.router, "expert_counts", {E});
  std::vector<int32_t> want_counts(E, 0);
  for (int32_t id : r.ids) ++want_counts[id];
  CHECK(counts == want_counts);
  // Output.
  const std::vector<double> y = read_f32(d.output, "y", {T, H});
  int bad = 0;
  double worst = 0;
  for (uint32_t t = 0; t < T; ++t) {
    double mx = 0;
    for (uint32_t h = 0; h < H; ++h) mx = std::max(mx, std::fabs(r.y[uint64_t{t} * H + h]));
    CHECK(mx > 0.0);
    for (uint32_t h = 0; h < H; ++h) {
      const double err = std::fabs(y[uint64_t{t} * H + h] - r.y[uint64_t{t} * H + h]);
      worst = std::max(worst, err / mx);
      if (!(err <= y_rel * mx + 1e-6) && ++bad <= 5)
        FAIL_CHECK("token " << t << " element " << h << ": " << y[uint64_t{t} * H + h] << " vs "
                            << r.y[uint64_t{t} * H + h]);
    }
  }
  CHECK(bad == 0);
  CHECK(worst < y_rel);
}

ModelConfig builtin() {
  auto c = model_config("builtin");
  REQUIRE(c.ok());
  return *c;
}

// Softmax routing without bias or groups, unnormalised and scaled, two shared experts.
ModelConfig softmax_variant() {
  ModelConfig c = builtin();
  c.name = "builtin-softmax";
  c.num_layers = 3;
  c.num_dense_layers = 1;
  c.num_experts = 16;
  c.top_k = 4;
  c.router_score = RouterScore::kSoftmax;
  c.router_bias = false;
  c.num_groups = 1;
  c.topk_groups = 1;
  c.normalize_topk = false;
  c.routed_scaling = 2.5f;
  c.num_shared_experts = 2;
  REQUIRE(validate_config(c).ok());
  return c;
}

LayerDumpRequest request(const std::string& dir, uint32_t tokens, uint64_t seed) {
  LayerDumpRequest r;
  r.model = "builtin";
  r.seed = seed;
  r.num_tokens = tokens;
  r.out_dir = dir;
  return r;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("models.layer_dump: builtin (sigmoid, bias, groups) recomputes from the files, bf16 and int8") {
  const ModelConfig c = builtin();
  for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
    const std::string precision = expert_precision_name(p);
    CAPTURE(precision);
    TempDir tmp;
    const std::string dir = tmp.file("dump");  // created by the dump, with its parent
    LayerDumpRequest r = request(dir, 5, 21);
    r.precision = p;
    auto done = dump_moe_layer(r);
    REQUIRE_MESSAGE(done.ok(), done.status().to_string());
    CHECK(done->layer == c.num_dense_layers);
    CHECK(done->num_tokens == 5);
    CHECK(done->files == std::vector<std::string>{"input.safetensors", "weights.safetensors",
                                                  "router.safetensors", "output.safetensors",
                                                  "README.txt", "manifest.json"});
    CHECK(done->weight_bytes == *moe_layer_weight_bytes(c, done->layer));
    // bf16: FP32 BLAS against double; int8: W8A8 quantisation against the unquantised formula.
    check_dump(c, done->layer, dir, 5, 21, p == ExpertPrecision::kInt8 ? 0.05 : 2e-5);
    const std::string manifest = read_text(dir + "/manifest.json");
    CHECK(manifest.find("\"precision\":\"" + std::string(expert_precision_name(p)) + "\"") != std::string::npos);
    CHECK(manifest.find("\"score\":\"sigmoid\"") != std::string::npos);
    const std::string readme = read_text(dir + "/README.txt");
    CHECK(readme.find("e_score_correction_bias") != std::string::npos);
    CHECK(readme.find("8 contiguous groups of 48") != std::string::npos);
  }
}

TEST_CASE("models.layer_dump: softmax, unnormalised, scaled, two fused shared experts, last layer") {
  const ModelConfig c = softmax_variant();
  TempDir tmp;
  LayerDumpRequest r = request(tmp.str(), 7, 5);  // the TempDir exists and is empty: accepted
  r.layer = 2;
  auto done = dump_moe_layer(c, r);
  REQUIRE_MESSAGE(done.ok(), done.status().to_string());
  CHECK(done->layer == 2);
  check_dump(c, 2, tmp.str(), 7, 5, 2e-5);
  const std::string readme = read_text(tmp.file("README.txt"));
  CHECK(readme.find("softmax") != std::string::npos);
  CHECK(readme.find("* 2.5") != std::string::npos);
}

TEST_CASE("models.layer_dump: bad requests are refused before anything is written") {
  TempDir tmp;
  const std::string dir = tmp.file("never");
  auto refused = [&](const LayerDumpRequest& r, StatusCode code, const char* words) {
    auto done = dump_moe_layer(r);
    REQUIRE_FALSE(done.ok());
    CHECK(done.status().code() == code);
    CHECK_MESSAGE(done.status().message().find(words) != std::string::npos, done.status().to_string());
    CHECK_FALSE(std::filesystem::exists(dir));
  };
  LayerDumpRequest r = request(dir, 3, 1);
  r.model = "no-such-model";
  refused(r, StatusCode::kNotFound, "no-such-model");
  r = request(dir, 0, 1);
  refused(r, StatusCode::kInvalidArgument, "0 tokens");
  r = request(dir, kMaxLayerDumpTokens + 1, 1);
  refused(r, StatusCode::kInvalidArgument, "tokens");
  r = request(dir, 3, 1);
  r.layer = 0;  // dense
  refused(r, StatusCode::kInvalidArgument, "not an MoE layer");
  r.layer = 4;  // past the last layer
  refused(r, StatusCode::kInvalidArgument, "not an MoE layer");
  r = request("", 3, 1);
  auto done = dump_moe_layer(r);
  CHECK(done.status().code() == StatusCode::kInvalidArgument);
  // The size guard: a full-size layer without allow_large; a tiny limit on the builtin.
  r = request(dir, 3, 1);
  r.model = "deepseek-v3";
  refused(r, StatusCode::kFailedPrecondition, "--allow-large");
  r = request(dir, 3, 1);
  r.max_weight_bytes = 1 << 20;
  refused(r, StatusCode::kFailedPrecondition, "--allow-large");
  r.max_weight_bytes = 1024;
  refused(r, StatusCode::kFailedPrecondition, "--allow-large");
  r.allow_large = true;  // lifts it
  done = dump_moe_layer(softmax_variant(), r);
  CHECK_MESSAGE(done.ok(), done.status().to_string());
}

TEST_CASE("models.layer_dump: an existing directory must be empty unless forced; a file never") {
  const ModelConfig c = softmax_variant();
  TempDir tmp;
  const std::string foreign = tmp.file("notes.txt");
  { std::ofstream(foreign) << "keep me"; }
  LayerDumpRequest r = request(tmp.str(), 2, 3);
  auto done = dump_moe_layer(c, r);
  REQUIRE_FALSE(done.ok());
  CHECK(done.status().code() == StatusCode::kAlreadyExists);
  CHECK(done.status().message().find(tmp.str()) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(tmp.file("manifest.json")));

  r.force = true;
  done = dump_moe_layer(c, r);
  REQUIRE_MESSAGE(done.ok(), done.status().to_string());
  CHECK(read_text(foreign) == "keep me");
  check_dump(c, c.num_dense_layers, tmp.str(), 2, 3, 2e-5);
  // Forced again with another seed: the dump's files are replaced, and still consistent.
  r.seed = 4;
  done = dump_moe_layer(c, r);
  REQUIRE(done.ok());
  check_dump(c, c.num_dense_layers, tmp.str(), 2, 4, 2e-5);

  r = request(foreign, 2, 3);  // a regular file
  r.force = true;
  done = dump_moe_layer(c, r);
  REQUIRE_FALSE(done.ok());
  CHECK(done.status().code() == StatusCode::kAlreadyExists);
  CHECK(read_text(foreign) == "keep me");
}

TEST_CASE("models.layer_dump: progress reaches the total in both stages") {
  const ModelConfig c = softmax_variant();
  TempDir tmp;
  LayerDumpRequest r = request(tmp.str(), 1, 9);
  std::vector<LayerDumpProgress> seen;
  r.progress = [&](const LayerDumpProgress& p) { seen.push_back(p); };
  auto done = dump_moe_layer(c, r);
  REQUIRE(done.ok());
  const uint32_t tensors = 1 + 3 * c.num_experts + 3;  // gate (no bias), routed, fused shared
  REQUIRE(seen.size() == 2 * tensors);
  for (size_t i = 1; i < seen.size(); ++i)
    if (std::string(seen[i].stage) == seen[i - 1].stage) CHECK(seen[i].bytes_done > seen[i - 1].bytes_done);
  for (size_t i : {tensors - 1, 2 * tensors - 1}) {
    CHECK(seen[i].tensors_done == tensors);
    CHECK(seen[i].tensors_total == tensors);
    CHECK(seen[i].bytes_done == done->weight_bytes);
    CHECK(seen[i].bytes_total == done->weight_bytes);
  }
  CHECK(std::string(seen.front().stage) != seen.back().stage);
}

TEST_CASE("models.layer_dump: the input is seeded, prefix-stable and standard normal") {
  const std::vector<float> a = make_layer_dump_input(17, 64, 128);
  const std::vector<float> prefix = make_layer_dump_input(17, 3, 128);
  CHECK(std::equal(prefix.begin(), prefix.end(), a.begin()));
  CHECK(make_layer_dump_input(17, 64, 128) == a);
  CHECK(make_layer_dump_input(18, 64, 128) != a);
  double sum = 0, sq = 0;
  for (float v : a) {
    CHECK(ic::round_to_bf16(v) == v);
    sum += v;
    sq += double(v) * v;
  }
  const double mean = sum / a.size(), var = sq / a.size() - mean * mean;
  CHECK(std::fabs(mean) < 0.05);
  CHECK(std::fabs(std::sqrt(var) - 1.0) < 0.05);
  // An odd element count (Box-Muller pairs) fills the last element too.
  const std::vector<float> odd = make_layer_dump_input(17, 1, 3);
  CHECK(odd[2] == a[2]);
}
