// What the host CPU can do, detected at run time.
//
// The build never uses -march=native (CI and users run on other CPUs than the build's), so
// a kernel with an AVX2 or AVX-512 variant compiles it with a target attribute and picks it
// at run time through these flags. Detection runs once; thread-safe.
#pragma once

#include <string>

namespace moe {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512_bf16 = false;
};

const CpuFeatures& cpu_features();
// "avx2 fma avx512f ..." for reports.
std::string cpu_features_text();

}  // namespace moe
