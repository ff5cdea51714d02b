// The UB transport's endpoint: the data path (see transport.h for the contract and
// ub_transport.h for what the transport adds to the driver).
//
// Design:
//  - Every operation is translated first (global pages to {NPU, offset} pieces; adjacent
//    pieces merge) and checked, so bad input is refused before anything is issued.
//  - Small puts go into a per-destination Batch: segments (adjacent ones merged) and, for
//    put_inline, bytes staged in a buffer of this NPU's HBM. A batch becomes one fabric
//    operation (a plain transfer when it holds one segment, a multi-segment one otherwise).
//  - Everything handed to the driver goes through the ReliableQueue and is complete (every
//    byte delivered exactly once, or failed for good) when run() returns: the simulator
//    executes work at the doorbell, and waiting there keeps a real driver correct too. So
//    "outstanding" exists only in modelled time: the endpoint remembers per destination the
//    modelled time its latest put arrived (last_put_end_), the floor set by the last fence
//    (fence_floor_), and the latest completion of anything issued (outstanding_end_).
//  - Signals are atomics issued no earlier than last_put_end_ of the NPUs whose data they
//    cover, after the batch for those NPUs went out, so the flag follows the data both in
//    wall time (another thread polling memory) and in modelled time.
//  - Delivery errors of non-blocking work are kept (first one wins) until quiet returns
//    them; a signal refuses to go out while one is pending, so a flag never announces data
//    that failed. NPUs found lost are remembered and refused at once afterwards.
// The data path allocates nothing in steady state: batches, pieces and fabric items are
// vectors reused across calls; staging buffers are allocated once per destination.
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <thread>

#include "interconnect/ic_stats.h"
#include "interconnect/reliable_queue.h"
#include "interconnect/ub_internal.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::ic {
namespace {

const char* status_name(StatusCode code) { return status_code_name(code).data(); }

class UbEndpoint final : public Endpoint {
 public:
  UbEndpoint(UbTransport& transport, const EndpointConfig& config)
      : transport_(transport),
        mem_(transport.memory()),
        cfg_(transport.config()),
        npu_(config.npu),
        mode_(config.mode),
        issuer_(config.issuer),
        wait_timeout_ns_(config.wait_timeout_wall_ns >= 0 ? config.wait_timeout_wall_ns
                                                          : cfg_.wait_timeout_ns),
        issue_ns_(config.issuer == Issuer::kHost ? cfg_.host_issue_ns : cfg_.device_issue_ns) {}

  ~UbEndpoint() override {
    Status s = flush_all();
    if (!s.ok()) MOE_WARN("endpoint of npu %u closed: %s", npu_, s.to_string().c_str());
    if (!pending_error_.ok())
      MOE_WARN("endpoint of npu %u closed with an unreported error: %s", npu_,
               pending_error_.to_string().c_str());
    publish();
    for (const std::unique_ptr<Batch>& b : batches_)
      if (b && b->staging) mem_.free(b->staging).ignore();
  }

  Status init() {
    const uint32_t n = transport_.driver().topology().num_npus();
    MOE_TRY(rq_.open(transport_.driver(), npu_, cfg_.queue_depth, cfg_.caps.max_retries,
                     cfg_.retry_detect_ns, cfg_.completion_timeout_ns));
    batches_.resize(n);
    last_put_end_.assign(n, 0.0);
    fence_floor_.assign(n, 0.0);
    touched_.assign(n, 0);
    lost_.assign(n, 0);
    max_batch_segments_ = std::max<uint32_t>(1, std::min<uint32_t>(cfg_.caps.max_segments, 1024));
    return ok_status();
  }

  dev::NpuId npu() const override { return npu_; }
  Mode mode() const override { return mode_; }
  Issuer issuer() const override { return issuer_; }
  ModelTime now() const override { return ModelTime{clock_ns_}; }
  void advance_to(ModelTime t) override { clock_ns_ = std::max(clock_ns_, t.ns); }
  const EndpointStats& stats() const override { return stats_; }

  // ---- data ----
  Status put(GlobalAddr dst, GlobalAddr src, uint64_t bytes) override {
    tick();
    ++stats_.puts;
    stats_.put_bytes += bytes;
    if (bytes == 0) return ok_status();
    MOE_TRY(split(dst, src, bytes, "put"));
    items_.clear();
    for (const Piece& p : pieces_) {
      if (p.bytes <= cfg_.caps.coalesce_max_put_bytes && p.src.npu == npu_) {
        MOE_TRY(coalesce(p.dst, p.src.offset, p.bytes, nullptr));
        continue;
      }
      MOE_TRY(flush_batch(p.dst.npu));
      items_.push_back(transfer_item(p, put_start(p.dst.npu)));
    }
    if (items_.empty()) return ok_status();
    MOE_TRY(run_items());
    for (const FabricItem& it : items_) settle_put(it);
    return ok_status();
  }

  Status put_inline(GlobalAddr dst, const void* data, uint32_t bytes) override {
    tick();
    ++stats_.puts;
    stats_.put_bytes += bytes;
    if (bytes == 0) return ok_status();
    if (bytes > cfg_.caps.max_inline_bytes)
      return make_error(StatusCode::kInvalidArgument,
                        "put_inline of %u bytes to %s: at most %u bytes (IC_MAX_INLINE_BYTES)",
                        bytes, mem::to_string(dst).c_str(), cfg_.caps.max_inline_bytes);
    if (data == nullptr)
      return make_error(StatusCode::kInvalidArgument, "put_inline of %u bytes to %s: null data",
                        bytes, mem::to_string(dst).c_str());
    MOE_TRY(split(dst, GlobalAddr{}, bytes, "put_inline"));
    const uint8_t* from = static_cast<const uint8_t*>(data);
    for (const Piece& p : pieces_) {
      MOE_TRY(coalesce(p.dst, 0, p.bytes, from));
      // Staged either way; sent at once when coalescing is off for its size.
      if (p.bytes > cfg_.caps.coalesce_max_put_bytes) MOE_TRY(flush_batch(p.dst.npu));
      from += p.bytes;
    }
    return ok_status();
  }

  Status get(GlobalAddr dst, GlobalAddr src, uint64_t bytes) override {
    double end = 0;
    bool issued = false;
    MOE_TRY(get_impl(dst, src, bytes, &end, &issued, "get"));
    clock_ns_ = std::max(clock_ns_, end);
    return ok_status();
  }

  Status get_nbi(GlobalAddr dst, GlobalAddr src, uint64_t bytes) override {
    double end = 0;
    bool issued = false;
    Status s = get_impl(dst, src, bytes, &end, &issued, "get_nbi");
    if (!issued) return s;  // refused at the call
    keep_error(std::move(s));  // a delivery error: reported by quiet
    outstanding_end_ = std::max(outstanding_end_, end);
    return ok_status();
  }

  // ---- atomics ----
  Status fetch_add(GlobalAddr word, uint64_t value, uint64_t* old) override {
    tick();
    ++stats_.atomics;
    Outcome o;
    MOE_TRY(atomic(word, dev::AtomicOp::kFetchAdd, value, 0, -1, "fetch_add", &o));
    clock_ns_ = std::max(clock_ns_, o.end_ns);
    if (old != nullptr) *old = o.old;
    return ok_status();
  }

  Status compare_swap(GlobalAddr word, uint64_t compare, uint64_t desired,
                      uint64_t* old) override {
    tick();
    ++stats_.atomics;
    Outcome o;
    MOE_TRY(atomic(word, dev::AtomicOp::kCompareSwap, desired, compare, -1, "compare_swap", &o));
    clock_ns_ = std::max(clock_ns_, o.end_ns);
    if (old != nullptr) *old = o.old;
    return ok_status();
  }

  // ---- signals ----
  Status put_signal(GlobalAddr dst, GlobalAddr src, uint64_t bytes, GlobalAddr sig,
                    uint64_t value, SignalOp op) override {
    MOE_TRY(check_word(sig, "put_signal signal word", nullptr));
    pieces_.clear();
    MOE_TRY(put(dst, src, bytes));
    // The signal follows the data on every NPU it went to (pieces_ still holds them).
    double after = 0;
    for (const Piece& p : pieces_) {
      MOE_TRY(flush_batch(p.dst.npu));
      after = std::max(after, last_put_end_[p.dst.npu]);
    }
    return signal_at(sig, value, op, after, nullptr, "put_signal");
  }

  Status signal(GlobalAddr sig, uint64_t value, SignalOp op) override {
    tick();
    return signal_at(sig, value, op, 0, nullptr, "signal");
  }
  Status signal_many(std::span<const GlobalAddr> words, uint64_t value) override {
    tick();
    return store_many(words, value, 0, "signal_many");
  }

  // ---- ordering, completion, synchronisation ----
  Status fence() override {
    Status s = flush_all();
    for (dev::NpuId d : touched_list_) {
      fence_floor_[d] = std::max(fence_floor_[d], last_put_end_[d]);
      touched_[d] = 0;
    }
    touched_list_.clear();
    publish();
    MOE_TRY(s);
    return pending_error_;
  }

  Status quiet() override {
    Status s = flush_all();
    clock_ns_ = std::max(clock_ns_, outstanding_end_);
    publish();
    MOE_TRY(s);
    Status e = std::move(pending_error_);
    pending_error_ = ok_status();
    return e;
  }

  Status wait_until(GlobalAddr flag, Cmp cmp, uint64_t value, uint64_t* observed,
                    int64_t timeout_wall_ns) override {
    dev::DevicePtr at;
    MOE_TRY(check_word(flag, "wait_until flag", &at));
    if (at.npu != npu_)
      return make_error(StatusCode::kInvalidArgument,
                        "wait_until: flag %s is on npu %u, not on this endpoint's npu %u",
                        mem::to_string(flag).c_str(), at.npu, npu_);
    if (static_cast<unsigned>(cmp) > static_cast<unsigned>(Cmp::kLe))
      return make_error(StatusCode::kInvalidArgument, "wait_until: unknown comparison %u",
                        static_cast<unsigned>(cmp));
    // Progress: what this endpoint coalesced may be what the other side waits for first.
    MOE_TRY(flush_all());
    publish();
    auto* word = static_cast<uint64_t*>(mem_.translate_host(flag));
    if (word == nullptr)
      return make_error(StatusCode::kInvalidArgument, "wait_until: flag %s is not mapped",
                        mem::to_string(flag).c_str());
    std::atomic_ref<uint64_t> w(*word);
    const int64_t timeout = timeout_wall_ns >= 0 ? timeout_wall_ns : wait_timeout_ns_;
    const int64_t deadline = wall_now_ns() + timeout;
    uint64_t v = w.load(std::memory_order_seq_cst);
    for (uint32_t spins = 0; !compare(v, cmp, value); v = w.load(std::memory_order_seq_cst)) {
      if (++spins < 256) continue;
      if (wall_now_ns() >= deadline)
        return make_error(StatusCode::kTimeout,
                          "wait_until: npu %u flag %s: value %llu %s %llu not reached within "
                          "%lld ns of wall time (last value %llu)",
                          npu_, mem::to_string(flag).c_str(), static_cast<unsigned long long>(v),
                          cmp_name(cmp), static_cast<unsigned long long>(value),
                          static_cast<long long>(timeout), static_cast<unsigned long long>(v));
      if (spins < 4096)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    double visible = 0;
    if (transport_.signals().visible_time(flag, cmp, value, &visible))
      clock_ns_ = std::max(clock_ns_, visible);
    ++stats_.waits;
    if (observed != nullptr) *observed = v;
    return ok_status();
  }

  Status barrier(Group& group) override {
    MOE_TRY(barrier_arrive(group));
    return barrier_wait(group, -1);
  }

  Status barrier_arrive(Group& group) override {
    UbGroup* g = nullptr;
    uint32_t rank = 0;
    MOE_TRY(member_of(group, "barrier_arrive", &g, &rank));
    UbGroup::MemberState& me = g->member(rank);
    if (me.arrived)
      return make_error(StatusCode::kFailedPrecondition,
                        "barrier_arrive: npu %u already arrived at barrier %llu and has not "
                        "waited for it",
                        npu_, static_cast<unsigned long long>(me.epoch));
    MOE_TRY(quiet());
    tick();
    const uint64_t epoch = ++me.epoch;
    me.arrived = true;
    double reached_root = 0;
    MOE_TRY(signal_at(g->root_counter(), 1, SignalOp::kAdd, 0, &reached_root, "barrier arrival"));
    double latest = 0;
    if (!g->arrive(epoch, reached_root, &latest)) return ok_status();
    // Last to arrive: release every member, leaving when the last arrival reached the root.
    // One submission for all the release words (one doorbell, not one per member); each is
    // timed as its own signal.
    release_words_.clear();
    for (uint32_t r = 0; r < g->members().size(); ++r) release_words_.push_back(g->release_word(r));
    return store_many(release_words_, epoch, latest, "barrier release");
  }

  // Sets every word of `words` to `value` as signals (kStore after this endpoint's earlier
  // puts to each word's NPU, no earlier than `after`), submitted together. Every word is
  // attempted; the first failure is returned, naming its word.
  Status store_many(std::span<const GlobalAddr> words, uint64_t value, double after,
                    const char* what) {
    store_at_.resize(words.size());
    for (size_t i = 0; i < words.size(); ++i) {
      MOE_TRY(check_word(words[i], what, &store_at_[i]));
      MOE_TRY(flush_batch(store_at_[i].npu));
    }
    if (!pending_error_.ok()) {
      Status s = pending_error_;
      return s.with_context(strformat("%s not sent: an earlier put failed (see quiet)", what));
    }
    SignalTable& table = transport_.signals();
    items_.clear();
    store_slots_.clear();
    for (size_t i = 0; i < words.size(); ++i) {
      const dev::DevicePtr& at = store_at_[i];
      FabricItem it;
      it.work.kind = dev::WorkKind::kAtomic;
      it.work.not_before =
          ModelTime{std::max({clock_ns_, after, last_put_end_[at.npu], fence_floor_[at.npu]})};
      it.work.atomic.op = dev::AtomicOp::kStore;
      it.work.atomic.dst = at;
      it.work.atomic.operand = value;
      it.work.atomic.plane = next_plane_;
      next_plane_ = (next_plane_ + 1) % cfg_.caps.num_planes;
      items_.push_back(it);
      store_slots_.push_back(table.begin_update(words[i]));
    }
    stats_.signals += words.size();
    Status s = run_items();
    Status first_error = s;
    for (size_t i = 0; i < words.size(); ++i) {
      const FabricItem& done = items_[i];
      const bool ok = s.ok() && done.status == StatusCode::kOk;
      table.end_update(store_slots_[i], ok, value, done.effect_ns);
      if (!ok) continue;
      outstanding_end_ = std::max(outstanding_end_, done.end_ns);
    }
    if (!first_error.ok()) return first_error;
    for (size_t i = 0; i < words.size(); ++i) {
      const FabricItem& done = items_[i];
      if (done.status == StatusCode::kOk) continue;
      ++stats_.errors;
      if (done.status == StatusCode::kNpuLost) mark_lost_if(store_at_[i].npu, npu_);
      if (first_error.ok())
        first_error = make_error(done.status, "%s on %s (npu %u) from npu %u failed: %s", what,
                                 mem::to_string(words[i]).c_str(), store_at_[i].npu, npu_,
                                 status_name(done.status));
    }
    return first_error;
  }

  Status barrier_wait(Group& group, int64_t timeout_wall_ns) override {
    UbGroup* g = nullptr;
    uint32_t rank = 0;
    MOE_TRY(member_of(group, "barrier_wait", &g, &rank));
    UbGroup::MemberState& me = g->member(rank);
    if (!me.arrived)
      return make_error(StatusCode::kFailedPrecondition,
                        "barrier_wait: npu %u has not arrived (call barrier_arrive first)", npu_);
    Status s = wait_until(g->release_word(rank), Cmp::kGe, me.epoch, nullptr, timeout_wall_ns);
    if (s.ok()) me.arrived = false;
    return s;
  }

 private:
  // A contiguous piece of an operation: both ends inside one global page each.
  struct Piece {
    dev::DevicePtr src;  // npu kInvalidId for put_inline
    dev::DevicePtr dst;
    uint64_t bytes = 0;
  };
  // Small puts waiting for one destination NPU.
  struct Batch {
    std::vector<dev::TransferSegment> segs;
    uint64_t bytes = 0;
    uint32_t puts = 0;
    double ready_ns = 0;  // the latest start of the puts in it
    bool open = false;
    bool listed = false;  // in open_list_
    GlobalAddr staging;   // put_inline bytes, in this NPU's HBM (functional mode)
    uint8_t* staging_host = nullptr;
    uint64_t staging_offset = 0;
    uint32_t staging_used = 0;
  };
  struct Outcome {
    uint64_t old = 0;
    double end_ns = 0;
    double effect_ns = 0;
  };

  // A host endpoint spends its own time on each operation it issues.
  void tick() { clock_ns_ += issue_ns_; }
  double put_start(dev::NpuId dst) const { return std::max(clock_ns_, fence_floor_[dst]); }
  bool functional() const { return mode_ == Mode::kFunctional; }

  Status npu_lost(dev::NpuId npu, const char* what) const {
    return make_error(StatusCode::kNpuLost, "%s from npu %u: npu %u is lost", what, npu_, npu);
  }

  // Translates [dst, dst+bytes) and, unless src is null, [src, src+bytes) into pieces_.
  Status split(GlobalAddr dst, GlobalAddr src, uint64_t bytes, const char* what) {
    pieces_.clear();
    const bool has_src = !src.is_null();
    for (uint64_t done = 0; done < bytes;) {
      Piece p;
      uint64_t n = bytes - done;
      if (!mem_.translate(dst + done, &p.dst))
        return unmapped(what, "destination", dst, bytes, done);
      n = std::min(n, mem_.contiguous_bytes(dst + done));
      if (has_src) {
        if (!mem_.translate(src + done, &p.src)) return unmapped(what, "source", src, bytes, done);
        n = std::min(n, mem_.contiguous_bytes(src + done));
        if (lost_[p.src.npu]) return npu_lost(p.src.npu, what);
      } else {
        p.src.npu = dev::kInvalidId;
      }
      if (lost_[p.dst.npu]) return npu_lost(p.dst.npu, what);
      p.bytes = n;
      Piece* prev = pieces_.empty() ? nullptr : &pieces_.back();
      if (prev != nullptr && prev->dst.npu == p.dst.npu &&
          prev->dst.offset + prev->bytes == p.dst.offset && prev->src.npu == p.src.npu &&
          (!has_src || prev->src.offset + prev->bytes == p.src.offset))
        prev->bytes += n;
      else
        pieces_.push_back(p);
      done += n;
    }
    return ok_status();
  }

  Status unmapped(const char* what, const char* side, GlobalAddr base, uint64_t bytes,
                  uint64_t done) const {
    return make_error(StatusCode::kInvalidArgument,
                      "%s of %llu bytes from npu %u: %s %s is not mapped (%llu bytes in, at %s)",
                      what, static_cast<unsigned long long>(bytes), npu_, side,
                      mem::to_string(base).c_str(), static_cast<unsigned long long>(done),
                      mem::to_string(base + done).c_str());
  }

  // An 8-byte aligned, mapped word on an NPU that is not known lost.
  Status check_word(GlobalAddr word, const char* what, dev::DevicePtr* at) const {
    dev::DevicePtr p;
    if (word.value % 8 != 0)
      return make_error(StatusCode::kInvalidArgument, "%s %s is not 8-byte aligned", what,
                        mem::to_string(word).c_str());
    if (!mem_.translate(word, &p))
      return make_error(StatusCode::kInvalidArgument, "%s %s is not mapped", what,
                        mem::to_string(word).c_str());
    if (lost_[p.npu]) return npu_lost(p.npu, what);
    if (at != nullptr) *at = p;
    return ok_status();
  }

  FabricItem transfer_item(const Piece& p, double start) const {
    FabricItem it;
    it.work.kind = dev::WorkKind::kTransfer;
    it.work.not_before = ModelTime{start};
    it.work.transfer.src = p.src;
    it.work.transfer.dst = p.dst;
    it.work.transfer.bytes = p.bytes;
    it.work.transfer.move_payload = functional();
    return it;
  }

  // Runs items_ through the reliable queue and accounts for what happened.
  Status run_items() {
    ReliabilityCounts c;
    Status s = rq_.run(items_, &c);
    stats_.fabric_ops += c.fabric_ops;
    stats_.bytes_delivered += c.bytes_delivered;
    stats_.packets_lost += c.packets_lost;
    stats_.packets_corrupted += c.packets_corrupted;
    stats_.retransmissions += c.retransmissions;
    stats_.retransmitted_packets += c.retransmitted_packets;
    stats_.failovers += c.failovers;
    if (!s.ok()) ++stats_.errors;
    return s;
  }

  // Records the outcome of a put (direct or a batch) to its destination NPU.
  void settle_put(const FabricItem& it) {
    const dev::NpuId d = it.work.transfer.dst.npu;
    last_put_end_[d] = std::max(last_put_end_[d], it.end_ns);
    outstanding_end_ = std::max(outstanding_end_, it.end_ns);
    if (!touched_[d]) {
      touched_[d] = 1;
      touched_list_.push_back(d);
    }
    if (it.status == StatusCode::kOk) return;
    ++stats_.errors;
    if (it.status == StatusCode::kNpuLost) mark_lost_if(it.work.transfer.src.npu, d);
    keep_error(make_error(it.status, "put of %llu bytes from npu %u to npu %u failed: %s",
                          static_cast<unsigned long long>(it.work.transfer.bytes), npu_, d,
                          status_name(it.status)));
  }

  void keep_error(Status s) {
    if (!s.ok() && pending_error_.ok()) pending_error_ = std::move(s);
  }

  // Adds a small put of `bytes` to the batch of dst.npu: from this NPU's HBM at src_offset,
  // or (inline != null) from host memory, staged now.
  Status coalesce(const dev::DevicePtr& dst, uint64_t src_offset, uint64_t bytes,
                  const uint8_t* inline_data) {
    Batch& b = batch(dst.npu);
    const bool staged = inline_data != nullptr;
    if (staged && functional() && b.staging_host == nullptr) MOE_TRY(make_staging(&b));
    auto staging_at = [&] { return (functional() ? b.staging_offset : 0) + b.staging_used; };
    if (staged) src_offset = staging_at();
    bool adjacent = false;
    if (b.open) {
      const dev::TransferSegment& last = b.segs.back();
      adjacent = last.src_offset + last.bytes == src_offset &&
                 last.dst_offset + last.bytes == dst.offset;
      const uint64_t cap = cfg_.caps.coalesce_bytes;
      if (b.bytes + bytes > cap || (staged && b.staging_used + bytes > cap) ||
          (!adjacent && b.segs.size() >= max_batch_segments_)) {
        MOE_TRY(flush_batch(dst.npu));
        adjacent = false;
        if (staged) src_offset = staging_at();
      }
    }
    if (staged) {
      // Timing mode stages nothing: the offset only has to lie inside the NPU's capacity.
      if (functional()) std::memcpy(b.staging_host + b.staging_used, inline_data, bytes);
      b.staging_used += static_cast<uint32_t>(bytes);
    }
    if (adjacent)
      b.segs.back().bytes += bytes;
    else
      b.segs.push_back({src_offset, dst.offset, bytes});
    b.bytes += bytes;
    ++b.puts;
    b.ready_ns = std::max(b.ready_ns, put_start(dst.npu));
    b.open = true;
    if (!b.listed) {
      b.listed = true;
      open_list_.push_back(dst.npu);
    }
    return ok_status();
  }

  // The batch of destination d, made on first use: an endpoint talks to few of the machine's
  // NPUs, and an EP 384 MoeBuffer opens thousands of endpoints (12,288 at 32 contexts), so a
  // Batch per NPU made up front cost ~40 KB and its zeroing per endpoint.
  Batch& batch(dev::NpuId d) {
    if (!batches_[d]) batches_[d] = std::make_unique<Batch>();
    return *batches_[d];
  }

  Status make_staging(Batch* b) {
    const uint64_t bytes = cfg_.caps.coalesce_bytes;
    const uint64_t align = std::bit_ceil(bytes);
    MOE_TRY_ASSIGN(b->staging, mem_.allocate_local(npu_, bytes, align));
    dev::DevicePtr p;
    b->staging_host = static_cast<uint8_t*>(mem_.translate_host(b->staging));
    if (!mem_.translate(b->staging, &p) || b->staging_host == nullptr ||
        mem_.contiguous_bytes(b->staging) < bytes) {
      mem_.free(b->staging).ignore();
      b->staging = GlobalAddr{};
      b->staging_host = nullptr;
      return make_error(StatusCode::kInternal,
                        "npu %u: staging buffer of %llu bytes is not one mapped range", npu_,
                        static_cast<unsigned long long>(bytes));
    }
    b->staging_offset = p.offset;
    return ok_status();
  }

  // Sends the batch of one destination as one fabric operation.
  Status flush_batch(dev::NpuId d) {
    if (!batches_[d] || !batches_[d]->open) return ok_status();
    Batch& b = *batches_[d];
    FabricItem it;
    it.work.kind = dev::WorkKind::kTransfer;
    it.work.not_before = ModelTime{b.ready_ns};
    dev::TransferWork& t = it.work.transfer;
    t.src = {npu_, b.segs[0].src_offset};
    t.dst = {d, b.segs[0].dst_offset};
    t.bytes = b.bytes;
    t.move_payload = functional();
    if (b.segs.size() > 1) {
      t.segments = b.segs.data();
      t.num_segments = static_cast<uint32_t>(b.segs.size());
    }
    if (b.puts > 1) stats_.coalesced_puts += b.puts;
    b.open = false;
    b.bytes = 0;
    b.puts = 0;
    b.ready_ns = 0;
    b.staging_used = 0;
    batch_items_.assign(1, it);
    std::swap(items_, batch_items_);
    Status s = run_items();
    std::swap(items_, batch_items_);
    b.segs.clear();
    MOE_TRY(s);
    settle_put(batch_items_[0]);
    return ok_status();
  }

  Status flush_all() {
    Status first;
    for (dev::NpuId d : open_list_) {
      batches_[d]->listed = false;  // listed: made by coalesce
      Status s = flush_batch(d);
      if (!s.ok() && first.ok()) first = std::move(s);
    }
    open_list_.clear();
    return first;
  }

  // *issued: whether anything reached the driver (otherwise the call was refused).
  Status get_impl(GlobalAddr dst, GlobalAddr src, uint64_t bytes, double* end, bool* issued,
                  const char* what) {
    tick();
    ++stats_.gets;
    stats_.get_bytes += bytes;
    *end = clock_ns_;
    if (bytes == 0) return ok_status();
    MOE_TRY(split(dst, src, bytes, what));
    items_.clear();
    for (const Piece& p : pieces_) {
      MOE_TRY(flush_batch(p.src.npu));  // read what this endpoint put there
      items_.push_back(transfer_item(p, clock_ns_));
    }
    *issued = true;
    MOE_TRY(run_items());
    for (const FabricItem& it : items_) {
      *end = std::max(*end, it.end_ns);
      if (it.status == StatusCode::kOk) continue;
      ++stats_.errors;
      const dev::NpuId from = it.work.transfer.src.npu;
      if (it.status == StatusCode::kNpuLost) mark_lost_if(from, it.work.transfer.dst.npu);
      return make_error(it.status, "%s of %llu bytes by npu %u from npu %u failed: %s", what,
                        static_cast<unsigned long long>(bytes), npu_, from,
                        status_name(it.status));
    }
    return ok_status();
  }

  void mark_lost_if(dev::NpuId a, dev::NpuId b) {
    for (dev::NpuId n : {a, b}) {
      dev::NpuState st;
      if (n != dev::kInvalidId && transport_.driver().npu_state(n, &st).ok() && st.lost)
        lost_[n] = 1;
    }
  }

  // One 64-bit atomic, recorded in the signal table. start < 0: the endpoint's clock (and
  // the fence floor of the word's NPU).
  Status atomic(GlobalAddr word, dev::AtomicOp op, uint64_t operand, uint64_t compare_value,
                double start, const char* what, Outcome* out) {
    dev::DevicePtr at;
    MOE_TRY(check_word(word, what, &at));
    if (start < 0) start = std::max(clock_ns_, fence_floor_[at.npu]);
    FabricItem it;
    it.work.kind = dev::WorkKind::kAtomic;
    it.work.not_before = ModelTime{start};
    it.work.atomic.op = op;
    it.work.atomic.dst = at;
    it.work.atomic.operand = operand;
    it.work.atomic.compare = compare_value;
    it.work.atomic.plane = next_plane_;
    next_plane_ = (next_plane_ + 1) % cfg_.caps.num_planes;
    SignalTable& table = transport_.signals();
    const uint32_t slot = table.begin_update(word);
    items_.assign(1, it);
    Status s = run_items();
    const FabricItem& done = items_[0];
    const bool ok = s.ok() && done.status == StatusCode::kOk;
    uint64_t after = operand;
    bool applied = ok;
    if (op == dev::AtomicOp::kFetchAdd) after = done.atomic_old + operand;
    if (op == dev::AtomicOp::kCompareSwap) applied = ok && done.atomic_old == compare_value;
    table.end_update(slot, applied, after, done.effect_ns);
    MOE_TRY(s);
    out->end_ns = done.end_ns;
    out->effect_ns = done.effect_ns;
    out->old = done.atomic_old;
    if (done.status != StatusCode::kOk) {
      ++stats_.errors;
      if (done.status == StatusCode::kNpuLost) mark_lost_if(at.npu, npu_);
      return make_error(done.status, "%s on %s (npu %u) from npu %u failed: %s", what,
                        mem::to_string(word).c_str(), at.npu, npu_, status_name(done.status));
    }
    return ok_status();
  }

  // Updates a signal word after every earlier put of this endpoint to its NPU (and no
  // earlier than `after`, the data of a put_signal). *visible: when it took effect there.
  Status signal_at(GlobalAddr sig, uint64_t value, SignalOp op, double after, double* visible,
                   const char* what) {
    dev::DevicePtr at;
    MOE_TRY(check_word(sig, what, &at));
    if (op != SignalOp::kSet && op != SignalOp::kAdd)
      return make_error(StatusCode::kInvalidArgument, "%s: unknown signal op %u", what,
                        static_cast<unsigned>(op));
    MOE_TRY(flush_batch(at.npu));
    if (!pending_error_.ok()) {
      Status s = pending_error_;
      return s.with_context(strformat("%s not sent: an earlier put failed (see quiet)", what));
    }
    ++stats_.signals;
    const double start = std::max({clock_ns_, after, last_put_end_[at.npu], fence_floor_[at.npu]});
    Outcome o;
    MOE_TRY(atomic(sig, op == SignalOp::kSet ? dev::AtomicOp::kStore : dev::AtomicOp::kFetchAdd,
                   value, 0, start, what, &o));
    outstanding_end_ = std::max(outstanding_end_, o.end_ns);
    if (visible != nullptr) *visible = o.effect_ns;
    return ok_status();
  }

  Status member_of(Group& group, const char* what, UbGroup** g, uint32_t* rank) const {
    *g = dynamic_cast<UbGroup*>(&group);
    if (*g == nullptr)
      return make_error(StatusCode::kInvalidArgument, "%s: the group was not made by the ub "
                        "transport", what);
    const int r = (*g)->rank_of(npu_);
    if (r < 0)
      return make_error(StatusCode::kInvalidArgument, "%s: npu %u is not a member of the group",
                        what, npu_);
    *rank = static_cast<uint32_t>(r);
    return ok_status();
  }

  // Adds what changed since the last call to the process-wide counters.
  void publish() {
    namespace sc = stats_counters;
    const EndpointStats& n = stats_;
    EndpointStats& o = published_;
    auto add = [](stats::Counter& c, uint64_t now, uint64_t& before) {
      if (now != before) c.add(static_cast<int64_t>(now - before));
      before = now;
    };
    add(sc::kPuts, n.puts, o.puts);
    add(sc::kPutBytes, n.put_bytes, o.put_bytes);
    add(sc::kGets, n.gets, o.gets);
    add(sc::kAtomics, n.atomics, o.atomics);
    add(sc::kSignals, n.signals, o.signals);
    add(sc::kCoalescedPuts, n.coalesced_puts, o.coalesced_puts);
    add(sc::kFabricOps, n.fabric_ops, o.fabric_ops);
    add(sc::kBytesDelivered, n.bytes_delivered, o.bytes_delivered);
    add(sc::kPacketsLost, n.packets_lost, o.packets_lost);
    add(sc::kPacketsCorrupted, n.packets_corrupted, o.packets_corrupted);
    add(sc::kRetransmissions, n.retransmissions, o.retransmissions);
    add(sc::kRetransmittedPackets, n.retransmitted_packets, o.retransmitted_packets);
    add(sc::kFailovers, n.failovers, o.failovers);
    add(sc::kErrors, n.errors, o.errors);
  }

  UbTransport& transport_;
  mem::GlobalMemory& mem_;
  const UbConfig& cfg_;
  const dev::NpuId npu_;
  const Mode mode_;
  const Issuer issuer_;
  const int64_t wait_timeout_ns_;
  const double issue_ns_;
  ReliableQueue rq_;
  uint32_t max_batch_segments_ = 1;
  uint32_t next_plane_ = 0;

  double clock_ns_ = 0;
  double outstanding_end_ = 0;
  std::vector<double> last_put_end_;  // per NPU: latest modelled arrival of a put there
  std::vector<double> fence_floor_;   // per NPU: puts there start no earlier (fence)
  std::vector<uint8_t> touched_;      // per NPU: put to since the last fence
  std::vector<dev::NpuId> touched_list_;
  std::vector<uint8_t> lost_;         // per NPU: found lost
  std::vector<std::unique_ptr<Batch>> batches_;  // per destination NPU, made on first use
  std::vector<dev::NpuId> open_list_;
  Status pending_error_;

  std::vector<Piece> pieces_;
  std::vector<FabricItem> items_, batch_items_;
  std::vector<GlobalAddr> release_words_;   // barrier release (store_many)
  std::vector<dev::DevicePtr> store_at_;
  std::vector<uint32_t> store_slots_;
  EndpointStats stats_, published_;
};

}  // namespace

StatusOr<std::unique_ptr<Endpoint>> make_ub_endpoint(UbTransport& transport,
                                                     const EndpointConfig& config) {
  auto ep = std::make_unique<UbEndpoint>(transport, config);
  MOE_TRY(ep->init());
  return std::unique_ptr<Endpoint>(std::move(ep));
}

}  // namespace moe::ic
