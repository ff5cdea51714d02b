// MetricsText: the two renderings of one sample list.
#include "tools/lib/daemon/metrics_text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/base/check.h"
#include "runtime/base/json.h"

namespace moe::daemon {

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

double prometheus_sample(std::string_view text, std::string_view name) {
  const std::string key = std::string(name) + " ";
  for (size_t at = text.find(key); at != std::string_view::npos; at = text.find(key, at + 1)) {
    if (at != 0 && text[at - 1] != '\n') continue;  // a longer name ending in `name`
    const size_t start = at + key.size();
    const size_t end = text.find('\n', start);
    return std::strtod(std::string(text.substr(start, end - start)).c_str(), nullptr);
  }
  return -1;
}

MetricsText& MetricsText::counter(std::string_view name, std::string_view help, double value) {
  return add(name, help, MetricType::kCounter, value);
}

MetricsText& MetricsText::gauge(std::string_view name, std::string_view help, double value) {
  return add(name, help, MetricType::kGauge, value);
}

MetricsText& MetricsText::add(std::string_view name, std::string_view help, MetricType type,
                              double value) {
  MOE_ASSERT(valid_metric_name(name));
  for (const Sample& s : samples_) MOE_ASSERT(s.name != name);
  samples_.push_back({std::string(name), std::string(help), type, value});
  return *this;
}

std::string MetricsText::json() const {
  JsonWriter w;
  w.begin_object();
  for (const Sample& s : samples_) {
    w.key(s.name);
    if (!std::isfinite(s.value)) {
      w.null();
    } else if (s.value == std::floor(s.value) && std::fabs(s.value) < 9e15) {
      w.value(static_cast<int64_t>(s.value));
    } else {
      w.value(s.value);
    }
  }
  w.end_object();
  return w.str();
}

std::string MetricsText::prometheus() const {
  std::string out;
  char number[64];
  for (const Sample& s : samples_) {
    out += "# HELP " + s.name + " ";
    for (char c : s.help) {  // escape as the format asks: backslash and newline
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '\n') {
        out += "\\n";
      } else {
        out += c;
      }
    }
    out += "\n# TYPE " + s.name + (s.type == MetricType::kCounter ? " counter\n" : " gauge\n");
    if (std::isnan(s.value)) {
      std::snprintf(number, sizeof(number), "NaN");
    } else if (std::isinf(s.value)) {
      std::snprintf(number, sizeof(number), s.value > 0 ? "+Inf" : "-Inf");
    } else {
      std::snprintf(number, sizeof(number), "%.12g", s.value);
    }
    out += s.name + " " + number + "\n";
  }
  return out;
}

}  // namespace moe::daemon
