// generate(): the step loop of chunked prefill and batched decode over an Engine.
#include "models/engine/generate.h"

#include <algorithm>

#include "runtime/base/clock.h"
#include "runtime/base/strformat.h"

namespace moe::models {

namespace {

struct Live {
  SeqId seq;
  uint32_t home = 0;
  uint32_t fed = 0;  // prompt tokens already in the cache
  bool done = false;
  uint32_t last = 0;  // the last sampled token (decode input)
};

Status check_requests(const Engine& engine, std::span<const GenerateRequest> requests) {
  const ModelConfig& c = engine.config();
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerateRequest& r = requests[i];
    if (r.prompt.empty())
      return make_error(StatusCode::kInvalidArgument, "generate: request %zu has an empty prompt", i);
    if (r.prompt.size() + r.max_new_tokens > c.max_seq_len)
      return make_error(StatusCode::kInvalidArgument,
                        "generate: request %zu: %zu prompt tokens + %u new exceed the model's "
                        "max_seq_len %u", i, r.prompt.size(), r.max_new_tokens, c.max_seq_len);
    for (size_t j = 0; j < r.prompt.size(); ++j)
      if (r.prompt[j] >= c.vocab_size)
        return make_error(StatusCode::kOutOfRange, "generate: request %zu, prompt token %zu is id "
                          "%u; the vocabulary has %u", i, j, r.prompt[j], c.vocab_size);
    Status s = kernels::validate_sampling_params(r.sampling);
    if (!s.ok()) return s.with_context(strformat("generate: request %zu", i));
  }
  return ok_status();
}

}  // namespace

StatusOr<std::vector<std::vector<uint32_t>>> generate(Engine& engine,
                                                      std::span<const GenerateRequest> requests,
                                                      GenerateStats* stats,
                                                      const TokenCallback& on_token) {
  MOE_TRY(check_requests(engine, requests));
  const ModelConfig& c = engine.config();
  const uint32_t V = c.vocab_size;
  std::vector<std::vector<uint32_t>> out(requests.size());
  std::vector<Live> live(requests.size());
  GenerateStats st;
  auto close_all = [&]() {
    for (Live& l : live)
      if (!l.done && l.seq.index != UINT32_MAX) (void)engine.close_sequence(l.seq);
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    auto seq = engine.open_sequence();
    if (!seq.ok()) {
      close_all();
      return seq.status();
    }
    live[i].seq = seq.value();
    live[i].home = engine.sequence_home(seq.value()).value();
    st.prompt_tokens += requests[i].prompt.size();
    if (requests[i].max_new_tokens == 0) {
      live[i].done = true;  // nothing to generate: no step needed
      (void)engine.close_sequence(live[i].seq);
    }
  }
  std::vector<uint32_t> budget(engine.num_dp_ranks());
  std::vector<StepInput> inputs;
  std::vector<size_t> owner;
  std::vector<float> logits;
  kernels::SamplingScratch scratch;
  const int64_t wall0 = wall_now_ns();
  for (;;) {
    std::fill(budget.begin(), budget.end(), engine.max_tokens_per_rank());
    inputs.clear();
    owner.clear();
    bool carries_prompt = false;
    for (size_t i = 0; i < live.size(); ++i) {
      Live& l = live[i];
      if (l.done || budget[l.home] == 0) continue;
      const std::vector<uint32_t>& prompt = requests[i].prompt;
      if (l.fed < prompt.size()) {
        const uint32_t n = std::min<uint32_t>(budget[l.home], static_cast<uint32_t>(prompt.size() - l.fed));
        inputs.push_back({l.seq, std::span<const uint32_t>(prompt).subspan(l.fed, n)});
        budget[l.home] -= n;
        carries_prompt = true;
      } else {
        inputs.push_back({l.seq, std::span<const uint32_t>(&l.last, 1)});
        budget[l.home] -= 1;
      }
      owner.push_back(i);
    }
    if (inputs.empty()) break;
    logits.resize(inputs.size() * uint64_t{V});
    StepStats ss;
    Status s = engine.forward(inputs, logits, &ss);
    if (!s.ok()) {
      close_all();
      return s;
    }
    ++st.steps;
    st.math_wall_ns += ss.math_wall_ns;
    st.comm_wall_ns += ss.comm_wall_ns;
    st.modelled_ns += ss.modelled_ns;
    if (carries_prompt) {
      ++st.prefill_steps;
    } else {
      ++st.decode_steps;
      st.decode_modelled_ns += ss.modelled_ns;
    }
    for (size_t k = 0; k < inputs.size(); ++k) {
      const size_t i = owner[k];
      Live& l = live[i];
      const GenerateRequest& r = requests[i];
      if (l.fed < r.prompt.size()) {
        l.fed += static_cast<uint32_t>(inputs[k].tokens.size());
        if (l.fed < r.prompt.size()) continue;  // more prompt to feed first
      }
      // The token at the sequence's next position.
      const uint64_t position = r.prompt.size() + out[i].size();
      auto token = kernels::sample_token(std::span<const float>(logits).subspan(k * uint64_t{V}, V),
                                         r.sampling, position, scratch);
      if (!token.ok()) {
        close_all();
        return Status(token.status()).with_context(strformat("generate: request %zu", i));
      }
      l.last = token.value();
      out[i].push_back(l.last);
      ++st.generated_tokens;
      if (on_token) on_token(i, l.last);
      if (out[i].size() >= r.max_new_tokens) {
        l.done = true;
        (void)engine.close_sequence(l.seq);
      }
    }
  }
  st.wall_ns = wall_now_ns() - wall0;
  if (stats != nullptr) *stats = st;
  return out;
}

std::vector<uint32_t> bytes_to_tokens(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (char ch : text) out.push_back(static_cast<unsigned char>(ch));
  return out;
}

std::string tokens_to_text(std::span<const uint32_t> tokens) {
  std::string out;
  for (uint32_t t : tokens) {
    if (t >= 0x20 && t < 0x7f && t != '\\') {
      out.push_back(static_cast<char>(t));
    } else if (t == '\\') {
      out += "\\\\";
    } else if (t == '\n') {
      out += "\\n";
    } else {
      out += strformat(t <= 0xff ? "\\x%02x" : "\\u{%x}", t);
    }
  }
  return out;
}

}  // namespace moe::models
