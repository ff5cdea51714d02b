// Embedded: a ModelService on the caller's thread.
#include "tools/lib/client/embedded.h"

#include <optional>

#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "tools/lib/daemon/engine_jobs.h"
#include "tools/lib/daemon/model_service.h"
#include "tools/lib/daemon/topology_summary.h"

namespace moe {

StatusOr<std::unique_ptr<Embedded>> Embedded::open(const EmbeddedOptions& options) {
  MOE_TRY_ASSIGN(std::unique_ptr<rt::Runtime> runtime, rt::Runtime::open(options.runtime));
  return std::unique_ptr<Embedded>(new Embedded(std::move(runtime), options));
}

Embedded::Embedded(std::unique_ptr<rt::Runtime> runtime, const EmbeddedOptions& options)
    : runtime_(std::move(runtime)),
      models_(std::make_unique<daemon::ModelService>(
          *runtime_, daemon::ModelServiceOptions{options.default_attention_dp,
                                                 options.eplb_interval_steps})),
      start_wall_ns_(wall_now_ns()) {}

Embedded::~Embedded() { models_.reset(); }

StatusOr<proto::StatusReply> Embedded::status(bool include_topology) {
  proto::StatusReply reply;
  reply.daemon_version = "embedded";
  reply.uptime_wall_ns = wall_now_ns() - start_wall_ns_;
  reply.models = models_->models();
  if (include_topology) reply.topology = daemon::summarize_topology(*runtime_);
  return reply;
}

StatusOr<proto::LoadReply> Embedded::load(const proto::LoadRequest& request) {
  return models_->load(request);
}

Status Embedded::unload(const std::string& model) { return models_->unload(model); }

StatusOr<proto::GenerateDone> Embedded::generate(const proto::GenerateRequest& request,
                                                 const TokenCallback& on_tokens) {
  std::optional<proto::GenerateDone> done;
  Status failed;
  bool cancel = false;
  daemon::GenerateSink sink;
  sink.on_tokens = [&](proto::TokenFrame frame) {
    if (on_tokens && !on_tokens(frame)) cancel = true;
  };
  sink.on_done = [&](const proto::GenerateDone& result, const Status& error) {
    done = result;
    failed = error;
  };
  MOE_TRY_ASSIGN(daemon::StreamId stream, models_->start_generate(request, std::move(sink)));
  while (!done) {
    if (cancel) {
      MOE_TRY(models_->cancel(stream));
      break;
    }
    Status stepped = models_->step();
    // A failed step is retried; after ModelService::kMaxFailedSteps the stream ends with it.
    if (!stepped.ok() && !done && !models_->busy()) return stepped;
  }
  MOE_ASSERT(done.has_value());
  if (!failed.ok()) return failed;
  return *done;
}

StatusOr<proto::MetricsReply> Embedded::metrics(proto::MetricsFormat format) {
  daemon::EngineContext context{runtime_.get(), models_.get()};
  daemon::DaemonCounters counters;
  counters.uptime_s = (wall_now_ns() - start_wall_ns_) / 1e9;
  proto::Body body = daemon::metrics_job(context, counters, format);
  if (auto* error = std::get_if<proto::ErrorReply>(&body)) return error->to_status();
  return std::get<proto::MetricsReply>(std::move(body));
}

}  // namespace moe
