// The process-wide option registry. Values are kept as validated text so that listing them
// shows exactly what was given; typed access parses the (already validated) text.
#include "runtime/base/options.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "runtime/base/json.h"
#include "runtime/base/log.h"

extern char** environ;

namespace moe::opt {
namespace {

struct Entry {
  std::string layer;
  std::string name;
  Type type;
  std::string default_text;
  std::string startup_text;
  std::string value_text;
  Source startup_source;
  Source source;
  std::string help;
  std::string env_error;
};

struct Registry {
  std::mutex mu;
  std::vector<Entry> entries;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: options outlive static destructors
  return *r;
}

std::string normalize(std::string_view name) {
  if (name.size() > 4 && (name.substr(0, 4) == "MOE_" || name.substr(0, 4) == "moe_")) name.remove_prefix(4);
  std::string out(name);
  for (char& c : out) c = (c == '-') ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool valid_for(Type type, std::string_view text) {
  bool b;
  int64_t i;
  double d;
  switch (type) {
    case Type::kBool: return parse_bool(text, &b);
    case Type::kInt: return parse_int(text, &i);
    case Type::kDouble: return parse_double(text, &d);
    case Type::kString: return true;
  }
  return false;
}

Entry* find_locked(Registry& r, const std::string& name) {
  for (Entry& e : r.entries)
    if (e.name == name) return &e;
  return nullptr;
}

}  // namespace

std::string_view type_name(Type type) {
  switch (type) {
    case Type::kBool: return "bool";
    case Type::kInt: return "int";
    case Type::kDouble: return "double";
    case Type::kString: return "string";
  }
  return "?";
}

std::string_view source_name(Source source) {
  switch (source) {
    case Source::kDefault: return "default";
    case Source::kEnvironment: return "environment";
    case Source::kSet: return "set";
  }
  return "?";
}

bool parse_bool(std::string_view text, bool* out) {
  std::string t(text);
  for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "1" || t == "true" || t == "yes" || t == "on") { *out = true; return true; }
  if (t == "0" || t == "false" || t == "no" || t == "off") { *out = false; return true; }
  return false;
}

bool parse_int(std::string_view text, int64_t* out) {
  std::string t(text);
  if (t.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(t.c_str(), &end, 0);
  if (errno != 0 || end == t.c_str()) return false;
  int shift = 0;
  if (*end != '\0') {
    switch (std::toupper(static_cast<unsigned char>(*end))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      default: return false;
    }
    ++end;
    if (*end == 'i' || *end == 'I') ++end;
    if (*end == 'B' || *end == 'b') ++end;
    if (*end != '\0') return false;
  }
  if (shift && (v > (INT64_MAX >> shift) || v < (INT64_MIN >> shift))) return false;
  *out = static_cast<int64_t>(v) * (int64_t{1} << shift);
  return true;
}

bool parse_double(std::string_view text, double* out) {
  std::string t(text);
  if (t.empty()) return false;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(t.c_str(), &end);
  if (errno != 0 || end == t.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

namespace detail {

size_t register_option(const char* layer, const char* name, Type type, std::string default_text,
                       const char* help) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::string key = normalize(name);
  if (find_locked(r, key) != nullptr) {
    std::fprintf(stderr, "moe: option %s registered twice (layer %s)\n", key.c_str(), layer);
    std::abort();
  }
  Entry e{layer, key, type, default_text, default_text, default_text, Source::kDefault,
          Source::kDefault, help, {}};
  std::string env_name = "MOE_" + key;
  if (const char* env = std::getenv(env_name.c_str())) {
    if (valid_for(type, env)) {
      e.startup_text = e.value_text = env;
      e.startup_source = e.source = Source::kEnvironment;
    } else {
      e.env_error = strformat("%s=%s is not a valid %s; using the default %s", env_name.c_str(),
                              env, std::string(type_name(type)).c_str(), default_text.c_str());
    }
  }
  r.entries.push_back(std::move(e));
  return r.entries.size() - 1;
}

std::string value_text(size_t index) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.entries[index].value_text;
}

}  // namespace detail

Status set_option(std::string_view name, std::string_view value_text) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::string key = normalize(name);
  Entry* e = find_locked(r, key);
  if (e == nullptr) return make_error(StatusCode::kNotFound, "no option named %s", key.c_str());
  if (!valid_for(e->type, value_text))
    return make_error(StatusCode::kInvalidArgument, "option %s expects a %s, got '%.*s'",
                      key.c_str(), std::string(type_name(e->type)).c_str(),
                      static_cast<int>(value_text.size()), value_text.data());
  e->value_text = std::string(value_text);
  e->source = Source::kSet;
  return ok_status();
}

Status reset_option(std::string_view name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  Entry* e = find_locked(r, normalize(name));
  if (e == nullptr) return make_error(StatusCode::kNotFound, "no option named %s", normalize(name).c_str());
  e->value_text = e->startup_text;
  e->source = e->startup_source;
  return ok_status();
}

std::vector<OptionInfo> list_options() {
  Registry& r = registry();
  std::vector<OptionInfo> out;
  {
    std::lock_guard<std::mutex> lock(r.mu);
    for (const Entry& e : r.entries)
      out.push_back(OptionInfo{e.layer, e.name, e.type, e.default_text, e.value_text, e.source,
                               e.help, e.env_error});
  }
  std::sort(out.begin(), out.end(), [](const OptionInfo& a, const OptionInfo& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.name < b.name;
  });
  return out;
}

Status check_environment() {
  std::string problems;
  for (const OptionInfo& info : list_options())
    if (!info.env_error.empty()) problems += (problems.empty() ? "" : "; ") + info.env_error;
  Registry& r = registry();
  for (char** env = environ; env && *env; ++env) {
    std::string_view kv(*env);
    if (kv.substr(0, 4) != "MOE_") continue;
    std::string key = normalize(kv.substr(0, kv.find('=')));
    std::lock_guard<std::mutex> lock(r.mu);
    if (find_locked(r, key) == nullptr)
      problems += (problems.empty() ? "" : "; ") + strformat("MOE_%s names no option", key.c_str());
  }
  if (problems.empty()) return ok_status();
  return Status(StatusCode::kInvalidArgument, "environment: " + problems);
}

std::string options_to_json() {
  JsonWriter w;
  w.begin_object();
  for (const OptionInfo& o : list_options()) {
    w.key(o.name).begin_object();
    w.key("layer").value(o.layer);
    w.key("type").value(type_name(o.type));
    w.key("default").value(o.default_text);
    w.key("value").value(o.value_text);
    w.key("source").value(source_name(o.source));
    w.key("help").value(o.help);
    w.end_object();
  }
  w.end_object();
  return w.take();
}

std::string options_to_text() {
  std::vector<OptionInfo> all = list_options();
  size_t width = 0;
  for (const OptionInfo& o : all) width = std::max(width, o.name.size() + 4);
  std::string out;
  std::string layer;
  for (const OptionInfo& o : all) {
    if (o.layer != layer) {
      layer = o.layer;
      out += "[" + layer + "]\n";
    }
    std::string env = "MOE_" + o.name;
    out += strformat("  %-*s = %-12s (%s, default %s%s)\n      %s\n", static_cast<int>(width),
                     env.c_str(), o.value_text.c_str(), std::string(type_name(o.type)).c_str(),
                     o.default_text.c_str(),
                     o.source == Source::kDefault ? "" : strformat(", from %s", std::string(source_name(o.source)).c_str()).c_str(),
                     o.help.c_str());
  }
  return out;
}

}  // namespace moe::opt
