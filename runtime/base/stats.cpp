#include "runtime/base/stats.h"

#include <algorithm>
#include <mutex>
#include <vector>

namespace moe::stats {
namespace {

struct Entry {
  const char* layer;
  const char* name;
  const char* unit;
  const char* help;
  Counter* counter;  // exactly one of counter/gauge is set
  Gauge* gauge;
};

struct Registry {
  std::mutex mu;
  std::vector<Entry> entries;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

void add_entry(Entry e) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries.push_back(e);
}

std::vector<Entry> sorted_entries() {
  Registry& r = registry();
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    out = r.entries;
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
    int c = std::string_view(a.layer).compare(b.layer);
    return c != 0 ? c < 0 : std::string_view(a.name) < std::string_view(b.name);
  });
  return out;
}

}  // namespace

Counter::Counter(const char* layer, const char* name, const char* unit, const char* help) {
  add_entry(Entry{layer, name, unit, help, this, nullptr});
}

Gauge::Gauge(const char* layer, const char* name, const char* unit, const char* help) {
  add_entry(Entry{layer, name, unit, help, nullptr, this});
}

void Gauge::write_json(JsonWriter& w) const {
  w.begin_object();
  w.key("current").value(current());
  w.key("peak").value(peak());
  w.key("total").value(total());
  w.end_object();
}

std::string stats_to_json() {
  JsonWriter w;
  w.begin_object();
  std::string layer;
  bool open = false;
  for (const Entry& e : sorted_entries()) {
    if (!open || layer != e.layer) {
      if (open) w.end_object();
      layer = e.layer;
      w.key(layer).begin_object();
      open = true;
    }
    w.key(e.name).begin_object();
    w.key("unit").value(e.unit);
    w.key("help").value(e.help);
    if (e.counter) {
      w.key("total").value(e.counter->total());
    } else {
      w.key("current").value(e.gauge->current());
      w.key("peak").value(e.gauge->peak());
      w.key("total").value(e.gauge->total());
    }
    w.end_object();
  }
  if (open) w.end_object();
  w.end_object();
  return w.take();
}

bool find_stat(const std::string& layer_dot_name, int64_t* total) {
  for (const Entry& e : sorted_entries()) {
    if (layer_dot_name == std::string(e.layer) + "." + e.name) {
      *total = e.counter ? e.counter->total() : e.gauge->total();
      return true;
    }
  }
  return false;
}

void reset_all() {
  for (const Entry& e : sorted_entries()) {
    if (e.counter) e.counter->reset();
    if (e.gauge) e.gauge->reset();
  }
}

}  // namespace moe::stats
