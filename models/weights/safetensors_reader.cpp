// Safetensors reader: parse the JSON header strictly, validate every field against the file's
// size, then expose the data area through a read-only mapping.
//
// Validation happens once, in parse_safetensors(), on the whole file's bytes (so tests can
// feed it truncated and corrupted buffers directly); open() only maps the file and calls it.
// All arithmetic on offsets and sizes is overflow-checked: a header is hostile until proven
// otherwise.
#include "models/weights/safetensors_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "models/weights/json_parse.h"
#include "runtime/base/check.h"

namespace moe::models {

struct SafetensorsFile::Mapping {
  const uint8_t* base = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (base != nullptr) munmap(const_cast<uint8_t*>(base), bytes);
  }
};

namespace {

Status bad_file(std::string_view file, const std::string& what) {
  return make_error(StatusCode::kParseError, "safetensors '%.*s': %s",
                    static_cast<int>(file.size()), file.data(), what.c_str());
}

Status bad_tensor(std::string_view file, std::string_view tensor, const std::string& what) {
  return make_error(StatusCode::kParseError, "safetensors '%.*s': tensor '%.*s': %s",
                    static_cast<int>(file.size()), file.data(), static_cast<int>(tensor.size()),
                    tensor.data(), what.c_str());
}

Status parse_entry(std::string_view file, const std::string& name, const JsonValue& entry,
                   TensorInfo* out) {
  if (!entry.is_object())
    return bad_tensor(file, name, strformat("expected an object, found a %s",
                                            json_kind_name(entry.kind)));
  for (const auto& [key, value] : entry.members)
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      return bad_tensor(file, name, strformat("unexpected field \"%s\" (expected dtype, shape, "
                                              "data_offsets)", key.c_str()));
  const JsonValue* dtype = entry.find("dtype");
  const JsonValue* shape = entry.find("shape");
  const JsonValue* offsets = entry.find("data_offsets");
  if (dtype == nullptr || shape == nullptr || offsets == nullptr)
    return bad_tensor(file, name, strformat("missing field \"%s\"",
                                            dtype == nullptr   ? "dtype"
                                            : shape == nullptr ? "shape"
                                                               : "data_offsets"));
  if (!dtype->is_string())
    return bad_tensor(file, name, strformat("dtype: expected a string, found a %s",
                                            json_kind_name(dtype->kind)));
  const std::optional<DType> parsed = parse_dtype(dtype->text);
  if (!parsed)
    return bad_tensor(file, name, strformat("unknown dtype \"%s\"", dtype->text.c_str()));
  out->name = name;
  out->dtype = *parsed;
  if (!shape->is_array())
    return bad_tensor(file, name, strformat("shape: expected an array, found a %s",
                                            json_kind_name(shape->kind)));
  if (shape->items.size() > kMaxTensorRank)
    return bad_tensor(file, name, strformat("shape has %zu dimensions, at most %u supported",
                                            shape->items.size(), kMaxTensorRank));
  uint64_t bytes = dtype_size(*parsed);
  for (const JsonValue& d : shape->items) {
    uint64_t dim;
    if (!d.as_u64(&dim))
      return bad_tensor(file, name, strformat("shape: expected non-negative integers, found %s",
                                              d.is_number() ? d.text.c_str()
                                                            : json_kind_name(d.kind)));
    if (dim != 0 && bytes > UINT64_MAX / dim)
      return bad_tensor(file, name, "shape: the byte size overflows 64 bits");
    bytes *= dim;
    out->shape.push_back(dim);
  }
  if (!offsets->is_array() || offsets->items.size() != 2 ||
      !offsets->items[0].as_u64(&out->begin) || !offsets->items[1].as_u64(&out->end))
    return bad_tensor(file, name, "data_offsets: expected [begin, end], two non-negative integers");
  if (out->end < out->begin)
    return bad_tensor(file, name, strformat("data_offsets [%llu, %llu]: end before begin",
                                            static_cast<unsigned long long>(out->begin),
                                            static_cast<unsigned long long>(out->end)));
  if (out->end - out->begin != bytes)
    return bad_tensor(
        file, name,
        strformat("shape %s of %.*s is %llu bytes but data_offsets [%llu, %llu] span %llu",
                  shape_to_string(out->shape).c_str(),
                  static_cast<int>(dtype_name(*parsed).size()), dtype_name(*parsed).data(),
                  static_cast<unsigned long long>(bytes),
                  static_cast<unsigned long long>(out->begin),
                  static_cast<unsigned long long>(out->end),
                  static_cast<unsigned long long>(out->end - out->begin)));
  return Status();
}

}  // namespace

uint64_t TensorInfo::num_elements() const {
  uint64_t n = 1;
  for (const uint64_t d : shape) n *= d;  // validated not to overflow
  return n;
}

std::string shape_to_string(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += strformat("%s%llu", i ? ", " : "", static_cast<unsigned long long>(shape[i]));
  return s + "]";
}

StatusOr<SafetensorsHeader> parse_safetensors(std::span<const uint8_t> file_bytes,
                                              std::string_view file) {
  if (file_bytes.size() < 8)
    return bad_file(file, strformat("%zu bytes: too short for the 8-byte header length",
                                    file_bytes.size()));
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | file_bytes[i];
  if (header_bytes > kMaxSafetensorsHeaderBytes)
    return bad_file(file, strformat("header length %llu exceeds the limit %llu",
                                    static_cast<unsigned long long>(header_bytes),
                                    static_cast<unsigned long long>(kMaxSafetensorsHeaderBytes)));
  if (header_bytes > file_bytes.size() - 8)
    return bad_file(file, strformat("header length %llu but only %zu bytes follow the length "
                                    "(truncated?)",
                                    static_cast<unsigned long long>(header_bytes),
                                    file_bytes.size() - 8));
  const std::string_view text(reinterpret_cast<const char*>(file_bytes.data() + 8), header_bytes);
  StatusOr<JsonValue> json = parse_json(text);
  if (!json.ok()) return bad_file(file, "header: " + json.status().message());
  if (!json->is_object())
    return bad_file(file, strformat("header: expected a JSON object, found a %s",
                                    json_kind_name(json->kind)));

  SafetensorsHeader header;
  header.data_start = 8 + header_bytes;
  const uint64_t data_bytes = file_bytes.size() - header.data_start;
  for (const auto& [name, entry] : json->members) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        return bad_file(file, strformat("__metadata__: expected an object, found a %s",
                                        json_kind_name(entry.kind)));
      for (const auto& [key, value] : entry.members) {
        if (!value.is_string())
          return bad_file(file, strformat("__metadata__ \"%s\": expected a string, found a %s",
                                          key.c_str(), json_kind_name(value.kind)));
        header.metadata.emplace_back(key, value.text);
      }
      continue;
    }
    if (name.empty()) return bad_file(file, "a tensor has an empty name");
    TensorInfo info;
    MOE_TRY(parse_entry(file, name, entry, &info));
    if (info.end > data_bytes)
      return bad_tensor(file, name,
                        strformat("data_offsets [%llu, %llu] end past the data area of %llu "
                                  "bytes (truncated?)",
                                  static_cast<unsigned long long>(info.begin),
                                  static_cast<unsigned long long>(info.end),
                                  static_cast<unsigned long long>(data_bytes)));
    header.tensors.push_back(std::move(info));
  }  // duplicate names were refused by the JSON parser (duplicate keys)

  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : header.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < covered)
      return bad_tensor(file, t->name,
                        strformat("data_offsets [%llu, %llu] overlap tensor '%s' ending at %llu",
                                  static_cast<unsigned long long>(t->begin),
                                  static_cast<unsigned long long>(t->end),
                                  previous->name.c_str(),
                                  static_cast<unsigned long long>(covered)));
    covered = t->end;
    previous = t;
  }
  if (covered != data_bytes)
    return bad_file(file, strformat("data area is %llu bytes but the tensors end at %llu "
                                    "(trailing bytes)",
                                    static_cast<unsigned long long>(data_bytes),
                                    static_cast<unsigned long long>(covered)));
  return header;
}

StatusOr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                      "safetensors '%s': cannot open: %s", path.c_str(), std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return make_error(StatusCode::kInvalidArgument, "safetensors '%s': not a regular file",
                      path.c_str());
  }
  auto mapping = std::make_shared<Mapping>();
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes > 0) {
    void* base = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return make_error(StatusCode::kInvalidArgument, "safetensors '%s': mmap of %zu bytes: %s",
                        path.c_str(), bytes, std::strerror(err));
    }
    mapping->base = static_cast<const uint8_t*>(base);
    mapping->bytes = bytes;
  }
  ::close(fd);
  SafetensorsFile file;
  MOE_TRY_ASSIGN(file.header_, parse_safetensors({mapping->base, mapping->bytes}, path));
  file.path_ = path;
  file.mapping_ = std::move(mapping);
  file.file_bytes_ = bytes;
  for (size_t i = 0; i < file.header_.tensors.size(); ++i)
    file.index_.emplace(file.header_.tensors[i].name, i);
  return file;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

std::span<const uint8_t> SafetensorsFile::data(const TensorInfo& info) const {
  if (mapping_ == nullptr || info.size_bytes() == 0) return {};
  return {mapping_->base + header_.data_start + info.begin, info.size_bytes()};
}

}  // namespace moe::models
