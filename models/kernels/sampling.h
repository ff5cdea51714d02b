// Choosing the next token from logits: greedy, temperature, top-p (nucleus), seeded.
//
// temperature == 0 is greedy: the largest logit, the lowest token id among equals. Otherwise
// probabilities p_i proportional to exp((logit_i - max) / temperature); with top_p < 1 they
// are restricted to the nucleus, the fewest most probable tokens (ties by lower id first)
// whose probability sums to at least top_p (always at least one token), and renormalised.
// The draw is an inverse-CDF walk with one uniform number u = sampling_uniform(seed,
// position): a counter-based function of the request's seed and the token's position only,
// so the same request gives the same tokens whatever else shares its batch, on one NPU or
// on 384.
//
// Refused with kInvalidArgument (naming the value): temperature < 0 or NaN, top_p outside
// (0, 1], an empty vocabulary, a NaN or +inf logit (naming its index), all logits -inf.
// -inf logits are allowed (masked tokens) and are never drawn.
//
// Scratch: grows to the vocabulary size, then reused (no allocation per token in steady
// state); one per thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models::kernels {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]; 1: the whole vocabulary
  uint64_t seed = 0;         // the request's seed
};

Status validate_sampling_params(const SamplingParams& params);

// A uniform double in [0, 1) from (seed, position): splitmix64 finalisers over both,
// 53 random bits. Pure.
double sampling_uniform(uint64_t seed, uint64_t position);

struct SamplingScratch {
  std::vector<float> probs;
  std::vector<uint32_t> order;
};

// The token for one row of logits (vocab = logits.size()) at sequence position `position`.
StatusOr<uint32_t> sample_token(std::span<const float> logits, const SamplingParams& params,
                                uint64_t position, SamplingScratch& scratch);

// One token per row: logits [rows][vocab]; params, positions and tokens have `rows` entries.
// Stops at the first refused row (its error names the row); tokens of earlier rows are set.
Status sample_tokens(const float* logits, uint32_t rows, uint32_t vocab,
                     std::span<const SamplingParams> params, std::span<const uint64_t> positions,
                     SamplingScratch& scratch, std::span<uint32_t> tokens);

}  // namespace moe::models::kernels
