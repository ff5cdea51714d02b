// `moe generate`: text generation by the MoE engine on the simulated supernode (functional).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tools/moe/commands.h"
#include "tools/moe/generate_job.h"

namespace moe::tools {
namespace {

void generate_usage(FILE* out) {
  std::fprintf(out,
      "usage: moe generate [--prompt TEXT]... [options]\n"
      "  Places a model on the simulated supernode's NPUs (functional mode: real bytes, kernel\n"
      "  bodies on this host) and generates text, every prompt in one batch.\n"
      "  --prompt TEXT      a prompt (repeatable; default \"The supernode\")\n"
      "  --max-tokens N     tokens to generate per prompt (default 16)\n"
      "  --temperature T    0 = greedy (default), else sampling at temperature T\n"
      "  --top-p P          nucleus sampling threshold in (0, 1] (default 1)\n"
      "  --seed S           sampling seed of the first prompt (prompt i uses S + i; default 0)\n"
      "  --model NAME       a model preset (default builtin; full-size models do not fit a\n"
      "                     functional run: use moe simulate)\n"
      "  --weights PATH     safetensors file or directory (default: seeded random weights)\n"
      "  --weights-seed S   seed of the random weights (default 1)\n"
      "  --supernode S      preset or description file (default cm384)\n"
      "  --npus N           use NPUs 0..N-1 as expert-parallel ranks (default: all)\n"
      "  --dp D             attention data-parallel ranks among them (default 16)\n"
      "  --int8             W8A8 experts and INT8 dispatch (default BF16)\n"
      "  --json             one JSON object on stdout\n");
}

bool parse_u64(const char* flag, const char* v, uint64_t* out) {
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v, &end, 0);
  if (end == v || *end != '\0' || v[0] == '-') {
    std::fprintf(stderr, "moe generate: %s expects a non-negative integer, got '%s'\n", flag, v);
    return false;
  }
  *out = x;
  return true;
}

bool parse_float(const char* flag, const char* v, float* out) {
  char* end = nullptr;
  const float x = std::strtof(v, &end);
  if (end == v || *end != '\0') {
    std::fprintf(stderr, "moe generate: %s expects a number, got '%s'\n", flag, v);
    return false;
  }
  *out = x;
  return true;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  GenerateJob job;
  bool prompts_given = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      generate_usage(stdout);
      return 0;
    }
    if (arg == "--int8") { job.int8 = true; continue; }
    if (arg == "--json") { job.json = true; continue; }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "moe generate: %s needs a value (or is unknown; see --help)\n", arg.c_str());
      return 2;
    }
    const char* v = argv[++i];
    uint64_t u = 0;
    if (arg == "--prompt") {
      if (!prompts_given) job.prompts.clear();
      prompts_given = true;
      if (*v == '\0') {
        std::fprintf(stderr, "moe generate: --prompt must not be empty\n");
        return 2;
      }
      job.prompts.push_back(v);
    } else if (arg == "--max-tokens") {
      if (!parse_u64(arg.c_str(), v, &u)) return 2;
      job.max_new_tokens = static_cast<uint32_t>(u);
    } else if (arg == "--temperature") {
      if (!parse_float(arg.c_str(), v, &job.temperature)) return 2;
    } else if (arg == "--top-p") {
      if (!parse_float(arg.c_str(), v, &job.top_p)) return 2;
    } else if (arg == "--seed") {
      if (!parse_u64(arg.c_str(), v, &job.seed)) return 2;
    } else if (arg == "--weights-seed") {
      if (!parse_u64(arg.c_str(), v, &job.weights_seed)) return 2;
    } else if (arg == "--npus") {
      if (!parse_u64(arg.c_str(), v, &u)) return 2;
      job.npus = static_cast<uint32_t>(u);
    } else if (arg == "--dp") {
      if (!parse_u64(arg.c_str(), v, &u)) return 2;
      job.attention_dp = static_cast<uint32_t>(u);
    } else if (arg == "--model") {
      job.model = v;
    } else if (arg == "--weights") {
      job.weights_path = v;
    } else if (arg == "--supernode") {
      job.supernode = v;
    } else {
      std::fprintf(stderr, "moe generate: unknown argument '%s'\n", arg.c_str());
      generate_usage(stderr);
      return 2;
    }
  }
  return run_generate_job(job);
}

}  // namespace moe::tools
