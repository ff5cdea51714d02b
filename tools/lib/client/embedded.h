// moe::Embedded: the Api with the runtime and the model in the application's process.
//
// It drives a daemon::ModelService (tools/lib/daemon/model_service.h), the same service moed
// runs on its engine thread, on the calling thread: generate() queues the request and runs
// serving steps until it ends. Status and metrics report as moed's do (daemon-side counters
// are zero: there are no connections).
//
// Thread-safety: one thread at a time.
#pragma once

#include <memory>

#include "runtime/runtime.h"
#include "tools/lib/client/api.h"

namespace moe {

namespace daemon {
class ModelService;
}

struct EmbeddedOptions {
  rt::RuntimeOptions runtime;          // the supernode (functional mode)
  uint32_t default_attention_dp = 16;  // as moed's --attention-dp
  uint32_t eplb_interval_steps = 32;   // as moed's --eplb-interval (0: off)
};

class Embedded final : public Api {
 public:
  // Opens the runtime (errors as rt::Runtime::open).
  static StatusOr<std::unique_ptr<Embedded>> open(const EmbeddedOptions& options = {});
  ~Embedded() override;
  Embedded(const Embedded&) = delete;
  Embedded& operator=(const Embedded&) = delete;

  StatusOr<proto::StatusReply> status(bool include_topology = true) override;
  StatusOr<proto::LoadReply> load(const proto::LoadRequest& request) override;
  Status unload(const std::string& model = "") override;
  StatusOr<proto::GenerateDone> generate(const proto::GenerateRequest& request,
                                         const TokenCallback& on_tokens = {}) override;
  StatusOr<proto::MetricsReply> metrics(
      proto::MetricsFormat format = proto::MetricsFormat::kJson) override;

 private:
  Embedded(std::unique_ptr<rt::Runtime> runtime, const EmbeddedOptions& options);
  std::unique_ptr<rt::Runtime> runtime_;
  std::unique_ptr<daemon::ModelService> models_;
  int64_t start_wall_ns_ = 0;
};

}  // namespace moe
