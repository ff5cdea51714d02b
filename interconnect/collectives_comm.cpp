// The communicator: members, endpoints, symmetric scratch, and the machinery every
// collective shares (Call and its round-based exchange, buffer validation, barrier).
//
// Design: a call aligns each member's timelines (tx, rx, relay, vector cores) at the
// member's latest clock, then runs phases of messages. A message is a few puts, and later
// a signal adding 1 to the receiver's arrival counter (following the puts); the receiver
// waits for every increment in turn. A phase issues all its puts first (in round order),
// flushes what the transport coalesced, then issues the signals a round at a time: each
// counter gets at most one increment per round, and waiting for exactly that increment
// makes the transport's signal record report that message's visibility time
// (signal_table.h), so the receiver's clock becomes the running maximum of its arrivals
// whatever order the simulator executed them in. The counters only grow (host-side
// `*_seen` says which value to wait for next), so no reset is needed between calls and
// flags are never raced.
// Invariant: after a successful call, every counter equals its *_seen value.
#include <algorithm>
#include <cstring>

#include "interconnect/collectives_internal.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

// ---- CommState ----

double CommState::signal_latency_ns(uint32_t a, uint32_t b) const {
  const dev::NpuId pa = members[a].npu, pb = members[b].npu;
  if (pa == pb) return 0;
  const dev::LinkId la = topology.link_of(pa, 0), lb = topology.link_of(pb, 0);
  double ns = 0;
  if (la != dev::kInvalidId) ns += topology.links[la].latency_ns;
  if (lb != dev::kInvalidId) ns += topology.links[lb].latency_ns;
  if (node_of[a] != node_of[b]) ns += uplink_latency_ns[node_of[a]] + uplink_latency_ns[node_of[b]];
  return ns;
}

double CommState::vector_cost_ns(uint64_t bytes) const {
  const double gbps = topology.hbm.bandwidth_gbps;  // GB/s == bytes per ns
  return gbps > 0 ? static_cast<double>(bytes) / gbps : 0.0;
}

double CommState::member_time_ns(uint32_t rank) const {
  const MemberState& s = m[rank];
  double t = std::max({s.tx->now().ns, s.rx->now().ns, s.vector_ns});
  if (s.relay) t = std::max(t, s.relay->now().ns);
  return t;
}

void CommState::advance_member(uint32_t rank, double t_ns) {
  MemberState& s = m[rank];
  s.tx->advance_to(ModelTime{t_ns});
  s.rx->advance_to(ModelTime{t_ns});
  if (s.relay) s.relay->advance_to(ModelTime{t_ns});
  s.vector_ns = std::max(s.vector_ns, t_ns);
}

Status CommState::open_relays() {
  for (uint32_t r = 0; r < size(); ++r) {
    if (m[r].relay) continue;
    EndpointConfig c;
    c.npu = members[r].npu;
    c.mode = config.mode;
    c.issuer = config.issuer;
    c.wait_timeout_wall_ns = config.wait_timeout_wall_ns;
    MOE_TRY_ASSIGN(m[r].relay, transport.open_endpoint(c));
    m[r].relay->advance_to(ModelTime{member_time_ns(r)});
  }
  return ok_status();
}

// ---- Call ----

Call::Call(CommState& state, const char* name) : st_(state), name_(name) {}

Status Call::begin() {
  if (st_.broken)
    return make_error(StatusCode::kFailedPrecondition,
                      "%s: the communicator is broken by an earlier transport failure; "
                      "create a new one",
                      name_);
  wall_start_ = wall_now_ns();
  start_ns_ = 0;
  for (uint32_t r = 0; r < st_.size(); ++r) {
    const double t = st_.member_time_ns(r);
    st_.advance_member(r, t);
    start_ns_ = r == 0 ? t : std::min(start_ns_, t);
  }
  return ok_status();
}

Status Call::fail(Status s) {
  st_.broken = true;
  s.with_context(name_);
  MOE_WARN("%s", s.to_string().c_str());
  return s;
}

Status Call::finish(CollectiveResult* out) {
  for (uint32_t r = 0; r < st_.size(); ++r) {
    MemberState& ms = st_.m[r];
    for (Endpoint* ep : {ms.tx.get(), ms.rx.get(), ms.relay.get()}) {
      if (ep == nullptr) continue;
      Status s = ep->quiet();
      if (!s.ok())
        return fail(std::move(s).with_context(
            strformat("completing member %u (npu %u)", r, st_.members[r].npu)));
    }
  }
  CollectiveResult res;
  double end = start_ns_;
  for (uint32_t r = 0; r < st_.size(); ++r) end = std::max(end, st_.member_time_ns(r));
  res.start = ModelTime{start_ns_};
  res.end = ModelTime{end};
  res.modelled_ns = end - start_ns_;
  res.wall_ns = wall_now_ns() - wall_start_;
  res.payload_bytes = payload_bytes_;
  res.cross_node_bytes = cross_node_bytes_;
  res.forwarded_bytes = forwarded_bytes;
  res.messages = messages_;
  *out = res;
  return ok_status();
}

Status Call::put_message(uint32_t s, uint32_t d, Sender sender, const Message& msg) {
  MemberState& from = st_.m[s];
  Endpoint& ep = from.endpoint(sender);
  if (msg.scratch_half >= 0)
    ep.advance_to(ModelTime{st_.m[d].drained_ns[msg.scratch_half] + st_.signal_latency_ns(d, s)});
  uint64_t bytes = 0;
  for (const Piece& p : msg.pieces) {
    bytes += p.bytes;
    Status st = ep.put(p.to, p.from, p.bytes);
    if (!st.ok())
      return fail(std::move(st).with_context(
          strformat("message from member %u (npu %u) to member %u (npu %u)", s,
                    st_.members[s].npu, d, st_.members[d].npu)));
  }
  if (s != d) {
    payload_bytes_ += bytes;
    if (st_.node_of[s] != st_.node_of[d]) cross_node_bytes_ += bytes;
  }
  return ok_status();
}

Status Call::signal_message(uint32_t s, uint32_t d, Sender sender, GlobalAddr word) {
  MemberState& from = st_.m[s];
  Endpoint& ep = from.endpoint(sender);
  Status st = ep.signal(word, 1, SignalOp::kAdd);
  if (!st.ok())
    return fail(std::move(st).with_context(
        strformat("signal from member %u (npu %u) to member %u (npu %u)", s, st_.members[s].npu,
                  d, st_.members[d].npu)));
  ++messages_;
  return ok_status();
}

Status Call::flush(Sender sender) {
  for (uint32_t r = 0; r < st_.size(); ++r) {
    MemberState& ms = st_.m[r];
    Endpoint& ep = ms.endpoint(sender);
    Status s = ep.fence();
    if (!s.ok())
      return fail(std::move(s).with_context(
          strformat("member %u (npu %u) sending its puts", r, st_.members[r].npu)));
  }
  return ok_status();
}

Status Call::send(uint32_t s, uint32_t d, Sender sender, const Message& msg, GlobalAddr word) {
  MOE_TRY(put_message(s, d, sender, msg));
  return signal_message(s, d, sender, word);
}

Status Call::await_arrival(uint32_t d) {
  MemberState& ms = st_.m[d];
  Status s = ms.rx->wait_until(st_.arrival_word(d), Cmp::kGe, ms.arrivals_seen + 1);
  if (!s.ok())
    return fail(std::move(s).with_context(
        strformat("member %u (npu %u) waiting for message %llu", d, st_.members[d].npu,
                  static_cast<unsigned long long>(ms.arrivals_seen + 1))));
  ++ms.arrivals_seen;
  return ok_status();
}

Status Call::await_forward(uint32_t d) {
  MemberState& ms = st_.m[d];
  Status s = ms.relay->wait_until(st_.forward_word(d), Cmp::kGe, ms.forwards_seen + 1);
  if (!s.ok())
    return fail(std::move(s).with_context(
        strformat("member %u (npu %u) waiting for forwarded message %llu", d,
                  st_.members[d].npu, static_cast<unsigned long long>(ms.forwards_seen + 1))));
  ++ms.forwards_seen;
  return ok_status();
}

Status Call::exchange(Sender sender, const Plan& plan) {
  const uint32_t n = st_.size();
  // Pass 1: every member's data, in round order. Pass 2: the signals, a round at a time,
  // each followed by the receivers' waits.
  expect_.assign(size_t{n} * n, 0);
  for (uint32_t r = 0; r < n; ++r)
    for (uint32_t s = 0; s < n; ++s) {
      const uint32_t d = (s + r) % n;
      msg_.clear();
      if (!plan(s, d, &msg_)) continue;
      expect_[size_t{s} * n + d] = 1;
      MOE_TRY(put_message(s, d, sender, msg_));
    }
  MOE_TRY(flush(sender));
  for (uint32_t r = 0; r < n; ++r) {
    for (uint32_t s = 0; s < n; ++s) {
      const uint32_t d = (s + r) % n;
      if (expect_[size_t{s} * n + d]) MOE_TRY(signal_message(s, d, sender, st_.arrival_word(d)));
    }
    for (uint32_t d = 0; d < n; ++d) {
      const uint32_t s = (d + n - r) % n;
      if (expect_[size_t{s} * n + d]) MOE_TRY(await_arrival(d));
    }
  }
  return ok_status();
}

// ---- validation ----

Status check_count(const CommState& st, const char* what, const char* name, size_t got,
                   size_t want) {
  if (got == want) return ok_status();
  return make_error(StatusCode::kInvalidArgument,
                    "%s: %s has %zu entries; the group of %u members needs %zu", what, name, got,
                    st.size(), want);
}

Status check_buffers(const CommState& st, const char* what, const char* name,
                     std::span<const GlobalAddr> buffers,
                     const std::function<uint64_t(uint32_t)>& bytes_of, uint32_t alignment) {
  MOE_TRY(check_count(st, what, name, buffers.size(), st.size()));
  for (uint32_t r = 0; r < st.size(); ++r) {
    const uint64_t bytes = bytes_of(r);
    const GlobalAddr a = buffers[r];
    if (bytes == 0 && a.is_null()) continue;
    if (a.is_null())
      return make_error(StatusCode::kInvalidArgument,
                        "%s: %s[%u] (member %u, npu %u) is null but must hold %llu bytes", what,
                        name, r, r, st.members[r].npu, static_cast<unsigned long long>(bytes));
    if (alignment > 1 && a.value % alignment != 0)
      return make_error(StatusCode::kInvalidArgument,
                        "%s: %s[%u] (member %u, npu %u) %s is not aligned to %u bytes", what,
                        name, r, r, st.members[r].npu, mem::to_string(a).c_str(), alignment);
    auto info = st.memory.block_info(a);
    if (!info.ok())
      return make_error(StatusCode::kInvalidArgument,
                        "%s: %s[%u] (member %u, npu %u) %s is not in a live allocation (not "
                        "mapped)",
                        what, name, r, r, st.members[r].npu, mem::to_string(a).c_str());
    const uint64_t room = info.value().start.value + info.value().bytes - a.value;
    if (bytes > room)
      return make_error(StatusCode::kInvalidArgument,
                        "%s: %s[%u] (member %u, npu %u) %s must hold %llu bytes but its "
                        "allocation ends %llu bytes after it",
                        what, name, r, r, st.members[r].npu, mem::to_string(a).c_str(),
                        static_cast<unsigned long long>(bytes),
                        static_cast<unsigned long long>(room));
  }
  return ok_status();
}

Status check_types(const char* what, DataType type, ReduceOp op) {
  if (static_cast<unsigned>(type) > static_cast<unsigned>(DataType::kInt64))
    return make_error(StatusCode::kInvalidArgument, "%s: unknown data type %u", what,
                      static_cast<unsigned>(type));
  if (static_cast<unsigned>(op) > static_cast<unsigned>(ReduceOp::kMax))
    return make_error(StatusCode::kInvalidArgument, "%s: unknown reduction %u", what,
                      static_cast<unsigned>(op));
  return ok_status();
}

Status check_size(const char* what, const char* name, uint64_t a, uint64_t b, uint64_t c) {
  const unsigned __int128 v = static_cast<unsigned __int128>(a) * b * c;
  if (v < (static_cast<unsigned __int128>(1) << 62)) return ok_status();
  return make_error(StatusCode::kInvalidArgument, "%s: %s (%llu x %llu x %llu bytes) is too large to address",
                    what, name, static_cast<unsigned long long>(a),
                    static_cast<unsigned long long>(b), static_cast<unsigned long long>(c));
}

// ---- Communicator ----

Communicator::Communicator(std::unique_ptr<CommState> state) : state_(std::move(state)) {}

Communicator::~Communicator() {
  if (!state_) return;
  for (MemberState& ms : state_->m) {
    for (Endpoint* ep : {ms.tx.get(), ms.rx.get(), ms.relay.get()})
      if (ep != nullptr) ep->quiet().ignore();
    ms.tx.reset();
    ms.rx.reset();
    ms.relay.reset();
  }
  state_->group.reset();
  if (state_->scratch_alloc.valid()) {
    Status s = state_->memory.free(state_->scratch_alloc);
    if (!s.ok()) MOE_WARN("communicator scratch: %s", s.to_string().c_str());
  }
}

StatusOr<std::unique_ptr<Communicator>> Communicator::create(Transport& transport,
                                                             mem::GlobalMemory& memory,
                                                             std::span<const dev::NpuId> npus,
                                                             const CommConfig& config) {
  std::vector<CommMember> members;
  members.reserve(npus.size());
  for (dev::NpuId p : npus) members.push_back({p, 0});
  return create(transport, memory, members, config);
}

StatusOr<std::unique_ptr<Communicator>> Communicator::create(Transport& transport,
                                                             mem::GlobalMemory& memory,
                                                             std::span<const CommMember> members,
                                                             const CommConfig& config) {
  dev::Driver* driver = memory.driver();
  const dev::Topology& topo = driver->topology();
  const uint32_t n = static_cast<uint32_t>(members.size());
  if (n == 0)
    return make_error(StatusCode::kInvalidArgument, "communicator: the group has no members");
  const uint32_t dies = std::max<uint32_t>(1, topo.dies_per_npu);
  auto st = std::make_unique<CommState>(transport, memory, topo);
  st->config = config;
  st->rank_index.assign(uint64_t{topo.num_npus()} * dies, -1);
  std::vector<int> npu_slot(topo.num_npus(), -1);
  for (uint32_t r = 0; r < n; ++r) {
    const CommMember& mb = members[r];
    if (mb.npu >= topo.num_npus())
      return make_error(StatusCode::kInvalidArgument,
                        "communicator: member %u names npu %u; the machine has %u NPUs", r,
                        mb.npu, topo.num_npus());
    if (mb.die >= dies)
      return make_error(StatusCode::kInvalidArgument,
                        "communicator: member %u names die %u of npu %u; an NPU has %u dies", r,
                        mb.die, mb.npu, dies);
    int& idx = st->rank_index[uint64_t{mb.npu} * dies + mb.die];
    if (idx >= 0)
      return make_error(StatusCode::kInvalidArgument,
                        "communicator: member %u (npu %u die %u) duplicates member %d", r,
                        mb.npu, mb.die, idx);
    idx = static_cast<int>(r);
    if (npu_slot[mb.npu] < 0) {
      npu_slot[mb.npu] = static_cast<int>(st->npus.size());
      st->npus.push_back(mb.npu);
      st->ranks_on_npu.emplace_back();
    }
    st->ranks_on_npu[npu_slot[mb.npu]].push_back(r);
    st->members.push_back(mb);
    st->node_of.push_back(topo.npus[mb.npu].node);
  }
  // Scratch: per member a flag block and two halves; members of one NPU take slots.
  uint64_t half = config.scratch_bytes != 0
                      ? config.scratch_bytes
                      : std::max(kMinScratchHalfBytes, uint64_t{n} * kScratchBytesPerPeer);
  if (half < uint64_t{n} * 8)
    return make_error(StatusCode::kInvalidArgument,
                      "communicator: scratch_bytes %llu is below %llu (8 bytes per member of "
                      "%u)",
                      static_cast<unsigned long long>(half),
                      static_cast<unsigned long long>(uint64_t{n} * 8), n);
  half = (half + 63) / 64 * 64;
  st->half_bytes = half;
  if (st->config.broadcast_direct_max_bytes == 0)
    st->config.broadcast_direct_max_bytes = kDefaultBroadcastDirectMaxBytes;
  size_t slots = 1;
  for (const auto& v : st->ranks_on_npu) slots = std::max(slots, v.size());
  const uint64_t stride = kFlagBytes + 2 * half;
  mem::AllocRequest req;
  req.policy = mem::Policy::kSymmetric;
  req.bytes = slots * stride;
  req.npus = st->npus;
  MOE_TRY_ASSIGN(st->scratch_alloc, memory.allocate(req));
  const uint8_t zeros[kFlagBytes] = {};
  for (size_t k = 0; k < slots; ++k) {
    Status s = memory.write_all(st->scratch_alloc, k * stride, zeros, kFlagBytes);
    if (!s.ok()) {
      memory.free(st->scratch_alloc).ignore();
      return s.with_context("communicator: zeroing the flag words");
    }
  }
  // From here the Communicator owns the allocation (its destructor frees it).
  std::unique_ptr<Communicator> comm(new Communicator(nullptr));
  CommState& s = *st;
  comm->state_ = std::move(st);
  s.m.resize(n);
  for (uint32_t r = 0; r < n; ++r) {
    const auto& on = s.ranks_on_npu[npu_slot[s.members[r].npu]];
    const uint64_t slot = static_cast<uint64_t>(std::find(on.begin(), on.end(), r) - on.begin());
    const mem::AllocationPart* part = s.scratch_alloc.part_on(s.members[r].npu);
    MOE_ASSERT(part != nullptr);
    MemberState& ms = s.m[r];
    ms.flags = part->addr + slot * stride;
    ms.scratch[0] = ms.flags + kFlagBytes;
    ms.scratch[1] = ms.scratch[0] + half;
    EndpointConfig c;
    c.npu = s.members[r].npu;
    c.mode = config.mode;
    c.issuer = config.issuer;
    c.wait_timeout_wall_ns = config.wait_timeout_wall_ns;
    MOE_TRY_ASSIGN(ms.tx, transport.open_endpoint(c));
    MOE_TRY_ASSIGN(ms.rx, transport.open_endpoint(c));
  }
  MOE_TRY_ASSIGN(s.group, transport.create_group(s.npus));
  // Latency of each node's uplink (L1 -> L2) on plane 0, for credit latencies.
  s.uplink_latency_ns.assign(topo.num_nodes, 0.0);
  for (const dev::LinkDesc& l : topo.links) {
    if (l.plane != 0 || l.a.kind != dev::EndpointKind::kSwitch ||
        l.b.kind != dev::EndpointKind::kSwitch)
      continue;
    const dev::SwitchDesc& a = topo.switches[l.a.id];
    const dev::SwitchDesc& b = topo.switches[l.b.id];
    const dev::SwitchDesc& l1 = a.level == dev::SwitchLevel::kL1 ? a : b;
    if (l1.level == dev::SwitchLevel::kL1 && l1.node < topo.num_nodes)
      s.uplink_latency_ns[l1.node] = l.latency_ns;
  }
  return comm;
}

uint32_t Communicator::size() const { return state_->size(); }
const CommMember& Communicator::member(uint32_t rank) const { return state_->members.at(rank); }
Mode Communicator::mode() const { return state_->config.mode; }
uint64_t Communicator::scratch_half_bytes() const { return state_->half_bytes; }
bool Communicator::healthy() const { return !state_->broken; }

int Communicator::rank_of(dev::NpuId npu, uint32_t die) const {
  const uint32_t dies = std::max<uint32_t>(1, state_->topology.dies_per_npu);
  if (npu >= state_->topology.num_npus() || die >= dies) return -1;
  return state_->rank_index[uint64_t{npu} * dies + die];
}

EndpointStats Communicator::transport_stats() const {
  EndpointStats sum;
  for (const MemberState& ms : state_->m)
    for (const Endpoint* ep : {ms.tx.get(), ms.rx.get(), ms.relay.get()}) {
      if (ep == nullptr) continue;
      const EndpointStats& e = ep->stats();
      sum.puts += e.puts;
      sum.put_bytes += e.put_bytes;
      sum.gets += e.gets;
      sum.get_bytes += e.get_bytes;
      sum.atomics += e.atomics;
      sum.signals += e.signals;
      sum.coalesced_puts += e.coalesced_puts;
      sum.fabric_ops += e.fabric_ops;
      sum.bytes_delivered += e.bytes_delivered;
      sum.packets_lost += e.packets_lost;
      sum.packets_corrupted += e.packets_corrupted;
      sum.retransmissions += e.retransmissions;
      sum.retransmitted_packets += e.retransmitted_packets;
      sum.failovers += e.failovers;
      sum.errors += e.errors;
      sum.waits += e.waits;
    }
  return sum;
}

ModelTime Communicator::member_time(uint32_t rank) const {
  return ModelTime{state_->member_time_ns(rank)};
}

void Communicator::advance_member(uint32_t rank, ModelTime t) {
  if (rank < size()) state_->advance_member(rank, t.ns);
}

StatusOr<std::vector<GlobalAddr>> Communicator::addresses_of(
    const mem::Allocation& allocation) const {
  if (allocation.policy != mem::Policy::kSymmetric)
    return make_error(StatusCode::kInvalidArgument,
                      "addresses_of: the allocation at %s is %s, not symmetric",
                      mem::to_string(allocation.base).c_str(), mem::policy_name(allocation.policy));
  std::vector<GlobalAddr> out;
  out.reserve(size());
  for (uint32_t r = 0; r < size(); ++r) {
    const mem::AllocationPart* p = allocation.part_on(state_->members[r].npu);
    if (p == nullptr)
      return make_error(StatusCode::kInvalidArgument,
                        "addresses_of: the allocation at %s has no part on npu %u (member %u)",
                        mem::to_string(allocation.base).c_str(), state_->members[r].npu, r);
    out.push_back(p->addr);
  }
  return out;
}

StatusOr<CollectiveResult> Communicator::barrier() {
  CommState& st = *state_;
  Call call(st, "barrier");
  MOE_TRY(call.begin());
  // One arrival per NPU, through the tx endpoint of its first member, after every member
  // of that NPU has arrived (the dies meet on the package).
  std::vector<Endpoint*> eps(st.npus.size());
  for (size_t i = 0; i < st.npus.size(); ++i) {
    double t = 0;
    for (uint32_t r : st.ranks_on_npu[i]) t = std::max(t, st.member_time_ns(r));
    eps[i] = st.m[st.ranks_on_npu[i][0]].tx.get();
    eps[i]->advance_to(ModelTime{t});
    Status s = eps[i]->barrier_arrive(*st.group);
    if (!s.ok()) return call.fail(std::move(s).with_context(strformat("npu %u", st.npus[i])));
  }
  for (size_t i = 0; i < st.npus.size(); ++i) {
    Status s = eps[i]->barrier_wait(*st.group, st.config.wait_timeout_wall_ns);
    if (!s.ok()) return call.fail(std::move(s).with_context(strformat("npu %u", st.npus[i])));
    for (uint32_t r : st.ranks_on_npu[i]) st.advance_member(r, eps[i]->now().ns);
  }
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

}  // namespace moe::ic
