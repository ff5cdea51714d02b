// Kernel costs: what one kernel launch asks of an NPU die, as the runtime launches it.
//
// A KernelCost is the cost part of an rt::Kernel (runtime/stream.h): FLOPs, HBM bytes read
// plus written, the engine class and the precision. The simulator turns it into modelled
// time (firmware-sim/compute_model.h): launch + max(flops / rate, bytes / bandwidth), where
// a kMatmul kernel gets the calibrated fractions of the rated figures (weight-streaming
// products reach ~57% of HBM bandwidth, large ones ~90% of the matrix rate:
// ../shared/calibration). So the cost functions here count true FLOPs and true bytes and
// choose the class; the calibration curve's shape (flat while weight-bound, a knee, then
// compute-bound) comes from that roofline over the counted figures.
//
// The functions (one file per kernel family: cost_norm, cost_rope, cost_attention,
// cost_linear, cost_moe, cost_misc) are pure: shapes in, a cost out, no config, so the
// engine's functional path attaches the same cost to its kernel bodies. cost_layer.h builds
// a whole layer's list from a ModelConfig.
//
// Conventions: activations are BF16 (2 bytes) in HBM; FP32 accumulation is internal to a
// kernel. "rows" are tokens. Units: flops, bytes.
#pragma once

#include <cstdint>
#include <string_view>

#include "runtime/device/topology.h"
#include "runtime/device/work.h"
#include "runtime/stream.h"

namespace moe::models::cost {

inline constexpr double kActivationBytes = 2.0;  // BF16

struct KernelCost {
  std::string_view name;  // a string literal (outlives every use)
  double flops = 0;
  double hbm_bytes = 0;
  dev::KernelClass kernel_class = dev::KernelClass::kVector;
  dev::Precision precision = dev::Precision::kBf16;

  KernelCost& operator+=(const KernelCost& o) {
    flops += o.flops;
    hbm_bytes += o.hbm_bytes;
    return *this;
  }
};

// Bytes of one stored weight element: BF16 2, INT8 1, FP32 4.
double weight_bytes_per_elem(dev::Precision precision);

// The rt::Kernel to launch (no body: timing mode; the functional path adds its body).
rt::Kernel to_kernel(const KernelCost& cost);

// The modelled duration of a kMatmul cost on one die of `topology`, launch included, by the
// same roofline as the simulator's compute model (for tests and reports; the simulation
// itself always asks the runtime). Precondition: kernel_class == kMatmul.
double matmul_ns(const KernelCost& cost, const dev::Topology& topology);
// True when a kMatmul cost is bound by HBM bytes rather than by FLOPs on `topology`.
bool matmul_bandwidth_bound(const KernelCost& cost, const dev::Topology& topology);

}  // namespace moe::models::cost
