// Helpers for the MoE dispatch/combine tests: a simulated supernode with a transport, seeded
// workloads whose token data encodes where it came from, a per-expert function the test
// applies to what each rank received, and the dense reference in double precision.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"
#include "interconnect/moe_dispatch_map.h"
#include "interconnect/quant_int8.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"
#include "tests/interconnect/transport_test_util.h"

namespace moetest {

using namespace moe;

// The transport tests' machine, with a symmetric heap large enough for dispatch buffers.
struct Machine : ictest::Machine {
  explicit Machine(const char* preset = "n8", uint64_t seed = 1)
      : ictest::Machine(preset, seed, {}, uint64_t{256} << 20) {}

  // The first `npus` NPUs, with the rest of the config as given.
  std::unique_ptr<ic::MoeBuffer> buffer(ic::MoeBufferConfig c, uint32_t npus) {
    c.npus.clear();
    for (uint32_t i = 0; i < npus; ++i) c.npus.push_back(i);
    auto b = ic::MoeBuffer::create(*transport, *memory, c);
    REQUIRE_MESSAGE(b.ok(), b.status().to_string());
    return std::move(b).value();
  }
};

// Tokens, routing and weights of every rank.
struct Workload {
  uint32_t hidden = 0;
  uint32_t topk = 0;
  std::vector<uint32_t> num_tokens;           // per rank
  std::vector<std::vector<uint16_t>> tokens;  // per rank: tokens x hidden BF16
  std::vector<std::vector<int32_t>> ids;      // per rank: tokens x topk
  std::vector<std::vector<float>> weights;    // per rank: tokens x topk

  std::vector<ic::DispatchInput> inputs() const {
    std::vector<ic::DispatchInput> in(num_tokens.size());
    for (size_t r = 0; r < in.size(); ++r) {
      in[r].num_tokens = num_tokens[r];
      in[r].tokens_bf16 = tokens[r];
      in[r].topk_ids = ids[r];
      in[r].topk_weights = weights[r];
    }
    return in;
  }
  float x(uint32_t rank, uint32_t token, uint32_t h) const {
    return ic::bf16_to_float(tokens[rank][uint64_t{token} * hidden + h]);
  }
};

// Element h of token `token` of rank `src` in the encoded workload: integers in [-127, 127]
// with element 0 = 127, so BF16 holds them exactly and INT8 quantises them exactly
// (scale 1). Element 1 names the source (src + 1), element 2 the token; the rest mix both.
inline float encoded_value(uint32_t src, uint32_t token, uint32_t h) {
  if (h == 0) return 127.0f;
  if (h == 1) return static_cast<float>(src + 1);
  if (h == 2) return static_cast<float>(token);
  return static_cast<float>(static_cast<int>((src * 7u + token * 13u + h * 5u) % 201u) - 100);
}

enum class Routing { kUniform, kHot };

// Seeded routing: top-k distinct experts per token (kHot: expert `hot` is always the first
// choice, so one rank receives every token); weights in (0, 1], BF16-exact. Token data:
// `encoded` (see encoded_value; needs ranks < 126 and tokens < 128) or random BF16 in
// [-2, 2). num_tokens[r] varies per rank when `ragged`.
inline Workload make_workload(uint32_t ranks, uint32_t max_tokens, uint32_t hidden, uint32_t topk,
                              uint32_t num_experts, uint64_t seed, bool encoded,
                              Routing routing = Routing::kUniform, uint32_t hot = 0,
                              bool ragged = true) {
  Workload w;
  w.hidden = hidden;
  w.topk = topk;
  std::mt19937_64 rng(seed);
  w.num_tokens.resize(ranks);
  w.tokens.resize(ranks);
  w.ids.resize(ranks);
  w.weights.resize(ranks);
  for (uint32_t r = 0; r < ranks; ++r) {
    const uint32_t n = ragged ? static_cast<uint32_t>(rng() % (max_tokens + 1)) : max_tokens;
    w.num_tokens[r] = n;
    w.tokens[r].resize(uint64_t{n} * hidden);
    for (uint32_t t = 0; t < n; ++t)
      for (uint32_t h = 0; h < hidden; ++h) {
        const float v =
            encoded ? encoded_value(r, t, h)
                    : static_cast<float>(static_cast<int64_t>(rng() % 4096) - 2048) / 1024.0f;
        w.tokens[r][uint64_t{t} * hidden + h] = ic::float_to_bf16(v);
      }
    w.ids[r].resize(uint64_t{n} * topk);
    w.weights[r].resize(uint64_t{n} * topk);
    for (uint32_t t = 0; t < n; ++t) {
      int32_t* ids = w.ids[r].data() + uint64_t{t} * topk;
      for (uint32_t k = 0; k < topk; ++k) {
        int32_t e;
        bool again;
        do {
          e = (k == 0 && routing == Routing::kHot) ? static_cast<int32_t>(hot)
                                                   : static_cast<int32_t>(rng() % num_experts);
          again = false;
          for (uint32_t j = 0; j < k; ++j) again = again || ids[j] == e;
        } while (again);
        ids[k] = e;
        w.weights[r][uint64_t{t} * topk + k] =
            static_cast<float>(1 + rng() % 256) / 256.0f;  // exact in float
      }
    }
  }
  return w;
}

// The test's expert function: f(x)_h = a * x_h + b_h, with a and b depending on the expert
// (routed id, or shared index), so a token processed by the wrong expert gives a wrong sum.
inline double expert_scale(bool shared, uint32_t e) {
  return shared ? 1.25 : 0.5 + 0.03125 * (e % 32);
}
inline double expert_bias(bool shared, uint32_t e, uint32_t h) {
  return (shared ? 0.5 : 0.0) + 0.0078125 * static_cast<double>((e * 31u + h * 7u) % 17u);
}

// Applies the expert function to every row each rank received (read back from its slots):
// expert_out[r] = rows x hidden.
inline std::vector<std::vector<float>> run_experts(const ic::MoeBuffer& b,
                                                   const ic::DispatchHandle& handle) {
  const uint32_t H = b.config().hidden;
  std::vector<std::vector<float>> out(b.num_ranks());
  for (uint32_t r = 0; r < b.num_ranks(); ++r) {
    const ic::RankReceive& rr = handle.recv[r];
    out[r].assign(uint64_t{rr.num_rows()} * H, 0.0f);
    for (uint32_t j = 0; j < rr.experts.size(); ++j) {
      std::vector<float> rows;
      REQUIRE(ic::read_expert_rows(b, handle, r, j, &rows).ok());
      const ic::LocalExpert le = rr.experts[j];
      const uint32_t first = rr.expert_offsets[j];
      for (uint32_t i = 0; i < rr.expert_offsets[j + 1] - first; ++i)
        for (uint32_t h = 0; h < H; ++h)
          out[r][uint64_t{first + i} * H + h] =
              static_cast<float>(expert_scale(le.shared, le.expert) * rows[uint64_t{i} * H + h] +
                                 expert_bias(le.shared, le.expert, h));
    }
  }
  return out;
}

// Runs combine with fresh output arrays sized from the handle.
inline std::vector<std::vector<float>> combine_all(
    ic::MoeBuffer& b, const ic::DispatchHandle& handle,
    const std::vector<std::vector<float>>& expert_out, ic::PhaseStats* stats = nullptr) {
  const uint32_t H = b.config().hidden;
  std::vector<std::vector<float>> out(b.num_ranks());
  std::vector<std::span<const float>> in_spans;
  std::vector<std::span<float>> out_spans;
  for (uint32_t r = 0; r < b.num_ranks(); ++r) {
    out[r].assign(uint64_t{handle.send[r].num_tokens} * H, -1.0f);
    in_spans.emplace_back(expert_out[r]);
    out_spans.emplace_back(out[r]);
  }
  Status s = ic::moe_combine(b, handle, in_spans, out_spans, stats);
  REQUIRE_MESSAGE(s.ok(), s.to_string());
  return out;
}

}  // namespace moetest

namespace moetest {

// Where the test expects hit (src, token, expert) to land: the rank. Computed by the test
// from the documented rules, independently of the dispatcher.
using RankRule =
    std::function<uint32_t(uint32_t src, uint32_t token, bool shared, uint32_t expert)>;

// The documented rule for routed experts: replica (src + token) mod count.
inline uint32_t routed_rank_rule(const ic::ExpertMap& map, uint32_t src, uint32_t token,
                                 uint32_t expert) {
  const auto& reps = map.replicas(expert);
  return reps[(uint64_t{src} + token) % reps.size()];
}

// Checks that every (source, token, top-k position) arrived exactly once, on the expected
// rank, at the expected expert, with its weight; that each slot's payload is the source's
// token (encoded workloads); and names every misrouted, lost or duplicated hit.
// Returns the number of problems found.
inline int check_routing(const ic::MoeBuffer& b, const ic::DispatchHandle& h, const Workload& w,
                         const ic::ExpertMap& map, const RankRule& rule, bool encoded_payload) {
  struct Seen {
    uint32_t rank;
    ic::LocalExpert expert;
    float weight;
  };
  const uint32_t R = b.num_ranks();
  const uint32_t S = map.num_shared();
  const uint32_t K = w.topk + S;
  // seen[src][token * K + kslot]
  std::vector<std::vector<std::vector<Seen>>> seen(R);
  for (uint32_t s = 0; s < R; ++s) seen[s].resize(uint64_t{w.num_tokens[s]} * K);
  int problems = 0;
  auto report = [&](const std::string& what) {
    if (++problems <= 12) FAIL_CHECK(what);
  };
  std::vector<float> x(b.config().hidden);
  for (uint32_t d = 0; d < R; ++d) {
    const ic::RankReceive& rr = h.recv[d];
    if (rr.slots.size() != rr.num_slots) report("rank " + std::to_string(d) + ": slot table size");
    for (uint32_t i = 0; i < rr.num_slots; ++i) {
      const ic::SlotInfo& si = rr.slots[i];
      if (si.src_rank >= R || si.src_token >= w.num_tokens[si.src_rank]) {
        report("rank " + std::to_string(d) + " slot " + std::to_string(i) + ": header names rank " +
               std::to_string(si.src_rank) + " token " + std::to_string(si.src_token) +
               ", which does not exist");
        continue;
      }
      if (!encoded_payload) continue;
      REQUIRE(ic::read_received_token(b, h, d, i, x).ok());
      const int got_src = static_cast<int>(x[1]) - 1, got_tok = static_cast<int>(x[2]);
      bool same = x[0] == 127.0f && got_src == static_cast<int>(si.src_rank) &&
                  got_tok == static_cast<int>(si.src_token);
      for (uint32_t e = 3; same && e < x.size(); ++e)
        same = x[e] == encoded_value(si.src_rank, si.src_token, e);
      if (!same)
        report("rank " + std::to_string(d) + " slot " + std::to_string(i) + ": header says rank " +
               std::to_string(si.src_rank) + " token " + std::to_string(si.src_token) +
               " but the data is rank " + std::to_string(got_src) + " token " +
               std::to_string(got_tok) + " (or corrupted)");
    }
    for (uint32_t j = 0; j < rr.experts.size(); ++j)
      for (uint32_t i = rr.expert_offsets[j]; i < rr.expert_offsets[j + 1]; ++i) {
        const ic::ExpertRow& row = rr.rows[i];
        const ic::SlotInfo& si = rr.slots[row.slot];
        if (si.src_rank >= R || si.src_token >= w.num_tokens[si.src_rank] || row.topk_slot >= K) {
          report("rank " + std::to_string(d) + " row " + std::to_string(i) + ": out of range");
          continue;
        }
        seen[si.src_rank][uint64_t{si.src_token} * K + row.topk_slot].push_back(
            {d, rr.experts[j], row.weight});
      }
  }
  for (uint32_t s = 0; s < R; ++s)
    for (uint32_t t = 0; t < w.num_tokens[s]; ++t)
      for (uint32_t k = 0; k < K; ++k) {
        const bool shared = k >= w.topk;
        int32_t e = shared ? static_cast<int32_t>(k - w.topk) : w.ids[s][uint64_t{t} * w.topk + k];
        const auto& got = seen[s][uint64_t{t} * K + k];
        const std::string name = "rank " + std::to_string(s) + " token " + std::to_string(t) +
                                 (shared ? " shared expert " : " expert ") + std::to_string(e);
        if (e < 0) {
          if (!got.empty()) report(name + ": masked (-1) but delivered");
          continue;
        }
        const uint32_t want_rank = rule(s, t, shared, static_cast<uint32_t>(e));
        const float want_w = shared ? map.shared_weight(static_cast<uint32_t>(e))
                                    : w.weights[s][uint64_t{t} * w.topk + k];
        if (got.empty()) {
          report(name + ": lost (expected on rank " + std::to_string(want_rank) + ")");
        } else if (got.size() > 1) {
          report(name + ": duplicated (" + std::to_string(got.size()) + " copies)");
        } else if (got[0].rank != want_rank || got[0].expert.shared != shared ||
                   got[0].expert.expert != static_cast<uint32_t>(e) || got[0].weight != want_w) {
          report(name + ": misrouted to rank " + std::to_string(got[0].rank) +
                 (got[0].expert.shared ? " shared expert " : " expert ") +
                 std::to_string(got[0].expert.expert) + " weight " + std::to_string(got[0].weight) +
                 " (expected rank " + std::to_string(want_rank) + ")");
        }
      }
  return problems;
}

// The dense reference in double: out[s][t] = sum_k w_k f_{e_k}(x) + sum_j sw_j f_shared_j(x).
inline std::vector<std::vector<double>> dense_reference(const Workload& w,
                                                        const ic::ExpertMap& map) {
  std::vector<std::vector<double>> ref(w.num_tokens.size());
  const uint32_t H = w.hidden;
  for (uint32_t s = 0; s < w.num_tokens.size(); ++s) {
    ref[s].assign(uint64_t{w.num_tokens[s]} * H, 0.0);
    for (uint32_t t = 0; t < w.num_tokens[s]; ++t)
      for (uint32_t h = 0; h < H; ++h) {
        const double x = w.x(s, t, h);
        double acc = 0;
        for (uint32_t k = 0; k < w.topk; ++k) {
          const int32_t e = w.ids[s][uint64_t{t} * w.topk + k];
          if (e < 0) continue;
          acc += double(w.weights[s][uint64_t{t} * w.topk + k]) *
                 (expert_scale(false, e) * x + expert_bias(false, e, h));
        }
        for (uint32_t j = 0; j < map.num_shared(); ++j)
          acc +=
              double(map.shared_weight(j)) * (expert_scale(true, j) * x + expert_bias(true, j, h));
        ref[s][uint64_t{t} * H + h] = acc;
      }
  }
  return ref;
}

// Compares combine's output with the reference. Tolerance per element: the INT8 error
// (sum_k |w_k a_k| * max|x_t| / 254, when int8) plus BF16 rounding of each partial and of
// the output (2^-8 of the sum of magnitudes, twice, when the combine format is BF16), plus
// float rounding (1e-5 relative to the magnitude). Returns the number of elements outside.
inline int check_against_reference(const Workload& w, const ic::ExpertMap& map,
                                   const std::vector<std::vector<float>>& got, bool int8,
                                   bool bf16_combine, double* worst_rel = nullptr) {
  const auto ref = dense_reference(w, map);
  const uint32_t H = w.hidden;
  int bad = 0;
  double worst = 0;
  for (uint32_t s = 0; s < w.num_tokens.size(); ++s)
    for (uint32_t t = 0; t < w.num_tokens[s]; ++t) {
      double max_x = 0, scale_sum = 0;
      for (uint32_t h = 0; h < H; ++h) max_x = std::max(max_x, std::fabs(double(w.x(s, t, h))));
      for (uint32_t k = 0; k < w.topk; ++k) {
        const int32_t e = w.ids[s][uint64_t{t} * w.topk + k];
        if (e >= 0)
          scale_sum += std::fabs(w.weights[s][uint64_t{t} * w.topk + k] * expert_scale(false, e));
      }
      for (uint32_t j = 0; j < map.num_shared(); ++j)
        scale_sum += std::fabs(map.shared_weight(j) * expert_scale(true, j));
      for (uint32_t h = 0; h < H; ++h) {
        const double x = w.x(s, t, h);
        double magnitude = 0;
        for (uint32_t k = 0; k < w.topk; ++k) {
          const int32_t e = w.ids[s][uint64_t{t} * w.topk + k];
          if (e >= 0)
            magnitude += std::fabs(w.weights[s][uint64_t{t} * w.topk + k] *
                                   (expert_scale(false, e) * x + expert_bias(false, e, h)));
        }
        for (uint32_t j = 0; j < map.num_shared(); ++j)
          magnitude += std::fabs(map.shared_weight(j) *
                                 (expert_scale(true, j) * x + expert_bias(true, j, h)));
        double tol = 1e-5 * (magnitude + 1.0);
        if (int8) tol += scale_sum * max_x / 254.0 * 1.001;
        if (bf16_combine)
          tol += 2.0 * std::ldexp(magnitude + (int8 ? scale_sum * max_x / 254.0 : 0), -8);
        const double r = ref[s][uint64_t{t} * H + h];
        const double g = got[s][uint64_t{t} * H + h];
        const double err = std::fabs(g - r);
        worst = std::max(worst, err / (magnitude + 1e-9));
        if (!(err <= tol)) {
          if (++bad <= 8)
            FAIL_CHECK("rank " << s << " token " << t << " element " << h << ": combined " << g
                               << ", reference " << r << " (tolerance " << tol << ")");
        }
      }
    }
  if (worst_rel != nullptr) *worst_rel = worst;
  return bad;
}

}  // namespace moetest
