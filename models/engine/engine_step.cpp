// Engine::forward: one step over every home and EP rank, and the kernel bodies it launches.
//
// Order of work (one host thread drives every NPU, as the interconnect's collectives do):
// per layer, each active home launches its attention kernel and its FFN-input kernel (dense
// FFN, or router); for MoE layers the homes are synchronised (the router's choice is needed
// on the host to drive dispatch), their ranks' dispatch clocks advanced to their compute,
// tokens dispatched, each EP rank with rows waits for its tokens' arrival and runs its
// experts, those ranks are synchronised and their clocks advanced, combine brings the
// results home, and each home waits for them and adds shared experts and the residual.
//
// Kernel bodies are plain functions with an EngineJob context (no allocation per launch);
// an error inside a body is kept as the step's first error and checked after each
// synchronisation. Wall time inside bodies is the step's math; inside dispatch and combine its
// (emulated) device communication.
#include <cmath>
#include <cstring>

#include "interconnect/quant_int8.h"
#include "models/cost/cost_layer.h"
#include "models/cost/cost_misc.h"
#include "models/cost/cost_moe.h"
#include "models/cost/cost_norm.h"
#include "models/engine/engine_state.h"
#include "models/kernels/embedding.h"
#include "models/kernels/gemm.h"
#include "models/kernels/norm.h"
#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"

namespace moe::models {

namespace {

const char* job_name(EngineJob::Kind k) {
  switch (k) {
    case EngineJob::Kind::kAttention: return "attention";
    case EngineJob::Kind::kDenseFfn: return "dense ffn";
    case EngineJob::Kind::kRouter: return "router";
    case EngineJob::Kind::kExperts: return "experts";
    case EngineJob::Kind::kMoeOut: return "shared experts + residual";
    case EngineJob::Kind::kHead: return "lm head";
  }
  return "?";
}

void run_job(void* ctx) {
  EngineJob& job = *static_cast<EngineJob*>(ctx);
  EngineState& s = *job.s;
  const int64_t t0 = wall_now_ns();
  Status st = s.run_body(job);
  s.math_ns += wall_now_ns() - t0;
  if (!st.ok() && s.body_error.ok())
    s.body_error = st.with_context(strformat("%s kernel of layer %u, %s %u", job_name(job.kind),
                                             job.layer, job.kind == EngineJob::Kind::kExperts ? "EP rank" : "DP rank",
                                             job.index));
}

void silu_mul(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

cost::KernelCost sum_costs(std::span<const cost::KernelCost> costs, std::string_view name,
                           dev::KernelClass kernel_class) {
  cost::KernelCost total;
  total.name = name;
  total.kernel_class = kernel_class;
  for (const cost::KernelCost& k : costs) total += k;
  return total;
}

cost::KernelCost ffn_cost(const cost::ExpertFfnCost& f, std::string_view name) {
  cost::KernelCost k = f.up_gate;
  k += f.swiglu;
  k += f.down;
  k.name = name;
  k.kernel_class = dev::KernelClass::kMatmul;
  return k;
}

dev::Precision to_device(ExpertPrecision p) {
  return p == ExpertPrecision::kInt8 ? dev::Precision::kInt8 : dev::Precision::kBf16;
}

}  // namespace

// ---- kernel bodies ----

Status EngineState::run_body(EngineJob& job) {
  const ModelConfig& c = config;
  const uint32_t H = c.hidden;
  if (job.kind == EngineJob::Kind::kExperts) {
    RankWork& w = ranks[job.index];
    const ic::RankReceive& rr = handle.recv[job.index];
    const ExpertBank& bank = weights.experts(job.layer - c.num_dense_layers, job.index);
    if (rr.experts.size() != bank.size())
      return make_error(StatusCode::kInternal, "received for %zu local experts, the rank holds %u",
                        rr.experts.size(), bank.size());
    grow(w.received, uint64_t{rr.num_slots} * H);
    for (uint32_t slot = 0; slot < rr.num_slots; ++slot)
      MOE_TRY(ic::read_received_token(*buffer, handle, job.index, slot,
                                      std::span(w.received).subspan(uint64_t{slot} * H, H)));
    w.src_rows.resize(rr.num_rows());
    for (uint32_t i = 0; i < rr.num_rows(); ++i) w.src_rows[i] = rr.rows[i].slot;
    grow(w.out, uint64_t{rr.num_rows()} * H);
    return run_experts(bank, std::span(w.received).first(uint64_t{rr.num_slots} * H), rr.num_slots,
                       rr.expert_offsets, w.src_rows,
                       std::span(w.out).first(uint64_t{rr.num_rows()} * H), w.ws);
  }

  HomeWork& h = homes[job.index];
  const ReplicaWeights& rw = weights.replica(job.index);
  const uint32_t n = h.rows();
  const float eps = c.norm_eps;
  switch (job.kind) {
    case EngineJob::Kind::kAttention: {
      const ReplicaWeights::Layer& L = rw.layers[job.layer];
      const uint32_t qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
      if (job.layer == 0)
        MOE_TRY(kernels::embedding_lookup({rw.embed, uint64_t{c.vocab_size} * H}, c.vocab_size, H,
                                          h.tokens, h.h.data()));
      kernels::rms_norm(h.h.data(), L.input_norm, n, H, eps, h.xn.data());
      const std::span<const float> xn(h.xn.data(), uint64_t{n} * H);
      MOE_TRY(linear_bf16(xn, n, {L.q_proj, uint64_t{qd} * H}, qd, H, {h.q.data(), uint64_t{n} * qd}));
      MOE_TRY(linear_bf16(xn, n, {L.k_proj, uint64_t{kvd} * H}, kvd, H, {h.k.data(), uint64_t{n} * kvd}));
      MOE_TRY(linear_bf16(xn, n, {L.v_proj, uint64_t{kvd} * H}, kvd, H, {h.v.data(), uint64_t{n} * kvd}));
      if (c.qk_norm) {
        kernels::rms_norm_heads(h.q.data(), qd, n, c.num_heads, c.head_dim, L.q_norm, eps);
        kernels::rms_norm_heads(h.k.data(), kvd, n, c.num_kv_heads, c.head_dim, L.k_norm, eps);
      }
      MOE_TRY(rope.apply(h.q.data(), qd, n, c.num_heads, c.head_dim, h.positions.data()));
      MOE_TRY(rope.apply(h.k.data(), kvd, n, c.num_kv_heads, c.head_dim, h.positions.data()));
      const kernels::AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim, 0.0f};
      for (size_t e = 0; e < h.entries.size(); ++e) {
        const uint32_t first = h.entry_first[e], count = h.entry_first[e + 1] - first;
        EngineSequence& q = seqs[inputs[h.entries[e]].seq.index];
        MOE_TRY(kernels::attention_prefill(shape, h.q.data() + uint64_t{first} * qd,
                                           h.k.data() + uint64_t{first} * kvd,
                                           h.v.data() + uint64_t{first} * kvd, count,
                                           q.kv.view(job.layer), h.scratch,
                                           h.attn.data() + uint64_t{first} * qd));
      }
      MOE_TRY(linear_bf16({h.attn.data(), uint64_t{n} * qd}, n, {L.o_proj, uint64_t{H} * qd}, H, qd,
                          {h.tmp.data(), uint64_t{n} * H}));
      kernels::add_rms_norm(h.h.data(), h.tmp.data(), L.post_norm, n, H, eps, h.xn.data());
      return ok_status();
    }
    case EngineJob::Kind::kDenseFfn: {
      const ReplicaWeights::Layer& L = rw.layers[job.layer];
      const uint32_t I = c.dense_intermediate;
      const std::span<const float> xn(h.xn.data(), uint64_t{n} * H);
      MOE_TRY(linear_bf16(xn, n, {L.mlp_gate, uint64_t{I} * H}, I, H, {h.gate.data(), uint64_t{n} * I}));
      MOE_TRY(linear_bf16(xn, n, {L.mlp_up, uint64_t{I} * H}, I, H, {h.up.data(), uint64_t{n} * I}));
      silu_mul(h.gate.data(), h.up.data(), uint64_t{n} * I, h.gate.data());
      // h += down(act): accumulate straight into the residual stream.
      return linear_bf16({h.gate.data(), uint64_t{n} * I}, n, {L.mlp_down, uint64_t{H} * I}, H, I,
                         {h.h.data(), uint64_t{n} * H}, /*accumulate=*/true);
    }
    case EngineJob::Kind::kRouter: {
      const MoeLayerWorking& w = weights.moe_layer(job.layer - c.num_dense_layers);
      const std::span<const float> xn(h.xn.data(), uint64_t{n} * H);
      MOE_TRY(router_logits(xn, n, H, w.gate, c.num_experts,
                            {h.router_logits.data(), uint64_t{n} * c.num_experts}));
      MOE_TRY(route(router, {h.router_logits.data(), uint64_t{n} * c.num_experts}, n, w.bias, &h.routing));
      for (uint64_t i = 0; i < uint64_t{n} * H; ++i) h.x_bf16[i] = ic::float_to_bf16(h.xn[i]);
      return ok_status();
    }
    case EngineJob::Kind::kMoeOut: {
      const MoeLayerWorking& w = weights.moe_layer(job.layer - c.num_dense_layers);
      const uint64_t nh = uint64_t{n} * H;
      if (w.shared.size() > 0) {
        const uint32_t offsets[2] = {0, n};
        MOE_TRY(run_experts(w.shared, {h.xn.data(), nh}, n, offsets, {}, {h.tmp.data(), nh}, h.ws));
        for (uint64_t i = 0; i < nh; ++i) h.ffn[i] += h.tmp[i];
      }
      for (uint64_t i = 0; i < nh; ++i) h.h[i] += h.ffn[i];
      return ok_status();
    }
    case EngineJob::Kind::kHead: {
      const uint32_t E = static_cast<uint32_t>(h.entries.size()), V = c.vocab_size;
      for (uint32_t e = 0; e < E; ++e)
        std::memcpy(h.last.data() + uint64_t{e} * H, h.h.data() + uint64_t{h.entry_first[e + 1] - 1} * H,
                    H * sizeof(float));
      kernels::rms_norm(h.last.data(), rw.final_norm, E, H, eps, h.last.data());
      MOE_TRY(linear_bf16({h.last.data(), uint64_t{E} * H}, E, {rw.lm_head, uint64_t{V} * H}, V, H,
                          {h.logits.data(), uint64_t{E} * V}));
      for (uint32_t e = 0; e < E; ++e)
        std::memcpy(logits_out.data() + uint64_t{h.entries[e]} * V, h.logits.data() + uint64_t{e} * V,
                    V * sizeof(float));
      return ok_status();
    }
    case EngineJob::Kind::kExperts: break;
  }
  return make_error(StatusCode::kInternal, "unknown engine job");
}

// ---- the step ----

namespace {

// Validates the step and fills each home's token list. Nothing changes on error.
Status plan_step(EngineState& s, std::span<const StepInput> inputs, std::span<float> logits) {
  const ModelConfig& c = s.config;
  if (inputs.empty()) return make_error(StatusCode::kInvalidArgument, "forward: no entries");
  if (logits.size() != inputs.size() * uint64_t{c.vocab_size})
    return make_error(StatusCode::kInvalidArgument,
                      "forward: logits hold %zu floats; %zu entries x vocab %u need %llu",
                      logits.size(), inputs.size(), c.vocab_size,
                      static_cast<unsigned long long>(inputs.size() * uint64_t{c.vocab_size}));
  ++s.step;
  for (HomeWork& h : s.homes) {
    h.entries.clear();
    h.tokens.clear();
    h.positions.clear();
    h.entry_first.assign(1, 0);
  }
  s.old_length.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    EngineSequence* q = s.find(inputs[i].seq);
    if (q == nullptr)
      return make_error(StatusCode::kNotFound, "forward: entry %zu names sequence %u (generation "
                        "%u), which is not open", i, inputs[i].seq.index, inputs[i].seq.generation);
    if (q->last_step == s.step)
      return make_error(StatusCode::kInvalidArgument,
                        "forward: entry %zu repeats sequence %u; one entry per sequence per step",
                        i, inputs[i].seq.index);
    const std::span<const uint32_t> t = inputs[i].tokens;
    if (t.empty())
      return make_error(StatusCode::kInvalidArgument, "forward: entry %zu has no tokens", i);
    for (size_t j = 0; j < t.size(); ++j)
      if (t[j] >= c.vocab_size)
        return make_error(StatusCode::kOutOfRange, "forward: entry %zu, token %zu is id %u; the "
                          "vocabulary has %u", i, j, t[j], c.vocab_size);
    const uint32_t len = q->kv.length();
    if (uint64_t{len} + t.size() > c.max_seq_len)
      return make_error(StatusCode::kOutOfRange,
                        "forward: entry %zu: sequence %u has %u positions; %zu more exceed the "
                        "model's max_seq_len %u", i, inputs[i].seq.index, len, t.size(), c.max_seq_len);
    HomeWork& h = s.homes[q->dp];
    if (h.tokens.size() + t.size() > s.options.max_tokens_per_rank)
      return make_error(StatusCode::kResourceExhausted,
                        "forward: DP rank %u would take %zu tokens this step; at most %u "
                        "(EngineOptions::max_tokens_per_rank): split the prefill into chunks",
                        q->dp, h.tokens.size() + t.size(), s.options.max_tokens_per_rank);
    q->last_step = s.step;
    s.old_length[i] = len;
    h.entries.push_back(static_cast<uint32_t>(i));
    for (size_t j = 0; j < t.size(); ++j) {
      h.tokens.push_back(t[j]);
      h.positions.push_back(static_cast<int32_t>(len + j));
    }
    h.entry_first.push_back(static_cast<uint32_t>(h.tokens.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    EngineSequence& q = s.seqs[inputs[i].seq.index];
    Status st = q.kv.reserve(s.pools[q.dp], s.old_length[i] + static_cast<uint32_t>(inputs[i].tokens.size()));
    if (!st.ok()) return st.with_context(strformat("forward: entry %zu", i));
  }
  s.active.clear();
  const uint32_t H = c.hidden, qd = c.num_heads * c.head_dim, kvd = c.num_kv_heads * c.head_dim;
  const uint32_t I = std::max(c.dense_intermediate, 1u);
  for (uint32_t d = 0; d < s.homes.size(); ++d) {
    HomeWork& h = s.homes[d];
    if (h.tokens.empty()) continue;
    s.active.push_back(d);
    const uint64_t n = h.tokens.size(), e = h.entries.size();
    for (auto* v : {&h.h, &h.xn, &h.tmp, &h.ffn}) grow(*v, n * H);
    grow(h.q, n * qd);
    grow(h.attn, n * qd);
    grow(h.k, n * kvd);
    grow(h.v, n * kvd);
    grow(h.gate, n * I);
    grow(h.up, n * I);
    grow(h.x_bf16, n * H);
    grow(h.router_logits, n * c.num_experts);
    grow(h.last, e * H);
    grow(h.logits, e * c.vocab_size);
  }
  return ok_status();
}

Status launch(EngineState& s, uint32_t rank, const cost::KernelCost& cost, EngineJob& job) {
  rt::Kernel k = cost::to_kernel(cost);
  k.fn = run_job;
  k.ctx = &job;
  ++s.kernels;
  return s.streams[rank]->launch(k);
}

Status sync_ranks(EngineState& s, std::span<const uint32_t> ranks) {
  for (uint32_t r : ranks) MOE_TRY(s.streams[r]->synchronize());
  return s.body_error;
}

cost::KernelCost attention_cost(const EngineState& s, const HomeWork& h) {
  cost::AttentionWork work;
  work.seqs = h.entries.size();
  work.tokens_per_seq = std::max<uint64_t>(1, h.rows() / h.entries.size());
  uint64_t kv = 0;
  for (uint32_t e : h.entries) kv += s.old_length[e];
  work.kv_len = kv / h.entries.size();
  work.prefill = work.tokens_per_seq > 1;
  const std::vector<cost::KernelCost> parts = cost::attention_block_costs(s.config, work, dev::Precision::kBf16);
  return sum_costs(parts, "attention_block", dev::KernelClass::kMatmul);
}

// One MoE layer's dispatch, experts, combine and shared experts + residual.
Status moe_layer_step(EngineState& s, uint32_t layer, StepStats& st) {
  const ModelConfig& c = s.config;
  const uint32_t m = layer - c.num_dense_layers, H = c.hidden;
  const uint32_t R = static_cast<uint32_t>(s.npus.size());
  const dev::Precision prec = to_device(s.options.precision);
  std::vector<uint32_t> active_ranks;  // homes' EP ranks
  for (uint32_t d : s.active) active_ranks.push_back(s.homes[d].rank);
  MOE_TRY(sync_ranks(s, active_ranks));
  s.dispatch_inputs.assign(R, ic::DispatchInput{});
  for (uint32_t d : s.active) {
    HomeWork& h = s.homes[d];
    const uint64_t n = h.rows();
    s.buffer->advance_rank(h.rank, s.streams[h.rank]->modelled_time());
    s.dispatch_inputs[h.rank] = {h.rows(), {h.x_bf16.data(), n * H}, h.routing.topk_ids, h.routing.topk_weights};
    for (uint32_t e = 0; e < c.num_experts; ++e) s.expert_load[m][e] += h.routing.expert_counts[e];
  }
  int64_t t0 = wall_now_ns();
  auto handle = ic::moe_dispatch(*s.buffer, s.weights.layer_map(m), s.dispatch_inputs, c.top_k);
  st.comm_wall_ns += wall_now_ns() - t0;
  if (!handle.ok()) return Status(handle.status()).with_context(strformat("layer %u dispatch", layer));
  s.handle = std::move(handle).value();

  s.expert_ranks.clear();
  for (uint32_t r = 0; r < R; ++r) {
    const ic::RankReceive& rr = s.handle.recv[r];
    if (rr.num_rows() == 0) continue;
    s.expert_ranks.push_back(r);
    s.rows_per_expert.resize(rr.experts.size());
    for (size_t j = 0; j < rr.experts.size(); ++j)
      s.rows_per_expert[j] = rr.expert_offsets[j + 1] - rr.expert_offsets[j];
    MOE_TRY(s.streams[r]->wait_until(ModelTime::from_ns(s.handle.stats.rank_end_ns[r])));
    const cost::ExpertFfnCost f = cost::grouped_expert_ffn_cost(s.rows_per_expert, H, c.expert_intermediate, prec);
    MOE_TRY(launch(s, r, ffn_cost(f, "experts"), s.ranks[r].jobs[m]));
  }
  MOE_TRY(sync_ranks(s, s.expert_ranks));
  s.expert_spans.assign(R, {});
  s.combine_out.assign(R, {});
  for (uint32_t r : s.expert_ranks) {
    s.buffer->advance_rank(r, s.streams[r]->modelled_time());
    s.expert_spans[r] = {s.ranks[r].out.data(), uint64_t{s.handle.recv[r].num_rows()} * H};
  }
  for (uint32_t d : s.active) {
    HomeWork& h = s.homes[d];
    s.combine_out[h.rank] = {h.ffn.data(), uint64_t{h.rows()} * H};
  }
  ic::PhaseStats cs;
  t0 = wall_now_ns();
  Status combined = ic::moe_combine(*s.buffer, s.handle, s.expert_spans, s.combine_out, &cs);
  st.comm_wall_ns += wall_now_ns() - t0;
  if (!combined.ok()) return combined.with_context(strformat("layer %u combine", layer));
  for (uint32_t d : s.active) {
    HomeWork& h = s.homes[d];
    MOE_TRY(s.streams[h.rank]->wait_until(ModelTime::from_ns(cs.rank_end_ns[h.rank])));
    cost::KernelCost k = cost::residual_add_cost(h.rows(), H);
    if (c.num_shared_experts > 0)
      k += ffn_cost(cost::expert_ffn_cost(h.rows(), H, uint64_t{c.expert_intermediate} * c.num_shared_experts, prec), "");
    k.name = "shared_experts_residual";
    k.kernel_class = dev::KernelClass::kMatmul;
    MOE_TRY(launch(s, h.rank, k, h.jobs[layer * 3 + 2]));
  }
  return ok_status();
}

Status run_step(EngineState& s, StepStats& st) {
  const ModelConfig& c = s.config;
  const uint32_t H = c.hidden;
  for (uint32_t layer = 0; layer < c.num_layers; ++layer) {
    for (uint32_t d : s.active) {
      HomeWork& h = s.homes[d];
      cost::KernelCost k = attention_cost(s, h);
      if (layer == 0) k += cost::embedding_cost(h.rows(), H);
      MOE_TRY(launch(s, h.rank, k, h.jobs[layer * 3]));
      if (!c.is_moe_layer(layer)) {
        cost::KernelCost f = ffn_cost(cost::expert_ffn_cost(h.rows(), H, c.dense_intermediate, dev::Precision::kBf16), "dense_ffn");
        MOE_TRY(launch(s, h.rank, f, h.jobs[layer * 3 + 1]));
      } else {
        cost::KernelCost r = cost::router_gate_cost(h.rows(), H, c.num_experts);
        r += cost::router_topk_cost(h.rows(), c.num_experts, c.top_k);
        r.name = "router";
        MOE_TRY(launch(s, h.rank, r, h.jobs[layer * 3 + 1]));
      }
    }
    if (c.is_moe_layer(layer)) MOE_TRY(moe_layer_step(s, layer, st));
  }
  std::vector<uint32_t> active_ranks;
  for (uint32_t d : s.active) {
    HomeWork& h = s.homes[d];
    cost::KernelCost k = cost::rmsnorm_cost(h.entries.size(), H);
    k += cost::lm_head_cost(h.entries.size(), H, c.vocab_size, dev::Precision::kBf16);
    k.name = "final_norm_lm_head";
    k.kernel_class = dev::KernelClass::kMatmul;
    MOE_TRY(launch(s, h.rank, k, h.jobs.back()));
    active_ranks.push_back(h.rank);
  }
  return sync_ranks(s, active_ranks);
}

}  // namespace

Status Engine::forward(std::span<const StepInput> inputs, std::span<float> logits, StepStats* stats) {
  EngineState& s = *s_;
  const int64_t wall0 = wall_now_ns();
  MOE_TRY(plan_step(s, inputs, logits));
  s.inputs = inputs;
  s.logits_out = logits;
  s.body_error = ok_status();
  s.math_ns = 0;
  s.kernels = 0;
  ModelTime start;
  for (uint32_t d : s.active) start = max(start, s.streams[s.homes[d].rank]->modelled_time());
  StepStats st;
  Status result = run_step(s, st);
  if (result.ok()) result = s.body_error;
  for (size_t i = 0; i < inputs.size(); ++i) {
    EngineSequence& q = s.seqs[inputs[i].seq.index];
    q.kv.set_length(result.ok() ? s.old_length[i] + static_cast<uint32_t>(inputs[i].tokens.size())
                                : s.old_length[i]);
  }
  if (!result.ok()) return result.with_context("engine step");
  ModelTime end = start;
  for (uint32_t d : s.active) end = max(end, s.streams[s.homes[d].rank]->modelled_time());
  st.wall_ns = wall_now_ns() - wall0;
  st.math_wall_ns = s.math_ns;
  st.modelled_ns = (end - start).ns;
  st.kernels = s.kernels;
  for (const StepInput& in : inputs) st.tokens += static_cast<uint32_t>(in.tokens.size());
  if (stats != nullptr) *stats = st;
  return ok_status();
}

}  // namespace moe::models
