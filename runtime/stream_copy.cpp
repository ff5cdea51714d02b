// Stream copies: host <-> HBM on a copy stream, global -> global on a fabric stream.
//
// A global range is cut where it crosses a page (consecutive pages may sit on different NPUs
// or far apart in one NPU's HBM); each piece becomes one descriptor. Everything is
// translated and checked before the first descriptor is submitted, so a refused copy
// submits nothing. Descriptors go through enqueue(): submitted now, or recorded while the
// stream is captured by a graph.
#include <algorithm>
#include <vector>

#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"

namespace moe::rt {
namespace {

struct Piece {
  dev::DevicePtr device;
  uint64_t offset = 0;  // from the start of the copy
  uint64_t bytes = 0;
};

// Cuts [addr, addr + bytes) at page boundaries. kInvalidArgument naming the first unmapped
// byte.
Status cut_range(const mem::GlobalMemory& memory, mem::GlobalAddr addr, uint64_t bytes,
                 const char* which, std::vector<Piece>* out) {
  out->clear();
  uint64_t done = 0;
  while (done < bytes) {
    const mem::GlobalAddr at{addr.value + done};
    Piece piece;
    if (!memory.translate(at, &piece.device))
      return make_error(StatusCode::kInvalidArgument,
                        "copy: %s byte %llu (global address 0x%llx) is not mapped", which,
                        static_cast<unsigned long long>(done),
                        static_cast<unsigned long long>(at.value));
    piece.offset = done;
    piece.bytes = std::min<uint64_t>(bytes - done, memory.contiguous_bytes(at));
    out->push_back(piece);
    done += piece.bytes;
  }
  return Status();
}

}  // namespace

Status Stream::enqueue(const dev::WorkDescriptor& work, std::string_view name) {
  if (capture_ != nullptr) {
    capture_->capture_work(capture_index_, work, name);
    return Status();
  }
  if (!error_.ok()) return error_;
  dev::WorkDescriptor ready = work;
  ready.not_before = not_before_;
  return submit(&ready, 1, &name);
}

Status Stream::host_copy(dev::CopyDirection direction, mem::GlobalAddr device, void* host,
                         uint64_t bytes) {
  const char* what =
      direction == dev::CopyDirection::kHostToDevice ? "copy_from_host" : "copy_to_host";
  MOE_TRY(require_kind(StreamKind::kCopy, what));
  if (bytes == 0) return Status();
  if (host == nullptr)
    return make_error(StatusCode::kInvalidArgument, "%s: null host pointer for %llu bytes", what,
                      static_cast<unsigned long long>(bytes));
  std::vector<Piece> pieces;
  MOE_TRY(cut_range(runtime_.memory(), device, bytes, "device", &pieces));
  for (const Piece& p : pieces)
    if (p.device.npu != npu_)
      return make_error(StatusCode::kInvalidArgument,
                        "%s: global address 0x%llx is on NPU %u; the copy stream of NPU %u "
                        "reaches only its own HBM (use NPU %u's copy stream)",
                        what, static_cast<unsigned long long>(device.value + p.offset),
                        p.device.npu, npu_, p.device.npu);
  for (const Piece& p : pieces) {
    dev::WorkDescriptor work;
    work.kind = dev::WorkKind::kHostCopy;
    work.host_copy.host = static_cast<char*>(host) + p.offset;
    work.host_copy.device = p.device;
    work.host_copy.bytes = p.bytes;
    work.host_copy.direction = direction;
    work.host_copy.move_payload = runtime_.functional();
    MOE_TRY(enqueue(work, what));
  }
  return Status();
}

Status Stream::copy_from_host(mem::GlobalAddr dst, const void* src, uint64_t bytes) {
  return host_copy(dev::CopyDirection::kHostToDevice, dst, const_cast<void*>(src), bytes);
}

Status Stream::copy_to_host(void* dst, mem::GlobalAddr src, uint64_t bytes) {
  return host_copy(dev::CopyDirection::kDeviceToHost, src, dst, bytes);
}

Status Stream::copy(mem::GlobalAddr dst, mem::GlobalAddr src, uint64_t bytes) {
  MOE_TRY(require_kind(StreamKind::kFabric, "copy"));
  if (bytes == 0) return Status();
  if (src.value < dst.value + bytes && dst.value < src.value + bytes)
    return make_error(StatusCode::kInvalidArgument,
                      "copy: source 0x%llx and destination 0x%llx overlap over %llu bytes",
                      static_cast<unsigned long long>(src.value),
                      static_cast<unsigned long long>(dst.value),
                      static_cast<unsigned long long>(bytes));
  std::vector<Piece> from, to;
  MOE_TRY(cut_range(runtime_.memory(), src, bytes, "source", &from));
  MOE_TRY(cut_range(runtime_.memory(), dst, bytes, "destination", &to));
  // Walk both cuttings together: a descriptor per stretch contiguous on both sides.
  size_t i = 0, j = 0;
  uint64_t done = 0;
  while (done < bytes) {
    const uint64_t in_from = from[i].offset + from[i].bytes - done;
    const uint64_t in_to = to[j].offset + to[j].bytes - done;
    const uint64_t n = std::min(in_from, in_to);
    dev::WorkDescriptor work;
    work.kind = dev::WorkKind::kTransfer;
    work.transfer.src = {from[i].device.npu, from[i].device.offset + (done - from[i].offset)};
    work.transfer.dst = {to[j].device.npu, to[j].device.offset + (done - to[j].offset)};
    work.transfer.bytes = n;
    work.transfer.move_payload = runtime_.functional();
    MOE_TRY(enqueue(work, "copy"));
    done += n;
    if (n == in_from) ++i;
    if (n == in_to) ++j;
  }
  return Status();
}

}  // namespace moe::rt
