// Signal visibility table (see signal_table.h for the protocol).
//
// Open addressing with linear probing over a power-of-two array; a key is claimed with one
// compare-exchange and never released, so a lookup that meets an empty slot knows the word
// is absent. Each entry's history is guarded by a one-word spin lock: updates of one word
// are rare and short (a few stores), so a lock is simpler than a seqlock here.
#include "interconnect/signal_table.h"

#include <bit>
#include <thread>

#include "interconnect/ic_stats.h"
#include "runtime/base/clock.h"

namespace moe::ic {
namespace {

uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x7fb5d329728ea185ull;
  x ^= x >> 27;
  x *= 0x81dadef4bc2dd44dull;
  return x ^ (x >> 33);
}

// The wall time an in-flight update may take to be recorded before a waiter stops waiting
// for it (the updater is never blocked there; this only guards against a bug hanging).
constexpr int64_t kInFlightLimitNs = 2'000'000'000;

}  // namespace

SignalTable::SignalTable(uint32_t capacity_words)
    : capacity_(std::bit_ceil(std::max<uint32_t>(capacity_words, 16))),
      entries_(new Entry[capacity_]) {}

uint32_t SignalTable::find(uint64_t word, bool insert) const {
  const uint32_t mask = capacity_ - 1;
  uint32_t i = static_cast<uint32_t>(mix(word)) & mask;
  for (uint32_t probes = 0; probes < capacity_; ++probes, i = (i + 1) & mask) {
    Entry& e = entries_[i];
    uint64_t k = e.key.load(std::memory_order_acquire);
    if (k == word) return i;
    if (k == 0) {
      if (!insert) return kNoSlot;
      if (e.key.compare_exchange_strong(k, word, std::memory_order_acq_rel)) return i;
      if (k == word) return i;  // another thread claimed it for the same word
    }
  }
  return kNoSlot;
}

void SignalTable::lock(Entry& e) const {
  uint32_t spins = 0;
  while (e.lock.exchange(1, std::memory_order_acquire) != 0)
    if (++spins % 64 == 0) std::this_thread::yield();
}

uint32_t SignalTable::begin_update(GlobalAddr word) {
  const uint32_t slot = find(word.value, /*insert=*/true);
  if (slot == kNoSlot) {
    stats_counters::kSignalTableFull.add();
    return kNoSlot;
  }
  entries_[slot].in_flight.fetch_add(1, std::memory_order_seq_cst);
  return slot;
}

void SignalTable::end_update(uint32_t slot, bool applied, uint64_t value_after,
                             double visible_ns) {
  if (slot == kNoSlot) return;
  Entry& e = entries_[slot];
  if (applied) {
    lock(e);
    const uint32_t at = e.count % kSignalHistory;
    e.value[at] = value_after;
    e.time_ns[at] = visible_ns;
    ++e.count;
    unlock(e);
  }
  e.in_flight.fetch_sub(1, std::memory_order_seq_cst);
}

bool SignalTable::visible_time(GlobalAddr word, Cmp cmp, uint64_t value,
                               double* visible_ns) const {
  const uint32_t slot = find(word.value, /*insert=*/false);
  if (slot == kNoSlot) return false;
  Entry& e = entries_[slot];
  if (e.in_flight.load(std::memory_order_seq_cst) != 0) {
    const int64_t deadline = wall_now_ns() + kInFlightLimitNs;
    while (e.in_flight.load(std::memory_order_seq_cst) != 0 && wall_now_ns() < deadline)
      std::this_thread::yield();
  }
  lock(e);
  const uint32_t recorded = std::min(e.count, kSignalHistory);
  bool found = false;
  double t = 0;
  for (uint32_t back = 0; back < recorded; ++back) {
    const uint32_t at = (e.count - 1 - back) % kSignalHistory;
    if (!compare(e.value[at], cmp, value)) break;
    t = e.time_ns[at];
    found = true;
  }
  unlock(e);
  if (found) *visible_ns = t;
  return found;
}

}  // namespace moe::ic
