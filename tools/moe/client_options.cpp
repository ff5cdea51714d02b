// The argument cursor keeps parsing strict: a number must be all digits (no sign, no
// trailing text), a flag's value must be present, and every message names the command and
// the flag so that a script's author can see what was wrong.
#include "tools/moe/client_options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "runtime/base/strformat.h"

namespace moe::tools {

bool ArgCursor::next() {
  if (index_ + 1 >= argc_) return false;
  ++index_;
  arg_ = argv_[index_];
  return true;
}

bool ArgCursor::take(const char** out) {
  if (index_ + 1 >= argc_) {
    usage_error(strformat("%s needs a value", arg_.c_str()));
    return false;
  }
  *out = argv_[++index_];
  return true;
}

bool ArgCursor::value(std::string* out) {
  const char* v = nullptr;
  if (!take(&v)) return false;
  *out = v;
  return true;
}

bool ArgCursor::value(uint64_t* out) {
  const char* v = nullptr;
  if (!take(&v)) return false;
  bool digits = *v != '\0';
  for (const char* c = v; *c; ++c) digits = digits && *c >= '0' && *c <= '9';
  errno = 0;
  const unsigned long long x = digits ? std::strtoull(v, nullptr, 10) : 0;
  if (!digits || errno == ERANGE) {
    usage_error(strformat("%s expects a non-negative integer, got '%s'", arg_.c_str(), v));
    return false;
  }
  *out = x;
  return true;
}

bool ArgCursor::value(uint32_t* out) {
  uint64_t x = 0;
  if (!value(&x)) return false;
  if (x > std::numeric_limits<uint32_t>::max()) {
    usage_error(strformat("%s: %llu is too large (at most %u)", arg_.c_str(),
                          static_cast<unsigned long long>(x), std::numeric_limits<uint32_t>::max()));
    return false;
  }
  *out = static_cast<uint32_t>(x);
  return true;
}

bool ArgCursor::value(double* out) {
  const char* v = nullptr;
  if (!take(&v)) return false;
  char* end = nullptr;
  const double x = std::strtod(v, &end);
  if (end == v || *end != '\0' || !std::isfinite(x)) {
    usage_error(strformat("%s expects a number, got '%s'", arg_.c_str(), v));
    return false;
  }
  *out = x;
  return true;
}

bool ArgCursor::value(float* out) {
  double x = 0;
  if (!value(&x)) return false;
  *out = static_cast<float>(x);
  return true;
}

int ArgCursor::unknown() const {
  return usage_error(strformat("unknown argument '%s' (see moe %s --help)", arg_.c_str(),
                               command_.c_str()));
}

int ArgCursor::usage_error(const std::string& message) const {
  std::fprintf(stderr, "moe %s: %s\n", command_.c_str(), message.c_str());
  return kUsageExit;
}

int report_failure(std::string_view command, const Status& status) {
  std::fprintf(stderr, "moe %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               status.to_string().c_str());
  return 1;
}

StatusOr<std::unique_ptr<Client>> connect_daemon(const std::string& socket_path) {
  ClientOptions options;
  options.socket_path = socket_path;
  return Client::connect(options);
}

std::string format_duration_ns(double ns) {
  if (ns < 1e3) return strformat("%.0f ns", ns);
  if (ns < 1e6) return strformat("%.1f us", ns / 1e3);
  if (ns < 1e9) return strformat("%.2f ms", ns / 1e6);
  return strformat("%.2f s", ns / 1e9);
}

const char* source_name(proto::ModelSource source) {
  switch (source) {
    case proto::ModelSource::kBuiltin: return "builtin";
    case proto::ModelSource::kReferenceConfig: return "reference-config";
    case proto::ModelSource::kSafetensors: return "safetensors";
  }
  return "unknown";
}

const char* precision_name(proto::Precision precision) {
  return precision == proto::Precision::kInt8 ? "int8" : "bf16";
}

const char* mode_name(proto::ExecMode mode) {
  return mode == proto::ExecMode::kTiming ? "timing" : "functional";
}

const char* state_name(proto::DaemonState state) {
  switch (state) {
    case proto::DaemonState::kReady: return "ready";
    case proto::DaemonState::kDraining: return "draining";
    case proto::DaemonState::kStopping: return "stopping";
  }
  return "unknown";
}

const char* finish_reason_name(proto::FinishReason reason) {
  switch (reason) {
    case proto::FinishReason::kLength: return "length";
    case proto::FinishReason::kCancelled: return "cancelled";
    case proto::FinishReason::kError: return "error";
    case proto::FinishReason::kStop: return "stop";
  }
  return "unknown";
}

}  // namespace moe::tools
