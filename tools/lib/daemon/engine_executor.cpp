// The engine thread: a mutex-guarded deque with a capacity and one worker.
//
// Design: the runtime is opened on the caller's thread (so open errors come back from
// start()) and handed to the worker at thread start, which is a synchronisation point; from
// then on only the worker touches it. Jobs run outside the lock. stop() lets the queue run
// dry before joining, so a shutdown that drains does not lose accepted work. The service's
// busy() is read only on the engine thread, outside the lock: a thread with streams polls the
// queue between steps instead of sleeping on it.
#include "tools/lib/daemon/engine_executor.h"

#include "runtime/base/check.h"
#include "runtime/base/log.h"

namespace moe::daemon {

StatusOr<std::unique_ptr<EngineExecutor>> EngineExecutor::start(const rt::RuntimeOptions& options,
                                                                 size_t queue_capacity,
                                                                 ModelServiceOptions service) {
  if (queue_capacity == 0) {
    return make_error(StatusCode::kInvalidArgument, "engine executor: queue capacity 0");
  }
  MOE_TRY_ASSIGN(std::unique_ptr<rt::Runtime> runtime, rt::Runtime::open(options));
  return std::unique_ptr<EngineExecutor>(
      new EngineExecutor(std::move(runtime), queue_capacity, service));
}

EngineExecutor::EngineExecutor(std::unique_ptr<rt::Runtime> runtime, size_t capacity,
                               const ModelServiceOptions& service)
    : runtime_(std::move(runtime)),
      models_(std::make_unique<ModelService>(*runtime_, service)),
      capacity_(capacity) {
  thread_ = std::thread([this] { run(); });
}

EngineExecutor::~EngineExecutor() {
  stop();
  models_.reset();  // before the runtime it runs on
}

Status EngineExecutor::try_post(Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      return make_error(StatusCode::kFailedPrecondition, "engine executor: stopping");
    }
    if (jobs_.size() >= capacity_) {
      return make_error(StatusCode::kBusy, "engine queue full (%zu requests waiting)", capacity_);
    }
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
  return ok_status();
}

void EngineExecutor::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

size_t EngineExecutor::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return jobs_.size();
}

void EngineExecutor::run() {
  EngineContext context{runtime_.get(), models_.get()};
  while (true) {
    const bool busy = models_->busy();
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!busy) wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (!jobs_.empty()) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      } else if (!busy) {
        return;  // stopping, drained, no streams
      }
    }
    if (job) {
      job(context);
      continue;
    }
    Status stepped = models_->step();
    if (!stepped.ok()) {
      MOE_WARN("moed: engine step failed: %s", stepped.to_string().c_str());
    }
  }
}

}  // namespace moe::daemon
