// moed's server: a Unix-socket listener that speaks the moed protocol
// (tools/lib/protocol/) to local applications and hands work to the engine thread.
//
// Threads: one io thread runs every socket (Asio, hidden in server.cpp) and one engine
// thread (EngineExecutor) owns the runtime. A request is decoded on the io thread, posted to
// the engine queue, and its reply posted back to the io thread.
//
// Listeners: the Unix socket, and optionally TCP on the loopback address (ServerOptions::tcp).
// What each connection is checked for:
//   - on accept, the peer's uid (SO_PEERCRED) against allowed_uids: a peer not listed gets
//     an ErrorReply (kFailedPrecondition, naming its uid) and the connection is closed;
//   - every frame: the header (magic, version, length <= max_frame_bytes, checked before the
//     payload is read) and the payload (the FlatBuffers Verifier). A header error gets an
//     ErrorReply with kNoRequestId and the connection is closed after it is sent; a payload
//     error gets an ErrorReply naming the request id where it could be read, and the stream
//     goes on;
//   - admin requests (Fault, Drain, Shutdown) need the peer's uid in admin_uids.
// Back-pressure: a connection with max_inflight_per_connection requests outstanding, or with
// more than max_pending_write_bytes queued for sending, is not read from until that falls;
// a full engine queue answers kBusy. Each request has a deadline (request_timeout_ms;
// load_timeout_ms for a LoadRequest): when
// it passes the client gets kTimeout and the late result is dropped; a generate request's
// deadline restarts with every TokenFrame (it bounds the silence, not the generation). A
// client that disconnects frees its requests: queued jobs are skipped, results dropped, and
// its generations cancelled at the engine's next step (their KV blocks return).
//
// Requests (tools/lib/daemon/engine_jobs.h for what each does on the engine thread): Status,
// Load, Unload, Metrics and Fault get one reply; Generate gets TokenFrames (one per engine
// step that produced tokens; when the io thread is behind, the waiting frames are merged
// into one) and then GenerateDone, or an ErrorReply, which always ends a
// request; Cancel names a generate request of the same connection (Ack, and the stream ends
// with GenerateDone kCancelled). Replies sent by a client get kInvalidArgument.
//
// Drain: new generate requests get kFailedPrecondition; the DrainRequest is answered when
// nothing is in flight. Shutdown with drain: no more connections are accepted and new
// requests (but cancels) get kFailedPrecondition; the requests in flight are answered, then every
// connection is closed. Shutdown without drain answers every request in flight with
// kCancelled before closing: nothing is left unanswered.
//
// Thread-safety: start() once; request_shutdown() and wait() from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "tools/lib/daemon/engine_executor.h"

namespace moe::daemon {

struct ServerOptions {
  std::string socket_path;           // created with mode 0660; a stale socket is replaced
  std::vector<uint32_t> allowed_uids;  // empty: only the daemon's own uid
  std::vector<uint32_t> admin_uids;    // empty: only the daemon's own uid
  size_t max_frame_bytes = 0;          // 0: PROTOCOL_MAX_FRAME_BYTES
  uint32_t max_connections = 64;       // more are refused with kResourceExhausted
  uint32_t max_inflight_per_connection = 16;
  size_t max_pending_write_bytes = size_t{4} << 20;
  uint32_t request_timeout_ms = 30000;
  uint32_t load_timeout_ms = 600000;   // LoadRequest's deadline (placing weights takes long)
  std::string daemon_version = "moed 0.1";
  // A TCP listener on 127.0.0.1 (never another address). Its peers have no uid: any local
  // user may connect, and admin requests are refused over it. tcp_port 0: any free port.
  bool tcp = false;
  uint16_t tcp_port = 0;
};

class Server {
 public:
  // Binds the socket and starts the io thread. The executor must outlive the server.
  // kInvalidArgument for an empty or too long socket path; kAlreadyExists when the path is
  // something other than a socket; kInternal (naming the call and errno) when the socket
  // cannot be bound.
  static StatusOr<std::unique_ptr<Server>> start(const ServerOptions& options,
                                                 EngineExecutor* executor);
  ~Server();  // request_shutdown(drain=false) and wait()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops accepting; with drain, waits for in-flight requests before closing connections.
  // Returns at once; wait() blocks until done.
  void request_shutdown(bool drain);
  // Blocks until the server has stopped (after a ShutdownRequest or request_shutdown), then
  // removes the socket file. Idempotent.
  void wait();

  const std::string& socket_path() const;
  uint16_t tcp_port() const;  // the bound port; 0 without a TCP listener

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses "1000,1001" into uids. kInvalidArgument naming the bad element.
StatusOr<std::vector<uint32_t>> parse_uid_list(const std::string& text);

}  // namespace moe::daemon
