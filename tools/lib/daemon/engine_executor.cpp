// The engine thread: a mutex-guarded deque with a capacity and one worker.
//
// Design: the runtime is opened on the caller's thread (so open errors come back from
// start()) and handed to the worker at thread start, which is a synchronisation point; from
// then on only the worker touches it. Jobs run outside the lock. stop() lets the queue run
// dry before joining, so a shutdown that drains does not lose accepted work.
#include "tools/lib/daemon/engine_executor.h"

#include "runtime/base/check.h"

namespace moe::daemon {

StatusOr<std::unique_ptr<EngineExecutor>> EngineExecutor::start(const rt::RuntimeOptions& options,
                                                                 size_t queue_capacity) {
  if (queue_capacity == 0) {
    return make_error(StatusCode::kInvalidArgument, "engine executor: queue capacity 0");
  }
  MOE_TRY_ASSIGN(std::unique_ptr<rt::Runtime> runtime, rt::Runtime::open(options));
  return std::unique_ptr<EngineExecutor>(new EngineExecutor(std::move(runtime), queue_capacity));
}

EngineExecutor::EngineExecutor(std::unique_ptr<rt::Runtime> runtime, size_t capacity)
    : runtime_(std::move(runtime)), capacity_(capacity) {
  thread_ = std::thread([this] { run(); });
}

EngineExecutor::~EngineExecutor() { stop(); }

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
  EngineContext context{runtime_.get()};
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job(context);
  }
}

}  // namespace moe::daemon
