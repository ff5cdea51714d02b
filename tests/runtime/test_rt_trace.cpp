// Traces: the file written after eager launches and a graph replay is valid JSON, with one
// modelled span per completed kernel on its NPU's engine lane and wall spans per host thread.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/event.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"
#include "runtime/trace.h"

namespace moe::rt {
namespace {

// A minimal JSON grammar check (RFC 8259 values): returns true when `s` is exactly one value.
struct JsonChecker {
  const std::string& s;
  size_t i = 0;
  void ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i; }
  bool lit(const char* w) {
    const std::string t(w);
    if (s.compare(i, t.size(), t) != 0) return false;
    i += t.size();
    return true;
  }
  bool string() {
    if (s[i] != '"') return false;
    for (++i; i < s.size(); ++i) {
      if (s[i] == '\\') { ++i; continue; }
      if (s[i] == '"') { ++i; return true; }
      if (static_cast<unsigned char>(s[i]) < 0x20) return false;
    }
    return false;
  }
  bool number() {
    const size_t start = i;
    if (s[i] == '-') ++i;
    while (i < s.size() && (isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == 'e' ||
                            s[i] == 'E' || s[i] == '+' || s[i] == '-'))
      ++i;
    return i > start && isdigit(static_cast<unsigned char>(s[i - 1]));
  }
  bool value() {
    ws();
    if (i >= s.size()) return false;
    const char c = s[i];
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i;
      ws();
      if (s[i] == close) { ++i; return true; }
      for (;;) {
        if (c == '{') {
          ws();
          if (!string()) return false;
          ws();
          if (s[i++] != ':') return false;
        }
        if (!value()) return false;
        ws();
        if (s[i] == ',') { ++i; continue; }
        if (s[i] == close) { ++i; return true; }
        return false;
      }
    }
    if (c == '"') return string();
    if (c == 't') return lit("true");
    if (c == 'f') return lit("false");
    if (c == 'n') return lit("null");
    return number();
  }
  bool whole() { bool ok = value(); ws(); return ok && i == s.size(); }
};

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST_CASE("rt.trace: the Chrome trace is valid JSON with the expected lanes") {
  RuntimeOptions o;
  o.supernode = "n8";
  o.open_transport = false;
  auto rt = Runtime::open(o);
  REQUIRE(rt.ok());
  Trace trace;
  (*rt)->set_trace(&trace);
  auto a = Stream::create(**rt, 2);
  auto b = Stream::create(**rt, 7);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  Kernel k;
  k.name = "expert \"ffn\"";  // a name that needs escaping
  k.flops = 1e11;
  for (int i = 0; i < 3; ++i) REQUIRE((*a)->launch(k).ok());
  Graph g;
  std::vector<Stream*> both = {a->get(), b->get()};
  REQUIRE(g.capture_begin(both).ok());
  k.name = "replayed";
  REQUIRE((*a)->launch(k).ok());
  REQUIRE((*b)->launch(k).ok());
  REQUIRE(g.capture_end().ok());
  REQUIRE(g.replay().ok());
  REQUIRE(g.replay().ok());
  REQUIRE((*a)->synchronize().ok());
  REQUIRE((*b)->synchronize().ok());
  CHECK(trace.num_device_spans() == 7);
  CHECK(trace.num_host_spans() == 5);  // 3 launches + 2 replays

  const std::string path = "/tmp/moe_rt_trace_test_" + std::to_string(::getpid()) + ".json";
  REQUIRE(trace.write(path).ok());
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  std::remove(path.c_str());
  JsonChecker checker{text};
  CHECK(checker.whole());
  CHECK(text.rfind("{\"traceEvents\":[", 0) == 0);
  CHECK(count_of(text, "\"ph\":\"X\"") == 12);
  CHECK(count_of(text, "\"NPU 2 (modelled)\"") == 1);
  CHECK(count_of(text, "\"NPU 7 (modelled)\"") == 1);
  CHECK(count_of(text, "\"compute die 0\"") == 2);
  CHECK(count_of(text, "\"host (wall)\"") == 1);
  CHECK(count_of(text, "\"host thread 0\"") == 1);
  CHECK(count_of(text, "\"name\":\"replayed\"") == 4);
  CHECK(count_of(text, "\"name\":\"graph.replay\"") == 2);
  CHECK(count_of(text, "expert \\\"ffn\\\"") == 6);  // 3 modelled + 3 wall
  CHECK(trace.write("/nonexistent-dir/trace.json").code() == StatusCode::kNotFound);

  std::string broken = text.substr(0, text.size() - 1);
  JsonChecker bad{broken};
  CHECK(!bad.whole());
}

}  // namespace
}  // namespace moe::rt
