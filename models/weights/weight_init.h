// Seeded random initialisation, deterministic per tensor and per element.
//
// The value of element i of tensor `name` depends only on (seed, name, i): a counter-based
// hash (splitmix64 of the seed mixed with an FNV-1a hash of the name, then of the index), so
// any subset of tensors, or any element range of one, materialises to exactly the values a
// full materialisation gives: the engine can build only the experts one NPU holds.
//
// Distribution by role (TensorSpec::role), scaled to keep a forward pass tame:
//   linear, router, LM head: approximately normal (Irwin-Hall sum of four uniforms, mean 0,
//     std 1, bounded by 2*sqrt(3)) times 1/sqrt(in), in = shape[1];
//   output linear (o_proj, down_proj): the same times 1/sqrt(2 * num_layers) (each layer's
//     two residual updates then add about unit variance in total);
//   embedding: std 1 (the first RMSNorm rescales anyway);
//   norms: exactly 1;  router bias: std 0.01.
// Values are rounded to the storage dtype (BF16, round to nearest even; F32 as is).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

#include "models/model_config.h"
#include "models/weights/weight_spec.h"
#include "runtime/base/status.h"

namespace moe::models {

// The initial value of element `index` of `spec` (before rounding to its dtype).
float init_value(const ModelConfig& config, const TensorSpec& spec, uint64_t seed, uint64_t index);

// Fills `out` with elements [first_element, first_element + out.size() / dtype size) of `spec`
// in its storage dtype. kOutOfRange if the range passes the end of the tensor or out.size() is
// not a whole number of elements.
Status init_tensor_range(const ModelConfig& config, const TensorSpec& spec, uint64_t seed,
                         uint64_t first_element, std::span<uint8_t> out);

}  // namespace moe::models
