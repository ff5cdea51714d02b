// Embedding lookup: validate every id, then widen each table row (a contiguous loop).
#include "models/kernels/embedding.h"

#include "interconnect/quant_int8.h"

namespace moe::models::kernels {

Status embedding_lookup(std::span<const uint16_t> table_bf16, uint32_t vocab_size,
                        uint32_t hidden, std::span<const uint32_t> token_ids, float* out) {
  if (vocab_size == 0 || hidden == 0 || table_bf16.size() != size_t{vocab_size} * hidden)
    return make_error(StatusCode::kInvalidArgument,
                      "embedding: table has %zu elements, expected vocab %u x hidden %u",
                      table_bf16.size(), vocab_size, hidden);
  for (size_t i = 0; i < token_ids.size(); ++i)
    if (token_ids[i] >= vocab_size)
      return make_error(StatusCode::kOutOfRange,
                        "embedding: token %zu has id %u, outside the vocabulary of %u", i,
                        token_ids[i], vocab_size);
  for (size_t i = 0; i < token_ids.size(); ++i) {
    const uint16_t* row = table_bf16.data() + size_t{token_ids[i]} * hidden;
    float* o = out + i * hidden;
    for (uint32_t h = 0; h < hidden; ++h) o[h] = ic::bf16_to_float(row[h]);
  }
  return ok_status();
}

}  // namespace moe::models::kernels
