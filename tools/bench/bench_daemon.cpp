// Daemon benchmarks: what going through moed costs an application.
//
//  daemon.status_rps: StatusRequests (no topology) answered per second by an in-process moed
//    (EngineExecutor on n8 + Server on a Unix socket in a temporary directory) to one blocking
//    moe::Client. Each request crosses the socket, the io thread, the engine queue, the
//    engine thread and back. Baseline: the same request and reply frames over a Unix
//    socketpair to an echo thread that decodes each request and writes back a fixed,
//    pre-encoded StatusReply frame (the daemon's own reply), with the client side doing what
//    moe::Client does (encode, send, poll, recv, FrameDecoder, decode_payload): what the
//    transport and codec alone allow. ratio = daemon / echo. Result check: every daemon
//    reply is a StatusReply in state kReady. Printed too: the rate with the topology.
//  daemon.generate_vs_embedded: the built-in model on cm384, the same greedy requests (fixed
//    seeds) one after another through moe::Client to the daemon and through moe::Embedded
//    in this process; value = daemon wall time / embedded wall time over the whole set (best
//    of several interleaved repetitions, each side warmed up once). Target < 1.05. Result
//    check: both give the same tokens and the ratio is finite.
//
// Everything is torn down before each benchmark returns: server shut down (socket removed),
// engine thread stopped, temporary directory removed.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"
#include "tools/lib/bench/harness.h"
#include "tools/lib/client/client.h"
#include "tools/lib/client/embedded.h"
#include "tools/lib/daemon/engine_executor.h"
#include "tools/lib/daemon/server.h"
#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"

namespace moe {
namespace {
// The status benchmark runs on n8 (quick to open). The generation benchmark runs on the
// product's default supernode, cm384 (decode steps of ~6 ms wall); on n8 (steps of ~1.8 ms)
// the daemon's fixed cost per step (a TokenFrame through the io thread to the client thread,
// ~0.1-0.2 ms of wake-ups on this 2-core host) is a larger share: ~1.03-1.08 there.
const char* const kStatusSupernode = "n8";
const char* const kGenerateSupernode = "cm384";

// A daemon in this process, listening in a fresh temporary directory; torn down in
// reverse order of creation.
struct InProcessDaemon {
  std::string dir;
  std::unique_ptr<daemon::EngineExecutor> executor;
  std::unique_ptr<daemon::Server> server;

  Status start(const char* supernode) {
    char tmpl[] = "/tmp/moe-bench-daemon-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return make_error(StatusCode::kInternal, "bench: mkdtemp: %s", std::strerror(errno));
    }
    dir = tmpl;
    rt::RuntimeOptions runtime;
    runtime.supernode = supernode;
    daemon::ModelServiceOptions service;
    service.eplb_interval_steps = 0;  // no expert re-placement pauses: the transport is measured
    MOE_TRY_ASSIGN(executor,
                   daemon::EngineExecutor::start(runtime, /*queue_capacity=*/16, service));
    daemon::ServerOptions options;
    options.socket_path = dir + "/moed.sock";
    MOE_TRY_ASSIGN(server, daemon::Server::start(options, executor.get()));
    return ok_status();
  }
  const std::string& socket_path() const { return server->socket_path(); }

  ~InProcessDaemon() {
    server.reset();  // shuts down, waits, removes the socket
    if (executor) executor->stop();
    executor.reset();
    if (!dir.empty()) {
      ::unlink((dir + "/moed.sock").c_str());  // in case the server never started
      ::rmdir(dir.c_str());
    }
  }
};

// Sends all of `bytes`; false on error.
bool send_all(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads frames from `fd` as moe::Client does (poll, recv, FrameDecoder, decode_payload).
class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}
  // The next message, or an error at EOF / a bad frame.
  StatusOr<proto::Message> next() {
    while (true) {
      std::span<const uint8_t> input(unread_);
      proto::FrameDecoder::State state = decoder_.decode(&input);
      unread_.erase(unread_.begin(), unread_.end() - static_cast<ptrdiff_t>(input.size()));
      if (state == proto::FrameDecoder::State::kError) return decoder_.error();
      if (state == proto::FrameDecoder::State::kFrame) {
        return proto::decode_payload(decoder_.payload());
      }
      pollfd p{fd_, POLLIN, 0};
      int ready = ::poll(&p, 1, 60000);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) return make_error(StatusCode::kTimeout, "bench echo: poll timed out");
      uint8_t buffer[16384];
      ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return make_error(StatusCode::kNodeUnreachable, "bench echo: closed");
      unread_.insert(unread_.end(), buffer, buffer + n);
    }
  }

 private:
  int fd_;
  proto::FrameDecoder decoder_;
  std::vector<uint8_t> unread_;
};

// The transport-only round trip: StatusRequest frames over a socketpair to a thread that
// decodes each and answers with `reply_frame` (its request id is fixed, as the client here
// does not check it). Returns round trips per second over about `seconds`, 0 on error.
double echo_status_rps(const std::vector<uint8_t>& reply_frame, double seconds) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  std::thread echo([fd = fds[1], &reply_frame] {
    FrameReader reader(fd);
    while (true) {
      StatusOr<proto::Message> request = reader.next();
      if (!request.ok() || !std::holds_alternative<proto::StatusRequest>(request->body)) break;
      if (!send_all(fd, reply_frame)) break;
    }
  });
  FrameReader reader(fds[0]);
  std::vector<uint8_t> out;
  uint64_t id = 1, done = 0;
  bool ok = true;
  const int64_t start = wall_now_ns(), end = start + static_cast<int64_t>(seconds * 1e9);
  int64_t now = start;
  while (ok && now < end) {
    out.clear();
    ok = proto::append_message_frame(proto::Message{id++, proto::StatusRequest{false}}, &out).ok() &&
         send_all(fds[0], out);
    if (!ok) break;
    StatusOr<proto::Message> reply = reader.next();
    ok = reply.ok() && std::holds_alternative<proto::StatusReply>(reply->body);
    done += ok ? 1 : 0;
    now = wall_now_ns();
  }
  ::shutdown(fds[0], SHUT_RDWR);  // the echo thread sees EOF
  echo.join();
  ::close(fds[0]);
  ::close(fds[1]);
  return ok ? double(done) / (double(now - start) / 1e9) : 0;
}

// Status round trips per second through `client` over about `seconds`; *all_ready is
// cleared when a reply fails or is not kReady.
double client_status_rps(Client& client, bool include_topology, double seconds,
                         bool* all_ready) {
  uint64_t done = 0;
  const int64_t start = wall_now_ns(), end = start + static_cast<int64_t>(seconds * 1e9);
  int64_t now = start;
  while (now < end) {
    StatusOr<proto::StatusReply> reply = client.status(include_topology);
    if (!reply.ok() || reply->state != proto::DaemonState::kReady ||
        reply->topology.has_value() != include_topology) {
      if (!reply.ok()) std::fprintf(stderr, "bench: %s\n", reply.status().to_string().c_str());
      *all_ready = false;
      return 0;
    }
    ++done;
    now = wall_now_ns();
  }
  return double(done) / (double(now - start) / 1e9);
}

MOE_BENCHMARK(daemon_status_rps) {
  const double seconds = ctx.quick ? 0.2 : 1.0;
  InProcessDaemon moed;
  Status started = moed.start(kStatusSupernode);
  auto client = started.ok() ? Client::connect({.socket_path = moed.socket_path()})
                             : StatusOr<std::unique_ptr<Client>>(started);
  if (!client.ok()) {
    std::fprintf(stderr, "bench: %s\n", client.status().to_string().c_str());
    ctx.record({"daemon.status_rps", 0, "requests/s", 0, 0, "wall", false,
                client.status().to_string()});
    return;
  }
  // The daemon's own reply (warm-up) is what the echo thread sends back.
  StatusOr<proto::StatusReply> first = client.value()->status(false);
  bool ok = first.ok() && first->state == proto::DaemonState::kReady;
  std::vector<uint8_t> reply_frame;
  if (ok) ok = proto::append_message_frame(proto::Message{1, *first}, &reply_frame).ok();
  const double echo_rps = ok ? echo_status_rps(reply_frame, seconds) : 0;
  const double rps = ok ? client_status_rps(*client.value(), false, seconds, &ok) : 0;
  const double topo_rps = ok ? client_status_rps(*client.value(), true, seconds / 2, &ok) : 0;
  ok = ok && echo_rps > 0 && rps > 0;
  std::printf("  daemon.status: %.0f requests/s through moed (%.1f us each), %.0f with the "
              "topology; socketpair echo of the same frames %.0f/s (%.1f us each)\n",
              rps, rps > 0 ? 1e6 / rps : 0.0, topo_rps, echo_rps,
              echo_rps > 0 ? 1e6 / echo_rps : 0.0);
  ctx.record({"daemon.status_rps", rps, "requests/s", echo_rps, echo_rps > 0 ? rps / echo_rps : 0,
              "wall", ok,
              strformat("StatusRequest (no topology) round trips per second, one moe::Client to "
                        "an in-process moed on n8 (%.0f/s with the topology); baseline the same "
                        "frames over a socketpair echo thread; ratio daemon / echo",
                        topo_rps)});
}

// The greedy requests of daemon.generate_vs_embedded.
std::vector<proto::GenerateRequest> generate_requests(uint32_t new_tokens) {
  const char* prompts[] = {"the supernode", "experts route tokens", "hello, moed",
                           "384 NPUs in one domain"};
  std::vector<proto::GenerateRequest> requests;
  for (uint32_t i = 0; i < 4; ++i) {
    proto::GenerateRequest r;
    r.prompt_text = prompts[i];
    r.max_new_tokens = new_tokens;
    r.temperature = 0.0f;
    r.seed = 100 + i;
    requests.push_back(std::move(r));
  }
  return requests;
}

// Wall and process CPU seconds of one generation through `api`, its tokens in *tokens.
struct Timed {
  double wall_s = -1;  // negative: the request failed
  double cpu_s = 0;    // every thread of this process (engine, io, client, dispatch)
  double service_s = 0;  // the ModelService's own end-to-end time (GenerateDone metrics)
};

double process_cpu_s() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}

Timed run_request(Api& api, const proto::GenerateRequest& request, std::vector<uint32_t>* tokens) {
  tokens->clear();
  Timed t;
  const double cpu0 = process_cpu_s();
  const int64_t start = wall_now_ns();
  StatusOr<proto::GenerateDone> done = api.generate(request, [&](const proto::TokenFrame& f) {
    tokens->insert(tokens->end(), f.tokens.begin(), f.tokens.end());
    return true;
  });
  const int64_t end = wall_now_ns();
  t.cpu_s = process_cpu_s() - cpu0;
  if (!done.ok() || done->generated_tokens != tokens->size() ||
      done->finish_reason != proto::FinishReason::kLength) {
    std::fprintf(stderr, "bench: generate: %s\n",
                 done.ok() ? "GenerateDone disagrees with the tokens streamed"
                           : done.status().to_string().c_str());
    return t;
  }
  t.wall_s = double(end - start) / 1e9;
  t.service_s = double(done->metrics.total_wall_ns) / 1e9;
  return t;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

MOE_BENCHMARK(daemon_generate_vs_embedded) {
  const uint32_t new_tokens = 16;
  const int repetitions = ctx.quick ? 2 : 5;
  auto fail = [&](const Status& status) {
    std::fprintf(stderr, "bench: %s\n", status.to_string().c_str());
    ctx.record({"daemon.generate_vs_embedded", 0, "x", 0, 0, "wall", false, status.to_string()});
  };
  InProcessDaemon moed;
  if (Status s = moed.start(kGenerateSupernode); !s.ok()) return fail(s);
  auto client = Client::connect({.socket_path = moed.socket_path()});
  if (!client.ok()) return fail(client.status());
  EmbeddedOptions eo;
  eo.runtime.supernode = kGenerateSupernode;
  eo.eplb_interval_steps = 0;  // as the daemon's
  auto embedded = Embedded::open(eo);
  if (!embedded.ok()) return fail(embedded.status());
  if (auto l = client.value()->load(proto::LoadRequest{}); !l.ok()) return fail(l.status());
  if (auto l = embedded.value()->load(proto::LoadRequest{}); !l.ok()) return fail(l.status());
  Api* sides[2] = {client.value().get(), embedded.value().get()};  // 0: daemon, 1: embedded

  const std::vector<proto::GenerateRequest> requests = generate_requests(new_tokens);
  const size_t n = requests.size();
  // Warm-up of both sides; the embedded tokens are the reference.
  std::vector<std::vector<uint32_t>> reference(n);
  std::vector<uint32_t> tokens;
  bool ok = true;
  for (size_t i = 0; ok && i < n; ++i) {
    ok = run_request(*sides[1], requests[i], &reference[i]).wall_s >= 0 &&
         run_request(*sides[0], requests[i], &tokens).wall_s >= 0 && tokens == reference[i];
  }
  // Each request on both sides back to back, the order alternating, so that the load other
  // processes put on this machine falls on both sides alike.
  std::vector<std::vector<double>> wall_s[2], cpu_s[2], service_s[2];  // [side][request][rep]
  for (int side = 0; side < 2; ++side) {
    wall_s[side].assign(n, {});
    cpu_s[side].assign(n, {});
    service_s[side].assign(n, {});
  }
  std::vector<double> set_ratios;  // per repetition: daemon set wall / embedded set wall
  for (int r = 0; ok && r < repetitions; ++r) {
    double set_s[2] = {0, 0};
    for (size_t i = 0; ok && i < n; ++i) {
      for (int k = 0; ok && k < 2; ++k) {
        const int side = (k + r + static_cast<int>(i)) % 2;
        const Timed t = run_request(*sides[side], requests[i], &tokens);
        ok = t.wall_s >= 0 && tokens == reference[i];
        wall_s[side][i].push_back(t.wall_s);
        cpu_s[side][i].push_back(t.cpu_s);
        service_s[side][i].push_back(t.service_s);
        set_s[side] += t.wall_s;
      }
    }
    if (ok) set_ratios.push_back(set_s[0] / set_s[1]);
  }
  // Best: per request the fastest repetition, summed over the requests.
  double best_s[2] = {0, 0}, cpu_median_s[2] = {0, 0}, service_best_s[2] = {0, 0};
  for (int side = 0; ok && side < 2; ++side) {
    for (size_t i = 0; i < n; ++i) {
      best_s[side] += *std::min_element(wall_s[side][i].begin(), wall_s[side][i].end());
      cpu_median_s[side] += median_of(cpu_s[side][i]);
      service_best_s[side] +=
          *std::min_element(service_s[side][i].begin(), service_s[side][i].end());
    }
  }
  const double ratio = best_s[1] > 0 ? best_s[0] / best_s[1] : 0;
  const double median_ratio = median_of(set_ratios);
  ok = ok && std::isfinite(ratio) && ratio > 0;
  std::printf("  daemon.generate: %zu requests x %u tokens (greedy) on %s, best of %d: daemon "
              "%.1f ms, embedded %.1f ms, ratio %.3f (median of the per-repetition ratios "
              "%.3f); inside the model service (submit to done, best) daemon %.1f ms, embedded %.1f "
              "ms; process CPU per set (median) daemon %.1f ms, embedded %.1f ms; tokens %s\n",
              n, new_tokens, kGenerateSupernode, repetitions, best_s[0] * 1e3, best_s[1] * 1e3, ratio,
              median_ratio, service_best_s[0] * 1e3, service_best_s[1] * 1e3, cpu_median_s[0] * 1e3, cpu_median_s[1] * 1e3,
              ok ? "equal" : "DIFFER");
  ctx.record({"daemon.generate_vs_embedded", ratio, "x", best_s[1], ratio, "wall", ok,
              strformat("built-in model on %s, %zu requests x %u tokens (greedy, fixed seeds) "
                        "one after another through moe::Client to an in-process moed and "
                        "through moe::Embedded; value = daemon wall / embedded wall, each "
                        "request's best of %d interleaved repetitions summed (median of the "
                        "per-repetition ratios %.3f); baseline the embedded seconds; target < "
                        "1.05; check: same tokens",
                        kGenerateSupernode, n, new_tokens, repetitions, median_ratio)});
}

}  // namespace
}  // namespace moe
