// Both checks drive the hardware only through dev::Driver, one fabric queue per NPU, the
// way the interconnect layer does; they own every resource they create (RAII guard below).
#include "tools/lib/smoke/fabric_smoke.h"

#include <cstring>
#include <vector>

#include "runtime/base/check.h"

namespace moe::tools {
namespace {

// Queues and HBM ranges created by a check, released on every exit path.
class Resources {
 public:
  explicit Resources(dev::Driver& driver) : driver_(driver) {}
  ~Resources() {
    for (dev::QueueId q : queues_) driver_.queue_destroy(q).ignore();
    for (const dev::HbmRange& r : ranges_) driver_.hbm_release(r).ignore();
  }
  Status queue(dev::NpuId npu, dev::QueueId* out) {
    MOE_TRY(driver_.queue_create(npu, 0, dev::EngineKind::kFabric, 0, out));
    queues_.push_back(*out);
    return ok_status();
  }
  Status hbm(dev::NpuId npu, uint64_t bytes, dev::HbmRange* out) {
    MOE_TRY(driver_.hbm_reserve(npu, bytes, 4096, out));
    ranges_.push_back(*out);
    return driver_.hbm_commit(npu, out->offset, bytes);
  }

 private:
  dev::Driver& driver_;
  std::vector<dev::QueueId> queues_;
  std::vector<dev::HbmRange> ranges_;
};

uint8_t pattern_byte(dev::NpuId npu, uint64_t i) {
  return static_cast<uint8_t>((npu * 131u) ^ (i * 7u) ^ (i >> 9));
}

// Polls every queue until `expected[q]` completions have arrived; fails on the first
// completion that is not OK. Returns the latest completion end.
Status drain(dev::Driver& driver, const std::vector<dev::QueueId>& queues,
             const std::vector<uint64_t>& expected, ModelTime* latest_end) {
  std::vector<dev::Completion> buf(256);
  for (size_t i = 0; i < queues.size(); ++i) {
    uint64_t seen = 0;
    while (seen < expected[i]) {
      size_t n = 0;
      MOE_TRY(driver.completions_poll(queues[i], buf.data(), buf.size(), &n));
      if (n == 0) {
        MOE_TRY(driver.completions_wait(queues[i], 5'000'000'000LL));
        continue;
      }
      for (size_t k = 0; k < n; ++k) {
        if (buf[k].status != StatusCode::kOk)
          return make_error(buf[k].status, "transfer tag %llu on queue %zu failed",
                            static_cast<unsigned long long>(buf[k].tag), i);
        *latest_end = max(*latest_end, buf[k].end);
      }
      seen += n;
    }
  }
  return ok_status();
}

}  // namespace

Status ring_exchange(dev::Driver& driver, uint64_t bytes_per_npu, RingResult* out) {
  if (bytes_per_npu == 0 || bytes_per_npu % 4096 != 0)
    return make_error(StatusCode::kInvalidArgument, "ring_exchange: bytes_per_npu %llu is not a positive multiple of 4 KiB",
                      static_cast<unsigned long long>(bytes_per_npu));
  int64_t t0 = wall_now_ns();
  const dev::Topology& topo = driver.topology();
  const uint32_t n = topo.num_npus();
  Resources res(driver);
  std::vector<dev::QueueId> queues(n);
  std::vector<dev::HbmRange> src(n), dst(n);
  std::vector<uint8_t*> host_src(n), host_dst(n);
  for (dev::NpuId npu = 0; npu < n; ++npu) {
    MOE_TRY(res.queue(npu, &queues[npu]));
    MOE_TRY(res.hbm(npu, bytes_per_npu, &src[npu]));
    MOE_TRY(res.hbm(npu, bytes_per_npu, &dst[npu]));
    void* p = nullptr;
    MOE_TRY(driver.hbm_map_host(npu, src[npu].offset, bytes_per_npu, &p));
    host_src[npu] = static_cast<uint8_t*>(p);
    MOE_TRY(driver.hbm_map_host(npu, dst[npu].offset, bytes_per_npu, &p));
    host_dst[npu] = static_cast<uint8_t*>(p);
    for (uint64_t i = 0; i < bytes_per_npu; ++i) host_src[npu][i] = pattern_byte(npu, i);
    std::memset(host_dst[npu], 0, bytes_per_npu);
  }
  ModelTime start{};
  for (dev::NpuId npu = 0; npu < n; ++npu) {
    MOE_TRY(driver.engine_time(queues[npu], &start));
    break;
  }
  for (dev::NpuId npu = 0; npu < n; ++npu) {
    dev::NpuId next = (npu + 1) % n;
    dev::WorkDescriptor w;
    w.kind = dev::WorkKind::kTransfer;
    w.tag = npu;
    w.not_before = start;
    w.transfer.src = {npu, src[npu].offset};
    w.transfer.dst = {next, dst[next].offset};
    w.transfer.bytes = bytes_per_npu;
    w.transfer.move_payload = true;
    MOE_TRY(driver.queue_submit(queues[npu], &w, 1));
    MOE_TRY(driver.doorbell_ring(queues[npu]));
  }
  ModelTime end = start;
  MOE_TRY(drain(driver, queues, std::vector<uint64_t>(n, 1), &end));
  uint64_t bad = 0;
  for (dev::NpuId npu = 0; npu < n; ++npu) {
    dev::NpuId prev = (npu + n - 1) % n;
    for (uint64_t i = 0; i < bytes_per_npu; ++i) bad += host_dst[npu][i] != pattern_byte(prev, i);
  }
  RingResult r;
  r.npus = n;
  r.bytes_per_npu = bytes_per_npu;
  r.bad_bytes = bad;
  r.modelled_makespan = end - start;
  r.wall_ns = wall_now_ns() - t0;
  *out = r;
  return ok_status();
}

Status timing_all_to_all(dev::Driver& driver, uint64_t bytes_per_pair, AllToAllResult* out) {
  if (bytes_per_pair == 0)
    return make_error(StatusCode::kInvalidArgument, "timing_all_to_all: bytes_per_pair must be > 0");
  int64_t t0 = wall_now_ns();
  const uint32_t n = driver.topology().num_npus();
  Resources res(driver);
  std::vector<dev::QueueId> queues(n);
  for (dev::NpuId npu = 0; npu < n; ++npu) MOE_TRY(res.queue(npu, &queues[npu]));
  ModelTime start{};
  MOE_TRY(driver.engine_time(queues[0], &start));
  std::vector<dev::WorkDescriptor> batch;
  batch.reserve(n);
  for (dev::NpuId npu = 0; npu < n; ++npu) {
    batch.clear();
    for (uint32_t k = 1; k < n; ++k) {  // start at the next NPU so ports are not hit in lockstep
      dev::NpuId dst = (npu + k) % n;
      dev::WorkDescriptor w;
      w.kind = dev::WorkKind::kTransfer;
      w.tag = dst;
      w.not_before = start;
      w.transfer.src = {npu, 0};
      w.transfer.dst = {dst, 0};
      w.transfer.bytes = bytes_per_pair;
      w.transfer.move_payload = false;
      batch.push_back(w);
    }
    MOE_TRY(driver.queue_submit(queues[npu], batch.data(), batch.size()));
    MOE_TRY(driver.doorbell_ring(queues[npu]));
  }
  ModelTime end = start;
  MOE_TRY(drain(driver, queues, std::vector<uint64_t>(n, n - 1), &end));
  AllToAllResult r;
  r.npus = n;
  r.bytes_per_pair = bytes_per_pair;
  r.transfers = static_cast<uint64_t>(n) * (n - 1);
  r.modelled_makespan = end - start;
  double sent = static_cast<double>(bytes_per_pair) * (n - 1);
  r.modelled_gbps_per_npu = r.modelled_makespan.ns > 0 ? sent / r.modelled_makespan.ns : 0;
  r.wall_ns = wall_now_ns() - t0;
  *out = r;
  return ok_status();
}

}  // namespace moe::tools
