// W8A8 weight quantisation: per-output-channel symmetric INT8.
//
// For a [rows, cols] weight (rows = output channels): scale_r = max_c |w_rc| / 127 (0 for an
// all-zero row), q_rc = clamp(round_half_even(w_rc / scale_r), -127, 127), so |w - q * scale|
// <= scale / 2 per element. Stored in safetensors as the tensor's name with dtype I8 and
// "<name>_scale" F32 [rows]. Row arithmetic is that of ic::quantize_int8_row (the token
// format of dispatch), so weights and activations share one rounding rule.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

namespace moe::models {

// Preconditions: bf16.size() == out.size() == rows * cols, scales.size() == rows.
void quantize_rows_int8(std::span<const uint16_t> bf16, uint64_t rows, uint64_t cols,
                        std::span<int8_t> out, std::span<float> scales);
// The BF16 value (round to nearest even) of q * scale.
uint16_t dequantize_int8_to_bf16(int8_t q, float scale);

}  // namespace moe::models
