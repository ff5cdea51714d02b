#include "tools/lib/bench/harness.h"

#include "runtime/base/json.h"

namespace moe::bench {

std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}

Registrar::Registrar(const char* name, BenchFn fn) { registry().push_back(Entry{name, fn}); }

std::string records_to_json(const std::vector<Record>& records) {
  JsonWriter w;
  w.begin_array();
  for (const Record& r : records) {
    w.begin_object();
    w.key("name").value(r.name);
    w.key("value").value(r.value);
    w.key("unit").value(r.unit);
    w.key("baseline").value(r.baseline);
    w.key("ratio").value(r.ratio);
    w.key("clock").value(r.clock);
    w.key("ok").value(r.ok);
    if (!r.note.empty()) w.key("note").value(r.note);
    w.end_object();
  }
  w.end_array();
  return w.take();
}

}  // namespace moe::bench
