// The pieces under MoE dispatch: the buffer's sizing formula (worked numbers, regions that
// neither overlap nor leave the rank's region), the expert map's placement and local
// indexes, BF16 rounding and INT8 per-token quantization within their stated error.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>

#include "tests/interconnect/test_moe_dispatch_util.h"

using namespace moetest;

TEST_CASE("ic.moe_buffer: the sizing formula, worked for EP 256 x 128 tokens x 7168, top-8") {
  ic::MoeBufferConfig c;
  c.npus.resize(256);
  c.max_tokens_per_rank = 128;
  c.hidden = 7168;
  c.max_topk = 8;
  c.dispatch_format = ic::TokenFormat::kInt8;
  c.combine_format = ic::TokenFormat::kBf16;
  auto l = ic::compute_moe_buffer_layout(c);
  REQUIRE(l.ok());
  CHECK(l->num_ranks == 256);
  CHECK(l->max_hits_per_token == 8);
  CHECK(l->max_dests_per_token == 8);
  CHECK(l->header_bytes == 96);  // round16(24 + 8 * 8)
  CHECK(l->payload_bytes == 7168);
  CHECK(l->slot_bytes == 7264);
  CHECK(l->combine_row_bytes == 14336);
  CHECK(l->recv_slots == 256u * 128u);  // any routing fits: a token lands on a rank once
  CHECK(l->send_slots == 128u * 8u);
  CHECK(l->recv_offset == 4160);  // 8 * (1 + 2 * 256) = 4104, rounded to 64
  CHECK(l->signal_words == 2u * 256 * 256 + 256);
  // Regions in order, aligned, disjoint, inside the rank's bytes.
  const uint64_t regions[][2] = {{l->recv_offset, l->recv_slots * l->slot_bytes},
                                 {l->send_offset, l->send_slots * l->slot_bytes},
                                 {l->combine_send_offset, l->recv_slots * l->combine_row_bytes},
                                 {l->combine_recv_offset, l->send_slots * l->combine_row_bytes}};
  uint64_t end = l->recv_offset;
  for (const auto& r : regions) {
    CHECK(r[0] % 64 == 0);
    CHECK(r[0] >= end);
    end = r[0] + r[1];
  }
  CHECK(l->rank_bytes >= end);
  CHECK(l->rank_bytes < end + 64);
  CHECK(l->rank_bytes == 4160 + 238026752 + 7438336 + 469762048 + 14680064);
  // Few ranks: a token reaches at most min(R, top-k + shared) of them.
  c.npus.resize(4);
  c.max_shared_experts = 1;
  c.dispatch_format = ic::TokenFormat::kBf16;
  c.combine_format = ic::TokenFormat::kFloat32;
  l = ic::compute_moe_buffer_layout(c);
  REQUIRE(l.ok());
  CHECK(l->max_hits_per_token == 9);
  CHECK(l->max_dests_per_token == 4);
  CHECK(l->header_bytes == 96);  // round16(24 + 72)
  CHECK(l->payload_bytes == 14336);
  CHECK(l->combine_row_bytes == 28672);
  c.ranks_per_npu = 2;
  l = ic::compute_moe_buffer_layout(c);
  REQUIRE(l.ok());
  CHECK(l->num_ranks == 8);
  c.max_topk = 0;
  CHECK(ic::compute_moe_buffer_layout(c).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("ic.moe_buffer: symmetric placement, die ranks, clocks") {
  Machine m("n8");
  ic::MoeBufferConfig c;
  c.max_tokens_per_rank = 8;
  c.hidden = 64;
  c.max_topk = 2;
  c.ranks_per_npu = 2;
  c.issue_contexts = 3;
  auto b = m.buffer(c, 3);
  REQUIRE(b->num_ranks() == 6);
  CHECK(b->issue_contexts() == 3);
  for (uint32_t r = 0; r < 6; ++r) {
    dev::DevicePtr p, q;
    REQUIRE(m.memory->translate(b->rank_base(r), &p));
    REQUIRE(m.memory->translate(b->rank_base(r % 2), &q));
    CHECK(p.npu == r / 2);
    CHECK(b->npu_of(r) == r / 2);
    // The same offset on every NPU: symmetric.
    CHECK(p.offset == q.offset);
    CHECK(b->combine_flag(r, 5) - b->slot_counter(r) == 8 * (1 + 6 + 5));
    uint64_t zero = 1;
    REQUIRE(m.memory->read(b->dispatch_flag(r, 4), &zero, 8).ok());
    CHECK(zero == 0);
  }
  CHECK(b->group_now().ns == 0);
  b->advance_all(ModelTime{5000});
  CHECK(b->rank_now(4).ns == 5000);
  CHECK(b->group_now().ns == 5000);
}

TEST_CASE("ic.moe_dispatch_map: placement, replicas, local indexes") {
  const ic::ExpertMap u = ic::ExpertMap::uniform(10, 4);
  REQUIRE(u.validate().ok());
  // floor(e * 4 / 10): 0,0,0,1,1,2,2,2,3,3
  const uint32_t want[10] = {0, 0, 0, 1, 1, 2, 2, 2, 3, 3};
  for (uint32_t e = 0; e < 10; ++e) CHECK(u.replicas(e) == std::vector<uint32_t>{want[e]});
  ic::ExpertMap m = ic::ExpertMap::uniform(8, 4);
  REQUIRE(m.add_replica(7, 0).ok());
  REQUIRE(m.add_shared_expert({0, 2}, 0.5f).ok());
  const auto locals = m.local_experts(0);
  REQUIRE(locals.size() == 4);  // experts 0, 1, the replica of 7, then shared 0
  CHECK((!locals[2].shared && locals[2].expert == 7));
  CHECK((locals[3].shared && locals[3].expert == 0));
  CHECK(m.local_index(0, false, 7) == 2);
  CHECK(m.local_index(1, false, 7) == -1);
  CHECK(m.local_index(2, true, 0) == 2);
  // Replica choice: (src + token) mod replicas, in the order added.
  CHECK(m.routed_rank(7, 0, 0) == 3);
  CHECK(m.routed_rank(7, 0, 1) == 0);
  CHECK(m.routed_rank(7, 3, 4) == 0);
  CHECK(m.shared_weight(0) == 0.5f);
  CHECK(ic::ExpertMap(0, 4).validate().code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("ic.quant_int8: BF16 rounding and INT8 per-token quantization") {
  // BF16: round to nearest, ties to even; exact round trip of BF16 values; NaN stays NaN.
  CHECK(ic::round_to_bf16(1.0f) == 1.0f);
  CHECK(ic::round_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 1.0f);  // tie: to even
  CHECK(ic::round_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(ic::round_to_bf16(-2.5f) == -2.5f);
  CHECK(std::isnan(ic::round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  CHECK(ic::round_to_bf16(std::numeric_limits<float>::infinity()) ==
        std::numeric_limits<float>::infinity());
  // INT8: |x - q * scale| <= max|x| / 254 per element, scale = max|x| / 127.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  for (int row = 0; row < 50; ++row) {
    std::vector<uint16_t> x(300);
    float max_abs = 0;
    for (auto& v : x) {
      v = ic::float_to_bf16(dist(rng) * (row + 1));
      max_abs = std::max(max_abs, std::fabs(ic::bf16_to_float(v)));
    }
    std::vector<int8_t> q(300);
    const float scale = ic::quantize_int8_row(x, q);
    CHECK(scale == doctest::Approx(max_abs / 127.0f));
    std::vector<float> back(300);
    ic::dequantize_int8_row(q, scale, back);
    int maxed = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      CHECK(std::fabs(back[i] - ic::bf16_to_float(x[i])) <= max_abs / 254.0f * 1.0001f);
      maxed += std::abs(q[i]) == 127;
    }
    CHECK(maxed >= 1);  // the largest element uses the full range
  }
  // Integers with max 127 quantise exactly; a zero row gets scale 0.
  std::vector<float> ints = {127, -127, 0, 5, -64, 100};
  std::vector<int8_t> q(ints.size());
  CHECK(ic::quantize_int8_row(ints, q) == 1.0f);
  for (size_t i = 0; i < ints.size(); ++i) CHECK(q[i] == static_cast<int8_t>(ints[i]));
  std::vector<float> zeros(8, 0.0f);
  std::vector<int8_t> qz(8, 7);
  CHECK(ic::quantize_int8_row(zeros, qz) == 0.0f);
  for (int8_t v : qz) CHECK(v == 0);
}
