// `moe generate`: text from the model the moed daemon serves, or, with --embedded, from the
// same service in this process.
//
// Both paths go through the one moe::Api interface (tools/lib/client/api.h): the only
// difference is the line that creates the Api (Client::connect or Embedded::open plus a
// load), which is the point of that interface. Text is streamed to stdout as each
// TokenFrame arrives (flushed, so a pipe sees it at once); the figures of each generation
// (token counts, finish reason, TTFT and TPOT on the wall and modelled clocks) go to stderr,
// or everything into one JSON object on stdout with --json. Several prompts run one after
// another, each as its own request.
//
// Ctrl-C: the first SIGINT sets a flag (the handler does nothing else); the token callback
// then returns false, which cancels the request (the daemon gets a CancelRequest), the
// command prints what it had and exits 130. SA_RESETHAND makes a second Ctrl-C kill the
// process as usual.
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/base/json.h"
#include "runtime/base/strformat.h"
#include "tools/lib/client/embedded.h"
#include "tools/moe/client_options.h"
#include "tools/moe/commands.h"

namespace moe::tools {
namespace {

constexpr int kInterruptedExit = 130;  // 128 + SIGINT, as shells report it

volatile sig_atomic_t g_interrupted = 0;

void on_interrupt(int) { g_interrupted = 1; }

// Installs the SIGINT handler for the command's lifetime.
class InterruptGuard {
 public:
  InterruptGuard() {
    struct sigaction action {};
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;  // no SA_RESTART: a blocked poll() wakes with EINTR
    installed_ = ::sigaction(SIGINT, &action, &previous_) == 0;
    if (installed_ && previous_.sa_handler == SIG_IGN) {  // started with SIGINT ignored (nohup, &)
      ::sigaction(SIGINT, &previous_, nullptr);
      installed_ = false;
    }
  }
  ~InterruptGuard() {
    if (installed_) ::sigaction(SIGINT, &previous_, nullptr);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction previous_ {};
  bool installed_ = false;
};

struct GenerateArgs {
  std::vector<std::string> prompts;
  proto::GenerateRequest request;  // everything but the prompt
  bool json = false;
  std::string socket_path;
  bool embedded = false;
  // --embedded only: the supernode and the model to load.
  std::string supernode = "cm384";
  proto::LoadRequest load;
  std::vector<std::string> embedded_flags_given;
};

struct Generation {
  std::string prompt;
  std::string text;
  std::vector<uint32_t> tokens;
  proto::GenerateDone done;
};

void generate_usage(FILE* out) {
  std::fprintf(out,
      "usage: moe generate \"PROMPT\"... [--max-new-tokens N] [--temperature T] [--top-p P]\n"
      "                    [--seed N] [--socket PATH] [--json]\n"
      "       moe generate \"PROMPT\"... --embedded [--supernode S] [--weights PATH] [--int8]\n"
      "                    [--npus N] [--attention-dp N] ...\n"
      "  Generates text from the model the moed daemon serves (moe load first), streaming it to\n"
      "  stdout as it comes; then prints on stderr the token counts, why it stopped, and the\n"
      "  time to first token (TTFT) and per output token (TPOT) on the wall and modelled clocks.\n"
      "  Several prompts run one after another. Ctrl-C cancels the generation.\n"
      "  --max-new-tokens N tokens to generate per prompt (default 16)\n"
      "  --temperature T    0 = greedy (default), else sampling at temperature T\n"
      "  --top-p P          nucleus sampling threshold in (0, 1] (default 1)\n"
      "  --seed N           sampling seed (default 0); the same seed gives the same tokens\n"
      "  --socket PATH      moed's socket (default %s)\n"
      "  --json             no streaming: one JSON object on stdout with every generation\n"
      "  --embedded         no daemon: open the supernode in this process and load the model\n"
      "                     (the same service and API moed runs)\n"
      "  --supernode S      (--embedded) preset or description file (default cm384)\n"
      "  --weights PATH     (--embedded) safetensors weights of the builtin config (default:\n"
      "                     seeded random weights, as `moe load`)\n"
      "  --int8             (--embedded) W8A8 experts and INT8 dispatch\n"
      "  --npus N           (--embedded) NPUs to run on (default every NPU)\n"
      "  --attention-dp N   (--embedded) attention data-parallel ranks (default 16)\n",
      default_socket_path().c_str());
}

// 0 when parsed, else the exit status (0 for --help).
int parse_generate_args(int argc, char** argv, GenerateArgs* a, bool* help) {
  ArgCursor args("generate", argc, argv);
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      *help = true;
      return 0;
    }
    if (args.is("--json")) {
      a->json = true;
    } else if (args.is("--embedded")) {
      a->embedded = true;
    } else if (args.is("--socket")) {
      if (!args.value(&a->socket_path)) return ArgCursor::kUsageExit;
    } else if (args.is("--prompt")) {  // the same as a positional prompt
      std::string prompt;
      if (!args.value(&prompt)) return ArgCursor::kUsageExit;
      a->prompts.push_back(prompt);
    } else if (args.is("--max-new-tokens") || args.is("--max-tokens")) {
      if (!args.value(&a->request.max_new_tokens)) return ArgCursor::kUsageExit;
    } else if (args.is("--temperature")) {
      if (!args.value(&a->request.temperature)) return ArgCursor::kUsageExit;
    } else if (args.is("--top-p")) {
      if (!args.value(&a->request.top_p)) return ArgCursor::kUsageExit;
    } else if (args.is("--seed")) {
      if (!args.value(&a->request.seed)) return ArgCursor::kUsageExit;
    } else if (args.is("--supernode")) {
      if (!args.value(&a->supernode)) return ArgCursor::kUsageExit;
      a->embedded_flags_given.push_back(args.arg());
    } else if (args.is("--weights")) {
      if (!args.value(&a->load.name)) return ArgCursor::kUsageExit;
      if (a->load.name.empty()) return args.usage_error("--weights needs a path");
      a->load.source = proto::ModelSource::kSafetensors;
      a->load.config = "builtin";
      a->embedded_flags_given.push_back(args.arg());
    } else if (args.is("--int8")) {
      a->load.precision = proto::Precision::kInt8;
      a->embedded_flags_given.push_back(args.arg());
    } else if (args.is("--npus")) {
      if (!args.value(&a->load.npus)) return ArgCursor::kUsageExit;
      a->embedded_flags_given.push_back(args.arg());
    } else if (args.is("--attention-dp")) {
      if (!args.value(&a->load.attention_dp)) return ArgCursor::kUsageExit;
      a->embedded_flags_given.push_back(args.arg());
    } else if (args.positional()) {
      a->prompts.push_back(args.arg());
    } else {
      return args.unknown();
    }
  }
  if (!a->embedded && !a->embedded_flags_given.empty()) {
    return args.usage_error(strformat(
        "%s applies to --embedded only (the daemon's model is chosen by moe load)",
        a->embedded_flags_given.front().c_str()));
  }
  if (a->embedded && !a->socket_path.empty()) {
    return args.usage_error("--socket and --embedded exclude each other");
  }
  if (a->prompts.empty()) return args.usage_error("give a prompt: moe generate \"text\"");
  for (const std::string& p : a->prompts) {
    if (p.empty()) return args.usage_error("a prompt must not be empty");
  }
  if (a->request.max_new_tokens == 0) return args.usage_error("--max-new-tokens must be at least 1");
  return 0;
}

// Opens the Api the arguments ask for: a connection to moed, or the embedded service with
// its model loaded.
StatusOr<std::unique_ptr<Api>> open_api(const GenerateArgs& a) {
  if (!a.embedded) {
    MOE_TRY_ASSIGN(std::unique_ptr<Client> client, connect_daemon(a.socket_path));
    return std::unique_ptr<Api>(std::move(client));
  }
  EmbeddedOptions options;
  options.runtime.supernode = a.supernode;
  MOE_TRY_ASSIGN(std::unique_ptr<Embedded> embedded, Embedded::open(options));
  MOE_TRY_ASSIGN(proto::LoadReply loaded, embedded->load(a.load));
  if (!a.json) {
    std::fprintf(stderr, "[embedded: %s on %u NPUs of %s, attention DP %u, loaded in %s (wall)]\n",
                 loaded.model.name.c_str(), loaded.model.npus, a.supernode.c_str(),
                 loaded.model.attention_dp,
                 format_duration_ns(static_cast<double>(loaded.load_wall_ns)).c_str());
  }
  return std::unique_ptr<Api>(std::move(embedded));
}

// One request: streams its text to stdout unless `json`, collects it into *out.
Status generate_one(Api& api, const proto::GenerateRequest& request, bool json, Generation* out) {
  Status stream_error;
  auto on_tokens = [&](const proto::TokenFrame& frame) {
    if (frame.first_index != out->tokens.size() && stream_error.ok()) {
      stream_error = make_error(StatusCode::kParseError,
                                "token frame starts at %u, expected %zu (a gap in the stream)",
                                frame.first_index, out->tokens.size());
    }
    out->tokens.insert(out->tokens.end(), frame.tokens.begin(), frame.tokens.end());
    std::string piece = frame.text;
    if (piece.empty()) {  // a model without a text vocabulary: the ids
      for (uint32_t t : frame.tokens) piece += strformat(" %u", t);
    }
    out->text += piece;
    if (!json) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    return g_interrupted == 0 && stream_error.ok();
  };
  MOE_TRY_ASSIGN(out->done, api.generate(request, on_tokens));
  MOE_TRY(stream_error);
  if (out->done.generated_tokens != out->tokens.size()) {
    return make_error(StatusCode::kParseError,
                      "the generation reports %u tokens but %zu arrived",
                      out->done.generated_tokens, out->tokens.size());
  }
  return Status();
}

void print_figures(const Generation& g) {
  const proto::GenerateMetrics& m = g.done.metrics;
  std::fprintf(stderr,
               "[%u prompt tokens, %u generated, finish: %s; TTFT %s wall / %s modelled, "
               "TPOT %s wall / %s modelled]\n",
               g.done.prompt_tokens, g.done.generated_tokens,
               finish_reason_name(g.done.finish_reason),
               format_duration_ns(static_cast<double>(m.ttft_wall_ns)).c_str(),
               format_duration_ns(m.ttft_modelled_ns).c_str(),
               format_duration_ns(static_cast<double>(m.tpot_wall_ns)).c_str(),
               format_duration_ns(m.tpot_modelled_ns).c_str());
}

void print_json(const GenerateArgs& a, const std::vector<Generation>& generations) {
  JsonWriter w;
  w.begin_object().key("api").value(a.embedded ? "embedded" : "daemon");
  if (a.embedded) w.key("supernode").value(a.supernode);
  w.key("generations").begin_array();
  for (const Generation& g : generations) {
    const proto::GenerateMetrics& m = g.done.metrics;
    w.begin_object()
        .key("prompt").value(g.prompt)
        .key("text").value(g.text)
        .key("tokens").begin_array();
    for (uint32_t t : g.tokens) w.value(t);
    w.end_array()
        .key("prompt_tokens").value(g.done.prompt_tokens)
        .key("generated_tokens").value(g.done.generated_tokens)
        .key("finish_reason").value(finish_reason_name(g.done.finish_reason))
        .key("ttft_wall_ns").value(m.ttft_wall_ns)
        .key("tpot_wall_ns").value(m.tpot_wall_ns)
        .key("total_wall_ns").value(m.total_wall_ns)
        .key("ttft_modelled_ns").value(m.ttft_modelled_ns)
        .key("tpot_modelled_ns").value(m.tpot_modelled_ns)
        .key("total_modelled_ns").value(m.total_modelled_ns)
        .end_object();
  }
  w.end_array().end_object();
  std::printf("%s\n", w.take().c_str());
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  GenerateArgs a;
  bool help = false;
  if (int rc = parse_generate_args(argc, argv, &a, &help); rc != 0 || help) {
    if (help) generate_usage(stdout);
    return rc;
  }
  InterruptGuard interrupt_guard;
  g_interrupted = 0;
  auto api = open_api(a);
  if (!api.ok()) return report_failure("generate", api.status());

  std::vector<Generation> generations;
  for (const std::string& prompt : a.prompts) {
    if (g_interrupted) break;
    proto::GenerateRequest request = a.request;
    request.prompt_text = prompt;
    Generation g;
    g.prompt = prompt;
    Status status = generate_one(**api, request, a.json, &g);
    if (!a.json && !g.text.empty()) std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!status.ok()) return report_failure("generate", status);
    if (!a.json) print_figures(g);
    generations.push_back(std::move(g));
  }
  if (a.json) print_json(a, generations);
  if (g_interrupted) {
    std::fprintf(stderr, "moe generate: interrupted\n");
    return kInterruptedExit;
  }
  return 0;
}

}  // namespace moe::tools
