// Dumping one MoE layer for an outside checker (see layer_dump.h).
//
// Design notes:
//  - Everything that can be refused (model, tokens, layer, size, directory) is checked before
//    the first byte is written, so a refusal leaves the file system as it was.
//  - The weights are materialised once, in their storage dtype, from ModelWeights (the same
//    values the engine would place); weights.safetensors is written from those bytes and the
//    MoeLayer is created from views of them, so the file holds exactly what was computed with.
//  - The checkpoint fuses the shared experts into one MLP of width num_shared * inter; the
//    layer wants num_shared experts of width inter. Their sum is the fused MLP: expert s is
//    rows [s*I, (s+1)*I) of gate and up (contiguous views) and columns [s*I, (s+1)*I) of down
//    (copied, being strided).
//  - router.safetensors' logits are recomputed with router_logits() on the layer's own FP32
//    gate (the function and order MoeLayer uses), and route() on them must reproduce the
//    layer's last_routing() exactly: a mismatch is a bug here (kInternal), never written out.
//  - Each file is written atomically by write_safetensors; manifest.json comes last.
#include "models/moe/layer_dump.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <system_error>

#include "interconnect/quant_int8.h"
#include "models/kernels/router.h"
#include "models/moe/moe_layer.h"
#include "models/weights/safetensors_writer.h"
#include "models/weights/weight_store.h"
#include "runtime/base/check.h"
#include "runtime/base/json.h"
#include "runtime/base/strformat.h"

namespace moe::models {

namespace {

namespace fs = std::filesystem;

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1]: 53 random bits, never 0 (log(0) would be -inf).
double unit_open(uint64_t bits) { return (double((bits >> 11) + 1)) * 0x1.0p-53; }

bool is_moe_weight(const TensorSpec& spec) {
  return spec.name.find(".mlp.gate.") != std::string::npos ||
         spec.name.find(".mlp.experts.") != std::string::npos ||
         spec.name.find(".mlp.shared_experts.") != std::string::npos;
}

Status check_layer(const ModelConfig& config, uint32_t layer) {
  if (!config.is_moe_layer(layer))
    return make_error(StatusCode::kInvalidArgument,
                      "layer dump: layer %u of '%s' is not an MoE layer (its MoE layers are %u..%u)",
                      layer, config.name.c_str(), config.num_dense_layers,
                      config.num_layers == 0 ? 0 : config.num_layers - 1);
  return ok_status();
}

std::vector<TensorSpec> moe_specs(const ModelConfig& config, uint32_t layer) {
  std::vector<TensorSpec> out;
  for (TensorSpec& s : layer_tensor_specs(config, layer))
    if (is_moe_weight(s)) out.push_back(std::move(s));
  return out;
}

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

// Refuses an out_dir we must not write into; creates it when missing.
Status prepare_directory(const std::string& dir, bool force) {
  if (dir.empty())
    return make_error(StatusCode::kInvalidArgument, "layer dump: no output directory given");
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec && st.type() != fs::file_type::not_found)
    return make_error(StatusCode::kInvalidArgument, "layer dump: cannot inspect '%s': %s",
                      dir.c_str(), ec.message().c_str());
  if (st.type() == fs::file_type::not_found) {
    fs::create_directories(dir, ec);
    if (ec)
      return make_error(StatusCode::kInvalidArgument, "layer dump: cannot create '%s': %s",
                        dir.c_str(), ec.message().c_str());
    return ok_status();
  }
  if (st.type() != fs::file_type::directory)
    return make_error(StatusCode::kAlreadyExists,
                      "layer dump: '%s' exists and is not a directory", dir.c_str());
  const bool empty = fs::is_empty(dir, ec);
  if (ec)
    return make_error(StatusCode::kInvalidArgument, "layer dump: cannot list '%s': %s",
                      dir.c_str(), ec.message().c_str());
  if (!empty && !force)
    return make_error(StatusCode::kAlreadyExists,
                      "layer dump: '%s' exists and is not empty (choose a new directory, or "
                      "force to overwrite the dump's files in it)",
                      dir.c_str());
  // Forced over an earlier dump: its manifest goes first, so that a dump failing half-way
  // never leaves a manifest claiming the mixed files are complete.
  const fs::path manifest = fs::path(dir) / "manifest.json";
  if (fs::remove(manifest, ec); ec)
    return make_error(StatusCode::kInvalidArgument, "layer dump: cannot remove '%s': %s",
                      manifest.c_str(), ec.message().c_str());
  return ok_status();
}

TensorToWrite f32_tensor(std::string name, std::vector<uint64_t> shape, std::span<const float> v) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = DType::kF32;
  t.shape = std::move(shape);
  t.bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4);
  return t;
}

TensorToWrite i32_tensor(std::string name, std::vector<uint64_t> shape, std::span<const int32_t> v) {
  TensorToWrite t;
  t.name = std::move(name);
  t.dtype = DType::kI32;
  t.shape = std::move(shape);
  t.bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4);
  return t;
}

const char* score_name(RouterScore s) { return s == RouterScore::kSigmoid ? "sigmoid" : "softmax"; }

// The formula an outside checker computes, one line per step (README.txt and manifest.json).
std::vector<std::string> formula_lines(const ModelConfig& c, uint32_t layer, ExpertPrecision p) {
  const std::string L = strformat("model.layers.%u.mlp.", layer);
  std::vector<std::string> f;
  f.push_back("logits[t,e] = sum_h x[t,h] * float(" + L +
              "gate.weight[e,h])  (accumulated in double in h order, rounded to float32)");
  if (c.router_score == RouterScore::kSigmoid)
    f.push_back("s[t,e] = sigmoid(logits[t,e])");
  else
    f.push_back("s[t,e] = softmax over all e of logits[t,:]");
  if (c.router_bias)
    f.push_back("c[t,e] = s[t,e] + " + L +
                "gate.e_score_correction_bias[e]  (the bias only selects experts)");
  else
    f.push_back("c[t,e] = s[t,e]  (no selection bias)");
  if (c.num_groups > 1)
    f.push_back(strformat(
        "group-limited: experts form %u contiguous groups of %u; a group's score is the sum of "
        "its two largest c (its largest alone if a group has one expert); only experts of the "
        "%u best groups are candidates (ties: lower group id first)",
        c.num_groups, c.num_experts / c.num_groups, c.topk_groups));
  f.push_back(strformat(
      "topk_ids[t,:] = the %u candidates with the largest c[t,e], in descending c (ties: lower "
      "expert id first)",
      c.top_k));
  f.push_back(strformat("topk_weights[t,k] = s[t, topk_ids[t,k]]%s * %.9g", 
                        c.normalize_topk ? " / sum_k s[t, topk_ids[t,k]]" : "",
                        double(c.routed_scaling)));
  f.push_back("FFN(W; x) = W.down_proj @ (silu(W.gate_proj @ x) * (W.up_proj @ x)),  silu(a) = "
              "a / (1 + exp(-a)); weights [out, in] as torch.nn.Linear, BF16 values widened to "
              "float");
  if (c.num_shared_experts > 0)
    f.push_back("y[t] = sum_k topk_weights[t,k] * FFN(" + L + "experts.<topk_ids[t,k]>; x[t]) + FFN(" +
                L + "shared_experts; x[t])");
  else
    f.push_back("y[t] = sum_k topk_weights[t,k] * FFN(" + L + "experts.<topk_ids[t,k]>; x[t])");
  if (p == ExpertPrecision::kInt8)
    f.push_back(
        "precision int8 (W8A8): each expert product ran with INT8 weights (per output row, "
        "scale = max|w_row| / 127, q = round_half_even(w / scale) clamped to [-127, 127]) and "
        "INT8 activations (per token row, scale = max|a_row| / 127, likewise), integer sums "
        "exact, result sum * scale_a * scale_w; the router is not quantised");
  else
    f.push_back("precision bf16: BF16 weights, float32 activations and accumulation");
  return f;
}

std::string tolerance_text(ExpertPrecision p) {
  return p == ExpertPrecision::kInt8
             ? "routing (topk_ids, topk_weights) exactly as dumped when computed from the dumped "
               "logits; y against a float32/float64 reference of the formula without "
               "quantisation: |y - y_ref| <= 0.05 * max|y_ref[t,:]| per token row"
             : "routing (topk_ids, topk_weights) exactly as dumped when computed from the dumped "
               "logits (recomputing logits in float32 may flip near-ties); y against a float64 "
               "reference: |y - y_ref| <= 2e-5 * max|y_ref[t,:]| + 1e-6 per element (a float32 "
               "reference: 1e-4 * max|y_ref[t,:]|)";
}

std::string readme_text(const ModelConfig& c, const LayerDumpRequest& r, uint32_t layer,
                         const std::vector<std::string>& weight_names) {
  std::string s;
  s += strformat("MoE layer dump: model %s, layer %u, seed %llu, %u tokens, precision %s\n\n",
                 c.name.c_str(), layer, static_cast<unsigned long long>(r.seed), r.num_tokens,
                 expert_precision_name(r.precision));
  s += strformat(
      "Shapes: T = %u tokens, hidden = %u, E = %u routed experts, top_k = %u, expert inter = "
      "%u, shared experts = %u (fused: width %u)\n\n",
      r.num_tokens, c.hidden, c.num_experts, c.top_k, c.expert_intermediate,
      c.num_shared_experts, c.num_shared_experts * c.expert_intermediate);
  s += "Files (safetensors; little-endian; load with safetensors.torch.load_file):\n"
       "  input.safetensors    x F32 [T, hidden]  (standard normal draws rounded to BF16)\n";
  s += strformat("  weights.safetensors  %zu tensors, Hugging Face checkpoint names and dtypes,\n"
                 "                       e.g. %s\n",
                 weight_names.size(), weight_names.empty() ? "" : weight_names.front().c_str());
  s += "  router.safetensors   logits F32 [T, E], topk_ids I32 [T, k], topk_weights F32 [T, k],\n"
       "                       expert_counts I32 [E] (tokens routed to each expert)\n"
       "  output.safetensors   y F32 [T, hidden]\n"
       "  manifest.json        the same, machine-readable, with the model config\n\n"
       "Formula (this runtime's MoE layer; checkpoint-compatible with DeepSeek-V3-style models):\n";
  for (const std::string& line : formula_lines(c, layer, r.precision)) s += "  " + line + "\n";
  s += "\nTolerance: " + tolerance_text(r.precision) + "\n";
  s += "\nA checker in plain Python (standard library only, slow: small dumps) is in the source\n"
       "tree: tools/moe/check_layer_dump.py DIR\n";
  return s;
}

std::string manifest_json(const ModelConfig& c, const LayerDumpRequest& r, uint32_t layer,
                          uint64_t weight_bytes, const std::vector<std::string>& weight_names) {
  JsonWriter w;
  w.begin_object();
  w.key("format").value("moe-layer-dump");
  w.key("version").value(1);
  w.key("model").value(c.name);
  w.key("layer").value(layer);
  w.key("seed").value(r.seed);
  w.key("num_tokens").value(r.num_tokens);
  w.key("precision").value(expert_precision_name(r.precision));
  w.key("weight_bytes").value(weight_bytes);
  w.key("router").begin_object();
  w.key("score").value(score_name(c.router_score));
  w.key("num_experts").value(c.num_experts);
  w.key("top_k").value(c.top_k);
  w.key("normalize_topk").value(c.normalize_topk);
  w.key("routed_scaling").value(double(c.routed_scaling));
  w.key("num_groups").value(c.num_groups);
  w.key("topk_groups").value(c.topk_groups);
  w.key("selection_bias").value(c.router_bias);
  w.end_object();
  w.key("files").begin_object();
  w.key("input.safetensors").begin_array().value("x").end_array();
  w.key("weights.safetensors").begin_array();
  for (const std::string& n : weight_names) w.value(n);
  w.end_array();
  w.key("router.safetensors").begin_array();
  for (const char* n : {"logits", "topk_ids", "topk_weights", "expert_counts"}) w.value(n);
  w.end_array();
  w.key("output.safetensors").begin_array().value("y").end_array();
  w.end_object();
  w.key("formula").begin_array();
  for (const std::string& line : formula_lines(c, layer, r.precision)) w.value(line);
  w.end_array();
  w.key("tolerance").value(tolerance_text(r.precision));
  w.key("config").raw(config_to_json(c));
  w.end_object();
  return w.take() + "\n";
}

}  // namespace

std::vector<float> make_layer_dump_input(uint64_t seed, uint32_t num_tokens, uint32_t hidden) {
  const uint64_t n = uint64_t{num_tokens} * hidden;
  std::vector<float> x(n);
  const uint64_t key = splitmix64(seed ^ 0x6c61796572647570ull);  // "layerdup"
  // Box-Muller: each counter pair (2j, 2j+1) gives elements 2j and 2j+1.
  for (uint64_t j = 0; 2 * j < n; ++j) {
    const double u1 = unit_open(splitmix64(key + 2 * j));
    const double u2 = unit_open(splitmix64(key + 2 * j + 1));
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * std::numbers::pi * u2;
    x[2 * j] = ic::round_to_bf16(static_cast<float>(r * std::cos(a)));
    if (2 * j + 1 < n) x[2 * j + 1] = ic::round_to_bf16(static_cast<float>(r * std::sin(a)));
  }
  return x;
}

StatusOr<uint64_t> moe_layer_weight_bytes(const ModelConfig& config, uint32_t layer) {
  MOE_TRY(check_layer(config, layer));
  uint64_t bytes = 0;
  for (const TensorSpec& s : moe_specs(config, layer)) bytes += s.size_bytes();
  return bytes;
}

StatusOr<LayerDumpSummary> dump_moe_layer(const LayerDumpRequest& request) {
  MOE_TRY_ASSIGN(ModelConfig config, model_config(request.model));
  return dump_moe_layer(config, request);
}

StatusOr<LayerDumpSummary> dump_moe_layer(const ModelConfig& config,
                                          const LayerDumpRequest& request) {
  // ---- refusals, before anything is written ----
  MOE_TRY(validate_config(config));
  if (request.num_tokens == 0 || request.num_tokens > kMaxLayerDumpTokens)
    return make_error(StatusCode::kInvalidArgument,
                      "layer dump: %u tokens asked; give between 1 and %u", request.num_tokens,
                      kMaxLayerDumpTokens);
  const uint32_t layer = request.layer.value_or(config.num_dense_layers);
  MOE_TRY(check_layer(config, layer));
  const std::vector<TensorSpec> specs = moe_specs(config, layer);
  uint64_t weight_bytes = 0;
  for (const TensorSpec& s : specs) weight_bytes += s.size_bytes();
  if (weight_bytes > request.max_weight_bytes && !request.allow_large)
    return make_error(StatusCode::kFailedPrecondition,
                      "layer dump: layer %u of '%s' has %s of weights (%u routed experts of "
                      "%u x %u), over the %s limit; pass --allow-large (allow_large) to write "
                      "them",
                      layer, config.name.c_str(), format_bytes(double(weight_bytes)).c_str(),
                      config.num_experts, config.hidden, config.expert_intermediate,
                      format_bytes(double(request.max_weight_bytes)).c_str());
  {
    // The single-host layer keeps working copies of every expert: FP32 (2x the BF16 bytes)
    // or INT8 (about half), next to the BF16 values read here.
    const uint64_t working =
        request.precision == ExpertPrecision::kBf16 ? 2 * weight_bytes : weight_bytes / 2;
    const uint64_t need = weight_bytes + working;
    const uint64_t have = physical_memory_bytes();
    if (have != 0 && need > have)
      return make_error(StatusCode::kResourceExhausted,
                        "layer dump: layer %u of '%s' needs about %s of host memory to run "
                        "(%s of weights plus the layer's %s working copies); this host has %s",
                        layer, config.name.c_str(), format_bytes(double(need)).c_str(),
                        format_bytes(double(weight_bytes)).c_str(),
                        expert_precision_name(request.precision),
                        format_bytes(double(have)).c_str());
  }
  MOE_TRY(prepare_directory(request.out_dir, request.force));

  const uint32_t T = request.num_tokens, H = config.hidden, E = config.num_experts,
                 K = config.top_k, I = config.expert_intermediate, S = config.num_shared_experts;
  MOE_TRY_ASSIGN(ModelWeights weights, ModelWeights::random(config, request.seed));

  // ---- materialise the layer's weights (spec order) ----
  LayerDumpProgress progress;
  progress.tensors_total = static_cast<uint32_t>(specs.size());
  progress.bytes_total = weight_bytes;
  std::vector<std::vector<uint8_t>> data(specs.size());
  progress.stage = "generating weights";
  for (size_t i = 0; i < specs.size(); ++i) {
    data[i].resize(specs[i].size_bytes());
    MOE_TRY(weights.read_into(specs[i].name, data[i]));
    progress.bytes_done += data[i].size();
    ++progress.tensors_done;
    if (request.progress) request.progress(progress);
  }
  auto find = [&](const std::string& name) -> const std::vector<uint8_t>* {
    for (size_t i = 0; i < specs.size(); ++i)
      if (specs[i].name == name) return &data[i];
    return nullptr;
  };
  auto bf16_view = [](const std::vector<uint8_t>& v, uint64_t first, uint64_t count) {
    return std::span<const uint16_t>(reinterpret_cast<const uint16_t*>(v.data()) + first, count);
  };
  const std::string prefix = strformat("model.layers.%u.mlp.", layer);
  const std::vector<uint8_t>* gate_bytes = find(prefix + "gate.weight");
  const std::vector<uint8_t>* bias_bytes =
      config.router_bias ? find(prefix + "gate.e_score_correction_bias") : nullptr;
  if (gate_bytes == nullptr || (config.router_bias && bias_bytes == nullptr))
    return make_error(StatusCode::kInternal, "layer dump: the router of layer %u has no spec",
                      layer);
  std::vector<float> gate_f32(uint64_t{E} * H), bias_f32;
  for (uint64_t i = 0; i < gate_f32.size(); ++i)
    gate_f32[i] = ic::bf16_to_float(bf16_view(*gate_bytes, 0, gate_f32.size())[i]);
  if (bias_bytes != nullptr) {
    bias_f32.resize(E);
    std::memcpy(bias_f32.data(), bias_bytes->data(), uint64_t{E} * 4);
  }

  MoeLayerWeights lw;
  lw.router = {gate_f32, bias_f32};
  const uint64_t expert_elems = uint64_t{I} * H;
  for (uint32_t e = 0; e < E; ++e) {
    const std::vector<uint8_t>* g = find(expert_tensor_name(layer, e, ExpertProj::kGate));
    const std::vector<uint8_t>* u = find(expert_tensor_name(layer, e, ExpertProj::kUp));
    const std::vector<uint8_t>* d = find(expert_tensor_name(layer, e, ExpertProj::kDown));
    if (g == nullptr || u == nullptr || d == nullptr)
      return make_error(StatusCode::kInternal, "layer dump: expert %u of layer %u has no spec", e,
                        layer);
    lw.routed.push_back({bf16_view(*g, 0, expert_elems), bf16_view(*u, 0, expert_elems),
                         bf16_view(*d, 0, expert_elems)});
  }
  std::vector<std::vector<uint16_t>> shared_down(S);
  if (S > 0) {
    const std::vector<uint8_t>* g = find(prefix + "shared_experts.gate_proj.weight");
    const std::vector<uint8_t>* u = find(prefix + "shared_experts.up_proj.weight");
    const std::vector<uint8_t>* d = find(prefix + "shared_experts.down_proj.weight");
    if (g == nullptr || u == nullptr || d == nullptr)
      return make_error(StatusCode::kInternal, "layer dump: shared experts of layer %u have no spec",
                        layer);
    const uint64_t fused = uint64_t{S} * I;
    const std::span<const uint16_t> down = bf16_view(*d, 0, uint64_t{H} * fused);
    for (uint32_t s = 0; s < S; ++s) {
      shared_down[s].resize(expert_elems);
      for (uint64_t o = 0; o < H; ++o)
        std::memcpy(shared_down[s].data() + o * I, down.data() + o * fused + uint64_t{s} * I,
                    uint64_t{I} * 2);
      lw.shared.push_back({bf16_view(*g, s * expert_elems, expert_elems),
                           bf16_view(*u, s * expert_elems, expert_elems), shared_down[s]});
    }
  }

  // ---- run the layer ----
  const std::vector<float> x = make_layer_dump_input(request.seed, T, H);
  std::vector<float> y(uint64_t{T} * H), logits(uint64_t{T} * E);
  RouterOutput routing, rerouted;
  {
    auto made = MoeLayer::create(config, lw, request.precision);
    if (!made.ok()) return Status(made.status()).with_context("layer dump");
    MoeLayer& moe = **made;
    MOE_TRY(moe.forward(x, T, y));
    routing = moe.last_routing();
    MOE_TRY(router_logits(x, T, H, gate_f32, E, logits));
    MOE_TRY(route(moe.router_config(), logits, T, bias_f32, &rerouted));
  }
  if (rerouted.topk_ids != routing.topk_ids || rerouted.topk_weights != routing.topk_weights)
    return make_error(StatusCode::kInternal,
                      "layer dump: routing recomputed from the logits differs from the layer's");
  std::vector<int32_t> counts(E);
  for (uint32_t e = 0; e < E; ++e) counts[e] = static_cast<int32_t>(routing.expert_counts[e]);

  // ---- write ----
  LayerDumpSummary summary;
  summary.out_dir = request.out_dir;
  summary.model = config.name;
  summary.layer = layer;
  summary.num_tokens = T;
  summary.weight_bytes = weight_bytes;
  const std::vector<std::pair<std::string, std::string>> meta = {
      {"format", "moe-layer-dump"}, {"model", config.name}, {"layer", std::to_string(layer)},
      {"seed", std::to_string(request.seed)}, {"precision", expert_precision_name(request.precision)}};
  auto write = [&](const char* file, std::span<const TensorToWrite> tensors) -> Status {
    const std::string path = (fs::path(request.out_dir) / file).string();
    Status st = write_safetensors(path, tensors, meta);
    if (!st.ok()) return st.with_context(strformat("layer dump: writing %s", path.c_str()));
    summary.files.push_back(file);
    return ok_status();
  };
  {
    const TensorToWrite xs[] = {f32_tensor("x", {T, H}, x)};
    MOE_TRY(write("input.safetensors", xs));
  }
  {
    progress.stage = "writing weights.safetensors";
    progress.bytes_done = 0;
    progress.tensors_done = 0;
    std::vector<TensorToWrite> ws(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      ws[i].name = specs[i].name;
      ws[i].dtype = specs[i].dtype;
      ws[i].shape = specs[i].shape;
      ws[i].fill = [&, i](std::span<uint8_t> out) -> Status {
        std::memcpy(out.data(), data[i].data(), out.size());
        progress.bytes_done += out.size();
        ++progress.tensors_done;
        if (request.progress) request.progress(progress);
        return ok_status();
      };
    }
    MOE_TRY(write("weights.safetensors", ws));
  }
  {
    const TensorToWrite rs[] = {f32_tensor("logits", {T, E}, logits),
                                i32_tensor("topk_ids", {T, K}, routing.topk_ids),
                                f32_tensor("topk_weights", {T, K}, routing.topk_weights),
                                i32_tensor("expert_counts", {E}, counts)};
    MOE_TRY(write("router.safetensors", rs));
  }
  {
    const TensorToWrite ys[] = {f32_tensor("y", {T, H}, y)};
    MOE_TRY(write("output.safetensors", ys));
  }
  std::vector<std::string> names;
  for (const TensorSpec& s : specs) names.push_back(s.name);
  for (const auto& [file, text] :
       {std::pair<const char*, std::string>{"README.txt", readme_text(config, request, layer, names)},
        {"manifest.json", manifest_json(config, request, layer, weight_bytes, names)}}) {
    const std::string path = (fs::path(request.out_dir) / file).string();
    Status st = write_file_atomically(path, text);
    if (!st.ok()) return st.with_context(strformat("layer dump: writing %s", path.c_str()));
    summary.files.push_back(file);
  }
  return summary;
}

}  // namespace moe::models
