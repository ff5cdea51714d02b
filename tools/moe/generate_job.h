// The generation job shared by `moe generate` and the last part of `moe run`: open a
// functional Runtime, place a model on the NPUs with the engine, generate text, print it with
// its figures (wall and modelled clocks named).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::tools {

struct GenerateJob {
  std::string supernode = "cm384";
  std::string model = "builtin";
  std::string weights_path;       // safetensors file or directory; empty: seeded random
  uint64_t weights_seed = 1;
  std::vector<std::string> prompts = {"The supernode"};
  uint32_t max_new_tokens = 16;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint32_t npus = 0;              // 0: every NPU of the supernode
  uint32_t attention_dp = 16;     // attention DP ranks (0: every NPU)
  bool int8 = false;              // W8A8 experts and INT8 dispatch
  bool json = false;
};

// 0 on success, 1 on failure (the error printed on stderr).
int run_generate_job(const GenerateJob& job);

}  // namespace moe::tools
