// The public C++ API of the supernode runtime: the one header an application includes.
//
//   #include "runtime/moe.h"
//
//   moe::RuntimeOptions options;                 // supernode "cm384" (default), "n8", a file
//   options.mode = moe::ExecutionMode::kFunctional;
//   auto rt = moe::Runtime::open(options);       // StatusOr: check rt.ok(), read rt.status()
//
//   // Global memory: any byte of any NPU's HBM, by one address.
//   auto buf = (*rt)->memory().allocate_local(/*npu=*/3, /*bytes=*/4096);
//
//   // Data movement, ordered per stream, charged in modelled time:
//   auto copy = moe::Stream::create(**rt, 3, moe::StreamKind::kCopy);     // host <-> HBM
//   auto fabric = moe::Stream::create(**rt, 3, moe::StreamKind::kFabric); // HBM -> any HBM
//   (*copy)->copy_from_host(*buf, host_data, 4096);
//
//   // Kernels: a cost (modelled) and, in functional mode, a body (runs on the host).
//   auto compute = moe::Stream::create(**rt, 3);
//   moe::Event copied;  copied.record(**copy);  (*compute)->wait(copied);
//   (*compute)->launch({.name = "scale", .flops = 4096, .hbm_bytes = 8192,
//                       .body = [&] { /* read and write through memory().translate_host */ }});
//
//   // Collectives over NPUs (all-reduce, all-to-all(v), all-gather, reduce-scatter,
//   // broadcast, barrier), in the runtime's execution mode:
//   auto comm = moe::open_communicator(**rt, npus);
//   auto r = (*comm)->all_reduce(send, recv, count, moe::DataType::kFloat32, moe::ReduceOp::kSum);
//   moe::Event reduced; reduced.record_at(r->end);   // streams may wait for a collective
//
//   // Graphs: capture a step once over many streams, replay it each step.
//   moe::Graph graph; graph.capture_begin(streams); ...launches...; graph.capture_end();
//   graph.replay();
//
//   // Statistics of every layer, and a Chrome trace of modelled and wall time.
//   std::string stats = (*rt)->stats_json();
//
// Errors: every call that can fail returns moe::Status or moe::StatusOr<T>, whose message
// names what was wrong (the NPU, the address, the size asked and available). Misuse (a
// stream of the wrong kind, a copy to an unmapped address, a replay before capture) is an
// error status, never a crash. The detailed contracts are in the headers included below;
// this file only gathers them and adds the few helpers an application needs on top.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "interconnect/collectives.h"
#include "memory/global_memory.h"
#include "runtime/base/status.h"
#include "runtime/event.h"
#include "runtime/graph.h"
#include "runtime/runtime.h"
#include "runtime/stream.h"
#include "runtime/trace.h"

namespace moe {

// The application's names for the runtime's types.
using rt::DeviceInfo;
using rt::Event;
using rt::ExecutionMode;
using rt::Graph;
using rt::HostOptions;
using rt::Kernel;
using rt::Runtime;
using rt::RuntimeOptions;
using rt::Stream;
using rt::StreamKind;
using rt::Trace;
using mem::AllocRequest;
using mem::Allocation;
using mem::GlobalAddr;
using mem::Policy;
using ic::CollectiveResult;
using ic::Communicator;
using ic::DataType;
using ic::ReduceOp;

// A communicator over `npus` (die 0 of each; all NPUs of the runtime when empty), in the
// runtime's execution mode. kFailedPrecondition when the runtime was opened without a
// transport (RuntimeOptions::open_transport); kOutOfRange naming an unknown NPU; the
// communicator's own errors.
StatusOr<std::unique_ptr<Communicator>> open_communicator(Runtime& runtime,
                                                          std::span<const dev::NpuId> npus = {});

// Every NPU of the runtime, in id order.
std::vector<dev::NpuId> all_devices(const Runtime& runtime);

}  // namespace moe
