// Graphs: a sequence of launches over many streams, recorded once and replayed each step.
//
// capture_begin(streams) puts the streams in capture mode: launch(), wait() and
// Event::record() on them are recorded into the graph instead of executed. capture_end()
// closes the capture. replay() submits the recorded work again; its results (bodies run,
// in order) and modelled times are those of executing the same calls eagerly.
//
// How replay stays cheap: the capture builds, per stream, an array of ready descriptors,
// cut into segments only where a stream waits for or records an event. A graph without
// events has one segment per stream, so a replay is one queue_submit and one doorbell_ring
// per queue, plus one store of not_before per segment; nothing is allocated. Events
// recorded in the capture are slots of the graph: at replay a record step reads the
// stream's modelled time into its slot and a wait raises the next segment's not_before.
//
// Rules: a graph is captured once. Only events recorded in the same capture may be waited
// for inside it. Streams of a capture are captured by at most one graph at a time and must
// outlive the graph; std::function bodies are copied into the graph, raw fn + ctx are not
// (ctx must outlive the graph's replays). Thread-safety: one thread at a time, and the
// streams must not be used by another thread during capture or replay.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"
#include "runtime/device/work.h"

namespace moe::rt {

class Event;
class Stream;
struct Kernel;

class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // kFailedPrecondition when the graph was already captured, a stream is null, repeated or
  // already capturing.
  Status capture_begin(std::span<Stream* const> streams);
  // kFailedPrecondition when not capturing.
  Status capture_end();
  // Submits the recorded work. kFailedPrecondition before capture_end; stream and driver
  // errors (the first one stops the replay).
  Status replay();

  bool captured() const { return state_ == State::kCaptured; }
  size_t num_ops() const;  // kernels recorded, over all streams
  size_t num_segments() const { return segments_.size(); }

 private:
  friend class Stream;
  friend class Event;
  enum class State : uint8_t { kEmpty, kCapturing, kCaptured };
  struct Segment {
    uint32_t stream = 0;     // index in streams_
    uint32_t first = 0;      // into ops_[stream]
    uint32_t count = 0;
    uint32_t first_wait = 0; // into waits_: event slots whose times floor this segment
    uint32_t num_waits = 0;
  };
  struct Step {
    bool is_record = false;  // a record step: slot <- streams_[stream] modelled time
    uint32_t index = 0;      // segment index, or event slot for a record
    uint32_t stream = 0;
  };
  struct PerStream {
    int64_t open_segment = -1;            // segment still taking launches
    std::vector<uint32_t> pending_waits;  // slots waited for since the last segment
  };

  // Called by Stream / Event while capturing.
  Status capture_launch(uint32_t stream_index, const Kernel& kernel);
  // Records a ready descriptor (copies; launches after their body is settled).
  void capture_work(uint32_t stream_index, const dev::WorkDescriptor& work,
                    std::string_view name);
  Status capture_wait(uint32_t stream_index, const Event& event);
  void capture_record(uint32_t stream_index, Event& event);
  void close_segment(uint32_t stream_index);
  uint32_t open_segment(uint32_t stream_index);

  State state_ = State::kEmpty;
  std::vector<Stream*> streams_;
  std::vector<PerStream> per_stream_;
  std::vector<std::vector<dev::WorkDescriptor>> ops_;  // per stream
  std::vector<std::vector<std::string_view>> names_;  // per stream, parallel to ops_
  std::vector<Segment> segments_;
  std::vector<uint32_t> waits_;
  std::vector<Step> steps_;
  std::vector<ModelTime> event_times_;
  std::deque<std::function<void()>> bodies_;  // stable addresses for descriptor ctx
};

}  // namespace moe::rt
