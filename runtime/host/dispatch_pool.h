// Host dispatch threads: one worker per dispatch thread of a PlacementPlan (one group of NPUs
// each), bound to its planned core at start, each running the tasks submitted to it in
// submission order.
//
// Contract:
//  - start() launches every worker and returns once each has tried to bind itself, so
//    workers() reports every binding result. Binding failures (a synthetic topology, an OS
//    that refuses) leave the worker running unbound unless require_binding is set.
//  - submit() is thread-safe and never blocks on a task: it takes the worker's lock, queues,
//    and wakes the worker. Tasks of one worker run one at a time, in submission order, on
//    that worker's thread; tasks of different workers run concurrently.
//  - A task must not throw; if it does, the exception is caught, logged and counted
//    (tasks_failed) and the worker carries on.
//  - shutdown() stops accepting tasks, lets every worker finish everything already queued,
//    and joins them. Idempotent; also run by the destructor. Calling it from a task (a
//    worker thread) is refused with kFailedPrecondition: a worker cannot join itself.
// Idle workers sleep on a condition variable; nothing spins.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/device/topology.h"
#include "runtime/host/cpu_set.h"
#include "runtime/host/host_topology.h"
#include "runtime/host/placement.h"

namespace moe::rt::host {

struct DispatchPoolOptions {
  bool bind = true;              // bind each worker to its planned cpuset
  bool require_binding = false;  // with bind: fail start() if any worker cannot be bound
};

struct DispatchWorkerReport {
  uint32_t index = 0;
  std::vector<dev::NpuId> npus;
  uint32_t numa_node = 0;   // host NUMA node (logical index)
  CpuSet planned_cpus;
  Status binding;           // OK when bound as planned; why not otherwise (or not asked)
  bool bound = false;
  uint64_t tasks_run = 0;
  uint64_t tasks_failed = 0;  // threw an exception
};

class DispatchThreadPool {
 public:
  using Task = std::function<void()>;

  // Starts one worker per plan.threads entry. `topology` is used only during start() (for
  // binding); it need not outlive the pool. Errors: kInvalidArgument (a plan with no
  // threads), kResourceExhausted (the OS would not create a thread), the first binding error
  // when require_binding is set (with the worker named).
  static StatusOr<std::unique_ptr<DispatchThreadPool>> start(
      const HostTopology& topology, const PlacementPlan& plan,
      const DispatchPoolOptions& options = {});
  ~DispatchThreadPool();
  DispatchThreadPool(const DispatchThreadPool&) = delete;
  DispatchThreadPool& operator=(const DispatchThreadPool&) = delete;

  // True on a worker thread of any pool (a task must not wait for its own pool).
  static bool on_dispatch_thread();

  uint32_t num_workers() const { return static_cast<uint32_t>(workers_.size()); }
  // The worker feeding `npu`; kOutOfRange for an NPU the plan does not know.
  StatusOr<uint32_t> worker_of_npu(dev::NpuId npu) const;
  // Queues `task` on a worker. Errors: kOutOfRange (no such worker / NPU), kInvalidArgument
  // (empty task), kFailedPrecondition (the pool is shutting down).
  Status submit(uint32_t worker, Task task);
  Status submit_to_npu(dev::NpuId npu, Task task);
  // Drains every queue and joins the workers. Safe to call from several threads.
  Status shutdown();
  // A snapshot per worker; task counts are exact once shutdown() has returned.
  std::vector<DispatchWorkerReport> workers() const;

 private:
  struct Worker;
  DispatchThreadPool() = default;

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<uint32_t> worker_of_npu_;  // [npu]
  std::mutex shutdown_mu_;               // serializes shutdown() calls
};

}  // namespace moe::rt::host
