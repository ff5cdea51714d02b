// moe: the command-line front end. Subcommands grow with the product; each has --help.
#include <cstdio>
#include <cstring>
#include <string>

#include "runtime/base/options.h"
#include "tools/lib/client/client.h"
#include "tools/moe/commands.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: moe <command> [options]     (moe <command> --help for each)\n"
               "on the simulated supernode, in this process:\n"
               "  run [--supernode S]      the main job on the simulated supernode\n"
               "  describe [--supernode S] [--json]  validate and print a supernode description\n"
               "  simulate [--model M] ... one model step at full size, timing mode\n"
               "  layer-dump --model M --tokens T --out DIR ...  one MoE layer's input, weights,\n"
               "                           routing and output as safetensors, for outside checks\n"
               "through the moed daemon (--socket PATH; default %s):\n"
               "  status [--json] [--no-topology]  version, state, requests, models, supernode\n"
               "  load [CONFIG] [--weights PATH] [--int8] [--npus N] [--attention-dp N] [--json]\n"
               "  unload [MODEL]\n"
               "  generate \"PROMPT\"... [--max-new-tokens N] [--temperature T] [--top-p P]\n"
               "           [--seed N] [--json]   streams text; --embedded runs it in this process\n"
               "  metrics [--prometheus]   the daemon's metrics (JSON by default)\n"
               "  fault KIND --target N ... | fault --clear ID   admin: inject or clear a fault\n"
               "  drain                    admin: stop admitting generations, wait for the rest\n"
               "  shutdown [--no-drain]    admin: stop the daemon\n"
               "other:\n"
               "  info --config [--json]   every option: name, value, default, help\n"
               "  help                     this text\n"
               "Options are set from the environment as MOE_<NAME>=value.\n",
               moe::default_socket_path().c_str());
}

int cmd_info(int argc, char** argv) {
  bool config = false, json = false;
  for (int i = 0; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--config")) config = true;
    else if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--help")) {
      std::printf("usage: moe info --config [--json]\n  Prints every option of every layer.\n");
      return 0;
    } else {
      std::fprintf(stderr, "moe info: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!config) {
    std::fprintf(stderr, "moe info: say what to show (--config)\n");
    return 2;
  }
  std::fputs(json ? (moe::opt::options_to_json() + "\n").c_str() : moe::opt::options_to_text().c_str(), stdout);
  moe::Status env = moe::opt::check_environment();
  if (!env.ok()) std::fprintf(stderr, "moe: warning: %s\n", env.to_string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "info") return cmd_info(argc - 2, argv + 2);
  if (cmd == "run") return moe::tools::cmd_run(argc - 2, argv + 2);
  if (cmd == "generate") return moe::tools::cmd_generate(argc - 2, argv + 2);
  if (cmd == "simulate") return moe::tools::cmd_simulate(argc - 2, argv + 2);
  if (cmd == "layer-dump") return moe::tools::cmd_layer_dump(argc - 2, argv + 2);
  if (cmd == "describe") return moe::tools::cmd_describe(argc - 2, argv + 2);
  if (cmd == "status") return moe::tools::cmd_status(argc - 2, argv + 2);
  if (cmd == "load") return moe::tools::cmd_load(argc - 2, argv + 2);
  if (cmd == "unload") return moe::tools::cmd_unload(argc - 2, argv + 2);
  if (cmd == "metrics") return moe::tools::cmd_metrics(argc - 2, argv + 2);
  if (cmd == "fault") return moe::tools::cmd_fault(argc - 2, argv + 2);
  if (cmd == "drain") return moe::tools::cmd_drain(argc - 2, argv + 2);
  if (cmd == "shutdown") return moe::tools::cmd_shutdown(argc - 2, argv + 2);
  std::fprintf(stderr, "moe: unknown command '%s'\n", cmd.c_str());
  usage(stderr);
  return 2;
}
