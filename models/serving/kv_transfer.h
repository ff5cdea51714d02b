// Moving a sequence's KV cache from one engine to another over the fabric (prefill/decode
// split: prompts run on one set of NPUs, decoding on another set of the same supernode).
//
// transfer_sequence_kv() reserves room for the source's positions in the destination
// sequence, copies every layer's K and V blocks that hold those positions from the source
// home's HBM to the destination home's HBM with one fabric stream (runtime/stream.h,
// StreamKind::kFabric; runs of blocks adjacent at both ends go as one copy), waits for
// them, and commits the destination's length. The copy starts on the modelled clock no
// earlier than the source engine's last launched work ends (Engine::modelled_now()); the
// modelled time of the transfer is the fabric stream's clock after the copies minus that
// start, charged by the simulator's fabric model (links, planes, latency).
//
// Preconditions: both engines run the same model with the same KV layout (block positions,
// dtype, heads, head dim, layers): kInvalidArgument naming the mismatch otherwise. The
// destination sequence is empty (kFailedPrecondition otherwise). kResourceExhausted (nothing
// changed) when the destination's pool lacks the blocks. The stream is a fabric stream of
// the destination's NPU or any other (a pull or a push cost the same on this fabric).
// Thread-safety: as the engines (one driving thread).
#pragma once

#include <cstdint>

#include "models/engine/engine.h"
#include "runtime/stream.h"

namespace moe::models::serving {

struct KvTransferStats {
  uint64_t bytes = 0;         // K and V bytes copied
  uint32_t copies = 0;        // fabric copies issued (after merging adjacent blocks)
  double modelled_ns = 0;     // from the source's last work to the copies' end
  int64_t wall_ns = 0;
};

// Checks that src's KV blocks can be copied into dst's: same layers, heads, head dim, block
// positions and dtype. kInvalidArgument naming the first difference.
Status check_kv_compatible(const Engine& src, const Engine& dst);

Status transfer_sequence_kv(Engine& src, SeqId src_seq, Engine& dst, SeqId dst_seq,
                            rt::Stream& fabric, KvTransferStats* stats = nullptr);

}  // namespace moe::models::serving
