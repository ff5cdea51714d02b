// Token number formats (see quant_int8.h). Plain loops: the compiler vectorises the max and
// the scaling; rounding uses nearbyint (the default rounding mode: half to even).
#include "interconnect/quant_int8.h"

#include <algorithm>
#include <cmath>

namespace moe::ic {
namespace {

template <typename Load>
float quantize_row(size_t n, Load load, std::span<int8_t> out) {
  float max_abs = 0;
  for (size_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(load(i)));
  if (max_abs == 0 || !std::isfinite(max_abs)) {
    std::fill(out.begin(), out.end(), int8_t{0});
    return max_abs == 0 ? 0.0f : max_abs / 127.0f;
  }
  const float scale = max_abs / 127.0f;
  const float inv = 127.0f / max_abs;
  for (size_t i = 0; i < n; ++i) {
    const float q = std::nearbyint(load(i) * inv);
    out[i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
  }
  return scale;
}

}  // namespace

const char* token_format_name(TokenFormat format) {
  switch (format) {
    case TokenFormat::kBf16:
      return "bf16";
    case TokenFormat::kInt8:
      return "int8";
    case TokenFormat::kFloat32:
      return "fp32";
  }
  return "unknown";
}

uint32_t token_element_bytes(TokenFormat format) {
  switch (format) {
    case TokenFormat::kBf16:
      return 2;
    case TokenFormat::kInt8:
      return 1;
    case TokenFormat::kFloat32:
      return 4;
  }
  return 0;
}

float quantize_int8_row(std::span<const uint16_t> in_bf16, std::span<int8_t> out) {
  return quantize_row(
      in_bf16.size(), [&](size_t i) { return bf16_to_float(in_bf16[i]); }, out);
}

float quantize_int8_row(std::span<const float> in, std::span<int8_t> out) {
  return quantize_row(
      in.size(), [&](size_t i) { return in[i]; }, out);
}

void dequantize_int8_row(std::span<const int8_t> in, float scale, std::span<float> out) {
  for (size_t i = 0; i < in.size(); ++i) out[i] = static_cast<float>(in[i]) * scale;
}

}  // namespace moe::ic
