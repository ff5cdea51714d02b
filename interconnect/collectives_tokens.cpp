// The token all-to-all (the MoE dispatch pattern), flat and hierarchical, and its routing
// table (collectives.h, TokenRoutes).
//
// Receive layout: member d's buffer holds, for each source in rank order, the tokens of
// that source that d needs, in token order. Both algorithms fill exactly that layout, so
// their results are byte-identical.
//
// Plan. Flat: source s sends token t to each destination itself. Hierarchical: for every
// remote node holding two or more of a token's destinations, s sends the token once, to one
// of them, the relay (the destination on s's rail, same index in node, when there is one;
// else one chosen by token index, to spread the relaying); the relay forwards it from its
// own receive slot to the others in its node. Local destinations and lone remote ones are
// sent directly.
//
// Execution, in passes that keep each NPU's descriptors in modelled-time order (the fabric
// engine issues them in order, so a descriptor due late holds back those issued after it):
//  1. every source's direct puts (round r: s to (s + r) mod n), then a flush;
//  2. round by round, a signal for every pair (empty messages included, so the arrival
//     counter rules of Call::exchange hold) and the receivers' waits, noting when each
//     relay saw each source's message (its rx clock);
//  3. each relay's forwards, from its relay endpoint advanced to the time it saw the
//     forwarded tokens' source message (a forward never leaves before its token arrived);
//  4. one signal per (relay, member it forwarded to), following all those forwards, which
//     the member's relay endpoint observes at once (its clock: the latest forwarded
//     arrival).
// The forwards follow the relay's own phase-1 descriptors: in the model a relay's fan-out
// overlaps other NPUs' phase 1, not its own.
// Consecutive tokens whose receive slots are consecutive go as one put.
#include <algorithm>

#include "interconnect/collectives_internal.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

// ---- TokenRoutes ----

TokenRoutes::TokenRoutes(uint32_t num_members)
    : num_members_(num_members), offsets_(num_members, std::vector<uint32_t>{0}),
      dests_(num_members) {}

Status TokenRoutes::add_token(uint32_t source, std::span<const uint32_t> destinations) {
  if (source >= num_members_)
    return make_error(StatusCode::kInvalidArgument,
                      "add_token: source %u is not a rank of the group of %u", source, num_members_);
  for (size_t i = 0; i < destinations.size(); ++i) {
    if (destinations[i] >= num_members_)
      return make_error(StatusCode::kInvalidArgument,
                        "add_token: token %u of source %u names destination %u; the group has %u "
                        "members",
                        num_tokens(source), source, destinations[i], num_members_);
    for (size_t j = 0; j < i; ++j)
      if (destinations[j] == destinations[i])
        return make_error(StatusCode::kInvalidArgument,
                          "add_token: token %u of source %u names destination %u twice",
                          num_tokens(source), source, destinations[i]);
  }
  dests_[source].insert(dests_[source].end(), destinations.begin(), destinations.end());
  offsets_[source].push_back(static_cast<uint32_t>(dests_[source].size()));
  layout_valid_ = false;
  return ok_status();
}

uint32_t TokenRoutes::num_tokens(uint32_t source) const {
  return static_cast<uint32_t>(offsets_.at(source).size() - 1);
}

std::span<const uint32_t> TokenRoutes::destinations(uint32_t source, uint32_t token) const {
  const auto& o = offsets_.at(source);
  return std::span<const uint32_t>(dests_[source]).subspan(o.at(token), o[token + 1] - o[token]);
}

void TokenRoutes::build_layout() const {
  if (layout_valid_) return;
  const uint32_t n = num_members_;
  count_.assign(size_t{n} * n, 0);
  start_.assign(size_t{n} * n, 0);
  total_.assign(n, 0);
  slot_.assign(n, {});
  for (uint32_t s = 0; s < n; ++s)
    for (uint32_t d : dests_[s]) ++count_[size_t{s} * n + d];
  for (uint32_t d = 0; d < n; ++d)
    for (uint32_t s = 0; s < n; ++s) {
      start_[size_t{s} * n + d] = total_[d];
      total_[d] += count_[size_t{s} * n + d];
    }
  std::vector<uint64_t> next(n);
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t d = 0; d < n; ++d) next[d] = start_[size_t{s} * n + d];
    slot_[s].resize(dests_[s].size());
    for (size_t i = 0; i < dests_[s].size(); ++i) slot_[s][i] = next[dests_[s][i]]++;
  }
  layout_valid_ = true;
}

uint64_t TokenRoutes::recv_tokens(uint32_t member) const {
  build_layout();
  return total_.at(member);
}

uint64_t TokenRoutes::recv_tokens_from(uint32_t source, uint32_t member) const {
  build_layout();
  return count_.at(size_t{source} * num_members_ + member);
}

uint64_t TokenRoutes::recv_offset_tokens(uint32_t source, uint32_t member) const {
  build_layout();
  return start_.at(size_t{source} * num_members_ + member);
}

uint64_t TokenRoutes::recv_slot(uint32_t source, uint32_t token, uint32_t member) const {
  build_layout();
  const auto& o = offsets_.at(source);
  for (uint32_t i = o.at(token); i < o[token + 1]; ++i)
    if (dests_[source][i] == member) return slot_[source][i];
  return UINT64_MAX;
}

// ---- token_all_to_all ----

namespace {

// What a source sends directly: (destination << 32 | token), sorted; and what a relay
// forwards: (source, destination, token), sorted.
struct Forward {
  uint32_t source, dest, token;
  auto operator<=>(const Forward&) const = default;
};

// Appends the puts of `tokens` (ascending) as runs: consecutive tokens whose slots at the
// destination are consecutive merge.
template <typename SrcSlot, typename DstSlot>
void add_runs(std::span<const uint32_t> tokens, uint64_t token_bytes, SrcSlot src_slot,
              DstSlot dst_slot, GlobalAddr src_base, GlobalAddr dst_base, Message* msg) {
  for (size_t i = 0; i < tokens.size();) {
    size_t j = i + 1;
    while (j < tokens.size() && src_slot(tokens[j]) == src_slot(tokens[j - 1]) + 1 &&
           dst_slot(tokens[j]) == dst_slot(tokens[j - 1]) + 1)
      ++j;
    msg->pieces.push_back({src_base + src_slot(tokens[i]) * token_bytes,
                           dst_base + dst_slot(tokens[i]) * token_bytes,
                           (j - i) * token_bytes});
    i = j;
  }
}

}  // namespace

StatusOr<CollectiveResult> Communicator::token_all_to_all(const TokenRoutes& routes,
                                                          std::span<const GlobalAddr> send,
                                                          std::span<const GlobalAddr> recv,
                                                          uint64_t token_bytes,
                                                          TokenAlgorithm algorithm) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = algorithm == TokenAlgorithm::kHierarchical ? "hierarchical token_all_to_all"
                                                                : "token_all_to_all";
  if (routes.num_members() != n)
    return make_error(StatusCode::kInvalidArgument,
                      "%s: the routes are for %u members, the group has %u", what,
                      routes.num_members(), n);
  if (token_bytes == 0)
    return make_error(StatusCode::kInvalidArgument, "%s: token_bytes is 0", what);
  if (algorithm != TokenAlgorithm::kFlat && algorithm != TokenAlgorithm::kHierarchical)
    return make_error(StatusCode::kInvalidArgument, "%s: unknown algorithm %u", what,
                      static_cast<unsigned>(algorithm));
  uint64_t most = 0;
  for (uint32_t d = 0; d < n; ++d)
    most = std::max({most, routes.recv_tokens(d), uint64_t{routes.num_tokens(d)}});
  MOE_TRY(check_size(what, "token_bytes", token_bytes, most));
  MOE_TRY(check_buffers(st, what, "send", send,
                        [&](uint32_t s) { return uint64_t{routes.num_tokens(s)} * token_bytes; },
                        1));
  MOE_TRY(check_buffers(st, what, "recv", recv,
                        [&](uint32_t d) { return routes.recv_tokens(d) * token_bytes; }, 1));

  // The plan.
  const bool hier = algorithm == TokenAlgorithm::kHierarchical;
  std::vector<std::vector<uint64_t>> direct(n);  // per source: (dest << 32 | token)
  std::vector<std::vector<Forward>> forwards(n);  // per relay
  std::vector<uint32_t> in_node;
  for (uint32_t s = 0; s < n; ++s) {
    const uint32_t my_node = st.node_of[s];
    const uint32_t my_rail = st.topology.npus[st.members[s].npu].index_in_node;
    for (uint32_t t = 0; t < routes.num_tokens(s); ++t) {
      std::span<const uint32_t> ds = routes.destinations(s, t);
      for (uint32_t d : ds) {
        const uint32_t node = st.node_of[d];
        if (!hier || node == my_node) {
          direct[s].push_back(uint64_t{d} << 32 | t);
          continue;
        }
        // The first destination of this node met in the list decides the node's route.
        bool first = true;
        for (uint32_t e : ds) {
          if (e == d) break;
          if (st.node_of[e] == node) first = false;
        }
        if (!first) continue;
        in_node.clear();
        for (uint32_t e : ds)
          if (st.node_of[e] == node) in_node.push_back(e);
        if (in_node.size() == 1) {
          direct[s].push_back(uint64_t{d} << 32 | t);
          continue;
        }
        uint32_t relay = in_node[t % in_node.size()];
        for (uint32_t e : in_node)
          if (st.topology.npus[st.members[e].npu].index_in_node == my_rail) {
            relay = e;
            break;
          }
        direct[s].push_back(uint64_t{relay} << 32 | t);
        for (uint32_t e : in_node)
          if (e != relay) forwards[relay].push_back({s, e, t});
      }
    }
    std::sort(direct[s].begin(), direct[s].end());
  }
  for (auto& f : forwards) std::sort(f.begin(), f.end());

  if (hier) MOE_TRY(st.open_relays());
  Call call(st, what);
  MOE_TRY(call.begin());
  std::vector<uint32_t> tokens;
  Message msg;
  // Pass 1: every source's direct puts, in round order. Pass 2: round by round, the
  // signals and the receivers' waits, noting when each relay saw each source's message.
  // Pass 3: the relays' forward puts, each at the time its source's message arrived.
  // Pass 4: one signal per (relay, member) it forwarded to, each observed at once.
  for (uint32_t r = 0; r < n; ++r) {
    for (uint32_t s = 0; s < n; ++s) {
      const uint32_t d = (s + r) % n;
      const auto& list = direct[s];
      auto lo = std::lower_bound(list.begin(), list.end(), uint64_t{d} << 32);
      auto hi = std::lower_bound(list.begin(), list.end(), uint64_t{d + 1} << 32);
      tokens.clear();
      for (auto it = lo; it != hi; ++it) tokens.push_back(static_cast<uint32_t>(*it));
      msg.clear();
      add_runs(
          tokens, token_bytes, [](uint32_t t) { return uint64_t{t}; },
          [&](uint32_t t) { return routes.recv_slot(s, t, d); }, send[s], recv[d], &msg);
      MOE_TRY(call.put_message(s, d, Sender::kTx, msg));
    }
  }
  MOE_TRY(call.flush(Sender::kTx));
  std::vector<double> arrived(hier ? size_t{n} * n : 0);  // [relay * n + source]
  for (uint32_t r = 0; r < n; ++r) {
    for (uint32_t s = 0; s < n; ++s)
      MOE_TRY(call.signal_message(s, (s + r) % n, Sender::kTx, st.arrival_word((s + r) % n)));
    for (uint32_t d = 0; d < n; ++d) {
      MOE_TRY(call.await_arrival(d));
      if (hier) arrived[size_t{d} * n + (d + n - r) % n] = st.m[d].rx->now().ns;
    }
  }
  if (hier) {
    std::vector<uint8_t> forwarded_to(size_t{n} * n);
    std::vector<std::pair<uint32_t, uint32_t>> pairs;  // (relay, member), in first-use order
    for (uint32_t d = 0; d < n; ++d) {
      const auto& fw = forwards[d];
      // In the order the relay saw the sources' messages (rounds), one message per
      // (source, member).
      for (uint32_t r = 0; r < n; ++r) {
        const uint32_t s = (d + n - r) % n;
        auto it = std::lower_bound(fw.begin(), fw.end(), Forward{s, 0, 0});
        if (it == fw.end() || it->source != s) continue;
        st.m[d].relay->advance_to(ModelTime{arrived[size_t{d} * n + s]});
        while (it != fw.end() && it->source == s) {
          const uint32_t e = it->dest;
          tokens.clear();
          for (; it != fw.end() && it->source == s && it->dest == e; ++it)
            tokens.push_back(it->token);
          msg.clear();
          add_runs(
              tokens, token_bytes, [&](uint32_t t) { return routes.recv_slot(s, t, d); },
              [&](uint32_t t) { return routes.recv_slot(s, t, e); }, recv[d], recv[e], &msg);
          for (const Piece& p : msg.pieces) call.forwarded_bytes += p.bytes;
          MOE_TRY(call.put_message(d, e, Sender::kRelay, msg));
          if (!forwarded_to[size_t{d} * n + e]) {
            forwarded_to[size_t{d} * n + e] = 1;
            pairs.push_back({d, e});
          }
        }
      }
    }
    MOE_TRY(call.flush(Sender::kRelay));
    for (const auto& [d, e] : pairs) {
      MOE_TRY(call.signal_message(d, e, Sender::kRelay, st.forward_word(e)));
      MOE_TRY(call.await_forward(e));
    }
  }
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

}  // namespace moe::ic
