// A small strict JSON parser, for the headers of safetensors files and their shard indexes.
//
// Strict RFC 8259: one value, optional surrounding whitespace, nothing else; no comments, no
// trailing commas, no NaN/Infinity, no leading zeros, no control characters in strings, valid
// UTF-8 (overlong forms and surrogates refused), \u escapes with surrogate pairs decoded to
// UTF-8. Objects keep their key order and refuse a duplicate key. Nesting is capped
// (kMaxJsonDepth) so hostile input cannot exhaust the stack. Numbers keep their text, so
// integers up to 2^64-1 read back exactly (as_u64).
//
// Thread-safety: pure functions; JsonValue is plain data.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/base/status.h"

namespace moe::models {

inline constexpr int kMaxJsonDepth = 64;

struct JsonValue {
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // kString: the decoded string; kNumber: the number as written
  std::vector<JsonValue> items;                            // kArray
  std::vector<std::pair<std::string, JsonValue>> members;  // kObject, in file order

  bool is_object() const { return kind == Kind::kObject; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kNumber; }
  // kObject: the member named `key`, or nullptr.
  const JsonValue* find(std::string_view key) const;
  // kNumber written as a plain non-negative integer (no sign, fraction or exponent) that fits
  // 64 bits: sets *out and returns true. Otherwise false, *out untouched.
  bool as_u64(uint64_t* out) const;
};

const char* json_kind_name(JsonValue::Kind kind);

// Parses `text` as one JSON value. kParseError naming the byte offset and what was expected.
StatusOr<JsonValue> parse_json(std::string_view text);

}  // namespace moe::models
