// Internals of the UB transport shared by its two source files: the transport object (what
// every endpoint of it shares) and the barrier group. Not part of the public API.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "interconnect/signal_table.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/device/driver.h"

namespace moe::ic {

// Figures fixed when the transport opens (from ic_options.h and TransportOptions).
struct UbConfig {
  TransportCaps caps;
  double retry_detect_ns = 0;
  double host_issue_ns = 0;
  double device_issue_ns = 0;
  int64_t wait_timeout_ns = 0;
  int64_t completion_timeout_ns = 0;
  uint32_t queue_depth = 0;
};

class UbTransport final : public Transport {
 public:
  UbTransport(dev::Driver& driver, mem::GlobalMemory& memory, const UbConfig& config);

  std::string_view name() const override { return "ub"; }
  const TransportCaps& caps() const override { return config_.caps; }
  StatusOr<std::unique_ptr<Endpoint>> open_endpoint(const EndpointConfig& config) override;
  StatusOr<std::unique_ptr<Group>> create_group(std::span<const dev::NpuId> members) override;

  dev::Driver& driver() { return driver_; }
  mem::GlobalMemory& memory() { return memory_; }
  const UbConfig& config() const { return config_; }
  SignalTable& signals() { return signals_; }

 private:
  dev::Driver& driver_;
  mem::GlobalMemory& memory_;
  UbConfig config_;
  SignalTable signals_;
};

// A barrier group (transport.h). Fabric words, symmetric over the members: word 0 of the
// root (member 0) counts arrivals (each member adds 1 per barrier), word 1 of each member is
// its release word (set to the barrier's epoch). Host-side, per epoch parity, the number of
// members that have arrived and the latest modelled time an arrival reached the root: the
// member whose arrival completes the count sends the releases, leaving at that time. (The
// simulator runs members in wall-time order, which need not be modelled-time order, so the
// wall-last arriver is not necessarily the modelled-last one; the recorded maximum is.)
class UbGroup final : public Group {
 public:
  UbGroup(mem::GlobalMemory& memory, std::vector<dev::NpuId> members, mem::Allocation words,
          uint32_t num_npus);
  ~UbGroup() override;

  std::span<const dev::NpuId> members() const override { return members_; }
  int rank_of(dev::NpuId npu) const override {
    return npu < rank_.size() ? rank_[npu] : -1;
  }

  GlobalAddr root_counter() const { return root_counter_; }
  GlobalAddr release_word(uint32_t rank) const { return release_[rank]; }

  // Per member (touched only by that member's endpoint).
  struct MemberState {
    uint64_t epoch = 0;    // barriers entered
    bool arrived = false;  // barrier_arrive done, barrier_wait not yet
  };
  MemberState& member(uint32_t rank) { return member_state_[rank]; }

  // Records an arrival of epoch `epoch` that reached the root at `arrival_ns`. Returns true
  // for the member that completes the count, with *latest_ns the latest arrival.
  bool arrive(uint64_t epoch, double arrival_ns, double* latest_ns);

 private:
  mem::GlobalMemory& memory_;
  std::vector<dev::NpuId> members_;
  std::vector<int> rank_;  // per NPU id
  mem::Allocation words_;
  GlobalAddr root_counter_;
  std::vector<GlobalAddr> release_;
  std::vector<MemberState> member_state_;
  std::atomic<uint32_t> arrived_[2] = {0, 0};
  std::atomic<double> latest_ns_[2] = {0.0, 0.0};
};

// Made by UbTransport::open_endpoint (ub_endpoint.cpp).
StatusOr<std::unique_ptr<Endpoint>> make_ub_endpoint(UbTransport& transport,
                                                     const EndpointConfig& config);

}  // namespace moe::ic
