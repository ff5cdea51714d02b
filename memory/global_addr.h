// Global addresses and allocation requests: the vocabulary of the memory layer.
//
// A GlobalAddr is a 64-bit name for one byte of the supernode's HBM. It is not a device
// offset: the memory layer owns a global virtual space (MEM_VA_BITS bits) cut into global
// pages (MEM_PAGE_BYTES), and a page table maps each page to {NPU, device offset}. So a page
// can move to another NPU (migration) while every global address in it stays valid. Address
// 0 is null and never mapped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/device/topology.h"

namespace moe::mem {

// A strong 64-bit global address. Arithmetic is in bytes.
struct GlobalAddr {
  uint64_t value = 0;

  constexpr GlobalAddr() = default;
  constexpr explicit GlobalAddr(uint64_t v) : value(v) {}
  constexpr bool is_null() const { return value == 0; }
  constexpr explicit operator bool() const { return value != 0; }
  constexpr GlobalAddr operator+(uint64_t bytes) const { return GlobalAddr(value + bytes); }
  constexpr GlobalAddr& operator+=(uint64_t bytes) { value += bytes; return *this; }
  // Bytes from `other` to this address. Precondition: other <= *this.
  constexpr uint64_t operator-(GlobalAddr other) const { return value - other.value; }
  constexpr auto operator<=>(const GlobalAddr&) const = default;
};

// "0x00002a0000200000": for messages.
std::string to_string(GlobalAddr addr);

// Where the bytes of an allocation live.
enum class Policy : uint8_t {
  kLocal = 0,        // on one NPU
  kInterleaved = 1,  // consecutive grain-sized chunks round-robin over a set of NPUs
  kSymmetric = 2,    // one part per NPU of a group, at the same offset of each NPU's
                     // symmetric window (collective and dispatch buffers)
  kReplicated = 3,   // one logical object, a full copy on each NPU of a group
};
const char* policy_name(Policy policy);

struct AllocRequest {
  Policy policy = Policy::kLocal;
  uint64_t bytes = 0;      // > 0
  uint64_t alignment = 0;  // power of two; 0: the path's default (16 B small, the large grain,
                           // the page for page-granular policies)
  dev::NpuId npu = dev::kInvalidId;  // kLocal: the NPU
  std::vector<dev::NpuId> npus;      // other policies: the group, distinct NPUs, in order
  uint64_t grain_bytes = 0;          // kInterleaved: a multiple of the page; 0: one page
  // kLocal: give the allocation whole pages that no other allocation shares, so it can be
  // migrated without moving any neighbour (expert weights). Size rounds up to pages.
  bool own_pages = false;
};

// One NPU's share of an allocation.
struct AllocationPart {
  dev::NpuId npu = dev::kInvalidId;
  GlobalAddr addr;     // kLocal: the base; kSymmetric: this member's copy; kReplicated: this
                       // replica; kInterleaved: the first chunk placed on this NPU
  uint64_t bytes = 0;  // bytes of the allocation placed on this NPU
};

// What allocate() hands back. A plain value: copying it copies the description, not memory.
struct Allocation {
  GlobalAddr base;     // kSymmetric / kReplicated: parts[0].addr
  uint64_t bytes = 0;  // as asked
  Policy policy = Policy::kLocal;
  uint64_t grain_bytes = 0;       // kInterleaved
  uint64_t symmetric_offset = 0;  // kSymmetric: offset of every part inside its NPU's window
  std::vector<AllocationPart> parts;

  bool valid() const { return !base.is_null(); }
  // The part on `npu`, or nullptr.
  const AllocationPart* part_on(dev::NpuId npu) const {
    for (const auto& p : parts)
      if (p.npu == npu) return &p;
    return nullptr;
  }
};

}  // namespace moe::mem
