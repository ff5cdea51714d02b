// Serving: many requests over one Engine (or a prefill Engine and a decode Engine), with
// continuous batching, admission control against the paged KV cache, a TPOT target on the
// modelled clock, streaming, cancellation and per-request metrics on both clocks.
//
// One step (step()):
//  1. Admission, first come first served: the request at the head of the queue is given a
//     sequence on the decode engine's DP rank with the fewest running requests that has room
//     for its prompt + max_new_tokens - 1 positions (the last token is never fed back),
//     reserved now (Engine::reserve_sequence), so
//     no later step can fail for want of KV blocks; with a prefill engine it also gets a
//     sequence there with its prompt reserved. A rank is also closed to new requests while
//     its running requests reach the decode batch limit the TPOT target allows (below). A
//     request that does not fit waits (or, with queue_when_full = false, is refused at
//     submit with kResourceExhausted); one that could never fit (more blocks than a rank
//     has, past the model's max_seq_len) is refused at submit naming the sizes.
//  2. Batch: every decoding request contributes its last token (decode first); prefill
//     chunks of the admitted prompts, in admission order, fill what remains of each DP
//     rank's token budget (Engine::max_tokens_per_rank()), so a long prompt is cut into
//     chunks over several steps and never stalls decoding. With a prefill engine, prompts
//     run there (its own budget) and the decode engine carries decode tokens only.
//  3. Forward (both engines when split), then sampling (models/kernels/sampling.h: seeded by
//     (request seed, position), so a request's tokens do not depend on its batch-mates);
//     each token goes to the request's on_token callback at once. A request whose prompt is
//     complete samples its first token; when split, its KV cache then moves to its decode
//     sequence over the fabric (kv_transfer.h) and its prefill sequence is closed. A request
//     ends after max_new_tokens tokens; its sequences close and their blocks return.
//
// TPOT target (modelled clock, ServerOptions::tpot_target_ms, default 15 ms): a decoding
// request gets one token per step, so its TPOT is the step's modelled duration. The server
// fits the decode engine's observed step durations (step_estimator.h) and from that sizes
//  - the decode batch: at most max_batch_within(target) running requests per DP rank;
//  - the prefill chunks mixed into a colocated step: at most as many tokens as keep the
//    estimated step within the target (at least min_prefill_tokens, so prompts progress);
// and holds admissions after an observed decode step over the target (feedback, since the
// fit lags). The batch limit also starts slow, as a server knows nothing of the model's
// speed before its first steps: 1 per DP rank, then after each step within the target
// doubled (or raised to the tokens that step carried on its busiest rank), and after a
// decode step over it cut to half the decoders of the busiest rank. A rank with no running
// request always admits one, so every load is served; when the target cannot be met the
// stats say so (tpot_target_met false, tpot_note saying why: even one sequence per rank is
// over it, or the load queues behind the batch limit).
//
// Clocks: wall (the host's monotonic clock) and modelled. Each engine has a modelled clock
// that starts at 0 and advances by its steps' modelled durations; the server's modelled
// "now" is the later of the two (one clock when colocated). Requests are stamped on submit
// and admission with "now"; a prefill step starts no earlier than its requests' admission;
// a request's first token is stamped at the end of the step that sampled it, plus (split
// mode) its KV transfer (the fabric copy's modelled time), which is when it is ready on the
// decode engine. Split engines run side by side on disjoint NPUs, so the decode engine's
// clock does not wait for prefill steps: a decode step starts at the decode clock (or, when
// none of its requests is ready yet, when the first is), and a request that joins a step
// which started before it was ready has its decode stamps shifted by the difference, so no
// token is stamped before its KV cache arrived. Metrics: queueing = admission - submit;
// TTFT = first token - submit; TPOT = (last - first) / (tokens - 1): the mean modelled
// duration of the decode steps it went through.
//
// Cancellation (cancel()) at any time: queued requests leave the queue; admitted ones close
// their sequences at once (every KV block returns); no callback follows. A callback may
// call cancel() and submit() (not step()).
//
// Errors: an engine failure inside a step is returned by step() (the engine rolls the
// step's sequences back; the requests stay where they were and the next step retries); a
// request whose sampling or KV transfer fails is released alone (kFailed).
// Thread-safety: one thread drives a server and its engines (the daemon's executor).
// Ownership: the engines (and their runtime) outlive the server.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/engine/engine.h"
#include "models/kernels/sampling.h"
#include "models/serving/kv_transfer.h"
#include "models/serving/step_estimator.h"
#include "runtime/stream.h"

namespace moe::models::serving {

using RequestId = uint64_t;

// Called on the driving thread, inside step(), once per token as it is sampled.
using TokenSink = std::function<void(RequestId id, uint32_t token)>;

struct Request {
  std::vector<uint32_t> prompt;  // token ids < vocab; not empty
  uint32_t max_new_tokens = 16;  // 0: finishes at submit with no tokens
  kernels::SamplingParams sampling;
  TokenSink on_token;            // optional
};

// kFailed: sampling refused the step's logits (NaN), or its KV transfer failed; the request
// was released (RequestMetrics::error says why) and the others went on.
enum class RequestState : uint8_t { kQueued, kPrefill, kDecode, kFinished, kCancelled, kFailed };
const char* request_state_name(RequestState state);

struct RequestMetrics {
  RequestState state = RequestState::kQueued;
  uint32_t prompt_tokens = 0;
  uint32_t generated_tokens = 0;
  uint32_t steps = 0;  // engine steps that carried the request
  // Wall clock, ns (-1 until the event happened).
  int64_t queue_wall_ns = -1;  // submit -> admission
  int64_t ttft_wall_ns = -1;   // submit -> first token
  int64_t tpot_wall_ns = -1;   // mean gap between later tokens (needs 2 tokens)
  int64_t e2e_wall_ns = -1;    // submit -> last token (finished requests)
  // Modelled clock, ns (-1 until the event happened).
  double queue_modelled_ns = -1;
  double ttft_modelled_ns = -1;
  double tpot_modelled_ns = -1;
  double e2e_modelled_ns = -1;
  double kv_transfer_modelled_ns = 0;  // split mode: the fabric copy (inside TTFT)
  uint64_t kv_transfer_bytes = 0;
  std::string error;  // kFailed: why
};

struct ServerOptions {
  double tpot_target_ms = 15.0;   // modelled; > 0
  bool queue_when_full = true;    // false: refuse (kResourceExhausted) what cannot start now
  uint32_t max_queued = 4096;     // submits beyond it are refused (kResourceExhausted)
  uint32_t min_prefill_tokens = 8;  // per DP rank per colocated step, whatever the target
  uint32_t mtp = 0;               // 0 or 1: the decode TPOT estimate assumes MTP (reports only)
  double mtp_accept = 0.7;        // draft acceptance for the MTP estimate, [0, 1]
};

struct ServerStats {
  uint64_t submitted = 0, admitted = 0, finished = 0, cancelled = 0, refused = 0, failed = 0;
  uint32_t queued = 0, prefilling = 0, decoding = 0;
  uint64_t steps = 0;
  uint64_t decode_steps = 0;        // steps of the decode engine that carried decode tokens
  uint64_t steps_over_target = 0;   // of those, modelled duration over the TPOT target
  uint64_t prompt_tokens = 0, generated_tokens = 0;
  double modelled_ns = 0;           // the server's modelled clock
  double max_decode_step_ns = 0;    // modelled
  int64_t wall_ns = 0;              // inside step()
  int64_t engine_wall_ns = 0;       // of which inside Engine::forward (the rest: scheduling,
                                    // sampling, callbacks, KV transfers)
  uint64_t kv_transfers = 0, kv_transfer_bytes = 0;
  double kv_transfer_modelled_ns = 0;
  uint32_t decode_batch_limit = 0;  // per DP rank, from the TPOT target (as last computed)
  uint32_t max_decode_batch = 0;    // the most requests one DP rank decoded in one step
  double tpot_target_ns = 0;
  double estimated_tpot_ns = 0;     // at the current decode batch (MTP if options.mtp)
  bool tpot_target_met = true;      // false once a decode step ran over the target
  std::string tpot_note;            // why not, when not
};

class Server {
 public:
  // `decode` runs every request's decoding (and its prefill when `prefill` is null);
  // `prefill` (optional) runs prompts on other NPUs of the same runtime. kInvalidArgument
  // for bad options, engines of different runtimes or models, or KV layouts that cannot be
  // copied (naming what differs).
  static StatusOr<std::unique_ptr<Server>> create(Engine& decode, Engine* prefill = nullptr,
                                                  ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Queues a request (or, with queue_when_full = false, admits it now). kInvalidArgument /
  // kOutOfRange for a bad prompt or sampling parameters; kResourceExhausted naming the sizes
  // for a request that can never fit (blocks needed > a rank's pool, prompt + new >
  // max_seq_len is kInvalidArgument), a full queue, or (refusing mode) no room now.
  StatusOr<RequestId> submit(Request request);
  // Cancels a queued or running request and frees what it holds. kNotFound for an unknown
  // id; kFailedPrecondition for one already finished or cancelled.
  Status cancel(RequestId id);
  // One scheduling step (admission, one forward per engine, sampling, callbacks). Does
  // nothing when idle().
  Status step();
  // Steps until idle() (or an error; kInternal if a step makes no progress while work
  // remains, which the admission rules should make impossible).
  Status run_until_idle();
  bool idle() const;

  // kNotFound for an unknown (or forgotten) id.
  StatusOr<RequestMetrics> metrics(RequestId id) const;
  StatusOr<std::vector<uint32_t>> tokens(RequestId id) const;  // generated so far
  // Drops a finished or cancelled request's record. kFailedPrecondition while it runs.
  Status forget(RequestId id);
  ServerStats stats() const;

  // The scheduler's estimates (modelled ns), from the decode engine's observed steps:
  // a decode step at `batch` sequences per DP rank of `kv_len` positions each, with or
  // without MTP (mtp 1: one draft verified per step, accepted with probability `accept`).
  double estimate_tpot_ns(uint32_t batch, uint32_t kv_len, uint32_t mtp = 0, double accept = 0.7) const;
  const StepTimeEstimator& estimator() const { return estimator_; }

 private:
  struct Live;
  Server(Engine& decode, Engine* prefill, ServerOptions options);
  Status check_request(const Request& r) const;
  // Tries to start the queue's head; false when it must wait. Errors: engine refusals
  // other than a full pool.
  StatusOr<bool> try_admit(Live& r);
  Status admit_queued();
  void release(Live& r);
  void fail(Live& r, const Status& why);
  void refresh_limits();
  // `at`: the token's modelled time stamp.
  Status deliver(Live& r, uint32_t token, double at);
  Status finish_prefill(Live& r, const float* logits, double prefill_end_ns);
  double modelled_now() const { return std::max(now_ns_, prefill_ns_); }
  StatusOr<rt::Stream*> fabric_stream(dev::NpuId npu);

  Engine& decode_;
  Engine* prefill_;
  ServerOptions options_;
  RequestId next_id_ = 1;
  std::map<RequestId, std::unique_ptr<Live>> requests_;
  std::deque<Live*> queue_;
  std::vector<Live*> running_;             // admission order; compacted each step
  std::vector<uint32_t> running_on_;       // per decode DP rank
  std::map<dev::NpuId, std::unique_ptr<rt::Stream>> fabric_;
  StepTimeEstimator estimator_;
  ServerStats stats_;
  bool hold_admissions_ = false;           // the last decode step ran over the target
  uint32_t ramp_limit_ = 1;                // slow start of the decode batch limit
  bool in_step_ = false;
  uint32_t active_ = 0;                    // admitted, not yet released
  double now_ns_ = 0;                      // modelled: the decode engine's clock
  double prefill_ns_ = 0;                  // modelled: the prefill engine's (split mode)
  kernels::SamplingScratch scratch_;
  // Per step, reused.
  std::vector<StepInput> d_inputs_, p_inputs_;
  std::vector<Live*> d_owner_, p_owner_;
  std::vector<float> d_logits_, p_logits_;
  std::vector<uint32_t> budget_;
  std::vector<uint32_t> rank_tokens_;
  std::vector<uint32_t> decode_on_;  // decode tokens per DP rank in the step
  std::vector<uint64_t> rank_kv_;
};

}  // namespace moe::models::serving
