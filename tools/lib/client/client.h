// moe::Client: the Api over a connection to moed (tools/moed), plus the admin requests.
//
// A blocking client: each call sends one request and reads until its answer (for generate,
// TokenFrames until GenerateDone). Reads give up after ClientOptions::timeout_ms without a
// frame (kTimeout); the daemon's own deadlines are separate. A connection the daemon refused
// (uid not allowed, too many connections) reports the daemon's error on the first call.
// After a connection error (EOF, a bad frame, a timeout) every later call fails with it.
//
// Thread-safety: one thread at a time per Client; connect one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tools/lib/client/api.h"
#include "tools/lib/protocol/frame.h"

namespace moe {

struct ClientOptions {
  std::string socket_path;  // empty: default_socket_path()
  uint16_t tcp_port = 0;    // not 0: moed's loopback TCP listener instead (no admin requests)
  uint32_t timeout_ms = 60000;
  size_t max_frame_bytes = 0;  // 0: PROTOCOL_MAX_FRAME_BYTES
};

// $XDG_RUNTIME_DIR/moed.sock in a user session, else /run/moed.sock (a system service):
// where moed listens and the client looks by default.
std::string default_socket_path();

class Client final : public Api {
 public:
  // kInvalidArgument for a path too long for a Unix socket; kNotFound naming the path (or
  // port) when no daemon listens there; kInternal naming the call and errno otherwise.
  static StatusOr<std::unique_ptr<Client>> connect(const ClientOptions& options = {});
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  StatusOr<proto::StatusReply> status(bool include_topology = true) override;
  StatusOr<proto::LoadReply> load(const proto::LoadRequest& request) override;
  Status unload(const std::string& model = "") override;
  StatusOr<proto::GenerateDone> generate(const proto::GenerateRequest& request,
                                         const TokenCallback& on_tokens = {}) override;
  StatusOr<proto::MetricsReply> metrics(
      proto::MetricsFormat format = proto::MetricsFormat::kJson) override;

  // Admin requests (the daemon checks the caller's uid).
  StatusOr<proto::FaultReply> fault(const proto::FaultRequest& request);
  Status drain();  // returns when nothing is in flight
  Status shutdown(bool drain = true);

 private:
  Client(int fd, std::string path, const ClientOptions& options);
  // Sends `body` as request `id`.
  Status send(uint64_t id, proto::Body body);
  // The daemon's connection-level ErrorReply if one is waiting in the socket, else fallback.
  Status daemon_goodbye(Status fallback);
  // The next message (any id). Connection errors are sticky.
  StatusOr<proto::Message> receive();
  // Sends a request and returns its one answer (an ErrorReply becomes its Status).
  StatusOr<proto::Body> call(proto::Body body);
  uint64_t next_id() { return next_id_++; }

  int fd_ = -1;
  std::string path_;
  uint32_t timeout_ms_;
  size_t max_frame_bytes_;
  proto::FrameDecoder decoder_;
  std::vector<uint8_t> unread_;
  std::vector<uint8_t> out_;
  uint64_t next_id_ = 1;
  Status broken_;  // not ok after a connection error
};

}  // namespace moe
