// models.cost: the cost functions count what they must, and their roofline on the simulated
// NPU has the calibrated shape (weight-bound below the knee, compute-bound above).
#include <doctest/doctest.h>

#include <vector>

#include "firmware-sim/presets.h"
#include "models/cost/cost_attention.h"
#include "models/cost/cost_layer.h"
#include "models/cost/cost_linear.h"
#include "models/cost/cost_moe.h"
#include "models/model_config.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"

using namespace moe;
using namespace moe::models::cost;

TEST_CASE("models.cost: a linear layer is 2mnk FLOPs and INT8 halves the weight bytes") {
  const KernelCost bf = linear_cost(16, 7168, 4096, dev::Precision::kBf16);
  const KernelCost i8 = linear_cost(16, 7168, 4096, dev::Precision::kInt8);
  CHECK(bf.flops == doctest::Approx(2.0 * 16 * 7168 * 4096));
  CHECK(bf.kernel_class == dev::KernelClass::kMatmul);
  const double w_bf = linear_weight_bytes(7168, 4096, dev::Precision::kBf16);
  const double w_i8 = linear_weight_bytes(7168, 4096, dev::Precision::kInt8);
  CHECK(w_bf == 7168.0 * 4096 * 2);
  CHECK(w_i8 == 7168.0 * 4096 + 4096 * 4);  // plus per-channel FP32 scales
  CHECK(w_i8 / w_bf == doctest::Approx(0.5).epsilon(0.001));
  // Activations are the same BF16 bytes at either precision.
  CHECK(bf.hbm_bytes - w_bf == doctest::Approx(i8.hbm_bytes - w_i8));
  const KernelCost b = batched_linear_cost(128, 4, 128, 512, dev::Precision::kBf16);
  CHECK(b.flops == doctest::Approx(128 * 2.0 * 4 * 128 * 512));
}

TEST_CASE("models.cost: a decode expert FFN is weight-bound below the knee, compute-bound above") {
  const dev::Topology t = sim::make_preset("n8").value();
  auto up_gate = [](uint32_t rows) {
    const uint32_t r[1] = {rows};
    return grouped_expert_ffn_cost(r, 7168, 2048, dev::Precision::kBf16).up_gate;
  };
  CHECK(matmul_bandwidth_bound(up_gate(8), t));
  CHECK(matmul_bandwidth_bound(up_gate(64), t));
  CHECK_FALSE(matmul_bandwidth_bound(up_gate(2048), t));
  // Flat below the knee (as the calibration curve): 1 and 64 rows within 3%.
  CHECK(matmul_ns(up_gate(64), t) == doctest::Approx(matmul_ns(up_gate(1), t)).epsilon(0.03));
  // Far above it, time grows with rows (x2 rows -> about x2 time).
  CHECK(matmul_ns(up_gate(8192), t) / matmul_ns(up_gate(4096), t) == doctest::Approx(2.0).epsilon(0.05));
  // Experts no token chose are not read; INT8 halves the weight read.
  const std::vector<uint32_t> rows = {4, 0, 4, 0};
  const ExpertFfnCost bf = grouped_expert_ffn_cost(rows, 7168, 2048, dev::Precision::kBf16);
  const ExpertFfnCost i8 = grouped_expert_ffn_cost(rows, 7168, 2048, dev::Precision::kInt8);
  CHECK(bf.active_experts == 2);
  CHECK(bf.rows == 8);
  CHECK(bf.weight_bytes == doctest::Approx(2 * 3.0 * 7168 * 2048 * 2));
  CHECK(i8.weight_bytes / bf.weight_bytes == doctest::Approx(0.5).epsilon(0.01));
  CHECK(bf.up_gate.flops + bf.down.flops == doctest::Approx(8 * 2.0 * 3 * 7168 * 2048));
}

TEST_CASE("models.cost: the roofline estimate is what a timing-mode stream models") {
  rt::RuntimeOptions o;
  o.supernode = "n8";
  o.mode = rt::ExecutionMode::kTiming;
  o.open_transport = false;
  auto runtime = rt::Runtime::open(o);
  REQUIRE(runtime.ok());
  auto s = rt::Stream::create(**runtime, 3, 1);
  REQUIRE(s.ok());
  for (uint32_t rows : {1u, 256u, 4096u}) {
    const KernelCost k = linear_cost(rows, 7168, 4096, dev::Precision::kInt8);
    const double before = (*s)->modelled_time().ns;
    REQUIRE((*s)->launch(to_kernel(k)).ok());
    CHECK((*s)->modelled_time().ns - before ==
          doctest::Approx(matmul_ns(k, (*runtime)->topology())).epsilon(1e-9));
  }
  CHECK((*s)->synchronize().ok());
}

TEST_CASE("models.cost: attention costs scale with the cache and the causal triangle") {
  const KernelCost a = mla_decode_cost(8, 128, 512, 64, 1024);
  const KernelCost b = mla_decode_cost(8, 128, 512, 64, 4096);
  CHECK(b.flops / a.flops == doctest::Approx(4.0));
  CHECK(b.hbm_bytes - a.hbm_bytes == doctest::Approx(8.0 * 3072 * 576 * 2));  // the cache
  // The latent cache is read once for all heads: doubling heads adds only queries/outputs.
  const KernelCost c = mla_decode_cost(8, 256, 512, 64, 4096);
  CHECK(c.hbm_bytes - b.hbm_bytes == doctest::Approx(8.0 * 128 * (576 + 512) * 2));
  const KernelCost g = gqa_decode_cost(4, 32, 8, 128, 2048);
  CHECK(g.hbm_bytes >= 4.0 * 2048 * 2 * 8 * 128 * 2);
  const KernelCost p1 = causal_prefill_attention_cost(1, 2048, 32, 8, 128, 128);
  const KernelCost p2 = causal_prefill_attention_cost(1, 4096, 32, 8, 128, 128);
  CHECK(p2.flops / p1.flops == doctest::Approx(4.0).epsilon(0.001));  // ~S^2 / 2
  CHECK(p1.flops == doctest::Approx(32.0 * 2048 * 2049 / 2 * (4 * 128 + 5)));
  // A DeepSeek-V3 attention block lists its projections and core; INT8 makes it cheaper.
  const models::ModelConfig dsv3 = models::model_config("deepseek-v3").value();
  AttentionWork w;
  w.seqs = 4;
  w.kv_len = 4096;
  double bytes_bf = 0, bytes_i8 = 0;
  for (const KernelCost& k : attention_block_costs(dsv3, w, dev::Precision::kBf16)) bytes_bf += k.hbm_bytes;
  for (const KernelCost& k : attention_block_costs(dsv3, w, dev::Precision::kInt8)) bytes_i8 += k.hbm_bytes;
  CHECK(bytes_i8 < bytes_bf);
  CHECK(kv_cache_bytes_per_token(dsv3) == (512 + 64) * 2);
}

TEST_CASE("models.cost: an attention block split by heads halves the weights, not the cache") {
  const models::ModelConfig dsv3 = models::model_config("deepseek-v3").value();
  AttentionWork w;
  w.seqs = 4;
  w.kv_len = 4096;
  auto sum = [](const std::vector<KernelCost>& ks, std::string_view name = {}) {
    KernelCost t;
    for (const KernelCost& k : ks)
      if (name.empty() || k.name == name) t += k;
    return t;
  };
  const KernelCost whole = sum(attention_block_costs(dsv3, w, dev::Precision::kInt8));
  const KernelCost stages = sum(attention_input_costs(dsv3, w, dev::Precision::kInt8)) +=
      sum(attention_head_costs(dsv3, w, dev::Precision::kInt8));
  CHECK(stages.flops < whole.flops);  // the block adds the residual to the two stages
  w.head_split = 2;
  const std::vector<KernelCost> in = attention_input_costs(dsv3, w, dev::Precision::kInt8);
  const std::vector<KernelCost> heads = attention_head_costs(dsv3, w, dev::Precision::kInt8);
  w.head_split = 1;
  const std::vector<KernelCost> in1 = attention_input_costs(dsv3, w, dev::Precision::kInt8);
  const std::vector<KernelCost> heads1 = attention_head_costs(dsv3, w, dev::Precision::kInt8);
  // Per-head products and the down-projections carry half of the FLOPs.
  for (std::string_view n : {"q_a_proj", "kv_a_proj", "q_b_proj", "mla_absorb_q", "mla_absorb_out", "o_proj"})
    CHECK_MESSAGE(sum(in, n).flops + sum(heads, n).flops ==
                      doctest::Approx((sum(in1, n).flops + sum(heads1, n).flops) / 2),
                  std::string(n));
  // The core still reads the whole latent cache of every sequence.
  const KernelCost core = sum(heads, "mla_decode"), core1 = sum(heads1, "mla_decode");
  CHECK(core.flops == doctest::Approx(core1.flops / 2));
  CHECK(core.hbm_bytes > 0.9 * core1.hbm_bytes);
  // Weights per die: split 1 is the config's count; split 2 about half. Cache per NPU:
  // MLA keeps a latent copy per die, GQA splits its KV heads.
  for (const std::string& name : models::model_names()) {
    const models::ModelConfig c = models::model_config(name).value();
    CHECK(attention_weight_bytes(c, dev::Precision::kBf16) == double(c.attention_params()) * 2);
    CHECK(attention_weight_bytes(c, dev::Precision::kInt8, 2) ==
          doctest::Approx(attention_weight_bytes(c, dev::Precision::kInt8) / 2).epsilon(0.01));
  }
  CHECK(kv_cache_bytes_per_token(dsv3, 2) == 2 * kv_cache_bytes_per_token(dsv3));
  const models::ModelConfig qwen = models::model_config("qwen3-30b-a3b").value();
  CHECK(kv_cache_bytes_per_token(qwen, 2) == kv_cache_bytes_per_token(qwen));
}
