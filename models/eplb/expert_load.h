// Per-expert load statistics for the balancer: a decayed window over the engine's counts.
//
// The engine counts the tokens each routed expert receives since it opened
// (Engine::expert_load(), per MoE layer, cumulative). A balancer wants RECENT load: traffic
// shifts (a new batch of prompts, a different language) and a placement tuned for the first
// hour is wrong for the second. ExpertLoadTracker takes a snapshot of the cumulative counts
// whenever it is asked to observe() (e.g. every step, or every N steps), and keeps
//     window = decay * window + (counts - counts at the previous observation)
// per (layer, expert): an exponentially decayed sum whose half-life is ln 2 / -ln decay
// observations. decay 1.0 keeps the whole history, 0.0 only the last interval.
//
// A plain value; not thread-safe (the thread that drives the engine owns it).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models::eplb {

class ExpertLoadTracker {
 public:
  // num_layers x num_experts counters, all zero; decay in [0, 1] (clamped).
  ExpertLoadTracker(uint32_t num_layers, uint32_t num_experts, double decay = 0.9);

  // Folds in what happened since the previous call. `cumulative`: per layer, per expert, the
  // engine's counts since it opened. kInvalidArgument (nothing changes) when the shape
  // differs from the tracker's or a count went backwards (a different engine).
  Status observe(const std::vector<std::vector<uint64_t>>& cumulative);

  // The decayed load per layer per expert (tokens).
  const std::vector<std::vector<double>>& window() const { return window_; }
  // Observations folded in so far.
  uint64_t observations() const { return observations_; }
  double decay() const { return decay_; }

 private:
  double decay_;
  uint64_t observations_ = 0;
  std::vector<std::vector<uint64_t>> last_;
  std::vector<std::vector<double>> window_;
};

}  // namespace moe::models::eplb
