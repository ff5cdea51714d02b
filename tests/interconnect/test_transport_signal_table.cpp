// The signal visibility table on its own: which update's time a waiter gets, what happens
// when the table is full, and that updates in flight are waited for.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "interconnect/signal_table.h"

using moe::ic::Cmp;
using moe::ic::GlobalAddr;
using moe::ic::SignalTable;

TEST_CASE("ic.signal_table: the oldest update of the newest satisfying run is reported") {
  SignalTable t(64);
  const GlobalAddr w{0x1000};
  double ns = -1;
  CHECK(!t.visible_time(w, Cmp::kGe, 1, &ns));  // never updated
  for (uint64_t v = 1; v <= 5; ++v) t.end_update(t.begin_update(w), true, v, 100.0 * v);
  REQUIRE(t.visible_time(w, Cmp::kGe, 3, &ns));
  CHECK(ns == 300);  // the update that first reached 3, although 4 and 5 came later
  REQUIRE(t.visible_time(w, Cmp::kEq, 5, &ns));
  CHECK(ns == 500);
  CHECK(!t.visible_time(w, Cmp::kLt, 2, &ns));  // the newest value does not satisfy it
  // Not applied (a failed update, a compare-swap that did not swap): not recorded.
  t.end_update(t.begin_update(w), false, 99, 600);
  REQUIRE(t.visible_time(w, Cmp::kGe, 3, &ns));
  CHECK(ns == 300);
  // Set, reset, set again: the latest set.
  const GlobalAddr f{0x2000};
  t.end_update(t.begin_update(f), true, 1, 10);
  t.end_update(t.begin_update(f), true, 0, 20);
  t.end_update(t.begin_update(f), true, 1, 30);
  REQUIRE(t.visible_time(f, Cmp::kEq, 1, &ns));
  CHECK(ns == 30);
  // More updates than the history holds: the oldest still remembered.
  const GlobalAddr c{0x3000};
  for (uint64_t v = 1; v <= 3 * moe::ic::kSignalHistory; ++v)
    t.end_update(t.begin_update(c), true, v, static_cast<double>(v));
  REQUIRE(t.visible_time(c, Cmp::kGe, 1, &ns));
  CHECK(ns == 2 * moe::ic::kSignalHistory + 1);
}

TEST_CASE("ic.signal_table: a full table records nothing more and says so") {
  SignalTable t(16);
  CHECK(t.capacity() == 16);
  for (uint64_t i = 1; i <= 16; ++i) {
    const uint32_t slot = t.begin_update(GlobalAddr{i * 8});
    REQUIRE(slot != SignalTable::kNoSlot);
    t.end_update(slot, true, 1, 5);
  }
  const uint32_t none = t.begin_update(GlobalAddr{17 * 8});
  CHECK(none == SignalTable::kNoSlot);
  t.end_update(none, true, 1, 5);  // ignored
  double ns = 0;
  CHECK(!t.visible_time(GlobalAddr{17 * 8}, Cmp::kEq, 1, &ns));
  CHECK(t.visible_time(GlobalAddr{16 * 8}, Cmp::kEq, 1, &ns));  // existing words still work
}

TEST_CASE("ic.signal_table: a waiter waits for an update in flight to be recorded") {
  SignalTable t(64);
  const GlobalAddr w{0x4000};
  const uint32_t slot = t.begin_update(w);  // the driver "executes" it now...
  std::atomic<bool> recorded{false};
  std::thread updater([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    recorded = true;
    t.end_update(slot, true, 7, 1234);  // ...and the updater records it a little later
  });
  double ns = 0;
  REQUIRE(t.visible_time(w, Cmp::kEq, 7, &ns));
  CHECK(recorded.load());
  CHECK(ns == 1234);
  updater.join();
}
