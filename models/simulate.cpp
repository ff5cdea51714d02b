// Timing-mode step simulation (see simulate.h for the model). The engine below keeps one
// stream per die of group 0, one MoeBuffer per unit in flight, and per die the busy time of
// each part (measured from the stream's modelled clock: a part's launches are contiguous,
// so its busy time is the stream's end after it minus its start, max(end before, floor)).
// Invariant: host launch order on every stream is the order the overlap schedule wants on
// the die (streams run in order), and dispatch/combine of a unit are issued after the
// compute they consume is launched, so each starts at the modelled time its input is ready.
#include "models/simulate.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "interconnect/ic_options.h"
#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"
#include "interconnect/moe_dispatch_map.h"
#include "memory/mem_options.h"
#include "models/cost/cost_layer.h"
#include "models/cost/cost_linear.h"
#include "models/cost/cost_misc.h"
#include "models/cost/cost_moe.h"
#include "models/cost/cost_norm.h"
#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "runtime/base/json.h"
#include "runtime/base/options.h"
#include "runtime/base/strformat.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"

namespace moe::models {
namespace {

enum Part : int { kAttention = 0, kExperts = 1, kOther = 2, kNumComputeParts = 3 };

uint32_t share_of(uint64_t total, uint32_t parts, uint32_t index) {
  return static_cast<uint32_t>(total / parts + (index < total % parts ? 1 : 0));
}

// Sets an int option to at least `value` for the lifetime of the guard.
class OptionFloor {
 public:
  OptionFloor(const opt::Option<int64_t>& option, const char* name, int64_t value)
      : name_(name), old_(option.get()) {
    if (old_ < value && opt::set_option(name, std::to_string(value)).ok()) set_ = true;
  }
  ~OptionFloor() {
    if (set_) (void)opt::set_option(name_, std::to_string(old_));
  }

 private:
  const char* name_;
  int64_t old_;
  bool set_ = false;
};

struct Unit {
  uint32_t attention_seqs_total = 0;  // sequences whose attention this unit carries (per NPU)
  uint32_t moe_tokens = 0;            // tokens per NPU in this unit's MoE part
};

class StepEngine {
 public:
  StepEngine(rt::Runtime& runtime, const ModelConfig& c, const SimulateOptions& o,
             const dev::Topology& t)
      : rt_(runtime), c_(c), o_(o), dies_(std::max<uint32_t>(1, t.dies_per_npu)) {}

  Status init(const ic::MoeBufferConfig& buffer_config, uint32_t buffers);
  Status run(SimulateResult* r);

 private:
  rt::Stream& stream(uint32_t rank, uint32_t die) { return *streams_[rank * dies_ + die]; }
  Status launch(uint32_t rank, uint32_t die, Part part, const std::vector<cost::KernelCost>& costs);
  double rank_compute_end(uint32_t rank) {
    double t = 0;
    for (uint32_t d = 0; d < dies_; ++d) {
      rt::Stream& s = stream(rank, d);
      t = std::max({t, s.modelled_time().ns, s.not_before().ns});
    }
    return t;
  }
  Status wait_rank(uint32_t rank, double t_ns) {
    for (uint32_t d = 0; d < dies_; ++d) MOE_TRY(stream(rank, d).wait_until(ModelTime::from_ns(t_ns)));
    return Status();
  }
  double now() {
    double t = 0;
    for (auto& s : streams_) t = std::max(t, s->modelled_time().ns);
    for (auto& b : buffers_) t = std::max(t, b->group_now().ns);
    return t;
  }
  Status layer(uint32_t layer_index, bool moe, const std::vector<Unit>& units);
  Status flush_pending(uint32_t unit);
  Status sum_partials(uint32_t rank, uint64_t rows, Part part);
  Status sync_dies(uint32_t rank);
  Status attention(const Unit& unit);
  Status step_end();
  void draw_routing(uint32_t tokens);

  rt::Runtime& rt_;
  const ModelConfig& c_;
  const SimulateOptions& o_;
  uint32_t dies_;
  uint32_t ep_ = 0;
  uint32_t tokens_per_seq_ = 1;
  std::vector<std::unique_ptr<rt::Stream>> streams_;
  std::vector<std::unique_ptr<ic::MoeBuffer>> buffers_;
  ic::ExpertMap map_;
  std::mt19937_64 rng_;
  std::vector<std::vector<int32_t>> ids_;
  std::vector<std::vector<float>> weights_;
  std::vector<std::array<double, kNumComputeParts>> busy_;  // per die
  double hbm_bytes_ = 0;  // summed over the group's dies
  double kernels_ = 0;
  std::vector<std::vector<double>> pending_;  // per unit: per rank combine end (< 0: none)
  std::vector<uint32_t> pending_tokens_;
  double comm_[2] = {0, 0};  // dispatch, combine latency sums
 public:
  // Accumulators read by run()'s scaling.
  struct Snapshot {
    std::vector<std::array<double, kNumComputeParts>> busy;
    double comm[2] = {0, 0};
    double time = 0;
    double hbm_bytes = 0;
    double kernels = 0;
  };
  Snapshot snapshot() { return {busy_, {comm_[0], comm_[1]}, now(), hbm_bytes_, kernels_}; }
  std::vector<Unit> units_;
};

Status StepEngine::init(const ic::MoeBufferConfig& bc, uint32_t buffers) {
  ep_ = static_cast<uint32_t>(bc.npus.size());
  tokens_per_seq_ = o_.phase == Phase::kDecode ? 1 + o_.mtp : o_.prefill_len;
  for (uint32_t r = 0; r < ep_; ++r)
    for (uint32_t d = 0; d < dies_; ++d) {
      MOE_TRY_ASSIGN(std::unique_ptr<rt::Stream> s, rt::Stream::create(rt_, bc.npus[r], d));
      streams_.push_back(std::move(s));
    }
  busy_.assign(streams_.size(), {0, 0, 0});
  for (uint32_t b = 0; b < buffers; ++b) {
    MOE_TRY_ASSIGN(std::unique_ptr<ic::MoeBuffer> buf,
                   ic::MoeBuffer::create(rt_.transport(), rt_.memory(), bc));
    buffers_.push_back(std::move(buf));
  }
  // Expert slots: rank r holds slots [r * per, (r + 1) * per), slot s holds expert s mod X.
  const uint32_t x = c_.num_experts;
  const uint32_t per = (x + ep_ - 1) / ep_;
  map_ = ic::ExpertMap(x, ep_);
  for (uint32_t r = 0; r < ep_; ++r)
    for (uint32_t i = 0; i < per; ++i) MOE_TRY(map_.add_replica((r * per + i) % x, r));
  MOE_TRY(map_.validate());
  rng_.seed(o_.seed);
  return Status();
}

Status StepEngine::launch(uint32_t rank, uint32_t die, Part part,
                          const std::vector<cost::KernelCost>& costs) {
  if (costs.empty()) return Status();
  rt::Stream& s = stream(rank, die);
  const double t0 = std::max(s.modelled_time().ns, s.not_before().ns);
  for (const cost::KernelCost& k : costs) {
    MOE_TRY(s.launch(cost::to_kernel(k)));
    hbm_bytes_ += k.hbm_bytes;
    kernels_ += 1;
  }
  busy_[rank * dies_ + die][part] += s.modelled_time().ns - t0;
  return Status();
}

void StepEngine::draw_routing(uint32_t tokens) {
  const uint32_t k = c_.top_k, x = c_.num_experts;
  ids_.resize(ep_);
  weights_.resize(ep_);
  for (uint32_t r = 0; r < ep_; ++r) {
    ids_[r].resize(uint64_t{tokens} * k);
    weights_[r].assign(uint64_t{tokens} * k, 1.0f / float(k));
    for (uint32_t t = 0; t < tokens; ++t) {
      int32_t* row = ids_[r].data() + uint64_t{t} * k;
      for (uint32_t j = 0; j < k; ++j) {
        int32_t e;
        do {
          e = static_cast<int32_t>(rng_() % x);
        } while (std::find(row, row + j, e) != row + j);
        row[j] = e;
      }
    }
  }
}

// An FFN split over the dies by its intermediate dimension (or an attention block split by
// heads) leaves one partial output per die: die 0 adds them (`rows` tokens) once every die
// has finished its share.
Status StepEngine::sum_partials(uint32_t rank, uint64_t rows, Part part) {
  if (dies_ < 2 || rows == 0) return Status();
  double t = 0;
  for (uint32_t d = 0; d < dies_; ++d) t = std::max(t, stream(rank, d).modelled_time().ns);
  MOE_TRY(stream(rank, 0).wait_until(ModelTime::from_ns(t)));
  return launch(rank, 0, part, {cost::residual_add_cost(rows, c_.hidden)});
}

// Every die of `rank` waits until all of them have finished what was launched so far (an
// exchange between the dies of one NPU: its on-chip transfer is not charged, as for the
// partial sums).
Status StepEngine::sync_dies(uint32_t rank) {
  double t = 0;
  for (uint32_t d = 0; d < dies_; ++d) t = std::max(t, stream(rank, d).modelled_time().ns);
  for (uint32_t d = 0; d < dies_; ++d) MOE_TRY(stream(rank, d).wait_until(ModelTime::from_ns(t)));
  return Status();
}

// A unit's attention blocks on every rank. Split 1: each die runs the whole block for its
// share of the sequences. Split s = dies: every die runs num_heads / s heads for all of the
// unit's sequences (cost_layer.h): the down-projections' column shares, the latent exchange
// (a sync), the per-head stage, die 0's sum of the o_proj partials, and the residual add of
// each die's share of the tokens (the share the router and FFN take next).
Status StepEngine::attention(const Unit& unit) {
  cost::AttentionWork w;
  w.tokens_per_seq = tokens_per_seq_;
  w.kv_len = o_.phase == Phase::kDecode ? o_.kv_len : 0;
  w.prefill = o_.phase == Phase::kPrefill;
  if (o_.attention_split <= 1) {
    for (uint32_t r = 0; r < ep_; ++r)
      for (uint32_t d = 0; d < dies_; ++d) {
        w.seqs = share_of(unit.attention_seqs_total, dies_, d);
        MOE_TRY(launch(r, d, kAttention, cost::attention_block_costs(c_, w, o_.precision)));
      }
    return Status();
  }
  w.seqs = unit.attention_seqs_total;
  w.head_split = o_.attention_split;
  const uint64_t rows = w.seqs * w.tokens_per_seq;
  for (uint32_t r = 0; r < ep_; ++r) {
    for (uint32_t d = 0; d < dies_; ++d)
      MOE_TRY(launch(r, d, kAttention, cost::attention_input_costs(c_, w, o_.precision)));
    MOE_TRY(sync_dies(r));
    for (uint32_t d = 0; d < dies_; ++d)
      MOE_TRY(launch(r, d, kAttention, cost::attention_head_costs(c_, w, o_.precision)));
    MOE_TRY(sum_partials(r, rows, kAttention));
    MOE_TRY(sync_dies(r));
    for (uint32_t d = 0; d < dies_; ++d)
      MOE_TRY(launch(r, d, kAttention,
                     {cost::residual_add_cost(share_of(rows, dies_, d), c_.hidden)}));
  }
  return Status();
}

// The FFN residual of a unit's previous layer: waits for its combine, then adds.
Status StepEngine::flush_pending(uint32_t u) {
  if (pending_.size() <= u || pending_[u].empty()) return Status();
  for (uint32_t r = 0; r < ep_; ++r) {
    MOE_TRY(wait_rank(r, pending_[u][r]));
    for (uint32_t d = 0; d < dies_; ++d)
      MOE_TRY(launch(r, d, kOther,
                     {cost::residual_add_cost(share_of(pending_tokens_[u], dies_, d), c_.hidden)}));
  }
  pending_[u].clear();
  return Status();
}

Status StepEngine::layer(uint32_t /*layer_index*/, bool moe, const std::vector<Unit>& units) {
  const uint32_t m = std::max<uint32_t>(1, o_.microbatches);
  const uint64_t h = c_.hidden;
  pending_.resize(units.size());
  pending_tokens_.resize(units.size());
  const uint32_t width_experts = (c_.expert_intermediate + dies_ - 1) / dies_;
  for (size_t first = 0; first < units.size(); first += m) {
    const size_t last = std::min(units.size(), first + m);
    std::vector<ic::DispatchHandle> handles(last - first);
    // Phase 1: attention, router, dispatch (and the local shared experts), per unit.
    for (size_t u = first; u < last; ++u) {
      const Unit& unit = units[u];
      if (unit.attention_seqs_total > 0) {
        // Attention needs every token's previous layer: all of this unit's (decode), all
        // units' (prefill, whose unit carries every sequence).
        if (o_.phase == Phase::kPrefill) {
          for (size_t v = 0; v < units.size(); ++v) MOE_TRY(flush_pending(uint32_t(v)));
        } else {
          MOE_TRY(flush_pending(uint32_t(u)));
        }
        MOE_TRY(attention(unit));
      } else {
        MOE_TRY(flush_pending(uint32_t(u)));
      }
      const uint32_t n = unit.moe_tokens;
      if (!moe) {
        for (uint32_t r = 0; r < ep_; ++r) {
          for (uint32_t d = 0; d < dies_; ++d) {
            const cost::ExpertFfnCost f = cost::expert_ffn_cost(
                n, h, (c_.dense_intermediate + dies_ - 1) / dies_, o_.precision);
            MOE_TRY(launch(r, d, kExperts,
                           {cost::rmsnorm_cost(share_of(n, dies_, d), h), f.up_gate, f.swiglu, f.down}));
          }
          MOE_TRY(sum_partials(r, n, kExperts));
          for (uint32_t d = 0; d < dies_; ++d)
            MOE_TRY(launch(r, d, kOther, {cost::residual_add_cost(share_of(n, dies_, d), h)}));
        }
        continue;
      }
      for (uint32_t r = 0; r < ep_; ++r)
        for (uint32_t d = 0; d < dies_; ++d) {
          const uint32_t nd = share_of(n, dies_, d);
          MOE_TRY(launch(r, d, kOther,
                         {cost::rmsnorm_cost(nd, h), cost::router_gate_cost(nd, h, c_.num_experts),
                          cost::router_topk_cost(nd, c_.num_experts, c_.top_k)}));
        }
      ic::MoeBuffer& buf = *buffers_[u - first];
      for (uint32_t r = 0; r < ep_; ++r) buf.advance_rank(r, ModelTime::from_ns(rank_compute_end(r)));
      draw_routing(n);
      std::vector<ic::DispatchInput> in(ep_);
      for (uint32_t r = 0; r < ep_; ++r) {
        in[r].num_tokens = n;
        in[r].topk_ids = ids_[r];
        in[r].topk_weights = weights_[r];
      }
      MOE_TRY_ASSIGN(handles[u - first], ic::moe_dispatch(buf, map_, in, c_.top_k));
      comm_[0] += handles[u - first].stats.latency_ns;
      if (c_.num_shared_experts > 0) {
        const uint32_t width = (c_.num_shared_experts * c_.expert_intermediate + dies_ - 1) / dies_;
        for (uint32_t r = 0; r < ep_; ++r)
          for (uint32_t d = 0; d < dies_; ++d) {
            const cost::ExpertFfnCost f = cost::expert_ffn_cost(n, h, width, o_.precision);
            MOE_TRY(launch(r, d, kExperts, {f.up_gate, f.swiglu, f.down}));
          }
      }
    }
    if (!moe) continue;
    // Phase 2: routed experts when their tokens have arrived, then combine, per unit.
    for (size_t u = first; u < last; ++u) {
      const ic::DispatchHandle& hd = handles[u - first];
      ic::MoeBuffer& buf = *buffers_[u - first];
      for (uint32_t r = 0; r < ep_; ++r) {
        MOE_TRY(wait_rank(r, hd.stats.rank_end_ns[r]));
        const ic::RankReceive& rx = hd.recv[r];
        std::vector<uint32_t> rows(rx.experts.size());
        for (size_t j = 0; j < rows.size(); ++j) rows[j] = rx.expert_offsets[j + 1] - rx.expert_offsets[j];
        const cost::ExpertFfnCost f =
            cost::grouped_expert_ffn_cost(rows, h, width_experts, o_.precision);
        if (f.rows > 0) {
          for (uint32_t d = 0; d < dies_; ++d)
            MOE_TRY(launch(r, d, kExperts, {f.up_gate, f.swiglu, f.down}));
          MOE_TRY(sum_partials(r, rx.num_slots, kExperts));
        }
        buf.advance_rank(r, ModelTime::from_ns(rank_compute_end(r)));
      }
      ic::PhaseStats cs;
      MOE_TRY(ic::moe_combine(buf, hd, {}, {}, &cs));
      comm_[1] += cs.latency_ns;
      pending_[u] = cs.rank_end_ns;
      pending_tokens_[u] = units[u].moe_tokens;
    }
  }
  return Status();
}

Status StepEngine::step_end() {
  for (size_t u = 0; u < pending_.size(); ++u) MOE_TRY(flush_pending(uint32_t(u)));
  const uint64_t h = c_.hidden;
  // Logits: decode every new token; prefill only each prompt's last.
  const uint32_t seqs = o_.batch_per_npu;
  const uint64_t tokens = o_.phase == Phase::kDecode ? uint64_t{seqs} * tokens_per_seq_ : seqs;
  for (uint32_t r = 0; r < ep_; ++r)
    for (uint32_t d = 0; d < dies_; ++d) {
      const uint64_t nd = share_of(tokens, dies_, d);
      std::vector<cost::KernelCost> ks = {cost::rmsnorm_cost(nd, h),
                                          cost::lm_head_cost(nd, h, c_.vocab_size, dev::Precision::kBf16),
                                          cost::sampling_cost(nd, c_.vocab_size)};
      if (o_.mtp > 0) {  // the MTP module's projection (its MoE layer ran as a layer) and head
        ks.push_back(cost::linear_cost(nd, 2 * h, h, o_.precision, "mtp_eh_proj"));
        ks.push_back(cost::lm_head_cost(nd, h, c_.vocab_size, dev::Precision::kBf16));
        ks.push_back(cost::sampling_cost(nd, c_.vocab_size));
      }
      MOE_TRY(launch(r, d, kOther, ks));
    }
  return Status();
}

Status StepEngine::run(SimulateResult* res) {
  const uint64_t h = c_.hidden;
  // Units: decode: the batch in `microbatches` parts; prefill: attention over every prompt
  // in unit 0, the MoE part in chunks.
  const uint32_t m = std::max<uint32_t>(1, o_.microbatches);
  std::vector<Unit>& units = units_;
  if (o_.phase == Phase::kDecode) {
    for (uint32_t i = 0; i < m; ++i) {
      const uint32_t seqs = share_of(o_.batch_per_npu, m, i);
      units.push_back({seqs, seqs * tokens_per_seq_});
    }
  } else {
    const uint64_t tokens = uint64_t{o_.batch_per_npu} * o_.prefill_len;
    const uint64_t chunks = (tokens + o_.prefill_chunk_tokens - 1) / o_.prefill_chunk_tokens;
    for (uint64_t i = 0; i < chunks; ++i)
      units.push_back({i == 0 ? o_.batch_per_npu : 0u,
                       share_of(tokens, static_cast<uint32_t>(chunks), static_cast<uint32_t>(i))});
  }
  res->units = static_cast<uint32_t>(units.size());
  // Embedding.
  for (uint32_t r = 0; r < ep_; ++r)
    for (uint32_t d = 0; d < dies_; ++d)
      MOE_TRY(launch(r, d, kOther,
                     {cost::embedding_cost(share_of(uint64_t{o_.batch_per_npu} * tokens_per_seq_, dies_, d), h)}));
  for (uint32_t l = 0; l < c_.num_dense_layers; ++l) MOE_TRY(layer(l, false, units));
  // MoE layers: simulate k of them, scale the rest (simulate.h).
  const uint32_t total = res->moe_layers_total;
  const uint32_t k = res->moe_layers_simulated;
  std::vector<Snapshot> snaps;
  snaps.push_back(snapshot());
  for (uint32_t i = 0; i < k; ++i) {
    MOE_TRY(layer(c_.num_dense_layers + i, true, units));
    snaps.push_back(snapshot());
  }
  // The FFN residual of a MoE layer is launched at the next layer's start (its combine is
  // still in flight when the layer's work is issued): the window of the simulated layers
  // holds k - 1 of them, so the last one's joins the window before the parts are scaled.
  // The window's time stays the layer's end (the step's scaling measures end to end).
  for (size_t u = 0; u < pending_.size(); ++u) MOE_TRY(flush_pending(uint32_t(u)));
  if (k > 0) {
    const double end_of_layers = snaps[k].time;
    snaps[k] = snapshot();
    snaps[k].time = end_of_layers;
  }
  MOE_TRY(step_end());
  for (auto& s : streams_) MOE_TRY(s->synchronize());
  const Snapshot end = snapshot();
  // Scale: extra = total - k layers.
  const double extra = double(total - k);
  double per_layer_time = 0;
  if (k >= 2) per_layer_time = (snaps[k].time - snaps[1].time) / double(k - 1);
  else if (k == 1) per_layer_time = snaps[1].time - snaps[0].time;
  res->step_ns = end.time + extra * per_layer_time;
  const double scale = k > 0 ? extra / double(k) : 0.0;
  const size_t n_dies = busy_.size();
  std::array<double, kNumComputeParts> mean{0, 0, 0};
  double busiest = 0;
  for (size_t i = 0; i < n_dies; ++i) {
    double die_total = 0;
    for (int p = 0; p < kNumComputeParts; ++p) {
      const double moe_part = snaps[k].busy[i][p] - snaps[0].busy[i][p];
      const double v = end.busy[i][p] + scale * moe_part;
      mean[p] += v / double(n_dies);
      die_total += v;
      if (p == kAttention) res->attention_busiest_die_ns = std::max(res->attention_busiest_die_ns, v);
    }
    busiest = std::max(busiest, die_total);
  }
  res->parts.attention_ns = mean[kAttention];
  res->parts.experts_ns = mean[kExperts];
  res->parts.other_ns = mean[kOther];
  res->parts.dispatch_ns = end.comm[0] + scale * (snaps[k].comm[0] - snaps[0].comm[0]);
  res->parts.combine_ns = end.comm[1] + scale * (snaps[k].comm[1] - snaps[0].comm[1]);
  res->comm_ns = res->parts.dispatch_ns + res->parts.combine_ns;
  res->compute_busy_ns = busiest;
  res->hbm_bytes_per_die =
      (end.hbm_bytes + scale * (snaps[k].hbm_bytes - snaps[0].hbm_bytes)) / double(n_dies);
  res->kernels_per_die = (end.kernels + scale * (snaps[k].kernels - snaps[0].kernels)) / double(n_dies);
  res->exposed_comm_ns = std::clamp(res->step_ns - busiest, 0.0, res->comm_ns);
  res->unoverlapped_comm_share = res->comm_ns > 0 ? res->exposed_comm_ns / res->comm_ns : 0.0;
  return Status();
}

}  // namespace

Status validate_simulate_options(const ModelConfig& c, const SimulateOptions& o,
                                 uint32_t supernode_npus) {
  auto bad = [](auto... args) { return make_error(StatusCode::kInvalidArgument, args...); };
  const uint32_t npus = o.npus == 0 ? supernode_npus : o.npus;
  if (npus > supernode_npus)
    return bad("--npus %u: the supernode %s has %u NPUs", npus, o.supernode.c_str(), supernode_npus);
  const uint32_t ep = o.ep == 0 ? npus : o.ep;
  if (ep > npus) return bad("--ep %u exceeds --npus %u", ep, npus);
  if (npus % ep != 0)
    return bad("--ep %u does not divide --npus %u (expert-parallel groups must tile the NPUs)", ep, npus);
  if (o.batch_per_npu == 0) return bad("--batch-per-npu is 0: give at least one sequence per NPU");
  if (o.phase == Phase::kDecode && o.kv_len == 0) return bad("--kv-len is 0");
  if (o.phase == Phase::kPrefill && o.prefill_len == 0) return bad("--prefill-len is 0");
  if (o.prefill_chunk_tokens == 0) return bad("--chunk-tokens is 0");
  if (o.precision != dev::Precision::kBf16 && o.precision != dev::Precision::kInt8)
    return bad("--precision: bf16 or int8");
  if (o.mtp > 1) return bad("--mtp %u: 0 or 1", o.mtp);
  if (o.mtp > 0 && o.phase != Phase::kDecode) return bad("--mtp applies to decode only");
  if (o.mtp > 0 && c.mtp_layers == 0) return bad("--mtp 1: model '%s' has no MTP module", c.name.c_str());
  if (!(o.mtp_accept >= 0.0 && o.mtp_accept <= 1.0)) return bad("--mtp-accept %g: must be in [0, 1]", o.mtp_accept);
  if (o.microbatches < 1 || o.microbatches > 2) return bad("--microbatches %u: 1 or 2", o.microbatches);
  if (o.phase == Phase::kDecode && o.microbatches > o.batch_per_npu)
    return bad("--microbatches %u exceeds --batch-per-npu %u", o.microbatches, o.batch_per_npu);
  if (c.num_experts == 0 || c.top_k == 0) return bad("model '%s' has no routed experts", c.name.c_str());
  if (o.attention_split < 1 || o.attention_split > 2)
    return bad("attention_split (--attention-split) %u: 1 (data-parallel over the dies) or 2 "
               "(heads split over the dies)", o.attention_split);
  if (c.num_heads % o.attention_split != 0)
    return bad("attention_split (--attention-split) %u does not divide model '%s''s %u heads",
               o.attention_split, c.name.c_str(), c.num_heads);
  return Status();
}

StatusOr<SimulateResult> simulate(const ModelConfig& c, const SimulateOptions& options) {
  const int64_t wall0 = wall_now_ns();
  MOE_TRY(validate_config(c));
  SimulateResult res;
  res.config = c;
  SimulateOptions o = options;
  // Resolve the NPU counts from the supernode before opening the runtime (options first).
  rt::RuntimeOptions ro;
  ro.supernode = o.supernode;
  ro.mode = rt::ExecutionMode::kTiming;
  ro.open_transport = false;
  uint32_t supernode_npus = 0, dies_per_npu = 1;
  {
    MOE_TRY_ASSIGN(std::unique_ptr<rt::Runtime> probe, rt::Runtime::open(ro));
    supernode_npus = probe->num_devices();
    dies_per_npu = probe->topology().dies_per_npu;
  }
  MOE_TRY(validate_simulate_options(c, o, supernode_npus));
  if (o.attention_split > 1 && dies_per_npu != o.attention_split)
    return make_error(StatusCode::kInvalidArgument,
                      "attention_split (--attention-split) %u: the NPUs of supernode %s have %u "
                      "die(s); the heads are split over all of an NPU's dies",
                      o.attention_split, o.supernode.c_str(), dies_per_npu);
  if (o.npus == 0) o.npus = supernode_npus;
  if (o.ep == 0) o.ep = o.npus;
  res.moe_layers_total = c.num_moe_layers() + (o.mtp > 0 ? c.mtp_layers : 0);
  if (o.moe_layers == 0xffffffffu) o.moe_layers = 2;
  res.moe_layers_simulated =
      o.moe_layers == 0 ? res.moe_layers_total : std::min(o.moe_layers, res.moe_layers_total);
  res.groups = o.npus / o.ep;
  res.experts_per_npu = (c.num_experts + o.ep - 1) / o.ep;
  res.tokens_per_seq = o.phase == Phase::kDecode ? 1 + o.mtp : o.prefill_len;

  // Dispatch buffers: one per unit in flight, sized for the largest unit.
  const uint32_t m = o.microbatches;
  uint64_t unit_tokens = 0;
  if (o.phase == Phase::kDecode)
    unit_tokens = uint64_t{(o.batch_per_npu + m - 1) / m} * res.tokens_per_seq;
  else
    unit_tokens = std::min<uint64_t>(o.prefill_chunk_tokens, uint64_t{o.batch_per_npu} * o.prefill_len);
  ic::MoeBufferConfig bc;
  for (uint32_t r = 0; r < o.ep; ++r) bc.npus.push_back(r);
  bc.max_tokens_per_rank = static_cast<uint32_t>(unit_tokens);
  bc.hidden = c.hidden;
  bc.max_topk = c.top_k;
  bc.dispatch_format = o.precision == dev::Precision::kInt8 ? ic::TokenFormat::kInt8 : ic::TokenFormat::kBf16;
  bc.combine_format = ic::TokenFormat::kBf16;
  bc.mode = ic::Mode::kTiming;
  bc.completion = o.completion;
  MOE_TRY_ASSIGN(ic::MoeBufferLayout layout, ic::compute_moe_buffer_layout(bc));
  res.completion = layout.completion;
  const uint32_t n_all = supernode_npus;
  const int64_t words = int64_t(m) * int64_t(layout.signal_words) + 2 * int64_t(n_all) * n_all +
                        64 * int64_t(n_all) + 16384;
  OptionFloor table(ic::options::kSignalTableWords, "IC_SIGNAL_TABLE_WORDS", words);
  OptionFloor heap(mem::kMemSymmetricHeapBytes, "MEM_SYMMETRIC_HEAP_BYTES",
                   int64_t(std::bit_ceil(uint64_t(m) * layout.rank_bytes + (uint64_t{256} << 20))));

  ro.open_transport = true;
  MOE_TRY_ASSIGN(std::unique_ptr<rt::Runtime> runtime, rt::Runtime::open(ro));
  const dev::Topology& t = runtime->topology();
  {
    StepEngine engine(*runtime, c, o, t);
    MOE_TRY(engine.init(bc, m));
    res.wall_setup_ms = double(wall_now_ns() - wall0) * 1e-6;
    MOE_TRY(engine.run(&res));
  }
  res.options = o;
  const double yield = o.mtp > 0 ? 1.0 + o.mtp_accept : 1.0;
  if (o.phase == Phase::kDecode) {
    res.tpot_ns = res.step_ns / yield;
    res.tokens_per_s_per_npu = double(o.batch_per_npu) * yield / (res.step_ns * 1e-9);
  } else {
    res.tokens_per_s_per_npu = double(o.batch_per_npu) * o.prefill_len / (res.step_ns * 1e-9);
  }

  // HBM per NPU.
  const uint32_t dies = std::max<uint32_t>(1, t.dies_per_npu);
  const double expert = cost::expert_weight_bytes(c.hidden, c.expert_intermediate, o.precision);
  HbmBudget& hb = res.hbm;
  hb.routed_expert_weights = double(res.experts_per_npu) * expert * res.moe_layers_total;
  hb.shared_and_dense_weights =
      double(c.num_shared_experts) * expert * res.moe_layers_total +
      double(c.num_dense_layers) *
          cost::expert_weight_bytes(c.hidden, c.dense_intermediate, o.precision);
  const double per_die_side =
      cost::attention_weight_bytes(c, o.precision, o.attention_split) * (c.num_layers + (o.mtp > 0 ? c.mtp_layers : 0)) +
      double(c.num_experts) * c.hidden * 2.0 * res.moe_layers_total +          // router gates
      double(c.vocab_size) * c.hidden * 2.0 * (c.tie_embeddings ? 1 : 2) +    // embedding, head
      (o.mtp > 0 ? 2.0 * c.hidden * c.hidden * cost::weight_bytes_per_elem(o.precision) : 0.0);
  hb.attention_side_weights = per_die_side * dies;
  const double positions = o.phase == Phase::kDecode ? double(o.kv_len) + res.tokens_per_seq
                                                     : double(o.prefill_len);
  hb.kv_cache = double(o.batch_per_npu) * positions * cost::kv_cache_bytes_per_token(c, o.attention_split) *
                (c.num_layers + (o.mtp > 0 ? c.mtp_layers : 0));
  hb.dispatch_buffers = double(m) * double(layout.rank_bytes);
  hb.total = hb.routed_expert_weights + hb.shared_and_dense_weights + hb.attention_side_weights +
             hb.kv_cache + hb.dispatch_buffers;
  hb.capacity = double(t.hbm.capacity_bytes);
  hb.fits = hb.total <= hb.capacity;
  res.wall_ms = double(wall_now_ns() - wall0) * 1e-6;
  return res;
}

std::string simulate_result_to_json(const SimulateResult& r) {
  const SimulateOptions& o = r.options;
  const double total = r.parts.total();
  auto share = [&](double v) { return total > 0 ? v / total : 0.0; };
  JsonWriter w;
  w.begin_object();
  w.key("model").value(r.config.name);
  w.key("supernode").value(o.supernode);
  w.key("phase").value(o.phase == Phase::kDecode ? "decode" : "prefill");
  w.key("npus").value(o.npus);
  w.key("ep").value(o.ep);
  w.key("groups").value(r.groups);
  w.key("experts_per_npu").value(r.experts_per_npu);
  w.key("batch_per_npu").value(o.batch_per_npu);
  w.key("kv_len").value(o.kv_len);
  w.key("prefill_len").value(o.prefill_len);
  w.key("chunk_tokens").value(o.prefill_chunk_tokens);
  w.key("precision").value(o.precision == dev::Precision::kInt8 ? "int8" : "bf16");
  w.key("mtp").value(o.mtp);
  w.key("mtp_accept").value(o.mtp_accept);
  w.key("microbatches").value(o.microbatches);
  w.key("attention_split").value(o.attention_split);
  w.key("units").value(r.units);
  w.key("completion").value(ic::dispatch_completion_name(r.completion));
  w.key("moe_layers_total").value(r.moe_layers_total);
  w.key("moe_layers_simulated").value(r.moe_layers_simulated);
  w.key("seed").value(o.seed);
  w.key("clock").value("modelled");
  w.key("step_ms").value(r.step_ns * 1e-6);
  w.key("tpot_ms").value(r.tpot_ns * 1e-6);
  w.key("tokens_per_s_per_npu").value(r.tokens_per_s_per_npu);
  w.key("parts").begin_object();
  const char* names[5] = {"attention", "dispatch", "experts", "combine", "other"};
  const double vals[5] = {r.parts.attention_ns, r.parts.dispatch_ns, r.parts.experts_ns,
                          r.parts.combine_ns, r.parts.other_ns};
  for (int i = 0; i < 5; ++i) {
    w.key(names[i]).begin_object();
    w.key("ms").value(vals[i] * 1e-6);
    w.key("share").value(share(vals[i]));
    w.end_object();
  }
  w.end_object();
  w.key("hbm_bytes_per_die").value(r.hbm_bytes_per_die);
  w.key("kernels_per_die").value(r.kernels_per_die);
  w.key("comm_ms").value(r.comm_ns * 1e-6);
  w.key("compute_busy_ms").value(r.compute_busy_ns * 1e-6);
  w.key("attention_busiest_die_ms").value(r.attention_busiest_die_ns * 1e-6);
  w.key("exposed_comm_ms").value(r.exposed_comm_ns * 1e-6);
  w.key("unoverlapped_comm_share").value(r.unoverlapped_comm_share);
  const HbmBudget& h = r.hbm;
  w.key("hbm_per_npu").begin_object();
  w.key("routed_expert_weights").value(h.routed_expert_weights);
  w.key("shared_and_dense_weights").value(h.shared_and_dense_weights);
  w.key("attention_side_weights").value(h.attention_side_weights);
  w.key("kv_cache").value(h.kv_cache);
  w.key("dispatch_buffers").value(h.dispatch_buffers);
  w.key("total").value(h.total);
  w.key("capacity").value(h.capacity);
  w.key("fits").value(h.fits);
  w.end_object();
  w.key("wall_ms").value(r.wall_ms);
  w.key("wall_setup_ms").value(r.wall_setup_ms);
  w.end_object();
  return w.take();
}

std::string simulate_result_to_text(const SimulateResult& r) {
  const SimulateOptions& o = r.options;
  const double total = r.parts.total();
  std::string s;
  s += strformat("%s %s on %s: %u NPUs (attention data-parallel%s), EP %u (%u group%s, %u routed expert slot%s per NPU)\n",
                 r.config.name.c_str(), o.phase == Phase::kDecode ? "decode" : "prefill",
                 o.supernode.c_str(), o.npus,
                 o.attention_split > 1 ? ", heads split over each NPU's dies" : "", o.ep, r.groups, r.groups == 1 ? "" : "s",
                 r.experts_per_npu, r.experts_per_npu == 1 ? "" : "s");
  if (o.phase == Phase::kDecode)
    s += strformat("  batch %u per NPU, KV length %u, %s, MTP %u (accept %.2f), %u microbatch%s\n",
                   o.batch_per_npu, o.kv_len, o.precision == dev::Precision::kInt8 ? "INT8 W8A8" : "BF16",
                   o.mtp, o.mtp_accept, o.microbatches, o.microbatches == 1 ? "" : "es");
  else
    s += strformat("  %u prompts per NPU of %u tokens, %s, MoE in %u chunks of <= %u tokens per NPU, %u in flight\n",
                   o.batch_per_npu, o.prefill_len, o.precision == dev::Precision::kInt8 ? "INT8 W8A8" : "BF16",
                   r.units, o.prefill_chunk_tokens, o.microbatches);
  s += strformat("  MoE layers: %u simulated of %u (the rest scaled from the simulated ones)\n",
                 r.moe_layers_simulated, r.moe_layers_total);
  if (o.phase == Phase::kDecode) {
    s += strformat("  step          %10.3f ms  (modelled)\n", r.step_ns * 1e-6);
    s += strformat("  TPOT          %10.3f ms  (modelled)\n", r.tpot_ns * 1e-6);
  } else {
    s += strformat("  prefill       %10.3f ms  (modelled, the whole batch)\n", r.step_ns * 1e-6);
  }
  s += strformat("  throughput    %10.1f tokens/s per NPU  (modelled)\n", r.tokens_per_s_per_npu);
  s += "  breakdown (modelled; compute parts: mean per die; communication: latency):\n";
  const char* names[5] = {"attention", "dispatch", "experts", "combine", "other"};
  const double vals[5] = {r.parts.attention_ns, r.parts.dispatch_ns, r.parts.experts_ns,
                          r.parts.combine_ns, r.parts.other_ns};
  for (int i = 0; i < 5; ++i)
    s += strformat("    %-10s %10.3f ms  %5.1f%%\n", names[i], vals[i] * 1e-6,
                   total > 0 ? 100.0 * vals[i] / total : 0.0);
  s += strformat("  attention on the busiest die %.3f ms  (modelled; the breakdown is a mean per die)\n",
                 r.attention_busiest_die_ns * 1e-6);
  s += strformat("  per die: %.2f GB read or written in HBM by kernels, %.0f kernel launches (modelled step)\n",
                 r.hbm_bytes_per_die * 1e-9, r.kernels_per_die);
  s += strformat("  communication %10.3f ms, un-overlapped %.3f ms: share %.3f  (modelled)\n",
                 r.comm_ns * 1e-6, r.exposed_comm_ns * 1e-6, r.unoverlapped_comm_share);
  const HbmBudget& h = r.hbm;
  s += strformat("  HBM per NPU   %s of %s: %s (routed experts %s, shared+dense %s, attention side %s, KV %s, dispatch buffers %s)\n",
                 format_bytes(uint64_t(h.total)).c_str(), format_bytes(uint64_t(h.capacity)).c_str(),
                 h.fits ? "fits" : "DOES NOT FIT", format_bytes(uint64_t(h.routed_expert_weights)).c_str(),
                 format_bytes(uint64_t(h.shared_and_dense_weights)).c_str(),
                 format_bytes(uint64_t(h.attention_side_weights)).c_str(),
                 format_bytes(uint64_t(h.kv_cache)).c_str(), format_bytes(uint64_t(h.dispatch_buffers)).c_str());
  s += strformat("  dispatch completion: %s\n", ic::dispatch_completion_name(r.completion));
  s += strformat("  simulation took %.1f ms (wall; %.1f ms of it opening the runtime and buffers)\n",
                 r.wall_ms, r.wall_setup_ms);
  return s;
}

}  // namespace moe::models
