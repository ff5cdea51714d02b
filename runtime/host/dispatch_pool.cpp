// The dispatch pool: per-worker queue, lock and condition variable.
//
// One lock per worker rather than one for the pool: submitters to different NPUs never
// contend, and a worker holds its lock only to pop, never while running a task. A worker's
// thread binds itself first thing (binding is per thread, so it must run there) and reports
// through its own `started` flag; start() waits for all of them. Shutdown sets `stopping`
// under each worker's lock, so a task is either queued before it (and runs) or refused; a
// worker exits only when stopping and its queue is empty.
#include "runtime/host/dispatch_pool.h"

#include <pthread.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/host/binding.h"

namespace moe::rt::host {
namespace {
thread_local bool t_on_dispatch_thread = false;
}  // namespace

bool DispatchThreadPool::on_dispatch_thread() { return t_on_dispatch_thread; }

struct DispatchThreadPool::Worker {
  DispatchThreadPlan plan;
  std::thread thread;
  std::thread::id thread_id;

  mutable std::mutex mu;
  std::condition_variable wake;     // tasks arrived or stopping
  std::condition_variable started;  // binding attempted
  std::deque<Task> queue;
  bool stopping = false;
  bool has_started = false;
  Status binding;
  bool bound = false;
  uint64_t tasks_run = 0;
  uint64_t tasks_failed = 0;

  void run(const HostTopology* topology, bool bind) {
    char name[16];
    std::snprintf(name, sizeof(name), "moe-disp-%u", plan.index);
    pthread_setname_np(pthread_self(), name);
    t_on_dispatch_thread = true;
    Status result = bind ? bind_current_thread(*topology, plan.cpus)
                         : make_error(StatusCode::kUnsupported, "binding not requested");
    {
      std::lock_guard<std::mutex> lock(mu);
      binding = result;
      bound = result.ok() && bind;
      has_started = true;
    }
    started.notify_all();
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mu);
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, and everything queued has run
        task = std::move(queue.front());
        queue.pop_front();
      }
      bool failed = false;
      try {
        task();
      } catch (const std::exception& e) {
        failed = true;
        MOE_ERROR("dispatch worker %u: task threw: %s", plan.index, e.what());
      } catch (...) {
        failed = true;
        MOE_ERROR("dispatch worker %u: task threw a non-standard exception", plan.index);
      }
      std::lock_guard<std::mutex> lock(mu);
      ++tasks_run;
      if (failed) ++tasks_failed;
    }
  }
};

StatusOr<std::unique_ptr<DispatchThreadPool>> DispatchThreadPool::start(
    const HostTopology& topology, const PlacementPlan& plan, const DispatchPoolOptions& options) {
  if (plan.threads.empty())
    return make_error(StatusCode::kInvalidArgument, "dispatch pool: the plan has no dispatch threads");
  std::unique_ptr<DispatchThreadPool> pool(new DispatchThreadPool());
  pool->worker_of_npu_.resize(plan.npus.size());
  for (size_t i = 0; i < plan.npus.size(); ++i) pool->worker_of_npu_[i] = plan.npus[i].thread;

  for (const DispatchThreadPlan& t : plan.threads) {
    auto worker = std::make_unique<Worker>();
    worker->plan = t;
    Worker* w = worker.get();
    try {
      w->thread = std::thread([w, &topology, bind = options.bind] { w->run(&topology, bind); });
    } catch (const std::system_error& e) {
      Status s = make_error(StatusCode::kResourceExhausted,
                            "dispatch pool: cannot start worker %u of %zu: %s", t.index,
                            plan.threads.size(), e.what());
      pool->shutdown().ignore();  // the workers already started
      return s;
    }
    w->thread_id = w->thread.get_id();
    pool->workers_.push_back(std::move(worker));
  }
  // Wait for every binding attempt: `topology` is not used after this.
  for (auto& w : pool->workers_) {
    std::unique_lock<std::mutex> lock(w->mu);
    w->started.wait(lock, [&] { return w->has_started; });
  }
  uint32_t unbound = 0;
  Status first_failure;
  for (auto& w : pool->workers_) {
    std::lock_guard<std::mutex> lock(w->mu);
    if (!options.bind || w->bound) continue;
    if (unbound++ == 0) {
      first_failure = w->binding;
      first_failure.with_context(strformat("dispatch worker %u (NPUs %s)", w->plan.index,
                                           format_id_ranges(w->plan.npus).c_str()));
    }
  }
  if (unbound > 0 && options.require_binding) {
    pool->shutdown().ignore();
    return first_failure;
  }
  if (unbound > 0)
    MOE_INFO("dispatch pool: %u of %zu workers run unbound; first: %s", unbound,
             pool->workers_.size(), first_failure.to_string().c_str());
  return pool;
}

DispatchThreadPool::~DispatchThreadPool() {
  Status s = shutdown();
  if (!s.ok()) MOE_ERROR("dispatch pool destroyed from a worker: %s", s.to_string().c_str());
}

StatusOr<uint32_t> DispatchThreadPool::worker_of_npu(dev::NpuId npu) const {
  if (npu >= worker_of_npu_.size())
    return make_error(StatusCode::kOutOfRange, "dispatch pool: npu %u is not in the plan (%zu NPUs)",
                      npu, worker_of_npu_.size());
  return worker_of_npu_[npu];
}

Status DispatchThreadPool::submit(uint32_t worker, Task task) {
  if (worker >= workers_.size())
    return make_error(StatusCode::kOutOfRange, "dispatch pool: no worker %u (%zu workers)", worker,
                      workers_.size());
  if (!task)
    return make_error(StatusCode::kInvalidArgument, "dispatch pool: empty task for worker %u", worker);
  Worker& w = *workers_[worker];
  {
    std::lock_guard<std::mutex> lock(w.mu);
    if (w.stopping)
      return make_error(StatusCode::kFailedPrecondition,
                        "dispatch pool: worker %u is shutting down; task refused", worker);
    w.queue.push_back(std::move(task));
  }
  w.wake.notify_one();
  return ok_status();
}

Status DispatchThreadPool::submit_to_npu(dev::NpuId npu, Task task) {
  uint32_t worker = 0;
  MOE_TRY_ASSIGN(worker, worker_of_npu(npu));
  return submit(worker, std::move(task));
}

Status DispatchThreadPool::shutdown() {
  const std::thread::id self = std::this_thread::get_id();
  for (auto& w : workers_)  // before taking the lock: a worker waiting on it would deadlock
    if (w->thread_id == self)
      return make_error(StatusCode::kFailedPrecondition,
                        "dispatch pool: shutdown called from worker %u, which cannot join itself",
                        w->plan.index);
  std::lock_guard<std::mutex> serial(shutdown_mu_);
  for (auto& w : workers_) {
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->stopping = true;
    }
    w->wake.notify_one();
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
  return ok_status();
}

std::vector<DispatchWorkerReport> DispatchThreadPool::workers() const {
  std::vector<DispatchWorkerReport> out;
  out.reserve(workers_.size());
  for (const auto& w : workers_) {
    std::lock_guard<std::mutex> lock(w->mu);
    DispatchWorkerReport r;
    r.index = w->plan.index;
    r.npus = w->plan.npus;
    r.numa_node = w->plan.numa_node;
    r.planned_cpus = w->plan.cpus;
    r.binding = w->binding;
    r.bound = w->bound;
    r.tasks_run = w->tasks_run;
    r.tasks_failed = w->tasks_failed;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace moe::rt::host
