// ModelWeights: the spec index, random and file-backed reads with dtype conversion, experts,
// and INT8 views. Loading lives in weight_load.cpp, saving in weight_save.cpp.
//
// Conversion reads source elements with memcpy (tensors in foreign files need not be aligned)
// and writes the spec dtype: BF16 by round-to-nearest-even, F32 exactly.
#include "models/weights/weight_store.h"

#include <cstring>

#include "interconnect/quant_int8.h"
#include "models/weights/weight_init.h"
#include "models/weights/weight_int8.h"
#include "models/weights/weight_store_source.h"
#include "runtime/base/check.h"

namespace moe::models {
namespace {

float source_element(DType dtype, const uint8_t* p) {
  switch (dtype) {
    case DType::kBf16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return ic::bf16_to_float(v);
    }
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return f16_to_float(v);
    }
    default: {  // kF32 (the loader admits nothing else here)
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
  }
}

void store_element(DType dtype, float v, uint8_t* out) {
  if (dtype == DType::kBf16) {
    const uint16_t b = ic::float_to_bf16(v);
    std::memcpy(out, &b, 2);
  } else {
    std::memcpy(out, &v, 4);
  }
}

}  // namespace

ModelWeights::ModelWeights() = default;
ModelWeights::~ModelWeights() = default;
ModelWeights::ModelWeights(ModelWeights&&) noexcept = default;
ModelWeights& ModelWeights::operator=(ModelWeights&&) noexcept = default;

StatusOr<ModelWeights> ModelWeights::random(const ModelConfig& config, uint64_t seed) {
  MOE_TRY(validate_config(config));
  ModelWeights w;
  w.config_ = config;
  w.seed_ = seed;
  w.specs_ = model_tensor_specs(config);
  w.spec_index_.reserve(w.specs_.size());
  for (size_t i = 0; i < w.specs_.size(); ++i) w.spec_index_.emplace(w.specs_[i].name, i);
  return w;
}

const TensorSpec* ModelWeights::find_spec(std::string_view name) const {
  const auto it = spec_index_.find(std::string(name));
  return it == spec_index_.end() ? nullptr : &specs_[it->second];
}

bool ModelWeights::stored_as_int8(std::string_view name) const {
  const auto it = spec_index_.find(std::string(name));
  return it != spec_index_.end() && !sources_.empty() && sources_[it->second].has_scale;
}

Status ModelWeights::read_from_source(const TensorSpec& spec, const Source& src,
                                      std::span<uint8_t> out, uint64_t first_element) const {
  const SafetensorsFile& file = files_[src.file];
  const TensorInfo& info = file.tensors()[src.tensor];
  const std::span<const uint8_t> data = file.data(info);
  const uint64_t count = out.size() / dtype_size(spec.dtype);
  const uint32_t out_elem = dtype_size(spec.dtype);
  if (src.has_scale) {
    const TensorInfo& scale_info = files_[src.scale_file].tensors()[src.scale_tensor];
    const std::span<const uint8_t> scales = files_[src.scale_file].data(scale_info);
    const uint64_t cols = spec.shape.size() >= 2 ? spec.num_elements() / spec.shape[0] : 1;
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t e = first_element + i;
      float scale;
      std::memcpy(&scale, scales.data() + 4 * (e / cols), 4);
      const uint16_t v = dequantize_int8_to_bf16(static_cast<int8_t>(data[e]), scale);
      std::memcpy(out.data() + 2 * i, &v, 2);
    }
    return Status();
  }
  if (info.dtype == spec.dtype) {
    std::memcpy(out.data(), data.data() + first_element * out_elem, out.size());
    return Status();
  }
  const uint32_t in_elem = dtype_size(info.dtype);
  for (uint64_t i = 0; i < count; ++i)
    store_element(spec.dtype, source_element(info.dtype, data.data() + (first_element + i) * in_elem),
                  out.data() + i * out_elem);
  return Status();
}

Status ModelWeights::read_into(std::string_view name, std::span<uint8_t> out,
                               uint64_t first_element) const {
  const auto it = spec_index_.find(std::string(name));
  if (it == spec_index_.end())
    return make_error(StatusCode::kNotFound, "model '%s' has no tensor '%.*s'",
                      config_.name.c_str(), static_cast<int>(name.size()), name.data());
  const TensorSpec& spec = specs_[it->second];
  const uint32_t elem = dtype_size(spec.dtype);
  const uint64_t total = spec.num_elements();
  if (out.size() % elem != 0 || first_element > total || out.size() / elem > total - first_element)
    return make_error(StatusCode::kOutOfRange,
                      "tensor '%s': %zu bytes from element %llu do not fit its %llu elements of "
                      "%u bytes",
                      spec.name.c_str(), out.size(), static_cast<unsigned long long>(first_element),
                      static_cast<unsigned long long>(total), elem);
  if (sources_.empty()) return init_tensor_range(config_, spec, seed_, first_element, out);
  return read_from_source(spec, sources_[it->second], out, first_element);
}

StatusOr<Tensor> ModelWeights::tensor(std::string_view name) const {
  const TensorSpec* spec = find_spec(name);
  if (spec == nullptr)
    return make_error(StatusCode::kNotFound, "model '%s' has no tensor '%.*s'",
                      config_.name.c_str(), static_cast<int>(name.size()), name.data());
  Tensor t;
  t.name = spec->name;
  t.dtype = spec->dtype;
  t.shape = spec->shape;
  t.bytes.resize(spec->size_bytes());
  MOE_TRY(read_into(name, t.bytes));
  return t;
}

StatusOr<ExpertTensors> ModelWeights::expert(uint32_t layer, uint32_t expert) const {
  if (!config_.is_moe_layer(layer) || expert >= config_.num_experts)
    return make_error(StatusCode::kOutOfRange,
                      "model '%s': no routed expert %u in layer %u (MoE layers [%u, %u), %u "
                      "experts)",
                      config_.name.c_str(), expert, layer, config_.num_dense_layers,
                      config_.num_layers, config_.num_experts);
  ExpertTensors w;
  MOE_TRY_ASSIGN(w.gate, tensor(expert_tensor_name(layer, expert, ExpertProj::kGate)));
  MOE_TRY_ASSIGN(w.up, tensor(expert_tensor_name(layer, expert, ExpertProj::kUp)));
  MOE_TRY_ASSIGN(w.down, tensor(expert_tensor_name(layer, expert, ExpertProj::kDown)));
  return w;
}

StatusOr<QuantizedTensor> ModelWeights::quantized(std::string_view name) const {
  const TensorSpec* spec = find_spec(name);
  if (spec == nullptr)
    return make_error(StatusCode::kNotFound, "model '%s' has no tensor '%.*s'",
                      config_.name.c_str(), static_cast<int>(name.size()), name.data());
  if (spec->dtype != DType::kBf16 || spec->shape.size() != 2)
    return make_error(StatusCode::kInvalidArgument,
                      "tensor '%s' (%s %s) is not a 2-D BF16 weight: no INT8 form",
                      spec->name.c_str(), std::string(dtype_name(spec->dtype)).c_str(),
                      shape_to_string(spec->shape).c_str());
  const uint64_t rows = spec->shape[0], cols = spec->shape[1];
  QuantizedTensor q;
  q.name = spec->name;
  q.shape = spec->shape;
  q.values.resize(rows * cols);
  q.scales.resize(rows);
  const size_t index = spec_index_.find(spec->name)->second;
  if (!sources_.empty() && sources_[index].has_scale) {
    const Source& src = sources_[index];
    const std::span<const uint8_t> values =
        files_[src.file].data(files_[src.file].tensors()[src.tensor]);
    const std::span<const uint8_t> scales =
        files_[src.scale_file].data(files_[src.scale_file].tensors()[src.scale_tensor]);
    std::memcpy(q.values.data(), values.data(), values.size());
    std::memcpy(q.scales.data(), scales.data(), scales.size());
    return q;
  }
  MOE_TRY_ASSIGN(Tensor t, tensor(name));
  quantize_rows_int8(t.bf16(), rows, cols, q.values, q.scales);
  return q;
}

}  // namespace moe::models
