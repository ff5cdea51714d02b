// Prefill/decode split: prompts run on NPUs 0-7 of an n16 supernode, decoding on NPUs 8-15;
// each request's KV cache moves over the fabric between them. The tokens equal those of a
// colocated engine, the transfer's bytes are exactly the prompt's blocks, its modelled
// time is charged to the request's TTFT, and both engines end with every block free.
#include "models/serving/kv_transfer.h"
#include "tests/models/serving_test_util.h"

using namespace moe;
using namespace moe::models;
using namespace moe::models::serving_test;
using serving::RequestId;
using serving::RequestState;

namespace {

EngineOptions on_npus(uint32_t first, uint32_t count) {
  EngineOptions o;
  for (uint32_t n = first; n < first + count; ++n) o.npus.push_back(n);
  o.attention_dp = 2;
  o.max_tokens_per_rank = 12;
  o.kv_blocks_per_rank = 16;
  return o;
}

}  // namespace

TEST_CASE("models.serving: a prefill/decode split moves KV caches over the fabric, gives the colocated tokens and charges the move") {
  // Two engines of one n16 supernode: a on NPUs 0-7, b on NPUs 8-15.
  auto rt = open_runtime("n16");
  auto a = make_engine(*rt, on_npus(0, 8));
  auto b = make_engine(*rt, on_npus(8, 8));
  const auto ablocks0 = free_blocks(*a), bblocks0 = free_blocks(*b);

  // 1. One transfer by hand.
  // A sequence of 21 positions on a; its KV copied to b; b then continues it exactly as a
  // does (same next-token logits).
  const uint32_t V = a->config().vocab_size;
  const std::vector<uint32_t> prompt = bytes_to_tokens("KV cache moves over UB");
  const SeqId sa = a->open_sequence(1).value();
  std::vector<float> la(V), lb(V);
  REQUIRE(a->forward(std::vector<StepInput>{{sa, std::span(prompt).first(12)}}, la).ok());
  REQUIRE(a->forward(std::vector<StepInput>{{sa, std::span(prompt).subspan(12)}}, la).ok());
  const SeqId sb = b->open_sequence(0).value();
  auto fabric = rt::Stream::create(*rt, b->dp_npu(0), rt::StreamKind::kFabric).value();
  serving::KvTransferStats ks;
  REQUIRE(serving::transfer_sequence_kv(*a, sa, *b, sb, *fabric, &ks).ok());
  CHECK(b->sequence_length(sb).value() == prompt.size());
  CHECK(ks.bytes == 2 * 4 * 2 * uint64_t{16 * 2 * 32 * 4});  // 2 blocks, 4 layers, K and V
  CHECK(ks.copies >= 1);
  CHECK(ks.copies <= 16);
  CHECK(ks.modelled_ns > 0);
  const std::vector<uint32_t> next = {65};
  REQUIRE(a->forward(std::vector<StepInput>{{sa, next}}, la).ok());
  REQUIRE(b->forward(std::vector<StepInput>{{sb, next}}, lb).ok());
  for (uint32_t v = 0; v < V; ++v) REQUIRE(la[v] == doctest::Approx(lb[v]).epsilon(1e-5));
  // A second transfer into a non-empty sequence is refused; so is a copy stream.
  CHECK(serving::transfer_sequence_kv(*a, sa, *b, sb, *fabric).code() == StatusCode::kFailedPrecondition);
  auto copy = rt::Stream::create(*rt, b->dp_npu(0), rt::StreamKind::kCopy).value();
  const SeqId sc = b->open_sequence(1).value();
  CHECK(serving::transfer_sequence_kv(*a, sa, *b, sc, *copy).code() == StatusCode::kInvalidArgument);
  CHECK(b->sequence_length(sc).value() == 0);
  CHECK(a->close_sequence(sa).ok());
  CHECK(b->close_sequence(sb).ok());
  CHECK(b->close_sequence(sc).ok());
  CHECK(free_blocks(*a) == ablocks0);
  CHECK(free_blocks(*b) == bblocks0);

  // 2. A server: prompts on a, decoding on b.
  {
    const auto reqs = mixed_requests(10);
    const auto& expect = shared_n8().alone_tokens;  // colocated on n8 (a prefix of them)
    Engine* prefill = a.get();
    Engine* decode = b.get();
    const auto pblocks0 = free_blocks(*prefill), dblocks0 = free_blocks(*decode);
    const auto hbm0 = hbm_in_use(*rt);
    auto server = make_server(*decode, prefill);
    std::map<RequestId, std::vector<uint32_t>> streamed;
    std::vector<RequestId> ids;
    for (const GenerateRequest& g : reqs)
      ids.push_back(server->submit(to_request(g, [&](RequestId id, uint32_t t) { streamed[id].push_back(t); })).value());
    REQUIRE(server->run_until_idle().ok());

    const uint64_t block_bytes = uint64_t{16} * 2 * 32 * 4;  // positions x KV heads x head dim x FP32
    uint64_t transfers = 0, bytes = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      CHECK(server->tokens(ids[i]).value() == expect[i]);
      CHECK(streamed[ids[i]] == expect[i]);
      const auto m = server->metrics(ids[i]).value();
      CHECK(m.state == RequestState::kFinished);
      if (reqs[i].max_new_tokens > 1) {
        // Every layer's K and V blocks that hold the prompt, nothing more.
        const uint64_t blocks = (reqs[i].prompt.size() + 15) / 16;
        CHECK(m.kv_transfer_bytes == blocks * 4 * 2 * block_bytes);
        CHECK(m.kv_transfer_modelled_ns > 0);
        CHECK(m.ttft_modelled_ns > m.kv_transfer_modelled_ns);
        CHECK(m.tpot_modelled_ns > 0);
        CHECK(m.e2e_modelled_ns == doctest::Approx(m.ttft_modelled_ns + m.tpot_modelled_ns * (m.generated_tokens - 1)));
        ++transfers;
        bytes += m.kv_transfer_bytes;
      } else {
        CHECK(m.kv_transfer_bytes == 0);  // done at its first token: nothing to move
      }
    }
    const auto st = server->stats();
    CHECK(st.kv_transfers == transfers);
    CHECK(st.kv_transfer_bytes == bytes);
    CHECK(st.kv_transfer_modelled_ns > 0);
    // Cancelled while its prompt runs on the prefill engine, and after its KV cache moved:
    // both engines get every block back.
    serving::Request long_prompt = to_request(reqs[3]);
    long_prompt.prompt.assign(40, 7);  // 4 prefill steps of 12
    const RequestId in_prefill = server->submit(long_prompt).value();
    serving::Request long_decode = to_request(reqs[2]);
    long_decode.max_new_tokens = 40;
    const RequestId in_decode = server->submit(long_decode).value();
    REQUIRE(server->step().ok());
    CHECK(server->metrics(in_prefill).value().state == RequestState::kPrefill);
    CHECK(prefill->open_sequences() == 2);
    CHECK(server->cancel(in_prefill).ok());
    for (int i = 0; i < 8; ++i) REQUIRE(server->step().ok());
    CHECK(server->metrics(in_decode).value().state == RequestState::kDecode);
    CHECK(prefill->open_sequences() == 0);  // its prefill sequence closed after the move
    CHECK(decode->open_sequences() == 1);
    CHECK(server->cancel(in_decode).ok());
    CHECK(server->idle());
    CHECK(free_blocks(*prefill) == pblocks0);
    CHECK(free_blocks(*decode) == dblocks0);
    CHECK(prefill->open_sequences() == 0);
    CHECK(decode->open_sequences() == 0);
    CHECK(hbm_in_use(*rt) == hbm0);
  }

  // 3. Refusals: engines whose KV caches cannot be copied (another layer count and block
  // size), the same engine twice, a bad target.
  serving::ServerOptions bad;
  bad.tpot_target_ms = 0;
  CHECK(serving::Server::create(*a, nullptr, bad).status().code() == StatusCode::kInvalidArgument);
  CHECK(serving::Server::create(*a, a.get()).status().code() == StatusCode::kInvalidArgument);
  b.reset();
  ModelConfig small = model_config("builtin").value();
  small.name = "builtin";  // same name: only the KV layout differs
  small.num_layers = 2;
  small.num_experts = 16;
  const ModelWeights small_weights = ModelWeights::random(small, 3).value();
  EngineOptions so;
  so.npus = {8, 9, 10, 11};
  so.kv_block_positions = 8;
  auto c = Engine::create(*rt, small_weights, so);
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  const Status mismatch = serving::check_kv_compatible(*a, *c.value());
  CHECK(mismatch.code() == StatusCode::kInvalidArgument);
  CHECK(mismatch.message().find("layers") != std::string::npos);
  CHECK(serving::Server::create(*c.value(), a.get()).status().code() == StatusCode::kInvalidArgument);
}
