// All-to-all, all-to-all-v and all-gather: direct exchanges (collectives.h, "Algorithms").
//
// Each is one round-based exchange (Call::exchange): in round r member s puts its chunk for
// member (s + r) mod n straight into that member's receive buffer and signals its arrival
// counter; round 0 is the member's copy to itself (an HBM-to-HBM copy on its NPU). On a
// switched fabric without oversubscription every member then sends and receives at its own
// link rate, so the modelled time approaches (n - 1) x chunk / link bandwidth.
#include "interconnect/collectives_internal.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

StatusOr<CollectiveResult> Communicator::all_to_all(std::span<const GlobalAddr> send,
                                                    std::span<const GlobalAddr> recv,
                                                    uint64_t bytes_per_peer) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "all_to_all";
  MOE_TRY(check_size(what, "bytes_per_peer", bytes_per_peer, n));
  const uint64_t total = bytes_per_peer * n;
  auto all = [&](uint32_t) { return total; };
  MOE_TRY(check_buffers(st, what, "send", send, all, 1));
  MOE_TRY(check_buffers(st, what, "recv", recv, all, 1));
  Call call(st, what);
  MOE_TRY(call.begin());
  MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
    if (bytes_per_peer > 0)
      msg->pieces.push_back({send[s] + d * bytes_per_peer, recv[d] + s * bytes_per_peer,
                             bytes_per_peer});
    return true;
  }));
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

StatusOr<CollectiveResult> Communicator::all_to_all_v(const AllToAllVArgs& a) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "all_to_all_v";
  const size_t nn = size_t{n} * n;
  MOE_TRY(check_count(st, what, "send_bytes", a.send_bytes.size(), nn));
  MOE_TRY(check_count(st, what, "send_offsets", a.send_offsets.size(), nn));
  MOE_TRY(check_count(st, what, "recv_bytes", a.recv_bytes.size(), nn));
  MOE_TRY(check_count(st, what, "recv_offsets", a.recv_offsets.size(), nn));
  for (size_t i = 0; i < nn; ++i) {  // offset + bytes must not wrap
    MOE_TRY(check_size(what, "send_offsets", a.send_offsets[i], 2));
    MOE_TRY(check_size(what, "send_bytes", a.send_bytes[i], 2));
    MOE_TRY(check_size(what, "recv_offsets", a.recv_offsets[i], 2));
    MOE_TRY(check_size(what, "recv_bytes", a.recv_bytes[i], 2));
  }
  for (uint32_t s = 0; s < n; ++s)
    for (uint32_t d = 0; d < n; ++d)
      if (a.send_bytes[size_t{s} * n + d] != a.recv_bytes[size_t{d} * n + s])
        return make_error(StatusCode::kInvalidArgument,
                          "%s: member %u sends %llu bytes to member %u, which expects %llu "
                          "(send_bytes[%zu] != recv_bytes[%zu])",
                          what, s,
                          static_cast<unsigned long long>(a.send_bytes[size_t{s} * n + d]), d,
                          static_cast<unsigned long long>(a.recv_bytes[size_t{d} * n + s]),
                          size_t{s} * n + d, size_t{d} * n + s);
  // Each buffer must reach its furthest chunk.
  auto extent = [&](std::span<const uint64_t> bytes, std::span<const uint64_t> offsets,
                    uint32_t r) {
    uint64_t end = 0;
    for (uint32_t k = 0; k < n; ++k) {
      const size_t i = size_t{r} * n + k;
      if (bytes[i] > 0) end = std::max(end, offsets[i] + bytes[i]);
    }
    return end;
  };
  MOE_TRY(check_buffers(st, what, "send", a.send,
                        [&](uint32_t r) { return extent(a.send_bytes, a.send_offsets, r); }, 1));
  MOE_TRY(check_buffers(st, what, "recv", a.recv,
                        [&](uint32_t r) { return extent(a.recv_bytes, a.recv_offsets, r); }, 1));
  Call call(st, what);
  MOE_TRY(call.begin());
  MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
    const uint64_t bytes = a.send_bytes[size_t{s} * n + d];
    if (bytes > 0)
      msg->pieces.push_back({a.send[s] + a.send_offsets[size_t{s} * n + d],
                             a.recv[d] + a.recv_offsets[size_t{d} * n + s], bytes});
    return true;  // an empty chunk still says "nothing from me"
  }));
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

StatusOr<CollectiveResult> Communicator::all_gather(std::span<const GlobalAddr> send,
                                                    std::span<const GlobalAddr> recv,
                                                    uint64_t bytes_per_member) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "all_gather";
  MOE_TRY(check_size(what, "bytes_per_member", bytes_per_member, n));
  MOE_TRY(check_buffers(st, what, "send", send, [&](uint32_t) { return bytes_per_member; }, 1));
  MOE_TRY(check_buffers(st, what, "recv", recv,
                        [&](uint32_t) { return bytes_per_member * n; }, 1));
  Call call(st, what);
  MOE_TRY(call.begin());
  MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
    if (bytes_per_member > 0)
      msg->pieces.push_back({send[s], recv[d] + s * bytes_per_member, bytes_per_member});
    return true;
  }));
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

StatusOr<CollectiveResult> Communicator::broadcast(std::span<const GlobalAddr> buffers,
                                                   uint64_t bytes, uint32_t root) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "broadcast";
  if (root >= n)
    return make_error(StatusCode::kInvalidArgument, "%s: root %u is not a rank of the group of %u",
                      what, root, n);
  MOE_TRY(check_size(what, "bytes", bytes, n));
  MOE_TRY(check_buffers(st, what, "buffers", buffers, [&](uint32_t) { return bytes; }, 1));
  Call call(st, what);
  MOE_TRY(call.begin());
  if (bytes <= st.config.broadcast_direct_max_bytes || n <= 2) {
    MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
      if (s != root || d == root) return false;
      if (bytes > 0) msg->pieces.push_back({buffers[root], buffers[d], bytes});
      return true;
    }));
  } else {
    // Scatter: chunk i (balanced split) from the root to member i...
    auto begin = [&](uint32_t i) { return bytes * i / n; };
    auto len = [&](uint32_t i) { return begin(i + 1) - begin(i); };
    MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
      if (s != root || d == root) return false;
      if (len(d) > 0) msg->pieces.push_back({buffers[root] + begin(d), buffers[d] + begin(d), len(d)});
      return true;
    }));
    // ...then every member passes its chunk to the others (the root has them all). A
    // member's chunk leaves once it has arrived there.
    for (uint32_t i = 0; i < n; ++i)
      if (i != root) st.m[i].tx->advance_to(st.m[i].rx->now());
    MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
      if (s == d || d == root) return false;
      if (len(s) > 0) msg->pieces.push_back({buffers[s] + begin(s), buffers[d] + begin(s), len(s)});
      return true;
    }));
  }
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

}  // namespace moe::ic
