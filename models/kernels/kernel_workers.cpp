// Persistent kernel workers (see kernel_workers.h).
//
// Design notes:
//  - One job at a time: the caller publishes (fn, ctx, num_tasks) under mutex_ with a new
//    generation and wakes every worker. A worker that wakes while the job is open (fn_ set)
//    counts itself in (busy_workers_) and copies the job, claims tasks from next_task_ until
//    none is left, then counts itself out. The caller drains as lane 0, then closes the job
//    (fn_ = nullptr) and waits for the count to reach zero: workers that had not woken yet
//    skip the job, so the caller never waits for a thread the OS has not scheduled, and no
//    worker can still be reading the job when run() returns and the next one is published.
//  - A thread-local flag marks threads inside a job (workers and the caller while draining):
//    a nested run() goes inline instead of deadlocking on job_mutex_.
#include "models/kernels/kernel_workers.h"

#include <sched.h>

#include <algorithm>

#include "models/kernels/blas_threads.h"
#include "models/model_options.h"

namespace moe::models {
namespace {

thread_local bool tl_in_job = false;

uint32_t cpus_available() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<uint32_t>(n);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

KernelWorkers::KernelWorkers(uint32_t lanes) {
  for (uint32_t lane = 1; lane < std::max(1u, lanes); ++lane)
    threads_.emplace_back([this, lane] { worker_main(lane); });
}

KernelWorkers::~KernelWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

KernelWorkers& KernelWorkers::shared() {
  static KernelWorkers workers([] {
    const int64_t asked = options::kKernelThreads.get();
    return asked > 0 ? static_cast<uint32_t>(std::min<int64_t>(asked, 256)) : cpus_available();
  }());
  return workers;
}

void KernelWorkers::drain(uint32_t lane) {
  for (uint32_t t = next_task_.fetch_add(1); t < num_tasks_; t = next_task_.fetch_add(1))
    fn_(ctx_, t, lane);
}

void KernelWorkers::worker_main(uint32_t lane) {
  tl_in_job = true;  // a worker thread only ever runs tasks
  uint64_t seen = 0;
  for (;;) {
    TaskFn fn;
    void* ctx;
    uint32_t num_tasks;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (fn_ == nullptr) continue;  // woke after the caller closed the job: nothing to do
      ++busy_workers_;
      fn = fn_;
      ctx = ctx_;
      num_tasks = num_tasks_;
    }
    for (uint32_t t = next_task_.fetch_add(1); t < num_tasks; t = next_task_.fetch_add(1))
      fn(ctx, t, lane);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_workers_ == 0) done_.notify_one();
    }
  }
}

void KernelWorkers::run(uint32_t num_tasks, TaskFn fn, void* ctx) {
  if (num_tasks == 0) return;
  std::unique_lock<std::mutex> job;
  if (!threads_.empty() && num_tasks > 1 && !tl_in_job)
    job = std::unique_lock<std::mutex>(job_mutex_, std::try_to_lock);
  if (!job.owns_lock()) {
    for (uint32_t t = 0; t < num_tasks; ++t) fn(ctx, t, 0);
    return;
  }
  BlasSerialScope serial_blas;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fn_ = fn;
    ctx_ = ctx;
    num_tasks_ = num_tasks;
    next_task_.store(0);
    busy_workers_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  tl_in_job = true;
  drain(0);
  tl_in_job = false;
  // Every task is claimed. Close the job (a worker not yet awake will skip it: under load
  // it may not be scheduled for milliseconds) and wait only for those still running a task.
  std::unique_lock<std::mutex> lock(mutex_);
  fn_ = nullptr;
  done_.wait(lock, [&] { return busy_workers_ == 0; });
}

}  // namespace moe::models
