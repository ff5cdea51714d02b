// Grouped SwiGLU experts (see expert_ffn.h).
//
// Design notes:
//  - Gate and up are one [2I x H] product per expert: one sgemm reads the gathered rows once
//    and the BLAS sees a wider N, which is what keeps small expert batches efficient.
//  - The gather is skipped when an expert's rows are a contiguous run of x (src_rows empty):
//    the shared expert and single-expert banks read x in place.
//  - Everything is validated before the first product, so bad input writes nothing.
#include "models/kernels/expert_ffn.h"

#include "runtime/base/check.h"

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

struct ExpertRunner {
  static void run_one(const ExpertBank& b, uint32_t j, const float* x, uint32_t rows, float* y,
                      ExpertWorkspace& ws) {
    const uint32_t I = b.inter_;
    if (ws.gate_up.size() < uint64_t{rows} * 2 * I) ws.gate_up.resize(uint64_t{rows} * 2 * I);
    if (ws.act.size() < uint64_t{rows} * I) ws.act.resize(uint64_t{rows} * I);
    const bool q = b.precision_ == ExpertPrecision::kInt8;
    if (q)
      linear_int8_rows(x, rows, b.gate_up_q_[j], ws.gate_up.data(), false);
    else
      linear_rows(x, rows, b.gate_up_[j], ws.gate_up.data(), false);
    for (uint32_t r = 0; r < rows; ++r) {
      const float* g = ws.gate_up.data() + uint64_t{r} * 2 * I;
      const float* u = g + I;
      float* a = ws.act.data() + uint64_t{r} * I;
      for (uint32_t i = 0; i < I; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
    if (q)
      linear_int8_rows(ws.act.data(), rows, b.down_q_[j], y, false);
    else
      linear_rows(ws.act.data(), rows, b.down_[j], y, false);
  }
};

Status run_experts(const ExpertBank& bank, std::span<const float> x, uint32_t num_x,
                   std::span<const uint32_t> offsets, std::span<const uint32_t> src_rows,
                   std::span<float> out, ExpertWorkspace& ws) {
  const uint32_t H = bank.hidden(), n = bank.size();
  if (x.size() != uint64_t{num_x} * H)
    return make_error(StatusCode::kInvalidArgument, "run_experts: x has %zu values, not %u x %u",
                      x.size(), num_x, H);
  if (offsets.size() != uint64_t{n} + 1 || offsets[0] != 0)
    return make_error(StatusCode::kInvalidArgument,
                      "run_experts: %zu offsets for %u experts (need experts + 1, from 0)",
                      offsets.size(), n);
  for (uint32_t j = 0; j < n; ++j)
    if (offsets[j + 1] < offsets[j])
      return make_error(StatusCode::kInvalidArgument, "run_experts: offsets decrease at expert %u",
                        j);
  const uint32_t rows = offsets[n];
  if (out.size() != uint64_t{rows} * H)
    return make_error(StatusCode::kInvalidArgument,
                      "run_experts: out has %zu values, not %u rows x %u", out.size(), rows, H);
  if (src_rows.empty()) {
    if (rows > num_x)
      return make_error(StatusCode::kInvalidArgument,
                        "run_experts: %u rows read x in place but x has %u rows", rows, num_x);
  } else {
    if (src_rows.size() != rows)
      return make_error(StatusCode::kInvalidArgument, "run_experts: %zu src_rows for %u rows",
                        src_rows.size(), rows);
    for (uint32_t i = 0; i < rows; ++i)
      if (src_rows[i] >= num_x)
        return make_error(StatusCode::kInvalidArgument,
                          "run_experts: row %u reads x row %u of %u", i, src_rows[i], num_x);
  }
  for (uint32_t j = 0; j < n; ++j) {
    const uint32_t first = offsets[j], count = offsets[j + 1] - first;
    if (count == 0) continue;
    const float* in = x.data() + uint64_t{first} * H;
    if (!src_rows.empty()) {
      if (ws.gathered.size() < uint64_t{count} * H) ws.gathered.resize(uint64_t{count} * H);
      for (uint32_t i = 0; i < count; ++i)
        std::memcpy(ws.gathered.data() + uint64_t{i} * H, x.data() + uint64_t{src_rows[first + i]} * H,
                    H * sizeof(float));
      in = ws.gathered.data();
    }
    ExpertRunner::run_one(bank, j, in, count, out.data() + uint64_t{first} * H, ws);
  }
  return ok_status();
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
