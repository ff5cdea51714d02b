// Model configurations: the shapes of the reference MoE models and of the built-in default.
//
// A ModelConfig is plain data: every shape the kernels, the cost functions, the weight store
// and the engine need, and nothing about where it runs (that is the engine's placement).
// The reference presets follow the models' public configs (DESIGN.md §6 and each model's
// released config.json); see model_config.cpp for the sources and the choices made where a
// figure is not public.
//
// Layers: layers [0, num_dense_layers) have a dense SwiGLU FFN of width dense_intermediate;
// the others are MoE layers (routed experts, top_k per token, plus num_shared_experts
// always-on experts, each of width expert_intermediate).
//
// Thread-safety: plain values; the preset functions are pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models {

enum class AttentionKind : uint8_t {
  kGqa = 0,  // grouped-query attention: num_heads query heads share num_kv_heads K/V heads
  kMla = 1,  // multi-head latent attention (DeepSeek-V2/V3): compressed KV (MlaShape)
};

enum class RouterScore : uint8_t {
  kSoftmax = 0,  // scores = softmax(logits) over all routed experts
  kSigmoid = 1,  // scores = sigmoid(logits) (DeepSeek-V3)
};

// MLA dimensions (kMla only).
struct MlaShape {
  uint32_t q_lora_rank = 0;       // 0: queries projected directly from the hidden state
  uint32_t kv_lora_rank = 0;      // the compressed KV width that the cache holds
  uint32_t qk_nope_head_dim = 0;  // per head, the part of q/k without rotary embedding
  uint32_t qk_rope_head_dim = 0;  // per head, the rotary part (k's is shared by all heads)
  uint32_t v_head_dim = 0;
  bool operator==(const MlaShape&) const = default;
};

struct ModelConfig {
  std::string name;
  uint32_t num_layers = 0;
  uint32_t num_dense_layers = 0;   // the first layers, with a dense FFN instead of MoE
  uint32_t hidden = 0;
  uint32_t vocab_size = 0;
  uint32_t dense_intermediate = 0; // FFN width of the dense layers
  bool tie_embeddings = false;     // the LM head reuses the embedding table

  // Attention.
  AttentionKind attention = AttentionKind::kGqa;
  uint32_t num_heads = 0;
  uint32_t num_kv_heads = 0;       // kGqa; kMla: equal to num_heads (after decompression)
  uint32_t head_dim = 0;           // kGqa: q/k/v per head; kMla: qk_nope + qk_rope
  MlaShape mla;
  bool qk_norm = false;            // RMSNorm on q and k per head (Qwen3)
  double rope_theta = 10000.0;
  float norm_eps = 1e-6f;
  uint32_t max_seq_len = 4096;

  // Mixture of experts.
  uint32_t num_experts = 0;        // routed experts per MoE layer
  uint32_t top_k = 0;              // routed experts per token
  uint32_t num_shared_experts = 0;
  uint32_t expert_intermediate = 0;
  RouterScore router_score = RouterScore::kSoftmax;
  bool normalize_topk = true;      // routed weights divided by their sum
  float routed_scaling = 1.0f;     // routed weights multiplied by this after normalisation
  uint32_t num_groups = 1;         // group-limited routing: experts in num_groups groups,
  uint32_t topk_groups = 1;        //   tokens choose among the best topk_groups groups
  bool router_bias = false;        // a per-expert bias added for selection only (DSV3)

  uint32_t mtp_layers = 0;         // multi-token-prediction modules (DSV3: 1)

  bool is_moe_layer(uint32_t layer) const {
    return layer >= num_dense_layers && layer < num_layers;
  }
  uint32_t num_moe_layers() const { return num_layers - num_dense_layers; }
  // Elements of one token's K/V cache entry in one layer (kGqa: 2 * kv_heads * head_dim;
  // kMla: kv_lora_rank + qk_rope_head_dim).
  uint64_t kv_cache_elems_per_token() const;
  // Parameters of the attention block of one layer (projections, and norms).
  uint64_t attention_params() const;
  // Parameters, MTP modules excluded: every weight, and those one token uses.
  uint64_t params_total() const;
  uint64_t params_active() const;
  bool operator==(const ModelConfig&) const = default;
};

// Checks the shapes: nonzero sizes, top_k <= num_experts, groups dividing the experts with
// topk_groups <= num_groups and enough experts in the chosen groups for top_k, GQA heads
// divisible by kv heads, MLA dims present for kMla, dense layers <= layers. kInvalidArgument
// naming the field and the values.
Status validate_config(const ModelConfig& config);

// The presets: "deepseek-v3" (alias "deepseek-r1"), "pangu-ultra-moe", "qwen3-235b-a22b",
// "qwen3-30b-a3b", "mixtral-8x7b", and "builtin": the small default that runs in functional
// mode on one host yet puts at least one routed expert on each of 384 NPUs. kNotFound
// naming the unknown name and listing the presets.
StatusOr<ModelConfig> model_config(std::string_view name);
std::vector<std::string> model_names();

std::string config_to_json(const ModelConfig& config);

}  // namespace moe::models
