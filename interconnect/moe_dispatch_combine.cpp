// Fused MoE combine (see moe_dispatch.h): the reverse of dispatch, driven by its handle.
//
// Design notes:
//  - An expert rank reduces locally first: every row (token, expert) of a slot is weighted
//    and summed in FP32 into one partial per slot, so a token returns once per rank it
//    visited, not once per expert (the same saving dispatch makes on the way out).
//  - A source's slots on a rank are one contiguous run, and the source placed its rows of
//    the run contiguously at home at dispatch (the run's staging position, carried in each
//    slot header as combine_row), so each (expert rank, home) pair costs one put and one
//    signal; no atomics, no index exchange.
//  - The home sums a token's partials in the order of the token's destinations (the order
//    of its top-k, then its shared experts): a fixed order, so results are bit-identical
//    from run to run whatever the fabric did.
//  - Work follows the traffic: only ranks that received slots reduce and put, only homes
//    with tokens wait and sum, and only (expert rank, home) pairs that carried tokens are
//    signalled; ranks with nothing to do are not touched (their clocks stay behind the
//    common start, which the next call's start covers).
//  - Combine flags carry a sequence number that grows with every combine of the buffer, so a
//    handle can be combined more than once (until the next dispatch).
#include <algorithm>
#include <cmath>

#include "interconnect/moe_dispatch.h"
#include "interconnect/moe_dispatch_internal.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/base/strformat.h"

namespace moe::ic {
namespace {

using Engine = DispatchEngine;

void store_row(TokenFormat format, const float* acc, uint32_t hidden, uint8_t* out) {
  if (format == TokenFormat::kFloat32) {
    std::memcpy(out, acc, uint64_t{hidden} * 4);
    return;
  }
  for (uint32_t h = 0; h < hidden; ++h) {
    const uint16_t v = float_to_bf16(acc[h]);
    std::memcpy(out + 2ull * h, &v, 2);
  }
}

void add_row(TokenFormat format, const uint8_t* row, uint32_t hidden, float* acc) {
  if (format == TokenFormat::kFloat32) {
    for (uint32_t h = 0; h < hidden; ++h) {
      float v;
      std::memcpy(&v, row + 4ull * h, 4);
      acc[h] += v;
    }
    return;
  }
  for (uint32_t h = 0; h < hidden; ++h) {
    uint16_t v;
    std::memcpy(&v, row + 2ull * h, 2);
    acc[h] += bf16_to_float(v);
  }
}

Status check_combine(const MoeBuffer& b, const DispatchHandle& handle,
                     std::span<const std::span<const float>> expert_out,
                     std::span<const std::span<float>> out) {
  MOE_TRY(Engine::usable(b, "moe_combine"));
  MOE_TRY(Engine::check_handle(b, handle, "moe_combine"));
  if (b.mode() != Mode::kFunctional) return ok_status();  // no payload: shapes come from the handle
  const uint32_t R = b.num_ranks();
  const uint64_t H = b.config().hidden;
  if (expert_out.size() != R || out.size() != R)
    return make_error(StatusCode::kInvalidArgument,
                      "moe_combine: %zu expert outputs and %zu outputs for %u ranks (one each)",
                      expert_out.size(), out.size(), R);
  for (uint32_t r = 0; r < R; ++r) {
    if (expert_out[r].size() != handle.recv[r].num_rows() * H)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_combine: rank %u: expert outputs hold %zu floats; its %u rows x "
                        "hidden %llu need %llu",
                        r, expert_out[r].size(), handle.recv[r].num_rows(),
                        static_cast<unsigned long long>(H),
                        static_cast<unsigned long long>(handle.recv[r].num_rows() * H));
    if (out[r].size() != handle.send[r].num_tokens * H)
      return make_error(StatusCode::kInvalidArgument,
                        "moe_combine: rank %u: the output holds %zu floats; its %u tokens x "
                        "hidden %llu need %llu",
                        r, out[r].size(), handle.send[r].num_tokens,
                        static_cast<unsigned long long>(H),
                        static_cast<unsigned long long>(handle.send[r].num_tokens * H));
  }
  return ok_status();
}

}  // namespace

Status moe_combine(MoeBuffer& b, const DispatchHandle& handle,
                   std::span<const std::span<const float>> expert_out,
                   std::span<const std::span<float>> out, PhaseStats* stats_out) {
  const int64_t wall0 = wall_now_ns();
  MOE_TRY(check_combine(b, handle, expert_out, out));
  auto failed = [&](Status s) { return Engine::fail(b, std::move(s)); };
  const uint32_t R = b.num_ranks();
  const uint32_t W = b.issue_contexts();
  const uint32_t H = b.config().hidden;
  const MoeBufferLayout& l = b.layout();
  const TokenFormat format = b.config().combine_format;
  const bool functional = b.mode() == Mode::kFunctional;
  const uint64_t seq = ++Engine::combine_seq(b);

  PhaseStats st;
  st.rank_end_ns.assign(R, 0);
  st.bytes_sent.assign(R, 0);
  st.bytes_received.assign(R, 0);
  st.fabric_bytes_sent.assign(R, 0);
  st.fabric_bytes_received.assign(R, 0);
  const ModelTime t1 = b.group_now();
  st.start_ns = t1.ns;

  // 1. Each expert rank reduces its rows into one partial per slot (combine-send rows).
  std::vector<float> acc;
  std::vector<uint8_t> rows_bytes;
  for (uint32_t r = 0; r < R; ++r) {
    const RankReceive& rr = handle.recv[r];
    if (rr.num_slots == 0) continue;
    if (functional) {
      acc.assign(uint64_t{rr.num_slots} * H, 0.0f);
      const float* src = expert_out[r].data();
      for (uint32_t i = 0; i < rr.num_rows(); ++i) {
        const ExpertRow& row = rr.rows[i];
        float* a = acc.data() + uint64_t{row.slot} * H;
        const float* o = src + uint64_t{i} * H;
        for (uint32_t h = 0; h < H; ++h) a[h] += row.weight * o[h];
      }
      rows_bytes.assign(uint64_t{rr.num_slots} * l.combine_row_bytes, 0);
      for (uint32_t s = 0; s < rr.num_slots; ++s)
        store_row(format, acc.data() + uint64_t{s} * H, H,
                  rows_bytes.data() + uint64_t{s} * l.combine_row_bytes);
      Status ws = b.memory().write(b.combine_send_row(r, 0), rows_bytes.data(), rows_bytes.size());
      if (!ws.ok()) return failed(std::move(ws));
    }
    // Reads the expert outputs (BF16 in HBM) and writes the partials.
    const double bytes = double(rr.num_rows()) * H * 2 + double(rr.num_slots) * l.combine_row_bytes;
    b.advance_rank(r, t1 + ModelTime{local_pass_ns(b, bytes)});
  }

  // 2. One put per (expert rank, home) pair, round by round so every rank's i-th transfer
  //    goes out before anyone's (i+1)-th (the fabric sees them in time order): round i is
  //    the home at rotation i from the expert rank, on context i mod W. Then the flags,
  //    each after its data.
  struct PairTurn {
    uint32_t round, rank, run;
  };
  std::vector<PairTurn> pairs;
  for (uint32_t r = 0; r < R; ++r) {
    const std::vector<SourceRun>& runs = handle.recv[r].runs;
    for (uint32_t k = 0; k < runs.size(); ++k)
      pairs.push_back({(runs[k].src_rank + R - r) % R, r, k});
  }
  std::sort(pairs.begin(), pairs.end(), [](const PairTurn& x, const PairTurn& y) {
    return x.round != y.round ? x.round < y.round : x.rank < y.rank;
  });
  std::vector<PendingSignal> pending;
  LandingEstimator landing(b);
  for (const PairTurn& p : pairs) {
    const uint32_t r = p.rank;
    const SourceRun& run = handle.recv[r].runs[p.run];
    const uint32_t s = run.src_rank;
    const uint64_t bytes = uint64_t{run.num_slots} * l.combine_row_bytes;
    const uint32_t context = p.round % W;
    Endpoint& ep = b.endpoint(r, context);
    pending.push_back({landing.on_put(r, s, ep.now().ns, bytes), r, context, s, seq});
    Status ps = ep.put(b.combine_recv_row(s, run.home_row), b.combine_send_row(r, run.first_slot),
                       bytes);
    if (ps.ok()) ps = ep.fence();  // send now, not behind earlier signals (see dispatch)
    if (!ps.ok()) return failed(ps.with_context(strformat("moe_combine: rank %u to %u", r, s)));
    st.bytes_sent[r] += bytes;
    st.bytes_received[s] += bytes;
    if (b.npu_of(r) != b.npu_of(s)) {
      st.fabric_bytes_sent[r] += bytes;
      st.fabric_bytes_received[s] += bytes;
    }
  }
  MOE_TRY(issue_signals(b, pending, [&](const PendingSignal& p) {
            return b.combine_flag(p.dst, p.rank);
          }).with_context("moe_combine"));
  {
    // Delivery errors of the contexts that sent, without moving their clocks.
    std::vector<std::pair<uint32_t, uint32_t>> used;
    for (const PendingSignal& p : pending) used.push_back({p.rank, p.context});
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    for (const auto& [r, w] : used) {
      Status f = b.endpoint(r, w).fence();
      if (!f.ok()) return failed(f.with_context(strformat("moe_combine: rank %u", r)));
    }
  }

  // 3. Each home waits for the ranks it sent to and sums its tokens' partials in FP32.
  //    A rank that neither received nor sent ends at the start.
  for (uint32_t s = 0; s < R; ++s) {
    const RankSend& rs = handle.send[s];
    if (rs.num_tokens == 0) {
      if (handle.recv[s].num_slots == 0) {
        st.rank_end_ns[s] = t1.ns;
      } else {
        const ModelTime end = b.rank_now(s);
        b.endpoint(s, 0).advance_to(end);  // context 0 holds the rank's latest clock
        st.rank_end_ns[s] = end.ns;
      }
      continue;
    }
    Endpoint& ep = b.endpoint(s, 0);
    ep.advance_to(t1);
    for (const DestRun& dest : rs.dests) {
      const uint32_t r = dest.dst_rank;
      uint64_t seen = 0;
      Status ws = ep.wait_until(b.combine_flag(s, r), Cmp::kGe, seq, &seen);
      if (!ws.ok())
        return failed(ws.with_context(strformat("moe_combine: rank %u waiting for rank %u", s, r)));
      if (seen != seq)
        return failed(make_error(StatusCode::kInternal,
                                 "moe_combine: rank %u: the flag of rank %u holds %llu, expected "
                                 "%llu",
                                 s, r, static_cast<unsigned long long>(seen),
                                 static_cast<unsigned long long>(seq)));
    }
    if (functional) {
      rows_bytes.resize(uint64_t{rs.num_rows} * l.combine_row_bytes);
      if (rs.num_rows > 0) {
        Status rd = b.memory().read(b.combine_recv_row(s, 0), rows_bytes.data(), rows_bytes.size());
        if (!rd.ok()) return failed(std::move(rd));
      }
      acc.assign(H, 0.0f);
      for (uint32_t t = 0; t < rs.num_tokens; ++t) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (uint32_t x = rs.token_offsets[t]; x < rs.token_offsets[t + 1]; ++x)
          add_row(format, rows_bytes.data() + uint64_t{rs.token_rows[x]} * l.combine_row_bytes, H,
                  acc.data());
        float* o = out[s].data() + uint64_t{t} * H;
        for (uint32_t h = 0; h < H; ++h)
          o[h] = format == TokenFormat::kBf16 ? round_to_bf16(acc[h]) : acc[h];
      }
    }
    const double bytes = double(rs.num_rows) * l.combine_row_bytes +
                         double(rs.num_tokens) * H * token_element_bytes(format);
    ep.advance_to(ep.now() + ModelTime{local_pass_ns(b, bytes)});
    const ModelTime end = b.rank_now(s);
    b.advance_rank(s, end);
    st.rank_end_ns[s] = end.ns;
  }
  double last = t1.ns;
  for (double e : st.rank_end_ns) last = std::max(last, e);
  st.latency_ns = last - t1.ns;
  st.wall_ns = wall_now_ns() - wall0;
  if (stats_out != nullptr) *stats_out = std::move(st);
  return ok_status();
}

}  // namespace moe::ic
