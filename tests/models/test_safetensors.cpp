// Safetensors reader and writer: exact bytes, round trips of every dtype, and each kind of
// malformed header refused with a message naming the file, the tensor and the fault.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "models/weights/safetensors_reader.h"
#include "models/weights/safetensors_writer.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;
using moe::models::testing::make_file;
using moe::models::testing::read_all;
using moe::models::testing::TempDir;
using moe::models::testing::write_all;

namespace {

template <typename T>
std::span<const uint8_t> as_bytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

std::vector<uint8_t> f32_bytes(std::initializer_list<float> values) {
  std::vector<uint8_t> out(values.size() * 4);
  size_t i = 0;
  for (const float f : values) std::memcpy(&out[4 * i++], &f, 4);
  return out;
}

StatusOr<SafetensorsHeader> parse(const std::string& header, const std::vector<uint8_t>& data) {
  const std::vector<uint8_t> file = make_file(header, data);
  return parse_safetensors(file, "test.safetensors");
}

}  // namespace

TEST_CASE("models.safetensors: the writer produces the exact bytes of a handwritten file") {
  TempDir dir;
  const std::vector<float> a = {1.0f, -2.0f};
  const std::vector<int8_t> b = {7, -7, 1};
  std::vector<TensorToWrite> tensors(2);
  tensors[0] = {.name = "b", .dtype = DType::kI8, .shape = {3}, .bytes = as_bytes(b)};
  tensors[1] = {.name = "a", .dtype = DType::kF32, .shape = {1, 2}, .bytes = as_bytes(a)};
  REQUIRE(write_safetensors(dir.file("x.safetensors"), tensors, {{"format", "pt"}}).ok());

  // "a" (8 bytes) first: sizes that are multiples of 8 keep 8-byte alignment; then "b".
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<uint8_t> data = f32_bytes({1.0f, -2.0f});
  data.insert(data.end(), {7, 0xf9, 1});
  const std::vector<uint8_t> expected = make_file(header, data);
  CHECK(read_all(dir.file("x.safetensors")) == expected);
  CHECK(expected[0] == header.size());  // little-endian length
  // No temporary file is left behind.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.str())) entries += !e.is_directory();
  CHECK(entries == 1);
}

TEST_CASE("models.safetensors: a handwritten file in the reference library's style reads back") {
  TempDir dir;
  // Key order, whitespace and escapes as another writer may produce them.
  const std::string header =
      "{ \"w\\u00e9ight\" : {\"shape\": [2, 2], \"dtype\": \"BF16\", \"data_offsets\": [0, 8]},\n"
      "  \"__metadata__\": {\"format\": \"pt\"}, \"s\": {\"dtype\":\"F32\",\"shape\":[],"
      "\"data_offsets\":[8,12]}}   ";
  std::vector<uint8_t> data = {0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf};  // 1 2 3 -1
  const std::vector<uint8_t> s = f32_bytes({0.5f});
  data.insert(data.end(), s.begin(), s.end());
  write_all(dir.file("h.safetensors"), make_file(header, data));
  StatusOr<SafetensorsFile> file = SafetensorsFile::open(dir.file("h.safetensors"));
  REQUIRE_MESSAGE(file.ok(), file.status().to_string());
  REQUIRE(file->tensors().size() == 2);
  const TensorInfo* w = file->find("w\xc3\xa9ight");
  REQUIRE(w != nullptr);
  CHECK(w->dtype == DType::kBf16);
  CHECK(w->shape == std::vector<uint64_t>{2, 2});
  CHECK(std::vector<uint8_t>(file->data(*w).begin(), file->data(*w).end()) ==
        std::vector<uint8_t>(data.begin(), data.begin() + 8));
  const TensorInfo* scalar = file->find("s");
  REQUIRE(scalar != nullptr);
  CHECK(scalar->shape.empty());
  CHECK(scalar->num_elements() == 1);
  float v;
  std::memcpy(&v, file->data(*scalar).data(), 4);
  CHECK(v == 0.5f);
  REQUIRE(file->metadata().size() == 1);
  CHECK(file->metadata()[0].second == "pt");
}

TEST_CASE("models.safetensors: every dtype round-trips through write and read") {
  TempDir dir;
  const DType dtypes[] = {DType::kBool, DType::kU8,  DType::kI8,  DType::kF8E5M2, DType::kF8E4M3,
                          DType::kI16,  DType::kU16, DType::kF16, DType::kBf16,   DType::kI32,
                          DType::kU32,  DType::kF32, DType::kF64, DType::kI64,    DType::kU64};
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<TensorToWrite> tensors;
  uint32_t seed = 1;
  for (const DType d : dtypes) {
    const uint64_t rows = 3, cols = 5;  // odd sizes: exercises the alignment ordering
    std::vector<uint8_t> bytes(rows * cols * dtype_size(d));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>((seed = seed * 1103515245u + 12345u) >> 16);
    payloads.push_back(std::move(bytes));
    tensors.push_back({.name = "t." + std::string(dtype_name(d)), .dtype = d, .shape = {rows, cols}});
  }
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].bytes = payloads[i];
  tensors.push_back({.name = "empty", .dtype = DType::kF32, .shape = {0, 4}});
  tensors.push_back({.name = "filled", .dtype = DType::kI32, .shape = {2},
                     .fill = [](std::span<uint8_t> out) {
                       const int32_t v[2] = {-5, 1 << 30};
                       REQUIRE(out.size() == sizeof v);
                       std::memcpy(out.data(), v, sizeof v);
                       return Status();
                     }});
  REQUIRE(write_safetensors(dir.file("all.safetensors"), tensors).ok());
  StatusOr<SafetensorsFile> file = SafetensorsFile::open(dir.file("all.safetensors"));
  REQUIRE_MESSAGE(file.ok(), file.status().to_string());
  REQUIRE(file->tensors().size() == tensors.size());
  for (size_t i = 0; i < payloads.size(); ++i) {
    CAPTURE(tensors[i].name);
    const TensorInfo* t = file->find(tensors[i].name);
    REQUIRE(t != nullptr);
    CHECK(t->dtype == dtypes[i]);
    CHECK(t->shape == tensors[i].shape);
    const std::span<const uint8_t> got = file->data(*t);
    CHECK(std::vector<uint8_t>(got.begin(), got.end()) == payloads[i]);
    // Aligned to its element size at least (the data area starts 8-aligned).
    CHECK((file->tensors().empty() || (t->begin % dtype_size(t->dtype)) == 0));
  }
  CHECK(file->find("empty")->size_bytes() == 0);
  int32_t v[2];
  std::memcpy(v, file->data(*file->find("filled")).data(), sizeof v);
  CHECK(v[0] == -5);
  CHECK(v[1] == (1 << 30));
  CHECK(file->find("filled")->begin % 8 == 0);
}

TEST_CASE("models.safetensors: F16 conversions are exact where they can be, round to even") {
  CHECK(f16_to_float(0x3c00) == 1.0f);
  CHECK(f16_to_float(0xc000) == -2.0f);
  CHECK(f16_to_float(0x7bff) == 65504.0f);
  CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(f16_to_float(0x0200) == std::ldexp(1.0f, -15));
  CHECK(std::isinf(f16_to_float(0x7c00)));
  CHECK(std::isnan(f16_to_float(0x7e00)));
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every finite half survives a round trip
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    if (float_to_f16(f) != h) {
      FAIL("half 0x" << std::hex << h << " -> " << f << " -> 0x" << float_to_f16(f));
    }
  }
  CHECK(float_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie -> even
  CHECK(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(float_to_f16(70000.0f) == 0x7c00);
  CHECK(float_to_f16(std::ldexp(1.0f, -26)) == 0);
}

TEST_CASE("models.safetensors: malformed headers are refused naming the tensor and the fault") {
  const std::vector<uint8_t> eight(8, 0);
  struct Case {
    const char* header;
    size_t data_bytes;
    const char* expect;  // a substring of the message
  };
  const Case cases[] = {
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, nullptr},  // valid
      {R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8, "unknown dtype \"F33\""},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "tensor 'a': shape [3] of F32 is 12 bytes but data_offsets [0, 8] span 8"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8,
       "tensor 'a': shape [2] of F32 is 8 bytes but data_offsets [0, 16] span 16"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
       "tensor 'a': data_offsets [0, 16] end past the data area of 8 bytes"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "end before begin"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative integers"},
      {R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, "found 2.0"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
       "overflows"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", 8, "missing field \"data_offsets\""},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8,
       "unexpected field \"x\""},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8,
       "tensor 'b': data_offsets [4, 8] overlap tensor 'a' ending at 8"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "duplicate key \"a\""},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "trailing bytes"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":1}})", 8,
       "__metadata__ \"k\": expected a string"},
      {R"({"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, "empty name"},
      {R"([1,2])", 8, "expected a JSON object"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},})", 8, "header: JSON: at byte"},
      {R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", 8,
       "9 dimensions"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x)", 8, "end of input"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.header);
    StatusOr<SafetensorsHeader> h = parse(c.header, std::vector<uint8_t>(c.data_bytes, 0));
    if (c.expect == nullptr) {
      CHECK_MESSAGE(h.ok(), h.status().to_string());
      continue;
    }
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().code() == StatusCode::kParseError);
    CHECK_MESSAGE(h.status().message().find(c.expect) != std::string::npos,
                  h.status().message());
    CHECK(h.status().message().find("'test.safetensors'") != std::string::npos);
  }
  // Gaps between tensors (alignment padding by another writer) are accepted.
  StatusOr<SafetensorsHeader> gap =
      parse(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight);
  CHECK_MESSAGE(gap.ok(), gap.status().to_string());
}

TEST_CASE("models.safetensors: header lengths beyond the file or the cap are refused") {
  std::vector<uint8_t> file(16, ' ');
  const uint64_t lengths[] = {9, 1ull << 40, UINT64_MAX, kMaxSafetensorsHeaderBytes + 1};
  for (const uint64_t n : lengths) {
    CAPTURE(n);
    for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(n >> (8 * i));
    StatusOr<SafetensorsHeader> h = parse_safetensors(file, "f");
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().message().find("header length") != std::string::npos);
  }
  StatusOr<SafetensorsHeader> tiny = parse_safetensors(std::span<const uint8_t>(), "f");
  CHECK_FALSE(tiny.ok());
  TempDir dir;
  StatusOr<SafetensorsFile> missing = SafetensorsFile::open(dir.file("nope.safetensors"));
  CHECK(missing.status().code() == StatusCode::kNotFound);
  StatusOr<SafetensorsFile> directory = SafetensorsFile::open(dir.str());
  CHECK_FALSE(directory.ok());
  write_all(dir.file("empty.safetensors"), {});
  StatusOr<SafetensorsFile> empty = SafetensorsFile::open(dir.file("empty.safetensors"));
  CHECK(empty.status().code() == StatusCode::kParseError);
}

TEST_CASE("models.safetensors: the writer refuses bad input and leaves the target untouched") {
  TempDir dir;
  const std::vector<float> a = {1, 2, 3};
  std::vector<TensorToWrite> t(1);
  t[0] = {.name = "a", .dtype = DType::kF32, .shape = {2}, .bytes = as_bytes(a)};
  Status st = write_safetensors(dir.file("w.safetensors"), t);
  CHECK(st.code() == StatusCode::kInvalidArgument);
  CHECK(st.message().find("12 bytes given, shape needs 8") != std::string::npos);
  t[0].shape = {3};
  t.push_back(t[0]);
  CHECK(write_safetensors(dir.file("w.safetensors"), t).message().find("duplicate") !=
        std::string::npos);
  t.pop_back();
  REQUIRE(write_safetensors(dir.file("w.safetensors"), t).ok());
  const std::vector<uint8_t> before = read_all(dir.file("w.safetensors"));
  t.push_back({.name = "b", .dtype = DType::kF32, .shape = {1}, .fill = [](std::span<uint8_t>) {
                 return make_error(StatusCode::kInternal, "fill failed");
               }});
  st = write_safetensors(dir.file("w.safetensors"), t);
  CHECK(st.message().find("fill failed") != std::string::npos);
  CHECK(read_all(dir.file("w.safetensors")) == before);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.str())) entries += !e.is_directory();
  CHECK(entries == 1);
  CHECK_FALSE(write_safetensors(dir.file("no/such/dir/w.safetensors"), t).ok());
}
