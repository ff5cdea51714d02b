// The HBM check. Two paths to the memory are tested on every NPU: the host mapping
// (walking ones: every bit of every 64-bit word toggled in turn across the sample) and the
// host-copy engine (each word holds its own address and the NPU id, written host -> device,
// read back device -> host, and also seen through the mapping). A failure names the NPU
// and the first bad word.
#include <cstring>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bringup/bringup.h"

namespace moe::tools::bringup {
namespace {

uint64_t walking_word(uint64_t i) { return 1ull << (i % 64); }
uint64_t address_word(dev::NpuId npu, uint64_t offset, uint64_t i) {
  return (static_cast<uint64_t>(npu) << 48) ^ (offset + i * 8) ^ 0x5a5a000000000000ull;
}

// Runs host copies on `queue` and waits for them; the first failing status is returned.
Status run_copies(dev::Driver& d, dev::QueueId queue, const dev::WorkDescriptor* work, size_t n) {
  MOE_TRY(d.queue_submit(queue, work, n));
  MOE_TRY(d.doorbell_ring(queue));
  size_t seen = 0;
  dev::Completion c[4];
  while (seen < n) {
    size_t got = 0;
    MOE_TRY(d.completions_poll(queue, c, 4, &got));
    if (got == 0) {
      MOE_TRY(d.completions_wait(queue, 5'000'000'000LL));
      continue;
    }
    for (size_t k = 0; k < got; ++k)
      if (c[k].status != StatusCode::kOk)
        return make_error(c[k].status, "host copy %s failed",
                          c[k].tag == 0 ? "host -> device" : "device -> host");
    seen += got;
  }
  return ok_status();
}

// Tests one NPU; returns what went wrong (the message names the NPU's first bad word).
Status test_npu(dev::Driver& d, dev::NpuId npu, uint64_t bytes) {
  dev::HbmRange range;
  MOE_TRY(d.hbm_reserve(npu, bytes, 4096, &range));
  dev::QueueId queue;
  struct Cleanup {
    dev::Driver& d;
    dev::HbmRange& r;
    dev::QueueId& q;
    ~Cleanup() {
      if (q.valid()) d.queue_destroy(q).ignore();
      d.hbm_release(r).ignore();
    }
  } cleanup{d, range, queue};
  MOE_TRY(d.hbm_commit(npu, range.offset, bytes));
  void* host = nullptr;
  MOE_TRY(d.hbm_map_host(npu, range.offset, bytes, &host));
  const uint64_t words = bytes / 8;
  auto* mapped = static_cast<uint64_t*>(host);
  for (uint64_t i = 0; i < words; ++i) mapped[i] = walking_word(i);
  for (uint64_t i = 0; i < words; ++i)
    if (mapped[i] != walking_word(i))
      return make_error(StatusCode::kHbmError, "walking ones: word at offset %llu reads %016llx, wrote %016llx",
                        static_cast<unsigned long long>(range.offset + i * 8),
                        static_cast<unsigned long long>(mapped[i]),
                        static_cast<unsigned long long>(walking_word(i)));

  std::vector<uint64_t> out(words), back(words, 0);
  for (uint64_t i = 0; i < words; ++i) out[i] = address_word(npu, range.offset, i);
  MOE_TRY(d.queue_create(npu, 0, dev::EngineKind::kHostCopy, 0, &queue));
  dev::WorkDescriptor w[2];
  for (int k = 0; k < 2; ++k) {
    w[k].kind = dev::WorkKind::kHostCopy;
    w[k].tag = static_cast<uint64_t>(k);
    w[k].host_copy.device = dev::DevicePtr{npu, range.offset};
    w[k].host_copy.bytes = bytes;
  }
  w[0].host_copy.host = out.data();
  w[0].host_copy.direction = dev::CopyDirection::kHostToDevice;
  w[1].host_copy.host = back.data();
  w[1].host_copy.direction = dev::CopyDirection::kDeviceToHost;
  MOE_TRY(run_copies(d, queue, w, 2));
  for (uint64_t i = 0; i < words; ++i) {
    if (back[i] != out[i] || mapped[i] != out[i])
      return make_error(StatusCode::kHbmError,
                        "address-in-data: word at offset %llu reads %016llx by copy and %016llx "
                        "mapped, wrote %016llx",
                        static_cast<unsigned long long>(range.offset + i * 8),
                        static_cast<unsigned long long>(back[i]),
                        static_cast<unsigned long long>(mapped[i]),
                        static_cast<unsigned long long>(out[i]));
  }
  return ok_status();
}

}  // namespace

void check_hbm(dev::Driver& driver, const CheckOptions& options, BringupReport* report) {
  const dev::Topology& t = driver.topology();
  const uint64_t bytes = options.hbm_sample_bytes;
  for (dev::NpuId npu = 0; npu < t.num_npus(); ++npu) {
    if (options.progress && (npu % 64 == 0 || npu + 1 == t.num_npus()))
      options.progress(strformat("hbm: NPU %u/%u", npu + 1, t.num_npus()));
    CheckEntry e;
    e.check = "hbm";
    e.npu = npu;
    e.node = t.npus[npu].node;
    e.unit = "bytes";
    e.expected = static_cast<double>(bytes);
    Status st = (bytes == 0 || bytes % 4096 != 0)
                    ? make_error(StatusCode::kInvalidArgument,
                                 "sample of %llu bytes is not a positive multiple of 4 KiB",
                                 static_cast<unsigned long long>(bytes))
                    : test_npu(driver, npu, bytes);
    e.passed = st.ok();
    e.measured = st.ok() ? static_cast<double>(bytes) : 0;
    e.message = describe_npu(t, npu) + ": " +
                (st.ok() ? strformat("%s sample: walking ones and address-in-data verified",
                                     format_bytes(static_cast<double>(bytes)).c_str())
                         : st.to_string());
    report->entries.push_back(e);
  }
}

}  // namespace moe::tools::bringup
