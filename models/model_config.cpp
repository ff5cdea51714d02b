// Model presets and shape arithmetic.
//
// Sources of the reference shapes: DeepSeek-V3 config.json (DeepSeek-R1 shares it); the
// Pangu Ultra MoE technical report (arXiv 2505.04519: 61 layers, hidden 7680, 256 routed
// experts of width 2048, top-8, one shared expert, MLA; its MLA ranks and head dims are
// taken equal to DeepSeek-V3's, which the report's 718B parameter count bears out);
// Qwen3-235B-A22B and Qwen3-30B-A3B config.json; Mixtral-8x7B-v0.1 config.json.
// params_total() of each preset lands within 1.5% of the published count (tested).
#include "models/model_config.h"

#include <cstdarg>

#include "runtime/base/json.h"
#include "runtime/base/strformat.h"

namespace moe::models {
namespace {

ModelConfig deepseek_v3() {
  ModelConfig c;
  c.name = "deepseek-v3";
  c.num_layers = 61;
  c.num_dense_layers = 3;
  c.hidden = 7168;
  c.vocab_size = 129280;
  c.dense_intermediate = 18432;
  c.attention = AttentionKind::kMla;
  c.num_heads = 128;
  c.num_kv_heads = 128;
  c.mla = {.q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope_head_dim = 128,
           .qk_rope_head_dim = 64, .v_head_dim = 128};
  c.head_dim = 192;
  c.rope_theta = 10000.0;
  c.max_seq_len = 163840;
  c.num_experts = 256;
  c.top_k = 8;
  c.num_shared_experts = 1;
  c.expert_intermediate = 2048;
  c.router_score = RouterScore::kSigmoid;
  c.normalize_topk = true;
  c.routed_scaling = 2.5f;
  c.num_groups = 8;
  c.topk_groups = 4;
  c.router_bias = true;
  c.mtp_layers = 1;
  return c;
}

ModelConfig pangu_ultra_moe() {
  ModelConfig c = deepseek_v3();
  c.name = "pangu-ultra-moe";
  c.hidden = 7680;
  c.vocab_size = 153600;
  c.mtp_layers = 1;
  return c;
}

ModelConfig qwen3(std::string name, uint32_t layers, uint32_t hidden, uint32_t heads,
                  uint32_t expert_intermediate) {
  ModelConfig c;
  c.name = std::move(name);
  c.num_layers = layers;
  c.hidden = hidden;
  c.vocab_size = 151936;
  c.dense_intermediate = 0;
  c.attention = AttentionKind::kGqa;
  c.num_heads = heads;
  c.num_kv_heads = 4;
  c.head_dim = 128;
  c.qk_norm = true;
  c.rope_theta = 1000000.0;
  c.max_seq_len = 40960;
  c.num_experts = 128;
  c.top_k = 8;
  c.expert_intermediate = expert_intermediate;
  c.router_score = RouterScore::kSoftmax;
  c.normalize_topk = true;
  return c;
}

ModelConfig mixtral_8x7b() {
  ModelConfig c;
  c.name = "mixtral-8x7b";
  c.num_layers = 32;
  c.hidden = 4096;
  c.vocab_size = 32000;
  c.attention = AttentionKind::kGqa;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.rope_theta = 1000000.0;
  c.norm_eps = 1e-5f;
  c.max_seq_len = 32768;
  c.num_experts = 8;
  c.top_k = 2;
  c.expert_intermediate = 14336;
  c.router_score = RouterScore::kSoftmax;  // softmax over the chosen two, i.e. renormalised
  c.normalize_topk = true;
  return c;
}

// Small enough for functional mode on one host, large enough to use all of cm384: one
// routed expert per NPU (384), DeepSeek-V3-style routing (sigmoid, groups, bias), a shared
// expert, a dense first layer, byte-level vocabulary (token = byte).
ModelConfig builtin() {
  ModelConfig c;
  c.name = "builtin";
  c.num_layers = 4;
  c.num_dense_layers = 1;
  c.hidden = 128;
  c.vocab_size = 256;
  c.dense_intermediate = 256;
  c.attention = AttentionKind::kGqa;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.rope_theta = 10000.0;
  c.max_seq_len = 1024;
  c.num_experts = 384;
  c.top_k = 8;
  c.num_shared_experts = 1;
  c.expert_intermediate = 64;
  c.router_score = RouterScore::kSigmoid;
  c.normalize_topk = true;
  c.routed_scaling = 1.0f;
  c.num_groups = 8;
  c.topk_groups = 4;
  c.router_bias = true;
  return c;
}

uint64_t u64(uint32_t v) { return v; }

Status bad_config(const std::string& model, const char* fmt, ...) MOE_PRINTF_LIKE(2, 3);
Status bad_config(const std::string& model, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  const std::string what = vstrformat(fmt, args);
  va_end(args);
  return make_error(StatusCode::kInvalidArgument, "model '%s': %s", model.c_str(), what.c_str());
}

}  // namespace

uint64_t ModelConfig::kv_cache_elems_per_token() const {
  if (attention == AttentionKind::kMla) return u64(mla.kv_lora_rank) + mla.qk_rope_head_dim;
  return 2 * u64(num_kv_heads) * head_dim;
}

uint64_t ModelConfig::attention_params() const {
  const uint64_t h = hidden;
  uint64_t p = 2 * h;  // the two RMSNorm weights of the layer (attention and FFN)
  if (attention == AttentionKind::kMla) {
    const uint64_t qk_head = u64(mla.qk_nope_head_dim) + mla.qk_rope_head_dim;
    if (mla.q_lora_rank != 0)
      p += h * mla.q_lora_rank + mla.q_lora_rank + u64(mla.q_lora_rank) * num_heads * qk_head;
    else
      p += h * num_heads * qk_head;
    p += h * (u64(mla.kv_lora_rank) + mla.qk_rope_head_dim) + mla.kv_lora_rank;
    p += u64(mla.kv_lora_rank) * num_heads * (u64(mla.qk_nope_head_dim) + mla.v_head_dim);
    p += u64(num_heads) * mla.v_head_dim * h;
  } else {
    p += h * num_heads * head_dim + 2 * h * num_kv_heads * head_dim;
    p += u64(num_heads) * head_dim * h;
    if (qk_norm) p += 2 * u64(head_dim);
  }
  return p;
}

uint64_t ModelConfig::params_total() const {
  const uint64_t h = hidden;
  const uint64_t embed = u64(vocab_size) * h * (tie_embeddings ? 1 : 2) + h;  // + final norm
  const uint64_t dense_ffn = 3 * h * dense_intermediate;
  const uint64_t expert = 3 * h * expert_intermediate;
  const uint64_t moe_ffn = (u64(num_experts) + num_shared_experts) * expert +
                           u64(num_experts) * h + (router_bias ? num_experts : 0);
  return embed + u64(num_layers) * attention_params() + u64(num_dense_layers) * dense_ffn +
         u64(num_moe_layers()) * moe_ffn;
}

uint64_t ModelConfig::params_active() const {
  const uint64_t h = hidden;
  const uint64_t embed = u64(vocab_size) * h * (tie_embeddings ? 1 : 2) + h;
  const uint64_t dense_ffn = 3 * h * dense_intermediate;
  const uint64_t expert = 3 * h * expert_intermediate;
  const uint64_t moe_ffn = (u64(top_k) + num_shared_experts) * expert + u64(num_experts) * h;
  return embed + u64(num_layers) * attention_params() + u64(num_dense_layers) * dense_ffn +
         u64(num_moe_layers()) * moe_ffn;
}

Status validate_config(const ModelConfig& c) {
  const std::string& name = c.name;
#define bad(...) bad_config(name, __VA_ARGS__)
  if (c.num_layers == 0) return bad("num_layers is 0");
  if (c.num_dense_layers > c.num_layers)
    return bad("num_dense_layers %u exceeds num_layers %u", c.num_dense_layers, c.num_layers);
  if (c.hidden == 0) return bad("hidden is 0");
  if (c.vocab_size == 0) return bad("vocab_size is 0");
  if (c.num_dense_layers > 0 && c.dense_intermediate == 0)
    return bad("dense_intermediate is 0 with %u dense layers", c.num_dense_layers);
  if (c.num_heads == 0) return bad("num_heads is 0");
  if (c.max_seq_len == 0) return bad("max_seq_len is 0");
  if (c.attention == AttentionKind::kGqa) {
    if (c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads != 0)
      return bad("num_heads %u is not a multiple of num_kv_heads %u", c.num_heads,
                 c.num_kv_heads);
    if (c.head_dim == 0 || c.head_dim % 2 != 0)
      return bad("head_dim %u must be even and nonzero (rotary pairs)", c.head_dim);
  } else {
    if (c.mla.kv_lora_rank == 0 || c.mla.qk_nope_head_dim == 0 || c.mla.v_head_dim == 0 ||
        c.mla.qk_rope_head_dim == 0 || c.mla.qk_rope_head_dim % 2 != 0)
      return bad("MLA needs kv_lora_rank, qk_nope_head_dim, v_head_dim and an even "
                 "qk_rope_head_dim (got %u, %u, %u, %u)",
                 c.mla.kv_lora_rank, c.mla.qk_nope_head_dim, c.mla.v_head_dim,
                 c.mla.qk_rope_head_dim);
    if (c.head_dim != c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim)
      return bad("head_dim %u must equal qk_nope_head_dim + qk_rope_head_dim (%u)", c.head_dim,
                 c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim);
  }
  if (c.num_moe_layers() > 0) {
    if (c.num_experts == 0) return bad("num_experts is 0 with %u MoE layers", c.num_moe_layers());
    if (c.top_k == 0 || c.top_k > c.num_experts)
      return bad("top_k %u must be in [1, num_experts %u]", c.top_k, c.num_experts);
    if (c.expert_intermediate == 0) return bad("expert_intermediate is 0");
    if (c.num_groups == 0 || c.num_experts % c.num_groups != 0)
      return bad("num_groups %u does not divide num_experts %u", c.num_groups, c.num_experts);
    if (c.topk_groups == 0 || c.topk_groups > c.num_groups)
      return bad("topk_groups %u must be in [1, num_groups %u]", c.topk_groups, c.num_groups);
    if (c.topk_groups * (c.num_experts / c.num_groups) < c.top_k)
      return bad("topk_groups %u x %u experts per group cannot hold top_k %u", c.topk_groups,
                 c.num_experts / c.num_groups, c.top_k);
    if (!(c.routed_scaling > 0)) return bad("routed_scaling %g must be > 0", c.routed_scaling);
  }
  if (!(c.norm_eps > 0)) return bad("norm_eps %g must be > 0", c.norm_eps);
  if (!(c.rope_theta > 0)) return bad("rope_theta %g must be > 0", c.rope_theta);
  return Status();
#undef bad
}

std::vector<std::string> model_names() {
  return {"deepseek-v3", "deepseek-r1", "pangu-ultra-moe", "qwen3-235b-a22b", "qwen3-30b-a3b",
          "mixtral-8x7b", "builtin"};
}

StatusOr<ModelConfig> model_config(std::string_view name) {
  if (name == "deepseek-v3") return deepseek_v3();
  if (name == "deepseek-r1") {
    ModelConfig c = deepseek_v3();
    c.name = "deepseek-r1";
    return c;
  }
  if (name == "pangu-ultra-moe") return pangu_ultra_moe();
  if (name == "qwen3-235b-a22b") return qwen3("qwen3-235b-a22b", 94, 4096, 64, 1536);
  if (name == "qwen3-30b-a3b") return qwen3("qwen3-30b-a3b", 48, 2048, 32, 768);
  if (name == "mixtral-8x7b") return mixtral_8x7b();
  if (name == "builtin") return builtin();
  std::string known;
  for (const std::string& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  return make_error(StatusCode::kNotFound, "unknown model '%.*s' (known: %s)",
                    static_cast<int>(name.size()), name.data(), known.c_str());
}

std::string config_to_json(const ModelConfig& c) {
  JsonWriter w;
  w.begin_object();
  w.key("name").value(c.name);
  w.key("num_layers").value(c.num_layers);
  w.key("num_dense_layers").value(c.num_dense_layers);
  w.key("hidden").value(c.hidden);
  w.key("vocab_size").value(c.vocab_size);
  w.key("dense_intermediate").value(c.dense_intermediate);
  w.key("attention").value(c.attention == AttentionKind::kMla ? "mla" : "gqa");
  w.key("num_heads").value(c.num_heads);
  w.key("num_kv_heads").value(c.num_kv_heads);
  w.key("head_dim").value(c.head_dim);
  if (c.attention == AttentionKind::kMla) {
    w.key("mla").begin_object();
    w.key("q_lora_rank").value(c.mla.q_lora_rank);
    w.key("kv_lora_rank").value(c.mla.kv_lora_rank);
    w.key("qk_nope_head_dim").value(c.mla.qk_nope_head_dim);
    w.key("qk_rope_head_dim").value(c.mla.qk_rope_head_dim);
    w.key("v_head_dim").value(c.mla.v_head_dim);
    w.end_object();
  }
  w.key("num_experts").value(c.num_experts);
  w.key("top_k").value(c.top_k);
  w.key("num_shared_experts").value(c.num_shared_experts);
  w.key("expert_intermediate").value(c.expert_intermediate);
  w.key("router_score").value(c.router_score == RouterScore::kSigmoid ? "sigmoid" : "softmax");
  w.key("num_groups").value(c.num_groups);
  w.key("topk_groups").value(c.topk_groups);
  w.key("routed_scaling").value(static_cast<double>(c.routed_scaling));
  w.key("mtp_layers").value(c.mtp_layers);
  w.key("params_total").value(c.params_total());
  w.key("params_active").value(c.params_active());
  w.end_object();
  return w.str();
}

}  // namespace moe::models
