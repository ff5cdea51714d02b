// Where the experts of one MoE layer live, in EP ranks: the map dispatch routes by.
//
// Ranks are indexes into an MoeBuffer's rank list (a rank is an NPU, or a die of one:
// MoeBufferConfig::ranks_per_npu). Two kinds of experts:
//  - Routed experts 0..num_experts-1, chosen per token by the router (top-k ids). Each has
//    one or more replicas (redundant copies of a hot expert, EPLB style). A token is sent to
//    exactly ONE replica of each of its experts: replica (src_rank + token) mod R_e of the
//    expert's replica list (in the order the replicas were added). Consecutive tokens of one
//    source therefore go round-robin over the replicas, and sources start at different
//    replicas, so every replica gets an equal share (within one token per source) of
//    whatever traffic the expert draws, with no state and no communication.
//  - Shared experts 0..num_shared-1, applied to every token with a fixed weight (1.0 for
//    DeepSeek-V3). Each has replicas too; a token goes to the nearest one: a replica on its
//    own rank; else on another die of its own NPU; else on its own node; else anywhere.
//    Among the candidates of the nearest class, the token takes candidate
//    (src_rank + token) mod count, spreading a source's tokens as for routed experts.
//
// On each rank the experts it holds are numbered 0..local_experts(rank)-1 ("local expert
// index", what the receive layout is grouped by): its routed replicas by expert id, then its
// shared replicas by shared index.
//
// A plain value; not thread-safe for mutation, const functions may be called concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/base/status.h"

namespace moe::ic {

struct LocalExpert {
  bool shared = false;
  uint32_t expert = 0;  // routed expert id, or shared expert index
};

class ExpertMap {
 public:
  ExpertMap() = default;
  // num_experts routed experts (>= 1) without replicas yet, over num_ranks ranks (>= 1).
  ExpertMap(uint32_t num_experts, uint32_t num_ranks);

  // Routed experts placed in contiguous blocks, one replica each: expert e on rank
  // floor(e * num_ranks / num_experts) (DeepEP's layout when num_ranks divides num_experts).
  static ExpertMap uniform(uint32_t num_experts, uint32_t num_ranks);

  // Adds a replica of routed expert `expert` on `rank`. kInvalidArgument for an id or rank
  // out of range, or a second replica of one expert on one rank.
  Status add_replica(uint32_t expert, uint32_t rank);
  // Adds a shared expert with replicas on `ranks` (distinct, at least one) and the weight
  // its output is summed with. *index (optional): its shared index.
  Status add_shared_expert(const std::vector<uint32_t>& ranks, float weight = 1.0f,
                           uint32_t* index = nullptr);

  // OK when every routed expert has a replica; else kFailedPrecondition naming the first
  // expert without one.
  Status validate() const;

  uint32_t num_experts() const { return num_experts_; }
  uint32_t num_ranks() const { return num_ranks_; }
  uint32_t num_shared() const { return static_cast<uint32_t>(shared_.size()); }
  const std::vector<uint32_t>& replicas(uint32_t expert) const { return routed_[expert]; }
  const std::vector<uint32_t>& shared_replicas(uint32_t shared) const {
    return shared_[shared].ranks;
  }
  float shared_weight(uint32_t shared) const { return shared_[shared].weight; }

  // The rank a token's routed expert goes to (see the header note). Preconditions: valid().
  uint32_t routed_rank(uint32_t expert, uint32_t src_rank, uint32_t token) const {
    const std::vector<uint32_t>& r = routed_[expert];
    return r[(uint64_t{src_rank} + token) % r.size()];
  }

  // The local experts of `rank`, in local index order.
  std::vector<LocalExpert> local_experts(uint32_t rank) const;
  // The local index of routed expert `expert` (shared: shared index) on `rank`, or -1.
  int local_index(uint32_t rank, bool shared, uint32_t expert) const;

 private:
  struct Shared {
    std::vector<uint32_t> ranks;
    float weight = 1.0f;
  };
  uint32_t num_experts_ = 0;
  uint32_t num_ranks_ = 0;
  std::vector<std::vector<uint32_t>> routed_;  // per expert: replica ranks
  std::vector<Shared> shared_;
};

}  // namespace moe::ic
