// The two clocks (docs/architecture.md, "Two clocks").
//
// Wall time: what the host really spent, from a monotonic clock, in nanoseconds.
// Modelled time: what the simulated (or real) supernode would take, from the timing model.
// The two never mix: ModelTime is its own type, so a wall duration cannot be added to it by
// accident. Every report says which clock a figure is on.
#pragma once

#include <algorithm>
#include <cstdint>

namespace moe {

// Nanoseconds since an arbitrary fixed origin, from CLOCK_MONOTONIC.
int64_t wall_now_ns();

// A point or a span of modelled time, in nanoseconds. Fractional nanoseconds are kept
// because bytes over bandwidth rarely lands on a whole nanosecond.
struct ModelTime {
  double ns = 0.0;

  static constexpr ModelTime from_ns(double v) { return ModelTime{v}; }
  static constexpr ModelTime from_us(double v) { return ModelTime{v * 1e3}; }
  static constexpr ModelTime from_ms(double v) { return ModelTime{v * 1e6}; }
  constexpr double us() const { return ns * 1e-3; }
  constexpr double ms() const { return ns * 1e-6; }
  constexpr double seconds() const { return ns * 1e-9; }

  constexpr ModelTime operator+(ModelTime o) const { return ModelTime{ns + o.ns}; }
  constexpr ModelTime operator-(ModelTime o) const { return ModelTime{ns - o.ns}; }
  constexpr ModelTime& operator+=(ModelTime o) { ns += o.ns; return *this; }
  constexpr ModelTime operator*(double k) const { return ModelTime{ns * k}; }
  constexpr auto operator<=>(const ModelTime&) const = default;
};

constexpr ModelTime max(ModelTime a, ModelTime b) { return a.ns < b.ns ? b : a; }
constexpr ModelTime min(ModelTime a, ModelTime b) { return a.ns < b.ns ? a : b; }

// Time to move `bytes` at `gb_per_s` (10^9 bytes per second): bytes / GB/s = ns.
constexpr ModelTime transfer_time(double bytes, double gb_per_s) {
  return ModelTime{gb_per_s > 0 ? bytes / gb_per_s : 0.0};
}

}  // namespace moe
