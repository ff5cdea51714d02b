// Cost functions of the compute and host-copy engines.
//
// Compute (one engine per die, in order): a kernel costs
//   launch_ns + max(flops / rate, hbm_bytes / bandwidth)
// with, per die:
//   kMatmul: rate = rated matrix rate of the precision x matmul_compute_efficiency,
//            bandwidth = HBM bandwidth / dies x matmul_bandwidth_efficiency
//            (weight-streaming products reach ~57% of copy bandwidth, large ones ~90% of
//            peak: /work/shared/calibration);
//   kVector: rate = BF16 rate x SIM_VECTOR_RATE_FRACTION (half that for FP32),
//            bandwidth = HBM bandwidth / dies.
// Rated matrix rates: BF16 bf16_tflops, INT8 int8_tops, FP32 bf16_tflops x
// SIM_FP32_RATE_FRACTION. A die owns its share of the package's HBM bandwidth.
// Host copy (one engine per NPU, in order): latency + bytes / host_link_bandwidth_gbps.
// Units: ns, bytes, flops. Thread-safety: immutable after construction.
#pragma once

#include "runtime/device/topology.h"
#include "runtime/device/work.h"

namespace moe::sim {

class ComputeModel {
 public:
  // Reads the rate fractions and host-copy latency from the options table.
  explicit ComputeModel(const dev::Topology& topology);

  // Modelled duration of a kernel on one die, in ns (launch included).
  double kernel_ns(const dev::KernelWork& kernel) const;
  // Modelled duration of one host copy, in ns.
  double host_copy_ns(uint64_t bytes) const;
  // Modelled duration of a copy inside one NPU's HBM (read + write at HBM bandwidth).
  double local_copy_ns(uint64_t bytes) const;

  double launch_ns() const { return launch_ns_; }

 private:
  double launch_ns_ = 0;
  double matmul_flops_per_ns_[3] = {};  // by Precision
  double vector_flops_per_ns_[3] = {};
  double matmul_bytes_per_ns_ = 0;
  double vector_bytes_per_ns_ = 0;
  double package_bytes_per_ns_ = 0;
  double host_bytes_per_ns_ = 0;
  double host_latency_ns_ = 0;
};

}  // namespace moe::sim
