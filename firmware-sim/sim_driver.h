// The simulated supernode: a dev::Driver implemented in host memory with a timing model.
//
// create_driver() takes a validated, finalized Topology (from presets.h or description.h)
// and returns a driver whose HBM is host memory reserved lazily, whose engines keep virtual
// clocks, and whose faults are deterministic from `seed`.
//
// What the simulator adds to the contract of runtime/device/driver.h:
//  - HBM (hbm.h): an NPU maps host address space for its whole capacity on its first
//    reservation (MAP_NORESERVE: no memory until written; lower the window with
//    MOE_SIM_HBM_VA_WINDOW_BYTES if the host cannot map capacity x NPUs). Committed pages
//    read as zero; decommit returns their memory to the host. NpuState.hbm_resident_bytes
//    is measured with mincore() over the committed pages (the host memory really in use);
//    NpuState.hbm_errors counts operations that failed on an HBM error of that NPU.
//  - Queues: a descriptor holds a ring slot from queue_submit until its completion is
//    polled. Timing-mode descriptors (transfers and host copies with move_payload = false,
//    kernels without a body) touch no HBM, so their addresses need only lie inside the NPU's
//    capacity; everything that moves bytes or runs an atomic needs committed HBM. A kernel
//    body may submit to any queue and ring other queues, but not ring its own.
//  - Engines (compute_model.h, fabric_model.h): compute per (NPU, die) and host copy per NPU
//    run their queues' work in order; an NPU's fabric engine issues one descriptor every
//    SIM_FABRIC_ISSUE_NS and keeps any number in flight. A transfer inside one NPU is an
//    HBM copy (no packets); a transfer whose source is another NPU (a get) first pays the
//    request's route latency. Atomics are one request packet on their plane and one
//    response back; kStore is applied no earlier than the end of the queue's earlier
//    transfers to that NPU; the completion's end is the response's arrival. Request packets
//    are subject to faults; responses are not.
//  - Faults (faults.h): plane or link down before a transfer starts: striping skips that
//    plane for the routes it breaks (kPlaneDown / kLinkDown only if nothing is left);
//    going down during a transfer: the packets that would leave afterwards are lost
//    (their payload is not written). Drops and corruptions draw per packet from a hash of
//    (seed, fault id, queue id, transfer number in the queue, packet index). An NPU lost
//    fails every operation touching it at once (kNpuLost) and refuses reserve, commit,
//    map and queue_create (release and decommit still work). An HBM error fails the
//    transfers, device-to-host copies and atomics that read its range (kHbmError).
// Statistics: sim.* counters (sim_stats.h). Options: sim_options.h.
#pragma once

#include <cstdint>
#include <memory>

#include "runtime/base/status.h"
#include "runtime/device/driver.h"
#include "runtime/device/topology.h"

namespace moe::sim {

struct SimConfig {
  uint64_t seed = 1;            // drives every injected packet fault
  uint32_t queue_depth = 4096;  // default ring size of a queue
};

// kInvalidArgument for a topology without NPUs, HBM or packet size; kUnsupported for one the
// fabric model cannot route (see FabricModel::create). The topology is finalized if its
// derived indexes are missing.
StatusOr<std::unique_ptr<dev::Driver>> create_driver(dev::Topology topology,
                                                     const SimConfig& config = {});

}  // namespace moe::sim
