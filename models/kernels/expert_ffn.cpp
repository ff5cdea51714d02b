// Grouped SwiGLU experts (see expert_ffn.h).
//
// Design notes:
//  - Gate and up are one [2I x H] product per expert: one sgemm reads the gathered rows once
//    and the BLAS sees a wider N, which is what keeps small expert batches efficient.
//  - The gather is skipped when an expert's rows are a contiguous run of x (src_rows empty):
//    the shared expert and single-expert banks read x in place.
//  - Everything is validated before the first product, so bad input writes nothing.
//  - Concurrent experts: tasks write disjoint output rows and each lane has its own scratch,
//    grown before the job starts; a task touches no shared mutable state. On a 2-core host
//    under load, dynamic claiming of many tasks by single-threaded products keeps both cores
//    busy where one multi-threaded product per expert waits on a barrier per call.
#include "models/kernels/expert_ffn.h"

#include "runtime/base/check.h"
#include "runtime/base/strformat.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace moe::models {

const char* expert_precision_name(ExpertPrecision p) {
  return p == ExpertPrecision::kInt8 ? "int8" : "bf16";
}

ExpertBank ExpertBank::empty(uint32_t hidden, uint32_t inter, ExpertPrecision precision) {
  ExpertBank bank;
  bank.hidden_ = hidden;
  bank.inter_ = inter;
  bank.precision_ = precision;
  return bank;
}

Status ExpertBank::take_expert(ExpertBank& from, uint32_t index) {
  if (from.hidden_ != hidden_ || from.inter_ != inter_ || from.precision_ != precision_ ||
      index >= from.size())
    return make_error(StatusCode::kInvalidArgument,
                      "ExpertBank::take_expert: expert %u of a bank of %u (hidden %u inter %u) "
                      "into one of hidden %u inter %u%s", index, from.size(), from.hidden_,
                      from.inter_, hidden_, inter_,
                      from.precision_ != precision_ ? ", precisions differ" : "");
  if (precision_ == ExpertPrecision::kInt8) {
    gate_up_q_.push_back(std::move(from.gate_up_q_[index]));
    down_q_.push_back(std::move(from.down_q_[index]));
  } else {
    gate_up_.push_back(std::move(from.gate_up_[index]));
    down_.push_back(std::move(from.down_[index]));
  }
  return ok_status();
}

StatusOr<ExpertBank> ExpertBank::create(uint32_t hidden, uint32_t inter,
                                        std::span<const ExpertWeights> experts,
                                        ExpertPrecision precision) {
  if (hidden == 0 || inter == 0)
    return make_error(StatusCode::kInvalidArgument, "ExpertBank: empty shape hidden %u inter %u",
                      hidden, inter);
  const uint64_t n = uint64_t{hidden} * inter;
  ExpertBank bank;
  bank.hidden_ = hidden;
  bank.inter_ = inter;
  bank.precision_ = precision;
  std::vector<uint16_t> fused(2 * n);
  for (size_t j = 0; j < experts.size(); ++j) {
    const ExpertWeights& e = experts[j];
    const char* bad = e.gate_bf16.size() != n ? "gate" : e.up_bf16.size() != n ? "up"
                      : e.down_bf16.size() != n ? "down" : nullptr;
    if (bad != nullptr)
      return make_error(StatusCode::kInvalidArgument,
                        "ExpertBank: expert %zu: %s has %zu elements, expected %llu "
                        "(hidden %u x inter %u)",
                        j, bad,
                        (bad[0] == 'g' ? e.gate_bf16 : bad[0] == 'u' ? e.up_bf16 : e.down_bf16)
                            .size(),
                        static_cast<unsigned long long>(n), hidden, inter);
    std::memcpy(fused.data(), e.gate_bf16.data(), n * sizeof(uint16_t));
    std::memcpy(fused.data() + n, e.up_bf16.data(), n * sizeof(uint16_t));
    if (precision == ExpertPrecision::kInt8) {
      MOE_TRY_ASSIGN(Int8Weight gu, Int8Weight::from_bf16(fused, 2 * inter, hidden));
      MOE_TRY_ASSIGN(Int8Weight d, Int8Weight::from_bf16(e.down_bf16, hidden, inter));
      bank.gate_up_q_.push_back(std::move(gu));
      bank.down_q_.push_back(std::move(d));
    } else {
      MOE_TRY_ASSIGN(DenseWeight gu, DenseWeight::from_bf16(fused, 2 * inter, hidden));
      MOE_TRY_ASSIGN(DenseWeight d, DenseWeight::from_bf16(e.down_bf16, hidden, inter));
      bank.gate_up_.push_back(std::move(gu));
      bank.down_.push_back(std::move(d));
    }
  }
  return bank;
}

// silu(g) * u over n values. Written as plain arithmetic on arrays (no branch, no aliasing
// between the operands) so the compiler may vectorise the loop around the exp call.
void swiglu(const float* __restrict g, const float* __restrict u, float* __restrict a,
            uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

struct ExpertRunner {
  // Expert j on `rows` dense rows of x into y, with lane scratch s (already sized).
  static void run_one(const ExpertBank& b, uint32_t j, const float* x, uint32_t rows, float* y,
                      ExpertLaneScratch& s) {
    const uint32_t I = b.inter_;
    const bool q = b.precision_ == ExpertPrecision::kInt8;
    if (q)
      linear_int8_rows(x, rows, b.gate_up_q_[j], s.gate_up.data(), false);
    else
      linear_rows(x, rows, b.gate_up_[j], s.gate_up.data(), false);
    for (uint32_t r = 0; r < rows; ++r) {
      const float* g = s.gate_up.data() + uint64_t{r} * 2 * I;
      swiglu(g, g + I, s.act.data() + uint64_t{r} * I, I);
    }
    if (q)
      linear_int8_rows(s.act.data(), rows, b.down_q_[j], y, false);
    else
      linear_rows(s.act.data(), rows, b.down_[j], y, false);
  }
};

namespace {

// Everything a task needs, shared read-only by the lanes.
struct RunContext {
  std::span<const ExpertCall> calls;
  ExpertWorkspace* ws;

  void operator()(uint32_t task, uint32_t lane) const {
    const ExpertTask& t = ws->tasks[task];
    const ExpertCall& c = calls[t.call];
    ExpertLaneScratch& s = ws->lanes[lane];
    const uint64_t H = c.bank->hidden();
    const float* in = c.x.data() + uint64_t{t.first} * H;
    if (!c.src_rows.empty()) {
      for (uint32_t i = 0; i < t.rows; ++i)
        std::memcpy(s.gathered.data() + i * H, c.x.data() + uint64_t{c.src_rows[t.first + i]} * H,
                    H * sizeof(float));
      in = s.gathered.data();
    }
    ExpertRunner::run_one(*c.bank, t.expert, in, t.rows, c.out.data() + uint64_t{t.first} * H, s);
  }
};

template <typename T>
void grow_to(std::vector<T>& v, uint64_t n) {
  if (v.size() < n) v.resize(n);
}

Status check_call(const ExpertCall& c) {
  if (c.bank == nullptr)
    return make_error(StatusCode::kInvalidArgument, "run_experts: no bank given");
  const ExpertBank& bank = *c.bank;
  const uint32_t H = bank.hidden(), n = bank.size(), num_x = c.num_x;
  if (c.x.size() != uint64_t{num_x} * H)
    return make_error(StatusCode::kInvalidArgument, "run_experts: x has %zu values, not %u x %u",
                      c.x.size(), num_x, H);
  if (c.offsets.size() != uint64_t{n} + 1 || c.offsets[0] != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "run_experts: %zu offsets for %u experts (need experts + 1, from 0)",
                      c.offsets.size(), n);
  for (uint32_t j = 0; j < n; ++j)
    if (c.offsets[j + 1] < c.offsets[j])
      return make_error(StatusCode::kInvalidArgument, "run_experts: offsets decrease at expert %u",
                        j);
  const uint32_t rows = c.offsets[n];
  if (c.out.size() != uint64_t{rows} * H)
    return make_error(StatusCode::kInvalidArgument,
                      "run_experts: out has %zu values, not %u rows x %u", c.out.size(), rows, H);
  if (c.src_rows.empty()) {
    if (rows > num_x)
      return make_error(StatusCode::kInvalidArgument,
                        "run_experts: %u rows read x in place but x has %u rows", rows, num_x);
  } else {
    if (c.src_rows.size() != rows)
      return make_error(StatusCode::kInvalidArgument, "run_experts: %zu src_rows for %u rows",
                        c.src_rows.size(), rows);
    for (uint32_t i = 0; i < rows; ++i)
      if (c.src_rows[i] >= num_x)
        return make_error(StatusCode::kInvalidArgument,
                          "run_experts: row %u reads x row %u of %u", i, c.src_rows[i], num_x);
  }
  return ok_status();
}

}  // namespace

Status run_experts(std::span<const ExpertCall> calls, ExpertWorkspace& ws,
                   KernelWorkers* workers) {
  for (size_t i = 0; i < calls.size(); ++i) {
    Status st = check_call(calls[i]);
    if (!st.ok()) return calls.size() == 1 ? st : st.with_context(strformat("call %zu", i));
  }
  // Too little work (tiny shapes, a row or two) is not worth waking the workers for: the
  // estimate counts the products' FLOPs plus one pass over each active expert's weights.
  uint64_t total_rows = 0;
  double work = 0;
  for (const ExpertCall& c : calls) {
    const uint32_t n = c.bank->size();
    uint32_t active = 0;
    for (uint32_t j = 0; j < n; ++j) active += c.offsets[j + 1] > c.offsets[j] ? 1 : 0;
    total_rows += c.offsets[n];
    work += c.bank->flops(uint64_t{c.offsets[n]} + active);
  }
  const bool parallel = workers != nullptr && workers->lanes() > 1 &&
                        work >= kExpertParallelMinFlops;
  const uint32_t lanes = parallel ? workers->lanes() : 1;
  // Tasks: one per expert with rows; with several lanes an expert larger than the cap is cut
  // evenly. Each task repacks its expert's weights inside the BLAS, so pieces stay as large
  // as balance allows: cap = max(kExpertTaskRows, half a lane's share of all rows). Largest
  // first, so the lanes finish together.
  const uint64_t cap =
      std::max<uint64_t>(kExpertTaskRows, (total_rows + 2 * lanes - 1) / (2 * lanes));
  ws.tasks.clear();
  uint64_t need_gathered = 0, need_gate_up = 0, need_act = 0;
  for (uint32_t ci = 0; ci < calls.size(); ++ci) {
    const ExpertCall& c = calls[ci];
    const uint64_t H = c.bank->hidden(), I = c.bank->inter();
    for (uint32_t j = 0; j < c.bank->size(); ++j) {
      const uint32_t first = c.offsets[j], count = c.offsets[j + 1] - first;
      if (count == 0) continue;
      const uint32_t pieces = lanes > 1 ? static_cast<uint32_t>((count + cap - 1) / cap) : 1;
      for (uint32_t p = 0; p < pieces; ++p) {
        const uint32_t lo = static_cast<uint32_t>(uint64_t{count} * p / pieces);
        const uint32_t hi = static_cast<uint32_t>(uint64_t{count} * (p + 1) / pieces);
        ws.tasks.push_back({ci, j, first + lo, hi - lo});
        if (!c.src_rows.empty()) need_gathered = std::max(need_gathered, (hi - lo) * H);
        need_gate_up = std::max(need_gate_up, (hi - lo) * 2 * I);
        need_act = std::max(need_act, (hi - lo) * I);
      }
    }
  }
  if (ws.tasks.empty()) return ok_status();
  if (lanes > 1)
    std::stable_sort(ws.tasks.begin(), ws.tasks.end(),
                     [](const ExpertTask& a, const ExpertTask& b) { return a.rows > b.rows; });
  // Scratch grows here, on the calling thread: the tasks themselves never allocate.
  if (ws.lanes.size() < lanes) ws.lanes.resize(lanes);
  for (uint32_t l = 0; l < lanes; ++l) {
    ExpertLaneScratch& s = ws.lanes[l];
    grow_to(s.gathered, need_gathered);
    grow_to(s.gate_up, need_gate_up);
    grow_to(s.act, need_act);
  }
  RunContext ctx{calls, &ws};
  const uint32_t num_tasks = static_cast<uint32_t>(ws.tasks.size());
  if (lanes > 1) {
    workers->run(num_tasks, ctx);
  } else {
    for (uint32_t t = 0; t < num_tasks; ++t) ctx(t, 0);
  }
  return ok_status();
}

Status run_experts(const ExpertBank& bank, std::span<const float> x, uint32_t num_x,
                   std::span<const uint32_t> offsets, std::span<const uint32_t> src_rows,
                   std::span<float> out, ExpertWorkspace& ws, KernelWorkers* workers) {
  const ExpertCall call{&bank, x, num_x, offsets, src_rows, out};
  return run_experts(std::span<const ExpertCall>(&call, 1), ws, workers);
}

Status group_by_expert(std::span<const int32_t> topk_ids, uint32_t num_tokens, uint32_t top_k,
                       uint32_t num_experts, ExpertGrouping* out) {
  const uint64_t pairs = uint64_t{num_tokens} * top_k;
  if (topk_ids.size() != pairs)
    return make_error(StatusCode::kInvalidArgument,
                      "group_by_expert: %zu ids for %u tokens x top-%u", topk_ids.size(),
                      num_tokens, top_k);
  for (uint64_t p = 0; p < pairs; ++p)
    if (topk_ids[p] < -1 || topk_ids[p] >= static_cast<int64_t>(num_experts))
      return make_error(StatusCode::kInvalidArgument,
                        "group_by_expert: token %llu position %llu: expert %d of %u",
                        static_cast<unsigned long long>(p / top_k),
                        static_cast<unsigned long long>(p % top_k), topk_ids[p], num_experts);
  out->offsets.assign(uint64_t{num_experts} + 1, 0);
  for (uint64_t p = 0; p < pairs; ++p)
    if (topk_ids[p] >= 0) ++out->offsets[topk_ids[p] + 1];
  for (uint32_t e = 0; e < num_experts; ++e) out->offsets[e + 1] += out->offsets[e];
  const uint32_t rows = out->offsets[num_experts];
  out->src_rows.resize(rows);
  out->pair.resize(rows);
  out->row_of_pair.assign(pairs, UINT32_MAX);
  // Fill positions: a running cursor per expert, reusing row_of_pair's order (token order).
  thread_local std::vector<uint32_t> cursor;
  cursor.assign(out->offsets.begin(), out->offsets.end() - 1);
  for (uint64_t p = 0; p < pairs; ++p) {
    if (topk_ids[p] < 0) continue;
    const uint32_t row = cursor[topk_ids[p]]++;
    out->src_rows[row] = static_cast<uint32_t>(p / top_k);
    out->pair[row] = static_cast<uint32_t>(p);
    out->row_of_pair[p] = row;
  }
  return ok_status();
}

}  // namespace moe::models
