// Grouped SwiGLU experts against a double reference: BF16 and INT8 weights, gathered and
// in-place rows, empty experts, the single-host grouping, workspace reuse without growth,
// and bad layouts refused before anything is written.
#include <doctest/doctest.h>

#include <cmath>

#include "models/kernels/expert_ffn.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

namespace {

constexpr uint32_t kH = 48, kI = 40;

// Compares run_experts' rows with ref_expert: |err| <= rel * (max |ref row| + 0.1).
int check_rows(const std::vector<ExpertData>& experts, const std::vector<float>& x,
               const std::vector<uint32_t>& offsets, const std::vector<uint32_t>& src,
               const std::vector<float>& out, double rel) {
  int bad = 0;
  for (uint32_t j = 0; j + 1 < offsets.size(); ++j)
    for (uint32_t i = offsets[j]; i < offsets[j + 1]; ++i) {
      const uint32_t xr = src.empty() ? i : src[i];
      const auto ref = ref_expert(x.data() + uint64_t{xr} * kH, kH, kI, experts[j].view());
      double mx = 0;
      for (double v : ref) mx = std::max(mx, std::fabs(v));
      for (uint32_t h = 0; h < kH; ++h)
        if (!(std::fabs(out[uint64_t{i} * kH + h] - ref[h]) <= rel * (mx + 0.1)) && ++bad <= 5)
          FAIL_CHECK("expert " << j << " row " << i << " h " << h << ": "
                               << out[uint64_t{i} * kH + h] << " vs " << ref[h]);
    }
  return bad;
}

}  // namespace

TEST_CASE("models.expert_ffn: grouped experts equal the double reference (BF16 and INT8)") {
  Rng rng(21);
  std::vector<ExpertData> experts;
  std::vector<ExpertWeights> views;
  for (int j = 0; j < 5; ++j) experts.emplace_back(rng, kH, kI);
  for (const auto& e : experts) views.push_back(e.view());
  const uint32_t num_x = 30;
  const auto x = random_bf16_floats(rng, uint64_t{num_x} * kH, 2.0f);
  // Expert 2 gets nothing; rows name x rows in any order, repeats allowed.
  const std::vector<uint32_t> offsets = {0, 7, 19, 19, 20, 33};
  std::vector<uint32_t> src(33);
  for (auto& s : src) s = static_cast<uint32_t>(rng.next() % num_x);
  for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
    CAPTURE(expert_precision_name(p));
    auto bank = ExpertBank::create(kH, kI, views, p);
    REQUIRE(bank.ok());
    CHECK(bank->size() == 5);
    ExpertWorkspace ws;
    std::vector<float> out(33 * kH, NAN);
    REQUIRE(run_experts(*bank, x, num_x, offsets, src, out, ws).ok());
    // INT8: two quantised products, each within about 1% of the row's scale.
    CHECK(check_rows(experts, x, offsets, src, out, p == ExpertPrecision::kInt8 ? 0.03 : 1e-5) == 0);
    // A second call of the same shape reuses the workspace: nothing grows.
    const float* g = ws.lanes[0].gathered.data();
    const float* gu = ws.lanes[0].gate_up.data();
    const float* a = ws.lanes[0].act.data();
    REQUIRE(run_experts(*bank, x, num_x, offsets, src, out, ws).ok());
    CHECK(ws.lanes[0].gathered.data() == g);
    CHECK(ws.lanes[0].gate_up.data() == gu);
    CHECK(ws.lanes[0].act.data() == a);
    // In place (src_rows empty): row i reads x row i.
    const std::vector<uint32_t> contiguous = {0, 10, 10, 25, 25, 30};
    std::vector<float> out2(30 * kH);
    REQUIRE(run_experts(*bank, x, num_x, contiguous, {}, out2, ws).ok());
    CHECK(check_rows(experts, x, contiguous, {}, out2, p == ExpertPrecision::kInt8 ? 0.03 : 1e-5) == 0);
  }
}

TEST_CASE("models.expert_ffn: group_by_expert lays out (token, k) pairs expert-major") {
  const std::vector<int32_t> ids = {2, 0, 1, 2, -1, 0, 2, 1};  // 4 tokens, top-2
  ExpertGrouping g;
  REQUIRE(group_by_expert(ids, 4, 2, 3, &g).ok());
  CHECK(g.offsets == std::vector<uint32_t>{0, 2, 4, 7});
  CHECK(g.src_rows == std::vector<uint32_t>{0, 2, 1, 3, 0, 1, 3});
  CHECK(g.pair == std::vector<uint32_t>{1, 5, 2, 7, 0, 3, 6});
  for (uint32_t r = 0; r < g.pair.size(); ++r) CHECK(g.row_of_pair[g.pair[r]] == r);
  CHECK(g.row_of_pair[4] == UINT32_MAX);
  CHECK(group_by_expert(ids, 4, 2, 2, &g).code() == StatusCode::kInvalidArgument);  // id 2 of 2
  CHECK(group_by_expert(ids, 3, 2, 3, &g).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("models.expert_ffn: bad weights and layouts are refused, nothing written") {
  Rng rng(2);
  ExpertData e(rng, kH, kI);
  ExpertWeights bad = e.view();
  bad.down_bf16 = bad.down_bf16.first(10);
  auto b = ExpertBank::create(kH, kI, std::vector<ExpertWeights>{e.view(), bad}, ExpertPrecision::kBf16);
  REQUIRE(!b.ok());
  CHECK(b.status().message().find("expert 1: down") != std::string::npos);
  auto bank = ExpertBank::create(kH, kI, std::vector<ExpertWeights>{e.view()}, ExpertPrecision::kBf16);
  REQUIRE(bank.ok());
  ExpertWorkspace ws;
  std::vector<float> x(4 * kH, 1.0f), out(3 * kH, 7.0f);
  const std::vector<uint32_t> offsets = {0, 3};
  CHECK(run_experts(*bank, x, 4, offsets, std::vector<uint32_t>{0, 4, 1}, out, ws).code() ==
        StatusCode::kInvalidArgument);  // x row 4 of 4
  CHECK(run_experts(*bank, x, 4, std::vector<uint32_t>{0, 2}, {}, out, ws).code() ==
        StatusCode::kInvalidArgument);  // out sized for 3 rows
  CHECK(run_experts(*bank, x, 4, std::vector<uint32_t>{0, 1, 3}, {}, out, ws).code() ==
        StatusCode::kInvalidArgument);  // offsets for 2 experts
  for (float v : out) CHECK(v == 7.0f);
}
