// Runtime: assembles driver, memory and transport, and tears them down in reverse order
// (members are declared driver, memory, transport, so the default member destruction order
// already does this; the destructor resets them explicitly to make the contract visible).
#include "runtime/runtime.h"

#include <utility>

#include "firmware-sim/description.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"

namespace moe::rt {

StatusOr<std::unique_ptr<Runtime>> Runtime::open(const RuntimeOptions& options) {
  if (options.supernode.empty())
    return make_error(StatusCode::kInvalidArgument, "RuntimeOptions.supernode is empty");
  if (options.stream_depth < 2)
    return make_error(StatusCode::kInvalidArgument, "RuntimeOptions.stream_depth %u: must be >= 2",
                      options.stream_depth);
  MOE_TRY_ASSIGN(dev::Topology topology, sim::load_description(options.supernode));
  sim::SimConfig config;
  config.seed = options.seed;
  config.queue_depth = options.stream_depth;
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->options_ = options;
  MOE_TRY_ASSIGN(rt->driver_, sim::create_driver(std::move(topology), config));
  const uint32_t depth_max = rt->driver_->caps().queue_depth_max;
  if (depth_max != 0 && options.stream_depth > depth_max)
    return make_error(StatusCode::kInvalidArgument,
                      "RuntimeOptions.stream_depth %u: the driver allows at most %u",
                      options.stream_depth, depth_max);
  MOE_TRY_ASSIGN(rt->memory_, mem::GlobalMemory::create(rt->driver_.get()));
  if (options.open_transport) {
    MOE_TRY_ASSIGN(rt->transport_, ic::open_transport(*rt->driver_, *rt->memory_));
  }
  return rt;
}

Runtime::~Runtime() {
  transport_.reset();
  memory_.reset();
  driver_.reset();
}

StatusOr<DeviceInfo> Runtime::device(dev::NpuId npu) const {
  const dev::Topology& t = topology();
  if (npu >= t.num_npus())
    return make_error(StatusCode::kOutOfRange, "device %u: the supernode %s has %u NPUs", npu,
                      t.name.c_str(), t.num_npus());
  const dev::NpuDesc& d = t.npus[npu];
  DeviceInfo info;
  info.npu = npu;
  info.node = d.node;
  info.index_in_node = d.index_in_node;
  info.near_cpu = d.near_cpu;
  info.dies = t.dies_per_npu;
  info.hbm_bytes = t.hbm.capacity_bytes;
  info.hbm_gbps = t.hbm.bandwidth_gbps;
  info.bf16_tflops_per_die = t.compute.bf16_tflops;
  info.fabric_gbps = t.npu_fabric_bandwidth_gbps(npu);
  return info;
}

}  // namespace moe::rt
