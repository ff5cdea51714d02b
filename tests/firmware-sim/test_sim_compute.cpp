// Compute and host-copy engines: the cost formulas (with the calibrated matmul
// efficiencies), kernel bodies run in order in functional mode, host copies move bytes.
#include <doctest/doctest.h>

#include <vector>

#include "firmware-sim/sim_options.h"
#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;
using moe::dev::KernelClass;
using moe::dev::Precision;
using moe::dev::WorkDescriptor;
using moe::dev::WorkKind;

namespace {

WorkDescriptor kernel(KernelClass cls, Precision prec, double flops, double bytes) {
  WorkDescriptor w;
  w.kind = WorkKind::kKernel;
  w.kernel.kernel_class = cls;
  w.kernel.precision = prec;
  w.kernel.flops = flops;
  w.kernel.hbm_bytes = bytes;
  return w;
}

double cost(moe::dev::Driver& drv, moe::dev::QueueId q, const WorkDescriptor& w) {
  auto c = run_one(drv, q, w);
  REQUIRE(c.status == StatusCode::kOk);
  return c.end.ns - c.start.ns;
}

void append(void* ctx) {
  auto* v = static_cast<std::vector<int>*>(ctx);
  v->push_back(static_cast<int>(v->size()));
}

}  // namespace

TEST_CASE("sim.compute: kernel cost = launch + max(flops / rate, bytes / bandwidth)") {
  auto drv = make_driver("n8");
  const auto& t = drv->topology();
  const auto& c = t.compute;
  auto q = make_queue(*drv, 0, EngineKind::kCompute, 1);
  const double die_bw = t.hbm.bandwidth_gbps / t.dies_per_npu;  // bytes per ns

  // A decode-shaped expert product (8 rows, K=7168, N=4096): bound by reading its weights
  // at matmul_bandwidth_efficiency of the die's HBM bandwidth.
  const double weights = 7168.0 * 4096 * 2;
  const double small_flops = 2.0 * 8 * 7168 * 4096;
  double expected = c.launch_ns + weights / (die_bw * c.matmul_bandwidth_efficiency);
  CHECK(cost(*drv, q, kernel(KernelClass::kMatmul, Precision::kBf16, small_flops, weights)) ==
        doctest::Approx(expected).epsilon(1e-9));
  CHECK(weights / (die_bw * c.matmul_bandwidth_efficiency) > small_flops / (c.bf16_tflops * 1e3));

  // A prefill-shaped one (8192 rows): bound by compute at matmul_compute_efficiency.
  const double big_flops = 2.0 * 8192 * 7168 * 4096;
  const double big_bytes = weights + 2.0 * 8192 * (7168 + 4096);
  expected = c.launch_ns + big_flops / (c.bf16_tflops * 1e3 * c.matmul_compute_efficiency);
  CHECK(cost(*drv, q, kernel(KernelClass::kMatmul, Precision::kBf16, big_flops, big_bytes)) ==
        doctest::Approx(expected).epsilon(1e-9));
  // INT8 uses the INT8 rate.
  expected = c.launch_ns + big_flops / (c.int8_tops * 1e3 * c.matmul_compute_efficiency);
  CHECK(cost(*drv, q, kernel(KernelClass::kMatmul, Precision::kInt8, big_flops, big_bytes)) ==
        doctest::Approx(expected).epsilon(1e-9));

  // A vector kernel streaming memory: full die bandwidth, no matmul efficiency.
  expected = c.launch_ns + 1e9 / die_bw;
  CHECK(cost(*drv, q, kernel(KernelClass::kVector, Precision::kBf16, 1e6, 1e9)) ==
        doctest::Approx(expected).epsilon(1e-9));
  // A vector kernel bound by arithmetic: the vector rate.
  const double vec_rate = c.bf16_tflops * 1e3 * moe::sim::options::kVectorRateFraction.get();
  expected = c.launch_ns + 1e12 / vec_rate;
  CHECK(cost(*drv, q, kernel(KernelClass::kVector, Precision::kBf16, 1e12, 1e3)) ==
        doctest::Approx(expected).epsilon(1e-9));
  // An empty kernel costs its launch.
  CHECK(cost(*drv, q, kernel(KernelClass::kVector, Precision::kBf16, 0, 0)) ==
        doctest::Approx(c.launch_ns));
}

TEST_CASE("sim.compute: kernel bodies run in submission order on the doorbell; timing mode "
          "runs none") {
  auto drv = make_driver("n8");
  auto q = make_queue(*drv, 4, EngineKind::kCompute, 0);
  std::vector<int> seen;
  std::vector<WorkDescriptor> work;
  for (int i = 0; i < 5; ++i) {
    WorkDescriptor w = kernel(KernelClass::kVector, Precision::kFp32, 1e6, 1e6);
    w.kernel.body = &append;
    w.kernel.ctx = &seen;
    w.tag = static_cast<uint64_t>(i);
    work.push_back(w);
  }
  work.push_back(kernel(KernelClass::kVector, Precision::kFp32, 1e6, 1e6));  // timing only
  REQUIRE(drv->queue_submit(q, work.data(), work.size()).ok());
  CHECK(seen.empty());
  REQUIRE(drv->doorbell_ring(q).ok());
  REQUIRE(seen.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(seen[i] == i);
}

TEST_CASE("sim.compute: host copies cost latency + bytes / host link bandwidth and move bytes") {
  auto drv = make_driver("n8");
  const auto& t = drv->topology();
  const uint64_t bytes = 1 << 20;
  Buffer b = make_buffer(*drv, 6, bytes);
  std::vector<uint8_t> host(bytes), back(bytes, 0);
  fill_pattern(host.data(), bytes, 11);
  auto q = make_queue(*drv, 6, EngineKind::kHostCopy);

  WorkDescriptor h2d;
  h2d.kind = WorkKind::kHostCopy;
  h2d.host_copy.host = host.data();
  h2d.host_copy.device = b.at();
  h2d.host_copy.bytes = bytes;
  h2d.host_copy.direction = moe::dev::CopyDirection::kHostToDevice;
  WorkDescriptor d2h = h2d;
  d2h.host_copy.host = back.data();
  d2h.host_copy.direction = moe::dev::CopyDirection::kDeviceToHost;
  auto done = run(*drv, q, {h2d, d2h});
  CHECK(std::memcmp(b.host, host.data(), bytes) == 0);
  CHECK(back == host);
  const double expected = moe::sim::options::kHostCopyLatencyNs.get() +
                          static_cast<double>(bytes) / t.host_link_bandwidth_gbps;
  CHECK(done[0].end.ns - done[0].start.ns == doctest::Approx(expected));
  CHECK(done[1].start.ns == doctest::Approx(done[0].end.ns));  // one engine, in order

  // A host copy must name its own NPU.
  WorkDescriptor wrong = h2d;
  wrong.host_copy.device.npu = 5;
  CHECK(drv->queue_submit(q, &wrong, 1).code() == StatusCode::kInvalidArgument);
}
