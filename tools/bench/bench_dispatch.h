// `moe-bench dispatch`: one MoE dispatch + combine configuration on the simulated supernode
// (bench_dispatch.cpp). Called by moe-bench's main for `moe-bench dispatch ...`.
#pragma once

namespace moe::bench {

// argv[0] is "dispatch". Returns the process exit status (0: ran and its check passed,
// 1: ran and the check failed or an error occurred, 2: bad usage).
int dispatch_command(int argc, char** argv);

}  // namespace moe::bench
