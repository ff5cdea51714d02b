// Strict JSON parser: a recursive-descent reader over a string_view.
//
// Every read checks the remaining length first, so any truncation or corruption of the input
// ends in a kParseError naming the byte offset, never in a read past the end. Recursion is
// bounded by kMaxJsonDepth.
#include "models/weights/json_parse.h"

#include <cstring>
#include <unordered_set>

// Propagates a parse error without logging each level (errors are expected input here).
#define MOE_TRY_PARSE(expr)          \
  do {                               \
    Status st_ = (expr);             \
    if (!st_.ok()) return st_;       \
  } while (0)

namespace moe::models {
namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Status parse_document(JsonValue* out) {
    skip_ws();
    MOE_TRY_PARSE(parse_value(out, 0));
    skip_ws();
    if (pos_ != s_.size()) return fail("end of input after the value");
    return Status();
  }

 private:

  Status fail(const char* expected) const {
    if (pos_ >= s_.size())
      return make_error(StatusCode::kParseError, "JSON: at byte %zu: expected %s, found end of input",
                        pos_, expected);
    const unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7f)
      return make_error(StatusCode::kParseError, "JSON: at byte %zu: expected %s, found '%c'", pos_,
                        expected, c);
    return make_error(StatusCode::kParseError, "JSON: at byte %zu: expected %s, found byte 0x%02x",
                      pos_, expected, c);
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool peek(char c) const { return pos_ < s_.size() && s_[pos_] == c; }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.size() - pos_ < n || s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Status parse_value(JsonValue* out, int depth) {
    if (depth > kMaxJsonDepth)
      return make_error(StatusCode::kParseError, "JSON: at byte %zu: nesting deeper than %d", pos_,
                        kMaxJsonDepth);
    if (pos_ >= s_.size()) return fail("a value");
    const char c = s_[pos_];
    if (c == '{') return parse_object(out, depth);
    if (c == '[') return parse_array(out, depth);
    if (c == '"') {
      out->kind = JsonValue::Kind::kString;
      return parse_string(&out->text);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(out);
    if (literal("true")) {
      out->kind = JsonValue::Kind::kBool;
      out->boolean = true;
      return Status();
    }
    if (literal("false")) {
      out->kind = JsonValue::Kind::kBool;
      return Status();
    }
    if (literal("null")) {
      out->kind = JsonValue::Kind::kNull;
      return Status();
    }
    return fail("a value");
  }

  Status parse_object(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kObject;
    ++pos_;  // '{'
    skip_ws();
    if (peek('}')) {
      ++pos_;
      return Status();
    }
    std::unordered_set<std::string> seen;  // linear find() would be quadratic on big maps
    for (;;) {
      skip_ws();
      if (!peek('"')) return fail("a string key");
      const size_t key_pos = pos_;
      std::string key;
      MOE_TRY_PARSE(parse_string(&key));
      if (!seen.insert(key).second)
        return make_error(StatusCode::kParseError, "JSON: at byte %zu: duplicate key \"%s\"",
                          key_pos, key.c_str());
      skip_ws();
      if (!peek(':')) return fail("':'");
      ++pos_;
      skip_ws();
      out->members.emplace_back(std::move(key), JsonValue{});
      MOE_TRY_PARSE(parse_value(&out->members.back().second, depth + 1));
      skip_ws();
      if (peek(',')) {
        ++pos_;
        continue;
      }
      if (peek('}')) {
        ++pos_;
        return Status();
      }
      return fail("',' or '}'");
    }
  }

  Status parse_array(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kArray;
    ++pos_;  // '['
    skip_ws();
    if (peek(']')) {
      ++pos_;
      return Status();
    }
    for (;;) {
      skip_ws();
      out->items.emplace_back();
      MOE_TRY_PARSE(parse_value(&out->items.back(), depth + 1));
      skip_ws();
      if (peek(',')) {
        ++pos_;
        continue;
      }
      if (peek(']')) {
        ++pos_;
        return Status();
      }
      return fail("',' or ']'");
    }
  }

  Status parse_number(JsonValue* out) {
    const size_t start = pos_;
    auto digit = [&] { return pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9'; };
    if (peek('-')) ++pos_;
    if (!digit()) return fail("a digit");
    if (s_[pos_] == '0') {
      ++pos_;
      if (digit()) return fail("no leading zero");
    } else {
      while (digit()) ++pos_;
    }
    if (peek('.')) {
      ++pos_;
      if (!digit()) return fail("a digit after '.'");
      while (digit()) ++pos_;
    }
    if (peek('e') || peek('E')) {
      ++pos_;
      if (peek('+') || peek('-')) ++pos_;
      if (!digit()) return fail("a digit in the exponent");
      while (digit()) ++pos_;
    }
    out->kind = JsonValue::Kind::kNumber;
    out->text.assign(s_.substr(start, pos_ - start));
    return Status();
  }

  Status parse_hex4(uint32_t* out) {
    if (s_.size() - pos_ < 4) return fail("four hex digits");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else return fail("a hex digit");
      ++pos_;
    }
    *out = v;
    return Status();
  }

  static void append_utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  // One UTF-8 sequence starting at pos_ (first byte >= 0x80), copied to *out.
  Status parse_utf8(std::string* out) {
    const auto byte = [&](size_t i) { return static_cast<unsigned char>(s_[pos_ + i]); };
    const unsigned char b0 = byte(0);
    size_t n;
    uint32_t cp, min;
    if ((b0 & 0xe0) == 0xc0) { n = 2; cp = b0 & 0x1f; min = 0x80; }
    else if ((b0 & 0xf0) == 0xe0) { n = 3; cp = b0 & 0x0f; min = 0x800; }
    else if ((b0 & 0xf8) == 0xf0) { n = 4; cp = b0 & 0x07; min = 0x10000; }
    else return fail("a valid UTF-8 lead byte");
    if (s_.size() - pos_ < n) return fail("a complete UTF-8 sequence");
    for (size_t i = 1; i < n; ++i) {
      if ((byte(i) & 0xc0) != 0x80) return fail("a UTF-8 continuation byte");
      cp = (cp << 6) | (byte(i) & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return fail("a valid UTF-8 code point");
    out->append(s_.substr(pos_, n));
    pos_ += n;
    return Status();
  }

  Status parse_string(std::string* out) {
    ++pos_;  // '"'
    for (;;) {
      if (pos_ >= s_.size()) return fail("'\"' closing the string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return Status();
      }
      if (c < 0x20) return fail("no control character in a string");
      if (c >= 0x80) {
        MOE_TRY_PARSE(parse_utf8(out));
        continue;
      }
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) return fail("an escape character");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          MOE_TRY_PARSE(parse_hex4(&cp));
          if (cp >= 0xdc00 && cp <= 0xdfff) return fail("no lone low surrogate");
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (!literal("\\u")) return fail("a low surrogate after a high one");
            uint32_t low = 0;
            MOE_TRY_PARSE(parse_hex4(&low));
            if (low < 0xdc00 || low > 0xdfff) return fail("a low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          return fail("a valid escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u)");
      }
    }
  }
#undef MOE_TRY_PARSE

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

bool JsonValue::as_u64(uint64_t* out) const {
  if (kind != Kind::kNumber || text.empty()) return false;
  uint64_t v = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

const char* json_kind_name(JsonValue::Kind kind) {
  switch (kind) {
    case JsonValue::Kind::kNull: return "null";
    case JsonValue::Kind::kBool: return "boolean";
    case JsonValue::Kind::kNumber: return "number";
    case JsonValue::Kind::kString: return "string";
    case JsonValue::Kind::kArray: return "array";
    case JsonValue::Kind::kObject: return "object";
  }
  return "?";
}

StatusOr<JsonValue> parse_json(std::string_view text) {
  JsonValue value;
  Parser parser(text);
  Status st = parser.parse_document(&value);
  if (!st.ok()) return st;
  return value;
}

}  // namespace moe::models
