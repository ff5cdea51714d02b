// Safetensors writer: plan the layout from shapes alone, write the header, then stream each
// tensor's bytes through one reusable buffer into a temporary file that is renamed into place.
#include "models/weights/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "runtime/base/json.h"
#include "runtime/base/check.h"

namespace moe::models {
namespace {

// An open temporary file that is removed unless committed.
class TempFile {
 public:
  explicit TempFile(const std::string& final_path) : final_(final_path) {
    static std::atomic<uint64_t> counter{0};
    temp_ = strformat("%s.tmp.%d.%llu", final_path.c_str(), static_cast<int>(getpid()),
                      static_cast<unsigned long long>(counter.fetch_add(1)));
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_ && opened_) ::unlink(temp_.c_str());
  }
  Status open() {
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) return io_error("create");
    opened_ = true;
    return Status();
  }
  Status write(const void* data, size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t n = ::write(fd_, p, bytes);
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_error("write");
      }
      p += n;
      bytes -= static_cast<size_t>(n);
    }
    return Status();
  }
  Status commit() {
    if (::fsync(fd_) != 0) return io_error("fsync");
    if (::close(fd_) != 0) {
      fd_ = -1;
      return io_error("close");
    }
    fd_ = -1;
    if (::rename(temp_.c_str(), final_.c_str()) != 0) return io_error("rename");
    committed_ = true;
    return Status();
  }

 private:
  Status io_error(const char* what) const {
    const int err = errno;
    return make_error(err == ENOSPC || err == EDQUOT ? StatusCode::kResourceExhausted
                                                     : StatusCode::kInvalidArgument,
                      "writing '%s': %s: %s", final_.c_str(), what, std::strerror(err));
  }
  std::string final_, temp_;
  int fd_ = -1;
  bool opened_ = false, committed_ = false;
};

Status tensor_bytes(const TensorToWrite& t, uint64_t* out) {
  uint64_t bytes = dtype_size(t.dtype);
  for (const uint64_t d : t.shape) {
    if (d != 0 && bytes > UINT64_MAX / d)
      return make_error(StatusCode::kInvalidArgument, "tensor '%s': byte size overflows",
                        t.name.c_str());
    bytes *= d;
  }
  if (!t.fill && t.bytes.size() != bytes)
    return make_error(StatusCode::kInvalidArgument,
                      "tensor '%s': %zu bytes given, shape needs %llu", t.name.c_str(),
                      t.bytes.size(), static_cast<unsigned long long>(bytes));
  *out = bytes;
  return Status();
}

}  // namespace

Status write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                         const std::vector<std::pair<std::string, std::string>>& metadata) {
  // Plan: sizes, order, offsets.
  std::vector<uint64_t> sizes(tensors.size());
  std::unordered_set<std::string_view> names;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorToWrite& t = tensors[i];
    if (t.name.empty() || t.name == "__metadata__")
      return make_error(StatusCode::kInvalidArgument, "writing '%s': invalid tensor name '%s'",
                        path.c_str(), t.name.c_str());
    if (!names.insert(t.name).second)
      return make_error(StatusCode::kInvalidArgument, "writing '%s': duplicate tensor '%s'",
                        path.c_str(), t.name.c_str());
    MOE_TRY(tensor_bytes(t, &sizes[i]).with_context("writing '" + path + "'"));
  }
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const bool a8 = sizes[a] % 8 == 0, b8 = sizes[b] % 8 == 0;
    if (a8 != b8) return a8;
    if (a8) return false;  // keep the caller's order
    return dtype_size(tensors[a].dtype) > dtype_size(tensors[b].dtype);
  });

  JsonWriter w;
  w.begin_object();
  if (!metadata.empty()) {
    w.key("__metadata__").begin_object();
    for (const auto& [k, v] : metadata) w.key(k).value(v);
    w.end_object();
  }
  uint64_t offset = 0;
  for (const size_t i : order) {
    const TensorToWrite& t = tensors[i];
    w.key(t.name).begin_object();
    w.key("dtype").value(dtype_name(t.dtype));
    w.key("shape").begin_array();
    for (const uint64_t d : t.shape) w.value(d);
    w.end_array();
    w.key("data_offsets").begin_array().value(offset).value(offset + sizes[i]).end_array();
    w.end_object();
    offset += sizes[i];
  }
  w.end_object();
  std::string header = w.take();
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');

  TempFile file(path);
  MOE_TRY(file.open());
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  MOE_TRY(file.write(length, sizeof length));
  MOE_TRY(file.write(header.data(), header.size()));
  std::vector<uint8_t> buffer;
  for (const size_t i : order) {
    const TensorToWrite& t = tensors[i];
    if (!t.fill) {
      MOE_TRY(file.write(t.bytes.data(), t.bytes.size()));
      continue;
    }
    buffer.assign(sizes[i], 0);
    MOE_TRY(t.fill(buffer).with_context("writing '" + path + "': tensor '" + t.name + "'"));
    MOE_TRY(file.write(buffer.data(), buffer.size()));
  }
  return file.commit();
}

Status write_file_atomically(const std::string& path, std::string_view text) {
  TempFile file(path);
  MOE_TRY(file.open());
  MOE_TRY(file.write(text.data(), text.size()));
  return file.commit();
}

}  // namespace moe::models
