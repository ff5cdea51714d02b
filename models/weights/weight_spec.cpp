// Tensor lists of the model configs. Building a spec is string formatting only; the sum of
// the spec sizes equals ModelConfig::params_total() (tested), which ties the two together.
#include "models/weights/weight_spec.h"

#include "runtime/base/strformat.h"

namespace moe::models {
namespace {

uint64_t u64(uint32_t v) { return v; }

std::string layer_name(uint32_t layer, const char* rest) {
  return strformat("model.layers.%u.%s", layer, rest);
}

void add(std::vector<TensorSpec>* out, std::string name, std::vector<uint64_t> shape,
         TensorRole role, int32_t layer, int32_t expert = -1, DType dtype = DType::kBf16) {
  out->push_back({std::move(name), dtype, std::move(shape), role, layer, expert});
}

const char* proj_name(ExpertProj p) {
  return p == ExpertProj::kGate ? "gate_proj" : p == ExpertProj::kUp ? "up_proj" : "down_proj";
}

// gate/up [inter, hidden], down [hidden, inter], under `prefix` ("...mlp." etc.).
void add_swiglu(std::vector<TensorSpec>* out, const std::string& prefix, uint64_t hidden,
                uint64_t inter, int32_t layer, int32_t expert) {
  add(out, prefix + "gate_proj.weight", {inter, hidden}, TensorRole::kLinear, layer, expert);
  add(out, prefix + "up_proj.weight", {inter, hidden}, TensorRole::kLinear, layer, expert);
  add(out, prefix + "down_proj.weight", {hidden, inter}, TensorRole::kOutputLinear, layer, expert);
}

void add_attention(std::vector<TensorSpec>* out, const ModelConfig& c, uint32_t l) {
  const int32_t layer = static_cast<int32_t>(l);
  const uint64_t h = c.hidden, heads = c.num_heads;
  if (c.attention == AttentionKind::kMla) {
    const MlaShape& m = c.mla;
    const uint64_t qk_head = u64(m.qk_nope_head_dim) + m.qk_rope_head_dim;
    if (m.q_lora_rank != 0) {
      add(out, layer_name(l, "self_attn.q_a_proj.weight"), {m.q_lora_rank, h}, TensorRole::kLinear,
          layer);
      add(out, layer_name(l, "self_attn.q_a_layernorm.weight"), {m.q_lora_rank},
          TensorRole::kNorm, layer);
      add(out, layer_name(l, "self_attn.q_b_proj.weight"), {heads * qk_head, m.q_lora_rank},
          TensorRole::kLinear, layer);
    } else {
      add(out, layer_name(l, "self_attn.q_proj.weight"), {heads * qk_head, h}, TensorRole::kLinear,
          layer);
    }
    add(out, layer_name(l, "self_attn.kv_a_proj_with_mqa.weight"),
        {u64(m.kv_lora_rank) + m.qk_rope_head_dim, h}, TensorRole::kLinear, layer);
    add(out, layer_name(l, "self_attn.kv_a_layernorm.weight"), {m.kv_lora_rank}, TensorRole::kNorm,
        layer);
    add(out, layer_name(l, "self_attn.kv_b_proj.weight"),
        {heads * (u64(m.qk_nope_head_dim) + m.v_head_dim), m.kv_lora_rank}, TensorRole::kLinear,
        layer);
    add(out, layer_name(l, "self_attn.o_proj.weight"), {h, heads * m.v_head_dim},
        TensorRole::kOutputLinear, layer);
    return;
  }
  const uint64_t hd = c.head_dim, kv = c.num_kv_heads;
  add(out, layer_name(l, "self_attn.q_proj.weight"), {heads * hd, h}, TensorRole::kLinear, layer);
  add(out, layer_name(l, "self_attn.k_proj.weight"), {kv * hd, h}, TensorRole::kLinear, layer);
  add(out, layer_name(l, "self_attn.v_proj.weight"), {kv * hd, h}, TensorRole::kLinear, layer);
  add(out, layer_name(l, "self_attn.o_proj.weight"), {h, heads * hd}, TensorRole::kOutputLinear,
      layer);
  if (c.qk_norm) {
    add(out, layer_name(l, "self_attn.q_norm.weight"), {hd}, TensorRole::kNorm, layer);
    add(out, layer_name(l, "self_attn.k_norm.weight"), {hd}, TensorRole::kNorm, layer);
  }
}

}  // namespace

uint64_t TensorSpec::num_elements() const {
  uint64_t n = 1;
  for (const uint64_t d : shape) n *= d;
  return n;
}

std::string expert_tensor_name(uint32_t layer, uint32_t expert, ExpertProj proj) {
  return strformat("model.layers.%u.mlp.experts.%u.%s.weight", layer, expert, proj_name(proj));
}

std::string int8_scale_name(const std::string& name) { return name + "_scale"; }

bool is_expert_weight(const TensorSpec& spec) {
  return spec.expert >= 0 || spec.name.find(".mlp.shared_experts.") != std::string::npos;
}

std::vector<TensorSpec> expert_tensor_specs(const ModelConfig& c, uint32_t layer,
                                            uint32_t expert) {
  std::vector<TensorSpec> out;
  add_swiglu(&out, strformat("model.layers.%u.mlp.experts.%u.", layer, expert), c.hidden,
             c.expert_intermediate, static_cast<int32_t>(layer), static_cast<int32_t>(expert));
  return out;
}

std::vector<TensorSpec> layer_tensor_specs(const ModelConfig& c, uint32_t l) {
  std::vector<TensorSpec> out;
  const int32_t layer = static_cast<int32_t>(l);
  const uint64_t h = c.hidden;
  add(&out, layer_name(l, "input_layernorm.weight"), {h}, TensorRole::kNorm, layer);
  add_attention(&out, c, l);
  add(&out, layer_name(l, "post_attention_layernorm.weight"), {h}, TensorRole::kNorm, layer);
  if (!c.is_moe_layer(l)) {
    add_swiglu(&out, layer_name(l, "mlp."), h, c.dense_intermediate, layer, -1);
    return out;
  }
  add(&out, layer_name(l, "mlp.gate.weight"), {c.num_experts, h}, TensorRole::kRouter, layer);
  if (c.router_bias)
    add(&out, layer_name(l, "mlp.gate.e_score_correction_bias"), {c.num_experts},
        TensorRole::kRouterBias, layer, -1, DType::kF32);
  for (uint32_t e = 0; e < c.num_experts; ++e) {
    std::vector<TensorSpec> expert = expert_tensor_specs(c, l, e);
    for (TensorSpec& s : expert) out.push_back(std::move(s));
  }
  if (c.num_shared_experts > 0)
    add_swiglu(&out, layer_name(l, "mlp.shared_experts."), h,
               u64(c.num_shared_experts) * c.expert_intermediate, layer, -1);
  return out;
}

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  const uint64_t h = c.hidden;
  add(&out, "model.embed_tokens.weight", {c.vocab_size, h}, TensorRole::kEmbedding, -1);
  for (uint32_t l = 0; l < c.num_layers; ++l) {
    std::vector<TensorSpec> layer = layer_tensor_specs(c, l);
    for (TensorSpec& s : layer) out.push_back(std::move(s));
  }
  add(&out, "model.norm.weight", {h}, TensorRole::kNorm, -1);
  if (!c.tie_embeddings) add(&out, "lm_head.weight", {c.vocab_size, h}, TensorRole::kLmHead, -1);
  return out;
}

}  // namespace moe::models
