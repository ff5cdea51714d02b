// MoeBuffer: the sizing formula (compute_moe_buffer_layout) and the buffer's setup.
//
// Everything per rank is computed from the rank's base, so addresses cost an add; the
// symmetric allocation gives every NPU's part the same offset in its window, and die ranks
// split their NPU's part in equal rank_bytes pieces. Setup writes only the control words
// (zeroes), through the host mapping, so a timing-mode buffer commits no payload memory.
#include "interconnect/moe_buffer.h"

#include <algorithm>
#include <atomic>

#include "interconnect/ic_options.h"
#include "memory/global_memory.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/device/driver.h"

namespace moe::ic {
namespace {

constexpr uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// Limits that keep the slot header's fields in range.
constexpr uint32_t kMaxRanks = 1u << 16;
constexpr uint32_t kMaxHits = 1u << 12;

std::atomic<uint64_t> g_next_buffer_id{1};

}  // namespace

const char* dispatch_completion_name(DispatchCompletion c) {
  switch (c) {
    case DispatchCompletion::kAuto:
      return "auto";
    case DispatchCompletion::kPerSourceFlags:
      return "per-source-flags";
    case DispatchCompletion::kBarrier:
      return "barrier";
  }
  return "unknown";
}

DispatchCompletion resolve_dispatch_completion(DispatchCompletion asked, uint32_t num_ranks,
                                               uint32_t max_tokens_per_rank,
                                               uint32_t max_dests_per_token) {
  if (asked != DispatchCompletion::kAuto) return asked;
  return uint64_t{max_tokens_per_rank} * max_dests_per_token < num_ranks
             ? DispatchCompletion::kBarrier
             : DispatchCompletion::kPerSourceFlags;
}

StatusOr<MoeBufferLayout> compute_moe_buffer_layout(const MoeBufferConfig& c) {
  if (c.npus.empty()) return make_error(StatusCode::kInvalidArgument, "moe buffer: npus is empty");
  if (c.ranks_per_npu == 0)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: ranks_per_npu is 0");
  const uint64_t ranks = uint64_t{c.npus.size()} * c.ranks_per_npu;
  if (ranks > kMaxRanks)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: %llu ranks (at most %u)",
                      static_cast<unsigned long long>(ranks), kMaxRanks);
  if (c.max_tokens_per_rank == 0)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: max_tokens_per_rank is 0");
  if (c.hidden == 0) return make_error(StatusCode::kInvalidArgument, "moe buffer: hidden is 0");
  if (c.max_topk == 0) return make_error(StatusCode::kInvalidArgument, "moe buffer: max_topk is 0");
  if (uint64_t{c.max_topk} + c.max_shared_experts > kMaxHits)
    return make_error(StatusCode::kInvalidArgument,
                      "moe buffer: max_topk %u + max_shared_experts %u exceeds %u", c.max_topk,
                      c.max_shared_experts, kMaxHits);
  if (c.dispatch_format != TokenFormat::kBf16 && c.dispatch_format != TokenFormat::kInt8)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: dispatch_format %s (bf16 or int8)",
                      token_format_name(c.dispatch_format));
  if (c.combine_format != TokenFormat::kBf16 && c.combine_format != TokenFormat::kFloat32)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: combine_format %s (bf16 or fp32)",
                      token_format_name(c.combine_format));
  if (c.mode != Mode::kFunctional && c.mode != Mode::kTiming)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: unknown mode %u",
                      static_cast<unsigned>(c.mode));
  if (c.completion != DispatchCompletion::kAuto &&
      c.completion != DispatchCompletion::kPerSourceFlags &&
      c.completion != DispatchCompletion::kBarrier)
    return make_error(StatusCode::kInvalidArgument, "moe buffer: unknown completion %u",
                      static_cast<unsigned>(c.completion));
  for (size_t i = 0; i < c.source_ranks.size(); ++i)
    if (c.source_ranks[i] >= ranks || (i > 0 && c.source_ranks[i] <= c.source_ranks[i - 1]))
      return make_error(StatusCode::kInvalidArgument,
                        "moe buffer: source_ranks must ascend below the %llu ranks; entry %zu is "
                        "%u", static_cast<unsigned long long>(ranks), i, c.source_ranks[i]);
  MoeBufferLayout l;
  l.num_ranks = static_cast<uint32_t>(ranks);
  l.max_tokens_per_rank = c.max_tokens_per_rank;
  l.hidden = c.hidden;
  l.max_hits_per_token = c.max_topk + c.max_shared_experts;
  l.max_dests_per_token = std::min(l.num_ranks, l.max_hits_per_token);
  l.header_bytes = round_up(24 + 8ull * l.max_hits_per_token, 16);
  l.payload_bytes = round_up(uint64_t{c.hidden} * token_element_bytes(c.dispatch_format), 16);
  l.slot_bytes = l.header_bytes + l.payload_bytes;
  l.combine_row_bytes = round_up(uint64_t{c.hidden} * token_element_bytes(c.combine_format), 16);
  l.recv_slots = uint64_t{l.num_ranks} * c.max_tokens_per_rank;
  l.send_slots = uint64_t{c.max_tokens_per_rank} * l.max_dests_per_token;
  l.control_offset = 0;
  const uint64_t control_bytes = round_up(8 * (1 + 2 * uint64_t{l.num_ranks}), 64);
  l.recv_offset = l.control_offset + control_bytes;
  l.send_offset = round_up(l.recv_offset + l.recv_slots * l.slot_bytes, 64);
  l.combine_send_offset = round_up(l.send_offset + l.send_slots * l.slot_bytes, 64);
  l.combine_recv_offset = round_up(l.combine_send_offset + l.recv_slots * l.combine_row_bytes, 64);
  l.rank_bytes = round_up(l.combine_recv_offset + l.send_slots * l.combine_row_bytes, 64);
  l.signal_words = 2 * uint64_t{l.num_ranks} * l.num_ranks + l.num_ranks;
  l.completion = resolve_dispatch_completion(c.completion, l.num_ranks, c.max_tokens_per_rank,
                                             l.max_dests_per_token);
  return l;
}

MoeBuffer::MoeBuffer(mem::GlobalMemory& memory, const MoeBufferConfig& config,
                     const MoeBufferLayout& layout)
    : memory_(memory),
      config_(config),
      layout_(layout),
      id_(g_next_buffer_id.fetch_add(1, std::memory_order_relaxed)) {}

StatusOr<std::unique_ptr<MoeBuffer>> MoeBuffer::create(Transport& transport,
                                                       mem::GlobalMemory& memory,
                                                       const MoeBufferConfig& config) {
  MoeBufferLayout layout;
  MOE_TRY_ASSIGN(layout, compute_moe_buffer_layout(config));
  const dev::Topology& topo = memory.driver()->topology();
  for (size_t i = 0; i < config.npus.size(); ++i) {
    if (config.npus[i] >= topo.num_npus())
      return make_error(StatusCode::kInvalidArgument,
                        "moe buffer: npus[%zu] = %u out of range (the supernode has %u NPUs)", i,
                        config.npus[i], topo.num_npus());
    if (std::find(config.npus.begin(), config.npus.begin() + i, config.npus[i]) !=
        config.npus.begin() + i)
      return make_error(StatusCode::kInvalidArgument, "moe buffer: npu %u listed twice",
                        config.npus[i]);
  }
  if (config.ranks_per_npu > std::max<uint32_t>(1, topo.dies_per_npu))
    return make_error(StatusCode::kInvalidArgument,
                      "moe buffer: ranks_per_npu %u exceeds the %u dies of an NPU",
                      config.ranks_per_npu, topo.dies_per_npu);
  if (config.mode == Mode::kFunctional && !transport.caps().functional)
    return make_error(StatusCode::kInvalidArgument,
                      "moe buffer: functional mode asked, transport %s moves no payload",
                      std::string(transport.name()).c_str());
  const uint64_t needed_words = layout.signal_words;
  const uint64_t table_words = transport.caps().signal_table_words;
  if (table_words < needed_words)
    MOE_WARN(
        "moe buffer of %u ranks uses %llu signal words but the transport remembers %llu (IC_SIGNAL_TABLE_WORDS): "
        "modelled times of some waits will be too early; raise it",
        layout.num_ranks, static_cast<unsigned long long>(needed_words),
        static_cast<unsigned long long>(table_words));

  std::unique_ptr<MoeBuffer> b(new MoeBuffer(memory, config, layout));
  mem::AllocRequest req;
  req.policy = mem::Policy::kSymmetric;
  req.bytes = layout.rank_bytes * config.ranks_per_npu;
  req.alignment = 64;
  req.npus = config.npus;
  MOE_TRY_ASSIGN(b->allocation_, memory.allocate(req));
  b->rank_base_.resize(layout.num_ranks);
  const std::vector<uint8_t> zeros(layout.recv_offset - layout.control_offset, 0);
  for (uint32_t r = 0; r < layout.num_ranks; ++r) {
    GlobalAddr part;
    MOE_TRY_ASSIGN(part, memory.symmetric_addr(b->allocation_, b->npu_of(r)));
    b->rank_base_[r] = part + uint64_t{b->die_of(r)} * layout.rank_bytes;
    MOE_TRY(memory.write(b->slot_counter(r), zeros.data(), zeros.size()));
  }
  b->contexts_ = std::max<uint32_t>(1, std::min(config.issue_contexts, layout.num_ranks));
  b->endpoints_.resize(layout.num_ranks);
  for (uint32_t r = 0; r < layout.num_ranks; ++r) {
    for (uint32_t w = 0; w < b->contexts_; ++w) {
      EndpointConfig ec;
      ec.npu = b->npu_of(r);
      ec.mode = config.mode;
      ec.issuer = Issuer::kDevice;
      ec.wait_timeout_wall_ns = config.wait_timeout_wall_ns;
      std::unique_ptr<Endpoint> ep;
      MOE_TRY_ASSIGN(ep, transport.open_endpoint(ec));
      b->endpoints_[r].push_back(std::move(ep));
    }
  }
  std::vector<dev::NpuId> barrier_npus = config.npus;
  if (!config.source_ranks.empty()) {
    b->source_mask_.assign(layout.num_ranks, 0);
    barrier_npus.clear();
    for (uint32_t r : config.source_ranks) {
      b->source_mask_[r] = 1;
      const dev::NpuId n = b->npu_of(r);
      if (barrier_npus.empty() || barrier_npus.back() != n) barrier_npus.push_back(n);
    }
  }
  if (layout.completion == DispatchCompletion::kBarrier) {
    MOE_TRY_ASSIGN(b->group_, transport.create_group(barrier_npus));
  }
  if (config.mode == Mode::kTiming) b->shadow_headers_.resize(layout.num_ranks);
  return b;
}

MoeBuffer::~MoeBuffer() {
  for (auto& eps : endpoints_)
    for (auto& ep : eps) {
      Status s = ep->quiet();
      if (!s.ok()) MOE_WARN("moe buffer: endpoint of npu %u: %s", ep->npu(), s.to_string().c_str());
    }
  endpoints_.clear();
  group_.reset();
  if (allocation_.valid()) {
    Status s = memory_.free(allocation_);
    if (!s.ok()) MOE_WARN("moe buffer: freeing the region: %s", s.to_string().c_str());
  }
}

const dev::Topology& MoeBuffer::topology() const { return memory_.driver()->topology(); }

uint32_t MoeBuffer::node_of(uint32_t rank) const { return topology().npus[npu_of(rank)].node; }

ModelTime MoeBuffer::rank_now(uint32_t rank) const {
  ModelTime t;
  for (const auto& ep : endpoints_[rank]) t = max(t, ep->now());
  return t;
}

void MoeBuffer::advance_rank(uint32_t rank, ModelTime t) {
  for (auto& ep : endpoints_[rank]) ep->advance_to(t);
}

void MoeBuffer::advance_all(ModelTime t) {
  for (uint32_t r = 0; r < layout_.num_ranks; ++r) advance_rank(r, t);
}

ModelTime MoeBuffer::group_now() const {
  ModelTime t;
  for (uint32_t r = 0; r < layout_.num_ranks; ++r) t = max(t, endpoints_[r][0]->now());
  return t;
}

EndpointStats MoeBuffer::transport_stats() const {
  EndpointStats sum;
  for (const auto& eps : endpoints_)
    for (const auto& ep : eps) {
      const EndpointStats& s = ep->stats();
      sum.puts += s.puts;
      sum.put_bytes += s.put_bytes;
      sum.gets += s.gets;
      sum.get_bytes += s.get_bytes;
      sum.atomics += s.atomics;
      sum.signals += s.signals;
      sum.coalesced_puts += s.coalesced_puts;
      sum.fabric_ops += s.fabric_ops;
      sum.bytes_delivered += s.bytes_delivered;
      sum.packets_lost += s.packets_lost;
      sum.packets_corrupted += s.packets_corrupted;
      sum.retransmissions += s.retransmissions;
      sum.retransmitted_packets += s.retransmitted_packets;
      sum.failovers += s.failovers;
      sum.errors += s.errors;
      sum.waits += s.waits;
    }
  return sum;
}

}  // namespace moe::ic
