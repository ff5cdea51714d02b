// Helpers for the memory layer's tests: a simulated driver with a chosen HBM capacity per
// NPU, and small memory configs so that limits, segments and out-of-memory are reached fast.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "memory/global_memory.h"

namespace moe::mem::testing {

inline std::unique_ptr<dev::Driver> make_driver(const char* preset, uint64_t capacity_bytes) {
  auto topo = sim::make_preset(preset);
  REQUIRE(topo.ok());
  dev::Topology t = std::move(topo).value();
  t.hbm.capacity_bytes = capacity_bytes;
  auto drv = sim::create_driver(std::move(t));
  REQUIRE_MESSAGE(drv.ok(), drv.status().to_string());
  return std::move(drv).value();
}

// 2 MiB pages (the default), 16 MiB segments, nothing retained beyond one segment.
inline MemConfig small_config() {
  MemConfig c;
  c.page_bytes = uint64_t{2} << 20;
  c.segment_bytes = uint64_t{16} << 20;
  c.symmetric_heap_bytes = uint64_t{256} << 20;
  c.retain_segments = 1;
  return c;
}

inline std::unique_ptr<GlobalMemory> make_memory(dev::Driver* driver, const MemConfig& config) {
  auto m = GlobalMemory::create(driver, config);
  REQUIRE_MESSAGE(m.ok(), m.status().to_string());
  return std::move(m).value();
}

// Bytes that encode where they belong: byte i of the object tagged `tag` is a mix of both,
// so a byte read from the wrong place (another object, another offset) is caught.
inline uint8_t pattern_byte(uint64_t tag, uint64_t i) {
  uint64_t x = (tag * 0x9E3779B97F4A7C15ull) ^ (i * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 29;
  return static_cast<uint8_t>(x ^ (x >> 17));
}
inline std::vector<uint8_t> pattern(uint64_t tag, uint64_t bytes) {
  std::vector<uint8_t> v(bytes);
  for (uint64_t i = 0; i < bytes; ++i) v[i] = pattern_byte(tag, i);
  return v;
}
// Index of the first byte that differs from the pattern, or bytes when none.
inline uint64_t first_mismatch(const uint8_t* data, uint64_t tag, uint64_t bytes, uint64_t start = 0) {
  for (uint64_t i = 0; i < bytes; ++i)
    if (data[i] != pattern_byte(tag, start + i)) return i;
  return bytes;
}

}  // namespace moe::mem::testing
