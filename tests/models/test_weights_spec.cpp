// The tensor lists: Hugging Face names and shapes, parameter counts that match the configs,
// and lazy access to full-size models without materialising them.
#include <doctest/doctest.h>

#include <unordered_set>

#include "models/weights/weight_spec.h"
#include "models/weights/weight_store.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;

namespace {

const TensorSpec* find(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const TensorSpec& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

}  // namespace

TEST_CASE("models.weights: every preset's tensor list sums to its parameter count") {
  for (const std::string& name : model_names()) {
    CAPTURE(name);
    const ModelConfig c = model_config(name).value();
    const std::vector<TensorSpec> specs = model_tensor_specs(c);
    uint64_t total = 0;
    std::unordered_set<std::string> names;
    for (const TensorSpec& s : specs) {
      total += s.num_elements();
      CHECK(names.insert(s.name).second);
      CHECK((s.dtype == DType::kBf16 || (s.role == TensorRole::kRouterBias && s.dtype == DType::kF32)));
    }
    CHECK(total == c.params_total());
    CHECK(specs.front().name == "model.embed_tokens.weight");
    CHECK(specs.back().name == (c.tie_embeddings ? "model.norm.weight" : "lm_head.weight"));
  }
}

TEST_CASE("models.weights: DeepSeek-V3 tensors carry the checkpoint's names and shapes") {
  const ModelConfig c = model_config("deepseek-v3").value();
  const std::vector<TensorSpec> specs = model_tensor_specs(c);
  struct Expect {
    const char* name;
    std::vector<uint64_t> shape;
  };
  const Expect expected[] = {
      {"model.embed_tokens.weight", {129280, 7168}},
      {"model.layers.0.self_attn.q_a_proj.weight", {1536, 7168}},
      {"model.layers.0.self_attn.q_a_layernorm.weight", {1536}},
      {"model.layers.0.self_attn.q_b_proj.weight", {128 * 192, 1536}},
      {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", {576, 7168}},
      {"model.layers.0.self_attn.kv_a_layernorm.weight", {512}},
      {"model.layers.0.self_attn.kv_b_proj.weight", {128 * 256, 512}},
      {"model.layers.0.self_attn.o_proj.weight", {7168, 128 * 128}},
      {"model.layers.2.mlp.gate_proj.weight", {18432, 7168}},
      {"model.layers.2.mlp.down_proj.weight", {7168, 18432}},
      {"model.layers.3.mlp.gate.weight", {256, 7168}},
      {"model.layers.3.mlp.gate.e_score_correction_bias", {256}},
      {"model.layers.3.mlp.experts.255.up_proj.weight", {2048, 7168}},
      {"model.layers.60.mlp.experts.0.down_proj.weight", {7168, 2048}},
      {"model.layers.60.mlp.shared_experts.gate_proj.weight", {2048, 7168}},
      {"model.layers.60.post_attention_layernorm.weight", {7168}},
      {"model.norm.weight", {7168}},
      {"lm_head.weight", {129280, 7168}},
  };
  for (const Expect& e : expected) {
    CAPTURE(e.name);
    const TensorSpec* s = find(specs, e.name);
    REQUIRE(s != nullptr);
    CHECK(s->shape == e.shape);
  }
  CHECK(find(specs, "model.layers.2.mlp.gate.weight") == nullptr);  // dense layer: no router
  CHECK(find(specs, "model.layers.61.input_layernorm.weight") == nullptr);  // no MTP
  CHECK(find(specs, "model.layers.3.mlp.gate.e_score_correction_bias")->dtype == DType::kF32);
  CHECK(expert_tensor_name(3, 17, ExpertProj::kDown) ==
        "model.layers.3.mlp.experts.17.down_proj.weight");
  const std::vector<TensorSpec> expert = expert_tensor_specs(c, 5, 9);
  REQUIRE(expert.size() == 3);
  CHECK(expert[0].name == "model.layers.5.mlp.experts.9.gate_proj.weight");
  CHECK(expert[2].shape == std::vector<uint64_t>{7168, 2048});
  CHECK(expert[1].expert == 9);
  CHECK(is_expert_weight(expert[0]));
  CHECK(is_expert_weight(*find(specs, "model.layers.60.mlp.shared_experts.up_proj.weight")));
  CHECK_FALSE(is_expert_weight(*find(specs, "model.layers.3.mlp.gate.weight")));

  const std::vector<TensorSpec> qwen = model_tensor_specs(model_config("qwen3-30b-a3b").value());
  CHECK(find(qwen, "model.layers.0.self_attn.q_norm.weight")->shape == std::vector<uint64_t>{128});
  CHECK(find(qwen, "model.layers.0.self_attn.k_proj.weight")->shape ==
        std::vector<uint64_t>{4 * 128, 2048});
  CHECK(find(qwen, "model.layers.0.mlp.shared_experts.up_proj.weight") == nullptr);
  CHECK(find(qwen, "model.layers.0.mlp.gate.e_score_correction_bias") == nullptr);
}

TEST_CASE("models.weights: a full-size model is read lazily, a range at a time") {
  StatusOr<ModelWeights> w = ModelWeights::random(model_config("deepseek-v3").value(), 7);
  REQUIRE(w.ok());
  CHECK(w->is_random());
  const std::string name = expert_tensor_name(60, 255, ExpertProj::kGate);
  const TensorSpec* spec = w->find_spec(name);
  REQUIRE(spec != nullptr);
  // The last 16 elements of one 14.7M-element expert weight, without computing the rest.
  std::vector<uint8_t> tail(16 * 2);
  REQUIRE(w->read_into(name, tail, spec->num_elements() - 16).ok());
  bool nonzero = false;
  for (const uint8_t b : tail) nonzero |= b != 0;
  CHECK(nonzero);
  std::vector<uint8_t> past(18 * 2);
  CHECK(w->read_into(name, past, spec->num_elements() - 16).code() == StatusCode::kOutOfRange);
  CHECK(w->read_into("model.layers.61.mlp.gate.weight", tail).code() == StatusCode::kNotFound);
  CHECK(w->expert(2, 0).status().code() == StatusCode::kOutOfRange);  // dense layer
  CHECK(w->expert(3, 256).status().message().find("no routed expert 256 in layer 3") !=
        std::string::npos);
  ModelConfig bad = model_config("builtin").value();
  bad.top_k = 0;
  CHECK(ModelWeights::random(bad, 1).status().code() == StatusCode::kInvalidArgument);
}
