// The engine: the built-in model end to end (embedding, GQA attention over the paged KV cache,
// dense and MoE layers, dispatch/combine over the interconnect, LM head) against a naive
// double-precision reference written here, and the same model on 1, 8 and 384 NPUs giving the
// same tokens; plus the engine's refusals of bad input and its rollback.
#include <doctest/doctest.h>

#include <cmath>
#include <numeric>

#include "models/engine/engine.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

namespace {

const ModelConfig& builtin_config() {
  static const ModelConfig c = model_config("builtin").value();
  return c;
}

const ModelWeights& builtin_weights() {
  static const ModelWeights w = ModelWeights::random(builtin_config(), 20261126).value();
  return w;
}

std::vector<double> tensor_d(const ModelWeights& w, const std::string& name) {
  Tensor t = w.tensor(name).value();
  std::vector<double> out;
  if (t.dtype == DType::kF32) {
    for (float v : t.f32()) out.push_back(v);
  } else {
    for (uint16_t v : t.bf16()) out.push_back(ic::bf16_to_float(v));
  }
  return out;
}

std::vector<double> rmsnorm_d(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// y = W x, W [out][in] row-major.
std::vector<double> matvec(const std::vector<double>& W, const std::vector<double>& x, size_t out) {
  std::vector<double> y(out, 0.0);
  for (size_t o = 0; o < out; ++o)
    for (size_t i = 0; i < x.size(); ++i) y[o] += W[o * x.size() + i] * x[i];
  return y;
}

void rope_d(double* v, uint32_t d, int pos, double theta) {
  for (uint32_t i = 0; i < d / 2; ++i) {
    const double a = pos * std::pow(theta, -2.0 * i / d);
    const double x0 = v[i], x1 = v[i + d / 2];
    v[i] = x0 * std::cos(a) - x1 * std::sin(a);
    v[i + d / 2] = x1 * std::cos(a) + x0 * std::sin(a);
  }
}

// The whole model in double over one token sequence: the logits after its last token. Routed
// experts see their input rounded to BF16 (the engine's dispatch format, part of its numeric
// contract); everything else is double.
std::vector<double> reference_logits(const ModelWeights& w, const std::vector<uint32_t>& tokens) {
  const ModelConfig& c = w.config();
  const uint32_t H = c.hidden, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const size_t T = tokens.size();
  const std::vector<double> embed = tensor_d(w, "model.embed_tokens.weight");
  std::vector<std::vector<double>> h(T, std::vector<double>(H));
  for (size_t t = 0; t < T; ++t)
    for (uint32_t i = 0; i < H; ++i) h[t][i] = embed[uint64_t{tokens[t]} * H + i];
  const RouterConfig rc = RouterConfig::from_model(c);
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto in_norm = tensor_d(w, p + "input_layernorm.weight");
    const auto post_norm = tensor_d(w, p + "post_attention_layernorm.weight");
    const auto Wq = tensor_d(w, p + "self_attn.q_proj.weight"), Wk = tensor_d(w, p + "self_attn.k_proj.weight");
    const auto Wv = tensor_d(w, p + "self_attn.v_proj.weight"), Wo = tensor_d(w, p + "self_attn.o_proj.weight");
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      const auto xn = rmsnorm_d(h[t], in_norm, c.norm_eps);
      q[t] = matvec(Wq, xn, nh * hd);
      k[t] = matvec(Wk, xn, nkv * hd);
      v[t] = matvec(Wv, xn, nkv * hd);
      for (uint32_t a = 0; a < nh; ++a) rope_d(q[t].data() + a * hd, hd, int(t), c.rope_theta);
      for (uint32_t a = 0; a < nkv; ++a) rope_d(k[t].data() + a * hd, hd, int(t), c.rope_theta);
    }
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> attn(nh * hd, 0.0);
      for (uint32_t a = 0; a < nh; ++a) {
        const uint32_t g = a / (nh / nkv);
        std::vector<double> sc(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double d = 0;
          for (uint32_t i = 0; i < hd; ++i) d += q[t][a * hd + i] * k[j][g * hd + i];
          sc[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (double& s : sc) sum += (s = std::exp(s - mx));
        for (size_t j = 0; j <= t; ++j)
          for (uint32_t i = 0; i < hd; ++i) attn[a * hd + i] += sc[j] / sum * v[j][g * hd + i];
      }
      const auto o = matvec(Wo, attn, H);
      for (uint32_t i = 0; i < H; ++i) h[t][i] += o[i];
    }
    for (size_t t = 0; t < T; ++t) {
      const auto xn = rmsnorm_d(h[t], post_norm, c.norm_eps);
      std::vector<double> add(H, 0.0);
      if (!c.is_moe_layer(l)) {
        const auto g = matvec(tensor_d(w, p + "mlp.gate_proj.weight"), xn, c.dense_intermediate);
        const auto u = matvec(tensor_d(w, p + "mlp.up_proj.weight"), xn, c.dense_intermediate);
        std::vector<double> a(c.dense_intermediate);
        for (size_t i = 0; i < a.size(); ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
        add = matvec(tensor_d(w, p + "mlp.down_proj.weight"), a, H);
      } else {
        const auto G = tensor_d(w, p + "mlp.gate.weight");
        const auto bias_d = tensor_d(w, p + "mlp.gate.e_score_correction_bias");
        std::vector<float> logits(c.num_experts), bias(bias_d.begin(), bias_d.end());
        const auto ld = matvec(G, xn, c.num_experts);
        for (uint32_t e = 0; e < c.num_experts; ++e) logits[e] = float(ld[e]);
        const RefRoute r = ref_route(rc, logits, 1, bias);
        std::vector<float> x_bf16(H), x_f(H);
        for (uint32_t i = 0; i < H; ++i) {
          x_f[i] = float(xn[i]);
          x_bf16[i] = ic::round_to_bf16(x_f[i]);
        }
        for (uint32_t kk = 0; kk < c.top_k; ++kk) {
          const ExpertTensors et = w.expert(l, uint32_t(r.ids[kk])).value();
          const ExpertWeights ev{et.gate.bf16(), et.up.bf16(), et.down.bf16()};
          const auto y = ref_expert(x_bf16.data(), H, c.expert_intermediate, ev);
          for (uint32_t i = 0; i < H; ++i) add[i] += r.weights[kk] * y[i];
        }
        const Tensor sg = w.tensor(p + "mlp.shared_experts.gate_proj.weight").value();
        const Tensor su = w.tensor(p + "mlp.shared_experts.up_proj.weight").value();
        const Tensor sd = w.tensor(p + "mlp.shared_experts.down_proj.weight").value();
        const auto y = ref_expert(x_f.data(), H, c.expert_intermediate * c.num_shared_experts,
                                  ExpertWeights{sg.bf16(), su.bf16(), sd.bf16()});
        for (uint32_t i = 0; i < H; ++i) add[i] += y[i];
      }
      for (uint32_t i = 0; i < H; ++i) h[t][i] += add[i];
    }
  }
  const auto xn = rmsnorm_d(h[T - 1], tensor_d(w, "model.norm.weight"), c.norm_eps);
  return matvec(tensor_d(w, "lm_head.weight"), xn, c.vocab_size);
}

uint32_t argmax(std::span<const float> v) {
  return static_cast<uint32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Two sequences: a prefill step of both prompts, then `decode_steps` greedy decode steps of
// both together. Returns every step's logits (entries x vocab) and the tokens chosen.
struct Run {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<uint32_t>> seqs;  // prompt + generated, per sequence
};

Run run_engine(Engine& engine, const std::vector<std::vector<uint32_t>>& prompts, int decode_steps) {
  const uint32_t V = engine.config().vocab_size;
  Run run;
  run.seqs = prompts;
  std::vector<SeqId> ids;
  for (size_t i = 0; i < prompts.size(); ++i) ids.push_back(engine.open_sequence().value());
  std::vector<uint32_t> next(prompts.size());
  for (int step = 0; step <= decode_steps; ++step) {
    std::vector<StepInput> in;
    for (size_t i = 0; i < prompts.size(); ++i)
      in.push_back({ids[i], step == 0 ? std::span<const uint32_t>(prompts[i])
                                      : std::span<const uint32_t>(&next[i], 1)});
    std::vector<float> logits(in.size() * V);
    StepStats st;
    const Status s = engine.forward(in, logits, &st);
    REQUIRE_MESSAGE(s.ok(), s.to_string());
    CHECK(st.modelled_ns > 0);
    CHECK(st.math_wall_ns > 0);
    for (size_t i = 0; i < prompts.size(); ++i) {
      next[i] = argmax(std::span<const float>(logits).subspan(i * V, V));
      run.seqs[i].push_back(next[i]);
    }
    run.logits.push_back(std::move(logits));
  }
  for (SeqId id : ids) CHECK(engine.close_sequence(id).ok());
  return run;
}

std::unique_ptr<rt::Runtime> open_runtime(const char* supernode) {
  rt::RuntimeOptions o;
  o.supernode = supernode;
  o.host.synthetic = "pack:1 numa:1 core:2";
  auto r = rt::Runtime::open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return std::move(r).value();
}

std::vector<uint32_t> bytes_of(const char* text) {
  std::vector<uint32_t> out;
  for (const char* p = text; *p; ++p) out.push_back(static_cast<unsigned char>(*p));
  return out;
}

}  // namespace

TEST_CASE("models.engine: the built-in model equals a double reference and gives the same tokens on 1, 8 and 384 NPUs") {
  const std::vector<std::vector<uint32_t>> prompts = {bytes_of("MoE on"), bytes_of("384!")};
  const int kDecode = 3;
  const uint32_t V = builtin_config().vocab_size;

  Run one, eight, all;
  {
    auto rt = open_runtime("n8");
    EngineOptions o;
    o.npus = {3};
    auto e = Engine::create(*rt, builtin_weights(), o);
    REQUIRE_MESSAGE(e.ok(), e.status().to_string());
    CHECK(e.value()->num_ranks() == 1);
    one = run_engine(*e.value(), prompts, kDecode);
  }
  {
    auto rt = open_runtime("n8");
    EngineOptions o;
    o.attention_dp = 2;
    auto e = Engine::create(*rt, builtin_weights(), o);
    REQUIRE_MESSAGE(e.ok(), e.status().to_string());
    eight = run_engine(*e.value(), prompts, kDecode);
  }
  {
    auto rt = open_runtime("cm384");
    EngineOptions o;
    o.attention_dp = 8;
    auto e = Engine::create(*rt, builtin_weights(), o);
    REQUIRE_MESSAGE(e.ok(), e.status().to_string());
    CHECK(e.value()->num_ranks() == 384);
    // Every NPU holds at least one routed expert of each MoE layer.
    for (uint32_t r = 0; r < 384; ++r) CHECK(e.value()->weights().experts(0, r).size() >= 1);
    all = run_engine(*e.value(), prompts, kDecode);
  }
  CHECK(one.seqs == eight.seqs);
  CHECK(one.seqs == all.seqs);
  double worst = 0;
  for (size_t s = 0; s < one.logits.size(); ++s)
    for (size_t i = 0; i < one.logits[s].size(); ++i) {
      worst = std::max(worst, double(std::fabs(one.logits[s][i] - eight.logits[s][i])));
      worst = std::max(worst, double(std::fabs(one.logits[s][i] - all.logits[s][i])));
    }
  MESSAGE("largest logit difference between 1, 8 and 384 NPUs: " << worst);
  CHECK(worst < 1e-4);

  // Against the double reference: every step's logits of both sequences.
  double worst_ref = 0, scale = 0;
  for (size_t step = 0; step < one.logits.size(); ++step)
    for (size_t i = 0; i < prompts.size(); ++i) {
      const size_t len = prompts[i].size() + step;
      const std::vector<uint32_t> prefix(one.seqs[i].begin(), one.seqs[i].begin() + len);
      const std::vector<double> ref = reference_logits(builtin_weights(), prefix);
      for (uint32_t v = 0; v < V; ++v) {
        scale = std::max(scale, std::fabs(ref[v]));
        worst_ref = std::max(worst_ref, std::fabs(ref[v] - one.logits[step][i * V + v]));
      }
    }
  MESSAGE("largest logit difference from the double reference: " << worst_ref << " (logits up to " << scale << ")");
  CHECK(scale > 0.1);
  CHECK(worst_ref < 1e-4 * scale);
}
