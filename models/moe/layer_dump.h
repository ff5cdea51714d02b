// Dumping one MoE layer (input, weights, routing, output) as safetensors files, so that
// another framework (PyTorch, NumPy, JAX) can recompute the layer and check this runtime.
//
// What is computed: ModelWeights::random(config, seed) gives the layer's weights; the input
// x is num_tokens rows of hidden values, each a standard normal draw rounded to BF16 (so x is
// exactly representable in BF16 and F32), deterministic from the seed (make_layer_dump_input);
// the layer is the single-host MoeLayer (models/moe/moe_layer.h) at the requested precision.
//
// Files written into the output directory (every file atomically, manifest.json last, so a
// directory holding manifest.json is complete):
//   input.safetensors    x            F32 [T, hidden]
//   weights.safetensors  the layer's MoE weights under their checkpoint names and dtypes
//                        (models/weights/weight_spec.h): model.layers.L.mlp.gate.weight
//                        BF16 [E, hidden], mlp.gate.e_score_correction_bias F32 [E] (when the
//                        config has a router bias), mlp.experts.e.{gate,up,down}_proj.weight
//                        BF16 for every routed expert e, mlp.shared_experts.{gate,up,down}_proj
//                        .weight BF16 (the shared experts fused, width num_shared * inter)
//   router.safetensors   logits F32 [T, E] (x gate^T, double accumulation rounded to float),
//                        topk_ids I32 [T, k], topk_weights F32 [T, k] (final weights: after
//                        normalisation and scaling), expert_counts I32 [E]
//   output.safetensors   y F32 [T, hidden]
//   manifest.json        the config, the request, the tensors and the formula (machine-readable)
//   README.txt           the formula in words, and the tolerance a checker should use
//
// The formula (MoeLayer's contract, router conventions of models/kernels/router.h):
//   y_t = sum_k w_{t,k} * FFN_{e_{t,k}}(x_t) + FFN_shared(x_t),
//   FFN(x) = W_down (silu(W_gate x) * (W_up x)), silu(a) = a / (1 + exp(-a)).
//
// Size guard: a full-size layer is large (DeepSeek-V3: 256 experts of 3 x 7168 x 2048 BF16,
// about 21 GiB). Layers whose dumped weights exceed LayerDumpRequest::max_weight_bytes are
// refused (kFailedPrecondition naming the size and the allow_large switch) unless allow_large;
// even then, a layer whose forward pass needs more host memory than the machine has is
// refused (kResourceExhausted with the estimate), because the single-host layer holds working
// copies of every expert.
//
// Thread-safety: no shared state; concurrent dumps into different directories are fine.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "models/kernels/expert_ffn.h"
#include "models/model_config.h"
#include "runtime/base/status.h"

namespace moe::models {

inline constexpr uint32_t kMaxLayerDumpTokens = 1u << 16;
inline constexpr uint64_t kDefaultMaxDumpWeightBytes = 2ull << 30;  // 2 GiB

// Progress of a long dump: reported after each weight tensor is generated (stage
// "generating weights") and again as each is written (stage "writing weights.safetensors").
struct LayerDumpProgress {
  const char* stage = "";  // a static string
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint32_t tensors_done = 0;
  uint32_t tensors_total = 0;
};

struct LayerDumpRequest {
  std::string model = "builtin";      // a preset name (model_config()); ignored by the overload
                                      // that takes a ModelConfig
  uint64_t seed = 0;                  // weights: ModelWeights::random(config, seed); input too
  uint32_t num_tokens = 0;            // T, in [1, kMaxLayerDumpTokens]
  std::optional<uint32_t> layer;      // an MoE layer; default: the first (num_dense_layers)
  ExpertPrecision precision = ExpertPrecision::kBf16;
  std::string out_dir;                // created (with parents) if missing
  bool force = false;                 // write into an existing non-empty directory (our file
                                      // names are replaced, manifest.json removed first;
                                      // other files are left alone)
  bool allow_large = false;           // lift the max_weight_bytes guard
  uint64_t max_weight_bytes = kDefaultMaxDumpWeightBytes;
  std::function<void(const LayerDumpProgress&)> progress = nullptr;  // optional
};

struct LayerDumpSummary {
  std::string out_dir;
  std::string model;
  uint32_t layer = 0;
  uint32_t num_tokens = 0;
  uint64_t weight_bytes = 0;   // bytes of the tensors in weights.safetensors
  std::vector<std::string> files;  // names inside out_dir, in the order written
};

// The dumped input: num_tokens x hidden values, element i = round_to_bf16(N_i) where N_i is
// a standard normal draw (Box-Muller on a splitmix64 counter stream keyed by seed and i), so
// any prefix of tokens is the same for a larger num_tokens.
std::vector<float> make_layer_dump_input(uint64_t seed, uint32_t num_tokens, uint32_t hidden);

// The names of the tensors of `layer` that weights.safetensors holds (the MoE part of
// layer_tensor_specs, in checkpoint order) and their total bytes. kInvalidArgument if the
// layer is not an MoE layer of `config` (naming the MoE layer range).
StatusOr<uint64_t> moe_layer_weight_bytes(const ModelConfig& config, uint32_t layer);

// Runs the dump (see the header note). Refusals, all before anything is written:
// kNotFound for an unknown model; kInvalidArgument for num_tokens outside [1,
// kMaxLayerDumpTokens], a layer that is not an MoE layer, an empty out_dir;
// kAlreadyExists for an out_dir that exists and is not an empty directory (without force),
// or that exists and is not a directory (always); kFailedPrecondition / kResourceExhausted
// for the size guard. File-system failures name the path.
StatusOr<LayerDumpSummary> dump_moe_layer(const LayerDumpRequest& request);
StatusOr<LayerDumpSummary> dump_moe_layer(const ModelConfig& config,
                                          const LayerDumpRequest& request);

}  // namespace moe::models
