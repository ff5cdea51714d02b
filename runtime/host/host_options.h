// The host-placement options of the runtime layer (NUMA-affine dispatch threads and staging
// buffers). Each is overridable from the environment as MOE_<NAME>; `moe info --config`
// lists them. Read at setup (PlacementOptions::from_options, HostTopology::from_synthetic),
// never in a data path.
#pragma once

#include <cstdint>

#include "runtime/base/options.h"

namespace moe::rt::host::options {

inline const opt::Option<int64_t> kNpusPerThread{
    "runtime", "RT_HOST_NPUS_PER_THREAD", 1,
    "NPUs fed by one host dispatch thread; a thread's NPUs always share one supernode CPU"};

inline const opt::Option<int64_t> kCoresPerNode{
    "runtime", "RT_HOST_CORES_PER_NODE", 0,
    "at most this many cores of each host NUMA node carry dispatch threads (the first ones "
    "in hwloc's logical order); 0 = every core of the node"};

inline const opt::Option<int64_t> kSyntheticMaxPus{
    "runtime", "RT_HOST_SYNTHETIC_MAX_PUS", 8192,
    "largest synthetic host (in PUs) accepted by --synthetic; hwloc takes seconds and "
    "gigabytes beyond ~16K PUs"};

}  // namespace moe::rt::host::options
