// Statistics, defined once and exported as JSON.
//
// Two kinds:
//  - Counter: a monotonically growing total (packets sent, retransmissions, faults).
//  - Gauge: a level with its peak and the total ever added (bytes in use, queue depth).
// Process-wide statistics are defined once as `inline Counter kX{"layer", "name", "unit",
// "help"}` in a layer's stats header and register themselves; stats_to_json() exports them
// all. Per-object statistics (an allocator's per-NPU figures) embed Gauge/Counter values
// made with the unregistered constructor and write themselves with write_json().
// Thread-safety: updates are relaxed atomics, safe from any thread; a snapshot read while
// other threads update is per-field consistent, not across fields.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "runtime/base/json.h"

namespace moe::stats {

class Counter {
 public:
  Counter() = default;  // unregistered (member of an object)
  Counter(const char* layer, const char* name, const char* unit, const char* help);
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void add(int64_t n = 1) { total_.fetch_add(n, std::memory_order_relaxed); }
  int64_t total() const { return total_.load(std::memory_order_relaxed); }
  void reset() { total_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> total_{0};
};

class Gauge {
 public:
  Gauge() = default;
  Gauge(const char* layer, const char* name, const char* unit, const char* help);
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void add(int64_t n) {
    int64_t now = current_.fetch_add(n, std::memory_order_relaxed) + n;
    total_.fetch_add(n, std::memory_order_relaxed);
    raise_peak(now);
  }
  void sub(int64_t n) { current_.fetch_sub(n, std::memory_order_relaxed); }
  void set(int64_t v) {
    current_.store(v, std::memory_order_relaxed);
    raise_peak(v);
  }
  int64_t current() const { return current_.load(std::memory_order_relaxed); }
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }
  int64_t total() const { return total_.load(std::memory_order_relaxed); }
  void reset() {
    current_.store(0, std::memory_order_relaxed);
    peak_.store(0, std::memory_order_relaxed);
    total_.store(0, std::memory_order_relaxed);
  }
  // Writes {"current":..,"peak":..,"total":..} as one JSON value.
  void write_json(JsonWriter& w) const;

 private:
  void raise_peak(int64_t v) {
    int64_t p = peak_.load(std::memory_order_relaxed);
    while (v > p && !peak_.compare_exchange_weak(p, v, std::memory_order_relaxed)) {
    }
  }
  std::atomic<int64_t> current_{0};
  std::atomic<int64_t> peak_{0};
  std::atomic<int64_t> total_{0};
};

// All registered statistics: {"layer": {"name": {"unit":..,"help":..,"total":..} or
// {"unit":..,"help":..,"current":..,"peak":..,"total":..}}}.
std::string stats_to_json();
// Value of a registered statistic by "layer.name"; false when there is none.
bool find_stat(const std::string& layer_dot_name, int64_t* total);
// Zeroes every registered statistic (tests and benchmarks between phases).
void reset_all();

}  // namespace moe::stats
