// Model presets: valid shapes, parameter counts close to the published ones, clear refusals.
#include <doctest/doctest.h>

#include <cmath>

#include "models/model_config.h"

using namespace moe;
using namespace moe::models;

TEST_CASE("models.config: every preset validates and counts its published parameters") {
  struct Published {
    const char* name;
    double total_b;
    double active_b;
  };
  // Published totals (billions), MTP modules excluded.
  const Published published[] = {{"deepseek-v3", 671, 37}, {"deepseek-r1", 671, 37},
                                 {"pangu-ultra-moe", 718, 39}, {"qwen3-235b-a22b", 235, 22},
                                 {"qwen3-30b-a3b", 30.5, 3.3}, {"mixtral-8x7b", 46.7, 12.9}};
  for (const Published& p : published) {
    CAPTURE(p.name);
    StatusOr<ModelConfig> c = model_config(p.name);
    REQUIRE(c.ok());
    CHECK(validate_config(*c).ok());
    CHECK(std::abs(c->params_total() / 1e9 / p.total_b - 1) < 0.015);
    CHECK(std::abs(c->params_active() / 1e9 / p.active_b - 1) < 0.05);
  }
}

TEST_CASE("models.config: the built-in model puts a routed expert on each of 384 NPUs") {
  StatusOr<ModelConfig> c = model_config("builtin");
  REQUIRE(c.ok());
  CHECK(validate_config(*c).ok());
  CHECK(c->num_experts >= 384);
  CHECK(c->num_shared_experts >= 1);
  CHECK(c->vocab_size == 256);
  CHECK(c->num_moe_layers() >= 2);
}

TEST_CASE("models.config: bad shapes and names are refused naming the field") {
  StatusOr<ModelConfig> unknown = model_config("gpt-5");
  CHECK(unknown.status().code() == StatusCode::kNotFound);
  CHECK(unknown.status().message().find("deepseek-v3") != std::string::npos);

  ModelConfig c = model_config("builtin").value();
  c.top_k = c.num_experts + 1;
  CHECK(validate_config(c).message().find("top_k") != std::string::npos);
  c = model_config("builtin").value();
  c.num_groups = 7;
  CHECK(validate_config(c).message().find("num_groups 7") != std::string::npos);
  c = model_config("deepseek-v3").value();
  c.head_dim = 128;
  CHECK(validate_config(c).message().find("head_dim") != std::string::npos);
  c = model_config("mixtral-8x7b").value();
  c.num_kv_heads = 5;
  CHECK(validate_config(c).message().find("num_kv_heads") != std::string::npos);
}
