// A moed child process for `moe run`: started on a socket in a fresh temporary directory,
// waited for until it answers, stopped with a ShutdownRequest (then SIGTERM, then SIGKILL
// if it does not exit), and its directory removed. Its log (stderr) goes to a file in that
// directory; the last lines are shown when it fails.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "tools/lib/client/client.h"

namespace moe::tools {

class DaemonProcess {
 public:
  // Starts `moed_path` with `arguments` (the socket is added) and waits up to timeout_ms
  // for it to accept connections. kNotFound when the binary is missing; kInternal naming
  // the call that failed, or the daemon's exit status and the tail of its log.
  static StatusOr<std::unique_ptr<DaemonProcess>> start(const std::string& moed_path,
                                                        const std::vector<std::string>& arguments,
                                                        uint32_t timeout_ms);
  ~DaemonProcess();  // stop() if still running, then removes the directory
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  const std::string& socket_path() const { return socket_; }
  // Asks for a draining shutdown through `admin` and waits for the exit (up to timeout_ms,
  // then SIGTERM, then SIGKILL). Returns the exit status as an error unless it was 0.
  Status stop(Client* admin, uint32_t timeout_ms = 30000);
  // The log's last `lines` lines.
  std::string log_tail(size_t lines = 20) const;

 private:
  DaemonProcess() = default;
  Status wait_exit(uint32_t timeout_ms, int* status);

  pid_t pid_ = -1;
  std::string dir_, socket_, log_;
};

// The directory of the running executable (to find moed next to moe).
std::string executable_dir();

}  // namespace moe::tools
