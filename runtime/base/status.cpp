#include "runtime/base/status.h"

#include <cstdarg>

namespace moe {

std::string_view status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kParseError: return "PARSE_ERROR";
    case StatusCode::kUnsupported: return "UNSUPPORTED";
    case StatusCode::kOutOfMemory: return "OUT_OF_MEMORY";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kTimeout: return "TIMEOUT";
    case StatusCode::kBusy: return "BUSY";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kLinkDown: return "LINK_DOWN";
    case StatusCode::kPlaneDown: return "PLANE_DOWN";
    case StatusCode::kPacketLost: return "PACKET_LOST";
    case StatusCode::kPacketCorrupt: return "PACKET_CORRUPT";
    case StatusCode::kDeviceError: return "DEVICE_ERROR";
    case StatusCode::kHbmError: return "HBM_ERROR";
    case StatusCode::kNpuLost: return "NPU_LOST";
    case StatusCode::kNodeUnreachable: return "NODE_UNREACHABLE";
    case StatusCode::kInternal: return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string_view status_group_name(StatusGroup group) {
  switch (group) {
    case StatusGroup::kOk: return "ok";
    case StatusGroup::kArgument: return "argument";
    case StatusGroup::kResource: return "resource";
    case StatusGroup::kLink: return "link";
    case StatusGroup::kDevice: return "device";
    case StatusGroup::kNode: return "node";
    case StatusGroup::kInternal: return "internal";
  }
  return "unknown";
}

Status::Status(StatusCode code, std::string message) {
  if (code == StatusCode::kOk) return;
  rep_ = std::make_unique<Rep>(Rep{code, std::move(message)});
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::to_string() const {
  if (ok()) return "OK";
  std::string out(status_code_name(rep_->code));
  if (!rep_->message.empty()) {
    out += ": ";
    out += rep_->message;
  }
  return out;
}

Status& Status::with_context(std::string_view context) {
  if (rep_) rep_->message = std::string(context) + ": " + rep_->message;
  return *this;
}

Status make_error(StatusCode code, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string message = vstrformat(fmt, args);
  va_end(args);
  return Status(code, std::move(message));
}

}  // namespace moe
