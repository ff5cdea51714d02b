// Number formats of the tokens MoE dispatch and combine move: BF16 rounding and INT8
// quantization with one scale per token.
//
// BF16 is stored as the upper 16 bits of an IEEE float (uint16_t). Conversion from float
// rounds to nearest, ties to even; NaN stays NaN (quiet). Conversion to float is exact.
//
// INT8 per-token quantization (the dispatch format of DeepSeek-V3-class models):
//   scale = max_h |x_h| / 127          (a row of zeros gets scale 0)
//   q_h   = clamp(round_half_even(x_h / scale), -127, 127)
//   x'_h  = q_h * scale                (dequantised)
// so |x_h - x'_h| <= scale / 2 = max|x| / 254 for every element (plus float rounding of the
// division). Non-finite inputs are the caller's to refuse (dispatch does not check payloads).
//
// Pure functions on spans: no allocation, thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace moe::ic {

// The wire formats a token row can take.
enum class TokenFormat : uint8_t {
  kBf16 = 0,     // 2 bytes per element
  kInt8 = 1,     // 1 byte per element, plus a float scale per token
  kFloat32 = 2,  // 4 bytes per element
};
const char* token_format_name(TokenFormat format);
// Bytes of one element in `format`.
uint32_t token_element_bytes(TokenFormat format);

inline float bf16_to_float(uint16_t v) {
  const uint32_t bits = uint32_t{v} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// The float nearest to f that BF16 can hold.
inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

// Quantizes one row of BF16 values (out.size() == in.size()); returns the scale.
float quantize_int8_row(std::span<const uint16_t> in_bf16, std::span<int8_t> out);
// The same from floats.
float quantize_int8_row(std::span<const float> in, std::span<int8_t> out);
// out_h = q_h * scale.
void dequantize_int8_row(std::span<const int8_t> in, float scale, std::span<float> out);

}  // namespace moe::ic
