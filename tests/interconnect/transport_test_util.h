// Helpers for the transport tests: a simulated supernode with its memory layer and a
// transport, endpoints, buffers, and data that encodes where it came from.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"
#include "interconnect/transport.h"
#include "memory/global_memory.h"

namespace ictest {

using namespace moe;
using ic::Endpoint;
using mem::GlobalAddr;

// A driver, its global memory and one transport, built in that order (and destroyed in the
// reverse order).
struct Machine {
  std::unique_ptr<dev::Driver> driver;
  std::unique_ptr<mem::GlobalMemory> memory;
  std::unique_ptr<ic::Transport> transport;

  explicit Machine(const char* preset = "n8", uint64_t seed = 1,
                   const ic::TransportOptions& options = {},
                   uint64_t symmetric_heap_bytes = uint64_t{64} << 20) {
    auto topo = sim::make_preset(preset);
    REQUIRE(topo.ok());
    sim::SimConfig cfg;
    cfg.seed = seed;
    auto drv = sim::create_driver(std::move(topo).value(), cfg);
    REQUIRE_MESSAGE(drv.ok(), drv.status().to_string());
    driver = std::move(drv).value();
    mem::MemConfig mc;
    mc.segment_bytes = uint64_t{16} << 20;
    mc.symmetric_heap_bytes = symmetric_heap_bytes;
    auto m = mem::GlobalMemory::create(driver.get(), mc);
    REQUIRE_MESSAGE(m.ok(), m.status().to_string());
    memory = std::move(m).value();
    auto t = ic::open_transport(*driver, *memory, options);
    REQUIRE_MESSAGE(t.ok(), t.status().to_string());
    transport = std::move(t).value();
  }
  ~Machine() {
    transport.reset();
    memory.reset();
    driver.reset();
  }

  std::unique_ptr<Endpoint> endpoint(dev::NpuId npu, ic::Mode mode = ic::Mode::kFunctional,
                                     ic::Issuer issuer = ic::Issuer::kDevice,
                                     int64_t wait_timeout_ns = -1) {
    ic::EndpointConfig c;
    c.npu = npu;
    c.mode = mode;
    c.issuer = issuer;
    c.wait_timeout_wall_ns = wait_timeout_ns;
    auto ep = transport->open_endpoint(c);
    REQUIRE_MESSAGE(ep.ok(), ep.status().to_string());
    return std::move(ep).value();
  }

  // `bytes` on one NPU, zeroed.
  GlobalAddr alloc(dev::NpuId npu, uint64_t bytes, uint64_t alignment = 0) {
    auto a = memory->allocate_local(npu, bytes, alignment);
    REQUIRE_MESSAGE(a.ok(), a.status().to_string());
    std::vector<uint8_t> zero(bytes, 0);
    REQUIRE(memory->write(a.value(), zero.data(), bytes).ok());
    return a.value();
  }

  std::vector<uint8_t> read(GlobalAddr a, uint64_t bytes) {
    std::vector<uint8_t> v(bytes);
    REQUIRE(memory->read(a, v.data(), bytes).ok());
    return v;
  }
  void write(GlobalAddr a, const std::vector<uint8_t>& v) {
    REQUIRE(memory->write(a, v.data(), v.size()).ok());
  }
  uint64_t read_word(GlobalAddr a) {
    uint64_t v = 0;
    REQUIRE(memory->read(a, &v, 8).ok());
    return v;
  }
};

// Byte i of the object tagged `tag`: a mix of both, so a byte from the wrong object or offset
// is caught.
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

// Runs `fn` once for every transport implementation that can serve the machine (the
// conformance suite: each test below holds for every transport).
inline void for_each_transport(const char* preset,
                               const std::function<void(Machine&)>& fn, uint64_t seed = 1) {
  for (const std::string& name : ic::transport_names()) {
    CAPTURE(name);
    ic::TransportOptions o;
    o.name = name;
    Machine m(preset, seed, o);
    fn(m);
  }
}

}  // namespace ictest
