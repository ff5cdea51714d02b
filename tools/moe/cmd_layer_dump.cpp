// `moe layer-dump`: writes one MoE layer's input, weights, routing and output as safetensors
// (models/moe/layer_dump.h) so another framework can recompute the layer. Parses the flags
// (exit 2 naming the flag), runs the dump (exit 1 with the refusal's message), prints where
// the files went; long weight writes print progress on stderr every ~10%.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "models/model_config.h"
#include "models/moe/layer_dump.h"
#include "runtime/base/strformat.h"
#include "tools/moe/commands.h"

namespace moe::tools {
namespace {

void layer_dump_usage(FILE* out) {
  std::fprintf(out,
      "usage: moe layer-dump --model NAME --seed S --tokens T --out DIR [--layer L]\n"
      "                      [--precision bf16|int8] [--force] [--allow-large]\n"
      "  Runs one MoE layer of a model with random weights (seeded) on T seeded tokens and\n"
      "  writes, into DIR: input.safetensors (x), weights.safetensors (the layer's router and\n"
      "  expert weights under their Hugging Face names), router.safetensors (logits, topk_ids,\n"
      "  topk_weights, expert_counts), output.safetensors (y), manifest.json and README.txt\n"
      "  (the formula and tolerance a checker in PyTorch or NumPy should use).\n"
      "  --model NAME        a preset: %s\n"
      "  --seed S            weights and input seed (default 0)\n"
      "  --tokens T          tokens, 1..%u\n"
      "  --out DIR           created if missing; refused if it exists and is not empty\n"
      "  --layer L           an MoE layer (default: the first, num_dense_layers)\n"
      "  --precision P       bf16 (default) or int8 (W8A8 experts)\n"
      "  --force             write into a non-empty DIR (replaces the dump's own files only)\n"
      "  --allow-large       dump layers with more than %s of weights (a full-size\n"
      "                      DeepSeek-V3 layer is about 21 GiB and needs ~3x that in memory)\n"
      "  Exit status: 0 ok, 1 the dump was refused or failed, 2 bad arguments.\n",
      [] {
        std::string s;
        for (const std::string& n : models::model_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
      }().c_str(),
      models::kMaxLayerDumpTokens,
      format_bytes(double(models::kDefaultMaxDumpWeightBytes)).c_str());
}

bool parse_u64(const char* text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0' || text[0] == '-' || errno == ERANGE) return false;
  *out = v;
  return true;
}

}  // namespace

int cmd_layer_dump(int argc, char** argv) {
  models::LayerDumpRequest r;
  r.model.clear();
  bool tokens_given = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      layer_dump_usage(stdout);
      return 0;
    }
    if (arg == "--force") {
      r.force = true;
      continue;
    }
    if (arg == "--allow-large") {
      r.allow_large = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "moe layer-dump: %s needs a value (or is unknown); see --help\n",
                   arg.c_str());
      return 2;
    }
    const char* v = argv[++i];
    auto bad = [&](const char* what) {
      std::fprintf(stderr, "moe layer-dump: %s '%s': %s\n", arg.c_str(), v, what);
      return 2;
    };
    uint64_t n = 0;
    if (arg == "--model") {
      r.model = v;
    } else if (arg == "--seed") {
      if (!parse_u64(v, &r.seed)) return bad("not an unsigned integer");
    } else if (arg == "--tokens") {
      if (!parse_u64(v, &n) || n == 0 || n > models::kMaxLayerDumpTokens)
        return bad(strformat("not an integer in 1..%u", models::kMaxLayerDumpTokens).c_str());
      r.num_tokens = static_cast<uint32_t>(n);
      tokens_given = true;
    } else if (arg == "--out") {
      r.out_dir = v;
    } else if (arg == "--layer") {
      if (!parse_u64(v, &n) || n > 0xffffffffull) return bad("not a layer index");
      r.layer = static_cast<uint32_t>(n);
    } else if (arg == "--precision") {
      const std::string p = v;
      if (p == "bf16") r.precision = models::ExpertPrecision::kBf16;
      else if (p == "int8") r.precision = models::ExpertPrecision::kInt8;
      else return bad("expected bf16 or int8");
    } else {
      std::fprintf(stderr, "moe layer-dump: unknown argument '%s'; see --help\n", arg.c_str());
      return 2;
    }
  }
  if (r.model.empty() || !tokens_given || r.out_dir.empty()) {
    std::fprintf(stderr, "moe layer-dump: --model, --tokens and --out are required; see --help\n");
    return 2;
  }
  int last_decile = -1;
  const char* last_stage = "";
  r.progress = [&](const models::LayerDumpProgress& p) {
    // Only long dumps report: quiet below 256 MiB.
    if (p.bytes_total < (256ull << 20) || p.bytes_total == 0) return;
    const int decile = static_cast<int>(10 * p.bytes_done / p.bytes_total);
    if (decile == last_decile && p.stage == last_stage) return;
    last_decile = decile;
    last_stage = p.stage;
    std::fprintf(stderr, "moe layer-dump: %s: %s of %s (%u/%u tensors)\n", p.stage,
                 format_bytes(double(p.bytes_done)).c_str(),
                 format_bytes(double(p.bytes_total)).c_str(), p.tensors_done, p.tensors_total);
  };
  auto done = models::dump_moe_layer(r);
  if (!done.ok()) {
    std::fprintf(stderr, "moe layer-dump: %s\n", done.status().to_string().c_str());
    return 1;
  }
  std::printf("moe layer-dump: %s layer %u, %u tokens, %s of weights, into %s:\n",
              done->model.c_str(), done->layer, done->num_tokens,
              format_bytes(double(done->weight_bytes)).c_str(), done->out_dir.c_str());
  for (const std::string& f : done->files) std::printf("  %s\n", f.c_str());
  std::printf("  (README.txt states the formula and the tolerance to check against)\n");
  return 0;
}

}  // namespace moe::tools
