// Helpers shared by the firmware-sim tests: a driver on a preset, committed and mapped HBM
// buffers, and running a batch of descriptors to completion on one queue.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "firmware-sim/presets.h"
#include "firmware-sim/sim_driver.h"

namespace simtest {

using namespace moe;

inline std::unique_ptr<dev::Driver> make_driver(const char* preset, uint64_t seed = 1) {
  auto topo = sim::make_preset(preset);
  REQUIRE(topo.ok());
  sim::SimConfig cfg;
  cfg.seed = seed;
  auto drv = sim::create_driver(std::move(topo).value(), cfg);
  REQUIRE(drv.ok());
  return std::move(drv).value();
}

// A committed, host-mapped HBM buffer on one NPU.
struct Buffer {
  dev::HbmRange range;
  uint8_t* host = nullptr;
  dev::DevicePtr at(uint64_t offset = 0) const { return {range.npu, range.offset + offset}; }
};

inline Buffer make_buffer(dev::Driver& drv, dev::NpuId npu, uint64_t bytes) {
  Buffer b;
  const uint64_t rounded = (bytes + 4095) / 4096 * 4096;
  REQUIRE(drv.hbm_reserve(npu, rounded, 4096, &b.range).ok());
  REQUIRE(drv.hbm_commit(npu, b.range.offset, rounded).ok());
  void* p = nullptr;
  REQUIRE(drv.hbm_map_host(npu, b.range.offset, rounded, &p).ok());
  b.host = static_cast<uint8_t*>(p);
  return b;
}

inline dev::QueueId make_queue(dev::Driver& drv, dev::NpuId npu, dev::EngineKind engine,
                               uint32_t die = 0, uint32_t depth = 0) {
  dev::QueueId q;
  REQUIRE(drv.queue_create(npu, die, engine, depth, &q).ok());
  return q;
}

// Submits, rings and polls every completion (they are all posted by the doorbell).
inline std::vector<dev::Completion> run(dev::Driver& drv, dev::QueueId q,
                                        const std::vector<dev::WorkDescriptor>& work) {
  REQUIRE(drv.queue_submit(q, work.data(), work.size()).ok());
  REQUIRE(drv.doorbell_ring(q).ok());
  std::vector<dev::Completion> out(work.size());
  size_t n = 0;
  REQUIRE(drv.completions_poll(q, out.data(), out.size(), &n).ok());
  REQUIRE(n == work.size());
  return out;
}

inline dev::Completion run_one(dev::Driver& drv, dev::QueueId q, const dev::WorkDescriptor& w) {
  return run(drv, q, {w})[0];
}

inline dev::WorkDescriptor transfer(dev::DevicePtr src, dev::DevicePtr dst, uint64_t bytes,
                                    uint32_t plane_mask = 0xffffffffu, bool move_payload = true,
                                    double not_before_ns = 0, uint64_t tag = 0) {
  dev::WorkDescriptor w;
  w.kind = dev::WorkKind::kTransfer;
  w.tag = tag;
  w.not_before = ModelTime{not_before_ns};
  w.transfer.src = src;
  w.transfer.dst = dst;
  w.transfer.bytes = bytes;
  w.transfer.plane_mask = plane_mask;
  w.transfer.move_payload = move_payload;
  return w;
}

inline dev::WorkDescriptor atomic(dev::AtomicOp op, dev::DevicePtr dst, uint64_t operand,
                                  uint64_t compare = 0, dev::PlaneId plane = 0) {
  dev::WorkDescriptor w;
  w.kind = dev::WorkKind::kAtomic;
  w.atomic.op = op;
  w.atomic.dst = dst;
  w.atomic.operand = operand;
  w.atomic.compare = compare;
  w.atomic.plane = plane;
  return w;
}

// Wire bytes of a transfer of `bytes` carried as one flow (all packets on one plane).
inline double wire_bytes(const dev::Topology& t, uint64_t bytes) {
  const uint64_t packets = (bytes + t.packet_bytes - 1) / t.packet_bytes;
  return static_cast<double>(bytes + packets * t.packet_header_bytes);
}

inline void fill_pattern(uint8_t* p, uint64_t bytes, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (uint64_t i = 0; i < bytes; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = static_cast<uint8_t>(x >> 24);
  }
}

}  // namespace simtest
