// A greedy step of a batch of sequences, shared by the engine benchmarks.
#pragma once

#include <algorithm>
#include <span>
#include <vector>

#include "models/engine/engine.h"

namespace moe::bench {

// `batch` deterministic prompts of `length` tokens below `vocab`, different per sequence.
inline std::vector<std::vector<uint32_t>> synthetic_prompts(uint32_t batch, uint32_t length,
                                                            uint32_t vocab) {
  std::vector<std::vector<uint32_t>> prompts(batch);
  for (uint32_t b = 0; b < batch; ++b)
    for (uint32_t i = 0; i < length; ++i) prompts[b].push_back((b * 37 + i * 11) % vocab);
  return prompts;
}

// Feeds each sequence its prompt (first step) or its last greedy token, runs one engine step,
// and leaves each sequence's next greedy token in next[b]. logits is scratch.
inline Status greedy_step(models::Engine& e, std::span<const models::SeqId> seqs,
                          const std::vector<std::vector<uint32_t>>& prompts, bool first,
                          std::vector<uint32_t>& next, std::vector<float>& logits,
                          models::StepStats* stats) {
  const uint32_t V = e.config().vocab_size;
  std::vector<models::StepInput> in;
  for (size_t b = 0; b < seqs.size(); ++b)
    in.push_back({seqs[b], first ? std::span<const uint32_t>(prompts[b])
                                 : std::span<const uint32_t>(&next[b], 1)});
  logits.assign(in.size() * V, 0.0f);
  MOE_TRY(e.forward(in, logits, stats));
  for (size_t b = 0; b < seqs.size(); ++b) {
    const float* row = logits.data() + uint64_t{b} * V;
    next[b] = static_cast<uint32_t>(std::max_element(row, row + V) - row);
  }
  return ok_status();
}

}  // namespace moe::bench
