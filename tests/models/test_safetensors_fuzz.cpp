// Hostile input: every truncation of a small safetensors file and random byte corruption are
// refused (or, for flips that leave a valid file, read within bounds) without crashing; run
// under ASAN this proves no read past the buffer. Plus the strict JSON parser's edge cases.
#include <doctest/doctest.h>

#include <cstring>
#include <random>

#include "models/weights/json_parse.h"
#include "models/weights/safetensors_reader.h"
#include "models/weights/safetensors_writer.h"
#include "tests/models/weights_test_util.h"

using namespace moe;
using namespace moe::models;
using moe::models::testing::read_all;
using moe::models::testing::TempDir;
using moe::models::testing::write_all;

namespace {

std::vector<uint8_t> small_file(const TempDir& dir) {
  const std::vector<uint16_t> w = {0x3f80, 0x4000, 0x4040, 0xbf80, 0x0000, 0x3f00};
  const std::vector<int8_t> q = {1, -2, 3};
  const std::vector<float> s = {0.25f};
  std::vector<TensorToWrite> t(3);
  t[0] = {.name = "layers.0.w", .dtype = DType::kBf16, .shape = {2, 3},
          .bytes = {reinterpret_cast<const uint8_t*>(w.data()), 12}};
  t[1] = {.name = "layers.0.q", .dtype = DType::kI8, .shape = {3},
          .bytes = {reinterpret_cast<const uint8_t*>(q.data()), 3}};
  t[2] = {.name = "layers.0.s", .dtype = DType::kF32, .shape = {1, 1},
          .bytes = {reinterpret_cast<const uint8_t*>(s.data()), 4}};
  const std::string path = dir.file("small.safetensors");
  REQUIRE(write_safetensors(path, t, {{"format", "pt"}}).ok());
  return read_all(path);
}

// Touches every byte a successfully parsed header claims, so ASAN sees any bad span.
uint64_t touch_all(std::span<const uint8_t> file, const SafetensorsHeader& h) {
  uint64_t sum = 0;
  for (const TensorInfo& t : h.tensors) {
    REQUIRE(h.data_start + t.end <= file.size());
    for (uint64_t i = t.begin; i < t.end; ++i) sum += file[h.data_start + i];
  }
  return sum;
}

}  // namespace

TEST_CASE("models.safetensors: every truncation of a file is refused without crashing") {
  TempDir dir;
  const std::vector<uint8_t> full = small_file(dir);
  REQUIRE(parse_safetensors(full, "small").ok());
  for (size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    // An exact-size heap copy, so ASAN catches a read of even one byte too many.
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    StatusOr<SafetensorsHeader> h = parse_safetensors(prefix, "small");
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().code() == StatusCode::kParseError);
    CHECK(h.status().message().find("'small'") != std::string::npos);
  }
  // The same through files and mmap, for a spread of lengths.
  for (size_t n = 0; n < full.size(); n += 7) {
    CAPTURE(n);
    write_all(dir.file("cut.safetensors"), {full.begin(), full.begin() + static_cast<ptrdiff_t>(n)});
    StatusOr<SafetensorsFile> f = SafetensorsFile::open(dir.file("cut.safetensors"));
    REQUIRE_FALSE(f.ok());
    CHECK(f.status().message().find("cut.safetensors") != std::string::npos);
  }
}

TEST_CASE("models.safetensors: random byte corruption never crashes the reader") {
  TempDir dir;
  const std::vector<uint8_t> full = small_file(dir);
  std::mt19937_64 rng(20261125);
  int refused = 0, accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bad = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header (where structure lives), sometimes anywhere.
      const size_t limit = (rng() % 4 == 0) ? bad.size() : std::min<size_t>(bad.size(), 8 + 200);
      const size_t at = rng() % limit;
      if (rng() % 2) bad[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
      else bad[at] = static_cast<uint8_t>(rng());
    }
    if (rng() % 8 == 0) bad.resize(rng() % bad.size());
    StatusOr<SafetensorsHeader> h = parse_safetensors(bad, "fuzz");
    if (h.ok()) {
      ++accepted;
      touch_all(bad, *h);
    } else {
      ++refused;
      CHECK_FALSE(h.status().message().empty());
    }
  }
  CHECK(refused > 1000);  // most corruptions of the header are caught
  MESSAGE("corrupted files refused: " << refused << ", still valid: " << accepted);
}

TEST_CASE("models.safetensors: the JSON parser is strict") {
  const char* valid[] = {
      "{}", "[]", "0", "-0", "1.5e-3", "1E+2", "\"a\\u00e9\\ud83d\\ude00\"", "true", "null",
      " {\"a\" : [1, {\"b\": false}], \"c\": \"\xc3\xa9\"} ", "18446744073709551615"};
  for (const char* text : valid) {
    CAPTURE(text);
    CHECK_MESSAGE(parse_json(text).ok(), parse_json(text).status().to_string());
  }
  const char* invalid[] = {
      "", "{", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "-", "+1", "1e", "NaN", "Infinity",
      "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\u12g4\"", "\"a\nb\"", "tru",
      "{\"a\" 1}", "{1:2}", "[1 2]", "{} {}", "/*c*/{}", "\"\xc3\"", "\"\xc0\xaf\"",
      "\"\xed\xa0\x80\"", "\"\xf8\x88\x80\x80\x80\"", "{\"a\":1,\"a\":2}", "'a'"};
  for (const char* text : invalid) {
    CAPTURE(text);
    StatusOr<JsonValue> v = parse_json(text);
    CHECK_FALSE(v.ok());
    if (!v.ok()) CHECK(v.status().code() == StatusCode::kParseError);
  }
  std::string deep(kMaxJsonDepth + 2, '[');
  deep += std::string(kMaxJsonDepth + 2, ']');
  CHECK(parse_json(deep).status().message().find("nesting deeper") != std::string::npos);

  StatusOr<JsonValue> v = parse_json("{\"n\": [18446744073709551615, 18446744073709551616, -1, "
                                     "1.0, 7], \"s\": \"x\\\"y\\n\"}");
  REQUIRE(v.ok());
  const JsonValue* n = v->find("n");
  REQUIRE(n != nullptr);
  uint64_t x = 42;
  CHECK(n->items[0].as_u64(&x));
  CHECK(x == UINT64_MAX);
  CHECK_FALSE(n->items[1].as_u64(&x));
  CHECK_FALSE(n->items[2].as_u64(&x));
  CHECK_FALSE(n->items[3].as_u64(&x));
  CHECK(n->items[4].as_u64(&x));
  CHECK(x == 7);
  CHECK(v->find("s")->text == "x\"y\n");
  CHECK(v->members[0].first == "n");  // order kept
  CHECK(v->find("missing") == nullptr);
  CHECK(parse_json("\"\\ud83d\\ude00\"")->text == "\xf0\x9f\x98\x80");
  CHECK(parse_json("{\"a\":1 ,\"b\":2}").ok());
}
