// moed serving a model through moe::Client: every request's round trip, streaming tokens,
// 32 concurrent streaming clients, cancel, a client killed mid-stream, shutdown during a
// generation (draining and not), admin-only faults, load errors, and the embedded API giving
// the same tokens as the daemon. The built-in model on the n8 supernode, few tokens.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/tools/daemon_fixture.h"
#include "tools/lib/client/client.h"
#include "tools/lib/client/embedded.h"
#include "tools/lib/daemon/metrics_text.h"
#include "tools/lib/protocol/codec.h"

using namespace moe;
using moe::testing::Daemon;

namespace {

std::unique_ptr<Client> connect(const Daemon& daemon) {
  auto client = Client::connect({.socket_path = daemon.temp.path(), .timeout_ms = 30000});
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  return std::move(client).value();
}

void load_builtin(Api& api) {
  auto loaded = api.load(proto::LoadRequest{});
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
}

proto::GenerateRequest request(const std::string& prompt, uint32_t tokens, uint64_t seed,
                               float temperature = 0.8f) {
  proto::GenerateRequest r;
  r.prompt_text = prompt;
  r.max_new_tokens = tokens;
  r.temperature = temperature;
  r.top_p = 0.9f;
  r.seed = seed;
  return r;
}

// A generation's frames, checked to be in order with no gap, and its end.
struct Streamed {
  std::vector<uint32_t> tokens;
  std::string text;
  bool in_order = true;
  StatusOr<proto::GenerateDone> done = make_error(StatusCode::kInternal, "not run");
};

Streamed generate(Api& api, const proto::GenerateRequest& r, uint32_t stop_after = 0) {
  Streamed out;
  out.done = api.generate(r, [&](const proto::TokenFrame& frame) {
    if (frame.first_index != out.tokens.size() || frame.tokens.empty()) out.in_order = false;
    out.tokens.insert(out.tokens.end(), frame.tokens.begin(), frame.tokens.end());
    out.text += frame.text;
    return stop_after == 0 || out.tokens.size() < stop_after;
  });
  return out;
}

using daemon::prometheus_sample;

double metric(Api& api, const std::string& name) {
  auto reply = api.metrics(proto::MetricsFormat::kPrometheus);
  REQUIRE_MESSAGE(reply.ok(), reply.status().to_string());
  return prometheus_sample(reply->text, name);
}

// Polls `name` until it equals `want` (the engine thread gets there asynchronously).
bool metric_reaches(Api& api, const std::string& name, double want) {
  for (int i = 0; i < 500; ++i) {
    if (metric(api, name) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A daemon with the built-in model loaded, a client connection and an admin connection.
struct Serving {
  Daemon daemon;
  std::unique_ptr<Client> client = connect(daemon);
  std::unique_ptr<Client> admin = connect(daemon);
  Serving() { load_builtin(*client); }
};

// A generation on its own thread; the constructor returns once its first tokens arrived.
struct Running {
  Streamed out;
  std::atomic<bool> started{false};
  std::atomic<bool> stop{false};  // set: the next frame cancels it
  std::thread worker;
  Running(Api& api, const proto::GenerateRequest& r) {
    worker = std::thread([this, &api, r] {
      out.done = api.generate(r, [this](const proto::TokenFrame& f) {
        out.tokens.insert(out.tokens.end(), f.tokens.begin(), f.tokens.end());
        started = true;
        return !stop.load();
      });
      started = true;  // also when it failed before any token
    });
    while (!started.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Running() {
    if (worker.joinable()) worker.join();
  }
};

}  // namespace

TEST_CASE("tools.daemon.metrics: Prometheus text reads back sample by sample") {
  daemon::MetricsText m;
  m.counter("moe_tokens_total", "tokens", 42).gauge("moe_tokens", "a prefix of the other", 7.5);
  const std::string text = m.prometheus();
  CHECK(prometheus_sample(text, "moe_tokens_total") == 42);
  CHECK(prometheus_sample(text, "moe_tokens") == 7.5);
  CHECK(prometheus_sample(text, "tokens_total") == -1);  // a suffix of a name is not a name
  CHECK(prometheus_sample(text, "moe_missing") == -1);
  CHECK(m.json() == "{\"moe_tokens_total\":42,\"moe_tokens\":7.5}");
}

TEST_CASE("tools.daemon.serving: every request round-trips through moe::Client") {
  daemon::ServerOptions options;
  Daemon daemon(options);
  auto client = connect(daemon);

  auto status = client->status();
  REQUIRE(status.ok());
  CHECK(status->models.empty());
  REQUIRE(status->topology.has_value());
  CHECK(status->topology->num_npus == 8);

  auto loaded = client->load(proto::LoadRequest{});
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().to_string());
  CHECK(loaded->model.name == "builtin");
  CHECK(loaded->model.npus == 8);
  CHECK(loaded->model.vocab_size == 256);
  CHECK(loaded->model.weight_bytes > 0);
  status = client->status(false);
  REQUIRE(status.ok());
  REQUIRE(status->models.size() == 1);
  CHECK(status->models[0] == loaded->model);

  Streamed out = generate(*client, request("The supernode", 6, 11));
  REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
  CHECK(out.in_order);
  CHECK(out.tokens.size() == 6);
  CHECK(out.done->generated_tokens == 6);
  CHECK(out.done->prompt_tokens == std::string("The supernode").size());
  CHECK(out.done->finish_reason == proto::FinishReason::kLength);
  CHECK_FALSE(out.text.empty());  // the byte vocabulary gives text
  CHECK(out.done->metrics.ttft_wall_ns > 0);
  CHECK(out.done->metrics.ttft_modelled_ns > 0);
  CHECK(out.done->metrics.tpot_modelled_ns > 0);
  CHECK(out.done->metrics.total_wall_ns >= out.done->metrics.ttft_wall_ns);

  auto json = client->metrics(proto::MetricsFormat::kJson);
  REQUIRE(json.ok());
  CHECK(json->format == proto::MetricsFormat::kJson);
  CHECK(json->text.front() == '{');
  CHECK(json->text.find("\"moe_generated_tokens_total\":6") != std::string::npos);
  CHECK(metric(*client, "moe_generate_finished_total") == 1);
  CHECK(metric(*client, "moe_expert_imbalance_max") >= 1.0);
  CHECK(metric(*client, "moe_kv_free_blocks") == metric(*client, "moe_kv_total_blocks"));

  auto fault = client->fault(proto::FaultRequest{proto::FaultKind::kLinkDown, 3});
  REQUIRE_MESSAGE(fault.ok(), fault.status().to_string());
  status = client->status();
  REQUIRE(status.ok());
  CHECK(status->topology->links_down == 1);
  proto::FaultRequest clear;
  clear.clear = true;
  clear.fault_id = fault->fault_id;
  CHECK(client->fault(clear).ok());
  CHECK(client->status()->topology->links_down == 0);
  proto::FaultRequest bad{proto::FaultKind::kNpuLost, 99};
  CHECK(client->fault(bad).status().code() == StatusCode::kInvalidArgument);

  CHECK(client->unload().ok());
  CHECK(client->unload().code() == StatusCode::kNotFound);
  CHECK(client->status(false)->models.empty());
  CHECK(client->drain().ok());
  CHECK(client->generate(request("x", 1, 1)).status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(client->shutdown(true).ok());
  daemon.server->wait();
}

TEST_CASE("tools.daemon.serving: bad loads and generate requests are refused by name") {
  Daemon daemon;
  auto client = connect(daemon);
  CHECK(client->generate(request("x", 1, 1)).status().code() == StatusCode::kNotFound);
  proto::LoadRequest unknown;
  unknown.source = proto::ModelSource::kReferenceConfig;
  unknown.name = "no-such-model";
  auto refused = client->load(unknown);
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
  CHECK(refused.status().message().find("no-such-model") != std::string::npos);
  proto::LoadRequest timing;
  timing.mode = proto::ExecMode::kTiming;
  CHECK(client->load(timing).status().code() == StatusCode::kUnsupported);
  proto::LoadRequest too_many;
  too_many.npus = 9;
  CHECK(client->load(too_many).status().code() == StatusCode::kInvalidArgument);
  proto::LoadRequest missing;
  missing.source = proto::ModelSource::kSafetensors;
  missing.name = "/nonexistent/model.safetensors";
  CHECK_FALSE(client->load(missing).ok());

  load_builtin(*client);
  CHECK(client->load(proto::LoadRequest{}).status().code() == StatusCode::kFailedPrecondition);
  proto::GenerateRequest both = request("x", 1, 1);
  both.prompt_tokens = {1, 2};
  CHECK(client->generate(both).status().code() == StatusCode::kInvalidArgument);
  CHECK(client->generate(proto::GenerateRequest{}).status().code() ==
        StatusCode::kInvalidArgument);
  proto::GenerateRequest bad_token;
  bad_token.prompt_tokens = {7, 256};
  CHECK_FALSE(client->generate(bad_token).ok());
  proto::GenerateRequest bad_top_p = request("x", 1, 1);
  bad_top_p.top_p = 0;
  CHECK_FALSE(client->generate(bad_top_p).ok());
  // The daemon is still serving after every refusal.
  Streamed out = generate(*client, request("ok", 2, 1));
  CHECK(out.done.ok());
  CHECK(out.tokens.size() == 2);
}

TEST_CASE("tools.daemon.serving: faults need an admin uid") {
  daemon::ServerOptions options;
  options.admin_uids = {static_cast<uint32_t>(::getuid()) + 1};
  Daemon daemon(options);
  auto client = connect(daemon);
  auto fault = client->fault(proto::FaultRequest{proto::FaultKind::kPlaneDown, 0});
  CHECK(fault.status().code() == StatusCode::kFailedPrecondition);
  CHECK(fault.status().message().find("admin") != std::string::npos);
  CHECK(client->status()->topology->planes_down.empty());
}

TEST_CASE("tools.daemon.serving: the embedded API and the client give the same tokens") {
  std::vector<proto::GenerateRequest> requests = {
      request("The supernode", 8, 1, 0.0f), request("Experts route tokens", 8, 2),
      request("abc", 5, 3, 1.2f)};
  std::vector<std::vector<uint32_t>> embedded_tokens;
  {
    EmbeddedOptions options;
    options.runtime.supernode = "n8";
    auto embedded = Embedded::open(options);
    REQUIRE_MESSAGE(embedded.ok(), embedded.status().to_string());
    load_builtin(**embedded);
    for (const auto& r : requests) {
      Streamed out = generate(**embedded, r);
      REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
      CHECK(out.in_order);
      CHECK(out.tokens.size() == r.max_new_tokens);
      embedded_tokens.push_back(out.tokens);
    }
  }
  Daemon daemon;
  auto client = connect(daemon);
  load_builtin(*client);
  for (size_t i = 0; i < requests.size(); ++i) {
    Streamed out = generate(*client, requests[i]);
    REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
    CHECK_MESSAGE(out.tokens == embedded_tokens[i], "request ", i);
  }
}

TEST_CASE("tools.daemon.serving: live expert re-placement keeps every token") {
  // cm384: one routed expert per NPU, so the built-in model's routing skew shows per rank.
  auto run = [](uint32_t eplb_interval, std::string* metrics_text) {
    EmbeddedOptions options;
    options.runtime.supernode = "cm384";
    options.eplb_interval_steps = eplb_interval;
    auto embedded = Embedded::open(options);
    REQUIRE_MESSAGE(embedded.ok(), embedded.status().to_string());
    load_builtin(**embedded);
    Streamed out = generate(**embedded, request("Experts move while we speak", 40, 9));
    REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
    auto metrics = (*embedded)->metrics(proto::MetricsFormat::kPrometheus);
    REQUIRE(metrics.ok());
    *metrics_text = metrics->text;
    return out.tokens;
  };
  std::string fixed_metrics, moving_metrics;
  const std::vector<uint32_t> fixed = run(0, &fixed_metrics);
  const std::vector<uint32_t> moving = run(4, &moving_metrics);
  CHECK(moving == fixed);
  CHECK(prometheus_sample(fixed_metrics, "moe_eplb_rebalances_total") == 0);
  CHECK(prometheus_sample(moving_metrics, "moe_eplb_rebalances_total") >= 1);
  CHECK(prometheus_sample(moving_metrics, "moe_eplb_replicas_copied_total") > 0);
  CHECK(prometheus_sample(moving_metrics, "moe_eplb_last_imbalance_after") <
        prometheus_sample(moving_metrics, "moe_eplb_last_imbalance_before"));
}

TEST_CASE("tools.daemon.serving: 32 concurrent streaming clients lose and mix no token") {
  daemon::ServerOptions options;
  Daemon daemon(options, /*queue=*/64);
  auto setup = connect(daemon);
  load_builtin(*setup);
  constexpr int kClients = 32;
  auto request_of = [](int i) {
    return request("client " + std::to_string(i) + " says", 6 + i % 5, 100 + i);
  };
  // Alone first: what each request gives (its tokens do not depend on batch-mates).
  std::vector<std::vector<uint32_t>> alone(kClients);
  for (int i = 0; i < kClients; ++i) {
    Streamed out = generate(*setup, request_of(i));
    REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
    alone[i] = out.tokens;
  }
  std::vector<Streamed> together(kClients);
  std::vector<std::thread> threads;
  std::atomic<int> connect_failures{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      auto client = Client::connect({.socket_path = daemon.temp.path(), .timeout_ms = 60000});
      if (!client.ok()) {
        ++connect_failures;
        return;
      }
      together[i] = generate(**client, request_of(i));
    });
  }
  for (auto& t : threads) t.join();
  CHECK(connect_failures.load() == 0);
  for (int i = 0; i < kClients; ++i) {
    CAPTURE(i);
    REQUIRE_MESSAGE(together[i].done.ok(), together[i].done.status().to_string());
    CHECK(together[i].in_order);
    CHECK(together[i].done->generated_tokens == together[i].tokens.size());
    CHECK(together[i].tokens == alone[i]);
  }
  // They ran as one batch at least some of the time.
  CHECK(metric(*setup, "moe_generate_finished_total") == 2 * kClients);
}

TEST_CASE("tools.daemon.serving: pipelined generations on one connection, past its in-flight limit") {
  daemon::ServerOptions options;
  options.max_inflight_per_connection = 4;  // the other 6 wait in the socket (back-pressure)
  Daemon daemon(options, /*queue=*/64);
  auto setup = connect(daemon);
  load_builtin(*setup);
  constexpr uint64_t kRequests = 10;
  std::vector<uint8_t> frames;
  for (uint64_t id = 1; id <= kRequests; ++id) {
    REQUIRE(proto::append_message_frame(
                proto::Message{id, request("pipelined " + std::to_string(id), 5, id)}, &frames)
                .ok());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, daemon.temp.path().c_str(), daemon.temp.path().size());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  REQUIRE(::send(fd, frames.data(), frames.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(frames.size()));
  std::map<uint64_t, std::vector<uint32_t>> tokens;
  std::map<uint64_t, proto::GenerateDone> done;
  proto::FrameDecoder decoder;
  std::vector<uint8_t> unread;
  while (done.size() < kRequests) {
    std::span<const uint8_t> input(unread);
    proto::FrameDecoder::State state = decoder.decode(&input);
    unread.erase(unread.begin(), unread.end() - static_cast<ptrdiff_t>(input.size()));
    REQUIRE(state != proto::FrameDecoder::State::kError);
    if (state == proto::FrameDecoder::State::kNeedMore) {
      uint8_t buffer[4096];
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      REQUIRE_MESSAGE(n > 0, "recv: ", (n == 0 ? std::string("EOF") : std::string(std::strerror(errno))), " after ", done.size(), " done, ", tokens.size(), " streams");
      unread.insert(unread.end(), buffer, buffer + n);
      continue;
    }
    auto message = proto::decode_payload(decoder.payload());
    REQUIRE(message.ok());
    if (auto* frame = std::get_if<proto::TokenFrame>(&message->body)) {
      auto& mine = tokens[message->request_id];
      CHECK(frame->first_index == mine.size());
      mine.insert(mine.end(), frame->tokens.begin(), frame->tokens.end());
    } else {
      auto* end = std::get_if<proto::GenerateDone>(&message->body);
      REQUIRE_MESSAGE(end != nullptr, std::string(proto::message_name(message->body)));
      done[message->request_id] = *end;
    }
  }
  ::close(fd);
  for (uint64_t id = 1; id <= kRequests; ++id) {
    CAPTURE(id);
    CHECK(done[id].generated_tokens == 5);
    CHECK(tokens[id] == generate(*setup, request("pipelined " + std::to_string(id), 5, id)).tokens);
  }
}

TEST_CASE("tools.daemon.serving: a cancelled generation ends with kCancelled and frees it") {
  Daemon daemon;
  auto client = connect(daemon);
  load_builtin(*client);
  Streamed out = generate(*client, request("cancel me", 200, 5), /*stop_after=*/2);
  REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
  CHECK(out.done->finish_reason == proto::FinishReason::kCancelled);
  CHECK(out.tokens.size() >= 2);
  CHECK(out.tokens.size() < 200);
  CHECK(out.done->generated_tokens == out.tokens.size());
  CHECK(metric(*client, "moe_generate_cancelled_total") == 1);
  CHECK(metric(*client, "moe_kv_free_blocks") == metric(*client, "moe_kv_total_blocks"));
  // The connection goes on.
  Streamed next = generate(*client, request("next", 3, 6));
  CHECK(next.done.ok());
}

TEST_CASE("tools.daemon.serving: a client killed mid-stream frees its request") {
  Daemon daemon;
  auto admin = connect(daemon);
  load_builtin(*admin);
  // Everything the child does is a system call on bytes prepared before fork().
  auto frame = proto::encode_frame(1, request("killed client", 500, 9));
  REQUIRE(frame.ok());
  const std::string path = daemon.temp.path();
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.c_str(), path.size());
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
      ::_exit(1);
    if (::send(fd, frame->data(), frame->size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(frame->size()))
      ::_exit(1);
    char byte;
    if (::recv(fd, &byte, 1, 0) != 1) ::_exit(1);  // the first token frame is arriving
    (void)!::write(ready[1], "x", 1);
    while (true) ::pause();  // streaming until killed
  }
  ::close(ready[1]);
  char byte = 0;
  REQUIRE(::read(ready[0], &byte, 1) == 1);
  ::close(ready[0]);
  CHECK(metric(*admin, "moe_generate_running") == 1);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK(WIFSIGNALED(status));
  CHECK(metric_reaches(*admin, "moe_generate_running", 0));
  CHECK(metric(*admin, "moe_kv_free_blocks") == metric(*admin, "moe_kv_total_blocks"));
  CHECK(metric(*admin, "moed_active_requests") == 0);  // counted before the metrics request
  Streamed after = generate(*admin, request("still serving", 3, 1));
  CHECK(after.done.ok());
}

TEST_CASE("tools.daemon.serving: shutdown with drain lets a generation finish") {
  Serving serving;
  Running running(*serving.client, request("draining", 24, 4));
  CHECK(serving.admin->shutdown(true).ok());
  running.worker.join();
  REQUIRE_MESSAGE(running.out.done.ok(), running.out.done.status().to_string());
  CHECK(running.out.done->finish_reason == proto::FinishReason::kLength);
  CHECK(running.out.tokens.size() == 24);
  serving.daemon.server->wait();
}

TEST_CASE("tools.daemon.serving: a draining shutdown still takes a cancel") {
  Serving serving;
  Running running(*serving.client, request("long", 500, 4));
  CHECK(serving.admin->shutdown(true).ok());
  running.stop = true;
  running.worker.join();
  REQUIRE_MESSAGE(running.out.done.ok(), running.out.done.status().to_string());
  CHECK(running.out.done->finish_reason == proto::FinishReason::kCancelled);
  serving.daemon.server->wait();
}

TEST_CASE("tools.daemon.serving: shutdown without drain answers a generation with an error") {
  Serving serving;
  Running running(*serving.client, request("stopping", 500, 4));
  CHECK(serving.admin->shutdown(false).ok());
  running.worker.join();
  CHECK(running.out.done.status().code() == StatusCode::kCancelled);
  CHECK(running.out.done.status().message().find("without draining") != std::string::npos);
  serving.daemon.server->wait();
}

TEST_CASE("tools.daemon.serving: a lost NPU ends the running generation with an error") {
  Serving serving;
  Running running(*serving.client, request("doomed", 500, 4));
  auto fault = serving.admin->fault(proto::FaultRequest{proto::FaultKind::kNpuLost, 3});
  REQUIRE_MESSAGE(fault.ok(), fault.status().to_string());
  running.worker.join();
  CHECK_FALSE(running.out.done.ok());
  CHECK(running.out.done.status().message().find("engine steps failed") != std::string::npos);
  CHECK(metric(*serving.admin, "moed_failed_steps_total") >= 3);
  CHECK(metric(*serving.admin, "moe_generate_running") == 0);
  // The daemon answers; a new generation on the lost NPU's model fails the same way, and
  // never hangs.
  CHECK(serving.admin->status()->topology->npus_lost == std::vector<uint32_t>{3});
  CHECK_FALSE(serving.admin->generate(request("again", 4, 1)).ok());
}

TEST_CASE("tools.daemon.serving: a client reports no daemon and a refused uid clearly") {
  moe::testing::TempSocket temp;
  auto none = Client::connect({.socket_path = temp.path()});
  CHECK(none.status().code() == StatusCode::kNotFound);
  CHECK(none.status().message().find("moed") != std::string::npos);

  daemon::ServerOptions options;
  options.allowed_uids = {static_cast<uint32_t>(::getuid()) + 1};
  Daemon daemon(options);
  auto client = connect(daemon);
  auto status = client->status();
  CHECK(status.status().code() == StatusCode::kFailedPrecondition);
  CHECK(status.status().message().find("allow-list") != std::string::npos);
}

TEST_CASE("tools.daemon.serving: the loopback TCP listener serves, but no admin request") {
  daemon::ServerOptions options;
  options.tcp = true;
  Daemon daemon(options);
  REQUIRE(daemon.server->tcp_port() != 0);
  ClientOptions tcp;
  tcp.tcp_port = daemon.server->tcp_port();
  auto client = Client::connect(tcp);
  REQUIRE_MESSAGE(client.ok(), client.status().to_string());
  load_builtin(**client);
  Streamed out = generate(**client, request("over tcp", 4, 2));
  REQUIRE_MESSAGE(out.done.ok(), out.done.status().to_string());
  CHECK(out.tokens.size() == 4);
  Status refused = (*client)->shutdown(false);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK(refused.message().find("TCP") != std::string::npos);
  CHECK((*client)->status(false).ok());  // still served
}
