// The tensors a model has: names, storage dtypes and shapes, as the Hugging Face checkpoints
// of DeepSeek-V3-style models name them. Shared by the weight store, the engine and the tests.
//
// Names (l = layer, e = routed expert; shapes [out, in] as PyTorch Linear):
//   model.embed_tokens.weight                     [vocab, hidden]
//   model.layers.l.input_layernorm.weight         [hidden]
//   model.layers.l.post_attention_layernorm.weight [hidden]
//   GQA: model.layers.l.self_attn.{q,k,v,o}_proj.weight; Qwen3 also self_attn.{q,k}_norm.weight
//        [head_dim]
//   MLA: self_attn.q_a_proj [q_lora, hidden], q_a_layernorm [q_lora], q_b_proj
//        [heads*(nope+rope), q_lora] (or q_proj [heads*(nope+rope), hidden] when q_lora is 0),
//        kv_a_proj_with_mqa [kv_lora+rope, hidden], kv_a_layernorm [kv_lora], kv_b_proj
//        [heads*(nope+v), kv_lora], o_proj [hidden, heads*v]
//   dense layers: mlp.{gate,up}_proj.weight [dense_inter, hidden], mlp.down_proj.weight
//        [hidden, dense_inter]
//   MoE layers: mlp.gate.weight [experts, hidden] (router), mlp.gate.e_score_correction_bias
//        [experts] (when router_bias), mlp.experts.e.{gate,up,down}_proj.weight,
//        mlp.shared_experts.{gate,up,down}_proj.weight with width num_shared * expert_inter
//        (the checkpoints fuse the shared experts into one MLP)
//   model.norm.weight [hidden]; lm_head.weight [vocab, hidden] unless tie_embeddings.
// Storage dtypes: everything BF16 except the router bias, F32 (as in the DeepSeek-V3
// checkpoints: the bias is added to sigmoid scores and needs the precision). MTP modules are
// not listed (params_total() excludes them too; their tensors in a checkpoint count as extra).
// Order: checkpoint order (embedding, layer by layer, final norm, head).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "models/weights/dtype.h"

namespace moe::models {

// What a tensor is for; decides its initialisation.
enum class TensorRole : uint8_t {
  kEmbedding,       // token embeddings
  kNorm,            // RMSNorm weights
  kLinear,          // a projection into the residual path's working space
  kOutputLinear,    // a projection back into the residual stream (o_proj, down_proj)
  kRouter,          // router logits
  kRouterBias,      // per-expert selection bias
  kLmHead,          // output logits
};

enum class ExpertProj : uint8_t { kGate = 0, kUp = 1, kDown = 2 };

struct TensorSpec {
  std::string name;
  DType dtype = DType::kBf16;
  std::vector<uint64_t> shape;
  TensorRole role = TensorRole::kLinear;
  int32_t layer = -1;   // -1: not in a layer
  int32_t expert = -1;  // routed expert index, -1 otherwise
  uint64_t num_elements() const;
  uint64_t size_bytes() const { return num_elements() * dtype_size(dtype); }
};

// Every tensor of `config`, in checkpoint order. Precondition: validate_config(config) is OK.
// A full-size model lists tens of thousands of specs (DeepSeek-V3: ~47k); no data is involved.
std::vector<TensorSpec> model_tensor_specs(const ModelConfig& config);
// The tensors of one layer (attention, norms, FFN or router, shared and routed experts).
std::vector<TensorSpec> layer_tensor_specs(const ModelConfig& config, uint32_t layer);
// The three tensors of routed expert `expert` of MoE layer `layer` (gate, up, down).
std::vector<TensorSpec> expert_tensor_specs(const ModelConfig& config, uint32_t layer,
                                            uint32_t expert);
// "model.layers.3.mlp.experts.17.gate_proj.weight"
std::string expert_tensor_name(uint32_t layer, uint32_t expert, ExpertProj proj);
// True for routed and shared expert weights (the tensors W8A8 stores as INT8).
bool is_expert_weight(const TensorSpec& spec);
// The name of the per-output-channel scale of an INT8-stored tensor: name + "_scale".
std::string int8_scale_name(const std::string& name);

}  // namespace moe::models
