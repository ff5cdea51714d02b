// Status codes shared by every layer.
//
// Design: errors cross layer boundaries as values, never as exceptions (exceptions are
// reserved for the edges: config parsing in tools, the daemon's protocol). A Status is one
// word when OK; an error carries a code and a human-readable message that names what was
// wrong. Codes are grouped by *what failed* (the caller's argument, a resource, a fabric
// link, a device, a whole node), so a caller can react to the group without knowing every
// code: a link failure is retried on another plane, a device failure is reported.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/base/strformat.h"

namespace moe {

// What failed. The numeric value of a StatusCode is group * 100 + n.
enum class StatusGroup : uint8_t {
  kOk = 0,
  kArgument = 1,  // the caller passed something wrong: fix the call
  kResource = 2,  // memory, queue slots, time ran out: retry later or ask for less
  kLink = 3,      // a fabric link or plane failed or lost/corrupted a packet
  kDevice = 4,    // an NPU or its HBM failed
  kNode = 5,      // a whole node or NPU is gone or unreachable
  kInternal = 6,  // a bug in this runtime: report it
};

enum class StatusCode : uint16_t {
  kOk = 0,
  // argument
  kInvalidArgument = 100,
  kOutOfRange = 101,
  kNotFound = 102,
  kAlreadyExists = 103,
  kFailedPrecondition = 104,
  kParseError = 105,
  kUnsupported = 106,
  // resource
  kOutOfMemory = 200,
  kResourceExhausted = 201,
  kTimeout = 202,
  kBusy = 203,
  kCancelled = 204,
  // link
  kLinkDown = 300,
  kPlaneDown = 301,
  kPacketLost = 302,
  kPacketCorrupt = 303,
  // device
  kDeviceError = 400,
  kHbmError = 401,
  // node
  kNpuLost = 500,
  kNodeUnreachable = 501,
  // internal
  kInternal = 600,
};

constexpr StatusGroup status_group(StatusCode code) {
  return static_cast<StatusGroup>(static_cast<uint16_t>(code) / 100);
}
std::string_view status_code_name(StatusCode code);
std::string_view status_group_name(StatusGroup group);

// A value that says whether an operation succeeded and, if not, what went wrong.
// Cheap to return when OK (a null pointer). Thread-compatible.
class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status ok_status() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  StatusGroup group() const { return status_group(code()); }
  // The message, without the code name. Empty when OK.
  const std::string& message() const;
  // "CODE_NAME: message", or "OK".
  std::string to_string() const;

  // Prepends context ("while doing X: ") to the message; no-op when OK.
  Status& with_context(std::string_view context);

  Status(const Status& other) : rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  // Marks the status as looked at, for call sites that deliberately ignore a result.
  void ignore() const {}

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

inline Status ok_status() { return Status(); }

// printf-style constructor: make_error(StatusCode::kOutOfMemory, "npu %u: asked %zu", ...).
Status make_error(StatusCode code, const char* fmt, ...) MOE_PRINTF_LIKE(2, 3);

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_ = Status(StatusCode::kInternal, "StatusOr built from OK status");
  }
  StatusOr(T value) : value_(std::move(value)), has_value_(true) {}  // NOLINT

  bool ok() const { return has_value_; }
  const Status& status() const { return status_; }
  // Precondition: ok().
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T&& value() && { return std::move(value_); }
  T* operator->() { return &value_; }
  const T* operator->() const { return &value_; }
  T& operator*() { return value_; }
  const T& operator*() const { return value_; }

 private:
  Status status_;
  T value_{};
  bool has_value_ = false;
};

}  // namespace moe
