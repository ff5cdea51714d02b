// Generation over an Engine: prompts in, sampled tokens out, many requests in one batch.
//
// Each step packs every unfinished request: a request still in prefill contributes the next
// chunk of its prompt, one in decode its last sampled token; every home (DP rank) takes at
// most the engine's max_tokens_per_rank tokens per step, in request order (chunked prefill
// mixed with decode, as continuous batching does). After a step, a request whose prompt is
// all in the cache samples its next token from the step's logits at that position
// (models/kernels/sampling.h: seeded by (request seed, position), so a request's tokens do
// not depend on what shares its batch or on how many NPUs run it). A request ends after
// max_new_tokens tokens; its sequence is closed.
//
// Errors: kInvalidArgument for an empty prompt or bad sampling parameters (naming the
// request), a prompt + max_new_tokens over the model's max_seq_len; engine errors as they
// come (every request's sequence is closed on the way out).
// Thread-safety: as the engine (one thread).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/engine/engine.h"
#include "models/kernels/sampling.h"

namespace moe::models {

struct GenerateRequest {
  std::vector<uint32_t> prompt;
  uint32_t max_new_tokens = 16;
  kernels::SamplingParams sampling;
};

struct GenerateStats {
  uint32_t steps = 0;
  uint32_t prefill_steps = 0;     // steps that carried prompt tokens
  uint64_t prompt_tokens = 0;
  uint64_t generated_tokens = 0;
  int64_t wall_ns = 0;
  int64_t math_wall_ns = 0;
  int64_t comm_wall_ns = 0;
  double modelled_ns = 0;         // sum of the steps' modelled durations
  double decode_modelled_ns = 0;  // of the steps that carried no prompt tokens
  uint32_t decode_steps = 0;
};

// Called after each sampled token: (request index, token).
using TokenCallback = std::function<void(size_t request, uint32_t token)>;

// Returns the generated tokens of each request (prompt excluded).
StatusOr<std::vector<std::vector<uint32_t>>> generate(Engine& engine,
                                                      std::span<const GenerateRequest> requests,
                                                      GenerateStats* stats = nullptr,
                                                      const TokenCallback& on_token = {});

// The built-in model's byte-level vocabulary: text <-> token ids 0..255.
std::vector<uint32_t> bytes_to_tokens(std::string_view text);
// Printable ASCII as is; other bytes (and ids > 255) as \xNN escapes.
std::string tokens_to_text(std::span<const uint32_t> tokens);

}  // namespace moe::models
