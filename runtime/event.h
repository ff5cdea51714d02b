// Events: points in a stream's modelled time that other streams can wait for.
//
// record(stream) captures the modelled time at which everything launched on the stream so
// far is complete (Stream::modelled_time). Stream::wait(event) makes every later launch on
// the waiting stream start no earlier than that time (WorkDescriptor::not_before), which
// orders work across streams and across NPUs in modelled time, without blocking the host.
// An event recorded before some work does not wait for that work.
//
// Inside a graph capture (graph.h), record() marks a point of the capture instead; the time
// is known only when the graph is replayed, and only streams of the same capture may wait
// for it.
//
// Thread-safety: an Event is plain data; one thread at a time.
#pragma once

#include <cstdint>

#include "runtime/base/clock.h"
#include "runtime/base/status.h"

namespace moe::rt {

class Graph;
class Stream;

class Event {
 public:
  // Records the stream's current modelled time (eager), or a point of the capture the
  // stream belongs to. Errors: the stream's own sticky error.
  Status record(Stream& stream);

  // Records an explicit modelled time: a point outside any stream that streams can wait
  // for, such as the end of a collective (ic::CollectiveResult::end) or of a dispatch.
  void record_at(ModelTime time) {
    time_ = time;
    graph_ = nullptr;
    recorded_ = true;
  }

  bool recorded() const { return recorded_; }
  // The recorded modelled time. Precondition: recorded() and not captured().
  ModelTime time() const { return time_; }
  // True when recorded inside a graph capture.
  bool captured() const { return graph_ != nullptr; }

 private:
  friend class Stream;
  friend class Graph;
  bool recorded_ = false;
  ModelTime time_{};
  const Graph* graph_ = nullptr;  // the capture it was recorded in, if any
  uint32_t graph_slot_ = 0;       // its index in that graph's event table
};

}  // namespace moe::rt
