// A few persistent host threads that run one data-parallel job at a time for the functional
// kernels: a job is num_tasks independent tasks, claimed dynamically (an atomic counter), so
// a lane slowed by other load on a shared host simply takes fewer tasks.
//
// Contract of run(num_tasks, fn):
//  - Calls fn(task, lane) once for every task in [0, num_tasks), lane in [0, lanes()); the
//    calling thread works as lane 0. Each lane runs one task at a time, so per-lane scratch
//    (indexed by lane) needs no lock. Blocks until every task has returned.
//  - The job runs under a BlasSerialScope (blas_threads.h): each BLAS product inside a task
//    runs on its own lane's thread.
//  - It runs inline on the calling thread (every task on lane 0, in order, BLAS threading
//    untouched) when there is one lane, one task, when called from inside a task (nesting),
//    or when another thread's job is using the workers (callers never wait for each other).
//  - fn must not throw (a task that throws terminates the process, as in a noexcept body).
// Idle workers sleep on a condition variable; nothing spins.
// Thread-safety: run() may be called from any thread; see above for concurrent callers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::models {

class KernelWorkers {
 public:
  using TaskFn = void (*)(void* ctx, uint32_t task, uint32_t lane);

  // lanes >= 1: starts lanes - 1 threads.
  explicit KernelWorkers(uint32_t lanes);
  ~KernelWorkers();
  KernelWorkers(const KernelWorkers&) = delete;
  KernelWorkers& operator=(const KernelWorkers&) = delete;

  // The process's shared workers, started on first use with options::kKernelThreads lanes
  // (0: one per CPU in this process's affinity mask).
  static KernelWorkers& shared();

  uint32_t lanes() const { return static_cast<uint32_t>(threads_.size()) + 1; }

  void run(uint32_t num_tasks, TaskFn fn, void* ctx);
  // fn: callable as fn(uint32_t task, uint32_t lane).
  template <typename F>
  void run(uint32_t num_tasks, F& fn) {
    run(num_tasks, [](void* c, uint32_t t, uint32_t l) { (*static_cast<F*>(c))(t, l); }, &fn);
  }

 private:
  void worker_main(uint32_t lane);
  void drain(uint32_t lane);

  std::vector<std::thread> threads_;
  std::mutex job_mutex_;  // held by the thread whose job is running
  std::mutex mutex_;      // guards everything below except next_task_
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  uint32_t busy_workers_ = 0;  // workers not yet finished with the current job
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  uint32_t num_tasks_ = 0;
  std::atomic<uint32_t> next_task_{0};
};

}  // namespace moe::models
