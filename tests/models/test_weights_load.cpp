// Loading and saving ModelWeights: round trips (one file, shards with and without an index,
// INT8 experts), conversions, and refusals naming the tensor with expected and found shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "interconnect/quant_int8.h"
#include "models/weights/safetensors_reader.h"
#include "models/weights/safetensors_writer.h"
#include "models/weights/weight_store.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;
using moe::models::testing::read_all;
using moe::models::testing::TempDir;
using moe::models::testing::tiny_config;
using moe::models::testing::write_all;

namespace {

void check_equal(const ModelWeights& a, const ModelWeights& b) {
  REQUIRE(a.specs().size() == b.specs().size());
  for (const TensorSpec& spec : a.specs()) {
    CAPTURE(spec.name);
    const StatusOr<Tensor> x = a.tensor(spec.name);
    const StatusOr<Tensor> y = b.tensor(spec.name);
    REQUIRE(x.ok());
    REQUIRE(y.ok());
    CHECK(x->bytes == y->bytes);
  }
}

// Writes the tensors of `w`, letting `edit` drop (return false) or change each entry.
Status write_edited(const ModelWeights& w, const std::string& path,
                    const std::function<bool(TensorToWrite&)>& edit) {
  std::vector<TensorToWrite> out;
  for (const TensorSpec& spec : w.specs()) {
    TensorToWrite t{.name = spec.name, .dtype = spec.dtype, .shape = spec.shape};
    const std::string name = spec.name;
    t.fill = [&w, name](std::span<uint8_t> bytes) -> Status {
      std::vector<uint8_t> full(w.find_spec(name)->size_bytes());
      MOE_TRY(w.read_into(name, full));
      std::memcpy(bytes.data(), full.data(), std::min(full.size(), bytes.size()));
      return Status();
    };
    if (edit(t)) out.push_back(std::move(t));
  }
  return write_safetensors(path, out);
}

}  // namespace

TEST_CASE("models.weights: the built-in model saves and loads back equal") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(model_config("builtin").value(), 11).value();
  REQUIRE(w.save(dir.file("builtin.safetensors")).ok());
  StatusOr<ModelWeights> loaded =
      ModelWeights::load(w.config(), dir.file("builtin.safetensors"), {.refuse_extra_tensors = true});
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  CHECK_FALSE(loaded->is_random());
  CHECK(loaded->extra_tensor_count() == 0);
  check_equal(w, *loaded);
  const SafetensorsFile file = SafetensorsFile::open(dir.file("builtin.safetensors")).value();
  for (const TensorInfo& t : file.tensors()) CHECK(t.begin % 8 == 0);
  bool has_seed = false;
  for (const auto& [k, v] : file.metadata()) has_seed |= (k == "moe.seed" && v == "11");
  CHECK(has_seed);
}

TEST_CASE("models.weights: a sharded directory loads with and without its index") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(tiny_config(), 3).value();
  const std::string shards = dir.file("ckpt");
  REQUIRE(w.save(shards, {.max_shard_bytes = 16 << 10}).ok());
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(shards))
    files += e.path().extension() == ".safetensors";
  CHECK(files > 3);
  CHECK(std::filesystem::exists(shards + "/model-00001-of-0000" + std::to_string(files) +
                                ".safetensors"));
  StatusOr<ModelWeights> loaded = ModelWeights::load(w.config(), shards);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  check_equal(w, *loaded);

  // An index that points a tensor at the wrong shard is refused naming both.
  const std::string index_path = shards + "/model.safetensors.index.json";
  const std::vector<uint8_t> index = read_all(index_path);
  std::string text(index.begin(), index.end());
  const std::string key = "\"model.embed_tokens.weight\":\"model-00001-of-";
  const size_t at = text.find(key);
  REQUIRE(at != std::string::npos);
  text[at + key.size() - 5] = '2';  // "model-00002-of-..."
  write_all(index_path, {text.begin(), text.end()});
  StatusOr<ModelWeights> wrong = ModelWeights::load(w.config(), shards);
  REQUIRE_FALSE(wrong.ok());
  CHECK_MESSAGE(wrong.status().message().find("'model.embed_tokens.weight' in 'model-00002-of-") !=
                    std::string::npos,
                wrong.status().message());
  write_all(index_path, {'{', '"', 'w'});  // a corrupt index
  CHECK(ModelWeights::load(w.config(), shards).status().code() == StatusCode::kParseError);
  const std::string escape = R"({"weight_map": {"model.norm.weight": "../x.safetensors"}})";
  write_all(index_path, {escape.begin(), escape.end()});
  CHECK(ModelWeights::load(w.config(), shards).status().message().find("file name") !=
        std::string::npos);

  // Without the index, every *.safetensors file of the directory is read.
  std::filesystem::remove(index_path);
  loaded = ModelWeights::load(w.config(), shards);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  check_equal(w, *loaded);
  // The same tensor in two shards is refused.
  std::filesystem::copy_file(shards + "/model-00001-of-0000" + std::to_string(files) +
                                 ".safetensors",
                             shards + "/zz-copy.safetensors");
  CHECK(ModelWeights::load(w.config(), shards).status().message().find("is in both") !=
        std::string::npos);
}

TEST_CASE("models.weights: a missing, mis-shaped or wrong-dtype tensor is refused by name") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(tiny_config(), 5).value();
  const std::string path = dir.file("m.safetensors");
  const std::string q = "model.layers.1.self_attn.q_proj.weight";  // [32, 32]
  const std::string up = "model.layers.2.mlp.experts.3.up_proj.weight";  // [16, 32]

  REQUIRE(write_edited(w, path, [&](TensorToWrite& t) { return t.name != up; }).ok());
  StatusOr<ModelWeights> r = ModelWeights::load(w.config(), path);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("tensor '" + up + "' (expected BF16 [16, 32]) is missing") !=
        std::string::npos);

  REQUIRE(write_edited(w, path, [&](TensorToWrite& t) {
            if (t.name == up) t.shape = {32, 16};
            return true;
          }).ok());
  r = ModelWeights::load(w.config(), path);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.status().message().find("tensor '" + up +
                                          "': shape expected BF16 [16, 32], found BF16 [32, 16]") !=
                    std::string::npos,
                r.status().message());

  REQUIRE(write_edited(w, path, [&](TensorToWrite& t) {
            if (t.name == q) t.dtype = DType::kI32, t.shape = {32, 16};  // same byte count
            if (t.name == up) t.shape = {16};
            return true;
          }).ok());
  r = ModelWeights::load(w.config(), path);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.status().message().find("tensor '" + q +
                                          "': shape expected BF16 [32, 32], found I32 [32, 16]") !=
                    std::string::npos,
                r.status().message());
  CHECK(r.status().message().find("(and 1 more problems)") != std::string::npos);

  REQUIRE(write_edited(w, path, [&](TensorToWrite& t) {
            if (t.name == q) t.dtype = DType::kI16;
            return true;
          }).ok());
  r = ModelWeights::load(w.config(), path);
  REQUIRE_FALSE(r.ok());
  CHECK_MESSAGE(r.status().message().find("tensor '" + q + "': dtype expected BF16 [32, 32]") !=
                    std::string::npos,
                r.status().message());
  CHECK(r.status().message().find("found I16 [32, 32]") != std::string::npos);

  // An I8 weight without its scale.
  REQUIRE(write_edited(w, path, [&](TensorToWrite& t) {
            if (t.name == up) t.dtype = DType::kI8;
            return true;
          }).ok());
  r = ModelWeights::load(w.config(), path);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("scale '" + up + "_scale' (F32 [16]) is missing") !=
        std::string::npos);

  // A truncated model file.
  REQUIRE(w.save(path).ok());
  std::vector<uint8_t> bytes = read_all(path);
  REQUIRE(!bytes.empty());
  bytes.pop_back();
  write_all(path, bytes);
  r = ModelWeights::load(w.config(), path);
  CHECK(r.status().code() == StatusCode::kParseError);
  CHECK(ModelWeights::load(w.config(), dir.file("absent.safetensors")).status().code() ==
        StatusCode::kNotFound);
}

TEST_CASE("models.weights: extra tensors are counted, or refused on request") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(tiny_config(), 5).value();
  const std::string path = dir.file("m.safetensors");
  const float extra_value = 1.0f;
  REQUIRE(w.save(path).ok());
  // Rewrite with one more tensor (as an MTP layer of a real checkpoint would be).
  {
    const SafetensorsFile f = SafetensorsFile::open(path).value();
    std::vector<TensorToWrite> all;
    for (const TensorInfo& t : f.tensors())
      all.push_back({.name = t.name, .dtype = t.dtype, .shape = t.shape, .bytes = f.data(t)});
    all.push_back({.name = "model.layers.3.enorm.weight", .dtype = DType::kF32, .shape = {1},
                   .bytes = {reinterpret_cast<const uint8_t*>(&extra_value), 4}});
    REQUIRE(write_safetensors(dir.file("extra.safetensors"), all).ok());
  }
  int warnings = 0;
  const log::Level saved_level = log::current_level();
  log::set_level(log::Level::kWarn);
  log::Sink previous = log::set_sink([&](log::Level level, const std::string& line) {
    warnings += level == log::Level::kWarn && line.find("ignoring 1 tensors") != std::string::npos;
  });
  StatusOr<ModelWeights> lenient = ModelWeights::load(w.config(), dir.file("extra.safetensors"));
  log::set_sink(previous);
  log::set_level(saved_level);
  REQUIRE(lenient.ok());
  CHECK(lenient->extra_tensor_count() == 1);
  CHECK(warnings == 1);
  StatusOr<ModelWeights> strict = ModelWeights::load(w.config(), dir.file("extra.safetensors"),
                                                     {.refuse_extra_tensors = true});
  REQUIRE_FALSE(strict.ok());
  CHECK(strict.status().message().find("1 tensors not in the model, e.g. "
                                       "'model.layers.3.enorm.weight'") != std::string::npos);
}

TEST_CASE("models.weights: F32 and F16 sources are converted to BF16 on load") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(tiny_config(), 9).value();
  const std::string path = dir.file("f.safetensors");
  std::vector<std::vector<uint8_t>> keep;
  std::vector<TensorToWrite> out;
  size_t i = 0;
  for (const TensorSpec& spec : w.specs()) {
    const Tensor t = w.tensor(spec.name).value();
    const DType as = (i++ % 2 == 0) ? DType::kF32 : DType::kF16;
    std::vector<uint8_t> bytes(spec.num_elements() * dtype_size(as));
    for (uint64_t e = 0; e < spec.num_elements(); ++e) {
      const float v = t.dtype == DType::kBf16 ? ic::bf16_to_float(t.bf16()[e]) : t.f32()[e];
      if (as == DType::kF32) {
        std::memcpy(&bytes[4 * e], &v, 4);
      } else {
        const uint16_t h = float_to_f16(v);
        std::memcpy(&bytes[2 * e], &h, 2);
      }
    }
    keep.push_back(std::move(bytes));
    out.push_back({.name = spec.name, .dtype = as, .shape = spec.shape, .bytes = keep.back()});
  }
  REQUIRE(write_safetensors(path, out).ok());
  StatusOr<ModelWeights> loaded = ModelWeights::load(w.config(), path);
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  for (size_t s = 0; s < w.specs().size(); ++s) {
    const TensorSpec& spec = w.specs()[s];
    CAPTURE(spec.name);
    const Tensor a = w.tensor(spec.name).value();
    const Tensor b = loaded->tensor(spec.name).value();
    REQUIRE(b.dtype == spec.dtype);
    if (out[s].dtype == DType::kF32) {
      CHECK(a.bytes == b.bytes);  // BF16 -> F32 -> BF16 is exact
      continue;
    }
    // Through F16: each value equals BF16(F16(x)).
    for (uint64_t e = 0; e < spec.num_elements(); ++e) {
      const float x = a.dtype == DType::kBf16 ? ic::bf16_to_float(a.bf16()[e]) : a.f32()[e];
      const float via = f16_to_float(float_to_f16(x));
      if (b.dtype == DType::kBf16) REQUIRE(b.bf16()[e] == ic::float_to_bf16(via));
      else REQUIRE(b.f32()[e] == via);
    }
  }
}

TEST_CASE("models.weights: INT8 experts save, load and dequantise within half a step") {
  TempDir dir;
  const ModelWeights w = ModelWeights::random(tiny_config(), 13).value();
  const std::string path = dir.file("int8.safetensors");
  REQUIRE(w.save(path, {.int8_experts = true}).ok());
  const SafetensorsFile file = SafetensorsFile::open(path).value();
  const std::string gate = expert_tensor_name(1, 6, ExpertProj::kGate);  // [16, 32]
  REQUIRE(file.find(gate) != nullptr);
  CHECK(file.find(gate)->dtype == DType::kI8);
  REQUIRE(file.find(gate + "_scale") != nullptr);
  CHECK(file.find(gate + "_scale")->shape == std::vector<uint64_t>{16});
  CHECK(file.find("model.layers.1.mlp.shared_experts.down_proj.weight")->dtype == DType::kI8);
  CHECK(file.find("model.layers.1.self_attn.q_proj.weight")->dtype == DType::kBf16);

  StatusOr<ModelWeights> loaded = ModelWeights::load(w.config(), path, {.refuse_extra_tensors = true});
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  CHECK(loaded->stored_as_int8(gate));
  CHECK_FALSE(loaded->stored_as_int8("model.layers.1.self_attn.q_proj.weight"));
  const QuantizedTensor direct = w.quantized(gate).value();
  const QuantizedTensor stored = loaded->quantized(gate).value();
  CHECK(direct.values == stored.values);
  CHECK(direct.scales == stored.scales);
  const Tensor original = w.tensor(gate).value();
  const Tensor dequantised = loaded->tensor(gate).value();
  const uint64_t cols = 32;
  int nonzero = 0;
  for (uint64_t e = 0; e < original.bf16().size(); ++e) {
    const float a = ic::bf16_to_float(original.bf16()[e]);
    const float b = ic::bf16_to_float(dequantised.bf16()[e]);
    const float scale = stored.scales[e / cols];
    // Half a quantisation step, plus BF16 rounding of the dequantised value.
    CHECK(std::abs(a - b) <= scale / 2 + std::abs(b) * (1.0f / 256) + 1e-7f);
    CHECK(b == ic::round_to_bf16(stored.values[e] * scale));
    nonzero += stored.values[e] != 0;
  }
  CHECK(nonzero > 400);
  for (uint64_t r = 0; r < 16; ++r) {  // each row uses the full range
    int8_t mx = 0;
    for (uint64_t c = 0; c < cols; ++c)
      mx = std::max<int8_t>(mx, static_cast<int8_t>(std::abs(stored.values[r * cols + c])));
    CHECK(mx == 127);
  }
  CHECK(w.quantized("model.norm.weight").status().code() == StatusCode::kInvalidArgument);
  // A loaded INT8 model saves again with the same integers (no double rounding).
  REQUIRE(loaded->save(dir.file("again.safetensors"), {.int8_experts = true}).ok());
  const ModelWeights again = ModelWeights::load(w.config(), dir.file("again.safetensors")).value();
  CHECK(again.quantized(gate).value().values == stored.values);
}
