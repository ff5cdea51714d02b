// Token embedding lookup from a BF16 table.
//
// table_bf16 is [vocab_size][hidden] BF16 (uint16_t) row-major, the checkpoint layout of
// embed_tokens. out is [token_ids.size()][hidden] FP32 (exact widening of BF16).
// Refused with kInvalidArgument when the table's size is not vocab_size * hidden, and with
// kOutOfRange naming the first offending position and id when an id is >= vocab_size; all
// ids are checked before anything is written. Pure; thread-safe for disjoint outputs.
#pragma once

#include <cstdint>
#include <span>

#include "runtime/base/status.h"

namespace moe::models::kernels {

Status embedding_lookup(std::span<const uint16_t> table_bf16, uint32_t vocab_size,
                        uint32_t hidden, std::span<const uint32_t> token_ids, float* out);

}  // namespace moe::models::kernels
