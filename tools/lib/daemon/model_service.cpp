// ModelService: one Engine and one serving::Server, and the streams that map the daemon's
// requests onto serving requests.
//
// Design: a stream buffers the tokens serving hands its TokenSink during a step and sends
// them as one TokenFrame after the step, so a client gets one frame per step, not per token.
// Whether a stream ended is read from serving's per-request metrics after each step;
// the record is then forgotten, so serving keeps nothing of finished requests.
#include "tools/lib/daemon/model_service.h"

#include <algorithm>
#include <optional>

#include "models/engine/engine.h"
#include "models/engine/generate.h"
#include "models/eplb/expert_load.h"
#include "models/eplb/imbalance.h"
#include "models/eplb/placement_policy.h"
#include "models/serving/server.h"
#include "models/weights/weight_store.h"
#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "runtime/base/log.h"

namespace moe::daemon {

struct ModelService::Loaded {
  proto::ModelInfo info;
  models::ModelWeights weights;
  std::vector<dev::NpuId> npus;  // EP rank r is npus[r]
  std::unique_ptr<models::Engine> engine;
  std::unique_ptr<models::serving::Server> server;
  std::optional<models::eplb::ExpertLoadTracker> load_window;
  uint32_t steps_since_rebalance = 0;
  std::vector<std::vector<ic::ExpertMap>> stages;  // [stage][MoE layer], to apply in order
  size_t next_stage = 0;
  double planned_before = 0, planned_after = 0, planned_pause_ms = 0;
  uint64_t rebalances = 0, replicas_copied = 0;
  double last_before = 0, last_after = 0, last_pause_ms = 0;
};

struct ModelService::Stream {
  GenerateSink sink;
  uint32_t prompt_tokens = 0;
  uint32_t sent = 0;                // tokens already in TokenFrames
  std::vector<uint32_t> buffered;   // produced this step, not yet sent
};

namespace {

bool text_vocabulary(const models::ModelConfig& config) { return config.vocab_size == 256; }

double ms(double ns) { return ns > 0 ? ns / 1e6 : 0; }

proto::GenerateMetrics to_proto(const models::serving::RequestMetrics& m) {
  auto pos = [](auto v) { return v > 0 ? v : 0; };
  proto::GenerateMetrics out;
  out.ttft_wall_ns = pos(m.ttft_wall_ns);
  out.tpot_wall_ns = pos(m.tpot_wall_ns);
  out.total_wall_ns = pos(m.e2e_wall_ns);
  out.ttft_modelled_ns = pos(m.ttft_modelled_ns);
  out.tpot_modelled_ns = pos(m.tpot_modelled_ns);
  out.total_modelled_ns = pos(m.e2e_modelled_ns);
  return out;
}

// The value at quantile q of `values` (sorted in place).
double quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

}  // namespace

ModelService::ModelService(rt::Runtime& runtime, ModelServiceOptions options)
    : runtime_(runtime), options_(options) {}

ModelService::~ModelService() {
  streams_.clear();
  loaded_.reset();  // the server before the engine before the weights (member order)
}

StatusOr<proto::LoadReply> ModelService::load(
    const proto::LoadRequest& request, const std::function<void(uint64_t, uint64_t)>& progress) {
  if (loaded_) {
    return make_error(StatusCode::kFailedPrecondition,
                      "model '%s' is loaded; unload it first (one model at a time)",
                      loaded_->info.name.c_str());
  }
  if (request.mode == proto::ExecMode::kTiming) {
    return make_error(StatusCode::kUnsupported,
                      "the daemon serves functional models; timing-mode figures of a full-size "
                      "model come from `moe simulate --model NAME`");
  }
  std::string config_name;
  switch (request.source) {
    case proto::ModelSource::kBuiltin:
      if (!request.name.empty() && request.name != "builtin") {
        return make_error(StatusCode::kInvalidArgument,
                          "LoadRequest.name '%s': the built-in model is 'builtin'",
                          request.name.c_str());
      }
      config_name = "builtin";
      break;
    case proto::ModelSource::kReferenceConfig:
      config_name = request.name;
      break;
    case proto::ModelSource::kSafetensors:
      if (request.name.empty()) {
        return make_error(StatusCode::kInvalidArgument,
                          "LoadRequest.name: a safetensors load needs the weights' path");
      }
      config_name = request.config.empty() ? "builtin" : request.config;
      break;
  }
  StatusOr<models::ModelConfig> config = models::model_config(config_name);
  if (!config.ok()) {
    return make_error(StatusCode::kInvalidArgument, "LoadRequest: %s",
                      config.status().message().c_str());
  }
  const uint32_t total = runtime_.num_devices();
  const uint32_t npus = request.npus == 0 ? total : request.npus;
  if (npus > total) {
    return make_error(StatusCode::kInvalidArgument,
                      "LoadRequest.npus %u: the supernode has %u NPUs", request.npus, total);
  }
  if (request.attention_dp > npus) {
    return make_error(StatusCode::kInvalidArgument,
                      "LoadRequest.attention_dp %u is more than the %u NPUs of the model",
                      request.attention_dp, npus);
  }
  const int64_t start_ns = wall_now_ns();
  auto loaded = std::make_unique<Loaded>();
  if (request.source == proto::ModelSource::kSafetensors) {
    MOE_TRY_ASSIGN(loaded->weights, models::ModelWeights::load(*config, request.name));
  } else {
    MOE_TRY_ASSIGN(loaded->weights, models::ModelWeights::random(*config, request.seed));
  }
  models::EngineOptions options;
  for (uint32_t n = 0; n < npus; ++n) options.npus.push_back(n);
  loaded->npus = options.npus;
  options.attention_dp = request.attention_dp != 0
                             ? request.attention_dp
                             : std::clamp(options_.default_attention_dp, 1u, npus);
  if (request.precision == proto::Precision::kInt8) {
    options.precision = models::ExpertPrecision::kInt8;
    options.dispatch_format = ic::TokenFormat::kInt8;
  }
  if (progress) options.progress = progress;
  MOE_TRY_ASSIGN(loaded->engine, models::Engine::create(runtime_, loaded->weights, options));
  MOE_TRY_ASSIGN(loaded->server, models::serving::Server::create(*loaded->engine));
  loaded->load_window.emplace(config->num_moe_layers(), config->num_experts);

  const models::Engine& engine = *loaded->engine;
  proto::ModelInfo& info = loaded->info;
  info.name = config->name;
  info.source = request.source;
  info.precision = request.precision;
  info.mode = proto::ExecMode::kFunctional;
  info.npus = npus;
  info.attention_dp = engine.num_dp_ranks();
  info.num_layers = config->num_layers;
  info.vocab_size = config->vocab_size;
  for (uint32_t r = 0; r < engine.num_ranks(); ++r) {
    info.weight_bytes += engine.weights().hbm_bytes_on_rank(r);
  }
  loaded_ = std::move(loaded);
  failed_in_a_row_ = 0;
  return proto::LoadReply{loaded_->info, wall_now_ns() - start_ns};
}

Status ModelService::unload(const std::string& model) {
  if (!loaded_ || (!model.empty() && model != loaded_->info.name)) {
    return make_error(StatusCode::kNotFound, "no model '%s' is loaded",
                      model.empty() ? "(any)" : model.c_str());
  }
  if (!streams_.empty()) {
    return make_error(StatusCode::kFailedPrecondition,
                      "%zu generate requests are running on '%s'; cancel them or let them end",
                      streams_.size(), loaded_->info.name.c_str());
  }
  loaded_.reset();
  return ok_status();
}

StatusOr<StreamId> ModelService::start_generate(const proto::GenerateRequest& request,
                                                GenerateSink sink) {
  if (!loaded_ || (!request.model.empty() && request.model != loaded_->info.name)) {
    return make_error(StatusCode::kNotFound, "GenerateRequest.model: no model '%s' is loaded",
                      request.model.empty() ? "(any)" : request.model.c_str());
  }
  const models::ModelConfig& config = loaded_->engine->config();
  const bool has_tokens = !request.prompt_tokens.empty();
  const bool has_text = !request.prompt_text.empty();
  if (has_tokens == has_text) {
    return make_error(StatusCode::kInvalidArgument,
                      "GenerateRequest: give exactly one of prompt_tokens and prompt_text");
  }
  if (has_text && !text_vocabulary(config)) {
    return make_error(StatusCode::kInvalidArgument,
                      "GenerateRequest.prompt_text: model '%s' has no byte vocabulary "
                      "(vocab %u); send prompt_tokens",
                      config.name.c_str(), config.vocab_size);
  }
  models::serving::Request serving_request;
  serving_request.prompt =
      has_text ? models::bytes_to_tokens(request.prompt_text) : request.prompt_tokens;
  serving_request.max_new_tokens = request.max_new_tokens;
  serving_request.sampling = {request.temperature, request.top_p, request.seed};
  serving_request.on_token = [this](models::serving::RequestId id, uint32_t token) {
    auto it = streams_.find(id);
    if (it != streams_.end()) it->second->buffered.push_back(token);
  };
  const uint32_t prompt_tokens = static_cast<uint32_t>(serving_request.prompt.size());
  MOE_TRY_ASSIGN(models::serving::RequestId id,
                 loaded_->server->submit(std::move(serving_request)));
  auto stream = std::make_unique<Stream>();
  stream->sink = std::move(sink);
  stream->prompt_tokens = prompt_tokens;
  streams_[id] = std::move(stream);
  failed_in_a_row_ = 0;
  return id;
}

// Sends what the stream has buffered, then its GenerateDone, and forgets it.
void ModelService::finish(StreamId id, Stream& stream, const Status& error) {
  models::serving::Server& server = *loaded_->server;
  if (!stream.buffered.empty() && stream.sink.on_tokens) {
    proto::TokenFrame frame;
    frame.first_index = stream.sent;
    frame.tokens = std::move(stream.buffered);
    if (text_vocabulary(loaded_->engine->config())) frame.text = models::tokens_to_text(frame.tokens);
    stream.sent += static_cast<uint32_t>(frame.tokens.size());
    stream.sink.on_tokens(std::move(frame));
  }
  proto::GenerateDone done;
  done.prompt_tokens = stream.prompt_tokens;
  done.generated_tokens = stream.sent;
  StatusOr<models::serving::RequestMetrics> metrics = server.metrics(id);
  if (metrics.ok()) {
    done.metrics = to_proto(*metrics);
    switch (metrics->state) {
      case models::serving::RequestState::kFinished:
        done.finish_reason = proto::FinishReason::kLength;
        break;
      case models::serving::RequestState::kCancelled:
        done.finish_reason = proto::FinishReason::kCancelled;
        break;
      default:
        done.finish_reason = proto::FinishReason::kError;
        break;
    }
  }
  Status why = error;
  if (why.ok() && metrics.ok() && metrics->state == models::serving::RequestState::kFailed) {
    why = make_error(StatusCode::kInternal, "generation failed: %s", metrics->error.c_str());
  }
  if (!why.ok()) done.finish_reason = proto::FinishReason::kError;
  if (done.finish_reason == proto::FinishReason::kLength) record_latency(done.metrics);
  if (stream.sink.on_done) stream.sink.on_done(done, why);
  (void)server.forget(id);
}

Status ModelService::cancel(StreamId id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) {
    return make_error(StatusCode::kNotFound, "generate stream %llu is not running",
                      static_cast<unsigned long long>(id));
  }
  MOE_TRY(loaded_->server->cancel(id));
  std::unique_ptr<Stream> stream = std::move(it->second);
  streams_.erase(it);
  finish(id, *stream, ok_status());
  return ok_status();
}

bool ModelService::busy() const { return !streams_.empty(); }

Status ModelService::step() {
  if (!loaded_) return ok_status();
  models::serving::Server& server = *loaded_->server;
  // Streams nobody waits for any more: cancel, and say nothing.
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (it->second->sink.wanted && !it->second->sink.wanted()) {
      (void)server.cancel(it->first);
      (void)server.forget(it->first);
      it = streams_.erase(it);
    } else {
      ++it;
    }
  }
  Status stepped = server.step();
  if (!stepped.ok()) {
    ++failed_steps_;
    if (++failed_in_a_row_ < kMaxFailedSteps) return stepped;
    // The engine keeps failing (a lost NPU, say): end every stream with the error.
    Status why = make_error(stepped.code(), "%u engine steps failed in a row; last: %s",
                            failed_in_a_row_, stepped.message().c_str());
    auto streams = std::move(streams_);
    streams_.clear();
    for (auto& [id, stream] : streams) {
      (void)server.cancel(id);
      finish(id, *stream, why);
    }
    failed_in_a_row_ = 0;
    return stepped;
  }
  failed_in_a_row_ = 0;
  const bool text = text_vocabulary(loaded_->engine->config());
  for (auto it = streams_.begin(); it != streams_.end();) {
    Stream& stream = *it->second;
    StatusOr<models::serving::RequestMetrics> metrics = server.metrics(it->first);
    const bool ended = !metrics.ok() ||
                       metrics->state == models::serving::RequestState::kFinished ||
                       metrics->state == models::serving::RequestState::kCancelled ||
                       metrics->state == models::serving::RequestState::kFailed;
    if (ended) {
      std::unique_ptr<Stream> owned = std::move(it->second);
      StreamId id = it->first;
      it = streams_.erase(it);
      finish(id, *owned, ok_status());
      continue;
    }
    if (!stream.buffered.empty() && stream.sink.on_tokens) {
      proto::TokenFrame frame;
      frame.first_index = stream.sent;
      frame.tokens = std::move(stream.buffered);
      stream.buffered.clear();
      if (text) frame.text = models::tokens_to_text(frame.tokens);
      stream.sent += static_cast<uint32_t>(frame.tokens.size());
      stream.sink.on_tokens(std::move(frame));
    }
    ++it;
  }
  // Expert re-placement after the step's tokens went out, so they do not wait for it.
  if (loaded_->next_stage < loaded_->stages.size()) {
    apply_next_stage();
  } else if (options_.eplb_interval_steps > 0 &&
             ++loaded_->steps_since_rebalance >= options_.eplb_interval_steps) {
    loaded_->steps_since_rebalance = 0;
    maybe_rebalance();
  }
  return ok_status();
}

std::vector<proto::ModelInfo> ModelService::models() const {
  if (!loaded_) return {};
  return {loaded_->info};
}

void ModelService::maybe_rebalance() {
  Loaded& l = *loaded_;
  models::Engine& engine = *l.engine;
  const models::ModelConfig& config = engine.config();
  if (config.num_moe_layers() == 0) return;
  Status observed = l.load_window->observe(engine.expert_load());
  if (!observed.ok()) {
    MOE_WARN("moed: expert load: %s", observed.to_string().c_str());
    return;
  }
  const std::vector<std::vector<double>>& window = l.load_window->window();
  std::vector<ic::ExpertMap> current;
  double before = 0;
  for (uint32_t m = 0; m < config.num_moe_layers(); ++m) {
    current.push_back(engine.expert_map(m));
    before = std::max(before, models::eplb::imbalance(window[m], current[m]));
  }
  if (before < kEplbTrigger) return;
  const models::eplb::PlacementShape shape = models::eplb::placement_shape(
      runtime_.topology(), l.npus, config.num_experts, config.num_groups,
      /*redundant_experts=*/engine.num_ranks());
  StatusOr<std::vector<ic::ExpertMap>> maps =
      models::eplb::rebalance(window, shape, models::eplb::Policy::kGlobal, current);
  if (!maps.ok()) {
    MOE_WARN("moed: expert placement: %s", maps.status().to_string().c_str());
    return;
  }
  double after = 0;
  for (uint32_t m = 0; m < config.num_moe_layers(); ++m) {
    after = std::max(after, models::eplb::imbalance(window[m], (*maps)[m]));
  }
  if (after > before * (1 - kEplbMinGain)) return;
  // Stage s of layer m; a layer with fewer stages keeps its last map.
  std::vector<std::vector<ic::ExpertMap>> per_layer;
  size_t stages = 0;
  for (uint32_t m = 0; m < config.num_moe_layers(); ++m) {
    StatusOr<std::vector<ic::ExpertMap>> t =
        models::eplb::transition_stages(current[m], (*maps)[m], kEplbStages);
    if (!t.ok()) {
      MOE_WARN("moed: expert placement stages: %s", t.status().to_string().c_str());
      return;
    }
    if (t->empty()) t->push_back(current[m]);
    stages = std::max(stages, t->size());
    per_layer.push_back(std::move(t).value());
  }
  l.stages.assign(stages, {});
  for (size_t s = 0; s < stages; ++s) {
    for (const auto& layer : per_layer) l.stages[s].push_back(layer[std::min(s, layer.size() - 1)]);
  }
  l.next_stage = 0;
  l.planned_before = before;
  l.planned_after = after;
  l.planned_pause_ms = 0;
  MOE_INFO("moed: re-placing experts in %zu stages: imbalance %.2f -> %.2f on the recent load",
           stages, before, after);
}

void ModelService::apply_next_stage() {
  Loaded& l = *loaded_;
  models::PlacementChangeStats change;
  Status applied = l.engine->apply_expert_maps(l.stages[l.next_stage], &change);
  if (!applied.ok()) {
    MOE_WARN("moed: re-placing experts (stage %zu of %zu): %s; keeping the placement reached",
             l.next_stage + 1, l.stages.size(), applied.to_string().c_str());
    l.stages.clear();
    l.next_stage = 0;
    return;
  }
  l.replicas_copied += change.moves.replicas_copied;
  l.planned_pause_ms = std::max(l.planned_pause_ms, change.wall_ns / 1e6);
  if (++l.next_stage < l.stages.size()) return;
  ++l.rebalances;
  l.steps_since_rebalance = 0;  // the next check is an interval after this one completed
  l.last_before = l.planned_before;
  l.last_after = l.planned_after;
  l.last_pause_ms = l.planned_pause_ms;
  l.stages.clear();
  l.next_stage = 0;
  MOE_INFO("moed: experts re-placed: imbalance %.2f -> %.2f, longest pause %.1f ms",
           l.last_before, l.last_after, l.last_pause_ms);
}

void ModelService::record_latency(const proto::GenerateMetrics& metrics) {
  if (latencies_.size() < kLatencyWindow) {
    latencies_.push_back(metrics);
  } else {
    latencies_[latency_next_] = metrics;
    latency_next_ = (latency_next_ + 1) % kLatencyWindow;
  }
}

ServiceFigures ModelService::figures() const {
  ServiceFigures f;
  f.failed_steps = failed_steps_;
  f.latency_samples = static_cast<uint32_t>(latencies_.size());
  auto pick = [&](auto field, double* p50, double* p99) {
    std::vector<double> values;
    for (const proto::GenerateMetrics& m : latencies_) {
      double v = static_cast<double>(m.*field);
      if (v > 0) values.push_back(v / 1e6);
    }
    *p50 = quantile(values, 0.5);
    *p99 = quantile(values, 0.99);
  };
  pick(&proto::GenerateMetrics::ttft_wall_ns, &f.ttft_wall_p50_ms, &f.ttft_wall_p99_ms);
  pick(&proto::GenerateMetrics::tpot_wall_ns, &f.tpot_wall_p50_ms, &f.tpot_wall_p99_ms);
  pick(&proto::GenerateMetrics::ttft_modelled_ns, &f.ttft_modelled_p50_ms,
       &f.ttft_modelled_p99_ms);
  pick(&proto::GenerateMetrics::tpot_modelled_ns, &f.tpot_modelled_p50_ms,
       &f.tpot_modelled_p99_ms);
  if (!loaded_) return f;
  f.loaded = true;
  f.model = loaded_->info;
  const models::serving::ServerStats s = loaded_->server->stats();
  f.submitted = s.submitted;
  f.finished = s.finished;
  f.cancelled = s.cancelled;
  f.failed = s.failed;
  f.refused = s.refused;
  f.prompt_tokens = s.prompt_tokens;
  f.generated_tokens = s.generated_tokens;
  f.steps = s.steps;
  f.decode_steps = s.decode_steps;
  f.steps_over_target = s.steps_over_target;
  f.queued = s.queued;
  f.running = s.prefilling + s.decoding;
  f.modelled_ms = ms(s.modelled_ns);
  f.engine_wall_ms = ms(static_cast<double>(s.engine_wall_ns));
  f.tpot_target_ms = ms(s.tpot_target_ns);
  f.estimated_tpot_ms = ms(s.estimated_tpot_ns);
  f.decode_batch_limit = s.decode_batch_limit;
  f.tpot_target_met = s.tpot_target_met;

  const models::Engine& engine = *loaded_->engine;
  const auto& load = engine.expert_load();
  double sum = 0;
  uint32_t layers = 0;
  for (uint32_t m = 0; m < load.size(); ++m) {
    std::vector<double> tokens(load[m].begin(), load[m].end());
    uint64_t routed = 0;
    for (uint64_t t : load[m]) routed += t;
    f.expert_tokens += routed;
    if (routed == 0) continue;
    double imbalance = models::eplb::imbalance(tokens, engine.expert_map(m));
    f.expert_imbalance_max = std::max(f.expert_imbalance_max, imbalance);
    sum += imbalance;
    ++layers;
  }
  f.expert_imbalance_mean = layers ? sum / layers : 0;
  f.eplb_rebalances = loaded_->rebalances;
  f.eplb_last_before = loaded_->last_before;
  f.eplb_last_after = loaded_->last_after;
  f.eplb_last_pause_ms = loaded_->last_pause_ms;
  f.eplb_replicas_copied = loaded_->replicas_copied;
  for (uint32_t dp = 0; dp < engine.num_dp_ranks(); ++dp) {
    f.kv_free_blocks += engine.kv_free_blocks(dp);
    f.kv_total_blocks += engine.kv_total_blocks(dp);
  }
  return f;
}

}  // namespace moe::daemon
