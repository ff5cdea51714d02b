// Client: blocking POSIX socket I/O with poll() for the read deadline, frames through the
// protocol's FrameDecoder and codec.
//
// Design: the client sends one request at a time and reads until its answer, so any frame
// with another request id is an answer to a request it gave up on (an earlier timeout) or a
// stray cancel's reply, and is skipped. An ErrorReply with kNoRequestId is about the
// connection itself (refused uid, bad frame) and fails the call.
#include "tools/lib/client/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "tools/lib/protocol/codec.h"

namespace moe {

std::string default_socket_path() {
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");  // the session's, not an option
  if (runtime_dir && *runtime_dir) return std::string(runtime_dir) + "/moed.sock";
  return "/run/moed.sock";
}

namespace {

// A connected TCP socket to 127.0.0.1:port, or the error.
StatusOr<int> connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(StatusCode::kInternal, "socket: %s", std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    int error = errno;
    ::close(fd);
    if (error == ECONNREFUSED) {
      return make_error(StatusCode::kNotFound, "no daemon listens at 127.0.0.1:%u: %s", port,
                        std::strerror(error));
    }
    return make_error(StatusCode::kInternal, "connect 127.0.0.1:%u: %s", port,
                      std::strerror(error));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

}  // namespace

StatusOr<std::unique_ptr<Client>> Client::connect(const ClientOptions& options) {
  if (options.tcp_port != 0) {
    MOE_TRY_ASSIGN(int fd, connect_loopback(options.tcp_port));
    return std::unique_ptr<Client>(
        new Client(fd, "127.0.0.1:" + std::to_string(options.tcp_port), options));
  }
  std::string path = options.socket_path.empty() ? default_socket_path() : options.socket_path;
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) {
    return make_error(StatusCode::kInvalidArgument, "socket path '%s' is longer than %zu bytes",
                      path.c_str(), sizeof(address.sun_path) - 1);
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(StatusCode::kInternal, "socket: %s", std::strerror(errno));
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    int error = errno;
    ::close(fd);
    if (error == ENOENT || error == ECONNREFUSED) {
      return make_error(StatusCode::kNotFound, "no daemon listens at %s (is moed running?): %s",
                        path.c_str(), std::strerror(error));
    }
    return make_error(StatusCode::kInternal, "connect %s: %s", path.c_str(),
                      std::strerror(error));
  }
  return std::unique_ptr<Client>(new Client(fd, std::move(path), options));
}

Client::Client(int fd, std::string path, const ClientOptions& options)
    : fd_(fd),
      path_(std::move(path)),
      timeout_ms_(options.timeout_ms == 0 ? 60000 : options.timeout_ms),
      max_frame_bytes_(options.max_frame_bytes == 0 ? proto::max_frame_bytes_option()
                                                    : options.max_frame_bytes),
      decoder_(max_frame_bytes_) {}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Status Client::send(uint64_t id, proto::Body body) {
  if (!broken_.ok()) return broken_;
  out_.clear();
  MOE_TRY(proto::append_message_frame(proto::Message{id, std::move(body)}, &out_,
                                      max_frame_bytes_));
  size_t done = 0;
  while (done < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + done, out_.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      broken_ = daemon_goodbye(make_error(StatusCode::kNodeUnreachable, "moed at %s: send: %s",
                                          path_.c_str(), std::strerror(errno)));
      return broken_;
    }
    done += static_cast<size_t>(n);
  }
  return ok_status();
}

// A daemon that refuses a connection (uid, limits) answers with an ErrorReply and closes;
// a request sent after that fails to send, but the reason is already in the socket: read it.
Status Client::daemon_goodbye(Status fallback) {
  uint8_t buffer[16384];
  while (true) {
    ssize_t n = ::recv(fd_, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n <= 0) break;
    unread_.insert(unread_.end(), buffer, buffer + n);
  }
  while (true) {
    std::span<const uint8_t> input(unread_);
    proto::FrameDecoder::State state = decoder_.decode(&input);
    unread_.erase(unread_.begin(), unread_.end() - static_cast<ptrdiff_t>(input.size()));
    if (state != proto::FrameDecoder::State::kFrame) return fallback;
    StatusOr<proto::Message> message = proto::decode_payload(decoder_.payload());
    if (!message.ok()) return fallback;
    auto* error = std::get_if<proto::ErrorReply>(&message->body);
    if (error && message->request_id == proto::kNoRequestId) return error->to_status();
  }
}

StatusOr<proto::Message> Client::receive() {
  if (!broken_.ok()) return broken_;
  const int64_t deadline = wall_now_ns() + int64_t{timeout_ms_} * 1000000;
  while (true) {
    std::span<const uint8_t> input(unread_);
    proto::FrameDecoder::State state = decoder_.decode(&input);
    unread_.erase(unread_.begin(), unread_.end() - static_cast<ptrdiff_t>(input.size()));
    if (state == proto::FrameDecoder::State::kError) {
      broken_ = make_error(StatusCode::kParseError, "moed at %s sent a bad frame: %s",
                           path_.c_str(), decoder_.error().message().c_str());
      return broken_;
    }
    if (state == proto::FrameDecoder::State::kFrame) {
      StatusOr<proto::Message> message = proto::decode_payload(decoder_.payload());
      if (!message.ok()) {
        broken_ = make_error(StatusCode::kParseError, "moed at %s sent a bad message: %s",
                             path_.c_str(), message.status().message().c_str());
        return broken_;
      }
      return message;
    }
    const int64_t left_ms = (deadline - wall_now_ns()) / 1000000;
    if (left_ms <= 0) {
      broken_ = make_error(StatusCode::kTimeout, "moed at %s: no answer within %u ms",
                           path_.c_str(), timeout_ms_);
      return broken_;
    }
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left_ms));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;  // the deadline check above ends it
    uint8_t buffer[16384];
    ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      broken_ = make_error(StatusCode::kNodeUnreachable, "moed at %s closed the connection%s%s",
                           path_.c_str(), n < 0 ? ": " : "", n < 0 ? std::strerror(errno) : "");
      return broken_;
    }
    unread_.insert(unread_.end(), buffer, buffer + n);
  }
}

StatusOr<proto::Body> Client::call(proto::Body body) {
  const uint64_t id = next_id();
  MOE_TRY(send(id, std::move(body)));
  while (true) {
    MOE_TRY_ASSIGN(proto::Message message, receive());
    if (message.request_id != id && message.request_id != proto::kNoRequestId) continue;
    if (auto* error = std::get_if<proto::ErrorReply>(&message.body)) return error->to_status();
    if (message.request_id == proto::kNoRequestId) continue;
    return std::move(message.body);
  }
}

namespace {

template <typename T>
StatusOr<T> expect(StatusOr<proto::Body> body) {
  if (!body.ok()) return body.status();
  if (auto* value = std::get_if<T>(&*body)) return std::move(*value);
  return make_error(StatusCode::kParseError, "moed answered with %s",
                    std::string(proto::message_name(*body)).c_str());
}

}  // namespace

StatusOr<proto::StatusReply> Client::status(bool include_topology) {
  return expect<proto::StatusReply>(call(proto::StatusRequest{include_topology}));
}

StatusOr<proto::LoadReply> Client::load(const proto::LoadRequest& request) {
  return expect<proto::LoadReply>(call(request));
}

Status Client::unload(const std::string& model) {
  return expect<proto::Ack>(call(proto::UnloadRequest{model})).status();
}

StatusOr<proto::MetricsReply> Client::metrics(proto::MetricsFormat format) {
  return expect<proto::MetricsReply>(call(proto::MetricsRequest{format}));
}

StatusOr<proto::FaultReply> Client::fault(const proto::FaultRequest& request) {
  if (request.clear) {
    MOE_TRY(expect<proto::Ack>(call(request)).status());
    return proto::FaultReply{request.fault_id};
  }
  return expect<proto::FaultReply>(call(request));
}

Status Client::drain() { return expect<proto::Ack>(call(proto::DrainRequest{})).status(); }

Status Client::shutdown(bool drain) {
  return expect<proto::Ack>(call(proto::ShutdownRequest{drain})).status();
}

StatusOr<proto::GenerateDone> Client::generate(const proto::GenerateRequest& request,
                                               const TokenCallback& on_tokens) {
  const uint64_t id = next_id();
  uint64_t cancel_id = proto::kNoRequestId;
  MOE_TRY(send(id, request));
  while (true) {
    MOE_TRY_ASSIGN(proto::Message message, receive());
    if (message.request_id == proto::kNoRequestId) {
      if (auto* error = std::get_if<proto::ErrorReply>(&message.body)) return error->to_status();
      continue;
    }
    if (message.request_id == cancel_id) continue;  // the cancel's Ack or "not running"
    if (message.request_id != id) continue;
    if (auto* frame = std::get_if<proto::TokenFrame>(&message.body)) {
      if (on_tokens && !on_tokens(*frame) && cancel_id == proto::kNoRequestId) {
        cancel_id = next_id();
        MOE_TRY(send(cancel_id, proto::CancelRequest{id}));
      }
    } else if (auto* done = std::get_if<proto::GenerateDone>(&message.body)) {
      return *done;
    } else if (auto* error = std::get_if<proto::ErrorReply>(&message.body)) {
      return error->to_status();
    } else {
      return make_error(StatusCode::kParseError, "moed answered a generate request with %s",
                        std::string(proto::message_name(message.body)).c_str());
    }
  }
}

}  // namespace moe
