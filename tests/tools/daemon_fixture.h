// An in-process moed for tests: an engine executor and a server on a socket in a fresh
// temporary directory (removed afterwards). The supernode is small (n8) unless asked.
#pragma once

#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>

#include "tools/lib/daemon/engine_executor.h"
#include "tools/lib/daemon/server.h"

namespace moe::testing {

struct TempSocket {
  std::filesystem::path dir;
  TempSocket() {
    std::string pattern = (std::filesystem::temp_directory_path() / "moed-test-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir = pattern;
  }
  ~TempSocket() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  std::string path() const { return (dir / "moed.sock").string(); }  // the socket
  std::string file(const char* name) const { return (dir / name).string(); }
};

struct Daemon {
  TempSocket temp;
  std::unique_ptr<daemon::EngineExecutor> executor;
  std::unique_ptr<daemon::Server> server;

  explicit Daemon(daemon::ServerOptions options = {}, size_t queue = 8,
                  const std::string& supernode = "n8") {
    rt::RuntimeOptions runtime;
    runtime.supernode = supernode;
    auto started = daemon::EngineExecutor::start(runtime, queue);
    REQUIRE_MESSAGE(started.ok(), started.status().to_string());
    executor = std::move(started).value();
    options.socket_path = temp.path();
    auto server_started = daemon::Server::start(options, executor.get());
    REQUIRE_MESSAGE(server_started.ok(), server_started.status().to_string());
    server = std::move(server_started).value();
  }
  ~Daemon() {
    server.reset();
    executor->stop();
  }
};

}  // namespace moe::testing
