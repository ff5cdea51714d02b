// `moe describe`: validates a supernode description and prints it, as a summary or as the
// JSON description file (so a preset can be written out, edited and loaded back).
#include <cstdio>
#include <string>

#include "firmware-sim/description.h"
#include "tools/moe/commands.h"

namespace moe::tools {

int cmd_describe(int argc, char** argv) {
  std::string supernode = "cm384";
  bool json = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: moe describe [--supernode NAME|FILE] [--json]\n"
          "  Loads and validates a supernode description (a preset: cm384, n8, n16, n64, or a\n"
          "  JSON file) and prints a summary, or with --json the full description file.\n"
          "  Exit status 1 when the description is refused (the message names the field).\n");
      return 0;
    } else if (arg == "--supernode" && i + 1 < argc) {
      supernode = argv[++i];
    } else if (arg == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "moe describe: unknown or incomplete argument '%s'\n", arg.c_str());
      return 2;
    }
  }
  StatusOr<dev::Topology> t = sim::load_description(supernode);
  if (!t.ok()) {
    std::fprintf(stderr, "moe describe: %s\n", t.status().to_string().c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", sim::description_to_json(*t).c_str());
    return 0;
  }
  std::printf("%s: valid\n%s", supernode.c_str(), sim::describe_topology(*t).c_str());
  return 0;
}

}  // namespace moe::tools
