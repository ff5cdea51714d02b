// Internals shared by moe_dispatch.cpp and moe_dispatch_combine.cpp: the slot header's wire
// format and the engine that reaches into MoeBuffer's protocol state. Not a public API.
//
// Slot header (little-endian, header_bytes long, at the start of every slot):
//   0  u32 epoch        the dispatch that wrote it (a stale slot is caught)
//   4  u32 src_rank
//   8  u32 src_token
//   12 u32 combine_row  where the token's partial goes in its home's combine-receive rows
//   16 f32 scale        INT8 dequantisation scale (1 for BF16)
//   20 u16 num_hits     hits of the token on this rank (>= 1)
//   22 u16 magic        kSlotMagic
//   24 hits[num_hits]   {u16 local_expert, u16 topk_slot, f32 weight}
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "interconnect/moe_buffer.h"
#include "interconnect/moe_dispatch.h"

namespace moe::ic {

inline constexpr uint16_t kSlotMagic = 0x4d45;  // "ME"
inline constexpr uint64_t kHitBytes = 8;
inline constexpr uint64_t kHitsOffset = 24;

struct SlotHeader {
  uint32_t epoch = 0;
  uint32_t src_rank = 0;
  uint32_t src_token = 0;
  uint32_t combine_row = 0;
  float scale = 1.0f;
  uint16_t num_hits = 0;
  uint16_t magic = 0;
};

inline void store_header(uint8_t* at, const SlotHeader& h) {
  std::memcpy(at + 0, &h.epoch, 4);
  std::memcpy(at + 4, &h.src_rank, 4);
  std::memcpy(at + 8, &h.src_token, 4);
  std::memcpy(at + 12, &h.combine_row, 4);
  std::memcpy(at + 16, &h.scale, 4);
  std::memcpy(at + 20, &h.num_hits, 2);
  std::memcpy(at + 22, &h.magic, 2);
}
inline SlotHeader load_header(const uint8_t* at) {
  SlotHeader h;
  std::memcpy(&h.epoch, at + 0, 4);
  std::memcpy(&h.src_rank, at + 4, 4);
  std::memcpy(&h.src_token, at + 8, 4);
  std::memcpy(&h.combine_row, at + 12, 4);
  std::memcpy(&h.scale, at + 16, 4);
  std::memcpy(&h.num_hits, at + 20, 2);
  std::memcpy(&h.magic, at + 22, 2);
  return h;
}
inline void store_hit(uint8_t* header, uint32_t i, uint16_t local_expert, uint16_t topk_slot,
                      float weight) {
  uint8_t* at = header + kHitsOffset + i * kHitBytes;
  std::memcpy(at, &local_expert, 2);
  std::memcpy(at + 2, &topk_slot, 2);
  std::memcpy(at + 4, &weight, 4);
}
inline void load_hit(const uint8_t* header, uint32_t i, uint16_t* local_expert, uint16_t* topk_slot,
                     float* weight) {
  const uint8_t* at = header + kHitsOffset + i * kHitBytes;
  std::memcpy(local_expert, at, 2);
  std::memcpy(topk_slot, at + 2, 2);
  std::memcpy(weight, at + 4, 4);
}

// Modelled time of a local pass over `bytes` of HBM by one rank (its share of its NPU's
// bandwidth), ns.
double local_pass_ns(const MoeBuffer& buffer, double bytes);

// A flag to set once the run it announces has gone out.
struct PendingSignal {
  double order_ns = 0;   // when its data should land (signals go out in this order per rank)
  uint32_t rank = 0;     // the issuing rank
  uint32_t context = 0;  // and its context (the one that put the data)
  uint32_t dst = 0;      // the rank the flag is on
  uint64_t value = 0;
};

// Issues every pending signal (SignalOp::kSet of p.value at flag(p)) from its context,
// per rank in the order its data should land. Why batched after the puts, and why in that
// order: the transport starts a signal when its data has landed, and the fabric engine of
// an NPU issues descriptors in order, so a signal holds every later operation of its NPU
// until its data arrived. A put_signal per destination would stall the reservations and
// data of the next destinations behind it; signals sent after all the puts, earliest
// landing first, each wait only for data already in flight.
// A failure is recorded in the buffer (DispatchEngine::fail) and returned.
Status issue_signals(MoeBuffer& b, std::vector<PendingSignal>& pending,
                     const std::function<GlobalAddr(const PendingSignal&)>& flag);

// A fluid estimate of when each put lands, to order the signals: every NPU's egress and
// ingress drain at its rated fabric bandwidth, in the order puts are issued (transfers
// inside one NPU are HBM copies). Only an ordering heuristic: modelled times come from the
// transport.
class LandingEstimator {
 public:
  explicit LandingEstimator(const MoeBuffer& b);
  // A put of `bytes` from rank src to rank dst issued at t_ns; returns its estimated landing.
  double on_put(uint32_t src, uint32_t dst, double t_ns, uint64_t bytes);

 private:
  const MoeBuffer& b_;
  std::vector<double> egress_free_, ingress_free_;  // per NPU id
  std::vector<double> gbps_;                        // per NPU id
  double hbm_gbps_ = 0;
};

// Access to MoeBuffer's protocol state (a friend of MoeBuffer).
struct DispatchEngine {
  static uint32_t& epoch(MoeBuffer& b) { return b.epoch_; }
  static uint32_t epoch(const MoeBuffer& b) { return b.epoch_; }
  static uint64_t& combine_seq(MoeBuffer& b) { return b.combine_seq_; }
  static std::vector<std::vector<uint8_t>>& shadow_headers(MoeBuffer& b) {
    return b.shadow_headers_;
  }
  // Records the error that leaves the buffer unusable; returns it.
  static Status fail(MoeBuffer& b, Status s) {
    if (b.failure_.ok()) b.failure_ = s;
    return s;
  }
  // OK, or the recorded failure with `what` for context.
  static Status usable(const MoeBuffer& b, const char* what);
  // The handle is the buffer's latest (kFailedPrecondition otherwise).
  static Status check_handle(const MoeBuffer& b, const DispatchHandle& h, const char* what);
};

}  // namespace moe::ic
