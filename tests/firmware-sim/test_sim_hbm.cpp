// Simulated HBM: reserve / commit / map / decommit / release, errors, and laziness (an
// untouched NPU costs no host memory; touched pages do, and decommit gives them back).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"

using moe::StatusCode;
using moe::dev::Driver;
using moe::dev::HbmRange;
using moe::dev::NpuState;

namespace {

std::unique_ptr<Driver> make_driver(const char* preset) {
  auto topo = moe::sim::make_preset(preset);
  REQUIRE(topo.ok());
  auto drv = moe::sim::create_driver(std::move(topo).value());
  REQUIRE(drv.ok());
  return std::move(drv).value();
}

// Resident set size of this process, from /proc/self/statm.
uint64_t process_resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  REQUIRE(f != nullptr);
  unsigned long size = 0, resident = 0;
  REQUIRE(std::fscanf(f, "%lu %lu", &size, &resident) == 2);
  std::fclose(f);
  return static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

}  // namespace

TEST_CASE("sim.hbm: reserve, commit, map, read as zero, write, decommit, release") {
  auto drv = make_driver("n8");
  HbmRange r;
  REQUIRE(drv->hbm_reserve(3, 16 * kMiB, 2 * kMiB, &r).ok());
  CHECK(r.npu == 3);
  CHECK(r.bytes == 16 * kMiB);
  CHECK(r.offset % (2 * kMiB) == 0);

  void* p = nullptr;
  moe::Status s = drv->hbm_map_host(3, r.offset, 4096, &p);
  CHECK(s.code() == StatusCode::kInvalidArgument);  // reserved, not committed
  CHECK(s.message().find("npu 3") != std::string::npos);
  CHECK(s.message().find("uncommitted") != std::string::npos);

  REQUIRE(drv->hbm_commit(3, r.offset, 8 * kMiB).ok());
  REQUIRE(drv->hbm_commit(3, r.offset, 4 * kMiB).ok());  // committing again is a no-op
  NpuState st;
  REQUIRE(drv->npu_state(3, &st).ok());
  CHECK(st.hbm_committed_bytes == 8 * kMiB);
  CHECK_FALSE(st.lost);

  REQUIRE(drv->hbm_map_host(3, r.offset, 8 * kMiB, &p).ok());
  auto* bytes = static_cast<uint8_t*>(p);
  bool all_zero = true;
  for (uint64_t i = 0; i < 8 * kMiB; i += 4093) all_zero &= bytes[i] == 0;
  CHECK(all_zero);
  std::memset(bytes, 0xab, 8 * kMiB);
  // The mapping beyond the committed part is refused.
  CHECK(drv->hbm_map_host(3, r.offset + 4 * kMiB, 8 * kMiB, &p).code() ==
        StatusCode::kInvalidArgument);

  // Decommit the first 4 MiB: mapping it is refused, recommitting reads zero again.
  REQUIRE(drv->hbm_decommit(3, r.offset, 4 * kMiB).ok());
  CHECK(drv->hbm_map_host(3, r.offset, 4096, &p).code() == StatusCode::kInvalidArgument);
  REQUIRE(drv->npu_state(3, &st).ok());
  CHECK(st.hbm_committed_bytes == 4 * kMiB);
  REQUIRE(drv->hbm_commit(3, r.offset, 4 * kMiB).ok());
  REQUIRE(drv->hbm_map_host(3, r.offset, 8 * kMiB, &p).ok());
  bytes = static_cast<uint8_t*>(p);
  CHECK(bytes[0] == 0);
  CHECK(bytes[4 * kMiB - 1] == 0);
  CHECK(bytes[4 * kMiB] == 0xab);  // the part never decommitted kept its contents

  REQUIRE(drv->hbm_release(r).ok());
  REQUIRE(drv->npu_state(3, &st).ok());
  CHECK(st.hbm_committed_bytes == 0);
  CHECK(drv->hbm_commit(3, r.offset, 4096).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_release(r).code() == StatusCode::kInvalidArgument);  // twice
}

TEST_CASE("sim.hbm: bad arguments are refused with messages naming them") {
  auto drv = make_driver("n8");
  HbmRange r;
  moe::Status s = drv->hbm_reserve(8, 4096, 4096, &r);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("npu 8") != std::string::npos);
  CHECK(drv->hbm_reserve(0, 0, 4096, &r).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_reserve(0, 1000, 4096, &r).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_reserve(0, 4096, 6144, &r).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_reserve(0, 4096, 2048, &r).code() == StatusCode::kInvalidArgument);

  // More than the capacity: out of memory, saying what was asked and what is free.
  uint64_t cap = drv->topology().hbm.capacity_bytes;
  s = drv->hbm_reserve(0, cap + 4096, 4096, &r);
  CHECK(s.code() == StatusCode::kOutOfMemory);
  CHECK(s.message().find("npu 0") != std::string::npos);

  REQUIRE(drv->hbm_reserve(0, 1 * kMiB, 4096, &r).ok());
  CHECK(drv->hbm_commit(0, r.offset + 100, 4096).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_commit(0, r.offset, 2 * kMiB).code() == StatusCode::kInvalidArgument);
  CHECK(drv->hbm_decommit(0, r.offset + kMiB, 4096).code() == StatusCode::kInvalidArgument);
  HbmRange wrong = r;
  wrong.bytes = 4096;
  CHECK(drv->hbm_release(wrong).code() == StatusCode::kInvalidArgument);
  void* p = nullptr;
  CHECK(drv->hbm_map_host(0, cap, 4096, &p).code() == StatusCode::kInvalidArgument);
  NpuState st;
  CHECK(drv->npu_state(99, &st).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("sim.hbm: the whole capacity can be reserved, exhausted, released and reused") {
  auto drv = make_driver("n8");
  uint64_t cap = drv->topology().hbm.capacity_bytes;
  HbmRange a, b, c;
  REQUIRE(drv->hbm_reserve(1, cap / 2, 4096, &a).ok());
  REQUIRE(drv->hbm_reserve(1, cap / 2, 4096, &b).ok());
  CHECK(a.offset != b.offset);
  CHECK(drv->hbm_reserve(1, 4096, 4096, &c).code() == StatusCode::kOutOfMemory);
  REQUIRE(drv->hbm_release(a).ok());
  REQUIRE(drv->hbm_release(b).ok());
  // Freed ranges coalesce: the whole capacity fits again, at the largest alignment.
  REQUIRE(drv->hbm_reserve(1, cap, cap, &c).ok());
  CHECK(c.offset == 0);
  REQUIRE(drv->hbm_release(c).ok());
  // Alignment leaves a gap that later small reservations can use.
  HbmRange small, big, gap;
  REQUIRE(drv->hbm_reserve(1, 4096, 4096, &small).ok());
  REQUIRE(drv->hbm_reserve(1, kGiB, kGiB, &big).ok());
  CHECK(big.offset == kGiB);
  REQUIRE(drv->hbm_reserve(1, 8192, 4096, &gap).ok());
  CHECK(gap.offset == 4096);
}

TEST_CASE("sim.hbm: lazy on cm384: all 384 NPUs x 128 GiB reserved in a few MB; touched "
          "pages are resident, decommitted ones are not") {
  auto drv = make_driver("cm384");
  const uint32_t n = drv->topology().num_npus();
  REQUIRE(n == 384);
  uint64_t cap = drv->topology().hbm.capacity_bytes;
  uint64_t rss_before = process_resident_bytes();
  std::vector<HbmRange> ranges(n);
  for (uint32_t npu = 0; npu < n; ++npu) REQUIRE(drv->hbm_reserve(npu, cap, 4096, &ranges[npu]).ok());
  // Commit 1 GiB on every NPU: still no host memory, only bitmap leaves.
  for (uint32_t npu = 0; npu < n; ++npu) REQUIRE(drv->hbm_commit(npu, 0, kGiB).ok());
  uint64_t rss_reserved = process_resident_bytes();
  CHECK(rss_reserved < rss_before + 32 * kMiB);

  NpuState st;
  REQUIRE(drv->npu_state(5, &st).ok());
  CHECK(st.hbm_committed_bytes == kGiB);
  CHECK(st.hbm_resident_bytes == 0);

  // Touch 16 MiB of NPU 5.
  void* p = nullptr;
  REQUIRE(drv->hbm_map_host(5, 0, 16 * kMiB, &p).ok());
  std::memset(p, 1, 16 * kMiB);
  REQUIRE(drv->npu_state(5, &st).ok());
  CHECK(st.hbm_resident_bytes == 16 * kMiB);
  uint64_t rss_touched = process_resident_bytes();
  CHECK(rss_touched >= rss_reserved + 15 * kMiB);
  REQUIRE(drv->npu_state(6, &st).ok());
  CHECK(st.hbm_resident_bytes == 0);

  // Decommit: the memory really goes back.
  REQUIRE(drv->hbm_decommit(5, 0, 16 * kMiB).ok());
  REQUIRE(drv->npu_state(5, &st).ok());
  CHECK(st.hbm_resident_bytes == 0);
  CHECK(st.hbm_committed_bytes == kGiB - 16 * kMiB);
  uint64_t rss_after = process_resident_bytes();
  CHECK(rss_after + 15 * kMiB <= rss_touched);
  for (uint32_t npu = 0; npu < n; ++npu) REQUIRE(drv->hbm_release(ranges[npu]).ok());
}
