// Server: requests, admission, cancellation and metrics (the step itself is server_step.cpp).
//
// A request's record (Live) is owned by requests_ (a map of unique_ptr: stable addresses,
// so the queue and the running list hold plain pointers). Invariants: a queued request is
// in queue_ only; an admitted one (kPrefill, kDecode) is in running_, holds a decode
// sequence (and, split, a prefill sequence until its KV moves) with every position it can
// ever need reserved, and counts in running_on_[its decode home] and active_; release()
// undoes all of that exactly once. running_ may still list released requests until the next
// step compacts it.
#include "models/serving/server.h"

#include <algorithm>

#include "models/serving/server_live.h"
#include "runtime/base/clock.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::models::serving {

const char* request_state_name(RequestState state) {
  switch (state) {
    case RequestState::kQueued: return "queued";
    case RequestState::kPrefill: return "prefill";
    case RequestState::kDecode: return "decode";
    case RequestState::kFinished: return "finished";
    case RequestState::kCancelled: return "cancelled";
    case RequestState::kFailed: return "failed";
  }
  return "?";
}

namespace {

uint32_t blocks_for(uint64_t positions, uint32_t block_positions) {
  return static_cast<uint32_t>((positions + block_positions - 1) / block_positions);
}

uint32_t largest_pool(const Engine& e) {
  uint32_t most = 0;
  for (uint32_t d = 0; d < e.num_dp_ranks(); ++d) most = std::max(most, e.kv_total_blocks(d));
  return most;
}

}  // namespace

Server::Server(Engine& decode, Engine* prefill, ServerOptions options)
    : decode_(decode), prefill_(prefill), options_(options) {
  running_on_.assign(decode_.num_dp_ranks(), 0);
  stats_.tpot_target_ns = options_.tpot_target_ms * 1e6;
  stats_.decode_batch_limit = 1;
}

Server::~Server() {
  for (Live* r : running_)
    if (r->admitted) release(*r);
}

StatusOr<std::unique_ptr<Server>> Server::create(Engine& decode, Engine* prefill, ServerOptions options) {
  if (!(options.tpot_target_ms > 0))
    return make_error(StatusCode::kInvalidArgument, "server: tpot_target_ms is %g; it must be > 0",
                      options.tpot_target_ms);
  if (options.mtp > 1 || !(options.mtp_accept >= 0 && options.mtp_accept <= 1))
    return make_error(StatusCode::kInvalidArgument, "server: mtp %u (0 or 1) and mtp_accept %g "
                      "(in [0, 1])", options.mtp, options.mtp_accept);
  if (options.min_prefill_tokens == 0)
    return make_error(StatusCode::kInvalidArgument, "server: min_prefill_tokens is 0 (prompts "
                      "would never progress under a tight TPOT target)");
  if (prefill != nullptr) {
    if (prefill == &decode)
      return make_error(StatusCode::kInvalidArgument, "server: the prefill engine is the decode "
                        "engine; pass nullptr for a colocated server");
    if (&prefill->runtime() != &decode.runtime())
      return make_error(StatusCode::kInvalidArgument, "server: the prefill and decode engines "
                        "run on different runtimes (the KV cache moves inside one supernode)");
    if (prefill->config().name != decode.config().name ||
        prefill->config().vocab_size != decode.config().vocab_size)
      return make_error(StatusCode::kInvalidArgument, "server: prefill engine runs '%s', decode "
                        "engine '%s'", prefill->config().name.c_str(), decode.config().name.c_str());
    MOE_TRY(check_kv_compatible(*prefill, decode));
  }
  return std::unique_ptr<Server>(new Server(decode, prefill, options));
}

Status Server::check_request(const Request& r) const {
  const ModelConfig& c = decode_.config();
  if (r.prompt.empty()) return make_error(StatusCode::kInvalidArgument, "submit: the prompt is empty");
  if (uint64_t{r.prompt.size()} + r.max_new_tokens > c.max_seq_len)
    return make_error(StatusCode::kInvalidArgument, "submit: %zu prompt tokens + %u new exceed "
                      "the model's max_seq_len %u", r.prompt.size(), r.max_new_tokens, c.max_seq_len);
  for (size_t j = 0; j < r.prompt.size(); ++j)
    if (r.prompt[j] >= c.vocab_size)
      return make_error(StatusCode::kOutOfRange, "submit: prompt token %zu is id %u; the "
                        "vocabulary has %u", j, r.prompt[j], c.vocab_size);
  MOE_TRY(kernels::validate_sampling_params(r.sampling));
  if (r.max_new_tokens == 0) return ok_status();
  const uint64_t positions = r.prompt.size() + r.max_new_tokens - 1;
  const uint32_t bp = decode_.kv_block_positions();
  const uint32_t need = blocks_for(positions, bp), most = largest_pool(decode_);
  if (need > most)
    return make_error(StatusCode::kResourceExhausted,
                      "submit: the request needs %u KV blocks of %u positions (%zu prompt + %u "
                      "new tokens); the largest DP rank's pool holds %u: it can never be served",
                      need, bp, r.prompt.size(), r.max_new_tokens, most);
  if (prefill_ != nullptr) {
    const uint32_t pneed = blocks_for(r.prompt.size(), prefill_->kv_block_positions());
    const uint32_t pmost = largest_pool(*prefill_);
    if (pneed > pmost)
      return make_error(StatusCode::kResourceExhausted,
                        "submit: the prompt needs %u KV blocks of %u positions (%zu tokens) on "
                        "the prefill engine, whose largest DP rank's pool holds %u",
                        pneed, prefill_->kv_block_positions(), r.prompt.size(), pmost);
  }
  return ok_status();
}

StatusOr<RequestId> Server::submit(Request request) {
  Status bad = check_request(request);
  if (!bad.ok()) {
    ++stats_.refused;
    return bad;
  }
  if (options_.queue_when_full && queue_.size() >= options_.max_queued) {
    ++stats_.refused;
    return make_error(StatusCode::kResourceExhausted, "submit: %zu requests are queued (the "
                      "limit, ServerOptions::max_queued)", queue_.size());
  }
  auto live = std::make_unique<Live>();
  Live& r = *live;
  r.id = next_id_;
  r.req = std::move(request);
  r.m.prompt_tokens = static_cast<uint32_t>(r.req.prompt.size());
  r.submit_wall = wall_now_ns();
  r.submit_modelled = modelled_now();
  if (r.req.max_new_tokens == 0) {
    r.state = RequestState::kFinished;
    r.m.state = r.state;
    r.m.queue_wall_ns = r.m.e2e_wall_ns = 0;
    r.m.queue_modelled_ns = r.m.e2e_modelled_ns = 0;
    ++stats_.finished;
  } else if (!options_.queue_when_full) {
    if (!queue_.empty()) {
      ++stats_.refused;
      return make_error(StatusCode::kResourceExhausted, "submit: %zu requests wait before it",
                        queue_.size());
    }
    MOE_TRY_ASSIGN(bool started, try_admit(r));
    if (!started) {
      ++stats_.refused;
      std::string free_blocks;
      for (uint32_t d = 0; d < decode_.num_dp_ranks(); ++d)
        free_blocks += strformat("%s%u", d ? " " : "", decode_.kv_free_blocks(d));
      return make_error(StatusCode::kResourceExhausted,
                        "submit: no room now for %zu prompt + %u new tokens (%u KV blocks of %u "
                        "positions): free blocks per DP rank [%s]; running per rank at most %u "
                        "(TPOT target %.3g ms)%s",
                        r.req.prompt.size(), r.req.max_new_tokens,
                        blocks_for(r.req.prompt.size() + r.req.max_new_tokens - 1, decode_.kv_block_positions()),
                        decode_.kv_block_positions(), free_blocks.c_str(), stats_.decode_batch_limit,
                        options_.tpot_target_ms, hold_admissions_ ? ", admissions held after a step over it" : "");
    }
  } else {
    queue_.push_back(&r);
  }
  ++stats_.submitted;
  ++next_id_;
  requests_.emplace(r.id, std::move(live));
  return r.id;
}

StatusOr<bool> Server::try_admit(Live& r) {
  const uint32_t P = static_cast<uint32_t>(r.req.prompt.size());
  const uint32_t positions = P + r.req.max_new_tokens - 1;
  const uint32_t need = blocks_for(positions, decode_.kv_block_positions());
  const uint32_t D = decode_.num_dp_ranks();
  uint32_t home = UINT32_MAX;
  for (uint32_t d = 0; d < D; ++d) {
    if (decode_.kv_free_blocks(d) < need) continue;
    const bool open = running_on_[d] == 0 ||
                      (!hold_admissions_ && running_on_[d] < stats_.decode_batch_limit);
    if (!open) continue;
    if (home == UINT32_MAX || running_on_[d] < running_on_[home]) home = d;
  }
  if (home == UINT32_MAX) return false;
  uint32_t phome = 0;
  if (prefill_ != nullptr) {
    const uint32_t pneed = blocks_for(P, prefill_->kv_block_positions());
    phome = UINT32_MAX;
    for (uint32_t d = 0; d < prefill_->num_dp_ranks(); ++d) {
      if (prefill_->kv_free_blocks(d) < pneed) continue;
      if (phome == UINT32_MAX || prefill_->sequences_on(d) < prefill_->sequences_on(phome)) phome = d;
    }
    if (phome == UINT32_MAX) return false;
  }
  MOE_TRY_ASSIGN(SeqId dseq, decode_.open_sequence(home));
  Status s = decode_.reserve_sequence(dseq, positions);
  if (!s.ok()) {
    (void)decode_.close_sequence(dseq);
    return s.with_context(strformat("admitting request %llu", static_cast<unsigned long long>(r.id)));
  }
  if (prefill_ != nullptr) {
    auto pseq = prefill_->open_sequence(phome);
    if (pseq.ok()) s = prefill_->reserve_sequence(pseq.value(), P);
    else s = pseq.status();
    if (!s.ok()) {
      if (pseq.ok()) (void)prefill_->close_sequence(pseq.value());
      (void)decode_.close_sequence(dseq);
      return s.with_context(strformat("admitting request %llu", static_cast<unsigned long long>(r.id)));
    }
    r.pseq = pseq.value();
    r.has_pseq = true;
    r.phome = phome;
  }
  r.dseq = dseq;
  r.has_dseq = true;
  r.dhome = home;
  r.admitted = true;
  r.state = RequestState::kPrefill;
  ++running_on_[home];
  ++active_;
  running_.push_back(&r);
  ++stats_.admitted;
  r.m.queue_wall_ns = wall_now_ns() - r.submit_wall;
  r.admit_modelled = modelled_now();
  r.m.queue_modelled_ns = r.admit_modelled - r.submit_modelled;
  return true;
}

Status Server::admit_queued() {
  while (!queue_.empty()) {
    MOE_TRY_ASSIGN(bool started, try_admit(*queue_.front()));
    if (!started) break;  // first come, first served: the head waits, so do the rest
    queue_.pop_front();
  }
  return ok_status();
}

void Server::release(Live& r) {
  if (r.has_pseq) (void)prefill_->close_sequence(r.pseq);
  if (r.has_dseq) (void)decode_.close_sequence(r.dseq);
  r.has_pseq = r.has_dseq = false;
  if (r.admitted) {
    --running_on_[r.dhome];
    --active_;
    r.admitted = false;
  }
}

Status Server::cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end())
    return make_error(StatusCode::kNotFound, "cancel: no request %llu", static_cast<unsigned long long>(id));
  Live& r = *it->second;
  if (r.state == RequestState::kFinished || r.state == RequestState::kCancelled ||
      r.state == RequestState::kFailed)
    return make_error(StatusCode::kFailedPrecondition, "cancel: request %llu is already %s",
                      static_cast<unsigned long long>(id), request_state_name(r.state));
  if (r.state == RequestState::kQueued) {
    queue_.erase(std::find(queue_.begin(), queue_.end(), &r));
  } else {
    release(r);
  }
  r.state = RequestState::kCancelled;
  ++stats_.cancelled;
  return ok_status();
}

bool Server::idle() const { return queue_.empty() && active_ == 0; }

Status Server::run_until_idle() {
  while (!idle()) {
    const uint64_t steps = stats_.steps, done = stats_.finished + stats_.cancelled + stats_.failed;
    MOE_TRY(step());
    if (stats_.steps == steps && stats_.finished + stats_.cancelled + stats_.failed == done && !idle())
      return make_error(StatusCode::kInternal, "server: a step made no progress with %zu queued "
                        "and %u running requests", queue_.size(), active_);
  }
  return ok_status();
}

StatusOr<RequestMetrics> Server::metrics(RequestId id) const {
  auto it = requests_.find(id);
  if (it == requests_.end())
    return make_error(StatusCode::kNotFound, "metrics: no request %llu", static_cast<unsigned long long>(id));
  RequestMetrics m = it->second->m;
  m.state = it->second->state;
  m.generated_tokens = static_cast<uint32_t>(it->second->out.size());
  return m;
}

StatusOr<std::vector<uint32_t>> Server::tokens(RequestId id) const {
  auto it = requests_.find(id);
  if (it == requests_.end())
    return make_error(StatusCode::kNotFound, "tokens: no request %llu", static_cast<unsigned long long>(id));
  return it->second->out;
}

Status Server::forget(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end())
    return make_error(StatusCode::kNotFound, "forget: no request %llu", static_cast<unsigned long long>(id));
  const RequestState st = it->second->state;
  if (in_step_ || st == RequestState::kQueued || st == RequestState::kPrefill || st == RequestState::kDecode)
    return make_error(StatusCode::kFailedPrecondition, "forget: request %llu is %s%s",
                      static_cast<unsigned long long>(id), request_state_name(st),
                      in_step_ ? " (and a step is running)" : "");
  std::erase(running_, it->second.get());  // released, but maybe not compacted yet
  requests_.erase(it);
  return ok_status();
}

ServerStats Server::stats() const {
  ServerStats s = stats_;
  s.queued = static_cast<uint32_t>(queue_.size());
  s.prefilling = s.decoding = 0;
  for (const Live* r : running_) {
    if (!r->admitted) continue;
    if (r->state == RequestState::kPrefill) ++s.prefilling;
    if (r->state == RequestState::kDecode) ++s.decoding;
  }
  s.modelled_ns = modelled_now();
  return s;
}

double Server::estimate_tpot_ns(uint32_t batch, uint32_t kv_len, uint32_t mtp, double accept) const {
  return estimator_.estimate_tpot_ns(batch, kv_len, mtp, accept);
}

StatusOr<rt::Stream*> Server::fabric_stream(dev::NpuId npu) {
  auto it = fabric_.find(npu);
  if (it != fabric_.end()) return it->second.get();
  MOE_TRY_ASSIGN(std::unique_ptr<rt::Stream> s, rt::Stream::create(decode_.runtime(), npu, rt::StreamKind::kFabric));
  rt::Stream* raw = s.get();
  fabric_.emplace(npu, std::move(s));
  return raw;
}

}  // namespace moe::models::serving
