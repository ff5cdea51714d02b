// The server's admission control and cancellation: requests that can never fit are refused
// naming the sizes, requests that cannot fit now wait (or are refused, when asked), the KV
// cache is never overcommitted, and cancelling at any stage (queued, prefill, decode, from
// a callback) frees every block it held: the engine's free blocks and the global memory's
// figures return to where they started.
#include "tests/models/serving_test_util.h"

using namespace moe;
using namespace moe::models;
using namespace moe::models::serving_test;
using serving::RequestId;
using serving::RequestState;

TEST_CASE("models.serving: admission refuses what can never fit and queues what cannot fit now") {
  SharedEngine& sh = shared_n8();  // 16 blocks of 16 positions per DP rank
  rt::Runtime* rt = sh.runtime.get();
  Engine* engine = sh.engine.get();
  const auto blocks0 = free_blocks(*engine);
  const auto hbm0 = hbm_in_use(*rt);
  auto server = make_server(*engine);

  // Never fits: 250 + 10 - 1 positions need 17 blocks of 16; a rank holds 16.
  serving::Request big;
  big.prompt.assign(250, 3);
  big.max_new_tokens = 10;
  const auto refused = server->submit(big);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
  CHECK(refused.status().message().find("needs 17 KV blocks of 16 positions") != std::string::npos);
  CHECK(refused.status().message().find("holds 16") != std::string::npos);
  serving::Request bad;
  CHECK(server->submit(bad).status().code() == StatusCode::kInvalidArgument);  // empty prompt
  bad.prompt = {1, 2, 300};
  CHECK(server->submit(bad).status().code() == StatusCode::kOutOfRange);
  bad.prompt.assign(1000, 1);
  bad.max_new_tokens = 100;  // past max_seq_len 1024
  CHECK(server->submit(bad).status().code() == StatusCode::kInvalidArgument);
  bad.prompt = {1};
  bad.max_new_tokens = 1;
  bad.sampling.top_p = 0;
  CHECK(server->submit(bad).status().code() == StatusCode::kInvalidArgument);
  CHECK(server->stats().refused == 5);
  CHECK(server->idle());

  // Five requests of 6 blocks each (their prompts padded to 80 tokens, 10 new): at most 2
  // run per rank at a time; the rest queue, and every one completes with the tokens it
  // gives alone.
  std::vector<GenerateRequest> reqs = mixed_requests(5);
  for (GenerateRequest& g : reqs) {
    g.prompt.resize(80, 'x');
    g.max_new_tokens = 10;
  }
  const auto expect = alone(*engine, reqs);
  std::vector<RequestId> ids;
  for (const GenerateRequest& g : reqs) ids.push_back(server->submit(to_request(g)).value());
  uint32_t most_running = 0;
  while (!server->idle()) {
    REQUIRE(server->step().ok());
    const auto st = server->stats();
    most_running = std::max(most_running, st.prefilling + st.decoding);
    for (uint32_t d = 0; d < 2; ++d) CHECK(engine->kv_free_blocks(d) <= engine->kv_total_blocks(d));
  }
  CHECK(most_running <= 4);
  CHECK(most_running >= 2);
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(server->tokens(ids[i]).value() == expect[i]);
  for (RequestId id : ids) CHECK(server->metrics(id).value().queue_modelled_ns >= 0);
  CHECK(server->metrics(ids.back()).value().queue_modelled_ns > 0);  // it waited for room
  CHECK(free_blocks(*engine) == blocks0);
  CHECK(hbm_in_use(*rt) == hbm0);

  // Refusing mode: what cannot start now is refused with the free blocks named; after the
  // running ones end, the same request is accepted.
  serving::ServerOptions so;
  so.queue_when_full = false;
  auto strict = make_server(*engine, nullptr, so);
  serving::Request six_blocks = to_request(reqs[0]);
  six_blocks.prompt.assign(80, 5);
  six_blocks.max_new_tokens = 10;  // 89 positions: 6 blocks
  std::vector<RequestId> started;
  StatusOr<RequestId> last = strict->submit(six_blocks);
  while (last.ok()) {
    started.push_back(last.value());
    last = strict->submit(six_blocks);
  }
  CHECK(started.size() == 2);  // one per rank: slow start (the batch limit begins at 1)
  CHECK(last.status().code() == StatusCode::kResourceExhausted);
  CHECK(last.status().message().find("free blocks per DP rank [10 10]") != std::string::npos);
  CHECK(last.status().message().find("running per rank at most 1") != std::string::npos);
  REQUIRE(strict->run_until_idle().ok());
  CHECK(strict->submit(six_blocks).ok());
  REQUIRE(strict->run_until_idle().ok());
  CHECK(free_blocks(*engine) == blocks0);
  CHECK(engine->open_sequences() == 0);
  // max_new_tokens 0 finishes at once.
  serving::Request none = six_blocks;
  none.max_new_tokens = 0;
  const RequestId z = strict->submit(none).value();
  CHECK(strict->metrics(z).value().state == RequestState::kFinished);
  CHECK(strict->idle());
}

TEST_CASE("models.serving: cancelling at any stage frees everything the request held") {
  SharedEngine& sh = shared_n8();  // 8 tokens per rank per step: a 40-token prompt takes 5
  rt::Runtime* rt = sh.runtime.get();
  Engine* engine = sh.engine.get();
  const auto blocks0 = free_blocks(*engine);
  const auto hbm0 = hbm_in_use(*rt);
  const auto reqs = mixed_requests(8);
  const auto& expect = sh.alone_tokens;
  auto server = make_server(*engine);

  std::map<RequestId, std::vector<uint32_t>> streamed;
  RequestId cancel_me_in_callback = 0;
  auto sink = [&](RequestId id, uint32_t t) {
    streamed[id].push_back(t);
    if (id == cancel_me_in_callback && streamed[id].size() == 2) {
      CHECK(server->cancel(id).ok());
      CHECK(server->step().code() == StatusCode::kFailedPrecondition);  // no re-entry
      CHECK(server->forget(id).code() == StatusCode::kFailedPrecondition);
    }
  };
  std::vector<RequestId> ids;
  for (const GenerateRequest& g : reqs) ids.push_back(server->submit(to_request(g, sink)).value());
  // Long prompt, cancelled during its prefill; a long-running one cancelled in decode; one
  // cancelled from its own callback; the last cancelled while still queued.
  serving::Request long_prompt = to_request(reqs[1], sink);
  long_prompt.prompt.assign(40, 9);
  long_prompt.max_new_tokens = 20;
  const RequestId in_prefill = server->submit(long_prompt).value();
  serving::Request long_decode = to_request(reqs[2], sink);
  long_decode.max_new_tokens = 60;
  const RequestId in_decode = server->submit(long_decode).value();
  cancel_me_in_callback = ids[4];  // asks for 1 + 20 % 9 = 3 tokens
  const RequestId queued = server->submit(long_decode).value();
  CHECK(server->cancel(queued).ok());
  CHECK(server->metrics(queued).value().state == RequestState::kCancelled);
  CHECK(server->cancel(queued).code() == StatusCode::kFailedPrecondition);
  CHECK(server->cancel(9999).code() == StatusCode::kNotFound);

  bool prefill_cancelled = false, decode_cancelled = false;
  for (int guard = 0; guard < 500 && !server->idle(); ++guard) {
    REQUIRE(server->step().ok());
    auto mp = server->metrics(in_prefill).value();
    if (!prefill_cancelled && mp.state == RequestState::kPrefill && mp.steps >= 2) {
      CHECK(server->cancel(in_prefill).ok());
      prefill_cancelled = true;
    }
    auto md = server->metrics(in_decode).value();
    if (!decode_cancelled && md.state == RequestState::kDecode && md.generated_tokens >= 3) {
      CHECK(server->cancel(in_decode).ok());
      decode_cancelled = true;
    }
  }
  REQUIRE(server->idle());
  CHECK(prefill_cancelled);
  CHECK(decode_cancelled);
  CHECK(streamed[in_prefill].empty());
  CHECK(streamed[in_decode].size() == 3);  // nothing after the cancel
  CHECK(streamed[ids[4]].size() == 2);
  CHECK(server->metrics(ids[4]).value().state == RequestState::kCancelled);
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (i == 4) continue;
    CHECK(server->tokens(ids[i]).value() == expect[i]);
  }
  CHECK(server->stats().cancelled == 4);
  CHECK(free_blocks(*engine) == blocks0);
  CHECK(engine->open_sequences() == 0);
  CHECK(hbm_in_use(*rt) == hbm0);
  CHECK(server->forget(ids[0]).ok());
  CHECK(server->forget(ids[0]).code() == StatusCode::kNotFound);
  // Forgetting a request that finished in the last step (still on the running list) is safe.
  const RequestId quick = server->submit(to_request(reqs[0])).value();  // 1 token
  REQUIRE(server->step().ok());
  REQUIRE(server->metrics(quick).value().state == RequestState::kFinished);
  CHECK(server->forget(quick).ok());
  REQUIRE(server->step().ok());
  CHECK(server->idle());
  CHECK(server->metrics(ids[0]).status().code() == StatusCode::kNotFound);

  // A server destroyed with requests running gives their blocks back.
  auto doomed = make_server(*engine);
  for (const GenerateRequest& g : reqs) REQUIRE(doomed->submit(to_request(g)).ok());
  REQUIRE(doomed->step().ok());
  REQUIRE(doomed->step().ok());
  CHECK(engine->open_sequences() > 0);
  doomed.reset();
  CHECK(free_blocks(*engine) == blocks0);
  CHECK(engine->open_sequences() == 0);
}
