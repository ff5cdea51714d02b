// The engine's internal state, shared by engine.cpp (set-up, sequences) and engine_step.cpp
// (the forward step and its kernel bodies). Not a public header.
#pragma once

#include <memory>
#include <vector>

#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"
#include "models/engine/engine.h"
#include "models/engine/kv_pool.h"
#include "models/kernels/attention.h"
#include "models/kernels/expert_ffn.h"
#include "models/kernels/rope.h"
#include "models/kernels/router.h"
#include "runtime/base/check.h"
#include "runtime/stream.h"

namespace moe::models {

struct EngineState;

struct EngineSequence {
  bool open = false;
  uint32_t generation = 0;
  uint32_t dp = 0;
  uint64_t last_step = 0;  // the step that last used it (repeats in one step are refused)
  SequenceKv kv;
};

// What a kernel body needs: which engine, which home or rank, which layer.
struct EngineJob {
  enum class Kind : uint8_t { kAttention, kDenseFfn, kRouter, kExperts, kMoeOut, kHead };
  EngineState* s = nullptr;
  Kind kind = Kind::kAttention;
  uint32_t index = 0;  // DP rank index (home kinds) or EP rank (kExperts)
  uint32_t layer = 0;
};

// One DP rank's part of a step, and its activations (FP32, rows = the home's tokens).
struct HomeWork {
  uint32_t rank = 0;  // its EP rank
  std::vector<uint32_t> entries;      // indexes into the step's inputs
  std::vector<uint32_t> entry_first;  // entries.size() + 1 row offsets
  std::vector<uint32_t> tokens;
  std::vector<int32_t> positions;
  uint32_t rows() const { return static_cast<uint32_t>(tokens.size()); }
  std::vector<float> h, xn, q, k, v, attn, tmp, ffn, gate, up, last, logits;
  std::vector<uint16_t> x_bf16;
  std::vector<float> router_logits;
  RouterOutput routing;
  kernels::AttentionScratch scratch;
  ExpertWorkspace ws;
  std::vector<EngineJob> jobs;  // [layer * 4 + slot] (attention, ffn-in, moe-out), head last
};

// One EP rank's expert work in a step.
struct RankWork {
  std::vector<float> received, out;
  std::vector<uint32_t> src_rows;
  ExpertWorkspace ws;
  std::vector<EngineJob> jobs;  // per MoE layer
};

struct EngineState {
  explicit EngineState(rt::Runtime& rt) : runtime(rt) {}
  rt::Runtime& runtime;
  ModelConfig config;
  EngineOptions options;
  DeviceWeights weights;
  std::vector<dev::NpuId> npus;  // per EP rank: its NPU
  std::vector<uint32_t> dies;    // per EP rank: its die (ranks_per_npu > 1)
  std::vector<uint32_t> dp_ranks;
  std::unique_ptr<ic::MoeBuffer> buffer;
  std::vector<std::unique_ptr<rt::Stream>> streams;  // per EP rank: its die's compute stream
  std::vector<KvPool> pools;                         // per DP rank
  std::vector<EngineSequence> seqs;
  std::vector<uint32_t> free_seq_slots;
  std::vector<uint32_t> seqs_per_dp;
  kernels::RopeTable rope;
  RouterConfig router;
  std::vector<HomeWork> homes;  // per DP rank
  std::vector<RankWork> ranks;  // per EP rank
  std::vector<std::vector<uint64_t>> expert_load;
  // Per step (vectors reused from step to step).
  uint64_t step = 0;
  std::vector<uint32_t> old_length;  // per input: its sequence's length before the step
  std::vector<uint32_t> active;      // DP ranks with tokens
  std::vector<uint32_t> expert_ranks;  // EP ranks with expert rows in the current layer
  std::vector<uint32_t> rows_per_expert;
  std::vector<ic::DispatchInput> dispatch_inputs;
  std::vector<std::span<const float>> expert_spans;
  std::vector<std::span<float>> combine_out;
  std::span<const StepInput> inputs;
  std::span<float> logits_out;
  ic::DispatchHandle handle;
  Status body_error;
  int64_t math_ns = 0;
  uint32_t kernels = 0;

  EngineSequence* find(SeqId id);
  const EngineSequence* find(SeqId id) const;
  Status run_body(EngineJob& job);
};

}  // namespace moe::models
