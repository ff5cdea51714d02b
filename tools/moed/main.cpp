// moed: the appliance daemon. One process owns the supernode (simulated by default) and
// serves local applications over a Unix socket in the moed protocol (tools/lib/daemon/).
//
// Signals: SIGINT and SIGTERM shut down after in-flight requests (as ShutdownRequest with
// drain). Their handler only writes the signal number to a pipe that the main thread reads
// (any thread may take a signal: libraries start threads of their own before main), so no
// handler runs server code. Exit: 0 after a clean shutdown, 1 when
// the supernode or the socket could not be opened, 2 bad usage.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "tools/lib/client/client.h"
#include "tools/lib/daemon/engine_executor.h"
#include "tools/lib/daemon/server.h"

namespace {

using namespace moe;

// Written by the signal handler (the signal number) and by the thread that sees the server
// stop on its own (0); read by the main thread.
int g_wake_pipe[2] = {-1, -1};

void on_signal(int signal_number) {
  uint8_t byte = static_cast<uint8_t>(signal_number);
  (void)!::write(g_wake_pipe[1], &byte, 1);  // async-signal-safe
}

void usage(FILE* out) {
  std::fprintf(out,
               "usage: moed [options]\n"
               "The appliance daemon: owns the supernode and serves local applications over a\n"
               "Unix socket (mode 0660) in the moed protocol.\n"
               "  --socket PATH           socket path (default %s)\n"
               "  --supernode NAME|FILE   preset (cm384, n8, n16, n64) or description file (default cm384)\n"
               "  --seed N                simulator seed (default 1)\n"
               "  --allow-uid LIST        uids that may connect, comma separated (default: the daemon's own)\n"
               "  --admin-uid LIST        uids that may drain and shut down (default: the daemon's own)\n"
               "  --queue N               engine queue capacity; more requests get 'busy' (default 256)\n"
               "  --timeout-ms N          per-request deadline; a stream's restarts with each token frame (default 30000)\n"
               "  --load-timeout-ms N     a model load's deadline (default 600000)\n"
               "  --attention-dp N        attention data-parallel ranks of a load that names none (default 16)\n"
               "  --eplb-interval N       re-place experts from their observed load every N engine steps\n"
               "                          when it pays (default 32; 0: never)\n"
               "  --tcp-port N            also listen on 127.0.0.1:N (loopback only; any local user may\n"
               "                          connect, admin requests are refused over TCP; 0: any free port)\n"
               "  --help                  this text\n",
               moe::default_socket_path().c_str());
}

bool parse_u64(const char* s, uint64_t* out) {
  if (!s || !*s || s[0] == '-') return false;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  daemon::ServerOptions server_options;
  server_options.socket_path = moe::default_socket_path();
  rt::RuntimeOptions runtime_options;
  uint64_t queue = 256;
  daemon::ModelServiceOptions service_options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "moed: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    auto uids = [&](std::vector<uint32_t>* out) {
      auto parsed = daemon::parse_uid_list(need());
      if (!parsed.ok()) {
        std::fprintf(stderr, "moed: %s: %s\n", a.c_str(), parsed.status().to_string().c_str());
        std::exit(2);
      }
      *out = std::move(parsed).value();
    };
    uint64_t value = 0;
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--socket") {
      server_options.socket_path = need();
    } else if (a == "--supernode") {
      runtime_options.supernode = need();
    } else if (a == "--seed" && parse_u64(need(), &value)) {
      runtime_options.seed = value;
    } else if (a == "--allow-uid") {
      uids(&server_options.allowed_uids);
    } else if (a == "--admin-uid") {
      uids(&server_options.admin_uids);
    } else if (a == "--queue" && parse_u64(need(), &value) && value > 0 && value < (1u << 20)) {
      queue = value;
    } else if (a == "--load-timeout-ms" && parse_u64(need(), &value) && value > 0 &&
               value < 0xFFFFFFFFu) {
      server_options.load_timeout_ms = static_cast<uint32_t>(value);
    } else if (a == "--attention-dp" && parse_u64(need(), &value) && value > 0 &&
               value < 65536) {
      service_options.default_attention_dp = static_cast<uint32_t>(value);
    } else if (a == "--eplb-interval" && parse_u64(need(), &value) && value < (1u << 30)) {
      service_options.eplb_interval_steps = static_cast<uint32_t>(value);
    } else if (a == "--tcp-port" && parse_u64(need(), &value) && value < 65536) {
      server_options.tcp = true;
      server_options.tcp_port = static_cast<uint16_t>(value);
    } else if (a == "--timeout-ms" && parse_u64(need(), &value) && value > 0 &&
               value < 0xFFFFFFFFu) {
      server_options.request_timeout_ms = static_cast<uint32_t>(value);
    } else {
      std::fprintf(stderr, "moed: bad argument or value at '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  if (::pipe(g_wake_pipe) != 0) {
    std::perror("moed: pipe");
    return 1;
  }
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto executor = daemon::EngineExecutor::start(runtime_options, queue, service_options);
  if (!executor.ok()) {
    std::fprintf(stderr, "moed: %s\n", executor.status().to_string().c_str());
    return 1;
  }
  auto server = daemon::Server::start(server_options, executor.value().get());
  if (!server.ok()) {
    std::fprintf(stderr, "moed: %s\n", server.status().to_string().c_str());
    return 1;
  }
  std::fprintf(stderr, "moed: serving %s on %s\n", runtime_options.supernode.c_str(),
               server_options.socket_path.c_str());
  if (server_options.tcp) {
    std::fprintf(stderr, "moed: also on 127.0.0.1:%u (TCP, no admin requests)\n",
                 server.value()->tcp_port());
  }

  std::thread watcher([&] {
    server.value()->wait();
    uint8_t stopped = 0;
    (void)!::write(g_wake_pipe[1], &stopped, 1);
  });
  uint8_t reason = 0;
  while (::read(g_wake_pipe[0], &reason, 1) < 0 && errno == EINTR) {
  }
  if (reason != 0) {
    std::fprintf(stderr, "moed: signal %d: shutting down after in-flight requests\n", reason);
    server.value()->request_shutdown(true);
  }
  watcher.join();
  server.value().reset();
  executor.value()->stop();
  std::fprintf(stderr, "moed: stopped\n");
  return 0;
}
