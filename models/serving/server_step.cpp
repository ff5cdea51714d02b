// Server::step: admission, the batch of each engine, the forwards, sampling and delivery.
//
// Batch order on the decode engine: decode tokens of every decoding request first (each DP
// rank's budget is max_tokens_per_rank, and admission keeps the decoders of a rank within
// the TPOT batch limit <= that budget), then prefill chunks in admission order. In a
// colocated step the chunks of a rank are also capped so the busiest rank's estimated
// step stays within the TPOT target (while anything decodes), but never below
// min_prefill_tokens. Outputs are processed in entry order; a callback may cancel any
// request, so each entry re-checks its request's state before touching it.
#include <algorithm>

#include "models/serving/server.h"
#include "models/serving/server_live.h"
#include "runtime/base/clock.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::models::serving {

namespace {

struct InStep {
  bool& flag;
  explicit InStep(bool& f) : flag(f) { flag = true; }
  ~InStep() { flag = false; }
};

}  // namespace

void Server::refresh_limits() {
  // Mean positions of the sequences that decode (or will): what a decode step reads.
  uint64_t sum = 0;
  uint32_t n = 0, busiest = 0;
  for (const Live* r : running_) {
    if (!r->admitted) continue;
    sum += r->req.prompt.size() + r->out.size();
    ++n;
  }
  for (uint32_t c : running_on_) busiest = std::max(busiest, c);
  if (n == 0 && !queue_.empty()) {
    sum = queue_.front()->req.prompt.size();
    n = 1;
  }
  const uint32_t kv_len = n == 0 ? 0 : static_cast<uint32_t>(sum / n);
  const double target = stats_.tpot_target_ns;
  stats_.decode_batch_limit =
      std::min(ramp_limit_, estimator_.max_batch_within(target, kv_len, decode_.max_tokens_per_rank()));
  if (estimator_.ready()) {
    stats_.estimated_tpot_ns = estimator_.estimate_tpot_ns(std::max(busiest, 1u), kv_len, options_.mtp,
                                                           options_.mtp_accept);
    const double one = estimator_.estimate_tpot_ns(1, kv_len, options_.mtp, options_.mtp_accept);
    if (one > target) {
      stats_.tpot_target_met = false;
      stats_.tpot_note = strformat(
          "TPOT target %.4g ms cannot be met: one sequence of %u positions per DP rank already "
          "takes an estimated %.3f ms per token (modelled); serving one request per rank",
          target * 1e-6, kv_len, one * 1e-6);
    } else if (!queue_.empty() && busiest >= stats_.decode_batch_limit) {
      stats_.tpot_note = strformat(
          "load over the TPOT target %.4g ms: %zu requests queue behind the decode batch limit "
          "of %u per DP rank (estimated %.3f ms per token at that batch, modelled)",
          target * 1e-6, queue_.size(), stats_.decode_batch_limit,
          estimator_.estimate_tpot_ns(stats_.decode_batch_limit, kv_len) * 1e-6);
    }
  }
}

void Server::fail(Live& r, const Status& why) {
  release(r);
  r.state = RequestState::kFailed;
  r.m.error = why.to_string();
  ++stats_.failed;
  MOE_WARN("server: request %llu failed: %s", static_cast<unsigned long long>(r.id), r.m.error.c_str());
}

Status Server::deliver(Live& r, uint32_t token, double modelled) {
  const int64_t wall = wall_now_ns();
  r.last = token;
  r.out.push_back(token);
  ++stats_.generated_tokens;
  const uint32_t n = static_cast<uint32_t>(r.out.size());
  if (n == 1) {
    r.first_wall = wall;
    r.first_modelled = modelled;
    r.m.ttft_wall_ns = wall - r.submit_wall;
    r.m.ttft_modelled_ns = modelled - r.submit_modelled;
  } else {
    r.m.tpot_wall_ns = (wall - r.first_wall) / (n - 1);
    r.m.tpot_modelled_ns = (modelled - r.first_modelled) / (n - 1);
  }
  if (n >= r.req.max_new_tokens) {
    release(r);
    r.state = RequestState::kFinished;
    r.m.e2e_wall_ns = wall - r.submit_wall;
    r.m.e2e_modelled_ns = modelled - r.submit_modelled;
    ++stats_.finished;
  }
  if (r.req.on_token) r.req.on_token(r.id, token);
  return ok_status();
}

Status Server::finish_prefill(Live& r, const float* logits, double prefill_end_ns) {
  const uint32_t V = decode_.config().vocab_size;
  const uint32_t P = static_cast<uint32_t>(r.req.prompt.size());
  auto token = kernels::sample_token(std::span<const float>(logits, V), r.req.sampling, P, scratch_);
  if (!token.ok()) {
    fail(r, token.status());
    return ok_status();
  }
  double transfer_ns = 0;
  if (r.has_pseq && r.req.max_new_tokens > 1) {
    KvTransferStats ks;
    auto fabric = fabric_stream(decode_.dp_npu(r.dhome));
    Status s = fabric.ok() ? transfer_sequence_kv(*prefill_, r.pseq, decode_, r.dseq, *fabric.value(), &ks)
                           : fabric.status();
    if (!s.ok()) {  // this request fails; the others go on
      fail(r, s.with_context("KV transfer to the decode engine"));
      return ok_status();
    }
    transfer_ns = ks.modelled_ns;
    r.m.kv_transfer_modelled_ns = ks.modelled_ns;
    r.m.kv_transfer_bytes = ks.bytes;
    ++stats_.kv_transfers;
    stats_.kv_transfer_bytes += ks.bytes;
    stats_.kv_transfer_modelled_ns += ks.modelled_ns;
  }
  if (r.has_pseq) {
    (void)prefill_->close_sequence(r.pseq);
    r.has_pseq = false;
  }
  r.state = RequestState::kDecode;
  r.ready_modelled = prefill_end_ns + transfer_ns;
  return deliver(r, token.value(), r.ready_modelled);
}

Status Server::step() {
  if (in_step_)
    return make_error(StatusCode::kFailedPrecondition, "server: step() called from a token callback");
  if (idle()) return ok_status();
  InStep guard(in_step_);
  const int64_t wall0 = wall_now_ns();
  std::erase_if(running_, [](const Live* r) { return !r->admitted; });
  refresh_limits();
  MOE_TRY(admit_queued());

  const uint32_t D = decode_.num_dp_ranks();
  const uint32_t V = decode_.config().vocab_size;
  budget_.assign(D, decode_.max_tokens_per_rank());
  rank_tokens_.assign(D, 0);
  rank_kv_.assign(D, 0);
  d_inputs_.clear();
  d_owner_.clear();
  p_inputs_.clear();
  p_owner_.clear();
  uint32_t decode_tokens = 0;
  for (Live* r : running_) {
    if (r->state != RequestState::kDecode) continue;
    d_inputs_.push_back({r->dseq, std::span<const uint32_t>(&r->last, 1)});
    d_owner_.push_back(r);
    --budget_[r->dhome];
    ++rank_tokens_[r->dhome];
    rank_kv_[r->dhome] += r->req.prompt.size() + r->out.size();
    ++decode_tokens;
  }
  decode_on_ = rank_tokens_;
  for (uint32_t d = 0; d < D; ++d)
    stats_.max_decode_batch = std::max(stats_.max_decode_batch, rank_tokens_[d]);
  if (prefill_ == nullptr) {
    if (decode_tokens > 0 && estimator_.ready()) {
      const uint64_t kv = *std::max_element(rank_kv_.begin(), rank_kv_.end());
      const uint32_t allowed = estimator_.max_tokens_within(stats_.tpot_target_ns, kv,
                                                            decode_.max_tokens_per_rank());
      for (uint32_t d = 0; d < D; ++d) {
        const uint32_t room = allowed > rank_tokens_[d] ? allowed - rank_tokens_[d] : 0;
        budget_[d] = std::min(budget_[d], std::max(room, options_.min_prefill_tokens));
      }
    }
    for (Live* r : running_) {
      if (r->state != RequestState::kPrefill) continue;
      const uint32_t n = std::min<uint32_t>(budget_[r->dhome], r->req.prompt.size() - r->fed);
      if (n == 0) continue;
      d_inputs_.push_back({r->dseq, std::span<const uint32_t>(r->req.prompt).subspan(r->fed, n)});
      d_owner_.push_back(r);
      budget_[r->dhome] -= n;
      rank_tokens_[r->dhome] += n;
      rank_kv_[r->dhome] += r->fed + n;
    }
  } else {
    std::vector<uint32_t> pbudget(prefill_->num_dp_ranks(), prefill_->max_tokens_per_rank());
    for (Live* r : running_) {
      if (r->state != RequestState::kPrefill) continue;
      const uint32_t n = std::min<uint32_t>(pbudget[r->phome], r->req.prompt.size() - r->fed);
      if (n == 0) continue;
      p_inputs_.push_back({r->pseq, std::span<const uint32_t>(r->req.prompt).subspan(r->fed, n)});
      p_owner_.push_back(r);
      pbudget[r->phome] -= n;
    }
  }
  if (d_inputs_.empty() && p_inputs_.empty()) {
    stats_.wall_ns += wall_now_ns() - wall0;
    return ok_status();  // everything admitted waits for nothing; queued ones wait for room
  }

  StepStats pss, dss;
  // Modelled starts: a prefill step once its requests were admitted; a decode step at the
  // decode clock, or when the first of its requests is ready if the engine had to wait.
  double p_start = prefill_ns_, d_start = now_ns_;
  for (const Live* r : p_owner_) p_start = std::max(p_start, r->admit_modelled);
  if (!d_owner_.empty()) {
    double first_ready = d_owner_[0]->ready_modelled;
    for (const Live* r : d_owner_) first_ready = std::min(first_ready, r->ready_modelled);
    d_start = std::max(d_start, first_ready);
  }
  if (!p_inputs_.empty()) {
    p_logits_.resize(p_inputs_.size() * uint64_t{V});
    Status s = prefill_->forward(p_inputs_, p_logits_, &pss);
    if (!s.ok()) return s.with_context("server step (prefill engine)");
  }
  if (!d_inputs_.empty()) {
    d_logits_.resize(d_inputs_.size() * uint64_t{V});
    Status s = decode_.forward(d_inputs_, d_logits_, &dss);
    if (!s.ok()) return s.with_context("server step (decode engine)");
  }
  stats_.engine_wall_ns += pss.wall_ns + dss.wall_ns;
  if (!p_inputs_.empty()) prefill_ns_ = p_start + pss.modelled_ns;
  if (!d_inputs_.empty()) now_ns_ = d_start + dss.modelled_ns;
  ++stats_.steps;
  if (!d_inputs_.empty()) {
    const uint32_t busiest = *std::max_element(rank_tokens_.begin(), rank_tokens_.end());
    estimator_.observe(busiest, *std::max_element(rank_kv_.begin(), rank_kv_.end()), dss.modelled_ns);
    // Slow start: a step within the target (prefill chunks included: a decode token costs no
    // more than a prompt token) lets the batch limit double, or reach the tokens it carried.
    if (dss.modelled_ns <= stats_.tpot_target_ns)
      ramp_limit_ = std::min(decode_.max_tokens_per_rank(), std::max(2 * ramp_limit_, busiest));
    if (decode_tokens > 0) {
      ++stats_.decode_steps;
      stats_.max_decode_step_ns = std::max(stats_.max_decode_step_ns, dss.modelled_ns);
      hold_admissions_ = dss.modelled_ns > stats_.tpot_target_ns;
      const uint32_t decoders = *std::max_element(decode_on_.begin(), decode_on_.end());
      if (hold_admissions_) ramp_limit_ = std::max(1u, std::min(ramp_limit_, decoders / 2));
      if (hold_admissions_) {
        ++stats_.steps_over_target;
        stats_.tpot_target_met = false;
        if (stats_.tpot_note.empty())
          stats_.tpot_note = strformat("a decode step took %.3f ms (modelled) with %u tokens on the "
                                       "busiest DP rank, over the TPOT target %.4g ms",
                                       dss.modelled_ns * 1e-6,
                                       *std::max_element(rank_tokens_.begin(), rank_tokens_.end()),
                                       stats_.tpot_target_ns * 1e-6);
      }
    }
  }

  for (size_t k = 0; k < p_owner_.size(); ++k) {
    Live& r = *p_owner_[k];
    if (r.state != RequestState::kPrefill) continue;  // cancelled by a callback
    ++r.m.steps;
    r.fed += static_cast<uint32_t>(p_inputs_[k].tokens.size());
    stats_.prompt_tokens += p_inputs_[k].tokens.size();
    if (r.fed == r.req.prompt.size())
      MOE_TRY(finish_prefill(r, p_logits_.data() + k * uint64_t{V}, prefill_ns_));
  }
  for (size_t k = 0; k < d_owner_.size(); ++k) {
    Live& r = *d_owner_[k];
    const float* row = d_logits_.data() + k * uint64_t{V};
    if (r.state == RequestState::kPrefill) {
      ++r.m.steps;
      r.fed += static_cast<uint32_t>(d_inputs_[k].tokens.size());
      stats_.prompt_tokens += d_inputs_[k].tokens.size();
      if (r.fed == r.req.prompt.size()) MOE_TRY(finish_prefill(r, row, now_ns_));
    } else if (r.state == RequestState::kDecode && d_inputs_[k].tokens.data() == &r.last) {
      ++r.m.steps;
      if (!r.decode_started) {
        r.decode_started = true;
        r.decode_shift_modelled = std::max(0.0, r.ready_modelled - d_start);
      }
      const uint64_t position = r.req.prompt.size() + r.out.size();
      auto token = kernels::sample_token(std::span<const float>(row, V), r.req.sampling, position, scratch_);
      if (!token.ok()) {
        fail(r, token.status());
        continue;
      }
      MOE_TRY(deliver(r, token.value(), now_ns_ + r.decode_shift_modelled));
    }
  }
  stats_.wall_ns += wall_now_ns() - wall0;
  return ok_status();
}

}  // namespace moe::models::serving
