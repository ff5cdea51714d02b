// HbmBlock: allocation, the host-contiguity check, release.
#include "models/engine/hbm_block.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "runtime/base/check.h"

#include "runtime/base/log.h"

namespace moe::models {

HbmBlock::~HbmBlock() { release(); }

HbmBlock::HbmBlock(HbmBlock&& other) noexcept
    : memory_(std::exchange(other.memory_, nullptr)),
      addr_(other.addr_),
      bytes_(other.bytes_),
      npu_(other.npu_),
      host_(std::exchange(other.host_, nullptr)),
      own_page_(other.own_page_) {}

HbmBlock& HbmBlock::operator=(HbmBlock&& other) noexcept {
  if (this != &other) {
    release();
    memory_ = std::exchange(other.memory_, nullptr);
    addr_ = other.addr_;
    bytes_ = other.bytes_;
    npu_ = other.npu_;
    host_ = std::exchange(other.host_, nullptr);
    own_page_ = other.own_page_;
  }
  return *this;
}

void HbmBlock::release() {
  if (memory_ == nullptr) return;
  Status s = memory_->free(addr_);
  if (!s.ok()) MOE_WARN("hbm block on NPU %u: free failed: %s", npu_, s.to_string().c_str());
  memory_ = nullptr;
  host_ = nullptr;
}

StatusOr<HbmBlock> HbmBlock::allocate(mem::GlobalMemory& memory, dev::NpuId npu, uint64_t bytes,
                                      std::string_view what) {
  if (bytes == 0 || bytes > memory.page_bytes())
    return make_error(StatusCode::kInvalidArgument,
                      "%.*s on NPU %u: %llu bytes; a block a kernel body reads must be 1 byte to "
                      "one global page (%llu bytes)",
                      static_cast<int>(what.size()), what.data(), npu,
                      static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(memory.page_bytes()));
  const uint64_t alignment = std::max<uint64_t>(64, std::bit_ceil(bytes));
  auto addr = memory.allocate_local(npu, bytes, alignment);
  if (!addr.ok()) return Status(addr.status()).with_context(what);
  HbmBlock block;
  block.memory_ = &memory;
  block.addr_ = addr.value();
  block.bytes_ = bytes;
  block.npu_ = npu;
  block.host_ = memory.translate_host(block.addr_);
  MOE_ASSERT(block.host_ != nullptr && memory.contiguous_bytes(block.addr_) >= bytes);
  return block;
}

StatusOr<HbmBlock> HbmBlock::allocate_own_page(mem::GlobalMemory& memory, dev::NpuId npu,
                                               uint64_t bytes, std::string_view what) {
  if (bytes == 0 || bytes > memory.page_bytes())
    return make_error(StatusCode::kInvalidArgument,
                      "%.*s on NPU %u: %llu bytes; an own-page block must be 1 byte to one "
                      "global page (%llu bytes)",
                      static_cast<int>(what.size()), what.data(), npu,
                      static_cast<unsigned long long>(bytes),
                      static_cast<unsigned long long>(memory.page_bytes()));
  mem::AllocRequest request;
  request.policy = mem::Policy::kLocal;
  request.bytes = bytes;
  request.npu = npu;
  request.own_pages = true;
  auto allocation = memory.allocate(request);
  if (!allocation.ok()) return Status(allocation.status()).with_context(what);
  HbmBlock block;
  block.memory_ = &memory;
  block.addr_ = allocation.value().base;
  block.bytes_ = bytes;
  block.npu_ = npu;
  block.host_ = memory.translate_host(block.addr_);
  block.own_page_ = true;
  MOE_ASSERT(block.host_ != nullptr && memory.contiguous_bytes(block.addr_) >= bytes);
  return block;
}

Status HbmBlock::migrate_to(dev::NpuId target, mem::MigrateResult* result) {
  if (!own_page_ || memory_ == nullptr)
    return make_error(StatusCode::kFailedPrecondition,
                      "hbm block on NPU %u: only an own-page block can migrate (its page holds "
                      "other blocks)", npu_);
  MOE_TRY(memory_->migrate(addr_, bytes_, target, result));
  npu_ = target;
  host_ = memory_->translate_host(addr_);
  MOE_ASSERT(host_ != nullptr);
  return ok_status();
}

}  // namespace moe::models
