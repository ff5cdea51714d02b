// Subcommands of the `moe` CLI; each parses its own arguments (argv after the command name)
// and returns the process exit status (0 ok, 1 failure, 2 bad usage).
#pragma once

namespace moe::tools {

int cmd_run(int argc, char** argv);
int cmd_describe(int argc, char** argv);
int cmd_simulate(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_layer_dump(int argc, char** argv);

// Requests to the moed daemon (cmd_client.cpp; `generate` talks to it too, cmd_generate.cpp).
int cmd_status(int argc, char** argv);
int cmd_load(int argc, char** argv);
int cmd_unload(int argc, char** argv);
int cmd_metrics(int argc, char** argv);
int cmd_fault(int argc, char** argv);
int cmd_drain(int argc, char** argv);
int cmd_shutdown(int argc, char** argv);

}  // namespace moe::tools
