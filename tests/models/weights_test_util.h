// Helpers for the safetensors and weight-store tests: a temporary directory removed at the
// end of the test, and whole-file reads and writes.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace moe::models::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("moe-weights-test-" + std::to_string(getpid()) + "-" +
             std::to_string(counter.fetch_add(1)));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_all(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and data bytes (the header is not padded).
inline std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

}  // namespace moe::models::testing

#include "models/model_config.h"

namespace moe::models::testing {

// A small MoE config shaped like the built-in one (GQA, DeepSeek-style routing with bias, a
// shared expert, one dense layer) but quick to materialise in full.
inline ModelConfig tiny_config() {
  ModelConfig c = model_config("builtin").value();
  c.name = "tiny";
  c.num_layers = 3;
  c.hidden = 32;
  c.vocab_size = 64;
  c.dense_intermediate = 48;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.num_experts = 8;
  c.top_k = 2;
  c.num_groups = 4;
  c.topk_groups = 2;
  c.expert_intermediate = 16;
  return c;
}

}  // namespace moe::models::testing
