// Per-row INT8 quantisation of weights, on top of the interconnect's row quantiser.
#include "models/weights/weight_int8.h"

#include "interconnect/quant_int8.h"

namespace moe::models {

void quantize_rows_int8(std::span<const uint16_t> bf16, uint64_t rows, uint64_t cols,
                        std::span<int8_t> out, std::span<float> scales) {
  for (uint64_t r = 0; r < rows; ++r)
    scales[r] = ic::quantize_int8_row(bf16.subspan(r * cols, cols), out.subspan(r * cols, cols));
}

uint16_t dequantize_int8_to_bf16(int8_t q, float scale) {
  return ic::float_to_bf16(static_cast<float>(q) * scale);
}

}  // namespace moe::models
