// The C++ API an application uses to run models on the supernode, embedded or through moed.
//
// One interface, two implementations with the same request and result types (the moed
// protocol's, tools/lib/protocol/messages.h):
//   - moe::Embedded (embedded.h): the runtime and the model in the application's process;
//   - moe::Client (client.h): a connection to the moed daemon's Unix socket.
// An application switches between them with the line that creates its Api:
//     std::unique_ptr<moe::Api> api = moe::Client::connect({.socket_path = path}).value();
//     std::unique_ptr<moe::Api> api = moe::Embedded::open({.supernode = "cm384"}).value();
// Both give the same tokens for the same requests on the same supernode and weights
// (sampling is seeded per request and position).
//
// Thread-safety: an Api object is used by one thread at a time; open one per thread.
#pragma once

#include <functional>
#include <string>

#include "runtime/base/status.h"
#include "tools/lib/protocol/messages.h"

namespace moe {

// Called with each TokenFrame of a generation as it arrives. Returning false cancels the
// generation: generate() then returns its GenerateDone with finish reason kCancelled (the
// tokens already produced were delivered).
using TokenCallback = std::function<bool(const proto::TokenFrame& frame)>;

class Api {
 public:
  virtual ~Api() = default;

  virtual StatusOr<proto::StatusReply> status(bool include_topology = true) = 0;
  // Places a model on the supernode (see ModelService::load for the errors).
  virtual StatusOr<proto::LoadReply> load(const proto::LoadRequest& request) = 0;
  // `model` empty: the loaded one.
  virtual Status unload(const std::string& model = "") = 0;
  // Runs one generation to its end, streaming tokens to `on_tokens` (optional). Errors:
  // the request's (bad prompt, no model, the engine failing) and, for a client, the
  // connection's (kNotFound: no daemon; kTimeout; kParseError for a broken peer).
  virtual StatusOr<proto::GenerateDone> generate(const proto::GenerateRequest& request,
                                                 const TokenCallback& on_tokens = {}) = 0;
  virtual StatusOr<proto::MetricsReply> metrics(
      proto::MetricsFormat format = proto::MetricsFormat::kJson) = 0;
};

}  // namespace moe
