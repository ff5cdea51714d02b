// Counter-based initialisation: one hash per element, no generator state, so any element is
// computable on its own (see weight_init.h for the distribution per role).
#include "models/weights/weight_init.h"

#include <cmath>
#include <cstring>

#include "interconnect/quant_int8.h"

namespace moe::models {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

struct Init {
  enum class Kind { kConstant, kNormal } kind = Kind::kNormal;
  float value = 0;  // kConstant
  float std = 1;    // kNormal
  uint64_t key = 0;
};

Init init_for(const ModelConfig& c, const TensorSpec& spec, uint64_t seed) {
  Init init;
  init.key = splitmix64(seed ^ splitmix64(fnv1a64(spec.name)));
  const double in = spec.shape.size() >= 2 ? static_cast<double>(spec.shape[1]) : 1.0;
  switch (spec.role) {
    case TensorRole::kNorm:
      init.kind = Init::Kind::kConstant;
      init.value = 1.0f;
      break;
    case TensorRole::kEmbedding:
      init.std = 1.0f;
      break;
    case TensorRole::kRouterBias:
      init.std = 0.01f;
      break;
    case TensorRole::kOutputLinear:
      init.std = static_cast<float>(1.0 / std::sqrt(in) /
                                    std::sqrt(2.0 * std::max<uint32_t>(c.num_layers, 1)));
      break;
    case TensorRole::kLinear:
    case TensorRole::kRouter:
    case TensorRole::kLmHead:
      init.std = static_cast<float>(1.0 / std::sqrt(in));
      break;
  }
  return init;
}

inline float sample(const Init& init, uint64_t index) {
  if (init.kind == Init::Kind::kConstant) return init.value;
  const uint64_t r = splitmix64(init.key + index * 0xd1b54a32d192ed03ull);
  // Irwin-Hall: four 16-bit uniforms, mean 2, variance 4/12; scaled to unit variance.
  const uint32_t sum = static_cast<uint32_t>(r & 0xffff) + static_cast<uint32_t>((r >> 16) & 0xffff) +
                       static_cast<uint32_t>((r >> 32) & 0xffff) + static_cast<uint32_t>(r >> 48);
  constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(3) per unit of (sum - 2)
  const float z = (static_cast<float>(sum) + 2.0f - 2.0f * 65536.0f) * kScale;
  return z * init.std;
}

}  // namespace

float init_value(const ModelConfig& config, const TensorSpec& spec, uint64_t seed,
                 uint64_t index) {
  return sample(init_for(config, spec, seed), index);
}

Status init_tensor_range(const ModelConfig& config, const TensorSpec& spec, uint64_t seed,
                         uint64_t first_element, std::span<uint8_t> out) {
  const uint32_t elem = dtype_size(spec.dtype);
  const uint64_t total = spec.num_elements();
  const uint64_t count = out.size() / elem;
  if (out.size() % elem != 0 || first_element > total || count > total - first_element)
    return make_error(StatusCode::kOutOfRange,
                      "tensor '%s': elements [%llu, +%zu bytes) outside its %llu elements of %d "
                      "bytes",
                      spec.name.c_str(), static_cast<unsigned long long>(first_element),
                      out.size(), static_cast<unsigned long long>(total), static_cast<int>(elem));
  const Init init = init_for(config, spec, seed);
  if (spec.dtype == DType::kBf16) {
    for (uint64_t i = 0; i < count; ++i) {
      const uint16_t v = ic::float_to_bf16(sample(init, first_element + i));
      std::memcpy(out.data() + 2 * i, &v, 2);
    }
  } else if (spec.dtype == DType::kF32) {
    for (uint64_t i = 0; i < count; ++i) {
      const float v = sample(init, first_element + i);
      std::memcpy(out.data() + 4 * i, &v, 4);
    }
  } else {
    return make_error(StatusCode::kUnsupported, "tensor '%s': cannot initialise dtype %s",
                      spec.name.c_str(), std::string(dtype_name(spec.dtype)).c_str());
  }
  return Status();
}

}  // namespace moe::models
