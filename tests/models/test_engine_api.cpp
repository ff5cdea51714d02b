// The engine's API around the forward pass: refusals of bad input (nothing changes), rollback
// when a step fails inside (an NPU lost), sequences and the paged KV cache, generation
// (batch-independent seeded sampling, chunked prefill), W8A8 experts, redundant replicas.
#include <doctest/doctest.h>

#include <cmath>

#include "models/engine/generate.h"
#include "runtime/runtime.h"

using namespace moe;
using namespace moe::models;

namespace {

const ModelWeights& weights() {
  static const ModelWeights w = ModelWeights::random(model_config("builtin").value(), 99).value();
  return w;
}

std::unique_ptr<rt::Runtime> open_n8() {
  rt::RuntimeOptions o;
  o.supernode = "n8";
  o.host.synthetic = "pack:1 numa:1 core:2";
  return rt::Runtime::open(o).value();
}

std::unique_ptr<Engine> make_engine(rt::Runtime& rt, EngineOptions o = {}) {
  auto e = Engine::create(rt, weights(), std::move(o));
  REQUIRE_MESSAGE(e.ok(), e.status().to_string());
  return std::move(e).value();
}

std::vector<uint32_t> run_one(Engine& e, const char* prompt, uint32_t n, float temperature, uint64_t seed) {
  GenerateRequest r;
  r.prompt = bytes_to_tokens(prompt);
  r.max_new_tokens = n;
  r.sampling.temperature = temperature;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = seed;
  auto out = generate(e, std::span(&r, 1));
  REQUIRE_MESSAGE(out.ok(), out.status().to_string());
  return out.value()[0];
}

}  // namespace

TEST_CASE("models.engine: bad steps are refused naming the entry, and nothing changes") {
  auto rt = open_n8();
  EngineOptions o;
  o.max_tokens_per_rank = 8;
  o.kv_blocks_per_rank = 2;  // 32 positions per DP rank
  o.attention_dp = 2;
  auto e = make_engine(*rt, o);
  const uint32_t V = e->config().vocab_size;
  const SeqId a = e->open_sequence(0).value();
  const SeqId b = e->open_sequence(1).value();
  const std::vector<uint32_t> three = {1, 2, 3}, bad_id = {1, V}, nine(9, 5), empty;
  std::vector<float> logits(2 * V);
  auto step = [&](std::vector<StepInput> in) {
    return e->forward(in, std::span<float>(logits).first(in.size() * V));
  };
  CHECK(step({{a, three}, {a, three}}).code() == StatusCode::kInvalidArgument);  // repeated
  CHECK(step({{a, empty}}).code() == StatusCode::kInvalidArgument);
  const Status oov = step({{a, bad_id}});
  CHECK(oov.code() == StatusCode::kOutOfRange);
  CHECK(oov.message().find("entry 0, token 1") != std::string::npos);
  const Status too_many = step({{a, nine}});
  CHECK(too_many.code() == StatusCode::kResourceExhausted);
  CHECK(too_many.message().find("max_tokens_per_rank") != std::string::npos);
  CHECK(step({{SeqId{77, 0}, three}}).code() == StatusCode::kNotFound);
  CHECK(e->forward(std::vector<StepInput>{{a, three}}, std::span<float>(logits)).code() ==
        StatusCode::kInvalidArgument);  // logits for 2 entries, 1 given
  CHECK(e->sequence_length(a).value() == 0);

  // Fill a's KV cache (32 positions) in 8-token steps, then one more is refused.
  const std::vector<uint32_t> eight(8, 7);
  for (int i = 0; i < 4; ++i) REQUIRE(step({{a, eight}}).ok());
  CHECK(e->sequence_length(a).value() == 32);
  const Status full = step({{a, three}});
  CHECK(full.code() == StatusCode::kResourceExhausted);
  CHECK(e->sequence_length(a).value() == 32);
  // Truncation frees positions for reuse; closing frees blocks for other sequences.
  CHECK(e->truncate_sequence(a, 30).ok());
  CHECK(e->truncate_sequence(a, 31).code() == StatusCode::kOutOfRange);
  const std::vector<uint32_t> two = {1, 2};
  CHECK(step({{a, two}}).ok());
  CHECK(e->close_sequence(a).ok());
  CHECK(e->close_sequence(a).code() == StatusCode::kNotFound);  // stale id
  const SeqId c = e->open_sequence(0).value();
  CHECK(step({{c, eight}, {b, three}}).ok());
  CHECK(e->open_sequence(5).status().code() == StatusCode::kOutOfRange);

  // Admission: reserving more than the pool holds is refused and takes nothing.
  CHECK(e->close_sequence(c).ok());
  CHECK(e->kv_free_blocks(0) == e->kv_total_blocks(0));
  const uint32_t free0 = e->kv_free_blocks(0);
  const SeqId d = e->open_sequence(0).value();
  CHECK(e->reserve_sequence(d, 16 * (free0 + 1)).code() == StatusCode::kResourceExhausted);
  CHECK(e->kv_free_blocks(0) == free0);
  CHECK(e->reserve_sequence(d, 17).ok());
  CHECK(e->kv_free_blocks(0) == free0 - 2);
  CHECK(e->sequence_capacity(d).value() == 32);
  CHECK(e->close_sequence(d).ok());
  CHECK(e->kv_free_blocks(0) == free0);
  CHECK(e->kv_block_positions() == 16);
}

TEST_CASE("models.engine: an NPU lost during a step fails it and rolls the sequences back") {
  auto rt = open_n8();
  auto e = make_engine(*rt);
  const uint32_t V = e->config().vocab_size;
  const SeqId s = e->open_sequence().value();
  std::vector<float> logits(V);
  const std::vector<uint32_t> prompt = {10, 20, 30, 40};
  REQUIRE(e->forward(std::vector<StepInput>{{s, prompt}}, logits).ok());
  dev::FaultSpec f;
  f.kind = dev::FaultKind::kNpuLost;
  f.target = 5;  // holds experts, not the sequence's home
  dev::FaultId id = 0;
  REQUIRE(rt->driver().fault_inject(f, &id).ok());
  const Status st = e->forward(std::vector<StepInput>{{s, prompt}}, logits);
  CHECK_FALSE(st.ok());
  MESSAGE("step with NPU 5 lost: " << st.to_string());
  CHECK(e->sequence_length(s).value() == 4);
}

TEST_CASE("models.engine: generation is seeded per request, batch-independent, chunked and cut at max_new_tokens") {
  auto rt = open_n8();
  EngineOptions o;
  o.max_tokens_per_rank = 8;  // forces a 20-byte prompt into chunks
  o.attention_dp = 2;
  auto e = make_engine(*rt, o);
  const char* p1 = "The supernode runs MoE";
  const auto greedy = run_one(*e, p1, 6, 0.0f, 1);
  const auto hot1 = run_one(*e, p1, 6, 1.0f, 42);
  const auto hot2 = run_one(*e, p1, 6, 1.0f, 42);
  CHECK(greedy.size() == 6);
  CHECK(hot1 == hot2);
  CHECK(e->open_sequences() == 0);

  // The same requests batched with others give the same tokens.
  std::vector<GenerateRequest> batch(3);
  batch[0].prompt = bytes_to_tokens("other request first");
  batch[0].max_new_tokens = 3;
  batch[1].prompt = bytes_to_tokens(p1);
  batch[1].max_new_tokens = 6;
  batch[1].sampling = {1.0f, 0.9f, 42};
  batch[2].prompt = bytes_to_tokens(p1);
  batch[2].max_new_tokens = 6;
  GenerateStats st;
  std::vector<std::pair<size_t, uint32_t>> streamed;
  auto out = generate(*e, batch, &st, [&](size_t r, uint32_t t) { streamed.emplace_back(r, t); });
  REQUIRE_MESSAGE(out.ok(), out.status().to_string());
  CHECK(out.value()[1] == hot1);
  CHECK(out.value()[2] == greedy);
  CHECK(out.value()[0].size() == 3);
  CHECK(streamed.size() == 15);
  CHECK(st.generated_tokens == 15);
  CHECK(st.prefill_steps >= 3);  // 22 + 22 + 19 prompt bytes, 8 per home per step
  CHECK(st.modelled_ns > 0);
  CHECK(e->open_sequences() == 0);

  GenerateRequest bad;
  CHECK(generate(*e, std::span(&bad, 1)).status().code() == StatusCode::kInvalidArgument);
  bad.prompt = {1};
  bad.sampling.top_p = 0;
  CHECK(generate(*e, std::span(&bad, 1)).status().code() == StatusCode::kInvalidArgument);
  CHECK(e->open_sequences() == 0);
  CHECK(tokens_to_text(bytes_to_tokens("a\\b\n")) == "a\\\\b\\n");
}

TEST_CASE("models.engine: W8A8 experts and INT8 dispatch stay close to BF16; replicas and per-die ranks change nothing") {
  const uint32_t V = weights().config().vocab_size;
  auto logits_of = [&](EngineOptions o) {
    auto rt = open_n8();
    auto e = make_engine(*rt, std::move(o));
    const SeqId s = e->open_sequence().value();
    std::vector<float> logits(V);
    const auto prompt = bytes_to_tokens("expert parallel");
    REQUIRE(e->forward(std::vector<StepInput>{{s, prompt}}, logits).ok());
    return logits;
  };
  const auto ref = logits_of({});
  EngineOptions q;
  q.precision = ExpertPrecision::kInt8;
  q.dispatch_format = ic::TokenFormat::kInt8;
  const auto int8 = logits_of(q);
  EngineOptions r;
  ic::ExpertMap map = ic::ExpertMap::uniform(384, 8);
  for (uint32_t e = 0; e < 384; e += 7) REQUIRE(map.add_replica(e, (e / 48 + 3) % 8).ok());
  r.expert_map = map;
  const auto replicated = logits_of(r);
  EngineOptions dies;
  dies.ranks_per_npu = 2;  // 16 EP ranks: one per die of n8's 8 NPUs
  const auto per_die = logits_of(dies);
  double scale = 0, d8 = 0, dr = 0, dd = 0;
  for (uint32_t v = 0; v < V; ++v) {
    scale = std::max(scale, double(std::fabs(ref[v])));
    d8 = std::max(d8, double(std::fabs(ref[v] - int8[v])));
    dr = std::max(dr, double(std::fabs(ref[v] - replicated[v])));
    dd = std::max(dd, double(std::fabs(ref[v] - per_die[v])));
  }
  MESSAGE("INT8 vs BF16: max logit difference " << d8 << " of " << scale);
  CHECK(d8 > 0);                // quantisation is really on
  CHECK(d8 < 0.05 * scale);
  CHECK(dr < 1e-4 * scale);     // a replica computes what the original would
  CHECK(dd < 1e-4 * scale);     // experts over dies instead of NPUs: the same model

  // Options that cannot work are refused by name.
  auto rt = open_n8();
  EngineOptions bad;
  bad.attention_dp = 9;
  CHECK(Engine::create(*rt, weights(), bad).status().code() == StatusCode::kInvalidArgument);
  bad = {};
  bad.ranks_per_npu = 3;
  CHECK(Engine::create(*rt, weights(), bad).status().code() == StatusCode::kInvalidArgument);
  bad = {};
  bad.npus = {1, 1};
  CHECK(Engine::create(*rt, weights(), bad).status().code() == StatusCode::kInvalidArgument);
  bad = {};
  bad.max_weight_bytes = 1 << 20;
  CHECK(Engine::create(*rt, weights(), bad).status().code() == StatusCode::kResourceExhausted);
  bad = {};
  bad.expert_map = ic::ExpertMap::uniform(384, 4);
  CHECK(Engine::create(*rt, weights(), bad).status().code() == StatusCode::kInvalidArgument);
}
