// Expert re-placement (EPLB) for a running engine: new per-layer expert maps applied between
// two steps by moving weights, then rebuilding the host working copies that changed.
//
// Why two transfer paths. An expert replica's block lives in its rank's HBM. Two ways to get
// one onto another NPU:
//  - page migration (GlobalMemory::migrate, the memory layer's remapping): the page moves and
//    the global address stays valid, so anything that names the expert by address keeps
//    working; but migration moves whole pages, and by default expert blocks of the small
//    functional models share pages (several experts per 2 MiB page, slab-allocated), so
//    migrating one would drag its neighbours along. With EngineOptions::expert_own_pages each
//    replica has a page of its own and a replica that leaves rank A for rank B migrates.
//    That is the natural layout at full size, where an expert is tens of MiB (many pages).
//  - a fabric copy (rt::Stream kFabric, the destination NPU's transfer engine pulls it, on
//    the modelled clock) into a new block: needed anyway for NEW replicas (an expert gains a
//    rank without another losing one: the source stays), and used for hand-overs when blocks
//    share pages; the old block is freed.
// Replica order inside the map does not matter for weights; only the set per (layer, rank).
//
// Atomicity: copies into fresh blocks and the new working copies are prepared first (the
// placement in use untouched: a failure frees them); then migrations (on failure the moved
// ones migrate back); then one commit that cannot fail swaps blocks, banks and maps.
#include <algorithm>
#include <unordered_map>

#include "models/engine/device_weights_state.h"
#include "models/engine/engine.h"
#include "models/engine/engine_state.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"
#include "runtime/stream.h"

namespace moe::models {

namespace {

enum class SlotKind : uint8_t { kKeep, kCopy, kMigrate };

// Where a replica in the new placement comes from.
struct NewSlot {
  SlotKind kind = SlotKind::kKeep;
  uint32_t from_rank = 0;   // kKeep: this rank; kCopy: the source; kMigrate: the rank it leaves
  uint32_t from_index = 0;  // its local index there in the old map
  HbmBlock fresh;           // kCopy: the new block
};

bool same_replicas(const ic::ExpertMap& a, const ic::ExpertMap& b) {
  for (uint32_t e = 0; e < a.num_experts(); ++e) {
    std::vector<uint32_t> x = a.replicas(e), y = b.replicas(e);
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    if (x != y) return false;
  }
  return true;
}

}  // namespace

Status DeviceWeights::replace_experts(rt::Runtime& runtime, std::span<const ic::ExpertMap> maps,
                                      ExpertMoveStats* stats) {
  State& s = *s_;
  const ModelConfig& c = s.config;
  const uint32_t M = c.num_moe_layers();
  const uint32_t R = static_cast<uint32_t>(s.placement.npus.size());
  if (maps.size() != M)
    return make_error(StatusCode::kInvalidArgument,
                      "replace experts of '%s': %zu maps given for %u MoE layers", c.name.c_str(),
                      maps.size(), M);
  for (uint32_t m = 0; m < M; ++m) {
    const ic::ExpertMap& map = maps[m];
    if (map.num_experts() != c.num_experts || map.num_ranks() != R || map.num_shared() != 0)
      return make_error(StatusCode::kInvalidArgument,
                        "replace experts of '%s': MoE layer %u's map has %u experts over %u "
                        "ranks and %u shared; the engine has %u experts over %u ranks, none shared",
                        c.name.c_str(), m, map.num_experts(), map.num_ranks(), map.num_shared(),
                        c.num_experts, R);
    Status v = map.validate();
    if (!v.ok()) return v.with_context(strformat("replace experts: MoE layer %u", m));
  }
  mem::GlobalMemory& memory = runtime.memory();
  const uint64_t n = uint64_t{c.hidden} * c.expert_intermediate;
  const uint64_t bytes = 3 * n * 2;
  ExpertMoveStats st;

  // Plan: per (layer, rank) whose expert set changes, where each new local replica comes from.
  std::vector<std::vector<NewSlot>> plan(uint64_t{M} * R);
  std::vector<bool> changed(uint64_t{M} * R, false);
  for (uint32_t m = 0; m < M; ++m) {
    const ic::ExpertMap& from = s.layer_maps[m];
    const ic::ExpertMap& to = maps[m];
    for (uint32_t r = 0; r < R; ++r) {
      const std::vector<ic::LocalExpert> a = from.local_experts(r), b = to.local_experts(r);
      bool same = a.size() == b.size();
      for (size_t j = 0; same && j < a.size(); ++j) same = a[j].expert == b[j].expert;
      if (same) continue;
      changed[uint64_t{m} * R + r] = true;
      plan[uint64_t{m} * R + r].resize(b.size());
    }
    for (uint32_t e = 0; e < c.num_experts; ++e) {
      const std::vector<uint32_t>& old_ranks = from.replicas(e);
      std::vector<uint32_t> stay, leaving, arriving;
      for (uint32_t r : old_ranks) {
        const auto& nr = to.replicas(e);
        (std::find(nr.begin(), nr.end(), r) != nr.end() ? stay : leaving).push_back(r);
      }
      for (uint32_t r : to.replicas(e))
        if (std::find(old_ranks.begin(), old_ranks.end(), r) == old_ranks.end()) arriving.push_back(r);
      for (uint32_t r : stay) {
        if (!changed[uint64_t{m} * R + r]) continue;
        NewSlot& slot = plan[uint64_t{m} * R + r][to.local_index(r, false, e)];
        slot.kind = SlotKind::kKeep;
        slot.from_rank = r;
        slot.from_index = static_cast<uint32_t>(from.local_index(r, false, e));
      }
      const uint32_t source = stay.empty() ? leaving.front() : stay.front();
      for (size_t i = 0; i < arriving.size(); ++i) {
        const uint32_t dst = arriving[i];
        NewSlot& slot = plan[uint64_t{m} * R + dst][to.local_index(dst, false, e)];
        if (s.placement.expert_own_pages && i < leaving.size()) {
          slot.kind = SlotKind::kMigrate;
          slot.from_rank = leaving[i];
        } else {
          slot.kind = SlotKind::kCopy;
          slot.from_rank = source;
        }
        slot.from_index = static_cast<uint32_t>(from.local_index(slot.from_rank, false, e));
      }
    }
  }
  auto old_block = [&](uint32_t m, uint32_t rank, uint32_t index) -> HbmBlock& {
    return s.expert_blocks[uint64_t{m} * R + rank][index];
  };

  // 1. Copies into fresh blocks, pulled by each destination NPU's transfer engine (its
  //    fabric stream is kept for later re-placements).
  const int64_t t_copy = wall_now_ns();
  std::unordered_map<dev::NpuId, rt::Stream*> streams;
  std::unordered_map<dev::NpuId, ModelTime> stream_start;
  for (uint32_t m = 0; m < M; ++m)
    for (uint32_t r = 0; r < R; ++r)
      for (NewSlot& slot : plan[uint64_t{m} * R + r]) {
        if (slot.kind != SlotKind::kCopy) continue;
        const dev::NpuId npu = s.placement.npus[r];
        const std::string what = strformat("layer %u expert replica on EP rank %u", c.num_dense_layers + m, r);
        auto block = s.placement.expert_own_pages ? HbmBlock::allocate_own_page(memory, npu, bytes, what)
                                                  : HbmBlock::allocate(memory, npu, bytes, what);
        if (!block.ok()) return Status(block.status()).with_context("replace experts");
        slot.fresh = std::move(block).value();
        rt::Stream*& stream = streams[npu];
        if (stream == nullptr) {
          std::unique_ptr<rt::Stream>& kept = s.fabric_streams[npu];
          if (!kept) {
            auto created = rt::Stream::create(runtime, npu, rt::StreamKind::kFabric);
            if (!created.ok())
              return Status(created.status()).with_context(strformat("replace experts: fabric stream of NPU %u", npu));
            kept = std::move(created).value();
          }
          stream = kept.get();
          stream_start[npu] = stream->modelled_time();
        }
        MOE_TRY(stream->copy(slot.fresh.addr(), old_block(m, slot.from_rank, slot.from_index).addr(), bytes));
        ++st.replicas_copied;
        st.fabric_bytes += bytes;
      }
  double copy_ns = 0;
  for (auto& [npu, stream] : streams) {
    Status synced = stream->synchronize();
    if (!synced.ok()) return synced.with_context(strformat("replace experts: copies to NPU %u", npu));
    copy_ns = std::max(copy_ns, double((stream->modelled_time() - stream_start[npu]).ns));
  }

  st.copy_wall_ns = wall_now_ns() - t_copy;

  // 2. Working copies of the replicas new to a rank (from the bytes in HBM: a block about to
  //    migrate is read where it is now; its bytes do not change). Kept replicas keep theirs.
  const int64_t t_banks = wall_now_ns();
  std::vector<ExpertBank> fresh_banks(uint64_t{M} * R);
  for (uint32_t m = 0; m < M; ++m)
    for (uint32_t r = 0; r < R; ++r) {
      std::vector<ExpertWeights> views;
      for (const NewSlot& slot : plan[uint64_t{m} * R + r]) {
        if (slot.kind == SlotKind::kKeep) continue;
        const HbmBlock& b = slot.kind == SlotKind::kCopy ? slot.fresh : old_block(m, slot.from_rank, slot.from_index);
        const uint16_t* base = b.as<const uint16_t>();
        views.push_back({{base, n}, {base + n, n}, {base + 2 * n, n}});
      }
      if (views.empty()) continue;
      auto bank = ExpertBank::create(c.hidden, c.expert_intermediate, views, s.placement.precision);
      if (!bank.ok())
        return Status(bank.status()).with_context(strformat("replace experts: layer %u EP rank %u",
                                                            c.num_dense_layers + m, r));
      fresh_banks[uint64_t{m} * R + r] = std::move(bank).value();
      st.working_copies_built += static_cast<uint32_t>(views.size());
    }
  st.working_copy_wall_ns = wall_now_ns() - t_banks;

  // 3. Hand-overs by page migration; undone on failure.
  std::vector<std::pair<HbmBlock*, dev::NpuId>> migrated;  // block, where it was
  std::vector<uint64_t> in_bytes(R, 0), out_bytes(R, 0);
  for (uint32_t m = 0; m < M; ++m)
    for (uint32_t r = 0; r < R; ++r)
      for (NewSlot& slot : plan[uint64_t{m} * R + r]) {
        if (slot.kind != SlotKind::kMigrate) continue;
        HbmBlock& b = old_block(m, slot.from_rank, slot.from_index);
        const dev::NpuId was = b.npu();
        mem::MigrateResult moved;
        Status ms = b.migrate_to(s.placement.npus[r], &moved);
        if (!ms.ok()) {
          for (auto it = migrated.rbegin(); it != migrated.rend(); ++it) {
            Status back = it->first->migrate_to(it->second);
            if (!back.ok()) MOE_WARN("replace experts: moving a replica back to NPU %u failed: %s",
                                     it->second, back.to_string().c_str());
          }
          return ms.with_context(strformat("replace experts: layer %u replica from EP rank %u to %u",
                                           c.num_dense_layers + m, slot.from_rank, r));
        }
        migrated.push_back({&b, was});
        ++st.replicas_migrated;
        st.fabric_bytes += moved.bytes_copied;
        out_bytes[slot.from_rank] += moved.bytes_copied;
        in_bytes[r] += moved.bytes_copied;
      }
  double migrate_ns = 0;
  const dev::Topology& topo = runtime.topology();
  for (uint32_t r = 0; r < R; ++r) {
    const double gbps = topo.npu_fabric_bandwidth_gbps(s.placement.npus[r]);
    if (gbps > 0) migrate_ns = std::max(migrate_ns, double(std::max(in_bytes[r], out_bytes[r])) / gbps);
  }
  st.modelled_ns = copy_ns + migrate_ns;

  // 4. Commit (cannot fail): blocks, banks, maps, byte counts. Blocks left behind are freed
  //    with the old lists.
  std::vector<std::vector<HbmBlock>> next(uint64_t{M} * R);
  for (uint32_t m = 0; m < M; ++m)
    for (uint32_t r = 0; r < R; ++r) {
      const uint64_t i = uint64_t{m} * R + r;
      if (!changed[i]) continue;
      for (NewSlot& slot : plan[i])
        next[i].push_back(slot.kind == SlotKind::kCopy ? std::move(slot.fresh)
                                                       : std::move(old_block(m, slot.from_rank, slot.from_index)));
    }
  for (uint64_t i = 0; i < next.size(); ++i) {
    const uint32_t r = static_cast<uint32_t>(i % R);
    if (!changed[i]) {
      next[i] = std::move(s.expert_blocks[i]);
      continue;
    }
    for (const HbmBlock& b : s.expert_blocks[i]) st.replicas_freed += b.valid() ? 1 : 0;
    s.hbm_per_rank[r] += next[i].size() * bytes;
    s.hbm_per_rank[r] -= s.expert_blocks[i].size() * bytes;
    // The rank's new bank: kept experts move over from its old bank, new ones from the
    // working copies built above (same shape and precision: take_expert cannot fail).
    ExpertBank& old_bank = s.banks[i / R][r];
    ExpertBank bank = ExpertBank::empty(c.hidden, c.expert_intermediate, s.placement.precision);
    uint32_t next_fresh = 0;
    for (const NewSlot& slot : plan[i]) {
      const Status taken = slot.kind == SlotKind::kKeep ? bank.take_expert(old_bank, slot.from_index)
                                                        : bank.take_expert(fresh_banks[i], next_fresh++);
      MOE_ASSERT(taken.ok());
    }
    old_bank = plan[i].empty() ? ExpertBank{} : std::move(bank);
    ++st.banks_rebuilt;
  }
  s.expert_blocks = std::move(next);  // the old lists (and the blocks still in them) go
  s.layer_maps.assign(maps.begin(), maps.end());
  if (stats != nullptr) *stats = st;
  return ok_status();
}

Status Engine::apply_expert_maps(std::span<const ic::ExpertMap> per_moe_layer,
                                 PlacementChangeStats* stats) {
  EngineState& s = *s_;
  const int64_t t0 = wall_now_ns();
  PlacementChangeStats out;
  for (uint32_t m = 0; m < per_moe_layer.size() && m < s.config.num_moe_layers(); ++m)
    if (per_moe_layer[m].num_experts() == s.config.num_experts &&
        per_moe_layer[m].num_ranks() == s.npus.size() &&
        !same_replicas(s.weights.layer_map(m), per_moe_layer[m]))
      ++out.layers_changed;
  Status st = s.weights.replace_experts(s.runtime, per_moe_layer, &out.moves);
  if (!st.ok()) return st.with_context(strformat("engine '%s'", s.config.name.c_str()));
  out.wall_ns = wall_now_ns() - t0;
  MOE_INFO("engine '%s': experts re-placed in %u MoE layers: %u copied, %u migrated, %u freed, "
           "%s over the fabric, %.1f us modelled, %.2f ms wall", s.config.name.c_str(),
           out.layers_changed, out.moves.replicas_copied, out.moves.replicas_migrated,
           out.moves.replicas_freed, format_bytes(double(out.moves.fabric_bytes)).c_str(),
           out.moves.modelled_ns / 1e3, double(out.wall_ns) / 1e6);
  if (stats != nullptr) *stats = out;
  return ok_status();
}

}  // namespace moe::models
