// Graph: capture builds per-stream descriptor arrays and a plan of steps; replay walks the
// plan. Invariants: segments_ of one stream cover consecutive, disjoint ranges of that
// stream's ops_ in plan order; a segment holds at most the stream's ring depth; every wait
// slot refers to a record step earlier in steps_ (a slot exists only once recorded).
#include "runtime/graph.h"

#include "runtime/base/check.h"
#include "runtime/event.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"
#include "runtime/trace.h"

namespace moe::rt {
namespace {

void run_function(void* ctx) { (*static_cast<std::function<void()>*>(ctx))(); }

}  // namespace

Graph::~Graph() {
  for (Stream* s : streams_)
    if (s != nullptr && s->capture_ == this) s->capture_ = nullptr;
}

size_t Graph::num_ops() const {
  size_t n = 0;
  for (const auto& v : ops_) n += v.size();
  return n;
}

Status Graph::capture_begin(std::span<Stream* const> streams) {
  if (state_ != State::kEmpty)
    return make_error(StatusCode::kFailedPrecondition, "graph: capture_begin on a graph already %s",
                      state_ == State::kCapturing ? "capturing" : "captured");
  for (size_t i = 0; i < streams.size(); ++i) {
    if (streams[i] == nullptr)
      return make_error(StatusCode::kFailedPrecondition, "graph: stream %zu is null", i);
    if (streams[i]->capture_ != nullptr)
      return make_error(StatusCode::kFailedPrecondition,
                        "graph: the stream on NPU %u is already capturing", streams[i]->npu());
    for (size_t j = 0; j < i; ++j)
      if (streams[j] == streams[i])
        return make_error(StatusCode::kFailedPrecondition,
                          "graph: the stream on NPU %u is given twice (%zu and %zu)",
                          streams[i]->npu(), j, i);
  }
  streams_.assign(streams.begin(), streams.end());
  per_stream_.assign(streams.size(), PerStream{});
  ops_.assign(streams.size(), {});
  names_.assign(streams.size(), {});
  for (size_t i = 0; i < streams_.size(); ++i) {
    streams_[i]->capture_ = this;
    streams_[i]->capture_index_ = static_cast<uint32_t>(i);
  }
  state_ = State::kCapturing;
  return Status();
}

Status Graph::capture_end() {
  if (state_ != State::kCapturing)
    return make_error(StatusCode::kFailedPrecondition, "graph: capture_end without capture_begin");
  for (uint32_t i = 0; i < streams_.size(); ++i) {
    // Waits with no launch after them still raise the stream's floor, as eagerly.
    if (!per_stream_[i].pending_waits.empty()) open_segment(i);
    close_segment(i);
    streams_[i]->capture_ = nullptr;
  }
  state_ = State::kCaptured;
  return Status();
}

uint32_t Graph::open_segment(uint32_t s) {
  PerStream& ps = per_stream_[s];
  if (ps.open_segment >= 0) return static_cast<uint32_t>(ps.open_segment);
  Segment seg;
  seg.stream = s;
  seg.first = static_cast<uint32_t>(ops_[s].size());
  seg.first_wait = static_cast<uint32_t>(waits_.size());
  seg.num_waits = static_cast<uint32_t>(ps.pending_waits.size());
  waits_.insert(waits_.end(), ps.pending_waits.begin(), ps.pending_waits.end());
  ps.pending_waits.clear();
  const uint32_t index = static_cast<uint32_t>(segments_.size());
  segments_.push_back(seg);
  steps_.push_back(Step{false, index, s});
  ps.open_segment = index;
  return index;
}

void Graph::close_segment(uint32_t s) { per_stream_[s].open_segment = -1; }

Status Graph::capture_launch(uint32_t s, const Kernel& kernel) {
  Stream& stream = *streams_[s];
  dev::WorkDescriptor work;
  MOE_TRY(Stream::describe(kernel, &work));
  if (stream.runtime_.functional()) {
    if (kernel.fn != nullptr) {
      work.kernel.body = kernel.fn;
      work.kernel.ctx = kernel.ctx;
    } else if (kernel.body) {
      bodies_.push_back(kernel.body);
      work.kernel.body = &run_function;
      work.kernel.ctx = &bodies_.back();
    }
  }
  capture_work(s, work, kernel.name);
  return Status();
}

void Graph::capture_work(uint32_t s, const dev::WorkDescriptor& work, std::string_view name) {
  Stream& stream = *streams_[s];
  uint32_t seg = open_segment(s);
  if (segments_[seg].count == stream.depth_) {  // a full ring: continue in a new segment
    close_segment(s);
    seg = open_segment(s);
  }
  ops_[s].push_back(work);
  names_[s].push_back(name);
  ++segments_[seg].count;
}

Status Graph::capture_wait(uint32_t s, const Event& event) {
  if (event.graph_ != this)
    return make_error(StatusCode::kFailedPrecondition,
                      "graph: the stream on NPU %u waits for an event recorded outside this "
                      "capture (wait for it before replay instead)",
                      streams_[s]->npu());
  close_segment(s);
  per_stream_[s].pending_waits.push_back(event.graph_slot_);
  return Status();
}

void Graph::capture_record(uint32_t s, Event& event) {
  close_segment(s);
  const uint32_t slot = static_cast<uint32_t>(event_times_.size());
  event_times_.push_back(ModelTime{});
  steps_.push_back(Step{true, slot, s});
  event.recorded_ = true;
  event.graph_ = this;
  event.graph_slot_ = slot;
  event.time_ = ModelTime{};
}

Status Graph::replay() {
  if (state_ != State::kCaptured)
    return make_error(StatusCode::kFailedPrecondition, "graph: replay before capture_end");
  Trace* trace = streams_.empty() ? nullptr : streams_[0]->runtime_.trace();
  const int64_t wall0 = trace != nullptr ? wall_now_ns() : 0;
  for (const Step& step : steps_) {
    Stream& stream = *streams_[step.stream];
    if (step.is_record) {
      MOE_TRY(stream.engine_time(&event_times_[step.index]));
      continue;
    }
    const Segment& seg = segments_[step.index];
    ModelTime floor = stream.not_before_;
    for (uint32_t w = 0; w < seg.num_waits; ++w)
      floor = max(floor, event_times_[waits_[seg.first_wait + w]]);
    stream.not_before_ = floor;
    if (seg.count == 0) continue;
    if (!stream.error_.ok()) return stream.error_;
    // The queue runs in order: a floor on the segment's first descriptor holds for the rest.
    dev::WorkDescriptor* first = &ops_[step.stream][seg.first];
    first->not_before = floor;
    MOE_TRY(stream.submit(first, seg.count, &names_[step.stream][seg.first]));
  }
  if (trace != nullptr) trace->add_host_span("graph.replay", wall0, wall_now_ns());
  return Status();
}

}  // namespace moe::rt
