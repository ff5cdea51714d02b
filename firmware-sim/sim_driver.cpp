// The simulated supernode behind dev::Driver.
//
// Design: the driver is a thin coordinator. HBM lives in one NpuHbm per NPU (hbm.h), made
// on first use so an untouched NPU costs a pointer.
#include "firmware-sim/sim_driver.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "firmware-sim/hbm.h"
#include "firmware-sim/sim_options.h"
#include "runtime/base/check.h"

namespace moe::sim {
namespace {

class SimDriver final : public dev::Driver {
 public:
  SimDriver(dev::Topology topology, const SimConfig& config)
      : topo_(std::move(topology)), config_(config) {
    name_ = "firmware-sim:" + topo_.name;
    hbm_window_bytes_ = static_cast<uint64_t>(std::max<int64_t>(0, options::kHbmVaWindowBytes.get()));
    hbm_.resize(topo_.num_npus());
    hbm_once_ = std::make_unique<std::once_flag[]>(topo_.num_npus());
  }

  std::string_view name() const override { return name_; }
  dev::DriverCaps caps() const override {
    dev::DriverCaps c;
    c.simulated = true;
    c.functional = true;
    c.queue_depth_max = static_cast<uint32_t>(options::kQueueDepthMax.get());
    return c;
  }
  const dev::Topology& topology() const override { return topo_; }

  // ---- HBM ----
  Status hbm_reserve(dev::NpuId npu, uint64_t bytes, uint64_t alignment,
                     dev::HbmRange* out) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_reserve", &hbm));
    return hbm->reserve(bytes, alignment, out);
  }
  Status hbm_release(const dev::HbmRange& range) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(range.npu, "hbm_release", &hbm, /*allow_lost=*/true));
    return hbm->release(range.offset, range.bytes);
  }
  Status hbm_commit(dev::NpuId npu, uint64_t offset, uint64_t bytes) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_commit", &hbm));
    return hbm->commit(offset, bytes);
  }
  Status hbm_decommit(dev::NpuId npu, uint64_t offset, uint64_t bytes) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_decommit", &hbm, /*allow_lost=*/true));
    return hbm->decommit(offset, bytes);
  }
  Status hbm_map_host(dev::NpuId npu, uint64_t offset, uint64_t bytes, void** host_ptr) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_map_host", &hbm));
    return hbm->map_host(offset, bytes, host_ptr);
  }

  // ---- engine queues (next commit) ----
  Status queue_create(dev::NpuId, uint32_t, dev::EngineKind, uint32_t, dev::QueueId*) override {
    return make_error(StatusCode::kUnsupported, "queue_create: engines not built yet");
  }
  Status queue_destroy(dev::QueueId) override {
    return make_error(StatusCode::kUnsupported, "queue_destroy: engines not built yet");
  }
  Status queue_submit(dev::QueueId, const dev::WorkDescriptor*, size_t) override {
    return make_error(StatusCode::kUnsupported, "queue_submit: engines not built yet");
  }
  Status doorbell_ring(dev::QueueId) override {
    return make_error(StatusCode::kUnsupported, "doorbell_ring: engines not built yet");
  }
  Status completions_poll(dev::QueueId, dev::Completion*, size_t, size_t*) override {
    return make_error(StatusCode::kUnsupported, "completions_poll: engines not built yet");
  }
  Status completions_wait(dev::QueueId, int64_t) override {
    return make_error(StatusCode::kUnsupported, "completions_wait: engines not built yet");
  }
  Status engine_time(dev::QueueId, ModelTime*) override {
    return make_error(StatusCode::kUnsupported, "engine_time: engines not built yet");
  }

  // ---- links, planes, NPUs ----
  Status link_state(dev::LinkId link, dev::LinkState* out) override {
    if (link >= topo_.links.size()) return bad_link(link);
    *out = dev::LinkState{};
    return ok_status();
  }
  Status plane_state(dev::PlaneId plane, dev::PlaneState* out) override {
    if (plane >= topo_.num_planes)
      return make_error(StatusCode::kInvalidArgument, "plane %u out of range (machine has %u)",
                        plane, topo_.num_planes);
    *out = dev::PlaneState{};
    return ok_status();
  }
  Status link_counters(dev::LinkId link, dev::LinkCounters* out) override {
    if (link >= topo_.links.size()) return bad_link(link);
    *out = dev::LinkCounters{};
    return ok_status();
  }
  Status npu_state(dev::NpuId npu, dev::NpuState* out) override {
    if (npu >= topo_.num_npus()) return bad_npu(npu, "npu_state");
    dev::NpuState s;
    if (NpuHbm* hbm = hbm_if_made(npu)) {
      s.hbm_committed_bytes = hbm->committed_bytes();
      s.hbm_resident_bytes = hbm->resident_bytes();
    }
    *out = s;
    return ok_status();
  }

  // ---- faults (next commit) ----
  Status fault_inject(const dev::FaultSpec&, dev::FaultId*) override {
    return make_error(StatusCode::kUnsupported, "fault_inject: faults not built yet");
  }
  Status fault_clear(dev::FaultId) override {
    return make_error(StatusCode::kUnsupported, "fault_clear: faults not built yet");
  }
  Status fault_counters(dev::FaultCounters* out) override {
    *out = dev::FaultCounters{};
    return ok_status();
  }

 private:
  Status bad_npu(dev::NpuId npu, const char* what) const {
    return make_error(StatusCode::kInvalidArgument, "%s: npu %u out of range (machine has %u NPUs)",
                      what, npu, topo_.num_npus());
  }
  Status bad_link(dev::LinkId link) const {
    return make_error(StatusCode::kInvalidArgument, "link %u out of range (machine has %zu links)",
                      link, topo_.links.size());
  }
  // The NPU's HBM, made on first use.
  Status hbm_of(dev::NpuId npu, const char* what, NpuHbm** out, bool allow_lost = false) {
    if (npu >= topo_.num_npus()) return bad_npu(npu, what);
    (void)allow_lost;
    std::call_once(hbm_once_[npu], [&] {
      hbm_[npu] = std::make_unique<NpuHbm>(npu, topo_.hbm.capacity_bytes, hbm_window_bytes_);
    });
    *out = hbm_[npu].get();
    return ok_status();
  }
  NpuHbm* hbm_if_made(dev::NpuId npu) {
    NpuHbm* hbm = nullptr;
    hbm_of(npu, "npu_state", &hbm).ignore();
    return hbm;
  }

  dev::Topology topo_;
  SimConfig config_;
  std::string name_;
  uint64_t hbm_window_bytes_ = 0;
  std::vector<std::unique_ptr<NpuHbm>> hbm_;
  std::unique_ptr<std::once_flag[]> hbm_once_;
};

}  // namespace

StatusOr<std::unique_ptr<dev::Driver>> create_driver(dev::Topology topology,
                                                     const SimConfig& config) {
  if (topology.num_npus() == 0)
    return make_error(StatusCode::kInvalidArgument, "create_driver: topology '%s' has no NPUs",
                      topology.name.c_str());
  if (topology.hbm.capacity_bytes < kHbmPageBytes)
    return make_error(StatusCode::kInvalidArgument,
                      "create_driver: topology '%s' HBM capacity %llu bytes is below one page",
                      topology.name.c_str(),
                      static_cast<unsigned long long>(topology.hbm.capacity_bytes));
  return std::unique_ptr<dev::Driver>(new SimDriver(std::move(topology), config));
}

}  // namespace moe::sim
