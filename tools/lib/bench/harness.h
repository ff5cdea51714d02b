// The benchmark harness behind `make bench` (build/bin/moe-bench).
//
// A benchmark is a function registered with MOE_BENCHMARK(name). It measures, checks its own
// results, and adds records through the Context: value and unit, the baseline measured in the
// same run (memcpy, mimalloc, the naive version...), the ratio, which clock (wall or
// modelled), and whether its result check passed. The harness prints a table and writes all
// records to a JSON file: [{name, value, unit, baseline, ratio, clock, ok}, ...].
#pragma once

#include <string>
#include <vector>

namespace moe::bench {

struct Record {
  std::string name;      // e.g. "mem.translate_ns"
  double value = 0;
  std::string unit;      // e.g. "ns", "ops/s", "s"
  double baseline = 0;   // the same quantity for the baseline, measured in this run
  double ratio = 0;      // how the value compares with the baseline (benchmark defines it)
  std::string clock;     // "wall" or "modelled"
  bool ok = false;       // the benchmark's own result check passed
  std::string note;      // what the ratio means, the target
};

class Context {
 public:
  void record(Record r) { records_.push_back(std::move(r)); }
  const std::vector<Record>& records() const { return records_; }
  // Set by --quick: benchmarks use fewer repetitions (used by tests of the harness).
  bool quick = false;

 private:
  std::vector<Record> records_;
};

using BenchFn = void (*)(Context&);

struct Registrar {
  Registrar(const char* name, BenchFn fn);
};

struct Entry {
  std::string name;
  BenchFn fn;
};
std::vector<Entry>& registry();

std::string records_to_json(const std::vector<Record>& records);

// Keeps the compiler from deleting a computation whose result is unused.
template <typename T>
inline void do_not_optimize(T const& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

}  // namespace moe::bench

#define MOE_BENCHMARK(fn_name)                                                   \
  static void fn_name(::moe::bench::Context& ctx);                               \
  static ::moe::bench::Registrar moe_bench_registrar_##fn_name(#fn_name, fn_name); \
  static void fn_name(::moe::bench::Context& ctx)
