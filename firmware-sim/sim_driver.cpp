// The simulated supernode behind dev::Driver.
//
// Design: the driver is a thin coordinator over four parts, each in its own file:
//  - NpuHbm (hbm.h): one per NPU, made on first use, its own lock;
//  - FabricModel (fabric_model.h): routes, ports and packet fates of the UB fabric;
//  - ComputeModel (compute_model.h): kernel and host-copy costs;
//  - FaultTable (faults.h): injected faults and their deterministic draws.
// Engine clocks, the fabric and the faults form the *model*, guarded by one lock. A doorbell
// takes the lock once, places every pending descriptor of the queue on the modelled
// timeline (deciding outcomes and which functional work to do), releases the lock, then
// performs the functional work (payload copies, atomics, kernel bodies) in submission order
// on the calling thread, and posts the completions. Nothing waits for another thread.
// Engines: compute per (NPU, die) and host copy per NPU are serial (a clock each); the
// fabric engine of an NPU issues one descriptor per SIM_FABRIC_ISSUE_NS and keeps any
// number in flight, so its time is the latest end of what it issued.
#include "firmware-sim/sim_driver.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "firmware-sim/compute_model.h"
#include "firmware-sim/fabric_model.h"
#include "firmware-sim/faults.h"
#include "firmware-sim/hbm.h"
#include "firmware-sim/sim_options.h"
#include "firmware-sim/sim_queue.h"
#include "firmware-sim/sim_stats.h"
#include "runtime/base/check.h"

namespace moe::sim {
namespace {

using dev::WorkKind;

const char* engine_name(dev::EngineKind e) {
  switch (e) {
    case dev::EngineKind::kCompute: return "compute";
    case dev::EngineKind::kFabric: return "fabric";
    case dev::EngineKind::kHostCopy: return "host-copy";
  }
  return "unknown";
}

bool finite_time(ModelTime t) { return std::isfinite(t.ns) && t.ns >= 0; }

class SimDriver final : public dev::Driver {
 public:
  SimDriver(dev::Topology topology, const SimConfig& config)
      : topo_(std::move(topology)),
        config_(config),
        compute_(topo_),
        faults_(topo_, config.seed) {
    name_ = "firmware-sim:" + topo_.name;
    hbm_window_bytes_ =
        static_cast<uint64_t>(std::max<int64_t>(0, options::kHbmVaWindowBytes.get()));
    queue_depth_max_ = static_cast<uint32_t>(
        std::clamp<int64_t>(options::kQueueDepthMax.get(), 1, 1 << 24));
    fabric_issue_ns_ = std::max(0.0, options::kFabricIssueNs.get());
    local_atomic_ns_ = std::max(0.0, options::kLocalAtomicNs.get());
    max_segments_ = static_cast<uint32_t>(
        std::clamp<int64_t>(options::kMaxTransferSegments.get(), 0, 1 << 24));
    segment_header_bytes_ = static_cast<uint32_t>(
        std::clamp<int64_t>(options::kSegmentHeaderBytes.get(), 0, 1 << 16));
    planes_mask_ = topo_.num_planes >= 32 ? ~0u : ((1u << topo_.num_planes) - 1);
    const uint32_t n = topo_.num_npus();
    hbm_.resize(n);
    hbm_once_ = std::make_unique<std::once_flag[]>(n);
    compute_clock_.assign(static_cast<size_t>(n) * std::max<uint32_t>(1, topo_.dies_per_npu), 0);
    host_copy_clock_.assign(n, 0);
    fabric_issue_clock_.assign(n, 0);
    fabric_done_.assign(n, 0);
  }

  // Builds the fabric model (routing tables) over the driver's own topology.
  Status init() {
    MOE_TRY_ASSIGN(fabric_, FabricModel::create(topo_));
    fabric_->set_atomic_payload_bytes(std::max(0.0, options::kAtomicPayloadBytes.get()));
    return ok_status();
  }

  std::string_view name() const override { return name_; }
  dev::DriverCaps caps() const override {
    dev::DriverCaps c;
    c.simulated = true;
    c.functional = true;
    c.queue_depth_max = queue_depth_max_;
    c.max_transfer_segments = max_segments_;
    c.segment_header_bytes = segment_header_bytes_;
    return c;
  }
  const dev::Topology& topology() const override { return topo_; }

  // ---- HBM ----
  Status hbm_reserve(dev::NpuId npu, uint64_t bytes, uint64_t alignment,
                     dev::HbmRange* out) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_reserve", &hbm, /*allow_lost=*/false));
    return hbm->reserve(bytes, alignment, out);
  }
  Status hbm_release(const dev::HbmRange& range) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(range.npu, "hbm_release", &hbm, /*allow_lost=*/true));
    return hbm->release(range.offset, range.bytes);
  }
  Status hbm_commit(dev::NpuId npu, uint64_t offset, uint64_t bytes) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_commit", &hbm, /*allow_lost=*/false));
    return hbm->commit(offset, bytes);
  }
  Status hbm_decommit(dev::NpuId npu, uint64_t offset, uint64_t bytes) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_decommit", &hbm, /*allow_lost=*/true));
    return hbm->decommit(offset, bytes);
  }
  Status hbm_map_host(dev::NpuId npu, uint64_t offset, uint64_t bytes, void** host_ptr) override {
    NpuHbm* hbm = nullptr;
    MOE_TRY(hbm_of(npu, "hbm_map_host", &hbm, /*allow_lost=*/false));
    return hbm->map_host(offset, bytes, host_ptr);
  }

  // ---- engine queues ----
  Status queue_create(dev::NpuId npu, uint32_t die, dev::EngineKind engine, uint32_t depth,
                      dev::QueueId* out) override {
    if (npu >= topo_.num_npus()) return bad_npu(npu, "queue_create");
    if (engine != dev::EngineKind::kCompute && engine != dev::EngineKind::kFabric &&
        engine != dev::EngineKind::kHostCopy)
      return make_error(StatusCode::kInvalidArgument, "queue_create: npu %u: unknown engine %u",
                        npu, static_cast<unsigned>(engine));
    if (engine == dev::EngineKind::kCompute && die >= std::max<uint32_t>(1, topo_.dies_per_npu))
      return make_error(StatusCode::kInvalidArgument,
                        "queue_create: npu %u has %u dies; die %u asked", npu,
                        topo_.dies_per_npu, die);
    if (depth > queue_depth_max_)
      return make_error(StatusCode::kInvalidArgument,
                        "queue_create: npu %u: depth %u exceeds the maximum %u", npu, depth,
                        queue_depth_max_);
    if (faults_.npu_lost_now(npu))
      return make_error(StatusCode::kNpuLost, "queue_create: npu %u is lost", npu);
    if (depth == 0) depth = std::clamp<uint32_t>(config_.queue_depth, 1, queue_depth_max_);
    auto q = std::make_shared<SimQueue>();
    q->npu = npu;
    q->die = engine == dev::EngineKind::kCompute ? die : 0;
    q->engine = engine;
    q->depth = depth;
    if (engine == dev::EngineKind::kFabric) q->last_end_to_npu.assign(topo_.num_npus(), 0.0);
    std::lock_guard<std::mutex> lock(registry_mu_);
    q->id = static_cast<uint32_t>(queues_.size());
    queues_.push_back(q);
    *out = dev::QueueId{q->id};
    return ok_status();
  }

  Status queue_destroy(dev::QueueId queue) override {
    std::shared_ptr<SimQueue> q;
    {
      std::lock_guard<std::mutex> lock(registry_mu_);
      if (!queue.valid() || queue.value >= queues_.size() || !queues_[queue.value])
        return make_error(StatusCode::kNotFound, "queue_destroy: no queue %u", queue.value);
      q = std::move(queues_[queue.value]);
    }
    std::lock_guard<std::mutex> lock(q->mu);
    q->destroyed = true;
    q->cv.notify_all();
    return ok_status();
  }

  Status queue_submit(dev::QueueId queue, const dev::WorkDescriptor* work,
                      size_t count) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "queue_submit", &q));
    if (count == 0) return ok_status();
    if (work == nullptr)
      return make_error(StatusCode::kInvalidArgument, "queue_submit: queue %u: null descriptors",
                        q->id);
    const uint32_t in_use = q->in_use.load(std::memory_order_acquire);
    if (count > q->depth - in_use)
      return make_error(StatusCode::kResourceExhausted,
                        "queue_submit: queue %u (npu %u, %s): %zu descriptors do not fit, %u of "
                        "%u slots in use (a slot frees when its completion is polled)",
                        q->id, q->npu, engine_name(q->engine), count, in_use, q->depth);
    for (size_t i = 0; i < count; ++i) {
      if (plainly_valid(*q, work[i])) continue;
      Status s = validate(*q, work[i]);
      if (!s.ok())
        return s.with_context(strformat("queue_submit: queue %u (npu %u, %s): descriptor %zu "
                                        "(tag %llu)",
                                        q->id, q->npu, engine_name(q->engine), i,
                                        static_cast<unsigned long long>(work[i].tag)));
    }
    const size_t old = q->pending_count;
    if (q->pending.size() < old + count) q->pending.resize(std::max(old + count, 2 * old));
    for (size_t i = 0; i < count; ++i) q->pending[old + i].store(work[i]);
    q->pending_count = old + count;
    q->in_use.fetch_add(static_cast<uint32_t>(count), std::memory_order_acq_rel);
    return ok_status();
  }

  Status doorbell_ring(dev::QueueId queue) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "doorbell_ring", &q));
    const size_t n = q->pending_count;
    if (n == 0) return ok_status();
    if (q->ringing)
      return make_error(StatusCode::kFailedPrecondition,
                        "doorbell_ring: queue %u (npu %u) rung from a kernel body it is running",
                        q->id, q->npu);
    q->ringing = true;
    q->batch.resize(n);
    q->batch_lost.assign(n, {0, 0});
    q->actions.clear();
    q->undelivered.clear();
    BatchTotals totals;
    {
      std::lock_guard<std::mutex> lock(model_mu_);
      for (size_t i = 0; i < n; ++i)
        schedule(*q, q->pending[i], static_cast<uint32_t>(i), &q->batch[i], &totals);
    }
    q->pending_count = 0;
    q->started += n;
    for (const QueueAction& a : q->actions) perform(*q, a);
    {
      std::lock_guard<std::mutex> lock(q->mu);
      record_lost(*q, n);
      if (q->done_head == q->done.size()) {  // everything polled: hand the batch over
        q->done.swap(q->batch);
        q->done_head = 0;
      } else {
        if (q->done_head > q->done.size() / 2) {
          q->done.erase(q->done.begin(), q->done.begin() + static_cast<ptrdiff_t>(q->done_head));
          q->done_head = 0;
        }
        q->done.insert(q->done.end(), q->batch.begin(), q->batch.end());
      }
    }
    q->ringing = false;
    q->cv.notify_all();
    totals.publish();
    return ok_status();
  }

  Status completions_poll(dev::QueueId queue, dev::Completion* out, size_t max,
                          size_t* count) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "completions_poll", &q));
    if ((out == nullptr && max > 0) || count == nullptr)
      return make_error(StatusCode::kInvalidArgument, "completions_poll: queue %u: null output",
                        q->id);
    size_t moved = 0;
    {
      std::lock_guard<std::mutex> lock(q->mu);
      moved = std::min<size_t>(max, q->done.size() - q->done_head);
      std::copy_n(q->done.begin() + static_cast<ptrdiff_t>(q->done_head), moved, out);
      q->done_head += moved;
      q->polled += moved;
    }
    q->in_use.fetch_sub(static_cast<uint32_t>(moved), std::memory_order_acq_rel);
    *count = moved;
    return ok_status();
  }

  Status completions_wait(dev::QueueId queue, int64_t timeout_wall_ns) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "completions_wait", &q));
    std::unique_lock<std::mutex> lock(q->mu);
    auto ready = [&] { return q->done.size() > q->done_head || q->destroyed; };
    if (!ready() && timeout_wall_ns > 0)
      q->cv.wait_for(lock, std::chrono::nanoseconds(timeout_wall_ns), ready);
    if (q->done.size() > q->done_head) return ok_status();
    if (q->destroyed)
      return make_error(StatusCode::kCancelled, "completions_wait: queue %u was destroyed",
                        q->id);
    return make_error(StatusCode::kTimeout,
                      "completions_wait: queue %u (npu %u, %s): no completion within %lld ns "
                      "(%llu descriptors submitted but not rung)",
                      q->id, q->npu, engine_name(q->engine),
                      static_cast<long long>(timeout_wall_ns),
                      static_cast<unsigned long long>(q->pending_count));
  }

  Status engine_time(dev::QueueId queue, ModelTime* out) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "engine_time", &q));
    std::lock_guard<std::mutex> lock(model_mu_);
    *out = ModelTime{engine_clock(*q)};
    return ok_status();
  }

  // ---- links, planes, NPUs ----
  Status link_state(dev::LinkId link, dev::LinkState* out) override {
    if (link >= topo_.links.size()) return bad_link(link, "link_state");
    std::lock_guard<std::mutex> lock(model_mu_);
    *out = faults_.link_state(link, fabric_->now_ns());
    return ok_status();
  }
  Status plane_state(dev::PlaneId plane, dev::PlaneState* out) override {
    if (plane >= topo_.num_planes)
      return make_error(StatusCode::kInvalidArgument,
                        "plane_state: plane %u out of range (machine has %u planes)", plane,
                        topo_.num_planes);
    std::lock_guard<std::mutex> lock(model_mu_);
    *out = faults_.plane_state(plane, fabric_->now_ns());
    return ok_status();
  }
  Status link_counters(dev::LinkId link, dev::LinkCounters* out) override {
    if (link >= topo_.links.size()) return bad_link(link, "link_counters");
    std::lock_guard<std::mutex> lock(model_mu_);
    dev::LinkCounters c;
    for (int dir = 0; dir < 2; ++dir) {
      const PortCounters p = fabric_->port_counters(2 * link + dir);
      c.bytes[dir] = p.bytes;
      c.packets[dir] = p.packets;
      c.packets_lost[dir] = p.packets_lost;
      c.packets_corrupted[dir] = p.packets_corrupted;
      c.busy[dir] = ModelTime{p.busy_ns};
    }
    *out = c;
    return ok_status();
  }
  Status npu_state(dev::NpuId npu, dev::NpuState* out) override {
    if (npu >= topo_.num_npus()) return bad_npu(npu, "npu_state");
    dev::NpuState s;
    s.lost = faults_.npu_lost_now(npu);
    if (NpuHbm* hbm = hbm_if_made(npu)) {
      s.hbm_committed_bytes = hbm->committed_bytes();
      s.hbm_resident_bytes = hbm->resident_bytes();
    }
    {
      std::lock_guard<std::mutex> lock(model_mu_);
      s.hbm_errors = faults_.hbm_errors_reported[npu];
    }
    *out = s;
    return ok_status();
  }

  // ---- faults ----
  Status fault_inject(const dev::FaultSpec& fault, dev::FaultId* out) override {
    if (out == nullptr)
      return make_error(StatusCode::kInvalidArgument, "fault_inject: null output");
    std::lock_guard<std::mutex> lock(model_mu_);
    return faults_.inject(fault, out);
  }
  Status fault_clear(dev::FaultId fault) override {
    std::lock_guard<std::mutex> lock(model_mu_);
    return faults_.clear(fault, fabric_->now_ns());
  }
  Status fault_counters(dev::FaultCounters* out) override {
    std::lock_guard<std::mutex> lock(model_mu_);
    *out = faults_.counters;
    return ok_status();
  }

  // ---- reliability ----
  Status completion_undelivered(dev::QueueId queue, uint64_t work_index, uint32_t* out,
                                size_t max, size_t* count) override {
    std::shared_ptr<SimQueue> q;
    MOE_TRY(find_queue(queue, "completion_undelivered", &q));
    if (count == nullptr || (out == nullptr && max > 0))
      return make_error(StatusCode::kInvalidArgument,
                        "completion_undelivered: queue %u: null output", q->id);
    std::lock_guard<std::mutex> lock(q->mu);
    auto it = std::lower_bound(
        q->lost_records.begin(), q->lost_records.end(), work_index,
        [](const SimQueue::LostRecord& r, uint64_t w) { return r.work_index < w; });
    if (it == q->lost_records.end() || it->work_index != work_index) {
      // Still held and nothing recorded: every packet arrived (or it was not a transfer).
      if (work_index >= q->lost_floor && work_index < q->posted) {
        *count = 0;
        return ok_status();
      }
      return make_error(StatusCode::kNotFound,
                        "completion_undelivered: queue %u holds no record of work %llu (not "
                        "posted yet, or polled before the last doorbell)",
                        q->id, static_cast<unsigned long long>(work_index));
    }
    const size_t total = it->end - it->begin;
    std::copy_n(q->lost_log.begin() + it->begin, std::min(max, total), out);
    *count = total;
    return ok_status();
  }

 private:
  // Under q.mu, when a doorbell posts its `n` completions (q.batch): drops the records of
  // undelivered packets of completions polled before it, then records this batch's.
  static void record_lost(SimQueue& q, size_t n) {
    q.lost_floor = q.polled;
    size_t keep = 0;
    while (keep < q.lost_records.size() && q.lost_records[keep].work_index < q.polled) ++keep;
    if (keep == q.lost_records.size()) {
      q.lost_records.clear();
      q.lost_log.clear();
    } else if (keep > 0) {
      const uint32_t base = q.lost_records[keep].begin;
      q.lost_log.erase(q.lost_log.begin(), q.lost_log.begin() + base);
      q.lost_records.erase(q.lost_records.begin(), q.lost_records.begin() + keep);
      for (SimQueue::LostRecord& r : q.lost_records) {
        r.begin -= base;
        r.end -= base;
      }
    }
    for (size_t i = 0; i < n; ++i) {
      const auto [begin, end] = q.batch_lost[i];
      if (begin == end) continue;
      SimQueue::LostRecord r;
      r.work_index = q.batch[i].work_index;
      r.begin = static_cast<uint32_t>(q.lost_log.size());
      q.lost_log.insert(q.lost_log.end(), q.undelivered.begin() + begin,
                        q.undelivered.begin() + end);
      r.end = static_cast<uint32_t>(q.lost_log.size());
      q.lost_records.push_back(r);
    }
    q.posted += n;
  }

  // Statistics gathered during one doorbell and published once.
  struct BatchTotals {
    int64_t transfers = 0, packets = 0, lost = 0, corrupted = 0, atomics = 0, kernels = 0,
            host_copies = 0, failed = 0;
    void publish() const {
      if (transfers) stats_counters::kTransfers.add(transfers);
      if (packets) stats_counters::kPackets.add(packets);
      if (lost) stats_counters::kPacketsLost.add(lost);
      if (corrupted) stats_counters::kPacketsCorrupted.add(corrupted);
      if (atomics) stats_counters::kAtomics.add(atomics);
      if (kernels) stats_counters::kKernels.add(kernels);
      if (host_copies) stats_counters::kHostCopies.add(host_copies);
      if (failed) stats_counters::kFailedOperations.add(failed);
    }
  };

  Status bad_npu(dev::NpuId npu, const char* what) const {
    return make_error(StatusCode::kInvalidArgument, "%s: npu %u out of range (machine has %u NPUs)",
                      what, npu, topo_.num_npus());
  }
  Status bad_link(dev::LinkId link, const char* what) const {
    return make_error(StatusCode::kInvalidArgument,
                      "%s: link %u out of range (machine has %zu links)", what, link,
                      topo_.links.size());
  }

  // The NPU's HBM, made on first use. A lost NPU refuses everything but giving memory back.
  Status hbm_of(dev::NpuId npu, const char* what, NpuHbm** out, bool allow_lost) {
    if (npu >= topo_.num_npus()) return bad_npu(npu, what);
    if (!allow_lost && faults_.npu_lost_now(npu))
      return make_error(StatusCode::kNpuLost, "%s: npu %u is lost", what, npu);
    std::call_once(hbm_once_[npu], [&] {
      hbm_[npu] = std::make_unique<NpuHbm>(npu, topo_.hbm.capacity_bytes, hbm_window_bytes_);
    });
    *out = hbm_[npu].get();
    return ok_status();
  }
  NpuHbm* hbm_if_made(dev::NpuId npu) {
    NpuHbm* hbm = nullptr;
    hbm_of(npu, "npu_state", &hbm, /*allow_lost=*/true).ignore();
    return hbm;
  }

  Status find_queue(dev::QueueId queue, const char* what, std::shared_ptr<SimQueue>* out) {
    std::lock_guard<std::mutex> lock(registry_mu_);
    if (!queue.valid() || queue.value >= queues_.size() || !queues_[queue.value])
      return make_error(StatusCode::kNotFound, "%s: no queue %u", what, queue.value);
    *out = queues_[queue.value];
    return ok_status();
  }

  // An HBM range a descriptor names: committed when the work touches its bytes, inside the
  // NPU's capacity otherwise (timing mode needs no backing memory).
  Status check_range(const dev::DevicePtr& p, uint64_t bytes, bool touched, const char* what) {
    if (p.npu >= topo_.num_npus())
      return make_error(StatusCode::kInvalidArgument, "%s: npu %u out of range (machine has %u)",
                        what, p.npu, topo_.num_npus());
    if (bytes == 0) return ok_status();
    if (touched) {
      NpuHbm* hbm = nullptr;
      MOE_TRY(hbm_of(p.npu, what, &hbm, /*allow_lost=*/true));
      return hbm->check_committed(p.offset, bytes, what);
    }
    if (p.offset >= topo_.hbm.capacity_bytes || bytes > topo_.hbm.capacity_bytes - p.offset)
      return make_error(StatusCode::kInvalidArgument,
                        "%s: npu %u [%#llx, +%llu) is outside its HBM capacity", what, p.npu,
                        static_cast<unsigned long long>(p.offset),
                        static_cast<unsigned long long>(bytes));
    return ok_status();
  }

  Status validate_segments(const dev::TransferWork& t) {
    if (t.num_segments > max_segments_)
      return make_error(StatusCode::kInvalidArgument,
                        "transfer of %u segments (at most %u per transfer)", t.num_segments,
                        max_segments_);
    if (t.segments == nullptr)
      return make_error(StatusCode::kInvalidArgument, "transfer of %u segments with null segments",
                        t.num_segments);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < t.num_segments; ++i) {
      const dev::TransferSegment& g = t.segments[i];
      Status s = check_range({t.src.npu, g.src_offset}, g.bytes, t.move_payload, "source");
      if (s.ok()) s = check_range({t.dst.npu, g.dst_offset}, g.bytes, t.move_payload, "destination");
      if (!s.ok()) return s.with_context(strformat("transfer segment %u", i));
      sum += g.bytes;
    }
    if (sum != t.bytes)
      return make_error(StatusCode::kInvalidArgument,
                        "transfer bytes %llu differ from the sum of its %u segments (%llu)",
                        static_cast<unsigned long long>(t.bytes), t.num_segments,
                        static_cast<unsigned long long>(sum));
    return ok_status();
  }

  // The common case checked without building a Status: a timing-mode transfer inside the
  // machine. False means "run the full validation" (which names what is wrong, if anything).
  bool plainly_valid(const SimQueue& q, const dev::WorkDescriptor& w) const {
    if (w.kind != WorkKind::kTransfer || q.engine != dev::EngineKind::kFabric) return false;
    const dev::TransferWork& t = w.transfer;
    const uint64_t cap = topo_.hbm.capacity_bytes;
    return !t.move_payload && t.num_segments == 0 && w.not_before.ns >= 0 && w.not_before.ns < kNever &&
           (t.plane_mask & planes_mask_) != 0 && t.src.npu < topo_.num_npus() &&
           t.dst.npu < topo_.num_npus() && t.bytes <= (1ull << 40) && t.bytes <= cap &&
           t.src.offset <= cap - t.bytes && t.dst.offset <= cap - t.bytes;
  }

  Status validate(const SimQueue& q, const dev::WorkDescriptor& w) {
    if (!finite_time(w.not_before))
      return make_error(StatusCode::kInvalidArgument, "not_before %g ns is not a finite "
                        "non-negative modelled time", w.not_before.ns);
    auto wrong_engine = [&](const char* kind) {
      return make_error(StatusCode::kInvalidArgument, "a %s descriptor on a %s queue", kind,
                        engine_name(q.engine));
    };
    switch (w.kind) {
      case WorkKind::kMarker:
        return ok_status();
      case WorkKind::kKernel: {
        if (q.engine != dev::EngineKind::kCompute) return wrong_engine("kernel");
        const dev::KernelWork& k = w.kernel;
        if (!(std::isfinite(k.flops) && k.flops >= 0 && std::isfinite(k.hbm_bytes) &&
              k.hbm_bytes >= 0))
          return make_error(StatusCode::kInvalidArgument,
                            "kernel flops %g / hbm_bytes %g must be finite and >= 0", k.flops,
                            k.hbm_bytes);
        if (static_cast<unsigned>(k.kernel_class) > 1 || static_cast<unsigned>(k.precision) > 2)
          return make_error(StatusCode::kInvalidArgument, "kernel class %u / precision %u unknown",
                            static_cast<unsigned>(k.kernel_class),
                            static_cast<unsigned>(k.precision));
        return ok_status();
      }
      case WorkKind::kTransfer: {
        if (q.engine != dev::EngineKind::kFabric) return wrong_engine("transfer");
        const dev::TransferWork& t = w.transfer;
        if ((t.plane_mask & planes_mask_) == 0)
          return make_error(StatusCode::kInvalidArgument,
                            "transfer plane_mask %#x names none of the %u planes", t.plane_mask,
                            topo_.num_planes);
        if (t.bytes > (1ull << 40))
          return make_error(StatusCode::kInvalidArgument, "transfer of %llu bytes is too large",
                            static_cast<unsigned long long>(t.bytes));
        if (t.num_segments > 0) return validate_segments(t);
        MOE_TRY(check_range(t.src, t.bytes, t.move_payload, "transfer source"));
        MOE_TRY(check_range(t.dst, t.bytes, t.move_payload, "transfer destination"));
        return ok_status();
      }
      case WorkKind::kAtomic: {
        if (q.engine != dev::EngineKind::kFabric) return wrong_engine("atomic");
        const dev::AtomicWork& a = w.atomic;
        if (static_cast<unsigned>(a.op) > 3)
          return make_error(StatusCode::kInvalidArgument, "atomic op %u unknown",
                            static_cast<unsigned>(a.op));
        if (a.dst.offset % 8 != 0)
          return make_error(StatusCode::kInvalidArgument,
                            "misaligned atomic at npu %u offset %#llx (must be 8-byte aligned)",
                            a.dst.npu, static_cast<unsigned long long>(a.dst.offset));
        if (a.plane >= topo_.num_planes)
          return make_error(StatusCode::kInvalidArgument, "atomic plane %u out of range (%u)",
                            a.plane, topo_.num_planes);
        return check_range(a.dst, 8, true, "atomic target");
      }
      case WorkKind::kHostCopy: {
        if (q.engine != dev::EngineKind::kHostCopy) return wrong_engine("host copy");
        const dev::HostCopyWork& h = w.host_copy;
        if (h.device.npu != q.npu)
          return make_error(StatusCode::kInvalidArgument,
                            "host copy names npu %u on a queue of npu %u", h.device.npu, q.npu);
        if (static_cast<unsigned>(h.direction) > 1)
          return make_error(StatusCode::kInvalidArgument, "host copy direction %u unknown",
                            static_cast<unsigned>(h.direction));
        if (h.move_payload && h.bytes > 0 && h.host == nullptr)
          return make_error(StatusCode::kInvalidArgument, "host copy with a null host pointer");
        return check_range(h.device, h.bytes, h.move_payload, "host copy device range");
      }
    }
    return make_error(StatusCode::kInvalidArgument, "unknown work kind %u",
                      static_cast<unsigned>(w.kind));
  }

  double engine_clock(const SimQueue& q) const {
    switch (q.engine) {
      case dev::EngineKind::kCompute: return compute_clock_[compute_index(q)];
      case dev::EngineKind::kFabric: return fabric_done_[q.npu];
      case dev::EngineKind::kHostCopy: return host_copy_clock_[q.npu];
    }
    return 0;
  }
  size_t compute_index(const SimQueue& q) const {
    return static_cast<size_t>(q.npu) * std::max<uint32_t>(1, topo_.dies_per_npu) + q.die;
  }
  bool lost_at(dev::NpuId npu, double t) const {
    return faults_.any_npu_lost() && faults_.npu_lost_at(npu) <= t;
  }
  uint8_t* host_address(const dev::DevicePtr& p) { return hbm_[p.npu]->host_address(p.offset); }

  // Places one descriptor on the modelled timeline (model lock held).
  void schedule(SimQueue& q, const QueuedWork& w, uint32_t index, dev::Completion* c,
                BatchTotals* totals) {
    *c = dev::Completion{};
    c->tag = w.tag;
    c->work_index = q.started + index;
    const double not_before = w.not_before_ns;
    double start = 0, end = 0;
    auto fail = [&](StatusCode code) {
      c->status = code;
      end = start;
      ++totals->failed;
      if (code == StatusCode::kNpuLost) ++faults_.counters.operations_to_lost_npu;
    };
    switch (w.kind) {
      case WorkKind::kMarker:
        start = end = std::max(not_before, q.last_end_ns);
        break;
      case WorkKind::kKernel: {
        double& clock = compute_clock_[compute_index(q)];
        start = std::max(not_before, clock);
        if (lost_at(q.npu, start)) {
          fail(StatusCode::kNpuLost);
          break;
        }
        const dev::KernelWork& kernel = w.get<dev::KernelWork>();
        end = start + compute_.kernel_ns(kernel);
        clock = end;
        ++totals->kernels;
        if (kernel.body != nullptr) {
          QueueAction a;
          a.kind = QueueAction::Kind::kBody;
          a.completion = index;
          a.body = kernel.body;
          a.ctx = kernel.ctx;
          q.actions.push_back(a);
        }
        break;
      }
      case WorkKind::kTransfer:
        schedule_transfer(q, w.get<dev::TransferWork>(), not_before, index, c, &start, &end,
                          totals);
        break;
      case WorkKind::kAtomic:
        schedule_atomic(q, w.get<dev::AtomicWork>(), not_before, index, c, &start, &end,
                        totals);
        break;
      case WorkKind::kHostCopy: {
        const dev::HostCopyWork& h = w.get<dev::HostCopyWork>();
        double& clock = host_copy_clock_[q.npu];
        start = std::max(not_before, clock);
        if (lost_at(q.npu, start)) {
          fail(StatusCode::kNpuLost);
          break;
        }
        if (h.direction == dev::CopyDirection::kDeviceToHost && h.bytes > 0 &&
            faults_.any_hbm_error() && faults_.hbm_error(q.npu, h.device.offset, h.bytes, start)) {
          ++faults_.counters.hbm_errors_reported;
          ++faults_.hbm_errors_reported[q.npu];
          fail(StatusCode::kHbmError);
          break;
        }
        end = start + compute_.host_copy_ns(h.bytes);
        clock = end;
        ++totals->host_copies;
        if (h.move_payload && h.bytes > 0) {
          QueueAction a;
          a.kind = QueueAction::Kind::kCopy;
          a.completion = index;
          a.bytes = h.bytes;
          uint8_t* device = host_address(h.device);
          if (h.direction == dev::CopyDirection::kHostToDevice) {
            a.dst = device;
            a.src = static_cast<const uint8_t*>(h.host);
          } else {
            a.dst = static_cast<uint8_t*>(h.host);
            a.src = device;
          }
          q.actions.push_back(a);
        }
        break;
      }
    }
    c->start = ModelTime{start};
    c->end = ModelTime{end};
    if (w.kind != WorkKind::kAtomic) c->effect = c->end;
    q.last_end_ns = std::max(q.last_end_ns, end);
  }

  // The fabric engine's issue slot for the next descriptor of this NPU.
  double fabric_issue(const SimQueue& q, double not_before) {
    double& issue = fabric_issue_clock_[q.npu];
    const double start = std::max(not_before, issue);
    issue = start + fabric_issue_ns_;
    return start;
  }

  bool source_hbm_error(const dev::TransferWork& t, double at) const {
    if (t.num_segments == 0) return faults_.hbm_error(t.src.npu, t.src.offset, t.bytes, at);
    for (uint32_t i = 0; i < t.num_segments; ++i)
      if (faults_.hbm_error(t.src.npu, t.segments[i].src_offset, t.segments[i].bytes, at))
        return true;
    return false;
  }

  void schedule_transfer(SimQueue& q, const dev::TransferWork& t, double not_before,
                         uint32_t index, dev::Completion* c, double* start_out, double* end_out,
                         BatchTotals* totals) {
    const double start = fabric_issue(q, not_before);
    *start_out = *end_out = start;
    ++totals->transfers;
    if (faults_.any_npu_lost() &&
        (lost_at(q.npu, start) || lost_at(t.src.npu, start) || lost_at(t.dst.npu, start))) {
      c->status = StatusCode::kNpuLost;
      ++faults_.counters.operations_to_lost_npu;
      ++totals->failed;
      return;
    }
    if (t.bytes > 0 && faults_.any_hbm_error() && source_hbm_error(t, start)) {
      c->status = StatusCode::kHbmError;
      ++faults_.counters.hbm_errors_reported;
      ++faults_.hbm_errors_reported[t.src.npu];
      ++totals->failed;
      return;
    }
    double end = start;
    const uint32_t undelivered_begin = static_cast<uint32_t>(q.undelivered.size());
    if (t.src.npu == t.dst.npu) {
      // Inside one NPU: an HBM-to-HBM copy, no fabric packets.
      end = start + (q.npu == t.src.npu ? 0.0 : fabric_->route_latency_ns(q.npu, t.src.npu)) +
            compute_.local_copy_ns(t.bytes);
    } else {
      TransferRequest r;
      r.src = t.src.npu;
      r.dst = t.dst.npu;
      r.bytes = t.bytes;
      r.plane_mask = t.plane_mask;
      // A third-party transfer (a get) first sends its request to the source.
      r.ready_ns =
          q.npu == t.src.npu ? start : start + fabric_->route_latency_ns(q.npu, t.src.npu);
      r.queue = q.id;
      r.seq = q.seq++;
      r.extra_wire_bytes = uint64_t{t.num_segments} * segment_header_bytes_;
      TransferOutcome o;
      fabric_->transfer(r, faults_, &o, &q.undelivered);
      c->status = o.status;
      c->packets = o.packets;
      c->packets_lost = o.packets_lost;
      c->packets_corrupted = o.packets_corrupted;
      c->planes_used = o.planes_used;
      c->planes_failed = o.planes_failed;
      end = o.end_ns;
      totals->packets += o.packets;
      totals->lost += o.packets_lost;
      totals->corrupted += o.packets_corrupted;
      if (o.status != StatusCode::kOk) ++totals->failed;
    }
    *end_out = end;
    fabric_done_[q.npu] = std::max(fabric_done_[q.npu], end);
    double& to_dst = q.last_end_to_npu[t.dst.npu];
    to_dst = std::max(to_dst, end);
    // Functional payload: whatever arrived intact.
    const uint32_t undelivered_end = static_cast<uint32_t>(q.undelivered.size());
    if (undelivered_end != undelivered_begin) {
      std::sort(q.undelivered.begin() + undelivered_begin, q.undelivered.end());
      q.batch_lost[index] = {undelivered_begin, undelivered_end};
    }
    if (!t.move_payload || t.bytes == 0 || (c->packets == 0 && t.src.npu != t.dst.npu)) return;
    QueueAction a;
    a.completion = index;
    a.bytes = t.bytes;
    if (t.num_segments > 0) {
      a.segments = t.segments;
      a.num_segments = t.num_segments;
      a.dst = hbm_[t.dst.npu]->host_address(0);
      a.src = hbm_[t.src.npu]->host_address(0);
    } else {
      a.dst = host_address(t.dst);
      a.src = host_address(t.src);
    }
    if (undelivered_end == undelivered_begin) {
      a.kind = QueueAction::Kind::kCopy;
    } else {
      a.kind = QueueAction::Kind::kPartialCopy;
      a.undelivered_begin = undelivered_begin;
      a.undelivered_end = undelivered_end;
    }
    q.actions.push_back(a);
  }

  void schedule_atomic(SimQueue& q, const dev::AtomicWork& w, double not_before, uint32_t index,
                       dev::Completion* c, double* start_out, double* end_out,
                       BatchTotals* totals) {
    const double start = fabric_issue(q, not_before);
    *start_out = *end_out = start;
    c->effect = ModelTime{start};
    if (faults_.any_npu_lost() && (lost_at(q.npu, start) || lost_at(w.dst.npu, start))) {
      c->status = StatusCode::kNpuLost;
      ++faults_.counters.operations_to_lost_npu;
      ++totals->failed;
      return;
    }
    if (faults_.any_hbm_error() && faults_.hbm_error(w.dst.npu, w.dst.offset, 8, start)) {
      c->status = StatusCode::kHbmError;
      ++faults_.counters.hbm_errors_reported;
      ++faults_.hbm_errors_reported[w.dst.npu];
      ++totals->failed;
      return;
    }
    const double ordered_after =
        w.op == dev::AtomicOp::kStore ? q.last_end_to_npu[w.dst.npu] : 0.0;
    double end = start;
    if (w.dst.npu == q.npu) {
      end = std::max(start, ordered_after) + local_atomic_ns_;
      c->effect = ModelTime{end};
    } else {
      TransferOutcome o;
      double effect = start;
      fabric_->atomic(q.npu, w.dst.npu, w.plane, start, ordered_after, q.id, q.seq++, faults_,
                      &o, &effect);
      c->status = o.status;
      c->packets = o.packets;
      c->packets_lost = o.packets_lost;
      c->packets_corrupted = o.packets_corrupted;
      c->planes_used = o.planes_used;
      c->planes_failed = o.planes_failed;
      end = o.end_ns;
      c->effect = ModelTime{o.status == StatusCode::kOk ? effect : start};
      totals->packets += o.packets;
      totals->lost += o.packets_lost;
      totals->corrupted += o.packets_corrupted;
    }
    *end_out = end;
    fabric_done_[q.npu] = std::max(fabric_done_[q.npu], end);
    if (c->status != StatusCode::kOk) {
      ++totals->failed;
      return;
    }
    ++totals->atomics;
    QueueAction a;
    a.kind = QueueAction::Kind::kAtomic;
    a.completion = index;
    a.dst = host_address(w.dst);
    a.op = w.op;
    a.operand = w.operand;
    a.compare = w.compare;
    q.actions.push_back(a);
  }

  // Copies ranges of a transfer's stream (work.h), in increasing order: for a multi-segment
  // transfer, each range is mapped onto the segments it covers.
  class StreamCopier {
   public:
    explicit StreamCopier(const QueueAction& a) : a_(a) {}
    void operator()(uint64_t begin, uint64_t end) {
      if (a_.num_segments == 0) {
        std::memmove(a_.dst + begin, a_.src + begin, end - begin);
        return;
      }
      while (begin < end && seg_ < a_.num_segments) {
        const dev::TransferSegment& g = a_.segments[seg_];
        if (begin >= seg_start_ + g.bytes) {
          seg_start_ += g.bytes;
          ++seg_;
          continue;
        }
        const uint64_t in = begin - seg_start_;
        const uint64_t n = std::min(end, seg_start_ + g.bytes) - begin;
        std::memmove(a_.dst + g.dst_offset + in, a_.src + g.src_offset + in, n);
        begin += n;
      }
    }

   private:
    const QueueAction& a_;
    uint32_t seg_ = 0;
    uint64_t seg_start_ = 0;  // stream offset of segment seg_
  };

  // Functional work, after the model lock (calling thread).
  void perform(SimQueue& q, const QueueAction& a) {
    switch (a.kind) {
      case QueueAction::Kind::kCopy:
        if (a.num_segments == 0) {
          std::memmove(a.dst, a.src, a.bytes);
        } else {
          for (uint32_t i = 0; i < a.num_segments; ++i) {
            const dev::TransferSegment& g = a.segments[i];
            std::memmove(a.dst + g.dst_offset, a.src + g.src_offset, g.bytes);
          }
        }
        break;
      case QueueAction::Kind::kPartialCopy: {
        const uint64_t pb = topo_.packet_bytes;
        StreamCopier copy(a);
        uint64_t from = 0;
        for (uint32_t i = a.undelivered_begin; i < a.undelivered_end; ++i) {
          const uint64_t lost_begin = static_cast<uint64_t>(q.undelivered[i]) * pb;
          if (lost_begin > from) copy(from, lost_begin);
          from = std::min(a.bytes, lost_begin + pb);
        }
        if (from < a.bytes) copy(from, a.bytes);
        break;
      }
      case QueueAction::Kind::kBody:
        a.body(a.ctx);
        break;
      case QueueAction::Kind::kAtomic: {
        std::atomic_ref<uint64_t> word(*reinterpret_cast<uint64_t*>(a.dst));
        uint64_t old = 0;
        switch (a.op) {
          case dev::AtomicOp::kFetchAdd: old = word.fetch_add(a.operand); break;
          case dev::AtomicOp::kCompareSwap: {
            old = a.compare;
            word.compare_exchange_strong(old, a.operand);
            break;
          }
          case dev::AtomicOp::kStore: old = word.exchange(a.operand); break;
          case dev::AtomicOp::kLoad: old = word.load(); break;
        }
        q.batch[a.completion].atomic_old = old;
        break;
      }
    }
  }

  dev::Topology topo_;
  SimConfig config_;
  std::string name_;
  uint64_t hbm_window_bytes_ = 0;
  uint32_t queue_depth_max_ = 0;
  double fabric_issue_ns_ = 0;
  double local_atomic_ns_ = 0;
  uint32_t max_segments_ = 0;
  uint32_t segment_header_bytes_ = 0;
  uint32_t planes_mask_ = 0;

  std::vector<std::unique_ptr<NpuHbm>> hbm_;
  std::unique_ptr<std::once_flag[]> hbm_once_;

  std::mutex registry_mu_;
  std::vector<std::shared_ptr<SimQueue>> queues_;  // index = queue id; null once destroyed

  // The model: everything below is guarded by model_mu_ (except FaultTable::npu_lost_now).
  std::mutex model_mu_;
  std::unique_ptr<FabricModel> fabric_;
  ComputeModel compute_;
  FaultTable faults_;
  std::vector<double> compute_clock_;       // per (npu, die)
  std::vector<double> host_copy_clock_;     // per npu
  std::vector<double> fabric_issue_clock_;  // per npu
  std::vector<double> fabric_done_;         // per npu: latest end of issued fabric work
};

}  // namespace

StatusOr<std::unique_ptr<dev::Driver>> create_driver(dev::Topology topology,
                                                     const SimConfig& config) {
  if (topology.num_npus() == 0)
    return make_error(StatusCode::kInvalidArgument, "create_driver: topology '%s' has no NPUs",
                      topology.name.c_str());
  if (topology.hbm.capacity_bytes < kHbmPageBytes)
    return make_error(StatusCode::kInvalidArgument,
                      "create_driver: topology '%s' HBM capacity %llu bytes is below one page",
                      topology.name.c_str(),
                      static_cast<unsigned long long>(topology.hbm.capacity_bytes));
  if (topology.packet_bytes == 0)
    return make_error(StatusCode::kInvalidArgument,
                      "create_driver: topology '%s' has packet_bytes 0", topology.name.c_str());
  if (topology.npu_plane_link.size() != static_cast<size_t>(topology.num_npus()) * topology.num_planes)
    topology.finalize();
  std::string name = topology.name;
  auto driver = std::make_unique<SimDriver>(std::move(topology), config);
  Status s = driver->init();
  if (!s.ok()) return s.with_context(strformat("create_driver '%s'", name.c_str()));
  return std::unique_ptr<dev::Driver>(std::move(driver));
}

}  // namespace moe::sim
