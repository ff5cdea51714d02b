#include "runtime/base/log.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "runtime/base/base_options.h"
#include "runtime/base/check.h"
#include "runtime/base/clock.h"

namespace moe::log {
namespace {

std::atomic<int> g_level{-1};  // -1: not read from the options yet

struct SinkHolder {
  std::mutex mu;
  Sink sink;
};
SinkHolder& sink_holder() {
  static SinkHolder* h = new SinkHolder();
  return *h;
}

int level_from_options() {
  Level level = Level::kWarn;
  if (!parse_level(base_options::kLogLevel.get(), &level)) level = Level::kWarn;
  return static_cast<int>(level);
}

const char* basename_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

}  // namespace

Level current_level() {
  int v = g_level.load(std::memory_order_relaxed);
  if (v < 0) {
    v = level_from_options();
    g_level.store(v, std::memory_order_relaxed);
  }
  return static_cast<Level>(v);
}

bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(current_level()); }

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool parse_level(std::string_view text, Level* out) {
  static const char* const kNames[] = {"error", "warn", "info", "debug", "trace"};
  for (int i = 0; i < 5; ++i) {
    if (text == kNames[i] || (text.size() == 1 && text[0] == '0' + i)) {
      *out = static_cast<Level>(i);
      return true;
    }
  }
  if (text == "warning") {
    *out = Level::kWarn;
    return true;
  }
  return false;
}

std::string_view level_name(Level level) {
  switch (level) {
    case Level::kError: return "ERROR";
    case Level::kWarn: return "WARN";
    case Level::kInfo: return "INFO";
    case Level::kDebug: return "DEBUG";
    case Level::kTrace: return "TRACE";
  }
  return "?";
}

void write(Level level, const char* file, int line, const char* fmt, ...) {
  static const int64_t start_ns = wall_now_ns();
  va_list args;
  va_start(args, fmt);
  std::string message = vstrformat(fmt, args);
  va_end(args);
  double seconds = static_cast<double>(wall_now_ns() - start_ns) * 1e-9;
  size_t tid = std::hash<std::thread::id>{}(std::this_thread::get_id()) % 100000;
  std::string text = strformat("[moe %9.6f %-5s t%05zu] %s:%d %s", seconds,
                               std::string(level_name(level)).c_str(), tid, basename_of(file),
                               line, message.c_str());
  SinkHolder& h = sink_holder();
  std::lock_guard<std::mutex> lock(h.mu);
  if (h.sink) {
    h.sink(level, text);
  } else {
    text += '\n';
    std::fwrite(text.data(), 1, text.size(), stderr);
  }
}

Sink set_sink(Sink sink) {
  SinkHolder& h = sink_holder();
  std::lock_guard<std::mutex> lock(h.mu);
  Sink old = std::move(h.sink);
  h.sink = std::move(sink);
  return old;
}

}  // namespace moe::log

namespace moe::detail {
void assert_failed(const char* expr, const char* file, int line) {
  moe::log::write(moe::log::Level::kError, file, line, "internal assertion failed: %s", expr);
  std::abort();
}
}  // namespace moe::detail
