// Fused MoE dispatch (see moe_dispatch.h for the protocol and its modelled time).
//
// Design notes:
//  - Everything a call can refuse is checked before the first fabric operation, so bad input
//    leaves the buffer untouched.
//  - One slot per (token, destination rank): a token whose top-k hits several experts of one
//    rank crosses the fabric once. A source's slots for one destination are packed as one
//    contiguous run in its send staging (in token order), so each (source, destination)
//    pair costs one fetch_add (the reservation), one put (the run) and one signal (the
//    flag, after the data). The run's staging position is also the combine-receive row of
//    each of its tokens at home, so combine needs no index exchange.
//  - Issue order: a min-heap over every (rank, context) by modelled clock, the reservation
//    and the put being separate events, so the driver sees each NPU's operations, and the
//    fabric sees arrivals, in modelled-time order (an NPU's fabric engine issues in order,
//    and its ports are exact for in-order traffic). A context's destinations are the rank's
//    rotated list (src + i) mod R, i = context, context + W, ..., so sources start on
//    different destinations instead of all hitting rank 0 first. Each put is flushed at
//    once (fence) rather than left in the transport's coalescing buffer until its signal.
//  - kPerSourceFlags: the flags go out after every put, per rank in estimated landing order
//    (LandingEstimator, issue_signals). kBarrier: no flags; each source's runs are spread
//    over its contexts (run j on context j mod W), the contexts quiet, every NPU enters the
//    buffer's barrier group (its die ranks meet first: the NPU enters at the latest of their
//    clocks), and each destination reads its slot counter, which then holds every
//    reservation made on it.
//  - Host work follows the traffic: only sources with tokens are routed and packed, the
//    send and receive tables are lists of the (source, destination) pairs that carry
//    tokens, and in kBarrier mode only ranks with slots read headers. What stays O(R) per
//    call is one pass over the ranks (inputs, counters, clocks, statistics).
//  - The receiver trusts nothing it reads: every header is checked against the epoch, the
//    run announced by the source's flag, and the rank's local experts; any mismatch is a
//    kInternal error naming the slot (the transport promised exactly-once delivery).
#include "interconnect/moe_dispatch.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>

#include "interconnect/moe_dispatch_internal.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

const SourceRun* RankReceive::run_from(uint32_t src) const {
  for (const SourceRun& r : runs)
    if (r.src_rank == src) return &r;
  return nullptr;
}

const DestRun* RankSend::run_to(uint32_t dst) const {
  auto it = std::lower_bound(dests.begin(), dests.end(), dst,
                             [](const DestRun& r, uint32_t d) { return r.dst_rank < d; });
  return it != dests.end() && it->dst_rank == dst ? &*it : nullptr;
}

double local_pass_ns(const MoeBuffer& buffer, double bytes) {
  const double gbps = buffer.topology().hbm.bandwidth_gbps / buffer.config().ranks_per_npu;
  return gbps > 0 ? bytes / gbps : 0.0;
}

Status DispatchEngine::usable(const MoeBuffer& b, const char* what) {
  if (b.failure_.ok()) return ok_status();
  Status s = b.failure_;
  return s.with_context(strformat("%s: the buffer failed earlier and is unusable", what));
}

Status DispatchEngine::check_handle(const MoeBuffer& b, const DispatchHandle& h, const char* what) {
  if (h.buffer_id != b.id())
    return make_error(StatusCode::kFailedPrecondition,
                      "%s: the handle comes from another buffer (buffer %llu, this is %llu)", what,
                      static_cast<unsigned long long>(h.buffer_id),
                      static_cast<unsigned long long>(b.id()));
  if (h.epoch != b.epoch_ || h.recv.size() != b.num_ranks() || h.send.size() != b.num_ranks())
    return make_error(StatusCode::kFailedPrecondition,
                      "%s: the handle is from dispatch %u but the buffer's latest is dispatch %u "
                      "(a later dispatch reused the receive buffers)",
                      what, h.epoch, b.epoch_);
  return ok_status();
}

namespace {

using Engine = DispatchEngine;

// The map resolved for one call: each rank's local experts and each replica's local index.
// Linear in the replicas (no per-rank search of the map).
struct ResolvedMap {
  std::vector<std::vector<LocalExpert>> locals;     // [rank]
  std::vector<std::vector<uint16_t>> routed_local;  // [expert][replica]: local index
  std::vector<std::vector<uint16_t>> shared_local;  // [shared][replica]: local index
};

Status resolve_map(const MoeBuffer& b, const ExpertMap& map, ResolvedMap* out) {
  const uint32_t R = b.num_ranks();
  MOE_TRY(map.validate());
  if (map.num_ranks() != R)
    return make_error(StatusCode::kInvalidArgument,
                      "moe_dispatch: the expert map is for %u ranks, the buffer has %u",
                      map.num_ranks(), R);
  if (map.num_shared() > b.config().max_shared_experts)
    return make_error(StatusCode::kInvalidArgument,
                      "moe_dispatch: the map has %u shared experts, the buffer was sized for %u "
                      "(MoeBufferConfig::max_shared_experts)",
                      map.num_shared(), b.config().max_shared_experts);
  out->locals.assign(R, {});
  // Local indexes: routed replicas by expert id, then shared ones by shared index (the
  // order of ExpertMap::local_experts).
  auto place = [&](uint32_t r, LocalExpert le, uint16_t* index) -> Status {
    std::vector<LocalExpert>& l = out->locals[r];
    if (l.size() >= 0xffff)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_dispatch: rank %u holds more than 65535 experts", r);
    *index = static_cast<uint16_t>(l.size());
    l.push_back(le);
    return ok_status();
  };
  out->routed_local.assign(map.num_experts(), {});
  for (uint32_t e = 0; e < map.num_experts(); ++e) {
    const std::vector<uint32_t>& reps = map.replicas(e);
    out->routed_local[e].assign(reps.size(), 0);
    for (size_t i = 0; i < reps.size(); ++i)
      MOE_TRY(place(reps[i], {false, e}, &out->routed_local[e][i]));
  }
  out->shared_local.assign(map.num_shared(), {});
  for (uint32_t j = 0; j < map.num_shared(); ++j) {
    const std::vector<uint32_t>& reps = map.shared_replicas(j);
    out->shared_local[j].assign(reps.size(), 0);
    for (size_t i = 0; i < reps.size(); ++i)
      MOE_TRY(place(reps[i], {true, j}, &out->shared_local[j][i]));
  }
  return ok_status();
}

Status check_inputs(const MoeBuffer& b, const ExpertMap& map, std::span<const DispatchInput> inputs,
                    uint32_t topk) {
  const MoeBufferConfig& c = b.config();
  const uint32_t R = b.num_ranks();
  if (inputs.size() != R)
    return make_error(StatusCode::kInvalidArgument,
                      "moe_dispatch: %zu inputs for a buffer of %u ranks (one per rank)",
                      inputs.size(), R);
  if (topk == 0 || topk > c.max_topk)
    return make_error(StatusCode::kInvalidArgument,
                      "moe_dispatch: topk %u out of range [1, %u] (MoeBufferConfig::max_topk)",
                      topk, c.max_topk);
  const int64_t E = map.num_experts();
  for (uint32_t s = 0; s < R; ++s) {
    const DispatchInput& in = inputs[s];
    if (in.num_tokens > 0 && !b.is_source_rank(s))
      return make_error(StatusCode::kInvalidArgument,
                        "moe_dispatch: rank %u has %u tokens but is not one of the buffer's "
                        "source ranks (MoeBufferConfig::source_ranks)",
                        s, in.num_tokens);
    if (in.num_tokens > c.max_tokens_per_rank)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_dispatch: rank %u has %u tokens; the buffer holds at most %u per "
                        "rank (MoeBufferConfig::max_tokens_per_rank)",
                        s, in.num_tokens, c.max_tokens_per_rank);
    const uint64_t routing = uint64_t{in.num_tokens} * topk;
    if (in.topk_ids.size() != routing || in.topk_weights.size() != routing)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_dispatch: rank %u: %u tokens x top-%u needs %llu ids and weights, "
                        "got %zu ids and %zu weights",
                        s, in.num_tokens, topk, static_cast<unsigned long long>(routing),
                        in.topk_ids.size(), in.topk_weights.size());
    const uint64_t elems = uint64_t{in.num_tokens} * c.hidden;
    if (b.mode() == Mode::kFunctional && in.tokens_bf16.size() != elems)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_dispatch: rank %u: %u tokens x hidden %u needs %llu BF16 values, "
                        "got %zu",
                        s, in.num_tokens, c.hidden, static_cast<unsigned long long>(elems),
                        in.tokens_bf16.size());
    for (uint32_t t = 0; t < in.num_tokens; ++t) {
      const int32_t* ids = in.topk_ids.data() + uint64_t{t} * topk;
      const float* w = in.topk_weights.data() + uint64_t{t} * topk;
      for (uint32_t k = 0; k < topk; ++k) {
        if (ids[k] == -1) continue;
        if (ids[k] < 0 || ids[k] >= E)
          return make_error(StatusCode::kInvalidArgument,
                            "moe_dispatch: rank %u token %u top-k position %u: expert %d out of "
                            "range [0, %lld) (or -1 for none)",
                            s, t, k, ids[k], static_cast<long long>(E));
        if (!std::isfinite(w[k]))
          return make_error(StatusCode::kInvalidArgument,
                            "moe_dispatch: rank %u token %u top-k position %u: weight %g is not "
                            "finite",
                            s, t, k, static_cast<double>(w[k]));
        for (uint32_t j = 0; j < k; ++j)
          if (ids[j] == ids[k])
            return make_error(StatusCode::kInvalidArgument,
                              "moe_dispatch: rank %u token %u: expert %d at top-k positions %u "
                              "and %u",
                              s, t, ids[k], j, k);
      }
    }
  }
  return ok_status();
}

struct Hit {
  uint32_t dst = 0;
  uint16_t local = 0;
  uint16_t topk_slot = 0;
  float weight = 0;
};

// One source's routing, packing and send bookkeeping. Its dense per-destination scratch
// (R entries) is allocated once per call and only the touched entries are reset, so a
// source costs what its tokens cost.
class SourcePacker {
 public:
  SourcePacker(MoeBuffer& b, const ResolvedMap& rm, const ExpertMap& map, uint32_t topk,
               uint32_t epoch)
      : b_(b), rm_(rm), map_(map), topk_(topk), epoch_(epoch), l_(b.layout()) {
    count_.assign(b.num_ranks(), 0);
    cursor_.assign(b.num_ranks(), 0);
  }

  // Routes and packs rank s's tokens; fills *send; timing mode: *headers gets the packed
  // headers (rows x header_bytes). Functional mode writes the staging in HBM.
  Status pack(uint32_t s, const DispatchInput& in, RankSend* send, std::vector<uint8_t>* headers) {
    const uint32_t T = in.num_tokens;
    resolve_shared(s);
    // Pass 1: hits and distinct destinations per token.
    hits_.clear();
    hit_off_.assign(1, 0);
    dsts_.clear();
    dst_off_.assign(1, 0);
    touched_.clear();
    send->num_tokens = T;
    send->dests.clear();
    for (uint32_t t = 0; t < T; ++t) {
      const int32_t* ids = in.topk_ids.data() + uint64_t{t} * topk_;
      const float* w = in.topk_weights.data() + uint64_t{t} * topk_;
      for (uint32_t k = 0; k < topk_; ++k) {
        if (ids[k] < 0) continue;
        const uint32_t e = static_cast<uint32_t>(ids[k]);
        const std::vector<uint32_t>& reps = map_.replicas(e);
        const size_t i = (uint64_t{s} + t) % reps.size();
        hits_.push_back({reps[i], rm_.routed_local[e][i], static_cast<uint16_t>(k), w[k]});
      }
      for (uint32_t j = 0; j < map_.num_shared(); ++j) {
        const Candidate& c = shared_[j][(uint64_t{s} + t) % shared_[j].size()];
        hits_.push_back({c.rank, c.local, static_cast<uint16_t>(topk_ + j), map_.shared_weight(j)});
      }
      hit_off_.push_back(static_cast<uint32_t>(hits_.size()));
      for (uint32_t h = hit_off_[t]; h < hit_off_[t + 1]; ++h) {
        const uint32_t d = hits_[h].dst;
        if (std::find(dsts_.begin() + dst_off_[t], dsts_.end(), d) != dsts_.end()) continue;
        dsts_.push_back(d);
        if (count_[d]++ == 0) touched_.push_back(d);
      }
      dst_off_.push_back(static_cast<uint32_t>(dsts_.size()));
    }
    // Runs in destination order: the send staging (and the combine-receive rows) hold them
    // in that order.
    std::sort(touched_.begin(), touched_.end());
    uint32_t rows = 0;
    for (uint32_t d : touched_) {
      send->dests.push_back({d, count_[d], rows});
      cursor_[d] = rows;
      rows += count_[d];
      count_[d] = 0;
    }
    send->num_rows = rows;
    MOE_ASSERT(rows <= l_.send_slots);
    // Pass 2: rows in token order per destination; headers and payloads.
    const bool functional = b_.mode() == Mode::kFunctional;
    const uint64_t hb = l_.header_bytes;
    const uint64_t stride = functional ? l_.slot_bytes : hb;
    std::vector<uint8_t>& out = functional ? staging_ : *headers;
    out.assign(uint64_t{rows} * stride, 0);
    send->token_offsets.assign(1, 0);
    send->token_rows.clear();
    const uint32_t H = b_.config().hidden;
    const bool int8 = b_.config().dispatch_format == TokenFormat::kInt8;
    if (functional && int8) quant_.resize(H);
    for (uint32_t t = 0; t < T; ++t) {
      float scale = 1.0f;
      const uint8_t* payload = nullptr;
      if (functional && dst_off_[t + 1] > dst_off_[t]) {
        const std::span<const uint16_t> x = in.tokens_bf16.subspan(uint64_t{t} * H, H);
        if (int8) {
          scale = quantize_int8_row(x, quant_);
          payload = reinterpret_cast<const uint8_t*>(quant_.data());
        } else {
          payload = reinterpret_cast<const uint8_t*>(x.data());
        }
      }
      for (uint32_t di = dst_off_[t]; di < dst_off_[t + 1]; ++di) {
        const uint32_t d = dsts_[di];
        const uint32_t row = cursor_[d]++;
        send->token_rows.push_back(row);
        uint8_t* at = out.data() + uint64_t{row} * stride;
        SlotHeader h;
        h.epoch = epoch_;
        h.src_rank = s;
        h.src_token = t;
        h.combine_row = row;
        h.scale = scale;
        h.magic = kSlotMagic;
        for (uint32_t x = hit_off_[t]; x < hit_off_[t + 1]; ++x) {
          const Hit& hit = hits_[x];
          if (hit.dst != d) continue;
          store_hit(at, h.num_hits++, hit.local, hit.topk_slot, hit.weight);
        }
        store_header(at, h);
        if (payload != nullptr)
          std::memcpy(at + hb, payload,
                      uint64_t{H} * token_element_bytes(b_.config().dispatch_format));
      }
      send->token_offsets.push_back(static_cast<uint32_t>(send->token_rows.size()));
    }
    if (functional && rows > 0)
      MOE_TRY(b_.memory().write(b_.send_slot(s, 0), staging_.data(), staging_.size()));
    return ok_status();
  }

 private:
  struct Candidate {
    uint32_t rank;
    uint16_t local;
  };

  // The shared-expert candidates of source s: the replicas of the nearest class (own rank,
  // own NPU, own node, anywhere).
  void resolve_shared(uint32_t s) {
    shared_.resize(map_.num_shared());
    for (uint32_t j = 0; j < map_.num_shared(); ++j) {
      const std::vector<uint32_t>& reps = map_.shared_replicas(j);
      auto same_class = [&](uint32_t r, int cls) {
        switch (cls) {
          case 0:
            return r == s;
          case 1:
            return b_.npu_of(r) == b_.npu_of(s);
          case 2:
            return b_.node_of(r) == b_.node_of(s);
          default:
            return true;
        }
      };
      shared_[j].clear();
      for (int cls = 0; cls < 4 && shared_[j].empty(); ++cls)
        for (size_t i = 0; i < reps.size(); ++i)
          if (same_class(reps[i], cls)) shared_[j].push_back({reps[i], rm_.shared_local[j][i]});
    }
  }

  MoeBuffer& b_;
  const ResolvedMap& rm_;
  const ExpertMap& map_;
  const uint32_t topk_;
  const uint32_t epoch_;
  const MoeBufferLayout& l_;
  std::vector<Hit> hits_;
  std::vector<uint32_t> hit_off_, dsts_, dst_off_, touched_;
  std::vector<uint32_t> count_, cursor_;  // per destination rank (scratch)
  std::vector<std::vector<Candidate>> shared_;
  std::vector<uint8_t> staging_;
  std::vector<int8_t> quant_;
};

// Builds rank d's receive layout from its `total` slot headers: the runs (one contiguous
// run per source, checked), the slot table and the rows per local expert. `locals` is moved
// into the layout. `seen` is per-source scratch (R entries, all zero; left zero).
Status build_receive(const MoeBuffer& b, uint32_t d, uint32_t epoch, uint32_t topk,
                     uint32_t num_shared, std::vector<LocalExpert>&& locals, uint64_t total,
                     const uint8_t* headers, std::vector<uint8_t>* seen, RankReceive* out) {
  const uint32_t R = b.num_ranks();
  const MoeBufferLayout& l = b.layout();
  out->num_slots = static_cast<uint32_t>(total);
  out->slots.resize(total);
  out->runs.clear();
  out->experts = std::move(locals);
  const std::vector<LocalExpert>& le = out->experts;
  std::vector<uint32_t> per_expert(le.size() + 1, 0);
  auto bad = [&](uint64_t slot, const char* what, uint64_t got, uint64_t want) {
    return make_error(StatusCode::kInternal,
                      "moe_dispatch: rank %u slot %llu: %s is %llu, expected %llu", d,
                      static_cast<unsigned long long>(slot), what,
                      static_cast<unsigned long long>(got), static_cast<unsigned long long>(want));
  };
  // Clears `seen` on every path out.
  struct Reset {
    std::vector<uint8_t>& seen;
    const std::vector<SourceRun>& runs;
    ~Reset() {
      for (const SourceRun& r : runs) seen[r.src_rank] = 0;
    }
  } reset{*seen, out->runs};
  SlotHeader prev;
  for (uint64_t i = 0; i < total; ++i) {
    const uint8_t* at = headers + i * l.header_bytes;
    const SlotHeader h = load_header(at);
    if (h.magic != kSlotMagic) return bad(i, "the header mark", h.magic, kSlotMagic);
    if (h.epoch != epoch) return bad(i, "the epoch", h.epoch, epoch);
    if (h.src_rank >= R) return bad(i, "the source rank", h.src_rank, R - 1);
    if (h.num_hits == 0 || h.num_hits > l.max_hits_per_token)
      return bad(i, "the hit count", h.num_hits, l.max_hits_per_token);
    if (out->runs.empty() || h.src_rank != out->runs.back().src_rank) {
      if ((*seen)[h.src_rank] != 0)
        return make_error(StatusCode::kInternal,
                          "moe_dispatch: rank %u: source %u has two runs of slots (at %u and "
                          "%llu): a token was misplaced",
                          d, h.src_rank, out->run_from(h.src_rank)->first_slot,
                          static_cast<unsigned long long>(i));
      (*seen)[h.src_rank] = 1;
      out->runs.push_back({h.src_rank, static_cast<uint32_t>(i), 0, h.combine_row});
    } else {
      if (h.src_token <= prev.src_token)
        return bad(i, "the source token (tokens of a run ascend)", h.src_token,
                   uint64_t{prev.src_token} + 1);
      if (h.combine_row != prev.combine_row + 1)
        return bad(i, "the combine row", h.combine_row, uint64_t{prev.combine_row} + 1);
    }
    if (h.src_token >= l.max_tokens_per_rank)
      return bad(i, "the source token", h.src_token, l.max_tokens_per_rank - 1);
    ++out->runs.back().num_slots;
    prev = h;
    out->slots[i] = {h.src_rank, h.src_token, h.scale};
    for (uint32_t x = 0; x < h.num_hits; ++x) {
      uint16_t local = 0, kslot = 0;
      float w = 0;
      load_hit(at, x, &local, &kslot, &w);
      if (local >= le.size()) return bad(i, "a hit's local expert", local, le.size() - 1);
      if (kslot >= topk + num_shared)
        return bad(i, "a hit's top-k position", kslot, topk + num_shared - 1);
      if (le[local].shared != (kslot >= topk))
        return bad(i, "a hit's kind (shared)", kslot >= topk, le[local].shared);
      ++per_expert[local + 1];
    }
  }
  for (size_t j = 1; j < per_expert.size(); ++j) per_expert[j] += per_expert[j - 1];
  out->expert_offsets = per_expert;
  out->rows.resize(per_expert.back());
  std::vector<uint32_t> fill(per_expert.begin(), per_expert.end() - 1);
  for (uint64_t i = 0; i < total; ++i) {
    const uint8_t* at = headers + i * l.header_bytes;
    const SlotHeader h = load_header(at);
    for (uint32_t x = 0; x < h.num_hits; ++x) {
      uint16_t local = 0, kslot = 0;
      float w = 0;
      load_hit(at, x, &local, &kslot, &w);
      out->rows[fill[local]++] = {static_cast<uint32_t>(i), kslot, w};
    }
  }
  return ok_status();
}

// Every run on rank d is where its source reserved and staged it (host-side bookkeeping of
// both ends agrees: a misdelivery or a stale header would show here).
Status check_runs_against_sources(const DispatchHandle& h, uint32_t d) {
  for (const SourceRun& run : h.recv[d].runs) {
    const DestRun* sent = h.send[run.src_rank].run_to(d);
    if (sent == nullptr || sent->num_slots != run.num_slots || sent->row_base != run.home_row)
      return make_error(StatusCode::kInternal,
                        "moe_dispatch: rank %u: the run of rank %u holds %u slots for combine "
                        "row %u; the source sent %u slots from row %u",
                        d, run.src_rank, run.num_slots, run.home_row,
                        sent != nullptr ? sent->num_slots : 0,
                        sent != nullptr ? sent->row_base : 0);
  }
  return ok_status();
}

struct ContextTurn {
  double clock_ns;
  uint32_t rank;
  uint32_t context;
  uint32_t next;  // index into the rank's rotated destination list
  // The reservation of destination `next` came back with slot `reserved`: the put is the
  // context's next operation (an event of its own, so that operations of other contexts
  // issued earlier in modelled time reach the driver first).
  bool put_due;
  uint64_t reserved;
  bool operator>(const ContextTurn& o) const {
    if (clock_ns != o.clock_ns) return clock_ns > o.clock_ns;
    if (rank != o.rank) return rank > o.rank;
    return context > o.context;
  }
};

}  // namespace

LandingEstimator::LandingEstimator(const MoeBuffer& b) : b_(b) {
  const dev::Topology& topo = b.topology();
  egress_free_.assign(topo.num_npus(), 0.0);
  ingress_free_.assign(topo.num_npus(), 0.0);
  gbps_.resize(topo.num_npus());
  for (dev::NpuId n = 0; n < topo.num_npus(); ++n) gbps_[n] = topo.npu_fabric_bandwidth_gbps(n);
  hbm_gbps_ = topo.hbm.bandwidth_gbps;
}

double LandingEstimator::on_put(uint32_t src, uint32_t dst, double t_ns, uint64_t bytes) {
  const dev::NpuId from = b_.npu_of(src), to = b_.npu_of(dst);
  if (from == to) return t_ns + (hbm_gbps_ > 0 ? double(bytes) / hbm_gbps_ : 0.0);
  const double out_ns = gbps_[from] > 0 ? double(bytes) / gbps_[from] : 0.0;
  const double in_ns = gbps_[to] > 0 ? double(bytes) / gbps_[to] : 0.0;
  const double start = std::max(t_ns, egress_free_[from]);
  egress_free_[from] = start + out_ns;
  ingress_free_[to] = std::max(ingress_free_[to], start) + in_ns;
  return std::max(egress_free_[from], ingress_free_[to]);
}

Status issue_signals(MoeBuffer& b, std::vector<PendingSignal>& pending,
                     const std::function<GlobalAddr(const PendingSignal&)>& flag) {
  std::stable_sort(pending.begin(), pending.end(),
                   [](const PendingSignal& x, const PendingSignal& y) {
                     if (x.rank != y.rank) return x.rank < y.rank;
                     return x.order_ns < y.order_ns;
                   });
  for (const PendingSignal& p : pending) {
    Status s = b.endpoint(p.rank, p.context).signal(flag(p), p.value, SignalOp::kSet);
    if (!s.ok()) {
      s.with_context(strformat("rank %u signalling rank %u", p.rank, p.dst));
      return DispatchEngine::fail(b, std::move(s));
    }
  }
  return ok_status();
}

namespace {

// kBarrier with source ranks (MoeBufferConfig::source_ranks): the contexts that issued quiet,
// the source ranks' NPUs meet in the barrier group (over them only), then context 0 of the
// first source rank stores the epoch into every rank's release word (its dispatch flag of
// source 0, unused in barrier mode) in one submission, and every rank waits for it. S arrivals
// and R release signals, where the full barrier takes R of each.
Status enter_source_barrier(MoeBuffer& b, const std::vector<uint32_t>& sources,
                            const std::vector<std::vector<uint32_t>>& order, uint32_t epoch) {
  const uint32_t R = b.num_ranks();
  const uint32_t W = b.issue_contexts();
  const uint32_t per_npu = b.config().ranks_per_npu;
  Group* group = b.barrier_group();
  MOE_ASSERT(group != nullptr);
  std::vector<uint8_t> has_tokens(R, 0);
  for (uint32_t s : sources) {
    has_tokens[s] = 1;
    for (uint32_t w = 0; w < W && w < order[s].size(); ++w) {
      Status q = b.endpoint(s, w).quiet();
      if (!q.ok()) return DispatchEngine::fail(b, q.with_context(strformat("rank %u", s)));
    }
  }
  // The source NPUs, each entering through context 0 of its first rank at its ranks' latest.
  std::vector<uint32_t> entry;  // first rank of each source NPU
  for (uint32_t r : b.config().source_ranks)
    if (entry.empty() || b.npu_of(entry.back()) != b.npu_of(r)) entry.push_back(r / per_npu * per_npu);
  for (uint32_t first : entry) {
    Endpoint& ep = b.endpoint(first, 0);
    for (uint32_t k = 0; k < per_npu; ++k) {
      const uint32_t r = first + k;
      ep.advance_to(b.endpoint(r, 0).now());
      if (has_tokens[r])
        for (uint32_t w = 1; w < W && w < order[r].size(); ++w) ep.advance_to(b.endpoint(r, w).now());
    }
    Status a = ep.barrier_arrive(*group);
    if (!a.ok())
      return DispatchEngine::fail(b, a.with_context(strformat("rank %u entering the barrier", first)));
  }
  for (uint32_t first : entry) {
    Status w = b.endpoint(first, 0).barrier_wait(*group, b.config().wait_timeout_wall_ns);
    if (!w.ok())
      return DispatchEngine::fail(b, w.with_context(strformat("rank %u leaving the barrier", first)));
  }
  std::vector<GlobalAddr> release(R);
  for (uint32_t r = 0; r < R; ++r) release[r] = b.dispatch_flag(r, 0);
  Endpoint& root = b.endpoint(entry.front(), 0);
  Status rs = root.signal_many(release, epoch);
  if (!rs.ok()) return DispatchEngine::fail(b, rs.with_context("releasing the ranks"));
  for (uint32_t r = 0; r < R; ++r) {
    Status w = b.endpoint(r, 0).wait_until(release[r], Cmp::kGe, epoch, nullptr,
                                           b.config().wait_timeout_wall_ns);
    if (!w.ok()) return DispatchEngine::fail(b, w.with_context(strformat("rank %u waiting for the release", r)));
  }
  for (uint32_t s : sources)
    for (uint32_t w = 1; w < W && w < order[s].size(); ++w)
      b.endpoint(s, 0).advance_to(b.endpoint(s, w).now());
  return ok_status();
}

// kBarrier completion, after the sources issued their runs: every context of every source
// quiets (its puts are visible; its clock moves to their completion); each NPU enters the
// barrier group through context 0 of its first rank, at the latest clock of its ranks; when
// every NPU has entered, context 0 of every rank leaves at the release. Failures are
// recorded in the buffer.
Status enter_barrier(MoeBuffer& b, const std::vector<uint32_t>& sources,
                     const std::vector<std::vector<uint32_t>>& order) {
  const uint32_t R = b.num_ranks();
  const uint32_t W = b.issue_contexts();
  const uint32_t per_npu = b.config().ranks_per_npu;
  const uint32_t npus = R / per_npu;
  Group* group = b.barrier_group();
  MOE_ASSERT(group != nullptr);
  std::vector<uint8_t> is_source(R, 0);
  for (uint32_t s : sources) {
    is_source[s] = 1;
    for (uint32_t w = 0; w < W && w < order[s].size(); ++w) {  // the contexts that issued
      Status q = b.endpoint(s, w).quiet();
      if (!q.ok()) return DispatchEngine::fail(b, q.with_context(strformat("rank %u", s)));
    }
  }
  for (uint32_t i = 0; i < npus; ++i) {
    Endpoint& ep = b.endpoint(i * per_npu, 0);
    for (uint32_t k = 0; k < per_npu; ++k) {
      const uint32_t r = i * per_npu + k;
      ep.advance_to(b.endpoint(r, 0).now());
      if (is_source[r]) {
        for (uint32_t w = 1; w < W && w < order[r].size(); ++w)
          ep.advance_to(b.endpoint(r, w).now());
      }
    }
    Status a = ep.barrier_arrive(*group);
    if (!a.ok())
      return DispatchEngine::fail(b, a.with_context(strformat("rank %u entering the barrier",
                                                               i * per_npu)));
  }
  for (uint32_t i = 0; i < npus; ++i) {
    Endpoint& ep = b.endpoint(i * per_npu, 0);
    Status w = ep.barrier_wait(*group, b.config().wait_timeout_wall_ns);
    if (!w.ok())
      return DispatchEngine::fail(b, w.with_context(strformat("rank %u leaving the barrier",
                                                               i * per_npu)));
    for (uint32_t k = 1; k < per_npu; ++k) b.endpoint(i * per_npu + k, 0).advance_to(ep.now());
  }
  // Context 0 holds each source's latest clock (MoeBuffer::group_now reads context 0).
  for (uint32_t s : sources) {
    for (uint32_t w = 1; w < W && w < order[s].size(); ++w)
      b.endpoint(s, 0).advance_to(b.endpoint(s, w).now());
  }
  return ok_status();
}

StatusOr<DispatchHandle> dispatch_impl(MoeBuffer& b, const ExpertMap& map,
                                       std::span<const DispatchInput> inputs, uint32_t topk) {
  const int64_t wall0 = wall_now_ns();
  MOE_TRY(Engine::usable(b, "moe_dispatch"));
  MOE_TRY(check_inputs(b, map, inputs, topk));
  ResolvedMap rm;
  MOE_TRY(resolve_map(b, map, &rm));

  const uint32_t R = b.num_ranks();
  const uint32_t W = b.issue_contexts();
  const MoeBufferLayout& l = b.layout();
  const bool functional = b.mode() == Mode::kFunctional;
  const bool barrier = b.completion() == DispatchCompletion::kBarrier;
  const uint32_t epoch = ++Engine::epoch(b);
  auto failed = [&](Status s) { return Engine::fail(b, std::move(s)); };

  DispatchHandle handle;
  handle.buffer_id = b.id();
  handle.epoch = epoch;
  handle.topk = topk;
  handle.num_shared = map.num_shared();
  for (uint32_t j = 0; j < map.num_shared(); ++j)
    handle.shared_weights.push_back(map.shared_weight(j));
  handle.recv.resize(R);
  handle.send.resize(R);
  PhaseStats& st = handle.stats;
  st.rank_end_ns.assign(R, 0);
  st.bytes_sent.assign(R, 0);
  st.bytes_received.assign(R, 0);
  st.fabric_bytes_sent.assign(R, 0);
  st.fabric_bytes_received.assign(R, 0);

  // Every rank starts together. kBarrier: a rank without tokens only enters the barrier
  // and reads its counter, both through context 0; a source's contexts all start at t0.
  const ModelTime t0 = b.group_now();
  st.start_ns = t0.ns;
  std::vector<uint32_t> sources;  // ranks with tokens
  for (uint32_t r = 0; r < R; ++r) {
    if (inputs[r].num_tokens > 0) sources.push_back(r);
    if (barrier && inputs[r].num_tokens == 0)
      b.endpoint(r, 0).advance_to(t0);
    else
      b.advance_rank(r, t0);
    handle.send[r].token_offsets.assign(1, 0);
  }

  // 1-2. Route and pack every source that has tokens.
  std::vector<std::vector<uint8_t>> send_headers(functional ? 0 : R);
  auto& shadow = Engine::shadow_headers(b);
  for (auto& sh : shadow) sh.clear();
  {
    SourcePacker packer(b, rm, map, topk, epoch);
    const double read_bytes_per_token = double(b.config().hidden) * 2;
    for (uint32_t s : sources) {
      Status ps =
          packer.pack(s, inputs[s], &handle.send[s], functional ? nullptr : &send_headers[s]);
      if (!ps.ok()) return failed(std::move(ps));
      const double bytes = read_bytes_per_token * inputs[s].num_tokens +
                           double(handle.send[s].num_rows) * double(l.slot_bytes);
      b.advance_rank(s, t0 + ModelTime{local_pass_ns(b, bytes)});
    }
  }

  // 3a. Reserve and put, in modelled-time order over every issuing context.
  //     kPerSourceFlags: each source walks every destination (rotated), and a destination
  //     that gets nothing gets its flag at once (count 0). kBarrier: each source walks only
  //     its runs (rotated order), run j on context j mod W.
  std::vector<std::vector<uint32_t>> order(barrier ? R : 0);  // [source]: indexes of dests
  std::priority_queue<ContextTurn, std::vector<ContextTurn>, std::greater<>> turns;
  if (barrier) {
    for (uint32_t s : sources) {
      const std::vector<DestRun>& dests = handle.send[s].dests;
      std::vector<uint32_t>& o = order[s];
      o.resize(dests.size());
      for (uint32_t i = 0; i < o.size(); ++i) o[i] = i;
      std::sort(o.begin(), o.end(), [&](uint32_t x, uint32_t y) {
        return (dests[x].dst_rank + R - s) % R < (dests[y].dst_rank + R - s) % R;
      });
      for (uint32_t w = 0; w < W && w < o.size(); ++w)
        turns.push({b.endpoint(s, w).now().ns, s, w, w, false, 0});
    }
  } else {
    for (uint32_t s = 0; s < R; ++s)
      for (uint32_t w = 0; w < W && w < R; ++w)
        turns.push({b.endpoint(s, w).now().ns, s, w, w, false, 0});
  }
  std::vector<PendingSignal> pending;
  LandingEstimator landing(b);
  while (!turns.empty()) {
    ContextTurn turn = turns.top();
    turns.pop();
    const uint32_t s = turn.rank;
    const RankSend& send = handle.send[s];
    uint32_t d = 0, n = 0, row_base = 0;
    if (barrier) {
      const DestRun& run = send.dests[order[s][turn.next]];
      d = run.dst_rank;
      n = run.num_slots;
      row_base = run.row_base;
    } else {
      d = (s + turn.next) % R;
      if (const DestRun* run = send.run_to(d); run != nullptr) {
        n = run->num_slots;
        row_base = run->row_base;
      }
    }
    Endpoint& ep = b.endpoint(s, turn.context);
    const uint64_t value = (uint64_t{epoch} << 32) | n;
    if (n == 0) {
      Status sig = ep.signal(b.dispatch_flag(d, s), value, SignalOp::kSet);
      if (!sig.ok())
        return failed(sig.with_context(strformat("moe_dispatch: rank %u to %u", s, d)));
    } else if (!turn.put_due) {
      uint64_t old = 0;
      Status fa = ep.fetch_add(b.slot_counter(d), n, &old);
      if (!fa.ok())
        return failed(
            fa.with_context(strformat("moe_dispatch: rank %u reserving %u slots on %u", s, n, d)));
      if (old + n > l.recv_slots)
        return failed(make_error(StatusCode::kInternal,
                                 "moe_dispatch: rank %u reserved slots %llu..%llu on rank %u, "
                                 "beyond its %llu slots (counter not reset?)",
                                 s, static_cast<unsigned long long>(old),
                                 static_cast<unsigned long long>(old + n), d,
                                 static_cast<unsigned long long>(l.recv_slots)));
      turn.put_due = true;
      turn.reserved = old;
      turn.clock_ns = ep.now().ns;
      turns.push(turn);
      continue;
    } else {
      const uint64_t old = turn.reserved;
      const uint64_t bytes = uint64_t{n} * l.slot_bytes;
      if (!barrier)
        pending.push_back({landing.on_put(s, d, ep.now().ns, bytes), s, turn.context, d, value});
      Status ps = ep.put(b.recv_slot(d, old), b.send_slot(s, row_base), bytes);
      // Send it now: a small run would otherwise wait in the transport's coalescing buffer
      // until its signal (or the quiet), and go out behind the signals of earlier runs
      // (fence flushes without moving the clock; this endpoint puts to each destination once).
      if (ps.ok()) ps = ep.fence();
      if (!ps.ok()) return failed(ps.with_context(strformat("moe_dispatch: rank %u to %u", s, d)));
      if (!functional) {
        std::vector<uint8_t>& sh = shadow[d];
        const uint64_t end = (old + n) * l.header_bytes;
        if (sh.size() < end) sh.resize(end);
        std::memcpy(sh.data() + old * l.header_bytes,
                    send_headers[s].data() + uint64_t{row_base} * l.header_bytes,
                    uint64_t{n} * l.header_bytes);
      }
      st.bytes_sent[s] += bytes;
      st.bytes_received[d] += bytes;
      if (b.npu_of(s) != b.npu_of(d)) {
        st.fabric_bytes_sent[s] += bytes;
        st.fabric_bytes_received[d] += bytes;
      }
    }
    turn.put_due = false;
    turn.next += W;
    if (turn.next < (barrier ? order[s].size() : R)) {
      turn.clock_ns = ep.now().ns;
      turns.push(turn);
    }
  }
  if (barrier) {
    // 3b. Every source's puts are visible (quiet), then the group barrier: once it
    //     returns, every reservation and every run on every rank is in place.
    MOE_TRY((b.has_source_ranks() ? enter_source_barrier(b, sources, order, epoch)
                                   : enter_barrier(b, sources, order))
                .with_context("moe_dispatch"));
  } else {
    // 3b. The flags, each after its run's data (the transport orders a signal after the
    //     endpoint's earlier puts to that NPU), in the order the runs went out.
    MOE_TRY(issue_signals(b, pending, [&](const PendingSignal& p) {
              return b.dispatch_flag(p.dst, p.rank);
            }).with_context("moe_dispatch"));
    for (uint32_t s = 0; s < R; ++s)
      for (uint32_t w = 0; w < W; ++w) {
        Status f = b.endpoint(s, w).fence();  // delivery errors, without moving the clock
        if (!f.ok()) return failed(f.with_context(strformat("moe_dispatch: rank %u", s)));
      }
  }

  // 4. Every destination learns its slot count (from its flags, or from its counter after
  //    the barrier), checks its slots and builds its layout.
  std::vector<uint32_t> counts(barrier ? 0 : R);
  std::vector<uint8_t> headers;
  std::vector<uint8_t> seen(R, 0);
  for (uint32_t d = 0; d < R; ++d) {
    Endpoint& ep = b.endpoint(d, 0);
    uint64_t total = 0;
    if (barrier) {
      // A local read of the counter word (every fetch_add on it completed before the
      // barrier).
      Status rs = b.memory().read(b.slot_counter(d), &total, sizeof(total));
      if (!rs.ok()) return failed(rs.with_context(strformat("moe_dispatch: rank %u", d)));
    } else {
      for (uint32_t s = 0; s < R; ++s) {
        uint64_t seen_value = 0;
        Status ws =
            ep.wait_until(b.dispatch_flag(d, s), Cmp::kGe, uint64_t{epoch} << 32, &seen_value);
        if (!ws.ok())
          return failed(
              ws.with_context(strformat("moe_dispatch: rank %u waiting for rank %u", d, s)));
        if ((seen_value >> 32) != epoch)
          return failed(make_error(StatusCode::kInternal,
                                   "moe_dispatch: rank %u: the flag of rank %u holds epoch %llu, "
                                   "expected %u",
                                   d, s, static_cast<unsigned long long>(seen_value >> 32), epoch));
        counts[s] = static_cast<uint32_t>(seen_value & 0xffffffffu);
        total += counts[s];
      }
    }
    if (total > l.recv_slots)
      return failed(make_error(StatusCode::kInternal,
                               "moe_dispatch: rank %u: %s %llu tokens, over its %llu slots", d,
                               barrier ? "its counter holds" : "flags announce",
                               static_cast<unsigned long long>(total),
                               static_cast<unsigned long long>(l.recv_slots)));
    if (barrier && total == 0) {
      // Nothing arrived: an empty layout, and the counter is already zero.
      RankReceive& rr = handle.recv[d];
      rr.expert_offsets.assign(rm.locals[d].size() + 1, 0);
      rr.experts = std::move(rm.locals[d]);
      st.rank_end_ns[d] = ep.now().ns;
      continue;
    }
    const uint8_t* hdr = nullptr;
    if (functional) {
      headers.resize(total * l.header_bytes);
      for (uint64_t i = 0; i < total; ++i) {
        Status rs =
            b.memory().read(b.recv_slot(d, i), headers.data() + i * l.header_bytes, l.header_bytes);
        if (!rs.ok()) return failed(std::move(rs));
      }
      hdr = headers.data();
    } else {
      if (shadow[d].size() < total * l.header_bytes)
        return failed(make_error(StatusCode::kInternal,
                                 "moe_dispatch: rank %u: %llu tokens announced, %zu headers "
                                 "recorded",
                                 d, static_cast<unsigned long long>(total),
                                 shadow[d].size() / l.header_bytes));
      hdr = shadow[d].data();
    }
    Status bs = build_receive(b, d, epoch, topk, map.num_shared(), std::move(rm.locals[d]), total,
                              hdr, &seen, &handle.recv[d]);
    if (!bs.ok()) return failed(std::move(bs));
    if (!barrier) {
      // Each source's flag announced exactly its run (the runs cover `total`, the sum of
      // the announcements, so no announced run is missing either).
      for (const SourceRun& run : handle.recv[d].runs)
        if (run.num_slots != counts[run.src_rank])
          return failed(make_error(StatusCode::kInternal,
                                   "moe_dispatch: rank %u: source %u announced %u tokens but %u "
                                   "slots carry its header",
                                   d, run.src_rank, counts[run.src_rank], run.num_slots));
    }
    Status cs = check_runs_against_sources(handle, d);
    if (!cs.ok()) return failed(std::move(cs));
    // The slots are consumed: the counter starts from zero for the next dispatch.
    Status rs = ep.signal(b.slot_counter(d), 0, SignalOp::kSet);
    if (!rs.ok())
      return failed(rs.with_context(strformat("moe_dispatch: rank %u resetting its counter", d)));
    if (barrier) {
      st.rank_end_ns[d] = ep.now().ns;
    } else {
      const ModelTime end = b.rank_now(d);
      b.advance_rank(d, end);
      st.rank_end_ns[d] = end.ns;
    }
  }
  double last = t0.ns;
  for (double e : st.rank_end_ns) last = std::max(last, e);
  st.latency_ns = last - t0.ns;
  st.wall_ns = wall_now_ns() - wall0;
  return handle;
}

Status payload_to_floats(const MoeBuffer& b, const uint8_t* payload, float scale,
                         std::span<float> out) {
  const uint32_t H = b.config().hidden;
  if (b.config().dispatch_format == TokenFormat::kInt8) {
    dequantize_int8_row(std::span<const int8_t>(reinterpret_cast<const int8_t*>(payload), H), scale,
                        out);
  } else {
    for (uint32_t h = 0; h < H; ++h) {
      uint16_t v;
      std::memcpy(&v, payload + 2ull * h, 2);
      out[h] = bf16_to_float(v);
    }
  }
  return ok_status();
}

Status check_read(const MoeBuffer& b, const DispatchHandle& handle, uint32_t rank,
                  const char* what) {
  MOE_TRY(Engine::usable(b, what));
  MOE_TRY(Engine::check_handle(b, handle, what));
  if (b.mode() != Mode::kFunctional)
    return make_error(StatusCode::kFailedPrecondition,
                      "%s: a timing-mode buffer holds no token data", what);
  if (rank >= b.num_ranks())
    return make_error(StatusCode::kInvalidArgument, "%s: rank %u out of range (%u ranks)", what,
                      rank, b.num_ranks());
  return ok_status();
}

}  // namespace

StatusOr<DispatchHandle> moe_dispatch(MoeBuffer& buffer, const ExpertMap& map,
                                      std::span<const DispatchInput> inputs, uint32_t topk) {
  return dispatch_impl(buffer, map, inputs, topk);
}

Status read_received_token(const MoeBuffer& buffer, const DispatchHandle& handle, uint32_t rank,
                           uint32_t slot, std::span<float> out) {
  MOE_TRY(check_read(buffer, handle, rank, "read_received_token"));
  const RankReceive& rr = handle.recv[rank];
  if (slot >= rr.num_slots)
    return make_error(StatusCode::kInvalidArgument,
                      "read_received_token: rank %u slot %u out of range (%u received)", rank, slot,
                      rr.num_slots);
  if (out.size() != buffer.config().hidden)
    return make_error(StatusCode::kInvalidArgument,
                      "read_received_token: output holds %zu floats, hidden is %u", out.size(),
                      buffer.config().hidden);
  const MoeBufferLayout& l = buffer.layout();
  std::vector<uint8_t> payload(l.payload_bytes);
  MOE_TRY(buffer.memory().read(buffer.recv_slot(rank, slot) + l.header_bytes, payload.data(),
                               payload.size()));
  return payload_to_floats(buffer, payload.data(), rr.slots[slot].scale, out);
}

Status read_expert_rows(const MoeBuffer& buffer, const DispatchHandle& handle, uint32_t rank,
                        uint32_t expert, std::vector<float>* out) {
  MOE_TRY(check_read(buffer, handle, rank, "read_expert_rows"));
  const RankReceive& rr = handle.recv[rank];
  if (expert >= rr.experts.size())
    return make_error(StatusCode::kInvalidArgument,
                      "read_expert_rows: rank %u has %zu local experts; %u asked", rank,
                      rr.experts.size(), expert);
  const uint32_t H = buffer.config().hidden;
  const uint32_t first = rr.expert_offsets[expert], last = rr.expert_offsets[expert + 1];
  out->assign(uint64_t{last - first} * H, 0.0f);
  const MoeBufferLayout& l = buffer.layout();
  std::vector<uint8_t> payload(l.payload_bytes);
  for (uint32_t i = first; i < last; ++i) {
    const uint32_t slot = rr.rows[i].slot;
    MOE_TRY(buffer.memory().read(buffer.recv_slot(rank, slot) + l.header_bytes, payload.data(),
                                 payload.size()));
    MOE_TRY(payload_to_floats(buffer, payload.data(), rr.slots[slot].scale,
                              std::span<float>(out->data() + uint64_t{i - first} * H, H)));
  }
  return ok_status();
}

}  // namespace moe::ic
