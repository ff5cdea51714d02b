// Stream: one compute queue, a floor in modelled time, and a ring of owned bodies.
//
// Invariant: submitted_ - polled_ <= depth_ (the ring never overflows: reserve() polls, and
// on a driver that executes later, waits, before a submit that would not fit). The body of
// the descriptor with work index i, when the stream owns it, lives in bodies_[i % depth_]
// and its tag is slot + 1, so that polling its completion frees it; tag 0 owns nothing.
#include "runtime/stream.h"

#include "runtime/base/check.h"
#include "runtime/event.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/trace.h"

namespace moe::rt {
namespace {

constexpr int64_t kCompletionWaitNs = int64_t{10} * 1000 * 1000 * 1000;

void run_function(void* ctx) { (*static_cast<std::function<void()>*>(ctx))(); }

}  // namespace

const char* stream_kind_name(StreamKind kind) {
  switch (kind) {
    case StreamKind::kCompute: return "compute";
    case StreamKind::kCopy: return "copy";
    case StreamKind::kFabric: return "fabric";
  }
  return "?";
}

StatusOr<std::unique_ptr<Stream>> Stream::create(Runtime& runtime, dev::NpuId npu,
                                                 StreamKind kind) {
  if (kind == StreamKind::kCompute) return create(runtime, npu, 0u);
  const dev::Topology& t = runtime.topology();
  if (npu >= t.num_npus())
    return make_error(StatusCode::kOutOfRange, "%s stream on NPU %u: the supernode has %u NPUs",
                      stream_kind_name(kind), npu, t.num_npus());
  const dev::EngineKind engine =
      kind == StreamKind::kCopy ? dev::EngineKind::kHostCopy : dev::EngineKind::kFabric;
  dev::QueueId queue;
  MOE_TRY(runtime.driver().queue_create(npu, 0, engine, runtime.options().stream_depth, &queue));
  return std::unique_ptr<Stream>(new Stream(runtime, npu, 0, kind, queue));
}

StatusOr<std::unique_ptr<Stream>> Stream::create(Runtime& runtime, dev::NpuId npu, uint32_t die) {
  const dev::Topology& t = runtime.topology();
  if (npu >= t.num_npus())
    return make_error(StatusCode::kOutOfRange, "stream on NPU %u: the supernode has %u NPUs", npu,
                      t.num_npus());
  if (die >= t.dies_per_npu)
    return make_error(StatusCode::kOutOfRange, "stream on NPU %u die %u: an NPU has %u dies", npu,
                      die, t.dies_per_npu);
  dev::QueueId queue;
  MOE_TRY(runtime.driver().queue_create(npu, die, dev::EngineKind::kCompute,
                                        runtime.options().stream_depth, &queue));
  return std::unique_ptr<Stream>(new Stream(runtime, npu, die, StreamKind::kCompute, queue));
}

Stream::Stream(Runtime& runtime, dev::NpuId npu, uint32_t die, StreamKind kind,
               dev::QueueId queue)
    : runtime_(runtime), driver_(runtime.driver()), npu_(npu), die_(die), kind_(kind),
      queue_(queue), depth_(runtime.options().stream_depth),
      lane_(kind == StreamKind::kCompute ? "compute die " + std::to_string(die)
                                         : std::string(stream_kind_name(kind)) + " engine") {}

Stream::~Stream() {
  (void)driver_.queue_destroy(queue_);
}

Status Stream::describe(const Kernel& kernel, dev::WorkDescriptor* out) {
  if (!(kernel.flops >= 0) || !(kernel.hbm_bytes >= 0))
    return make_error(StatusCode::kInvalidArgument,
                      "kernel '%.*s': flops %g and hbm_bytes %g must be >= 0",
                      int(kernel.name.size()), kernel.name.data(), kernel.flops, kernel.hbm_bytes);
  if (kernel.body && kernel.fn)
    return make_error(StatusCode::kInvalidArgument,
                      "kernel '%.*s': give either body or fn, not both", int(kernel.name.size()),
                      kernel.name.data());
  out->kind = dev::WorkKind::kKernel;
  out->kernel.flops = kernel.flops;
  out->kernel.hbm_bytes = kernel.hbm_bytes;
  out->kernel.kernel_class = kernel.kernel_class;
  out->kernel.precision = kernel.precision;
  return Status();
}

Status Stream::require_kind(StreamKind kind, const char* what) const {
  if (kind_ == kind) return Status();
  return make_error(StatusCode::kFailedPrecondition,
                    "%s on the %s stream of NPU %u: needs a %s stream", what,
                    stream_kind_name(kind_), npu_, stream_kind_name(kind));
}

Status Stream::launch(const Kernel& kernel) {
  MOE_TRY(require_kind(StreamKind::kCompute, "launch"));
  if (capture_ != nullptr) return capture_->capture_launch(capture_index_, kernel);
  if (!error_.ok()) return error_;
  dev::WorkDescriptor work;
  MOE_TRY(describe(kernel, &work));
  work.not_before = not_before_;
  MOE_TRY(reserve(1));
  Trace* trace = runtime_.trace();
  const int64_t wall0 = trace != nullptr ? wall_now_ns() : 0;
  if (runtime_.functional()) {
    if (kernel.fn != nullptr) {
      work.kernel.body = kernel.fn;
      work.kernel.ctx = kernel.ctx;
    } else if (kernel.body) {
      if (bodies_.empty()) bodies_.resize(depth_);
      const uint32_t slot = static_cast<uint32_t>(submitted_ % depth_);
      bodies_[slot] = kernel.body;
      work.kernel.body = &run_function;
      work.kernel.ctx = &bodies_[slot];
      work.tag = uint64_t{slot} + 1;
    }
  }
  MOE_TRY(submit(&work, 1, &kernel.name));
  if (trace != nullptr) trace->add_host_span(kernel.name.empty() ? "launch" : kernel.name, wall0, wall_now_ns());
  return Status();
}

Status Stream::wait(const Event& event) {
  if (!event.recorded())
    return make_error(StatusCode::kFailedPrecondition, "stream on NPU %u: wait on an event never recorded", npu_);
  if (capture_ != nullptr) return capture_->capture_wait(capture_index_, event);
  if (event.captured())
    return make_error(StatusCode::kFailedPrecondition,
                      "stream on NPU %u: wait on an event recorded inside a graph capture", npu_);
  not_before_ = max(not_before_, event.time());
  return Status();
}

Status Stream::wait_until(ModelTime t) {
  if (capture_ != nullptr)
    return make_error(StatusCode::kFailedPrecondition,
                      "stream on NPU %u: wait_until inside a graph capture (use an event)", npu_);
  not_before_ = max(not_before_, t);
  return Status();
}

Status Stream::reserve(size_t count) {
  if (count > depth_)
    return make_error(StatusCode::kResourceExhausted,
                      "stream on NPU %u: %zu descriptors at once, the ring holds %u", npu_, count,
                      depth_);
  while (submitted_ - polled_ + count > depth_) {
    MOE_TRY(poll_some());
  }
  return Status();
}

Status Stream::submit(const dev::WorkDescriptor* work, size_t count,
                      const std::string_view* names) {
  MOE_TRY(reserve(count));
  if (runtime_.trace() != nullptr && names != nullptr) {
    if (names_.empty()) names_.resize(depth_);
    for (size_t i = 0; i < count; ++i) names_[(submitted_ + i) % depth_] = names[i];
  }
  MOE_TRY(driver_.queue_submit(queue_, work, count));
  submitted_ += count;
  return driver_.doorbell_ring(queue_);
}

Status Stream::poll_some() {
  dev::Completion done[64];
  size_t n = 0;
  MOE_TRY(driver_.completions_poll(queue_, done, 64, &n));
  if (n == 0) {
    MOE_TRY(driver_.completions_wait(queue_, kCompletionWaitNs));
    MOE_TRY(driver_.completions_poll(queue_, done, 64, &n));
  }
  Trace* trace = runtime_.trace();
  for (size_t i = 0; i < n; ++i) {
    if (trace != nullptr) {
      std::string_view name = names_.empty() ? std::string_view() : names_[done[i].work_index % depth_];
      trace->add_device_span(npu_, lane_, name.empty() ? stream_kind_name(kind_) : name, done[i].start, done[i].end);
    }
    if (done[i].tag != 0) bodies_[done[i].tag - 1] = nullptr;
    if (done[i].status != StatusCode::kOk && error_.ok())
      error_ = make_error(done[i].status, "stream on NPU %u die %u: work %llu failed", npu_, die_,
                          static_cast<unsigned long long>(done[i].work_index));
  }
  polled_ += n;
  return Status();
}

Status Stream::synchronize() {
  while (polled_ < submitted_) {
    MOE_TRY(poll_some());
  }
  return error_;
}

Status Stream::engine_time(ModelTime* out) const {
  return driver_.engine_time(queue_, out);
}

ModelTime Stream::modelled_time() const {
  ModelTime t{};
  if (!engine_time(&t).ok()) return ModelTime{};
  return t;
}

}  // namespace moe::rt
