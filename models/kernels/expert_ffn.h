// SwiGLU expert FFNs, grouped over the tokens each expert received.
//
// One expert e: h = silu(x W_gate^T) * (x W_up^T); y = h W_down^T, with
//   W_gate, W_up: [inter][hidden], W_down: [hidden][inter] (PyTorch Linear layout, BF16),
//   silu(a) = a / (1 + exp(-a)).
// An ExpertBank holds the prepared weights of a set of experts (a rank's local experts, or
// all of a layer's): per expert the gate and up matrices fused as one [2 * inter][hidden]
// product (rows 0..inter-1 gate, inter..2*inter-1 up) and the down matrix, either as FP32
// working copies of the BF16 values (ExpertPrecision::kBf16) or as W8A8 INT8 weights
// (kInt8: per-channel weight scales, activations quantised per token before each of the two
// products; see gemm.h).
//
// run_experts() is one batched call over all experts of a bank on a grouped layout, the
// shape dispatch produces (ic::RankReceive: per local expert its rows, each naming a
// received slot): expert j processes rows [offsets[j], offsets[j+1]); row i reads input row
// src_rows[i] of x and writes output row i. For each expert with rows it gathers them,
// runs the fused gate/up product, the activation and the down product (3 sgemm-sized
// products per expert, none per row). No weighting: routing weights are applied by the
// caller (or by combine).
//
// Concurrency: given KernelWorkers (kernel_workers.h), the experts run concurrently, each
// task on one lane with a single-threaded BLAS (calls with little work excepted, see
// kExpertParallelMinFlops): one task per expert, an expert with more rows than
// max(kExpertTaskRows, half a lane's share of the call's rows) cut evenly (each task makes
// the BLAS repack the expert's weights, so pieces stay large); tasks start largest first and
// are claimed dynamically. Without workers everything runs on the calling thread, one
// expert after the other, with the BLAS's own threading. Either way each output row is computed by the same
// products of the same inputs; only the BLAS's blocking of the row count may differ.
//
// Workspace: ExpertWorkspace holds every temporary (per lane) and the task list; it grows to
// the largest call seen, on the calling thread before any task starts, and is reused, so a
// steady state allocates nothing. One workspace per calling thread.
// Thread-safety: a bank is immutable after creation (share it freely); run_experts writes
// only its workspace and `out`.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/kernels/gemm.h"
#include "models/kernels/kernel_workers.h"
#include "runtime/base/status.h"

namespace moe::models {

enum class ExpertPrecision : uint8_t {
  kBf16 = 0,  // BF16 weights, FP32 activations and accumulation
  kInt8 = 1,  // W8A8: INT8 weights (per output channel) and activations (per token)
};
const char* expert_precision_name(ExpertPrecision p);

// Views of one expert's BF16 weights (not owned; only read during ExpertBank::create).
struct ExpertWeights {
  std::span<const uint16_t> gate_bf16;  // inter x hidden
  std::span<const uint16_t> up_bf16;    // inter x hidden
  std::span<const uint16_t> down_bf16;  // hidden x inter
};

class ExpertBank {
 public:
  ExpertBank() = default;
  // Prepares `experts` (bank index = position in the span). kInvalidArgument naming the
  // expert and the matrix whose size is not the shape's.
  static StatusOr<ExpertBank> create(uint32_t hidden, uint32_t inter,
                                     std::span<const ExpertWeights> experts,
                                     ExpertPrecision precision);

  // An empty bank of this shape; experts come from take_expert().
  static ExpertBank empty(uint32_t hidden, uint32_t inter, ExpertPrecision precision);
  // Moves expert `index` of `from` (same shape and precision) to the end of this bank
  // without converting its weights again, leaving `from`'s entry hollow: `from` must be
  // discarded afterwards, not run (expert re-placement assembles a rank's new bank from its
  // old one: models/engine/engine_placement.cpp). kInvalidArgument for a shape or precision
  // mismatch or an index out of range (nothing moved).
  Status take_expert(ExpertBank& from, uint32_t index);

  uint32_t size() const { return static_cast<uint32_t>(gate_up_.size() + gate_up_q_.size()); }
  uint32_t hidden() const { return hidden_; }
  uint32_t inter() const { return inter_; }
  ExpertPrecision precision() const { return precision_; }
  // FLOPs of `rows` rows through one expert (6 * rows * hidden * inter).
  double flops(uint64_t rows) const { return 6.0 * double(rows) * hidden_ * inter_; }

 private:
  friend struct ExpertRunner;
  uint32_t hidden_ = 0;
  uint32_t inter_ = 0;
  ExpertPrecision precision_ = ExpertPrecision::kBf16;
  std::vector<DenseWeight> gate_up_, down_;  // kBf16
  std::vector<Int8Weight> gate_up_q_, down_q_;  // kInt8
};

// Smallest cap on a task's rows when experts run concurrently (see the header note).
inline constexpr uint32_t kExpertTaskRows = 128;
// Below this much work (bank.flops(rows + active experts)) a call runs on the calling thread
// even when given workers: waking them costs tens of microseconds.
inline constexpr double kExpertParallelMinFlops = 1 << 24;

// One lane's temporaries, each sized for the largest task the lane may run.
struct ExpertLaneScratch {
  std::vector<float> gathered;  // rows x hidden
  std::vector<float> gate_up;   // rows x 2*inter
  std::vector<float> act;       // rows x inter
};

// Rows [first, first + rows) of expert `expert` (bank index) of call `call`, run as one task.
struct ExpertTask {
  uint32_t call = 0;
  uint32_t expert = 0;
  uint32_t first = 0;
  uint32_t rows = 0;
};

struct ExpertWorkspace {
  std::vector<ExpertLaneScratch> lanes;  // index = KernelWorkers lane
  std::vector<ExpertTask> tasks;         // the current call's tasks, in start order
};

// Runs every expert of `bank` on its rows. x: num_x x hidden; offsets: bank.size() + 1
// non-decreasing values from 0; src_rows: offsets.back() indexes < num_x (empty means
// "row i reads x row i", which needs num_x >= offsets.back()); out: offsets.back() x hidden.
// kInvalidArgument (nothing written) for sizes that do not match or an index out of range.
// workers: run concurrently on them (see the header note); nullptr: on the calling thread.
Status run_experts(const ExpertBank& bank, std::span<const float> x, uint32_t num_x,
                   std::span<const uint32_t> offsets, std::span<const uint32_t> src_rows,
                   std::span<float> out, ExpertWorkspace& ws, KernelWorkers* workers = nullptr);

// Several run_experts calls (other banks, other inputs) as ONE job: their tasks share the
// workers, so e.g. a layer's routed and shared experts balance together. Each call as above
// (outputs must not overlap); every call is validated before anything runs (the error names
// the call when there are several).
struct ExpertCall {
  const ExpertBank* bank = nullptr;
  std::span<const float> x;
  uint32_t num_x = 0;
  std::span<const uint32_t> offsets;
  std::span<const uint32_t> src_rows;
  std::span<float> out;
};
Status run_experts(std::span<const ExpertCall> calls, ExpertWorkspace& ws,
                   KernelWorkers* workers = nullptr);

// Groups a router's choice by expert (the single-host layout): for num_tokens tokens with
// top_k ids each (-1: none), offsets (num_experts + 1) and per row the token (src_rows) and
// its position t * top_k + k (pair). Rows of an expert are in token order. Vectors reused.
struct ExpertGrouping {
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> src_rows;
  std::vector<uint32_t> pair;
  std::vector<uint32_t> row_of_pair;  // inverse: row of pair p, or UINT32_MAX for id -1
};
Status group_by_expert(std::span<const int32_t> topk_ids, uint32_t num_tokens, uint32_t top_k,
                       uint32_t num_experts, ExpertGrouping* out);

}  // namespace moe::models
