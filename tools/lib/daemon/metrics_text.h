// Metrics as text: one list of named samples rendered as a flat JSON object or in the
// Prometheus text exposition format (version 0.0.4: "# HELP", "# TYPE", "name value").
//
// Names follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*; the unit last: _ms, _bytes,
// _total for counters); add() checks them (a bad name is a programming error). A name
// appears once. JSON carries the same names and values (help and type are Prometheus-only).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moe::daemon {

enum class MetricType { kCounter, kGauge };

class MetricsText {
 public:
  MetricsText& counter(std::string_view name, std::string_view help, double value);
  MetricsText& gauge(std::string_view name, std::string_view help, double value);

  std::string json() const;        // {"name": value, ...} in the order added
  std::string prometheus() const;  // ends with a newline

  size_t size() const { return samples_.size(); }

 private:
  struct Sample {
    std::string name, help;
    MetricType type;
    double value;
  };
  MetricsText& add(std::string_view name, std::string_view help, MetricType type, double value);
  std::vector<Sample> samples_;
};

// The value of sample `name` in Prometheus text (as prometheus() writes it), or -1 when no
// line holds it. For clients reading moed's metrics.
double prometheus_sample(std::string_view text, std::string_view name);

// True when `name` is a valid Prometheus metric name.
bool valid_metric_name(std::string_view name);

}  // namespace moe::daemon
