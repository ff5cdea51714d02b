// Element types of safetensors files, and the conversions the weight store performs.
//
// Every dtype the safetensors format names is known here (so any well-formed file validates,
// sizes and all); the weight store converts BF16, F16, F32 (to BF16 or F32) and reads I8 / I32
// as they are. F8 and the other integer types are recognised but never converted.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace moe::models {

enum class DType : uint8_t {
  kBool, kU8, kI8, kF8E5M2, kF8E4M3, kI16, kU16, kF16, kBf16, kI32, kU32, kF32, kF64, kI64, kU64,
};

// The safetensors spelling: "BF16", "F32", "I8", "F8_E4M3", ...
std::string_view dtype_name(DType dtype);
// Bytes per element.
uint32_t dtype_size(DType dtype);
// The dtype spelled `name` (exact, case-sensitive), or nullopt.
std::optional<DType> parse_dtype(std::string_view name);

// IEEE binary16 <-> float. float -> half rounds to nearest even; overflow gives infinity.
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);

}  // namespace moe::models
