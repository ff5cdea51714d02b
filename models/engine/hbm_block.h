// HbmBlock: one block of an NPU's HBM that a kernel body reads and writes through the host.
//
// The engine keeps what lives on an NPU (weights, KV-cache pools) in that NPU's HBM, allocated
// from the global memory (memory/global_memory.h). In functional mode a kernel body runs on a
// host core and reaches HBM through the driver's host mapping (GlobalMemory::translate_host),
// which is contiguous only inside one global page (2 MiB): consecutive global pages map to
// whatever device frames the allocator chose. So a block is at most one page, and is aligned
// to the power of two at or above its size, which keeps it inside one page. Larger objects
// are made of several blocks (a KV pool of page-sized chunks; weights one block per tensor or
// expert).
//
// Ownership: move-only; frees the block on destruction (errors are logged). The GlobalMemory
// outlives the block. Thread-safety: a plain handle; the bytes are the caller's business.
#pragma once

#include <cstdint>
#include <string_view>

#include "memory/global_addr.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/base/status.h"

namespace moe::models {

class HbmBlock {
 public:
  HbmBlock() = default;
  ~HbmBlock();
  HbmBlock(HbmBlock&& other) noexcept;
  HbmBlock& operator=(HbmBlock&& other) noexcept;
  HbmBlock(const HbmBlock&) = delete;
  HbmBlock& operator=(const HbmBlock&) = delete;

  // `bytes` (> 0, <= memory.page_bytes()) on `npu`, not zeroed. kInvalidArgument naming the
  // bytes for a block over one page (`what` names the object in the message); kOutOfMemory
  // from the allocator (naming the NPU and the bytes).
  static StatusOr<HbmBlock> allocate(mem::GlobalMemory& memory, dev::NpuId npu, uint64_t bytes,
                                     std::string_view what = "hbm block");
  // As allocate(), on a page of its own that no other allocation shares
  // (AllocRequest::own_pages), so migrate_to() moves exactly this block (expert weights that
  // the balancer moves between NPUs). Holds a whole page of HBM.
  static StatusOr<HbmBlock> allocate_own_page(mem::GlobalMemory& memory, dev::NpuId npu,
                                              uint64_t bytes, std::string_view what = "hbm block");

  // Moves the block's page to `target` through the memory layer's remapping
  // (GlobalMemory::migrate): the global address stays, npu() and host() follow the page.
  // Precondition: an own-page block (else neighbours would move too: kFailedPrecondition),
  // nobody writes it meanwhile. Errors from migrate (kOutOfMemory on the target: the block
  // has not moved).
  Status migrate_to(dev::NpuId target, mem::MigrateResult* result = nullptr);
  bool own_page() const { return own_page_; }

  mem::GlobalAddr addr() const { return addr_; }
  uint64_t bytes() const { return bytes_; }
  dev::NpuId npu() const { return npu_; }
  // The block through the host mapping (functional mode only: a timing-mode runtime never
  // writes HBM, but the mapping exists either way).
  void* host() const { return host_; }
  template <typename T>
  T* as() const { return static_cast<T*>(host_); }
  bool valid() const { return memory_ != nullptr; }

 private:
  void release();
  mem::GlobalMemory* memory_ = nullptr;
  mem::GlobalAddr addr_;
  uint64_t bytes_ = 0;
  dev::NpuId npu_ = 0;
  void* host_ = nullptr;
  bool own_page_ = false;
};

}  // namespace moe::models
