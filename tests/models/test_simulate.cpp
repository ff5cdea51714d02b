// models.simulate: a small DeepSeek-V3-shaped model (5 layers) on n16 in timing mode gives
// positive, consistent modelled times; the CLI refuses bad input with exit status 2.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "firmware-sim/description.h"
#include "firmware-sim/presets.h"
#include "models/cost/cost_layer.h"
#include "models/model_config.h"
#include "models/simulate.h"
#include "models/weights/json_parse.h"

using namespace moe;
using namespace moe::models;

namespace {

ModelConfig small_model() {
  ModelConfig c = model_config("deepseek-v3").value();
  c.name = "dsv3-5layer";
  c.num_layers = 5;
  c.num_dense_layers = 1;
  return c;
}

SimulateResult run(SimulateOptions o, const ModelConfig& c = small_model()) {
  if (o.supernode == "cm384") o.supernode = "n16";
  auto r = simulate(c, o);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return *r;
}

void check_sane(const SimulateResult& r) {
  CHECK(r.step_ns > 0);
  CHECK(r.tokens_per_s_per_npu > 0);
  CHECK(r.parts.attention_ns > 0);
  CHECK(r.parts.experts_ns > 0);
  CHECK(r.parts.dispatch_ns > 0);
  CHECK(r.parts.combine_ns > 0);
  CHECK(r.unoverlapped_comm_share >= 0.0);
  CHECK(r.unoverlapped_comm_share <= 1.0);
  // The step covers the busiest die's work and at most every part in sequence (+ small slack
  // for imbalance waits, which the compute parts do not count).
  CHECK(r.step_ns >= r.compute_busy_ns * 0.999);
  CHECK(r.hbm.total > 0);
}

}  // namespace

TEST_CASE("models.simulate: more tokens are never faster, and every part is positive") {
  SimulateOptions o;
  o.moe_layers = 0;
  o.batch_per_npu = 4;
  const SimulateResult small = run(o);
  o.batch_per_npu = 32;
  const SimulateResult big = run(o);
  check_sane(small);
  check_sane(big);
  CHECK(big.step_ns >= small.step_ns);
  CHECK(big.tokens_per_s_per_npu > small.tokens_per_s_per_npu);  // batching pays
  CHECK(big.hbm.kv_cache == doctest::Approx(8 * small.hbm.kv_cache));
  CHECK(small.tpot_ns == small.step_ns);
}

TEST_CASE("models.simulate: EP over more NPUs means less expert time per NPU") {
  SimulateOptions o;
  o.moe_layers = 0;
  o.batch_per_npu = 8;
  o.npus = 16;
  o.ep = 8;
  const SimulateResult ep8 = run(o);
  o.ep = 16;
  const SimulateResult ep16 = run(o);
  CHECK(ep8.groups == 2);
  CHECK(ep8.experts_per_npu == 32);
  CHECK(ep16.experts_per_npu == 16);
  CHECK(ep16.parts.experts_ns < ep8.parts.experts_ns);
  CHECK(ep16.hbm.routed_expert_weights == doctest::Approx(ep8.hbm.routed_expert_weights / 2));
}

// Two microbatches overlap one's communication with the other's compute, but launch every
// kernel and read every weight twice per layer: on n16 that costs more than the overlap
// saves (communication is a few percent there), so the step is not asserted faster; what
// must hold is that less communication is left exposed, and the share stays in [0, 1].
TEST_CASE("models.simulate: two microbatches leave less communication un-overlapped") {
  ModelConfig c = small_model();
  c.name = "wide-tokens";
  c.attention = AttentionKind::kGqa;
  c.num_heads = 8;
  c.num_kv_heads = 1;
  c.head_dim = 64;
  c.mla = {};
  c.qk_norm = false;
  c.vocab_size = 1024;
  c.dense_intermediate = 128;
  c.num_experts = 64;
  c.num_groups = 1;
  c.topk_groups = 1;
  c.expert_intermediate = 128;
  c.num_shared_experts = 0;
  c.mtp_layers = 0;
  SimulateOptions o;
  o.moe_layers = 0;
  o.batch_per_npu = 64;
  const SimulateResult one = run(o, c);
  o.microbatches = 2;
  const SimulateResult two = run(o, c);
  check_sane(one);
  check_sane(two);
  CHECK(two.unoverlapped_comm_share < one.unoverlapped_comm_share);
  CHECK(two.units == 2);
  // Every exposed nanosecond is one the busiest die spent idle, at most the communication.
  CHECK(two.exposed_comm_ns <= two.comm_ns);
  CHECK(one.exposed_comm_ns > 0);
}

// What a second microbatch costs: each layer's kernels run once per unit (twice the
// launches, every weight streamed twice), while the tokens, and so the activation and KV
// bytes, are only split. Bytes(B) = weights + tokens part: doubling the batch in one unit
// adds the tokens part; a second unit adds the layers' weights again (not the LM head's:
// the step's ends run once).
TEST_CASE("models.simulate: two microbatches launch twice the kernels and read the weights twice") {
  const ModelConfig c = small_model();
  SimulateOptions o;
  o.moe_layers = 0;
  o.batch_per_npu = 32;
  const SimulateResult one = run(o, c);
  o.microbatches = 2;
  const SimulateResult two = run(o, c);
  o.microbatches = 1;
  o.batch_per_npu = 64;
  const SimulateResult one_double = run(o, c);
  CHECK(two.kernels_per_die > 1.9 * one.kernels_per_die);
  CHECK(two.kernels_per_die < 2.0 * one.kernels_per_die);
  CHECK(one_double.kernels_per_die == one.kernels_per_die);
  const double tokens_part = one_double.hbm_bytes_per_die - one.hbm_bytes_per_die;
  const double weights = one.hbm_bytes_per_die - tokens_part;
  const double lm_head = double(c.vocab_size) * c.hidden * 2.0;  // BF16, read once per step
  CHECK(tokens_part > 0);
  CHECK(weights > lm_head);
  CHECK(two.hbm_bytes_per_die - one.hbm_bytes_per_die ==
        doctest::Approx(weights - lm_head).epsilon(0.01));
}

TEST_CASE("models.simulate: MTP verifies two tokens per step and divides by 1 + P") {
  SimulateOptions o;
  o.moe_layers = 0;
  o.batch_per_npu = 8;
  const SimulateResult plain = run(o);
  o.mtp = 1;
  o.mtp_accept = 0.8;
  const SimulateResult mtp = run(o);
  CHECK(mtp.tokens_per_seq == 2);
  CHECK(mtp.moe_layers_total == plain.moe_layers_total + 1);
  CHECK(mtp.step_ns > plain.step_ns);
  CHECK(mtp.tpot_ns == doctest::Approx(mtp.step_ns / 1.8));
  CHECK(mtp.tokens_per_s_per_npu == doctest::Approx(8 * 1.8 / (mtp.step_ns * 1e-9)));
}

TEST_CASE("models.simulate: scaling from a few MoE layers agrees with simulating all") {
  ModelConfig c = small_model();
  c.num_layers = 9;  // 8 MoE layers
  SimulateOptions o;
  o.batch_per_npu = 8;
  o.moe_layers = 0;
  const SimulateResult all = run(o, c);
  o.moe_layers = 3;
  const SimulateResult scaled = run(o, c);
  CHECK(scaled.moe_layers_simulated == 3);
  CHECK(scaled.step_ns == doctest::Approx(all.step_ns).epsilon(0.03));
  CHECK(scaled.parts.experts_ns == doctest::Approx(all.parts.experts_ns).epsilon(0.03));
  // Every part scales, the FFN residual launched at the next layer's start included.
  CHECK(scaled.parts.other_ns == doctest::Approx(all.parts.other_ns).epsilon(0.01));
  CHECK(scaled.parts.attention_ns == doctest::Approx(all.parts.attention_ns).epsilon(0.01));
  CHECK(scaled.kernels_per_die == doctest::Approx(all.kernels_per_die).epsilon(1e-9));
}

TEST_CASE("models.simulate: prefill runs the causal attention and chunks the MoE part") {
  SimulateOptions o;
  o.phase = Phase::kPrefill;
  o.batch_per_npu = 2;
  o.prefill_len = 512;
  o.prefill_chunk_tokens = 256;
  o.moe_layers = 1;
  const SimulateResult r = run(o);
  CHECK(r.units == 4);
  CHECK(r.step_ns > 0);
  CHECK(r.tokens_per_s_per_npu == doctest::Approx(1024 / (r.step_ns * 1e-9)));
  o.prefill_len = 1024;
  o.prefill_chunk_tokens = 512;
  const SimulateResult r2 = run(o);
  CHECK(r2.parts.attention_ns > 1.5 * r.parts.attention_ns);  // tokens x2, the triangle x4
}

TEST_CASE("models.simulate: bad options are refused naming the field") {
  const ModelConfig c = small_model();
  SimulateOptions o;
  o.supernode = "n16";
  o.npus = 32;
  auto r = simulate(c, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("--npus 32") != std::string::npos);
  o.npus = 16;
  o.ep = 6;
  r = simulate(c, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("--ep 6") != std::string::npos);
  o.ep = 0;
  o.batch_per_npu = 0;
  r = simulate(c, o);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("--batch-per-npu") != std::string::npos);
}

TEST_CASE("models.simulate: attention split over the dies halves the weights and the batch-1 attention") {
  const ModelConfig c = small_model();
  SimulateOptions o;
  o.batch_per_npu = 1;
  const SimulateResult dp = run(o);
  o.attention_split = 2;
  const SimulateResult tp = run(o);
  const SimulateResult again = run(o);
  check_sane(dp);
  check_sane(tp);
  CHECK(tp.options.attention_split == 2);
  // Batch 1, split 1: one die runs every block reading all of the weights, the other idles;
  // split 2: both dies run half of the heads, each reading half of the weights.
  CHECK(dp.attention_busiest_die_ns == doctest::Approx(2 * dp.parts.attention_ns).epsilon(0.01));
  CHECK(tp.attention_busiest_die_ns < 0.75 * dp.attention_busiest_die_ns);
  CHECK(tp.step_ns < dp.step_ns);
  CHECK(tp.tpot_ns < dp.tpot_ns);
  // Deterministic.
  CHECK(again.step_ns == tp.step_ns);
  CHECK(again.parts.attention_ns == tp.parts.attention_ns);
  CHECK(again.hbm.total == tp.hbm.total);
  // HBM: each die holds half of every attention block instead of a copy (norms whole, the
  // down-projections' column shares), and its own copy of the latent KV cache.
  const double whole = cost::attention_weight_bytes(c, o.precision);
  const double half = cost::attention_weight_bytes(c, o.precision, 2);
  CHECK(half == doctest::Approx(whole / 2).epsilon(0.001));
  CHECK(half > whole / 2);
  CHECK(dp.hbm.attention_side_weights - tp.hbm.attention_side_weights ==
        doctest::Approx(2.0 * c.num_layers * (whole - half)));
  CHECK(tp.hbm.kv_cache == doctest::Approx(2 * dp.hbm.kv_cache));
  CHECK(tp.hbm.total < dp.hbm.total);
  // At batch 2 every die has attention work either way: the mean per die drops too.
  o.batch_per_npu = 2;
  const SimulateResult tp2 = run(o);
  o.attention_split = 1;
  const SimulateResult dp2 = run(o);
  CHECK(tp2.parts.attention_ns < dp2.parts.attention_ns);
  CHECK(tp2.step_ns < dp2.step_ns);
}

TEST_CASE("models.simulate: attention split works for prefill, two microbatches and GQA models") {
  SimulateOptions o;
  o.attention_split = 2;
  o.batch_per_npu = 4;
  o.microbatches = 2;
  const SimulateResult mb_tp = run(o);
  o.attention_split = 1;
  const SimulateResult mb_dp = run(o);
  // (check_sane's step >= busiest-die bound does not hold for two microbatches of a small
  // batch, split or not: the MoE-layer scaling is an estimate; compare the two instead.)
  CHECK(mb_tp.parts.attention_ns > 0);
  CHECK(mb_tp.parts.attention_ns < mb_dp.parts.attention_ns);
  CHECK(mb_tp.step_ns < mb_dp.step_ns);
  SimulateOptions p;
  p.attention_split = 2;
  p.phase = Phase::kPrefill;
  p.batch_per_npu = 1;
  p.prefill_len = 512;
  const SimulateResult tp = run(p);
  p.attention_split = 1;
  const SimulateResult dp = run(p);
  check_sane(tp);
  // One prompt: split 1 leaves a die idle during attention; split 2 shares the heads.
  CHECK(tp.attention_busiest_die_ns < dp.attention_busiest_die_ns);
  ModelConfig q = model_config("qwen3-30b-a3b").value();
  q.num_layers = 3;
  SimulateOptions g;
  g.batch_per_npu = 1;
  const SimulateResult gdp = run(g, q);
  g.attention_split = 2;
  const SimulateResult gtp = run(g, q);
  check_sane(gtp);
  CHECK(gtp.attention_busiest_die_ns < gdp.attention_busiest_die_ns);
  // GQA splits its KV heads too: the cache per NPU stays the same size.
  CHECK(gtp.hbm.kv_cache == doctest::Approx(gdp.hbm.kv_cache));
  CHECK(gtp.hbm.attention_side_weights < gdp.hbm.attention_side_weights);
}

TEST_CASE("models.simulate: a bad attention split is refused naming the field") {
  ModelConfig c = small_model();
  SimulateOptions o;
  o.supernode = "n16";
  for (uint32_t bad : {0u, 3u, 4u}) {
    o.attention_split = bad;
    auto r = simulate(c, o);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find("attention_split") != std::string::npos);
    CHECK(validate_simulate_options(c, o, 16).code() == StatusCode::kInvalidArgument);
  }
  c.num_heads = 127;  // an odd head count cannot be halved
  o.attention_split = 2;
  const Status s = validate_simulate_options(c, o, 16);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("attention_split") != std::string::npos);
  CHECK(s.message().find("127") != std::string::npos);
  // A supernode whose NPUs have one die has nothing to split the heads over.
  dev::Topology one_die = sim::make_preset("n8").value();
  one_die.dies_per_npu = 1;
  const std::string path = "/tmp/moe_test_simulate_one_die_" + std::to_string(getpid()) + ".json";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    REQUIRE(f != nullptr);
    const std::string text = sim::description_to_json(one_die);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    std::fclose(f);
  }
  o.supernode = path;
  auto r = simulate(small_model(), o);
  std::remove(path.c_str());
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("attention_split") != std::string::npos);
  CHECK(r.status().message().find("1 die") != std::string::npos);
}

namespace {

// Runs `moe simulate ARGS`; *text gets its stderr (stdout when `want_stdout`).
int run_moe(const std::string& args, std::string* text, bool want_stdout = false) {
  const char* dir = std::getenv("MOE_BIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "MOE_BIN_DIR is not set (run through make test)");
  const std::string cmd = std::string(dir) + "/moe simulate " + args +
                          (want_stdout ? " 2>/dev/null" : " 2>&1 >/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  text->clear();
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("models.simulate: the CLI refuses bad input with exit status 2 naming the flag") {
  std::string err;
  CHECK(run_moe("--model nosuch", &err) == 2);
  CHECK(err.find("deepseek-v3") != std::string::npos);  // lists the presets
  CHECK(run_moe("--supernode n16 --npus 16 --ep 5", &err) == 2);
  CHECK(err.find("--ep 5") != std::string::npos);
  CHECK(run_moe("--batch-per-npu 0", &err) == 2);
  CHECK(err.find("--batch-per-npu") != std::string::npos);
  CHECK(run_moe("--supernode n16 --npus 17", &err) == 2);
  CHECK(err.find("--npus 17") != std::string::npos);
  CHECK(run_moe("--precision fp8", &err) == 2);
  CHECK(err.find("--precision") != std::string::npos);
  CHECK(run_moe("--mtp-accept 1.5", &err) == 2);
  CHECK(err.find("--mtp-accept") != std::string::npos);
  CHECK(run_moe("--attention-split 3", &err) == 2);
  CHECK(err.find("--attention-split '3'") != std::string::npos);
  CHECK(run_moe("--attention-split 0", &err) == 2);
  CHECK(err.find("--attention-split") != std::string::npos);
  CHECK(run_moe("--attention-split two", &err) == 2);
  CHECK(err.find("--attention-split") != std::string::npos);
  CHECK(run_moe("--frobnicate 1", &err) == 2);
  CHECK(err.find("--frobnicate") != std::string::npos);
}

TEST_CASE("models.simulate: the CLI names a missing value, a stray word and a bad mode") {
  std::string err;
  CHECK(run_moe("--npus", &err) == 2);
  CHECK(err.find("--npus needs a value") != std::string::npos);
  CHECK(run_moe("deepseek-v3", &err) == 2);  // the model is a flag, not a word
  CHECK(err.find("unknown argument 'deepseek-v3'") != std::string::npos);
  CHECK(run_moe("--completion sometimes", &err) == 2);
  CHECK(err.find("--completion 'sometimes'") != std::string::npos);
  CHECK(run_moe("--kv-len 4k", &err) == 2);
  CHECK(err.find("expected an unsigned integer") != std::string::npos);
  CHECK(run_moe("--seed -1", &err) == 2);
  CHECK(run_moe("--phase prefill --mtp 1", &err) == 2);
  CHECK(err.find("--mtp") != std::string::npos);
  CHECK(run_moe("--microbatches 2 --batch-per-npu 1", &err) == 2);
  CHECK(err.find("--microbatches 2") != std::string::npos);
}

TEST_CASE("models.simulate: --help lists every flag and exits 0") {
  std::string out;
  REQUIRE(run_moe("--help", &out, true) == 0);
  for (const char* flag : {"--model", "--phase", "--npus", "--ep", "--batch-per-npu", "--kv-len",
                           "--prefill-len", "--precision", "--mtp", "--mtp-accept", "--microbatches",
                           "--supernode", "--chunk-tokens", "--moe-layers", "--completion", "--seed",
                           "--attention-split", "--json", "deepseek-v3", "modelled"})
    CHECK_MESSAGE(out.find(flag) != std::string::npos, flag);
}

TEST_CASE("models.simulate: --json prints one object that parses, with every part") {
  std::string out;
  REQUIRE(run_moe("--supernode n8 --batch-per-npu 2 --moe-layers 1 --mtp 1 --attention-split 2 --json",
                  &out, true) == 0);
  auto v = parse_json(out.substr(0, out.find_last_not_of("\n") + 1));
  REQUIRE_MESSAGE(v.ok(), v.status().to_string());
  REQUIRE(v->is_object());
  uint64_t npus = 0;
  REQUIRE(v->find("npus") != nullptr);
  CHECK(v->find("npus")->as_u64(&npus));
  CHECK(npus == 8);
  CHECK(v->find("clock")->text == "modelled");
  CHECK(v->find("model")->text == "deepseek-v3");
  REQUIRE(v->find("attention_split") != nullptr);
  CHECK(v->find("attention_split")->text == "2");
  for (const char* key : {"step_ms", "tpot_ms", "tokens_per_s_per_npu", "comm_ms",
                          "hbm_bytes_per_die", "kernels_per_die", "wall_ms"}) {
    const JsonValue* f = v->find(key);
    REQUIRE_MESSAGE(f != nullptr, std::string(key));
    CHECK_MESSAGE(f->is_number(), std::string(key));
    CHECK_MESSAGE(std::stod(f->text) > 0.0, std::string(key));
  }
  const double share = std::stod(v->find("unoverlapped_comm_share")->text);
  CHECK(share >= 0.0);
  CHECK(share <= 1.0);
  const JsonValue* parts = v->find("parts");
  REQUIRE(parts != nullptr);
  double share_sum = 0;
  for (const char* part : {"attention", "dispatch", "experts", "combine", "other"}) {
    const JsonValue* p = parts->find(part);
    REQUIRE_MESSAGE(p != nullptr, part);
    CHECK(std::stod(p->find("ms")->text) > 0.0);
    share_sum += std::stod(p->find("share")->text);
  }
  CHECK(share_sum == doctest::Approx(1.0).epsilon(1e-6));
  // The step's TPOT divides by 1 + P (MTP 1, default P 0.7).
  CHECK(std::stod(v->find("tpot_ms")->text) ==
        doctest::Approx(std::stod(v->find("step_ms")->text) / 1.7).epsilon(1e-6));
}
