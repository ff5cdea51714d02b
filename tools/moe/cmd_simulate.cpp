// `moe simulate`: one decode step or one prefill of a reference model at full size, in
// timing mode on the simulated supernode (models/simulate.h). Parses and checks the flags
// (exit 2 with a message naming the flag), runs, prints a labelled report or one JSON object.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "models/model_config.h"
#include "models/simulate.h"
#include "tools/moe/commands.h"

namespace moe::tools {
namespace {

void simulate_usage(FILE* out) {
  std::fprintf(out,
      "usage: moe simulate [--model NAME] [--phase decode|prefill] [--npus N] [--ep E]\n"
      "                    [--batch-per-npu B] [--kv-len L] [--prefill-len S] [--precision bf16|int8]\n"
      "                    [--mtp 0|1] [--mtp-accept P] [--microbatches 1|2] [--supernode S]\n"
      "                    [--chunk-tokens C] [--moe-layers K] [--completion auto|flags|barrier]\n"
      "                    [--attention-split 1|2] [--seed X] [--json]\n"
      "  Models one decode step (or one prefill) of a reference model at full size on the\n"
      "  simulated supernode, in timing mode: no payload; kernel costs on the runtime's streams,\n"
      "  tokens moved by the real fused dispatch/combine protocol, seeded uniform routing.\n"
      "  Prints the step time (decode: and TPOT), tokens/s per NPU, the time per layer part\n"
      "  (attention, dispatch, experts, combine, other), the share of communication left\n"
      "  un-overlapped, and the HBM budget per NPU.\n"
      "\n"
      "  --model NAME        a preset (default deepseek-v3): %s\n"
      "  --phase P           decode (one step of every sequence; default) or prefill (whole prompts)\n"
      "  --npus N            NPUs in attention data parallel (default: every NPU of the supernode)\n"
      "  --ep E              NPUs per expert-parallel group; must divide N (default N); one group is\n"
      "                      simulated, the others run the same shapes on disjoint NPUs\n"
      "  --batch-per-npu B   decode: sequences per NPU (default 24); prefill: prompts per NPU (default 2)\n"
      "  --kv-len L          decode: cached positions per sequence (default 4096)\n"
      "  --prefill-len S     prefill: prompt tokens per sequence (default 4096)\n"
      "  --precision P       linear layers: int8 (W8A8, default) or bf16; INT8 also dispatches INT8\n"
      "  --mtp 0|1           decode: verify one draft token per step (multi-token prediction)\n"
      "  --mtp-accept P      acceptance of the draft, in [0,1] (default 0.7); TPOT = step / (1 + P)\n"
      "  --microbatches 1|2  units in flight: 2 overlaps one's communication with the other's\n"
      "                      compute (decode: the batch is halved, so every weight is read twice)\n"
      "  --attention-split 1|2  attention inside an NPU: 1 (default) data-parallel over its dies\n"
      "                      (each die holds a copy of the attention weights and runs whole blocks\n"
      "                      for half of the sequences); 2 heads split over the dies (each die\n"
      "                      holds half of the weights and runs half of the heads for every\n"
      "                      sequence; the partial outputs are summed on chip)\n"
      "  --supernode S       cm384 (default), n8, n16, n64 or a description file\n"
      "  --chunk-tokens C    prefill: tokens per NPU in one dispatch (default 512)\n"
      "  --moe-layers K      MoE layers simulated, the rest scaled from them (default 2; 0: all)\n"
      "  --completion M      how dispatch completes: auto (default; the buffer picks from its\n"
      "                      config), flags (per-source flags) or barrier\n"
      "  --seed X            routing draws (default 1)\n"
      "  --json              one JSON object instead of the report\n"
      "\n"
      "  Every time is on the modelled clock except the simulation's own wall time.\n"
      "  Exit status: 0 ok, 1 the simulation failed, 2 bad arguments.\n"
      "  Examples:\n"
      "    moe simulate --model deepseek-v3 --phase decode --batch-per-npu 24 --kv-len 4096 --precision int8\n"
      "    moe simulate --phase decode --batch-per-npu 96 --mtp 1 --mtp-accept 0.7 --json\n"
      "    moe simulate --phase prefill --ep 32 --batch-per-npu 2 --prefill-len 4096\n",
      [] {
        std::string s;
        for (const std::string& n : models::model_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
      }().c_str());
}

// The flags that take a value (every other one but --json and --help is unknown).
bool takes_value(const std::string& flag) {
  static const char* const kFlags[] = {
      "--model", "--phase", "--npus", "--ep", "--batch-per-npu", "--kv-len", "--prefill-len",
      "--precision", "--mtp", "--mtp-accept", "--microbatches", "--supernode", "--chunk-tokens",
      "--moe-layers", "--completion", "--seed", "--attention-split"};
  for (const char* f : kFlags)
    if (flag == f) return true;
  return false;
}

bool parse_u32(const char* text, uint32_t* out) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0' || text[0] == '-' || v > 0xffffffffull) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

}  // namespace

int cmd_simulate(int argc, char** argv) {
  models::SimulateOptions o;
  std::string model = "deepseek-v3";
  bool json = false, batch_given = false;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      simulate_usage(stdout);
      return 0;
    }
    if (arg == "--json") {
      json = true;
      continue;
    }
    if (!takes_value(arg)) {
      std::fprintf(stderr, "moe simulate: unknown argument '%s'; see --help\n", arg.c_str());
      return 2;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "moe simulate: %s needs a value; see --help\n", arg.c_str());
      return 2;
    }
    const char* v = argv[++i];
    auto bad = [&](const char* what) {
      std::fprintf(stderr, "moe simulate: %s '%s': %s\n", arg.c_str(), v, what);
      return 2;
    };
    uint32_t u = 0;
    if (arg == "--model") {
      model = v;
    } else if (arg == "--phase") {
      if (std::string(v) == "decode") o.phase = models::Phase::kDecode;
      else if (std::string(v) == "prefill") o.phase = models::Phase::kPrefill;
      else return bad("expected decode or prefill");
    } else if (arg == "--precision") {
      if (std::string(v) == "int8") o.precision = dev::Precision::kInt8;
      else if (std::string(v) == "bf16") o.precision = dev::Precision::kBf16;
      else return bad("expected bf16 or int8");
    } else if (arg == "--completion") {
      if (std::string(v) == "auto") o.completion = ic::DispatchCompletion::kAuto;
      else if (std::string(v) == "flags") o.completion = ic::DispatchCompletion::kPerSourceFlags;
      else if (std::string(v) == "barrier") o.completion = ic::DispatchCompletion::kBarrier;
      else return bad("expected auto, flags or barrier");
    } else if (arg == "--supernode") {
      o.supernode = v;
    } else if (arg == "--mtp-accept") {
      char* end = nullptr;
      o.mtp_accept = std::strtod(v, &end);
      if (end == v || *end != '\0' || !(o.mtp_accept >= 0 && o.mtp_accept <= 1))
        return bad("expected a number in [0, 1]");
    } else if (arg == "--seed") {
      char* end = nullptr;
      o.seed = std::strtoull(v, &end, 10);
      if (end == v || *end != '\0' || v[0] == '-') return bad("expected an unsigned integer");
    } else if (!parse_u32(v, &u)) {
      return bad("expected an unsigned integer");
    } else if (arg == "--npus") {
      if (u == 0) return bad("must be >= 1");
      o.npus = u;
    } else if (arg == "--ep") {
      if (u == 0) return bad("must be >= 1");
      o.ep = u;
    } else if (arg == "--batch-per-npu") {
      if (u == 0) return bad("must be >= 1 (a sequence per NPU at least)");
      o.batch_per_npu = u;
      batch_given = true;
    } else if (arg == "--kv-len") {
      if (u == 0) return bad("must be >= 1");
      o.kv_len = u;
    } else if (arg == "--prefill-len") {
      if (u == 0) return bad("must be >= 1");
      o.prefill_len = u;
    } else if (arg == "--mtp") {
      if (u > 1) return bad("expected 0 or 1");
      o.mtp = u;
    } else if (arg == "--microbatches") {
      if (u < 1 || u > 2) return bad("expected 1 or 2");
      o.microbatches = u;
    } else if (arg == "--chunk-tokens") {
      if (u == 0) return bad("must be >= 1");
      o.prefill_chunk_tokens = u;
    } else if (arg == "--attention-split") {
      if (u < 1 || u > 2) return bad("expected 1 (data-parallel over the dies) or 2 (heads split over the dies)");
      o.attention_split = u;
    } else if (arg == "--moe-layers") {
      o.moe_layers = u;
    } else {
      std::fprintf(stderr, "moe simulate: unknown argument '%s'; see --help\n", arg.c_str());
      return 2;
    }
  }
  if (!batch_given) o.batch_per_npu = o.phase == models::Phase::kDecode ? 24 : 2;
  StatusOr<models::ModelConfig> config = models::model_config(model);
  if (!config.ok()) {
    std::fprintf(stderr, "moe simulate: --model: %s\n", config.status().message().c_str());
    return 2;
  }
  StatusOr<models::SimulateResult> r = models::simulate(*config, o);
  if (!r.ok()) {
    const bool usage = r.status().code() == StatusCode::kInvalidArgument ||
                       r.status().code() == StatusCode::kNotFound;
    std::fprintf(stderr, "moe simulate: %s\n", r.status().to_string().c_str());
    return usage ? 2 : 1;
  }
  if (json) std::printf("%s\n", models::simulate_result_to_json(*r).c_str());
  else std::fputs(models::simulate_result_to_text(*r).c_str(), stdout);
  return 0;
}

}  // namespace moe::tools
