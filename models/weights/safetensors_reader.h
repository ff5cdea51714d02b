// Reading safetensors files: validate everything, then hand out views of tensor bytes.
//
// Format: an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
//   {"<name>": {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string>", ...}}   (metadata optional)
// then the data area; offsets are relative to the data area's start (8 + N).
//
// What is checked before anything is trusted (a refusal is kParseError or kInvalidArgument
// naming the file, the tensor and what was expected versus found):
// - the file holds at least the 8 length bytes; N <= kMaxSafetensorsHeaderBytes and 8 + N <=
//   the file size;
// - the header is strict JSON (models/weights/json_parse.h), an object whose entries are
//   objects with exactly dtype / shape / data_offsets; __metadata__ maps strings to strings;
// - the dtype is one the format names; shape entries are integers (at most kMaxTensorRank of
//   them) whose product times the dtype size does not overflow and equals end - begin;
// - begin <= end <= the data area size; tensors, sorted by offset, do not overlap; no bytes
//   follow the last tensor (gaps between tensors are allowed, for alignment); names are
//   unique and non-empty.
// Truncated or corrupt files are refused, never read past their end (tested under ASAN with
// every truncation length and random byte flips).
//
// Ownership: SafetensorsFile maps the file read-only (mmap) and keeps the mapping alive as
// long as it, or a copy of it, lives; spans from data() are valid that long. The file must not
// be truncated by someone else while mapped (that would be a SIGBUS, as for any mmap reader).
// Thread-safety: a SafetensorsFile is immutable after open(); const methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "models/weights/dtype.h"
#include "runtime/base/status.h"

namespace moe::models {

inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;  // as the reference library
inline constexpr uint32_t kMaxTensorRank = 8;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // byte offsets in the data area, [begin, end)
  uint64_t end = 0;
  uint64_t num_elements() const;
  uint64_t size_bytes() const { return end - begin; }
};

// "[7168, 2048]"
std::string shape_to_string(std::span<const uint64_t> shape);

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in header order
  std::vector<std::pair<std::string, std::string>> metadata;
  uint64_t data_start = 0;  // byte offset of the data area in the file (8 + N)
};

// Parses and validates the header of a whole file held in `file_bytes`. `file_label` names the
// file in messages.
StatusOr<SafetensorsHeader> parse_safetensors(std::span<const uint8_t> file_bytes,
                                              std::string_view file_label);

class SafetensorsFile {
 public:
  SafetensorsFile() = default;  // empty: no tensors
  // Maps and validates `path`. kNotFound if it cannot be opened; kParseError /
  // kInvalidArgument for a malformed file.
  static StatusOr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::vector<std::pair<std::string, std::string>>& metadata() const {
    return header_.metadata;
  }
  // The tensor named `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const;
  // The bytes of `info` (one of tensors()): size_bytes() bytes.
  std::span<const uint8_t> data(const TensorInfo& info) const;
  uint64_t file_bytes() const { return file_bytes_; }

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  uint64_t file_bytes_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors()
};

}  // namespace moe::models
