// When each signal word's updates became visible, in modelled time (transport.h, "Modelled
// time"): the part of the transport that lets wait_until advance a waiter's clock to the
// moment the condition became true, although the simulator executed the update eagerly in
// wall time.
//
// Protocol, for every signal or atomic update a transport makes:
//   slot = begin_update(word)            before handing the update to the driver
//   ... the driver executes it ...
//   end_update(slot, applied, value_after, visible_ns)
// and for a waiter that has seen `word cmp value` hold in memory:
//   visible_time(word, cmp, value, &t)
// visible_time first waits (briefly: the updater is between the driver call and
// end_update, never blocked) until no update of the word is in flight, so an update seen in
// memory is always seen in the table too. The memory word and the in-flight mark are both
// accessed sequentially consistently, which is what makes that argument hold.
//
// Each word keeps its last kSignalHistory updates as (value after, modelled time). The time
// reported is that of the oldest update in the newest run of recorded updates whose values
// all satisfy the condition: for a counter pushed past the threshold by a faster writer,
// the update that first crossed it; for a flag reset and set again, the latest set.
//
// Capacity is fixed at construction (open addressing, no allocation after it, no removal:
// a word's entry is reused for as long as the table lives). When it is full, begin_update
// returns kNoSlot, the update goes unrecorded (ic.signal_table_full counts it) and waiters
// on that word keep their own clock.
// Thread-safety: every function may be called from any thread concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "interconnect/transport.h"

namespace moe::ic {

inline constexpr uint32_t kSignalHistory = 8;

class SignalTable {
 public:
  static constexpr uint32_t kNoSlot = ~0u;

  explicit SignalTable(uint32_t capacity_words);
  SignalTable(const SignalTable&) = delete;
  SignalTable& operator=(const SignalTable&) = delete;

  // `word`: the global address of the signal word (not null).
  uint32_t begin_update(GlobalAddr word);
  // `applied`: whether the update changed memory (false: it failed, or a compare-swap that
  // did not swap). Precondition: slot came from begin_update (kNoSlot is ignored).
  void end_update(uint32_t slot, bool applied, uint64_t value_after, double visible_ns);
  // The modelled time `word cmp value` became true; false when no recorded update satisfies
  // it (the word was written otherwise, or never recorded).
  bool visible_time(GlobalAddr word, Cmp cmp, uint64_t value, double* visible_ns) const;

  uint32_t capacity() const { return capacity_; }

 private:
  struct Entry {
    std::atomic<uint64_t> key{0};  // the word's address; 0: empty
    std::atomic<uint32_t> in_flight{0};
    std::atomic<uint32_t> lock{0};
    uint32_t count = 0;  // updates recorded, ever (the ring position)
    uint64_t value[kSignalHistory] = {};
    double time_ns[kSignalHistory] = {};
  };
  // The entry of `word`, inserting it when `insert`; kNoSlot when absent (or full).
  uint32_t find(uint64_t word, bool insert) const;
  void lock(Entry& e) const;
  void unlock(Entry& e) const { e.lock.store(0, std::memory_order_release); }

  uint32_t capacity_ = 0;
  std::unique_ptr<Entry[]> entries_;
};

}  // namespace moe::ic
