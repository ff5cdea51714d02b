// Engine set-up (placement, weights, buffer, streams, KV pools) and the sequence table.
#include "models/engine/engine.h"

#include <algorithm>

#include "models/engine/engine_state.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::models {

namespace {

Status check_options(const ModelConfig& c, const EngineOptions& o, uint32_t num_ranks) {
  const char* bad = nullptr;
  if (o.max_tokens_per_rank == 0) bad = "max_tokens_per_rank is 0";
  else if (o.kv_block_positions == 0 || o.kv_blocks_per_rank == 0) bad = "the KV pool is empty";
  else if (o.attention_dp > num_ranks) bad = "attention_dp exceeds the NPUs";
  else if (o.dispatch_format != ic::TokenFormat::kBf16 && o.dispatch_format != ic::TokenFormat::kInt8)
    bad = "dispatch_format must be BF16 or INT8";
  else if (o.combine_format != ic::TokenFormat::kBf16 && o.combine_format != ic::TokenFormat::kFloat32)
    bad = "combine_format must be BF16 or FP32";
  if (bad != nullptr)
    return make_error(StatusCode::kInvalidArgument,
                      "engine for '%s': %s (max_tokens_per_rank %u, KV %u blocks of %u, "
                      "attention_dp %u of %u NPUs)",
                      c.name.c_str(), bad, o.max_tokens_per_rank, o.kv_blocks_per_rank,
                      o.kv_block_positions, o.attention_dp, num_ranks);
  return ok_status();
}

}  // namespace

EngineSequence* EngineState::find(SeqId id) {
  if (id.index >= seqs.size() || !seqs[id.index].open || seqs[id.index].generation != id.generation)
    return nullptr;
  return &seqs[id.index];
}
const EngineSequence* EngineState::find(SeqId id) const {
  return const_cast<EngineState*>(this)->find(id);
}

Engine::Engine(std::unique_ptr<EngineState> state) : s_(std::move(state)) {}
Engine::~Engine() {
  if (!s_) return;
  // KV blocks go back before the pools (and the weights) release their HBM.
  for (EngineSequence& q : s_->seqs)
    if (q.open) q.kv.release(s_->pools[q.dp]);
}

StatusOr<std::unique_ptr<Engine>> Engine::create(rt::Runtime& runtime, const ModelWeights& weights,
                                                 EngineOptions options) {
  const ModelConfig& c = weights.config();
  MOE_TRY(validate_config(c));
  if (!runtime.functional() || !runtime.has_transport())
    return make_error(StatusCode::kFailedPrecondition,
                      "engine for '%s' needs a functional runtime with a transport (timing mode "
                      "at full size is moe simulate)", c.name.c_str());
  if (c.attention != AttentionKind::kGqa)
    return make_error(StatusCode::kUnsupported,
                      "engine for '%s': MLA attention is not wired into the engine yet (its "
                      "kernels are models/kernels/mla.h; timing: moe simulate)", c.name.c_str());
  auto s = std::make_unique<EngineState>(runtime);
  s->config = c;
  if (options.npus.empty())
    for (uint32_t n = 0; n < runtime.num_devices(); ++n) options.npus.push_back(n);
  if (options.ranks_per_npu == 0 || options.ranks_per_npu > runtime.topology().dies_per_npu)
    return make_error(StatusCode::kInvalidArgument,
                      "engine for '%s': ranks_per_npu %u; an NPU of this supernode has %u dies",
                      c.name.c_str(), options.ranks_per_npu, runtime.topology().dies_per_npu);
  const uint32_t rpn = options.ranks_per_npu;
  const uint32_t R = static_cast<uint32_t>(options.npus.size()) * rpn;
  MOE_TRY(check_options(c, options, R));
  {
    std::vector<dev::NpuId> sorted = options.npus;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      return make_error(StatusCode::kInvalidArgument, "engine for '%s': NPU %u is listed twice",
                        c.name.c_str(), *std::adjacent_find(sorted.begin(), sorted.end()));
  }
  const uint32_t dp = options.attention_dp == 0 ? R : options.attention_dp;
  for (uint32_t i = 0; i < dp; ++i) s->dp_ranks.push_back(static_cast<uint32_t>(uint64_t{i} * R / dp));
  for (uint32_t r = 0; r < R; ++r) {
    s->npus.push_back(options.npus[r / rpn]);
    s->dies.push_back(r % rpn);
  }

  DevicePlacement placement;
  placement.npus = s->npus;
  placement.dp_ranks = s->dp_ranks;
  placement.map = options.expert_map ? *options.expert_map : ic::ExpertMap::uniform(c.num_experts, R);
  placement.precision = options.precision;
  placement.expert_own_pages = options.expert_own_pages;
  const uint64_t need = DeviceWeights::hbm_bytes_needed(c, placement);
  if (need > options.max_weight_bytes)
    return make_error(StatusCode::kResourceExhausted,
                      "engine for '%s': placing its weights takes %s of HBM over %u NPUs (%u "
                      "attention replicas), more than the functional limit of %s; run full-size "
                      "models in timing mode (moe simulate)",
                      c.name.c_str(), format_bytes(double(need)).c_str(), R, dp,
                      format_bytes(double(options.max_weight_bytes)).c_str());
  auto loaded = DeviceWeights::load(runtime, weights, placement, options.progress);
  if (!loaded.ok()) return Status(loaded.status()).with_context(strformat("engine for '%s'", c.name.c_str()));
  s->weights = std::move(loaded).value();

  if (c.num_moe_layers() > 0) {
    ic::MoeBufferConfig bc;
    bc.npus = options.npus;
    bc.ranks_per_npu = rpn;
    bc.max_tokens_per_rank = options.max_tokens_per_rank;
    bc.hidden = c.hidden;
    bc.max_topk = c.top_k;
    bc.dispatch_format = options.dispatch_format;
    bc.combine_format = options.combine_format;
    bc.mode = ic::Mode::kFunctional;
    bc.completion = options.completion;
    // Only the attention DP ranks dispatch: with fewer of them than EP ranks, only their NPUs
    // meet in the dispatch barrier (interconnect/moe_buffer.h, source_ranks).
    if (dp < R) bc.source_ranks = s->dp_ranks;
    auto buffer = ic::MoeBuffer::create(runtime.transport(), runtime.memory(), bc);
    if (!buffer.ok()) return Status(buffer.status()).with_context("engine: MoE buffer");
    s->buffer = std::move(buffer).value();
  }
  for (uint32_t r = 0; r < R; ++r) {
    auto stream = rt::Stream::create(runtime, s->npus[r], s->dies[r]);
    if (!stream.ok()) return Status(stream.status()).with_context(strformat("engine: stream of EP rank %u", r));
    s->streams.push_back(std::move(stream).value());
  }
  KvPoolShape shape;
  shape.num_layers = c.num_layers;
  shape.num_kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim;
  shape.dtype = options.kv_dtype;
  shape.block_positions = options.kv_block_positions;
  shape.num_blocks = options.kv_blocks_per_rank;
  for (uint32_t d = 0; d < dp; ++d) {
    MOE_TRY_ASSIGN(KvPool pool, KvPool::create(runtime.memory(), s->npus[s->dp_ranks[d]], d, shape));
    s->pools.push_back(std::move(pool));
  }
  s->seqs_per_dp.assign(dp, 0);
  MOE_TRY_ASSIGN(s->rope, kernels::RopeTable::create(c.head_dim, c.rope_theta, c.max_seq_len,
                                                     kernels::RopeStyle::kHalfSplit));
  s->router = RouterConfig::from_model(c);
  s->expert_load.assign(c.num_moe_layers(), std::vector<uint64_t>(c.num_experts, 0));

  // Jobs: fixed objects a kernel body's context points to (valid until the engine closes).
  s->homes.resize(dp);
  for (uint32_t d = 0; d < dp; ++d) {
    HomeWork& h = s->homes[d];
    h.rank = s->dp_ranks[d];
    for (uint32_t l = 0; l < c.num_layers; ++l) {
      const bool moe = c.is_moe_layer(l);
      h.jobs.push_back({s.get(), EngineJob::Kind::kAttention, d, l});
      h.jobs.push_back({s.get(), moe ? EngineJob::Kind::kRouter : EngineJob::Kind::kDenseFfn, d, l});
      h.jobs.push_back({s.get(), EngineJob::Kind::kMoeOut, d, l});
    }
    h.jobs.push_back({s.get(), EngineJob::Kind::kHead, d, c.num_layers});
  }
  s->ranks.resize(R);
  for (uint32_t r = 0; r < R; ++r)
    for (uint32_t m = 0; m < c.num_moe_layers(); ++m)
      s->ranks[r].jobs.push_back({s.get(), EngineJob::Kind::kExperts, r, c.num_dense_layers + m});
  s->options = std::move(options);
  MOE_INFO("engine '%s': %u EP ranks, %u attention DP ranks, %s of weights in HBM", c.name.c_str(),
           R, dp, format_bytes(double(need)).c_str());
  return std::unique_ptr<Engine>(new Engine(std::move(s)));
}

StatusOr<SeqId> Engine::open_sequence(std::optional<uint32_t> dp) {
  EngineState& s = *s_;
  const uint32_t D = static_cast<uint32_t>(s.homes.size());
  uint32_t home = 0;
  if (dp) {
    if (*dp >= D)
      return make_error(StatusCode::kOutOfRange, "open_sequence: DP rank %u; the engine has %u",
                        *dp, D);
    home = *dp;
  } else {
    for (uint32_t d = 1; d < D; ++d)
      if (s.seqs_per_dp[d] < s.seqs_per_dp[home]) home = d;
  }
  uint32_t index;
  if (!s.free_seq_slots.empty()) {
    index = s.free_seq_slots.back();
    s.free_seq_slots.pop_back();
  } else {
    index = static_cast<uint32_t>(s.seqs.size());
    s.seqs.emplace_back();
  }
  EngineSequence& q = s.seqs[index];
  q.open = true;
  q.dp = home;
  ++s.seqs_per_dp[home];
  return SeqId{index, q.generation};
}

Status Engine::close_sequence(SeqId seq) {
  EngineSequence* q = s_->find(seq);
  if (q == nullptr)
    return make_error(StatusCode::kNotFound, "close_sequence: no open sequence %u (generation %u)",
                      seq.index, seq.generation);
  q->kv.release(s_->pools[q->dp]);
  q->open = false;
  ++q->generation;
  --s_->seqs_per_dp[q->dp];
  s_->free_seq_slots.push_back(seq.index);
  return ok_status();
}

Status Engine::truncate_sequence(SeqId seq, uint32_t length) {
  EngineSequence* q = s_->find(seq);
  if (q == nullptr)
    return make_error(StatusCode::kNotFound, "truncate_sequence: no open sequence %u", seq.index);
  if (length > q->kv.length())
    return make_error(StatusCode::kOutOfRange,
                      "truncate_sequence: sequence %u has %u positions; cannot grow it to %u",
                      seq.index, q->kv.length(), length);
  q->kv.set_length(length);
  return ok_status();
}

StatusOr<uint32_t> Engine::sequence_length(SeqId seq) const {
  const EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "no open sequence %u", seq.index);
  return q->kv.length();
}

Status Engine::reserve_sequence(SeqId seq, uint32_t positions) {
  EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "reserve_sequence: no open sequence %u", seq.index);
  if (positions > s_->config.max_seq_len)
    return make_error(StatusCode::kOutOfRange, "reserve_sequence: %u positions exceed the model's "
                      "max_seq_len %u", positions, s_->config.max_seq_len);
  return q->kv.reserve(s_->pools[q->dp], positions);
}

StatusOr<uint32_t> Engine::sequence_capacity(SeqId seq) const {
  const EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "no open sequence %u", seq.index);
  return q->kv.capacity();
}

StatusOr<uint32_t> Engine::sequence_home(SeqId seq) const {
  const EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "no open sequence %u", seq.index);
  return q->dp;
}

StatusOr<SequenceKvBlocks> Engine::sequence_kv_blocks(SeqId seq) const {
  const EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "sequence_kv_blocks: no open sequence %u", seq.index);
  const KvPool& pool = s_->pools[q->dp];
  SequenceKvBlocks out;
  out.npu = dp_npu(q->dp);
  out.length = q->kv.length();
  out.num_layers = pool.shape().num_layers;
  out.num_blocks = q->kv.num_blocks();
  out.block_positions = pool.shape().block_positions;
  out.dtype = pool.shape().dtype;
  out.block_bytes = pool.shape().block_bytes();
  out.k.reserve(uint64_t{out.num_layers} * out.num_blocks);
  out.v.reserve(uint64_t{out.num_layers} * out.num_blocks);
  for (uint32_t l = 0; l < out.num_layers; ++l)
    for (uint32_t b : q->kv.block_table()) {
      out.k.push_back(pool.k_block_addr(l, b));
      out.v.push_back(pool.v_block_addr(l, b));
    }
  return out;
}

Status Engine::commit_imported_kv(SeqId seq, uint32_t length) {
  EngineSequence* q = s_->find(seq);
  if (q == nullptr) return make_error(StatusCode::kNotFound, "commit_imported_kv: no open sequence %u", seq.index);
  if (length > q->kv.capacity())
    return make_error(StatusCode::kOutOfRange, "commit_imported_kv: sequence %u holds %u positions; "
                      "%u asked (reserve first)", seq.index, q->kv.capacity(), length);
  q->kv.set_length(length);
  return ok_status();
}

ModelTime Engine::modelled_now() const {
  ModelTime t;
  for (const auto& st : s_->streams) t = max(t, st->modelled_time());
  return t;
}

const ModelConfig& Engine::config() const { return s_->config; }
rt::Runtime& Engine::runtime() const { return s_->runtime; }
uint32_t Engine::num_ranks() const { return static_cast<uint32_t>(s_->npus.size()); }
uint32_t Engine::num_dp_ranks() const { return static_cast<uint32_t>(s_->homes.size()); }
uint32_t Engine::max_tokens_per_rank() const { return s_->options.max_tokens_per_rank; }
dev::NpuId Engine::dp_npu(uint32_t dp) const { return s_->npus[s_->dp_ranks[dp]]; }
uint32_t Engine::open_sequences() const {
  return static_cast<uint32_t>(s_->seqs.size() - s_->free_seq_slots.size());
}
uint32_t Engine::kv_block_positions() const { return s_->options.kv_block_positions; }
uint32_t Engine::kv_free_blocks(uint32_t dp) const { return s_->pools[dp].free_blocks(); }
uint32_t Engine::kv_total_blocks(uint32_t dp) const { return s_->pools[dp].shape().num_blocks; }
uint32_t Engine::sequences_on(uint32_t dp) const { return s_->seqs_per_dp[dp]; }
const DeviceWeights& Engine::weights() const { return s_->weights; }
const ic::ExpertMap& Engine::expert_map(uint32_t moe_layer) const {
  return s_->config.num_moe_layers() == 0 ? s_->weights.placement().map : s_->weights.layer_map(moe_layer);
}
const std::vector<std::vector<uint64_t>>& Engine::expert_load() const { return s_->expert_load; }

}  // namespace moe::models
