// A model's decode at a TPOT target, in timing mode: the largest batch per NPU whose
// modelled TPOT holds the target (largest_batch_within over simulate()), with the batch-1
// step for reference (the floor: when it is over the target, no batch holds it).
#pragma once

#include <cstdint>

#include "models/model_config.h"
#include "models/simulate.h"
#include "runtime/base/status.h"

namespace moe::models::serving {

struct DecodeAtTarget {
  double target_ns = 0;
  SimulateResult batch1;     // batch 1 per NPU
  uint32_t batch = 0;        // the largest batch per NPU within the target; 0: none
  SimulateResult at_batch;   // that batch's step (valid when batch > 0)
  uint32_t evaluations = 0;  // simulations run
};

// `options` gives everything but the batch (phase must be decode). Errors: simulate()'s,
// kInvalidArgument for a prefill phase, target <= 0 or max_batch 0.
StatusOr<DecodeAtTarget> decode_at_target(const ModelConfig& model, SimulateOptions options,
                                          double target_ns, uint32_t max_batch,
                                          bool bisect = true);

}  // namespace moe::models::serving
