// The models layer's options (one table for the layer). Each is overridable from the
// environment as MOE_<NAME>; `moe info --config` lists them. Read at setup (the first use of
// the shared kernel workers), never in a data path.
#pragma once

#include <cstdint>

#include "runtime/base/options.h"

namespace moe::models::options {

inline const opt::Option<int64_t> kKernelThreads{
    "models", "KERNEL_THREADS", 0,
    "host threads that run independent pieces of a functional kernel concurrently (the "
    "experts of a bank, each with a single-threaded BLAS); 0 = one per CPU this process may "
    "run on, 1 = run serially with the BLAS's own threading"};

}  // namespace moe::models::options
