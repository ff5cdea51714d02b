// Argument reading and error reporting shared by the `moe` commands that talk to moed
// (tools/moe/cmd_client.cpp, cmd_generate.cpp).
//
// Exit statuses follow tools/moe/commands.h: 0 ok, 1 the request failed (the daemon's or the
// connection's Status printed as "moe <cmd>: <status>"), 2 bad usage (a message naming the
// argument). Every message goes to stderr.
//
// Thread-safety: none; a command uses its cursor on one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/base/status.h"
#include "tools/lib/client/client.h"

namespace moe::tools {

// Walks a command's argv (after the command name). Flags with values read the next argument
// through value(); a malformed or missing value prints "moe <cmd>: ..." naming the flag and
// returns false, and the command then returns kUsageExit.
class ArgCursor {
 public:
  static constexpr int kUsageExit = 2;

  ArgCursor(std::string_view command, int argc, char** argv)
      : command_(command), argc_(argc), argv_(argv) {}

  // Moves to the next argument; false when none is left.
  bool next();
  const std::string& arg() const { return arg_; }
  bool is(std::string_view flag) const { return arg_ == flag; }
  // True for an argument that is not a flag (does not start with '-', or is "-" alone).
  bool positional() const { return arg_.empty() || arg_[0] != '-' || arg_ == "-"; }

  // The current flag's value (the next argument).
  bool value(std::string* out);
  bool value(uint32_t* out);  // a non-negative decimal integer below 2^32
  bool value(uint64_t* out);
  bool value(float* out);     // a finite number
  bool value(double* out);

  // Prints "moe <cmd>: unknown argument 'X' (see moe <cmd> --help)"; returns kUsageExit.
  int unknown() const;
  // Prints "moe <cmd>: <message>"; returns kUsageExit.
  int usage_error(const std::string& message) const;

  const std::string& command() const { return command_; }

 private:
  bool take(const char** out);
  std::string command_;
  int argc_;
  char** argv_;
  int index_ = -1;
  std::string arg_;
};

// Prints "moe <cmd>: <status>" on stderr; returns 1.
int report_failure(std::string_view command, const Status& status);

// Connects to moed at `socket_path` (empty: default_socket_path()).
StatusOr<std::unique_ptr<Client>> connect_daemon(const std::string& socket_path);

// "12.3 ms", "1.50 s": a duration for people.
std::string format_duration_ns(double ns);

// Names of the protocol's enums as the commands print them ("builtin", "int8", "ready",
// "length", ...).
const char* source_name(proto::ModelSource source);
const char* precision_name(proto::Precision precision);
const char* mode_name(proto::ExecMode mode);
const char* state_name(proto::DaemonState state);
const char* finish_reason_name(proto::FinishReason reason);

}  // namespace moe::tools
