// The daemon's engine thread: the one thread that owns the Runtime and the ModelService over
// it (the Engine and serving::Server, which are single-threaded), fed through a bounded
// queue of jobs. Between jobs, while the service has streams, the thread runs serving steps:
// a queued job waits for at most one step, and an idle daemon sleeps on the queue.
//
// Connection handlers never touch the runtime: they post a Job here and the job posts its
// result back to the connection's thread (the server's io thread) itself. The queue is
// bounded: try_post() refuses with kBusy when it is full, so a flood of requests turns into
// errors for the clients that sent them instead of unbounded memory (back-pressure).
//
// Thread-safety: try_post(), queued() and stop() may be called from any thread. Jobs run one
// at a time, in the order posted, on the engine thread. A job must not block on the io thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "runtime/base/status.h"
#include "runtime/runtime.h"
#include "tools/lib/daemon/model_service.h"

namespace moe::daemon {

// What a job may use. Valid only during the job, on the engine thread.
struct EngineContext {
  rt::Runtime* runtime = nullptr;
  ModelService* models = nullptr;
};

class EngineExecutor {
 public:
  using Job = std::function<void(EngineContext&)>;

  // Opens the runtime (errors as Runtime::open) and starts the engine thread with a
  // ModelService of `service`'s options. kInvalidArgument for queue_capacity 0.
  static StatusOr<std::unique_ptr<EngineExecutor>> start(const rt::RuntimeOptions& options,
                                                         size_t queue_capacity,
                                                         ModelServiceOptions service = {});
  ~EngineExecutor();  // stop()
  EngineExecutor(const EngineExecutor&) = delete;
  EngineExecutor& operator=(const EngineExecutor&) = delete;

  // Queues `job`. kBusy when queue_capacity jobs are waiting (naming the capacity);
  // kFailedPrecondition after stop(). Never blocks on the engine.
  Status try_post(Job job);

  // Runs the jobs already queued, refuses new ones, lets the running streams end (a stream
  // nobody wants any more is cancelled at the next step), joins the engine thread. Blocks
  // until then. Idempotent.
  void stop();

  size_t queued() const;
  size_t queue_capacity() const { return capacity_; }

 private:
  EngineExecutor(std::unique_ptr<rt::Runtime> runtime, size_t capacity,
                 const ModelServiceOptions& service);
  void run();

  std::unique_ptr<rt::Runtime> runtime_;
  std::unique_ptr<ModelService> models_;
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;   // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace moe::daemon
