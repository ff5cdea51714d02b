// DaemonProcess: fork + exec with the log as stderr, a connect loop for readiness, waitpid
// with a deadline for the exit.
#include "tools/moe/daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"

namespace moe::tools {

std::string executable_dir() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::start(
    const std::string& moed_path, const std::vector<std::string>& arguments, uint32_t timeout_ms) {
  if (::access(moed_path.c_str(), X_OK) != 0) {
    return make_error(StatusCode::kNotFound, "cannot run %s: %s (build it with make)",
                      moed_path.c_str(), std::strerror(errno));
  }
  std::string pattern = (std::filesystem::temp_directory_path() / "moe-run-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return make_error(StatusCode::kInternal, "mkdtemp %s: %s", pattern.c_str(),
                      std::strerror(errno));
  }
  std::unique_ptr<DaemonProcess> process(new DaemonProcess());
  process->dir_ = pattern;
  process->socket_ = pattern + "/moed.sock";
  process->log_ = pattern + "/moed.log";

  std::vector<std::string> argv_strings = {moed_path, "--socket", process->socket_};
  argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = ::open(process->log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    return make_error(StatusCode::kInternal, "open %s: %s", process->log_.c_str(),
                      std::strerror(errno));
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    return make_error(StatusCode::kInternal, "fork: %s", std::strerror(errno));
  }
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    ::dup2(log_fd, STDERR_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  process->pid_ = pid;

  const int64_t deadline = wall_now_ns() + int64_t{timeout_ms} * 1000000;
  while (true) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      process->pid_ = -1;
      return make_error(StatusCode::kInternal, "moed exited (status %d) before it served; its log:\n%s",
                        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                        process->log_tail().c_str());
    }
    auto client = Client::connect({.socket_path = process->socket_, .timeout_ms = 5000});
    if (client.ok()) break;
    if (wall_now_ns() > deadline) {
      return make_error(StatusCode::kTimeout, "moed did not listen on %s within %u ms; its log:\n%s",
                        process->socket_.c_str(), timeout_ms, process->log_tail().c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return process;
}

Status DaemonProcess::wait_exit(uint32_t timeout_ms, int* status) {
  const int64_t deadline = wall_now_ns() + int64_t{timeout_ms} * 1000000;
  while (wall_now_ns() < deadline) {
    pid_t done = ::waitpid(pid_, status, WNOHANG);
    if (done == pid_) return ok_status();
    if (done < 0 && errno != EINTR) {
      return make_error(StatusCode::kInternal, "waitpid: %s", std::strerror(errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return make_error(StatusCode::kTimeout, "moed did not exit within %u ms", timeout_ms);
}

Status DaemonProcess::stop(Client* admin, uint32_t timeout_ms) {
  if (pid_ < 0) return ok_status();
  Status asked = admin ? admin->shutdown(true) : Status(StatusCode::kNotFound, "no client");
  if (!asked.ok()) ::kill(pid_, SIGTERM);
  int status = 0;
  Status exited = wait_exit(timeout_ms, &status);
  if (!exited.ok()) {
    ::kill(pid_, SIGKILL);
    (void)wait_exit(5000, &status);
    pid_ = -1;
    return make_error(StatusCode::kTimeout, "moed did not stop within %u ms; killed", timeout_ms);
  }
  pid_ = -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return make_error(StatusCode::kInternal, "moed stopped with status %d; its log:\n%s",
                      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                      log_tail().c_str());
  }
  return asked;
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    if (!wait_exit(10000, &status).ok()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

std::string DaemonProcess::log_tail(size_t lines) const {
  std::ifstream in(log_);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out += "  | " + all[i] + "\n";
  }
  return out;
}

}  // namespace moe::tools
