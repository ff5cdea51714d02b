// Streams: ordered work on one engine of one NPU.
//
// A Stream owns one queue of the driver, on one of three engines (StreamKind):
//  - compute (one per die): launch() turns a Kernel into a dev::KernelWork descriptor,
//    submits it and rings the doorbell: the same path in both execution modes (runtime.h);
//    in functional mode the descriptor carries the body, in timing mode only the cost;
//  - copy (the NPU's host-copy engine): copy_from_host / copy_to_host move bytes between
//    host memory and this NPU's HBM at global addresses;
//  - fabric (the NPU's transfer engine): copy() moves bytes between any two global
//    addresses over the fabric planes, charged by the fabric model.
// Work on one stream runs in submission order. Copies are split where a global range
// crosses a page boundary (pages may sit on different NPUs); each piece is one descriptor.
// In timing mode copies move no payload; their modelled cost is the same.
//
// Modelled clock: modelled_time() is when the stream's engine finishes everything launched
// so far (Driver::engine_time). wait(event) sets a floor (not_before) under every later
// launch. Completions are polled by synchronize(), and by launch() when the ring is full;
// the first failed completion is kept and returned by synchronize() (sticky).
//
// Kernel bodies: a std::function body is kept by the stream until its completion is
// polled; a raw fn + ctx body is not copied: ctx must stay valid until the completion is
// polled (synchronize). Bodies run on the thread that launches (the simulator executes on
// the doorbell); a body must not launch on its own stream.
//
// Thread-safety: a stream is used by one thread at a time (its queue is single-producer).
// Different streams may be driven from different threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "memory/global_addr.h"
#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/device/work.h"

namespace moe::rt {

class Event;
class Graph;
class Runtime;

struct Kernel {
  std::string_view name;  // for traces; the text must outlive the stream's use of it
  double flops = 0;
  double hbm_bytes = 0;   // bytes read + written in HBM
  dev::KernelClass kernel_class = dev::KernelClass::kVector;
  dev::Precision precision = dev::Precision::kBf16;
  // Functional body: either `body`, or `fn` with `ctx` (no allocation). At most one.
  std::function<void()> body;
  void (*fn)(void* ctx) = nullptr;
  void* ctx = nullptr;
};

enum class StreamKind : uint8_t {
  kCompute = 0,  // one die's matrix and vector cores: launch()
  kCopy = 1,     // host <-> this NPU's HBM: copy_from_host(), copy_to_host()
  kFabric = 2,   // global address -> global address over the fabric: copy()
};
const char* stream_kind_name(StreamKind kind);

class Stream {
 public:
  // A stream on `npu`'s compute die `die`. kOutOfRange naming the NPU or die; driver errors
  // (kNpuLost). The runtime outlives the stream.
  static StatusOr<std::unique_ptr<Stream>> create(Runtime& runtime, dev::NpuId npu,
                                                  uint32_t die = 0);
  // A copy or fabric stream of `npu` (kind kCopy or kFabric; kCompute is create()).
  static StatusOr<std::unique_ptr<Stream>> create(Runtime& runtime, dev::NpuId npu,
                                                  StreamKind kind);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Launches (or, while capturing, records) one kernel. kInvalidArgument for negative costs
  // or both body kinds; kFailedPrecondition on a copy or fabric stream; the stream's sticky
  // error; driver errors.
  Status launch(const Kernel& kernel);

  // Copies (or, while capturing, records copies). The host buffer belongs to the caller and
  // must stay valid until synchronize() returns (for a graph: during every replay).
  // kFailedPrecondition on a stream of another kind; kInvalidArgument naming the address
  // when part of the global range is not mapped, or (copy streams) lies on another NPU
  // than the stream's: the host-copy engine of an NPU reaches only its own HBM.
  Status copy_from_host(mem::GlobalAddr dst, const void* src, uint64_t bytes);
  Status copy_to_host(void* dst, mem::GlobalAddr src, uint64_t bytes);
  // Fabric streams: [src, src + bytes) -> [dst, dst + bytes), any NPUs. The ranges must not
  // overlap.
  Status copy(mem::GlobalAddr dst, mem::GlobalAddr src, uint64_t bytes);
  // Later launches start no earlier than the event's time. kFailedPrecondition for an
  // event not recorded, or recorded in a capture this stream is not part of.
  Status wait(const Event& event);
  // Later launches start no earlier than `t`: a time read from another engine's clock (a
  // transport endpoint's, for work that consumes what the fabric delivered). Raises the
  // floor only (never lowers it). Not recorded by a graph capture: kFailedPrecondition
  // while capturing.
  Status wait_until(ModelTime t);
  // Polls every completion of work launched so far (the simulator has already executed
  // it). Returns the first error a completion reported since the stream was created.
  Status synchronize();

  // When the engine finishes everything launched so far (modelled); 0 when the driver
  // cannot say (a lost NPU). Meaningless while capturing.
  ModelTime modelled_time() const;
  // The floor under later launches (set by wait).
  ModelTime not_before() const { return not_before_; }
  dev::NpuId npu() const { return npu_; }
  uint32_t die() const { return die_; }
  StreamKind kind() const { return kind_; }
  bool capturing() const { return capture_ != nullptr; }
  uint64_t launched() const { return submitted_; }

 private:
  friend class Event;
  friend class Graph;
  Stream(Runtime& runtime, dev::NpuId npu, uint32_t die, StreamKind kind, dev::QueueId queue);
  // Submits one descriptor now, or records it while capturing (the copy paths).
  Status enqueue(const dev::WorkDescriptor& work, std::string_view name);
  Status require_kind(StreamKind kind, const char* what) const;
  // Host copies in both directions (copy_from_host / copy_to_host).
  Status host_copy(dev::CopyDirection direction, mem::GlobalAddr device, void* host, uint64_t bytes);
  // Submits `count` descriptors and rings once, polling first if the ring lacks room.
  // `names` (count of them, or null) name the work in a trace.
  Status submit(const dev::WorkDescriptor* work, size_t count,
                const std::string_view* names = nullptr);
  // Makes room for `count` descriptors in the ring (polling, waiting if needed).
  Status reserve(size_t count);
  // Takes back at least one completion (waiting for it if none is pending).
  Status poll_some();
  Status engine_time(ModelTime* out) const;
  // Fills the cost part of a descriptor (no body).
  static Status describe(const Kernel& kernel, dev::WorkDescriptor* out);

  Runtime& runtime_;
  dev::Driver& driver_;
  dev::NpuId npu_;
  uint32_t die_;
  StreamKind kind_;
  dev::QueueId queue_;
  uint32_t depth_;
  ModelTime not_before_{};
  uint64_t submitted_ = 0;  // descriptors handed to the queue
  uint64_t polled_ = 0;     // completions taken back
  Status error_;            // first failed completion
  std::vector<std::function<void()>> bodies_;  // ring slot per in-flight std::function body
  std::vector<std::string_view> names_;        // ring slot per work index, while tracing
  std::string lane_;                           // the trace lane: "compute die N"
  Graph* capture_ = nullptr;  // the graph being captured, if any
  uint32_t capture_index_ = 0;  // this stream's index in that graph
};

}  // namespace moe::rt
