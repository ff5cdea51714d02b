// Logging with levels.
//
// One process-wide logger writing single lines to stderr (or to a sink a test installs):
//   [moe <wall seconds> <level> t<thread>] file:line message
// The level comes from the base option LOG_LEVEL (environment MOE_LOG_LEVEL=error|warn|
// info|debug|trace). A disabled level costs one relaxed atomic load. Thread-safe: a line is
// written whole.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "runtime/base/strformat.h"

namespace moe::log {

enum class Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

bool enabled(Level level);
Level current_level();
void set_level(Level level);
// Parses "error", "warn", "info", "debug", "trace" (or 0..4). Returns false if unknown.
bool parse_level(std::string_view text, Level* out);
std::string_view level_name(Level level);

void write(Level level, const char* file, int line, const char* fmt, ...) MOE_PRINTF_LIKE(4, 5);

// Replaces the output (stderr) with `sink`; an empty function restores stderr. Returns the
// previous sink. For tests that assert on what was logged.
using Sink = std::function<void(Level, const std::string& line)>;
Sink set_sink(Sink sink);

}  // namespace moe::log

#define MOE_LOG(level, ...)                                                          \
  do {                                                                               \
    if (::moe::log::enabled(level)) ::moe::log::write(level, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define MOE_ERROR(...) MOE_LOG(::moe::log::Level::kError, __VA_ARGS__)
#define MOE_WARN(...) MOE_LOG(::moe::log::Level::kWarn, __VA_ARGS__)
#define MOE_INFO(...) MOE_LOG(::moe::log::Level::kInfo, __VA_ARGS__)
#define MOE_DEBUG(...) MOE_LOG(::moe::log::Level::kDebug, __VA_ARGS__)
#define MOE_TRACE(...) MOE_LOG(::moe::log::Level::kTrace, __VA_ARGS__)
