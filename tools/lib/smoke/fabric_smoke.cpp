// The check drives the hardware only through dev::Driver, one fabric queue per NPU, the way
// the interconnect layer does; it owns every queue it creates (RAII guard below).
#include "tools/lib/smoke/fabric_smoke.h"

#include <vector>

#include "runtime/base/check.h"

namespace moe::tools {
namespace {

// Queues created by a check, released on every exit path.
class Resources {
 public:
  explicit Resources(dev::Driver& driver) : driver_(driver) {}
  ~Resources() {
    for (dev::QueueId q : queues_) driver_.queue_destroy(q).ignore();
  }
  Status queue(dev::NpuId npu, dev::QueueId* out) {
    MOE_TRY(driver_.queue_create(npu, 0, dev::EngineKind::kFabric, 0, out));
    queues_.push_back(*out);
    return ok_status();
  }

 private:
  dev::Driver& driver_;
  std::vector<dev::QueueId> queues_;
};

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
