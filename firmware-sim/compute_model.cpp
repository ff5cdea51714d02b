// Roofline-shaped kernel costs with the calibrated matrix-product efficiencies, and the
// host-copy cost. TFLOPS x 1e3 = flops per ns; GB/s = bytes per ns.
#include "firmware-sim/compute_model.h"

#include <algorithm>

#include "firmware-sim/sim_options.h"

namespace moe::sim {

ComputeModel::ComputeModel(const dev::Topology& t) {
  const dev::ComputeDesc& c = t.compute;
  const double dies = std::max<uint32_t>(1, t.dies_per_npu);
  const double fp32_fraction = options::kFp32RateFraction.get();
  const double vector_fraction = options::kVectorRateFraction.get();
  launch_ns_ = c.launch_ns;
  const double bf16 = c.bf16_tflops * 1e3;
  const double int8 = c.int8_tops * 1e3;
  const auto bf = static_cast<size_t>(dev::Precision::kBf16);
  const auto i8 = static_cast<size_t>(dev::Precision::kInt8);
  const auto f32 = static_cast<size_t>(dev::Precision::kFp32);
  matmul_flops_per_ns_[bf] = bf16 * c.matmul_compute_efficiency;
  matmul_flops_per_ns_[i8] = int8 * c.matmul_compute_efficiency;
  matmul_flops_per_ns_[f32] = bf16 * fp32_fraction * c.matmul_compute_efficiency;
  vector_flops_per_ns_[bf] = bf16 * vector_fraction;
  vector_flops_per_ns_[i8] = bf16 * vector_fraction;
  vector_flops_per_ns_[f32] = bf16 * vector_fraction * 0.5;
  package_bytes_per_ns_ = t.hbm.bandwidth_gbps;
  vector_bytes_per_ns_ = t.hbm.bandwidth_gbps / dies;
  matmul_bytes_per_ns_ = vector_bytes_per_ns_ * c.matmul_bandwidth_efficiency;
  host_bytes_per_ns_ = t.host_link_bandwidth_gbps;
  host_latency_ns_ = options::kHostCopyLatencyNs.get();
}

double ComputeModel::kernel_ns(const dev::KernelWork& k) const {
  const size_t prec = std::min<size_t>(static_cast<size_t>(k.precision), 2);
  const bool matmul = k.kernel_class == dev::KernelClass::kMatmul;
  const double rate = matmul ? matmul_flops_per_ns_[prec] : vector_flops_per_ns_[prec];
  const double bw = matmul ? matmul_bytes_per_ns_ : vector_bytes_per_ns_;
  const double compute = rate > 0 ? k.flops / rate : 0.0;
  const double memory = bw > 0 ? k.hbm_bytes / bw : 0.0;
  return launch_ns_ + std::max(compute, memory);
}

double ComputeModel::host_copy_ns(uint64_t bytes) const {
  return host_latency_ns_ +
         (host_bytes_per_ns_ > 0 ? static_cast<double>(bytes) / host_bytes_per_ns_ : 0.0);
}

double ComputeModel::local_copy_ns(uint64_t bytes) const {
  return package_bytes_per_ns_ > 0 ? 2.0 * static_cast<double>(bytes) / package_bytes_per_ns_
                                   : 0.0;
}

}  // namespace moe::sim
