// One options table per layer.
//
// Each layer declares its tunables in its own `options.h` as `inline const Option<T>` values:
// name, default, help text and (by the template argument) type. Every option can be
// overridden from the environment as MOE_<NAME> (read once, when the option registers) or
// from code and command lines with set_option(); list_options() is what
// `moe info --config` prints. This is the only place in the project that calls getenv().
//
// Thread-safety: all functions are thread-safe. get() takes a lock: read options at setup,
// not in a data path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/status.h"

namespace moe::opt {

enum class Type : uint8_t { kBool, kInt, kDouble, kString };
enum class Source : uint8_t { kDefault, kEnvironment, kSet };

struct OptionInfo {
  std::string layer;
  std::string name;  // without the MOE_ prefix, upper case
  Type type;
  std::string default_text;
  std::string value_text;
  Source source;
  std::string help;
  std::string env_error;  // non-empty when MOE_<NAME> held an invalid value (default kept)
};

std::string_view type_name(Type type);
std::string_view source_name(Source source);

namespace detail {
// Registers an option; returns its index. Aborts on a duplicate name (a programming error).
size_t register_option(const char* layer, const char* name, Type type, std::string default_text,
                       const char* help);
std::string value_text(size_t index);
}  // namespace detail

// A typed handle on one registered option. Define as `inline const` in a layer's options.h.
template <typename T>
class Option {
 public:
  Option(const char* layer, const char* name, T default_value, const char* help);
  T get() const;
  const char* name() const { return name_; }

 private:
  size_t index_;
  const char* name_;
};

// Sets an option by name (with or without the MOE_ prefix) from text; the text must parse as
// the option's type. Returns kNotFound for an unknown name, kInvalidArgument for a bad value.
Status set_option(std::string_view name, std::string_view value_text);
// Restores the value the option had at start-up (environment or default).
Status reset_option(std::string_view name);
// Every registered option, sorted by layer then name.
std::vector<OptionInfo> list_options();
// Errors for every MOE_<NAME> environment value that failed to parse, and for MOE_ variables
// that name no option (a typo would otherwise be silently ignored).
Status check_environment();
// Options as a JSON object: {"NAME": {"layer":..., "type":..., "value":..., ...}, ...}.
std::string options_to_json();
// Options as an aligned, human-readable table.
std::string options_to_text();

bool parse_bool(std::string_view text, bool* out);
bool parse_int(std::string_view text, int64_t* out);  // accepts K/M/G/T binary suffixes
bool parse_double(std::string_view text, double* out);

// ---- implementation of the template ----
namespace detail {
template <typename T>
constexpr Type type_of() {
  if constexpr (std::is_same_v<T, bool>) return Type::kBool;
  else if constexpr (std::is_integral_v<T>) return Type::kInt;
  else if constexpr (std::is_floating_point_v<T>) return Type::kDouble;
  else return Type::kString;
}
template <typename T>
std::string to_text(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_integral_v<T>) return std::to_string(static_cast<int64_t>(v));
  else if constexpr (std::is_floating_point_v<T>) return strformat("%g", static_cast<double>(v));
  else return std::string(v);
}
}  // namespace detail

template <typename T>
Option<T>::Option(const char* layer, const char* name, T default_value, const char* help)
    : index_(detail::register_option(layer, name, detail::type_of<T>(),
                                     detail::to_text(default_value), help)),
      name_(name) {}

template <typename T>
T Option<T>::get() const {
  std::string text = detail::value_text(index_);
  if constexpr (std::is_same_v<T, bool>) {
    bool v = false;
    parse_bool(text, &v);
    return v;
  } else if constexpr (std::is_integral_v<T>) {
    int64_t v = 0;
    parse_int(text, &v);
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    double v = 0;
    parse_double(text, &v);
    return static_cast<T>(v);
  } else {
    return text;
  }
}

}  // namespace moe::opt
