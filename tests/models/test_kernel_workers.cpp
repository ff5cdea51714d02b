// Kernel workers and concurrent experts: every task runs exactly once on a lane in range,
// nested and concurrent callers complete, the BLAS thread count is restored after a job, and
// experts run on workers (one call and several calls in one job) equal the serial run and the
// double reference.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "models/kernels/blas_threads.h"
#include "models/kernels/expert_ffn.h"
#include "models/kernels/kernel_workers.h"
#include "tests/models/moe_test_util.h"

using namespace modeltest;

TEST_CASE("models.kernel_workers: every task runs once, on a lane in range") {
  KernelWorkers workers(3);
  CHECK(workers.lanes() == 3);
  for (uint32_t n : {0u, 1u, 2u, 7u, 100u}) {
    CAPTURE(n);
    std::vector<std::atomic<int>> runs(n);
    std::atomic<int> bad_lane{0};
    auto fn = [&](uint32_t task, uint32_t lane) {
      runs[task].fetch_add(1);
      if (lane >= 3) bad_lane.fetch_add(1);
    };
    workers.run(n, fn);
    for (auto& r : runs) CHECK(r.load() == 1);
    CHECK(bad_lane.load() == 0);
  }
}

TEST_CASE("models.kernel_workers: nested and concurrent jobs complete; BLAS threads restored") {
  KernelWorkers workers(2);
  const int blas_before = blas_num_threads();
  std::atomic<int> inner_runs{0}, serial_seen{0};
  auto outer = [&](uint32_t, uint32_t) {
    if (blas_num_threads() == 1) serial_seen.fetch_add(1);
    auto inner = [&](uint32_t, uint32_t lane) {
      if (lane == 0) inner_runs.fetch_add(1);  // nested: inline, all on lane 0
    };
    workers.run(5, inner);
  };
  workers.run(4, outer);
  CHECK(inner_runs.load() == 20);
  CHECK(serial_seen.load() == 4);  // inside a job every BLAS product is single-threaded
  CHECK(blas_num_threads() == blas_before);
  // Two threads submitting at once: both jobs finish, every task once.
  std::vector<std::atomic<int>> a(64), b(64);
  std::thread other([&] {
    auto fb = [&](uint32_t t, uint32_t) { b[t].fetch_add(1); };
    for (int r = 0; r < 20; ++r) workers.run(64, fb);
  });
  auto fa = [&](uint32_t t, uint32_t) { a[t].fetch_add(1); };
  for (int r = 0; r < 20; ++r) workers.run(64, fa);
  other.join();
  for (int t = 0; t < 64; ++t) {
    CHECK(a[t].load() == 20);
    CHECK(b[t].load() == 20);
  }
  CHECK(blas_num_threads() == blas_before);
}

TEST_CASE("models.expert_ffn: experts on workers equal the serial run and the reference") {
  // Big enough to pass kExpertParallelMinFlops: 6 * 128 * 96 * (rows + experts) >= 2^24.
  constexpr uint32_t H = 128, I = 96, E = 5;
  Rng rng(91);
  std::vector<ExpertData> experts;
  std::vector<ExpertWeights> views;
  for (uint32_t j = 0; j < E; ++j) experts.emplace_back(rng, H, I);
  for (const auto& e : experts) views.push_back(e.view());
  const uint32_t num_x = 300;
  const auto x = random_bf16_floats(rng, uint64_t{num_x} * H, 2.0f);
  // Uneven experts (one empty, one large enough to be cut into pieces).
  const std::vector<uint32_t> offsets = {0, 40, 40, 400, 430, 520};
  std::vector<uint32_t> src(offsets.back());
  for (auto& s : src) s = static_cast<uint32_t>(rng.next() % num_x);
  KernelWorkers workers(3);
  for (ExpertPrecision p : {ExpertPrecision::kBf16, ExpertPrecision::kInt8}) {
    CAPTURE(expert_precision_name(p));
    auto bank = ExpertBank::create(H, I, views, p);
    REQUIRE(bank.ok());
    REQUIRE(bank->flops(offsets.back() + 4) >= kExpertParallelMinFlops);
    ExpertWorkspace serial_ws, ws;
    std::vector<float> serial(offsets.back() * H, NAN), out(serial.size(), NAN);
    REQUIRE(run_experts(*bank, x, num_x, offsets, src, serial, serial_ws).ok());
    REQUIRE(run_experts(*bank, x, num_x, offsets, src, out, ws, &workers).ok());
    CHECK(ws.lanes.size() == 3);
    CHECK(ws.tasks.size() > 4);  // expert 2 (360 rows) was cut
    double worst = 0, worst_ref = 0;
    for (uint32_t j = 0; j < E; ++j)
      for (uint32_t i = offsets[j]; i < offsets[j + 1]; ++i) {
        const auto ref = ref_expert(x.data() + uint64_t{src[i]} * H, H, I, views[j]);
        double mx = 0.1;
        for (double v : ref) mx = std::max(mx, std::fabs(v));
        for (uint32_t h = 0; h < H; ++h) {
          const uint64_t k = uint64_t{i} * H + h;
          worst = std::max(worst, std::fabs(double(out[k]) - serial[k]) / mx);
          worst_ref = std::max(worst_ref, std::fabs(out[k] - ref[h]) / mx);
        }
      }
    // Same products of the same rows: only the BLAS's blocking of the row count may differ.
    CHECK(worst <= 1e-6);
    CHECK(worst_ref <= (p == ExpertPrecision::kInt8 ? 0.05 : 1e-5));  // INT8: two quantised products
    // Two calls in one job (the second in place) equal the two calls run alone.
    const std::vector<uint32_t> contiguous = {0, 100, 100, 200, 250, 300};
    std::vector<float> second(300 * H, NAN), second_alone(second.size(), NAN);
    std::vector<float> first(out.size(), NAN);
    REQUIRE(run_experts(*bank, x, num_x, contiguous, {}, second_alone, serial_ws).ok());
    const ExpertCall calls[2] = {{&*bank, x, num_x, offsets, src, first},
                                 {&*bank, x, num_x, contiguous, {}, second}};
    REQUIRE(run_experts(calls, ws, &workers).ok());
    double worst2 = 0;
    for (size_t k = 0; k < first.size(); ++k) worst2 = std::max(worst2, double(std::fabs(first[k] - serial[k])));
    for (size_t k = 0; k < second.size(); ++k)
      worst2 = std::max(worst2, double(std::fabs(second[k] - second_alone[k])));
    CHECK(worst2 <= 1e-5);
    // A bad second call is refused, naming it, before anything is written.
    std::vector<float> untouched(out.size(), 7.0f), short_out(10, 7.0f);
    const ExpertCall bad[2] = {{&*bank, x, num_x, offsets, src, untouched},
                               {&*bank, x, num_x, contiguous, {}, short_out}};
    const Status s = run_experts(bad, ws, &workers);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("call 1") != std::string::npos);
    for (float v : untouched) CHECK(v == 7.0f);
  }
}
