// The model a supernode serves, behind the request and result types of the moed protocol
// (tools/lib/protocol/messages.h): load and unload, streaming generation, cancellation,
// and the figures metrics report. moed's engine thread drives one; the embedded API
// (tools/lib/client/embedded.h) drives one on the application's thread. Both see the same
// tokens for the same requests: sampling is seeded per request and position
// (models/kernels/sampling.h), so batch-mates never change a request's output.
//
// One model at a time: it is given the NPUs it asks for (every NPU by default) and a
// serving::Server over one Engine (continuous batching, admission against the KV cache, the
// 15 ms modelled TPOT target). Loading a second model while one is loaded is refused
// (kFailedPrecondition naming the loaded one); so is unloading one with requests running.
//
// Generation is asynchronous: start_generate() queues a request and returns; each step()
// runs one serving step and then, for every stream, hands the tokens that step produced to
// its sink as one TokenFrame, and a stream that ended gets on_done with its GenerateDone
// and, when it failed, the error (moed sends that as an ErrorReply). A stream whose sink no
// longer wants it (the
// client left, its deadline passed) is cancelled at the next step() and gets no more calls.
// An engine step that fails is retried by the next step(); after kMaxFailedSteps failures
// in a row every running stream ends with the error (finish reason kError), so a lost NPU
// does not leave clients waiting forever.
//
// Expert load balancing (EPLB, models/eplb/): every eplb_interval_steps engine steps the
// service folds the engine's routed-token counts into a decayed window
// (ExpertLoadTracker) and, when the busiest EP rank carries more than kEplbTrigger times
// the mean under the current placement, computes a global placement with one spare expert
// slot per rank (replicas of the hottest experts). If it cuts that imbalance by at least
// kEplbMinGain, the service moves to it in kEplbStages stages (eplb::transition_stages),
// one per step boundary (Engine::apply_expert_maps), so no step waits for more than about
// 1/kEplbStages of the copies. Tokens do not change (every replica holds the same weights).
//
// Thread-safety: none; one thread owns a ModelService and the Runtime under it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/status.h"
#include "runtime/runtime.h"
#include "tools/lib/protocol/messages.h"

namespace moe::daemon {

// Where a stream's output goes. Every member is called on the driving thread, from step()
// or cancel() (never from start_generate()).
struct GenerateSink {
  std::function<bool()> wanted;                        // null: always wanted
  std::function<void(proto::TokenFrame)> on_tokens;    // in order, no gaps
  // The last call: finish reason, counts and metrics; `error` is not ok when it failed.
  std::function<void(const proto::GenerateDone&, const Status& error)> on_done;
};

using StreamId = uint64_t;

// Figures for the metrics request (models/serving ServerStats and more).
struct ModelServiceOptions {
  uint32_t default_attention_dp = 16;  // a load that names none (capped at its NPUs)
  uint32_t eplb_interval_steps = 32;   // 0: never re-place experts
};

struct ServiceFigures {
  bool loaded = false;
  proto::ModelInfo model;
  uint64_t submitted = 0, finished = 0, cancelled = 0, failed = 0, refused = 0;
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  uint64_t steps = 0, decode_steps = 0, steps_over_target = 0, failed_steps = 0;
  uint32_t queued = 0, running = 0;
  double modelled_ms = 0;  // the serving clock
  double engine_wall_ms = 0;
  double tpot_target_ms = 0, estimated_tpot_ms = 0;
  uint32_t decode_batch_limit = 0;
  bool tpot_target_met = true;
  // Over the last kLatencyWindow finished requests (ms; 0 when none).
  uint32_t latency_samples = 0;
  double ttft_wall_p50_ms = 0, ttft_wall_p99_ms = 0, tpot_wall_p50_ms = 0, tpot_wall_p99_ms = 0;
  double ttft_modelled_p50_ms = 0, ttft_modelled_p99_ms = 0;
  double tpot_modelled_p50_ms = 0, tpot_modelled_p99_ms = 0;
  // Expert load balance: routed tokens per EP rank under each MoE layer's map, max / mean
  // (1 = even), worst layer and mean over layers; tokens routed so far.
  double expert_imbalance_max = 0, expert_imbalance_mean = 0;
  uint64_t expert_tokens = 0;
  // EPLB: re-placements completed, the last one's imbalance on its load window before and
  // after (worst MoE layer), its longest stage's pause (wall), replicas copied in all.
  uint64_t eplb_rebalances = 0;
  double eplb_last_before = 0, eplb_last_after = 0, eplb_last_pause_ms = 0;
  uint64_t eplb_replicas_copied = 0;
  uint64_t kv_free_blocks = 0, kv_total_blocks = 0;
};

class ModelService {
 public:
  static constexpr uint32_t kMaxFailedSteps = 3;
  static constexpr uint32_t kLatencyWindow = 1024;
  static constexpr double kEplbTrigger = 1.2;  // max / mean routed tokens per rank
  static constexpr double kEplbMinGain = 0.1;  // apply only when it cuts that by 10%
  static constexpr uint32_t kEplbStages = 12;

  // `runtime` (functional) outlives the service.
  explicit ModelService(rt::Runtime& runtime, ModelServiceOptions options = {});
  ~ModelService();
  ModelService(const ModelService&) = delete;
  ModelService& operator=(const ModelService&) = delete;

  // kInvalidArgument naming the field (unknown model or config, npus over the supernode's,
  // attention_dp over npus); kUnsupported for timing mode (full-size timing runs are
  // `moe simulate`) and for what the engine cannot run (naming why); kFailedPrecondition
  // when a model is loaded; weight file and HBM errors as the engine reports them.
  // `progress`, when set, is called with (done, total) weight bytes while placing.
  StatusOr<proto::LoadReply> load(const proto::LoadRequest& request,
                                  const std::function<void(uint64_t, uint64_t)>& progress = {});
  // `model` empty or the loaded model's name. kNotFound when no such model is loaded;
  // kFailedPrecondition while streams run on it.
  Status unload(const std::string& model);

  // Validates and queues a generation. kNotFound without a loaded model (or another name);
  // kInvalidArgument for no prompt or both prompt forms, a text prompt on a model without a
  // byte vocabulary, bad sampling; the serving refusals (kResourceExhausted for one that
  // can never fit, a full queue). Nothing is sent to the sink on error.
  StatusOr<StreamId> start_generate(const proto::GenerateRequest& request, GenerateSink sink);
  // Ends a stream now: its buffered tokens, then GenerateDone (kCancelled). kNotFound for a
  // stream that has ended or never was.
  Status cancel(StreamId stream);

  // True while streams are queued or running (step() has work).
  bool busy() const;
  // One serving step and its deliveries (see the header note). Returns the engine step's
  // error, after which the streams are still running (unless the retries ran out).
  Status step();

  std::vector<proto::ModelInfo> models() const;
  ServiceFigures figures() const;

 private:
  struct Loaded;
  struct Stream;
  void finish(StreamId id, Stream& stream, const Status& error);
  void record_latency(const proto::GenerateMetrics& metrics);
  // Every eplb_interval_steps steps: plan a re-placement when it pays (header note); each
  // step: apply the plan's next stage. Errors are logged; serving goes on with the
  // placement it had.
  void maybe_rebalance();
  void apply_next_stage();

  rt::Runtime& runtime_;
  const ModelServiceOptions options_;
  std::unique_ptr<Loaded> loaded_;
  std::map<StreamId, std::unique_ptr<Stream>> streams_;  // serving request id -> stream
  uint32_t failed_in_a_row_ = 0;
  uint64_t failed_steps_ = 0;
  std::vector<proto::GenerateMetrics> latencies_;  // ring of the last kLatencyWindow
  size_t latency_next_ = 0;
};

}  // namespace moe::daemon
