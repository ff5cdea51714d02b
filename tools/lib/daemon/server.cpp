// The server: Asio on one io thread; every connection is a shared object with a read loop,
// a frame decoder, a write queue and a table of outstanding requests.
//
// Design: everything that touches a socket or a Connection runs on the io thread, so no
// connection state is locked. Engine jobs capture a weak_ptr to the connection and a shared
// "alive" flag: a job whose connection is gone is skipped before it touches the runtime, and
// its result (posted back with asio::post) finds no connection and is dropped. Back-pressure
// is by not reading: the read loop is re-armed only while the connection has fewer than
// max_inflight_per_connection outstanding requests and less than max_pending_write_bytes
// queued for sending. Each outstanding request owns a steady_timer; whichever of the timer
// and the result comes first answers and erases it, the other finds it gone.
//
// Ownership: the server owns every open connection (Impl::all) until close_now(); handlers
// in flight hold it too. Frames past the in-flight limit wait undecoded in the connection's
// backlog and are handled as requests complete, so the limit holds exactly.
// Invariants: reading is true iff an async read is pending; writing iff an async write is;
// closing means no more reads, and the socket is closed once the write queue is empty.
#define ASIO_STANDALONE 1
#include "tools/lib/daemon/server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <asio.hpp>

#include "runtime/base/clock.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"
#include "tools/lib/daemon/engine_jobs.h"
#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"

namespace moe::daemon {

using Stream = asio::local::stream_protocol;
using AnySocket = asio::generic::stream_protocol::socket;  // a Unix or a TCP connection

// The uid of a TCP peer: unknown (no SO_PEERCRED over TCP); never an admin.
constexpr uint32_t kTcpPeerUid = 0xFFFFFFFFu;

struct Server::Impl {
  ServerOptions options;
  EngineExecutor* executor = nullptr;
  // Shared with the engine jobs, which post their results here: a job that finishes after
  // the server stopped posts into a stopped context (the handler is dropped, never run).
  std::shared_ptr<asio::io_context> io_holder = std::make_shared<asio::io_context>();
  asio::io_context& io = *io_holder;
  Stream::acceptor acceptor{io};
  asio::ip::tcp::acceptor tcp_acceptor{io};  // open only with options.tcp
  uint16_t tcp_port = 0;
  std::thread io_thread;
  int64_t start_wall_ns = 0;
  proto::DaemonState state = proto::DaemonState::kReady;  // io thread
  bool shutdown_drain = true;                               // io thread
  uint32_t connections = 0;                                 // io thread
  uint32_t active_requests = 0;                             // io thread
  DaemonCounters counters;                                  // io thread (snapshots)
  // Every open connection, owned here: one that waits with no read armed (its in-flight
  // limit reached) has no other owner. Removed by Connection::close_now().
  std::unordered_map<struct Connection*, std::shared_ptr<struct Connection>> all;  // io thread
  std::vector<std::pair<std::weak_ptr<struct Connection>, uint64_t>> drain_waiters;  // io thread
  std::mutex done_mutex;
  std::condition_variable done_cv;
  bool done = false;
  bool waited = false;

  bool allowed(uint32_t uid) const;
  bool admin(uint32_t uid) const;
  void accept_next();
  void accept_next_tcp();
  void on_accepted(AnySocket socket, bool tcp);
  void begin_shutdown(bool drain);
  void maybe_finish();
  void finish();
};

namespace {

bool listed(const std::vector<uint32_t>& list, uint32_t uid) {
  if (list.empty()) return uid == static_cast<uint32_t>(::getuid());
  return std::find(list.begin(), list.end(), uid) != list.end();
}

}  // namespace

bool Server::Impl::allowed(uint32_t uid) const { return listed(options.allowed_uids, uid); }
bool Server::Impl::admin(uint32_t uid) const { return listed(options.admin_uids, uid); }

// A stream's tokens between the engine thread and the io thread. The engine adds each
// step's frame; only the first frame after a flush posts one, so while the io thread is
// behind, later steps join the waiting frame instead of queueing more handlers (one frame,
// one write, one client wake-up for several steps). The GenerateDone posted after it runs
// after the flush (one io thread, handlers in order), so nothing overtakes a token.
class TokenOutbox {
 public:
  // True when the caller must post a flush.
  bool add(proto::TokenFrame frame) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (waiting_) {
      waiting_->tokens.insert(waiting_->tokens.end(), frame.tokens.begin(), frame.tokens.end());
      waiting_->text += frame.text;
      return false;
    }
    waiting_ = std::move(frame);
    return true;
  }
  std::optional<proto::TokenFrame> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::optional<proto::TokenFrame> out = std::move(waiting_);
    waiting_.reset();
    return out;
  }

 private:
  std::mutex mutex_;
  std::optional<proto::TokenFrame> waiting_;
};

struct Connection : std::enable_shared_from_this<Connection> {
  // A generate request's engine-side handle: written and read on the engine thread only.
  struct StreamTicket {
    bool started = false;
    StreamId id = 0;
  };
  struct Pending {
    std::unique_ptr<asio::steady_timer> timer;
    std::shared_ptr<std::atomic<bool>> alive;  // false: skip the job / drop the result
    std::shared_ptr<StreamTicket> stream;      // generate requests only
    uint32_t timeout_ms = 0;                   // its deadline, from arming
  };

  Connection(Server::Impl* server, AnySocket socket, bool tcp)
      : server(server), socket(std::move(socket)), tcp(tcp),
        decoder(server->options.max_frame_bytes) {}

  Server::Impl* server;
  AnySocket socket;
  bool tcp = false;  // a loopback TCP peer: no uid, no admin requests
  proto::FrameDecoder decoder;
  uint32_t uid = 0;
  uint8_t read_buffer[16384];
  std::deque<std::vector<uint8_t>> write_queue;
  size_t pending_write_bytes = 0;
  bool reading = false;
  bool writing = false;
  bool closing = false;
  bool closed = false;
  std::unordered_map<uint64_t, Pending> pending;
  std::vector<uint8_t> backlog;  // read, not yet decoded (the in-flight limit was reached)

  void start(uint32_t peer_uid) {
    uid = peer_uid;
    read_more();
  }

  bool may_read() const {
    return !closing && !reading &&
           pending.size() < server->options.max_inflight_per_connection &&
           pending_write_bytes <= server->options.max_pending_write_bytes;
  }

  void read_more() {
    if (!may_read()) return;
    reading = true;
    auto self = shared_from_this();
    socket.async_read_some(asio::buffer(read_buffer), [self](asio::error_code ec, size_t n) {
      self->reading = false;
      if (ec) {  // EOF or reset: the client is gone
        self->close_now();
        return;
      }
      self->on_bytes(std::span<const uint8_t>(self->read_buffer, n));
      self->read_more();
    });
  }

  void on_bytes(std::span<const uint8_t> input) {
    backlog.insert(backlog.end(), input.begin(), input.end());
    decode_backlog();
  }

  // Decodes and handles the frames read so far, while the connection has room in flight;
  // what is left waits in `backlog` until a request completes.
  void decode_backlog() {
    std::span<const uint8_t> input(backlog);
    while (!closing && pending.size() < server->options.max_inflight_per_connection) {
      proto::FrameDecoder::State state = decoder.decode(&input);
      if (state == proto::FrameDecoder::State::kNeedMore) break;
      if (state == proto::FrameDecoder::State::kError) {
        MOE_INFO("moed: uid %u: %s", uid, decoder.error().to_string().c_str());
        ++server->counters.bad_frames_total;
        send_error(proto::kNoRequestId, decoder.error());
        close_after_writes();
        backlog.clear();
        return;
      }
      uint64_t request_id = proto::kNoRequestId;
      StatusOr<proto::Message> message = proto::decode_payload(decoder.payload(), &request_id);
      if (!message.ok()) {
        ++server->counters.bad_frames_total;
        send_error(request_id, decoder.payload_error(message.status()));
        continue;
      }
      ++server->counters.requests_total;
      handle(std::move(message).value());
    }
    backlog.erase(backlog.begin(), backlog.end() - static_cast<ptrdiff_t>(input.size()));
  }

  void send_error(uint64_t id, const Status& status) {
    ++server->counters.errors_total;
    send(id, proto::ErrorReply::from_status(status));
  }

  bool is_reply(const proto::Body& body) const {
    return std::holds_alternative<proto::StatusReply>(body) ||
           std::holds_alternative<proto::LoadReply>(body) ||
           std::holds_alternative<proto::TokenFrame>(body) ||
           std::holds_alternative<proto::GenerateDone>(body) ||
           std::holds_alternative<proto::MetricsReply>(body) ||
           std::holds_alternative<proto::FaultReply>(body) ||
           std::holds_alternative<proto::Ack>(body) ||
           std::holds_alternative<proto::ErrorReply>(body);
  }

  bool needs_admin(const proto::Body& body) const {
    return std::holds_alternative<proto::DrainRequest>(body) ||
           std::holds_alternative<proto::ShutdownRequest>(body) ||
           std::holds_alternative<proto::FaultRequest>(body);
  }

  void handle(proto::Message message) {
    const uint64_t id = message.request_id;
    const std::string name(proto::message_name(message.body));
    if (is_reply(message.body)) {
      send_error(id, make_error(StatusCode::kInvalidArgument,
                                "%s is a reply; the daemon takes requests", name.c_str()));
      return;
    }
    if (id == proto::kNoRequestId) {  // its replies would read as about the connection
      send_error(id, make_error(StatusCode::kInvalidArgument,
                                "%s has request id 0, which is reserved; use 1 or more",
                                name.c_str()));
      return;
    }
    if (pending.count(id) != 0) {
      send_error(id, make_error(StatusCode::kAlreadyExists, "request id %llu is already in flight",
                                static_cast<unsigned long long>(id)));
      return;
    }
    if (needs_admin(message.body) && tcp) {
      MOE_INFO("moed: refused %s from a TCP peer", name.c_str());
      send_error(id, make_error(StatusCode::kFailedPrecondition,
                                "%s needs the Unix socket and an admin uid (this connection is "
                                "TCP, whose peer has no uid)",
                                name.c_str()));
      return;
    }
    if (needs_admin(message.body) && !server->admin(uid)) {
      MOE_INFO("moed: refused %s from uid %u: not an admin uid", name.c_str(), uid);
      send_error(id, make_error(StatusCode::kFailedPrecondition,
                                "%s needs an admin uid; uid %u is not one", name.c_str(), uid));
      return;
    }
    // While stopping, a client may still cancel what it has in flight.
    if (server->state == proto::DaemonState::kStopping &&
        !std::holds_alternative<proto::ShutdownRequest>(message.body) &&
        !std::holds_alternative<proto::CancelRequest>(message.body)) {
      send_error(id, make_error(StatusCode::kFailedPrecondition,
                                "the daemon is shutting down; no new requests are taken"));
      return;
    }
    std::visit([&](auto& body) { serve(id, body); }, message.body);
  }

  // ---- one overload per request ----

  void serve(uint64_t id, const proto::StatusRequest& request) {
    // Daemon-side fields are read on the io thread now; the models and topology on the
    // engine thread.
    proto::StatusReply base;
    base.daemon_version = server->options.daemon_version;
    base.state = server->state;
    base.uptime_wall_ns = wall_now_ns() - server->start_wall_ns;
    base.active_requests = server->active_requests;
    base.queued_requests = static_cast<uint32_t>(server->executor->queued());
    const bool topology = request.include_topology;
    submit(id, [base, topology](EngineContext& context) {
      return status_job(context, base, topology);
    });
  }

  void serve(uint64_t id, const proto::LoadRequest& request) {
    // Placing a large model takes long: its own deadline.
    submit(id, [request](EngineContext& context) { return load_job(context, request); },
           server->options.load_timeout_ms);
  }

  void serve(uint64_t id, const proto::UnloadRequest& request) {
    submit(id, [request](EngineContext& context) { return unload_job(context, request); });
  }

  void serve(uint64_t id, const proto::MetricsRequest& request) {
    DaemonCounters counters = server->counters;
    counters.uptime_s = (wall_now_ns() - server->start_wall_ns) / 1e9;
    counters.connections_open = server->connections;
    counters.active_requests = server->active_requests;
    counters.queued_jobs = static_cast<uint32_t>(server->executor->queued());
    counters.draining = server->state != proto::DaemonState::kReady;
    const proto::MetricsFormat format = request.format;
    submit(id, [counters, format](EngineContext& context) {
      return metrics_job(context, counters, format);
    });
  }

  void serve(uint64_t id, const proto::FaultRequest& request) {
    submit(id, [request](EngineContext& context) { return fault_job(context, request); });
  }

  void serve(uint64_t id, const proto::GenerateRequest& request) {
    if (server->state != proto::DaemonState::kReady) {
      send_error(id, make_error(StatusCode::kFailedPrecondition,
                                "the daemon is draining; no new generate requests are taken"));
      return;
    }
    auto alive = std::make_shared<std::atomic<bool>>(true);
    auto ticket = std::make_shared<StreamTicket>();
    std::weak_ptr<Connection> weak = weak_from_this();
    std::shared_ptr<asio::io_context> io = server->io_holder;
    Status posted = server->executor->try_post(
        [alive, weak, io, id, request, ticket](EngineContext& context) {
          if (!alive->load()) return;  // the client left or timed out before it started
          GenerateSink sink;
          sink.wanted = [alive] { return alive->load(); };
          auto outbox = std::make_shared<TokenOutbox>();
          sink.on_tokens = [alive, weak, io, id, outbox](proto::TokenFrame frame) {
            if (!outbox->add(std::move(frame))) return;  // a flush is already on its way
            asio::post(*io, [alive, weak, id, outbox] {
              std::optional<proto::TokenFrame> frame = outbox->take();
              auto self = weak.lock();
              if (frame && self && alive->load()) self->progress(id, std::move(*frame));
            });
          };
          sink.on_done = [alive, weak, io, id](const proto::GenerateDone& done,
                                               const Status& error) {
            proto::Body body = error.ok() ? proto::Body(done)
                                          : proto::Body(proto::ErrorReply::from_status(error));
            post_result(io, weak, alive, id, std::move(body));
          };
          StatusOr<StreamId> stream = context.models->start_generate(request, std::move(sink));
          if (!stream.ok()) {
            post_result(io, weak, alive, id, proto::ErrorReply::from_status(stream.status()));
            return;
          }
          ticket->started = true;
          ticket->id = *stream;
        });
    if (!posted.ok()) {
      refused(id, posted);
      return;
    }
    track(id, alive, ticket);
  }

  void serve(uint64_t id, const proto::CancelRequest& request) {
    auto it = pending.find(request.target_request_id);
    if (it == pending.end() || !it->second.stream) {
      send_error(id, make_error(StatusCode::kNotFound,
                                "request %llu is not a generate request in flight on this "
                                "connection",
                                static_cast<unsigned long long>(request.target_request_id)));
      return;
    }
    std::shared_ptr<StreamTicket> ticket = it->second.stream;
    submit(id, [ticket](EngineContext& context) -> proto::Body {
      if (!ticket->started) return proto::Ack{"the request had not started; it will not"};
      Status status = context.models->cancel(ticket->id);
      if (!status.ok()) return proto::ErrorReply::from_status(status);
      return proto::Ack{"cancelled"};
    });
  }

  void serve(uint64_t id, const proto::DrainRequest&) {
    if (server->state == proto::DaemonState::kReady) server->state = proto::DaemonState::kDraining;
    server->drain_waiters.emplace_back(weak_from_this(), id);
    server->maybe_finish();
  }

  void serve(uint64_t id, const proto::ShutdownRequest& request) {
    send(id, proto::Ack{request.drain ? "shutting down after in-flight requests"
                                      : "shutting down"});
    server->begin_shutdown(request.drain);
  }

  template <typename Reply>
  void serve(uint64_t, const Reply&) {}  // replies were refused in handle()

  // ---- outstanding requests ----

  // Posts a job's result back to the io thread, where complete() answers it unless the
  // request was dropped meanwhile.
  static void post_result(const std::shared_ptr<asio::io_context>& io,
                          const std::weak_ptr<Connection>& weak,
                          const std::shared_ptr<std::atomic<bool>>& alive, uint64_t id,
                          proto::Body body) {
    asio::post(*io, [alive, weak, id, body = std::move(body)]() mutable {
      auto self = weak.lock();
      if (self && alive->load()) self->complete(id, std::move(body));
    });
  }

  // Queues a job for the engine thread under request `id`, with its deadline.
  void submit(uint64_t id, std::function<proto::Body(EngineContext&)> work,
              uint32_t timeout_ms = 0) {
    auto alive = std::make_shared<std::atomic<bool>>(true);
    std::weak_ptr<Connection> weak = weak_from_this();
    std::shared_ptr<asio::io_context> io = server->io_holder;
    Status posted = server->executor->try_post(
        [alive, weak, io, id, work = std::move(work)](EngineContext& context) {
          if (!alive->load()) return;  // the client left or timed out: skip the work
          post_result(io, weak, alive, id, work(context));
        });
    if (!posted.ok()) {
      refused(id, posted);
      return;
    }
    track(id, alive, nullptr, timeout_ms);
  }

  void refused(uint64_t id, const Status& why) {
    if (why.code() == StatusCode::kBusy) ++server->counters.busy_total;
    send_error(id, why);
  }

  // Registers request `id` as outstanding and starts its deadline.
  // timeout_ms 0: the request timeout.
  void track(uint64_t id, std::shared_ptr<std::atomic<bool>> alive,
             std::shared_ptr<StreamTicket> stream, uint32_t timeout_ms = 0) {
    Pending& entry = pending[id];
    entry.alive = std::move(alive);
    entry.stream = std::move(stream);
    entry.timeout_ms = timeout_ms != 0 ? timeout_ms : server->options.request_timeout_ms;
    entry.timer = std::make_unique<asio::steady_timer>(server->io);
    ++server->active_requests;
    arm_deadline(id, entry);
  }

  // (Re)starts request `id`'s deadline: its timeout from now. A stream re-arms it with every
  // TokenFrame, so its deadline bounds the silence, not the whole generation.
  void arm_deadline(uint64_t id, Pending& entry) {
    entry.timer->expires_after(std::chrono::milliseconds(entry.timeout_ms));
    std::weak_ptr<Connection> weak = weak_from_this();
    std::shared_ptr<std::atomic<bool>> alive = entry.alive;
    const uint32_t timeout_ms = entry.timeout_ms;
    entry.timer->async_wait([weak, id, alive, timeout_ms](asio::error_code ec) {
      if (ec) return;  // cancelled or re-armed
      auto self = weak.lock();
      if (!self || !alive->load()) return;
      ++self->server->counters.timeouts_total;
      self->complete(id, proto::ErrorReply::from_status(make_error(
                             StatusCode::kTimeout, "request %llu: no answer within %u ms",
                             static_cast<unsigned long long>(id), timeout_ms)));
    });
  }

  // A stream's tokens: sent, and its deadline re-armed.
  void progress(uint64_t id, proto::TokenFrame frame) {
    auto it = pending.find(id);
    if (it == pending.end()) return;
    arm_deadline(id, it->second);
    send(id, std::move(frame));
  }

  // The request's answer (its last frame): sent, and the request freed.
  void complete(uint64_t id, proto::Body body) {
    auto it = pending.find(id);
    if (it == pending.end()) return;
    it->second.alive->store(false);
    it->second.timer->cancel();
    pending.erase(it);
    --server->active_requests;
    if (std::holds_alternative<proto::ErrorReply>(body)) ++server->counters.errors_total;
    send(id, std::move(body));
    decode_backlog();  // an in-flight slot is free again
    read_more();
    server->maybe_finish();
  }

  // Answers every outstanding request with `why` and drops their work (a shutdown that
  // does not drain: nothing is left unanswered).
  void fail_pending(const Status& why) {
    auto outstanding = std::move(pending);
    pending.clear();
    for (auto& [id, entry] : outstanding) {
      entry.alive->store(false);
      entry.timer->cancel();
      --server->active_requests;
      send_error(id, why);
    }
  }

  void send(uint64_t id, proto::Body body) {
    if (closed) return;
    std::vector<uint8_t> frame;
    Status status = proto::append_message_frame(proto::Message{id, std::move(body)}, &frame,
                                                server->options.max_frame_bytes);
    if (!status.ok()) {
      frame.clear();
      Status refused = proto::append_message_frame(
          proto::Message{id, proto::ErrorReply::from_status(status)}, &frame,
          server->options.max_frame_bytes);
      if (!refused.ok()) return;  // cannot happen with kMinFrameBytes and a short message
    }
    pending_write_bytes += frame.size();
    write_queue.push_back(std::move(frame));
    write_next();
  }

  void write_next() {
    if (writing || write_queue.empty() || closed) return;
    writing = true;
    auto self = shared_from_this();
    asio::async_write(socket, asio::buffer(write_queue.front()),
                      [self](asio::error_code ec, size_t) {
                        self->writing = false;
                        if (ec) {
                          self->close_now();
                          return;
                        }
                        self->pending_write_bytes -= self->write_queue.front().size();
                        self->write_queue.pop_front();
                        if (self->write_queue.empty() && self->closing) {
                          self->close_now();
                          return;
                        }
                        self->write_next();
                        self->read_more();
                      });
  }

  void close_after_writes() {
    closing = true;
    if (!writing && write_queue.empty()) close_now();
  }

  // Closes the socket and frees every outstanding request (their jobs are skipped).
  void close_now() {
    if (closed) return;
    auto self = shared_from_this();  // the server's reference goes below
    closed = true;
    closing = true;
    for (auto& [id, entry] : pending) {
      entry.alive->store(false);
      entry.timer->cancel();
      --server->active_requests;
    }
    pending.clear();
    write_queue.clear();
    pending_write_bytes = 0;
    asio::error_code ignored;
    socket.shutdown(AnySocket::shutdown_both, ignored);
    socket.close(ignored);
    --server->connections;
    server->all.erase(this);
    server->maybe_finish();
  }
};

void Server::Impl::accept_next() {
  acceptor.async_accept([this](asio::error_code ec, Stream::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        MOE_WARN("moed: accept: %s", ec.message().c_str());
        if (acceptor.is_open()) accept_next();
      }
      return;
    }
    AnySocket any(io);
    asio::error_code assign_ec;
    any.assign(asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), socket.release(), assign_ec);
    if (!assign_ec) on_accepted(std::move(any), /*tcp=*/false);
    accept_next();
  });
}

void Server::Impl::accept_next_tcp() {
  tcp_acceptor.async_accept([this](asio::error_code ec, asio::ip::tcp::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        MOE_WARN("moed: accept (tcp): %s", ec.message().c_str());
        if (tcp_acceptor.is_open()) accept_next_tcp();
      }
      return;
    }
    AnySocket any(io);
    asio::error_code assign_ec;
    any.assign(asio::generic::stream_protocol(AF_INET, SOCK_STREAM), socket.release(), assign_ec);
    if (!assign_ec) on_accepted(std::move(any), /*tcp=*/true);
    accept_next_tcp();
  });
}

void Server::Impl::on_accepted(AnySocket socket, bool tcp) {
  auto connection = std::make_shared<Connection>(this, std::move(socket), tcp);
  ++connections;
  ++counters.connections_total;
  all.emplace(connection.get(), connection);
  ucred credentials{};
  credentials.uid = kTcpPeerUid;
  socklen_t length = sizeof(credentials);
  if (!tcp && ::getsockopt(connection->socket.native_handle(), SOL_SOCKET, SO_PEERCRED,
                           &credentials, &length) != 0) {
    connection->send(proto::kNoRequestId,
                     proto::ErrorReply::from_status(make_error(
                         StatusCode::kInternal, "SO_PEERCRED: %s", std::strerror(errno))));
    connection->close_after_writes();
  } else if (!tcp && !allowed(credentials.uid)) {
    MOE_INFO("moed: refused uid %u (pid %d): not in the allow-list", credentials.uid,
             credentials.pid);
    connection->uid = credentials.uid;
    ++counters.connections_refused_total;
    connection->send(proto::kNoRequestId,
                     proto::ErrorReply::from_status(make_error(
                         StatusCode::kFailedPrecondition,
                         "uid %u may not use this daemon (not in its allow-list)",
                         credentials.uid)));
    connection->close_after_writes();
  } else if (state != proto::DaemonState::kReady && state != proto::DaemonState::kDraining) {
    connection->close_now();
  } else if (connections > options.max_connections) {
    ++counters.connections_refused_total;
    connection->send(proto::kNoRequestId,
                     proto::ErrorReply::from_status(make_error(
                         StatusCode::kResourceExhausted, "%u connections already open",
                         options.max_connections)));
    connection->close_after_writes();
  } else {
    connection->start(credentials.uid);
  }
}

void Server::Impl::begin_shutdown(bool drain) {
  if (state == proto::DaemonState::kStopping) {
    shutdown_drain = shutdown_drain && drain;
  } else {
    state = proto::DaemonState::kStopping;
    shutdown_drain = drain;
  }
  asio::error_code ignored;
  acceptor.close(ignored);
  tcp_acceptor.close(ignored);
  maybe_finish();
}

// Answers drain waiters when nothing is in flight, and finishes a shutdown.
void Server::Impl::maybe_finish() {
  if (active_requests == 0 && !drain_waiters.empty()) {
    auto waiters = std::move(drain_waiters);
    drain_waiters.clear();
    for (auto& [weak, id] : waiters) {
      if (auto connection = weak.lock()) connection->send(id, proto::Ack{"drained"});
    }
  }
  if (state != proto::DaemonState::kStopping) return;
  if (shutdown_drain && active_requests > 0) return;
  std::vector<std::shared_ptr<Connection>> open;  // closing one erases it from `all`
  for (auto& [raw, connection] : all) open.push_back(connection);
  for (auto& connection : open) {
    if (!shutdown_drain) {
      connection->fail_pending(make_error(StatusCode::kCancelled,
                                          "the daemon shut down without draining"));
    }
    connection->close_after_writes();
  }
  if (connections == 0) io.stop();
}

void Server::Impl::finish() {
  std::lock_guard<std::mutex> lock(done_mutex);
  done = true;
  done_cv.notify_all();
}

StatusOr<std::unique_ptr<Server>> Server::start(const ServerOptions& given,
                                                EngineExecutor* executor) {
  ServerOptions options = given;
  if (options.max_frame_bytes == 0) options.max_frame_bytes = proto::max_frame_bytes_option();
  options.max_frame_bytes =
      std::clamp(options.max_frame_bytes, proto::kMinFrameBytes, proto::kMaxFrameBytesCeiling);
  if (options.max_inflight_per_connection == 0 || options.request_timeout_ms == 0 ||
      options.load_timeout_ms == 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "moed: max_inflight_per_connection, request_timeout_ms and load_timeout_ms "
                      "must be > 0");
  }
  sockaddr_un probe{};
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof(probe.sun_path)) {
    return make_error(StatusCode::kInvalidArgument,
                      "moed: socket path '%s' is empty or longer than %zu bytes",
                      options.socket_path.c_str(), sizeof(probe.sun_path) - 1);
  }
  struct stat info {};
  if (::lstat(options.socket_path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      return make_error(StatusCode::kAlreadyExists, "moed: %s exists and is not a socket",
                        options.socket_path.c_str());
    }
    ::unlink(options.socket_path.c_str());  // a stale socket of an earlier daemon
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->executor = executor;
  impl->start_wall_ns = wall_now_ns();
  asio::error_code ec;
  impl->acceptor.open(Stream(), ec);
  if (!ec) impl->acceptor.bind(Stream::endpoint(options.socket_path), ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(StatusCode::kInternal, "moed: cannot listen on %s: %s",
                      options.socket_path.c_str(), ec.message().c_str());
  }
  if (::chmod(options.socket_path.c_str(), 0660) != 0) {
    return make_error(StatusCode::kInternal, "moed: chmod 0660 %s: %s",
                      options.socket_path.c_str(), std::strerror(errno));
  }
  if (options.tcp) {
    // Loopback only, by design: the peer of a TCP connection has no uid to check.
    asio::ip::tcp::endpoint endpoint(asio::ip::address_v4::loopback(), options.tcp_port);
    impl->tcp_acceptor.open(endpoint.protocol(), ec);
    if (!ec) impl->tcp_acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec) impl->tcp_acceptor.bind(endpoint, ec);
    if (!ec) impl->tcp_acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return make_error(StatusCode::kInternal, "moed: cannot listen on 127.0.0.1:%u: %s",
                        options.tcp_port, ec.message().c_str());
    }
    impl->tcp_port = impl->tcp_acceptor.local_endpoint().port();
  }
  Impl* raw = impl.get();
  raw->accept_next();
  if (options.tcp) raw->accept_next_tcp();
  raw->io_thread = std::thread([raw] {
    raw->io.run();
    raw->finish();
  });
  MOE_INFO("moed: listening on %s", options.socket_path.c_str());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  request_shutdown(false);
  wait();
}

void Server::request_shutdown(bool drain) {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl, drain] { impl->begin_shutdown(drain); });
}

void Server::wait() {
  {
    std::unique_lock<std::mutex> lock(impl_->done_mutex);
    impl_->done_cv.wait(lock, [this] { return impl_->done; });
    if (impl_->waited) return;
    impl_->waited = true;
  }
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
  ::unlink(impl_->options.socket_path.c_str());
}

const std::string& Server::socket_path() const { return impl_->options.socket_path; }
uint16_t Server::tcp_port() const { return impl_->tcp_port; }

StatusOr<std::vector<uint32_t>> parse_uid_list(const std::string& text) {
  std::vector<uint32_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    char* rest = nullptr;
    errno = 0;
    unsigned long value = item.empty() ? 0 : std::strtoul(item.c_str(), &rest, 10);
    if (item.empty() || *rest != '\0' || errno != 0 || value > 0xFFFFFFFEul) {
      return make_error(StatusCode::kInvalidArgument, "uid list '%s': '%s' is not a uid",
                        text.c_str(), item.c_str());
    }
    out.push_back(static_cast<uint32_t>(value));
    start = end + 1;
  }
  return out;
}

}  // namespace moe::daemon
