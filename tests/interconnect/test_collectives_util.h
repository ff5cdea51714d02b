// Helpers for the collectives tests: random groups, per-member buffers, data that encodes
// (source member, destination member, element index) so a misrouted element is named, and
// host references.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "interconnect/collectives.h"
#include "tests/interconnect/transport_test_util.h"

namespace colltest {

using namespace moe;
using ictest::Machine;
using ic::Communicator;
using mem::GlobalAddr;

// `count` distinct NPUs of the machine in random order.
inline std::vector<dev::NpuId> random_group(std::mt19937_64& rng, uint32_t num_npus,
                                            uint32_t count) {
  std::vector<dev::NpuId> all(num_npus);
  for (uint32_t i = 0; i < num_npus; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(count);
  return all;
}

inline std::unique_ptr<Communicator> make_comm(Machine& m, const std::vector<dev::NpuId>& npus,
                                               const ic::CommConfig& config = {}) {
  auto c = Communicator::create(*m.transport, *m.memory, npus, config);
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  return std::move(c).value();
}

// One buffer of `bytes` on each member's NPU (at least 8 bytes so the address is valid),
// filled with `fill`.
inline std::vector<GlobalAddr> alloc_each(Machine& m, const Communicator& comm, uint64_t bytes,
                                          uint8_t fill = 0) {
  std::vector<GlobalAddr> out;
  for (uint32_t r = 0; r < comm.size(); ++r) {
    const uint64_t b = std::max<uint64_t>(bytes, 8);
    auto a = m.memory->allocate_local(comm.member(r).npu, b, 64);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    std::vector<uint8_t> v(b, fill);
    REQUIRE(m.memory->write(a.value(), v.data(), b).ok());
    out.push_back(a.value());
  }
  return out;
}

// `bytes` (at least 8) on one NPU, filled with `fill`.
inline GlobalAddr alloc_on(Machine& m, dev::NpuId npu, uint64_t bytes, uint8_t fill = 0) {
  const uint64_t b = std::max<uint64_t>(bytes, 8);
  auto a = m.memory->allocate_local(npu, b, 64);
  REQUIRE_MESSAGE(a.ok(), a.status().to_string());
  std::vector<uint8_t> v(b, fill);
  REQUIRE(m.memory->write(a.value(), v.data(), b).ok());
  return a.value();
}

inline std::vector<uint8_t> read(Machine& m, GlobalAddr a, uint64_t bytes) {
  std::vector<uint8_t> v(bytes);
  if (bytes > 0) REQUIRE(m.memory->read(a, v.data(), bytes).ok());
  return v;
}
inline void write(Machine& m, GlobalAddr a, const void* p, uint64_t bytes) {
  if (bytes > 0) REQUIRE(m.memory->write(a, p, bytes).ok());
}

// A 64-bit word naming where it came from: (source, destination, index), plus a tag that
// changes per call so stale data from an earlier call is caught too.
inline uint64_t tag_word(uint32_t src, uint32_t dst, uint64_t index, uint32_t tag = 0) {
  return (uint64_t{src} << 48) | (uint64_t{dst} << 36) | (uint64_t{tag & 0xf} << 32) |
         (index & 0xffffffffu);
}
inline std::string describe_word(uint64_t w) {
  return "(src " + std::to_string(w >> 48) + ", dst " + std::to_string((w >> 36) & 0xfff) +
         ", tag " + std::to_string((w >> 32) & 0xf) + ", index " + std::to_string(w & 0xffffffffu) +
         ")";
}

// Compares words and names the first wrong one. `where` says which buffer.
inline void check_words(const std::vector<uint64_t>& got, const std::vector<uint64_t>& want,
                        const std::string& where) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      FAIL_CHECK(where << " word " << i << ": got " << describe_word(got[i]) << ", want "
                       << describe_word(want[i]));
      return;
    }
}

inline std::vector<uint64_t> read_words(Machine& m, GlobalAddr a, uint64_t words) {
  std::vector<uint64_t> v(words);
  if (words > 0) REQUIRE(m.memory->read(a, v.data(), words * 8).ok());
  return v;
}

inline ic::CollectiveResult ok_result(const StatusOr<ic::CollectiveResult>& r) {
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  CHECK(r.value().modelled_ns >= 0);
  return r.value();
}

}  // namespace colltest
