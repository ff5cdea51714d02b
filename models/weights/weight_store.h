// ModelWeights: the weights of one model, random or from safetensors, read one tensor at a time.
//
// A ModelWeights never holds the model's data. It knows the TensorSpec list of its config and
// a source: either a seed (values computed on demand, weight_init.h) or a set of mapped
// safetensors files validated against the specs when loaded. The engine asks for what it
// places (one tensor, one expert's three, or an element range of a tensor), so a full-size
// model is never materialised; only the built-in and test models ever are, whole.
//
// Loading (load()): `path` is one .safetensors file or a directory of shards, with or without
// a model.safetensors.index.json {"weight_map": {tensor: file}} (parsed with the strict JSON
// parser; file names must be plain names inside the directory). Every spec must be present
// with its shape; a source of dtype BF16, F16 or F32 is converted to the spec's dtype on read
// (BF16 rounding to nearest even); a BF16 spec may also be stored as INT8: an I8 tensor of the
// same shape plus "<name>_scale", F32 [out] (per output channel, models/weights/weight_int8.h).
// Refusals name the tensor with the expected and found dtype / shape; all problems are
// counted in the message. Tensors not in the spec are ignored and counted
// (extra_tensor_count(), one warning), or refused with LoadOptions::refuse_extra_tensors.
//
// Saving (save()): all tensors, streamed one at a time, into one file or, with
// max_shard_bytes, into shards model-0000i-of-0000n.safetensors plus the index, in a
// directory; optionally the expert weights as INT8 + scales.
//
// Thread-safety: immutable after creation; const methods may be called from any thread.
// Ownership: move-only handle owning the file mappings.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/model_config.h"
#include "models/weights/safetensors_reader.h"
#include "models/weights/weight_spec.h"
#include "runtime/base/status.h"

namespace moe::models {

// One materialised tensor in its spec's storage dtype (row-major).
struct Tensor {
  std::string name;
  DType dtype = DType::kBf16;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
  // Precondition: dtype == kBf16 (values as BF16 bit patterns) / kF32.
  std::span<const uint16_t> bf16() const {
    return {reinterpret_cast<const uint16_t*>(bytes.data()), bytes.size() / 2};
  }
  std::span<const float> f32() const {
    return {reinterpret_cast<const float*>(bytes.data()), bytes.size() / 4};
  }
};

// A [out, in] weight as INT8 with one F32 scale per output row: w[r][c] ~ values[r*in+c] *
// scales[r].
struct QuantizedTensor {
  std::string name;
  std::vector<uint64_t> shape;  // [out, in]
  std::vector<int8_t> values;
  std::vector<float> scales;
};

struct ExpertTensors {
  Tensor gate, up, down;  // [inter, hidden], [inter, hidden], [hidden, inter]
};

struct LoadOptions {
  bool refuse_extra_tensors = false;
};

struct SaveOptions {
  uint64_t max_shard_bytes = 0;  // 0: one file at `path`; else a directory of shards + index
  bool int8_experts = false;     // routed and shared expert weights as I8 + "_scale" F32
};

class ModelWeights {
 public:
  ModelWeights();
  ~ModelWeights();
  ModelWeights(ModelWeights&&) noexcept;
  ModelWeights& operator=(ModelWeights&&) noexcept;

  // Random weights of `config` from `seed`. Nothing is computed until asked for.
  // kInvalidArgument if the config does not validate.
  static StatusOr<ModelWeights> random(const ModelConfig& config, uint64_t seed);
  // Weights of `config` from safetensors at `path` (file or directory), validated (see above).
  static StatusOr<ModelWeights> load(const ModelConfig& config, const std::string& path,
                                     const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }
  // The spec named `name`, or nullptr.
  const TensorSpec* find_spec(std::string_view name) const;
  bool is_random() const { return sources_.empty(); }
  uint64_t seed() const { return seed_; }
  // Tensors in the loaded files that no spec names (and are not INT8 scales).
  size_t extra_tensor_count() const { return extra_tensors_; }
  // True when the tensor is stored as INT8 + scales in the loaded files.
  bool stored_as_int8(std::string_view name) const;

  // Elements [first_element, first_element + out.size() / dtype size) of tensor `name`, in its
  // spec dtype, into caller-owned memory. kNotFound for an unknown name; kOutOfRange for a
  // range past the end.
  Status read_into(std::string_view name, std::span<uint8_t> out, uint64_t first_element = 0) const;
  // The whole tensor.
  StatusOr<Tensor> tensor(std::string_view name) const;
  // The three weights of routed expert `expert` of MoE layer `layer`. kOutOfRange naming the
  // layer / expert when there is no such expert.
  StatusOr<ExpertTensors> expert(uint32_t layer, uint32_t expert) const;
  // A 2-D BF16 tensor as INT8 with per-row scales: as stored, or quantised from BF16
  // (scale = max|w_row| / 127). kInvalidArgument for a tensor that is not 2-D BF16.
  StatusOr<QuantizedTensor> quantized(std::string_view name) const;

  Status save(const std::string& path, const SaveOptions& options = {}) const;

 private:
  struct Source;  // where one spec's data lives in the loaded files
  Status load_sources(const std::string& path, const LoadOptions& options);
  Status read_from_source(const TensorSpec& spec, const Source& source, std::span<uint8_t> out,
                          uint64_t first_element) const;

  ModelConfig config_;
  uint64_t seed_ = 0;
  std::vector<TensorSpec> specs_;
  std::unordered_map<std::string, size_t> spec_index_;
  std::vector<SafetensorsFile> files_;
  std::vector<Source> sources_;  // empty: random; else one per spec
  size_t extra_tensors_ = 0;
};

}  // namespace moe::models
