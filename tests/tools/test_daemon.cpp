// moed's server over a real Unix socket: status from the runtime, frames that are garbage,
// oversized or unverifiable answered with an ErrorReply (and the stream closed when it cannot
// go on), the uid allow-list and admin list, a full engine queue, deadlines, a client that
// leaves mid-request, drain and shutdown. A plain socket client, with a receive timeout so
// that a server that stalls fails the test instead of hanging it.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/base/strformat.h"
#include "tests/tools/daemon_fixture.h"
#include "tools/lib/daemon/engine_executor.h"
#include "tools/lib/daemon/server.h"
#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"

using namespace moe;
using namespace moe::daemon;
using namespace moe::proto;

namespace {

constexpr size_t kLimit = 4096;

// A blocking client. Every read gives up after 10 s.
struct Client {
  int fd = -1;
  FrameDecoder decoder{kLimit};
  std::vector<uint8_t> unread;

  explicit Client(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  }
  ~Client() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  void send_bytes(const std::vector<uint8_t>& bytes) {
    REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
  template <typename T>
  void send(uint64_t id, T body) {
    auto frame = encode_frame(id, std::move(body), kLimit);
    REQUIRE(frame.ok());
    send_bytes(frame.value());
  }

  // The next message, or nullopt at EOF. Fails the test on a timeout or a bad frame.
  std::optional<Message> receive() {
    while (true) {
      std::span<const uint8_t> input(unread);
      FrameDecoder::State state = decoder.decode(&input);
      unread.erase(unread.begin(), unread.end() - static_cast<ptrdiff_t>(input.size()));
      REQUIRE_MESSAGE(state != FrameDecoder::State::kError, decoder.error().to_string());
      if (state == FrameDecoder::State::kFrame) {
        auto message = decode_payload(decoder.payload());
        REQUIRE_MESSAGE(message.ok(), message.status().to_string());
        return std::move(message).value();
      }
      uint8_t buffer[4096];
      ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
      REQUIRE_MESSAGE(n >= 0, "recv: ", std::strerror(errno));
      if (n == 0) return std::nullopt;
      unread.insert(unread.end(), buffer, buffer + n);
    }
  }

  template <typename T>
  T receive_as(uint64_t expected_id) {
    auto message = receive();
    REQUIRE(message.has_value());
    CHECK(message->request_id == expected_id);
    const T* body = std::get_if<T>(&message->body);
    REQUIRE_MESSAGE(body != nullptr, "got ", std::string(message_name(message->body)));
    return *body;
  }
};

// The fixture's daemon with this file's frame limit.
struct Daemon : moe::testing::Daemon {
  explicit Daemon(ServerOptions options = {}, size_t queue = 8)
      : moe::testing::Daemon(with_limit(options), queue) {}
  static ServerOptions with_limit(ServerOptions options) {
    options.max_frame_bytes = kLimit;
    return options;
  }
};

// Holds the engine thread in a job until released.
struct EngineGate {
  std::mutex mutex;
  std::condition_variable cv;
  bool entered = false, released = false;
  void block(EngineExecutor& executor) {
    REQUIRE(executor
                .try_post([this](EngineContext&) {
                  std::unique_lock<std::mutex> lock(mutex);
                  entered = true;
                  cv.notify_all();
                  cv.wait(lock, [this] { return released; });
                })
                .ok());
    std::unique_lock<std::mutex> lock(mutex);
    cv.wait(lock, [this] { return entered; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex);
    released = true;
    cv.notify_all();
  }
};

uint32_t other_uid() { return static_cast<uint32_t>(::getuid()) + 1; }

}  // namespace

TEST_CASE("tools.daemon: status reports the supernode; the socket is mode 0660") {
  Daemon daemon;
  struct stat info {};
  REQUIRE(::stat(daemon.temp.path().c_str(), &info) == 0);
  CHECK(S_ISSOCK(info.st_mode));
  CHECK((info.st_mode & 0777) == 0660);

  Client client(daemon.temp.path());
  client.send(41, StatusRequest{true});
  auto reply = client.receive_as<StatusReply>(41);
  CHECK(reply.protocol_version == kProtocolVersion);
  CHECK(reply.state == DaemonState::kReady);
  CHECK(reply.active_requests == 0);
  REQUIRE(reply.topology.has_value());
  CHECK(reply.topology->num_npus == 8);
  CHECK(reply.topology->num_links > 0);
  CHECK(reply.topology->links_down == 0);
  CHECK(reply.topology->npus_lost.empty());

  client.send(42, StatusRequest{false});
  auto second = client.receive_as<StatusReply>(42);
  CHECK_FALSE(second.topology.has_value());
  CHECK(second.uptime_wall_ns >= reply.uptime_wall_ns);
}

TEST_CASE("tools.daemon: a frame with bad magic gets an ErrorReply, then EOF") {
  Daemon daemon;
  Client client(daemon.temp.path());
  std::string garbage = "GET / HTTP/1.1\r\n\r\n";
  client.send_bytes(std::vector<uint8_t>(garbage.begin(), garbage.end()));
  auto error = client.receive_as<ErrorReply>(kNoRequestId);
  CHECK(error.code == StatusCode::kParseError);
  CHECK(error.message.find("magic") != std::string::npos);
  CHECK_FALSE(client.receive().has_value());
}

TEST_CASE("tools.daemon: a frame of another protocol version is refused, then EOF") {
  Daemon daemon;
  Client client(daemon.temp.path());
  auto frame = encode_frame(3, StatusRequest{false}, kLimit);
  REQUIRE(frame.ok());
  frame.value()[7] = kProtocolVersion + 1;  // the header's last byte: the version
  client.send_bytes(frame.value());
  auto error = client.receive_as<ErrorReply>(kNoRequestId);
  CHECK(error.code == StatusCode::kUnsupported);
  CHECK(error.message.find("version") != std::string::npos);
  CHECK_FALSE(client.receive().has_value());
}

TEST_CASE("tools.daemon: an oversized length is refused before its payload is read") {
  Daemon daemon;
  Client client(daemon.temp.path());
  std::vector<uint8_t> header(kFrameHeaderBytes);
  write_frame_header(0x7FFFFFFF, header.data());
  client.send_bytes(header);  // no payload follows: the server must not wait for one
  auto error = client.receive_as<ErrorReply>(kNoRequestId);
  CHECK(error.code == StatusCode::kInvalidArgument);
  CHECK(error.message.find("over the limit") != std::string::npos);
  CHECK_FALSE(client.receive().has_value());
}

TEST_CASE("tools.daemon: a truncated frame stalls only its own connection") {
  Daemon daemon;
  Client truncated(daemon.temp.path());
  auto frame = encode_frame(4, StatusRequest{true}, kLimit);
  REQUIRE(frame.ok());
  std::vector<uint8_t> half(frame.value().begin(),
                            frame.value().begin() + static_cast<ptrdiff_t>(frame.value().size() / 2));
  truncated.send_bytes(half);  // the rest never comes
  Client other(daemon.temp.path());
  other.send(5, StatusRequest{false});
  CHECK(other.receive_as<StatusReply>(5).active_requests == 0);
  truncated.close();  // the daemon drops the half frame with the connection
  other.send(6, StatusRequest{false});
  other.receive_as<StatusReply>(6);
  // The rest of a frame completes it: the decoder keeps partial input.
  Client slow(daemon.temp.path());
  slow.send_bytes(half);
  slow.send_bytes(std::vector<uint8_t>(frame.value().begin() + static_cast<ptrdiff_t>(half.size()),
                                       frame.value().end()));
  CHECK(slow.receive_as<StatusReply>(4).topology.has_value());
}

TEST_CASE("tools.daemon: an unverifiable payload is answered and the stream goes on") {
  Daemon daemon;
  Client client(daemon.temp.path());
  std::vector<uint8_t> junk(40, 0xAB);
  std::vector<uint8_t> frame;
  REQUIRE(append_frame(junk, kLimit, &frame).ok());
  client.send_bytes(frame);
  auto error = client.receive_as<ErrorReply>(kNoRequestId);
  CHECK(error.code == StatusCode::kParseError);

  client.send(7, GenerateRequest{});  // no model is loaded
  CHECK(client.receive_as<ErrorReply>(7).code == StatusCode::kNotFound);
  client.send(8, Ack{"a reply"});
  CHECK(client.receive_as<ErrorReply>(8).code == StatusCode::kInvalidArgument);
  client.send(kNoRequestId, StatusRequest{false});  // id 0 is reserved
  CHECK(client.receive_as<ErrorReply>(kNoRequestId).message.find("reserved") != std::string::npos);
  client.send(9, StatusRequest{false});
  client.receive_as<StatusReply>(9);
}

TEST_CASE("tools.daemon: a uid outside the allow-list is refused and closed") {
  ServerOptions options;
  options.allowed_uids = {other_uid()};
  Daemon daemon(options);
  Client client(daemon.temp.path());
  auto error = client.receive_as<ErrorReply>(kNoRequestId);
  CHECK(error.code == StatusCode::kFailedPrecondition);
  CHECK(error.message.find(strformat("uid %u", static_cast<uint32_t>(::getuid()))) !=
        std::string::npos);
  CHECK_FALSE(client.receive().has_value());
}

TEST_CASE("tools.daemon: drain and shutdown need an admin uid") {
  ServerOptions options;
  options.admin_uids = {other_uid()};
  Daemon daemon(options);
  Client client(daemon.temp.path());
  client.send(1, ShutdownRequest{true});
  CHECK(client.receive_as<ErrorReply>(1).code == StatusCode::kFailedPrecondition);
  client.send(2, DrainRequest{});
  CHECK(client.receive_as<ErrorReply>(2).code == StatusCode::kFailedPrecondition);
  client.send(3, StatusRequest{false});
  CHECK(client.receive_as<StatusReply>(3).state == DaemonState::kReady);
}

TEST_CASE("tools.daemon: a full engine queue answers busy; the queued request is answered") {
  Daemon daemon({}, /*queue=*/1);
  EngineGate gate;
  gate.block(*daemon.executor);  // the engine is busy; the queue (1) is empty
  Client client(daemon.temp.path());
  client.send(1, StatusRequest{false});  // takes the queue's one place
  client.send(2, StatusRequest{false});
  auto busy = client.receive_as<ErrorReply>(2);
  CHECK(busy.code == StatusCode::kBusy);
  gate.release();
  client.receive_as<StatusReply>(1);
}

TEST_CASE("tools.daemon: a request past its deadline gets kTimeout") {
  ServerOptions options;
  options.request_timeout_ms = 20;
  Daemon daemon(options);
  EngineGate gate;
  gate.block(*daemon.executor);
  Client client(daemon.temp.path());
  client.send(5, StatusRequest{false});
  CHECK(client.receive_as<ErrorReply>(5).code == StatusCode::kTimeout);
  gate.release();
  client.send(6, StatusRequest{false});  // the late result of 5 was dropped
  auto reply = client.receive_as<StatusReply>(6);
  CHECK(reply.active_requests == 0);
}

TEST_CASE("tools.daemon: a client that leaves mid-request frees it; drain and shutdown") {
  Daemon daemon;
  EngineGate gate;
  gate.block(*daemon.executor);
  {
    Client leaving(daemon.temp.path());
    leaving.send(1, StatusRequest{true});
    leaving.send(2, StatusRequest{true});
  }
  Client client(daemon.temp.path());
  gate.release();
  // Until the server has seen the first client go, it may count its requests: poll.
  uint32_t active = 1;
  for (uint64_t id = 10; id < 1000 && active != 0; ++id) {
    client.send(id, StatusRequest{false});
    active = client.receive_as<StatusReply>(id).active_requests;
  }
  CHECK(active == 0);

  client.send(20, DrainRequest{});
  CHECK(client.receive_as<Ack>(20).message == "drained");
  client.send(21, StatusRequest{false});
  CHECK(client.receive_as<StatusReply>(21).state == DaemonState::kDraining);
  client.send(22, ShutdownRequest{true});
  client.receive_as<Ack>(22);
  CHECK_FALSE(client.receive().has_value());
  daemon.server->wait();
  CHECK_FALSE(std::filesystem::exists(daemon.temp.path()));
}

TEST_CASE("tools.daemon: shutdown with drain answers the requests in flight, then closes") {
  Daemon daemon;
  EngineGate gate;
  gate.block(*daemon.executor);
  Client worker(daemon.temp.path());
  worker.send(1, StatusRequest{false});  // in flight behind the gate
  Client admin(daemon.temp.path());
  admin.send(2, ShutdownRequest{true});
  admin.receive_as<Ack>(2);
  worker.send(3, StatusRequest{false});
  CHECK(worker.receive_as<ErrorReply>(3).code == StatusCode::kFailedPrecondition);
  gate.release();
  CHECK(worker.receive_as<StatusReply>(1).state == DaemonState::kReady);
  CHECK_FALSE(worker.receive().has_value());
  CHECK_FALSE(admin.receive().has_value());
  daemon.server->wait();
}

TEST_CASE("tools.daemon: uid lists parse; bad ones are named") {
  auto uids = parse_uid_list("0,1000,65534");
  REQUIRE(uids.ok());
  CHECK(uids.value() == std::vector<uint32_t>{0, 1000, 65534});
  for (const char* bad : {"", "1000,", "abc", "-1", "1,,2", "99999999999"}) {
    auto parsed = parse_uid_list(bad);
    CHECK_MESSAGE(parsed.status().code() == StatusCode::kInvalidArgument, bad);
  }
  CHECK(parse_uid_list("1000,x").status().message().find("'x'") != std::string::npos);
}
