// Helpers of the serving tests: the built-in model, small runtimes, requests of mixed
// lengths, and each request's tokens when it runs alone (the reference).
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "models/engine/generate.h"
#include "models/serving/server.h"
#include "runtime/runtime.h"

namespace moe::models::serving_test {

inline const ModelWeights& weights() {
  static const ModelWeights w = ModelWeights::random(model_config("builtin").value(), 7).value();
  return w;
}

inline std::unique_ptr<rt::Runtime> open_runtime(const char* supernode) {
  rt::RuntimeOptions o;
  o.supernode = supernode;
  o.host.synthetic = "pack:1 numa:1 core:2";
  auto r = rt::Runtime::open(o);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return std::move(r).value();
}

inline std::unique_ptr<Engine> make_engine(rt::Runtime& rt, EngineOptions o = {}) {
  auto e = Engine::create(rt, weights(), std::move(o));
  REQUIRE_MESSAGE(e.ok(), e.status().to_string());
  return std::move(e).value();
}

// Request i: prompt of 2..41 bytes of text, 1..9 new tokens, greedy or temperature sampling.
inline std::vector<GenerateRequest> mixed_requests(uint32_t count) {
  std::vector<GenerateRequest> out;
  const std::string text = "Sixteen NPUs share one fabric; experts travel, tokens return. ";
  for (uint32_t i = 0; i < count; ++i) {
    GenerateRequest r;
    const uint32_t len = 2 + (i * 13) % 40;
    r.prompt = bytes_to_tokens(text.substr(i % 7, len));
    r.max_new_tokens = 1 + (i * 5) % 9;
    r.sampling.temperature = i % 2 == 0 ? 0.0f : 0.8f;
    r.sampling.top_p = i % 3 == 0 ? 0.9f : 1.0f;
    r.sampling.seed = 100 + i;
    out.push_back(r);
  }
  return out;
}

// Each request's tokens when generated alone on `engine`.
inline std::vector<std::vector<uint32_t>> alone(Engine& engine, const std::vector<GenerateRequest>& reqs) {
  std::vector<std::vector<uint32_t>> out;
  for (const GenerateRequest& r : reqs) {
    auto g = generate(engine, std::span(&r, 1));
    REQUIRE_MESSAGE(g.ok(), g.status().to_string());
    out.push_back(g.value()[0]);
  }
  return out;
}

// One n8 runtime and engine shared by the serving tests of a process (creating an engine of
// the built-in model costs most of a test's time): 2 attention DP ranks, 8 tokens per rank
// per step, 16 KV blocks of 16 positions per rank. Every test leaves it with every sequence
// closed (and checks so). Also the tokens of mixed_requests(kMixed) generated alone on it.
// It is destroyed when the test run ends (a doctest listener in test_serving.cpp), not at
// exit: the memory layer's per-thread caches are gone by the time static objects die.
struct SharedEngine {
  static constexpr uint32_t kMixed = 14;
  std::unique_ptr<rt::Runtime> runtime;
  std::unique_ptr<Engine> engine;
  std::vector<std::vector<uint32_t>> alone_tokens;
  ~SharedEngine() { engine.reset(); }  // before its runtime
};

inline std::unique_ptr<SharedEngine>& shared_n8_slot() {
  static std::unique_ptr<SharedEngine> s;
  return s;
}

inline SharedEngine& shared_n8() {
  std::unique_ptr<SharedEngine>& s = shared_n8_slot();
  if (!s) {
    auto p = std::make_unique<SharedEngine>();
    p->runtime = open_runtime("n8");
    EngineOptions o;
    o.attention_dp = 2;
    o.max_tokens_per_rank = 8;
    o.kv_blocks_per_rank = 16;
    p->engine = make_engine(*p->runtime, o);
    p->alone_tokens = alone(*p->engine, mixed_requests(SharedEngine::kMixed));
    s = std::move(p);
  }
  REQUIRE(s->engine->open_sequences() == 0);
  return *s;
}

inline serving::Request to_request(const GenerateRequest& g, serving::TokenSink sink = {}) {
  serving::Request r;
  r.prompt = g.prompt;
  r.max_new_tokens = g.max_new_tokens;
  r.sampling = g.sampling;
  r.on_token = std::move(sink);
  return r;
}

inline std::unique_ptr<serving::Server> make_server(Engine& decode, Engine* prefill = nullptr,
                                                    serving::ServerOptions o = {}) {
  auto s = serving::Server::create(decode, prefill, o);
  REQUIRE_MESSAGE(s.ok(), s.status().to_string());
  return std::move(s).value();
}

inline std::vector<uint32_t> free_blocks(const Engine& e) {
  std::vector<uint32_t> out;
  for (uint32_t d = 0; d < e.num_dp_ranks(); ++d) out.push_back(e.kv_free_blocks(d));
  return out;
}

inline std::vector<uint64_t> hbm_in_use(rt::Runtime& rt) {
  std::vector<uint64_t> out;
  for (uint32_t n = 0; n < rt.num_devices(); ++n) out.push_back(rt.memory().npu_stats(n).in_use_bytes);
  return out;
}

}  // namespace moe::models::serving_test
