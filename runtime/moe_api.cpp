// The helpers of the public API (moe.h): checked entry points over the layers' own objects.
#include "runtime/moe.h"

#include "runtime/base/check.h"

namespace moe {

std::vector<dev::NpuId> all_devices(const Runtime& runtime) {
  std::vector<dev::NpuId> npus(runtime.num_devices());
  for (uint32_t i = 0; i < npus.size(); ++i) npus[i] = i;
  return npus;
}

StatusOr<std::unique_ptr<Communicator>> open_communicator(Runtime& runtime,
                                                          std::span<const dev::NpuId> npus) {
  if (!runtime.has_transport())
    return make_error(StatusCode::kFailedPrecondition,
                      "open_communicator: the runtime was opened without a transport "
                      "(RuntimeOptions::open_transport is false)");
  std::vector<dev::NpuId> all;
  if (npus.empty()) {
    all = all_devices(runtime);
    npus = all;
  }
  for (dev::NpuId npu : npus)
    if (npu >= runtime.num_devices())
      return make_error(StatusCode::kOutOfRange, "open_communicator: NPU %u of %u", npu,
                        runtime.num_devices());
  ic::CommConfig config;
  config.mode = runtime.functional() ? ic::Mode::kFunctional : ic::Mode::kTiming;
  return Communicator::create(runtime.transport(), runtime.memory(), npus, config);
}

}  // namespace moe
