// Subcommands of the `moe` CLI; each parses its own arguments (argv after the command name)
// and returns the process exit status (0 ok, 1 failure, 2 bad usage).
#pragma once

namespace moe::tools {

int cmd_run(int argc, char** argv);
int cmd_describe(int argc, char** argv);
int cmd_simulate(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_layer_dump(int argc, char** argv);

}  // namespace moe::tools
