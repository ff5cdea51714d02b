// Writing safetensors files, atomically.
//
// Layout: the header is padded with spaces so the data area starts at a multiple of 8 bytes;
// tensors are stored back to back with no gaps (the reference `safetensors` library refuses
// gaps, and files we write must load there: `moe layer-dump` output is meant for other
// frameworks). Alignment: tensors whose byte size is a multiple of 8 come first, in the order
// given, so each starts 8-byte aligned; the rest follow by decreasing element size, so every
// tensor is aligned to at least its element size. (Every weight of the model presets has a
// byte size that is a multiple of 8, so all of them are 8-byte aligned.)
//
// Atomicity: the file is written to "<path>.tmp.<pid>.<n>" in the same directory, flushed
// (fsync) and renamed over `path`; on any failure the temporary file is removed and `path` is
// untouched.
//
// Memory: each tensor's bytes come from a span or from a fill callback called once with a
// buffer of exactly its size, so a caller can stream a model one tensor at a time.
// Thread-safety: no shared state; concurrent writes to different paths are fine.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "models/weights/dtype.h"
#include "runtime/base/status.h"

namespace moe::models {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<uint64_t> shape;
  // Either `bytes` (exactly product(shape) * dtype_size bytes) or `fill`, which must fill the
  // buffer it is given (that many bytes) or return an error that aborts the write.
  std::span<const uint8_t> bytes = {};
  std::function<Status(std::span<uint8_t> out)> fill = nullptr;
};

// Writes `tensors` and `metadata` to `path`. kInvalidArgument for a duplicate or empty name,
// "__metadata__" as a name, or a byte count that does not match the shape; kResourceExhausted
// or kInvalidArgument (naming the path and errno text) when the file system refuses.
Status write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                         const std::vector<std::pair<std::string, std::string>>& metadata = {});

// Writes `text` to `path` atomically (temporary file + rename), for shard index files.
Status write_file_atomically(const std::string& path, std::string_view text);

}  // namespace moe::models
