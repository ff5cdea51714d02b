// transfer_sequence_kv: block addresses from both engines, merged into runs, copied by one
// fabric stream. Only the blocks that hold the source's positions move (a reserved but
// unwritten tail stays behind); the destination reserves its own room first, so a transfer
// either completes or changes nothing but the destination's reservation.
#include "models/serving/kv_transfer.h"

#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"

namespace moe::models::serving {

Status check_kv_compatible(const Engine& src, const Engine& dst) {
  const ModelConfig& a = src.config();
  const ModelConfig& b = dst.config();
  const char* what = nullptr;
  if (a.num_layers != b.num_layers) what = "layers";
  else if (a.num_kv_heads != b.num_kv_heads) what = "KV heads";
  else if (a.head_dim != b.head_dim) what = "head dim";
  else if (src.kv_block_positions() != dst.kv_block_positions()) what = "KV block positions";
  if (what != nullptr)
    return make_error(StatusCode::kInvalidArgument,
                      "KV transfer from '%s' to '%s': their %s differ (layers %u/%u, KV heads "
                      "%u/%u, head dim %u/%u, block positions %u/%u)",
                      a.name.c_str(), b.name.c_str(), what, a.num_layers, b.num_layers,
                      a.num_kv_heads, b.num_kv_heads, a.head_dim, b.head_dim,
                      src.kv_block_positions(), dst.kv_block_positions());
  return ok_status();
}

Status transfer_sequence_kv(Engine& src, SeqId src_seq, Engine& dst, SeqId dst_seq,
                            rt::Stream& fabric, KvTransferStats* stats) {
  const int64_t wall0 = wall_now_ns();
  if (fabric.kind() != rt::StreamKind::kFabric)
    return make_error(StatusCode::kInvalidArgument, "KV transfer needs a fabric stream; NPU %u's "
                      "is a %s stream", fabric.npu(), rt::stream_kind_name(fabric.kind()));
  MOE_TRY(check_kv_compatible(src, dst));
  MOE_TRY_ASSIGN(SequenceKvBlocks from, src.sequence_kv_blocks(src_seq));
  MOE_TRY_ASSIGN(uint32_t dst_length, dst.sequence_length(dst_seq));
  if (dst_length != 0)
    return make_error(StatusCode::kFailedPrecondition, "KV transfer: destination sequence %u "
                      "already holds %u positions", dst_seq.index, dst_length);
  if (from.length == 0)
    return make_error(StatusCode::kFailedPrecondition, "KV transfer: source sequence %u is empty",
                      src_seq.index);
  MOE_TRY(dst.reserve_sequence(dst_seq, from.length));
  MOE_TRY_ASSIGN(SequenceKvBlocks to, dst.sequence_kv_blocks(dst_seq));
  if (to.dtype != from.dtype || to.block_bytes != from.block_bytes)
    return make_error(StatusCode::kInvalidArgument,
                      "KV transfer: the KV dtypes differ (blocks of %llu and %llu bytes)",
                      static_cast<unsigned long long>(from.block_bytes),
                      static_cast<unsigned long long>(to.block_bytes));
  const uint32_t used = (from.length + from.block_positions - 1) / from.block_positions;
  const uint64_t bb = from.block_bytes;

  const ModelTime ready = src.modelled_now();
  MOE_TRY(fabric.wait_until(ready));
  const ModelTime start = max(max(ready, fabric.modelled_time()), fabric.not_before());
  KvTransferStats st;
  // Runs: consecutive blocks whose source and destination are both contiguous.
  mem::GlobalAddr run_src, run_dst;
  uint64_t run_bytes = 0;
  auto flush = [&]() -> Status {
    if (run_bytes == 0) return ok_status();
    Status s = fabric.copy(run_dst, run_src, run_bytes);
    if (!s.ok()) return s.with_context(strformat("KV transfer of sequence %u (NPU %u -> %u)",
                                                 src_seq.index, from.npu, to.npu));
    ++st.copies;
    st.bytes += run_bytes;
    run_bytes = 0;
    return ok_status();
  };
  auto add = [&](mem::GlobalAddr s, mem::GlobalAddr d) -> Status {
    if (run_bytes > 0 && run_src + run_bytes == s && run_dst + run_bytes == d) {
      run_bytes += bb;
      return ok_status();
    }
    MOE_TRY(flush());
    run_src = s;
    run_dst = d;
    run_bytes = bb;
    return ok_status();
  };
  for (uint32_t l = 0; l < from.num_layers; ++l) {
    for (uint32_t i = 0; i < used; ++i)
      MOE_TRY(add(from.k[uint64_t{l} * from.num_blocks + i], to.k[uint64_t{l} * to.num_blocks + i]));
    for (uint32_t i = 0; i < used; ++i)
      MOE_TRY(add(from.v[uint64_t{l} * from.num_blocks + i], to.v[uint64_t{l} * to.num_blocks + i]));
  }
  MOE_TRY(flush());
  MOE_TRY(fabric.synchronize());
  MOE_TRY(dst.commit_imported_kv(dst_seq, from.length));
  st.modelled_ns = (fabric.modelled_time() - start).ns;
  st.wall_ns = wall_now_ns() - wall0;
  if (stats != nullptr) *stats = st;
  return ok_status();
}

}  // namespace moe::models::serving
