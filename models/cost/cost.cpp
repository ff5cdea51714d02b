// Shared helpers of the cost functions: precision sizes, the Kernel conversion, and the
// roofline estimate (the simulator's compute-model formula for kMatmul; kept in step with
// firmware-sim/compute_model.cpp, which this layer may not include: a test launches a cost
// on a timing-mode stream and checks the two agree).
#include "models/cost/cost.h"

#include <algorithm>

namespace moe::models::cost {

double weight_bytes_per_elem(dev::Precision precision) {
  switch (precision) {
    case dev::Precision::kInt8: return 1.0;
    case dev::Precision::kFp32: return 4.0;
    case dev::Precision::kBf16: break;
  }
  return 2.0;
}

rt::Kernel to_kernel(const KernelCost& cost) {
  rt::Kernel k;
  k.name = cost.name;
  k.flops = cost.flops;
  k.hbm_bytes = cost.hbm_bytes;
  k.kernel_class = cost.kernel_class;
  k.precision = cost.precision;
  return k;
}

namespace {

void matmul_terms(const KernelCost& cost, const dev::Topology& t, double* compute_ns,
                  double* memory_ns) {
  const dev::ComputeDesc& c = t.compute;
  double rate = c.bf16_tflops;  // per die, 10^12 / s = 10^3 per ns
  if (cost.precision == dev::Precision::kInt8) rate = c.int8_tops;
  const double flops_per_ns = rate * 1e3 * c.matmul_compute_efficiency;
  const double dies = std::max<uint32_t>(1, t.dies_per_npu);
  const double bytes_per_ns = t.hbm.bandwidth_gbps / dies * c.matmul_bandwidth_efficiency;
  *compute_ns = flops_per_ns > 0 ? cost.flops / flops_per_ns : 0.0;
  *memory_ns = bytes_per_ns > 0 ? cost.hbm_bytes / bytes_per_ns : 0.0;
}

}  // namespace

double matmul_ns(const KernelCost& cost, const dev::Topology& topology) {
  double compute = 0, memory = 0;
  matmul_terms(cost, topology, &compute, &memory);
  return topology.compute.launch_ns + std::max(compute, memory);
}

bool matmul_bandwidth_bound(const KernelCost& cost, const dev::Topology& topology) {
  double compute = 0, memory = 0;
  matmul_terms(cost, topology, &compute, &memory);
  return memory > compute;
}

}  // namespace moe::models::cost
