// Multi-segment transfers (coalesced small puts) and the undelivered-packet list that lets a
// transport resend exactly what was lost: segments land where they belong, cost fewer
// packets than separate transfers, partial delivery maps stream packets onto segments, and
// bad segment lists are refused.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "tests/firmware-sim/sim_test_util.h"

using namespace simtest;
using moe::StatusCode;
using moe::dev::EngineKind;
using moe::dev::TransferSegment;

namespace {

moe::dev::WorkDescriptor segmented(const Buffer& src, const Buffer& dst,
                                   const std::vector<TransferSegment>& segs,
                                   bool move_payload = true) {
  uint64_t bytes = 0;
  for (const auto& g : segs) bytes += g.bytes;
  auto w = transfer(src.at(), dst.at(), bytes, 0xffffffffu, move_payload);
  w.transfer.segments = segs.data();
  w.transfer.num_segments = static_cast<uint32_t>(segs.size());
  return w;
}

// 64 segments of 64 bytes, scattered: segment i goes from src + 64*i to dst + 256*i.
std::vector<TransferSegment> scattered(const Buffer& src, const Buffer& dst, uint32_t n) {
  std::vector<TransferSegment> segs;
  for (uint32_t i = 0; i < n; ++i)
    segs.push_back({src.range.offset + 64ull * i, dst.range.offset + 256ull * (n - 1 - i), 64});
  return segs;
}

}  // namespace

TEST_CASE("sim.segments: a multi-segment transfer writes every segment and nothing else") {
  auto drv = make_driver("n8");
  CHECK(drv->caps().max_transfer_segments >= 64);
  Buffer src = make_buffer(*drv, 1, 1 << 16);
  Buffer dst = make_buffer(*drv, 5, 1 << 16);
  fill_pattern(src.host, 1 << 16, 3);
  std::memset(dst.host, 0xEE, 1 << 16);
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  auto segs = scattered(src, dst, 64);
  auto c = run_one(*drv, q, segmented(src, dst, segs));
  REQUIRE(c.status == StatusCode::kOk);
  CHECK(c.packets == 64 * 64 / drv->topology().packet_bytes);
  for (uint32_t i = 0; i < 64; ++i) {
    const uint64_t at = 256ull * (63 - i);
    CHECK(std::memcmp(dst.host + at, src.host + 64ull * i, 64) == 0);
    CHECK(dst.host[at + 64] == 0xEE);  // the gap after the segment is untouched
  }
  size_t n = 99;
  REQUIRE(drv->completion_undelivered(q, c.work_index, nullptr, 0, &n).ok());
  CHECK(n == 0);
}

TEST_CASE("sim.segments: coalescing costs fewer packets and less time than separate puts") {
  auto drv = make_driver("n8");
  Buffer src = make_buffer(*drv, 1, 1 << 16);
  Buffer dst = make_buffer(*drv, 5, 1 << 16);
  auto segs = scattered(src, dst, 64);
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  auto one = run_one(*drv, q, segmented(src, dst, segs, /*move_payload=*/false));
  REQUIRE(one.status == StatusCode::kOk);

  auto drv2 = make_driver("n8");
  Buffer src2 = make_buffer(*drv2, 1, 1 << 16);
  Buffer dst2 = make_buffer(*drv2, 5, 1 << 16);
  auto q2 = make_queue(*drv2, 1, EngineKind::kFabric);
  std::vector<moe::dev::WorkDescriptor> separate;
  for (const auto& g : scattered(src2, dst2, 64))
    separate.push_back(transfer({1, g.src_offset}, {5, g.dst_offset}, g.bytes, 0xffffffffu, false));
  auto done = run(*drv2, q2, separate);
  uint32_t packets = 0;
  double end = 0;
  for (const auto& c : done) {
    packets += c.packets;
    end = std::max(end, c.end.ns);
  }
  CHECK(packets == 64);
  CHECK(one.packets == 8);
  CHECK(one.end.ns < end);
  // Sub-headers are charged: more wire time than a plain transfer of the same bytes.
  auto drv3 = make_driver("n8");
  Buffer src3 = make_buffer(*drv3, 1, 1 << 16);
  Buffer dst3 = make_buffer(*drv3, 5, 1 << 16);
  auto q3 = make_queue(*drv3, 1, EngineKind::kFabric);
  auto plain = run_one(*drv3, q3, transfer(src3.at(), dst3.at(), 64 * 64, 0xffffffffu, false));
  CHECK(plain.end.ns < one.end.ns);
}

TEST_CASE("sim.segments: lost packets are listed and map onto the segments they carried") {
  auto drv = make_driver("n8", 11);
  const uint64_t pb = drv->topology().packet_bytes;
  Buffer src = make_buffer(*drv, 2, 1 << 20);
  Buffer dst = make_buffer(*drv, 6, 1 << 20);
  fill_pattern(src.host, 1 << 20, 5);
  moe::dev::FaultSpec f;
  f.kind = moe::dev::FaultKind::kPacketDrop;
  f.rate = 0.1;
  moe::dev::FaultId id = 0;
  REQUIRE(drv->fault_inject(f, &id).ok());
  auto q = make_queue(*drv, 2, EngineKind::kFabric);

  // A plain transfer: the listed packets are exactly the ones whose bytes did not arrive.
  const uint64_t bytes = 200 * pb + 100;
  auto c = run_one(*drv, q, transfer(src.at(), dst.at(), bytes));
  REQUIRE(c.packets_lost > 0);
  std::vector<uint32_t> lost(c.packets_lost + c.packets_corrupted);
  size_t n = 0;
  REQUIRE(drv->completion_undelivered(q, c.work_index, lost.data(), lost.size(), &n).ok());
  REQUIRE(n == lost.size());
  CHECK(std::is_sorted(lost.begin(), lost.end()));
  for (uint64_t p = 0; p * pb < bytes; ++p) {
    const uint64_t len = std::min(pb, bytes - p * pb);
    const bool arrived = std::memcmp(dst.host + p * pb, src.host + p * pb, len) == 0;
    const bool listed = std::binary_search(lost.begin(), lost.end(), static_cast<uint32_t>(p));
    CHECK(arrived != listed);
  }

  // A multi-segment transfer of 300-byte segments (not packet aligned): every byte of a
  // listed packet is missing at its segment's destination, every other byte arrived.
  std::vector<TransferSegment> segs;
  const uint64_t seg = 300, base = 1 << 19;
  for (uint32_t i = 0; i < 100; ++i)
    segs.push_back({src.range.offset + base + seg * i, dst.range.offset + base + seg * (99 - i), seg});
  std::memset(dst.host + base, 0, seg * 100);
  auto c2 = run_one(*drv, q, segmented(src, dst, segs));
  const size_t total = c2.packets_lost + c2.packets_corrupted;
  REQUIRE(total > 0);
  lost.assign(total, 0);
  REQUIRE(drv->completion_undelivered(q, c2.work_index, lost.data(), lost.size(), &n).ok());
  REQUIRE(n == total);
  for (uint64_t s = 0; s < seg * 100; ++s) {  // stream byte s
    const uint64_t i = s / seg, in = s % seg;
    const bool listed = std::binary_search(lost.begin(), lost.end(), static_cast<uint32_t>(s / pb));
    const uint8_t want = listed ? 0 : src.host[base + seg * i + in];
    if (dst.host[base + seg * (99 - i) + in] != want) {
      FAIL_CHECK("stream byte " << s << " wrong");
      break;
    }
  }
  // A later doorbell after polling drops the record.
  auto c3 = run_one(*drv, q, transfer(src.at(), dst.at(), 64));
  CHECK(drv->completion_undelivered(q, c2.work_index, lost.data(), lost.size(), &n).code() ==
        StatusCode::kNotFound);
  CHECK(drv->completion_undelivered(q, c3.work_index + 5, lost.data(), lost.size(), &n).code() ==
        StatusCode::kNotFound);
}

TEST_CASE("sim.segments: bad segment lists are refused naming the problem") {
  auto drv = make_driver("n8");
  Buffer src = make_buffer(*drv, 1, 8192);
  Buffer dst = make_buffer(*drv, 3, 8192);
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  std::vector<TransferSegment> segs{{src.range.offset, dst.range.offset, 64},
                                    {src.range.offset, dst.range.offset + 8192, 64}};
  auto w = segmented(src, dst, segs);
  moe::Status s = drv->queue_submit(q, &w, 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("segment 1") != std::string::npos);
  segs[1].dst_offset = dst.range.offset + 64;
  w = segmented(src, dst, segs);
  w.transfer.bytes = 100;
  s = drv->queue_submit(q, &w, 1);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("sum") != std::string::npos);
  w.transfer.bytes = 128;
  w.transfer.segments = nullptr;
  CHECK(drv->queue_submit(q, &w, 1).code() == StatusCode::kInvalidArgument);
  w.transfer.segments = segs.data();
  w.transfer.num_segments = drv->caps().max_transfer_segments + 1;
  CHECK(drv->queue_submit(q, &w, 1).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("sim.segments: an atomic reports when it took effect, before its response returns") {
  auto drv = make_driver("n16");
  Buffer word = make_buffer(*drv, 12, 4096);
  auto q = make_queue(*drv, 1, EngineKind::kFabric);
  auto c = run_one(*drv, q, atomic(moe::dev::AtomicOp::kFetchAdd, word.at(), 5));
  REQUIRE(c.status == StatusCode::kOk);
  CHECK(c.effect.ns > c.start.ns);
  CHECK(c.effect.ns < c.end.ns);
  auto t = run_one(*drv, q, transfer(word.at(64), word.at(128), 64));
  CHECK(t.effect.ns == t.end.ns);
}
