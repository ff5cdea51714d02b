// DeviceWeights' internal state, shared by device_weights.cpp (load) and engine_placement.cpp
// (re-placement of routed experts). Not a public header.
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "models/engine/device_weights.h"
#include "runtime/stream.h"

namespace moe::models {

struct DeviceWeights::State {
  ModelConfig config;
  DevicePlacement placement;
  std::vector<std::vector<HbmBlock>> replica_blocks;  // [DP rank][tensor]
  std::vector<ReplicaWeights> replicas;
  std::vector<std::vector<HbmBlock>> expert_blocks;  // [moe layer * R + rank][local expert]
  std::vector<std::vector<ExpertBank>> banks;        // [moe layer][rank]
  std::vector<MoeLayerWorking> moe;
  std::vector<uint64_t> hbm_per_rank;
  std::vector<ic::ExpertMap> layer_maps;             // [moe layer]: the map in use
  // Fabric streams of the NPUs re-placement copied to (kept for the next one).
  std::unordered_map<dev::NpuId, std::unique_ptr<rt::Stream>> fabric_streams;
};

}  // namespace moe::models
