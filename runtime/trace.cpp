// Trace: spans kept in memory under a mutex, serialized once with JsonWriter. Process ids:
// 0 is the host (wall clock), 1 + npu is an NPU (modelled clock); thread ids are lane or
// host-thread indexes, so every lane gets a name through a metadata ("M") event.
#include "runtime/trace.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "runtime/base/json.h"
#include "runtime/base/strformat.h"

namespace moe::rt {
namespace {

void name_event(JsonWriter& w, const char* what, uint64_t pid, uint64_t tid, const std::string& name) {
  w.begin_object().key("name").value(what).key("ph").value("M").key("pid").value(pid);
  w.key("tid").value(tid).key("args").begin_object().key("name").value(name).end_object();
  w.end_object();
}

void span_event(JsonWriter& w, const std::string& name, uint64_t pid, uint64_t tid, double ts_us,
                double dur_us) {
  w.begin_object().key("name").value(name).key("ph").value("X").key("pid").value(pid);
  w.key("tid").value(tid).key("ts").value(ts_us).key("dur").value(dur_us).end_object();
}

}  // namespace

void Trace::add_device_span(dev::NpuId npu, std::string_view lane, std::string_view name,
                            ModelTime start, ModelTime end) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(lanes_.begin(), lanes_.end(), lane);
  if (it == lanes_.end()) it = lanes_.insert(lanes_.end(), std::string(lane));
  device_spans_.push_back(DeviceSpan{npu, static_cast<uint32_t>(it - lanes_.begin()),
                                     std::string(name), start, end});
}

void Trace::add_host_span(std::string_view name, int64_t start_wall_ns, int64_t end_wall_ns) {
  const std::thread::id self = std::this_thread::get_id();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(threads_.begin(), threads_.end(), self);
  if (it == threads_.end()) it = threads_.insert(threads_.end(), self);
  host_spans_.push_back(HostSpan{static_cast<uint32_t>(it - threads_.begin()), std::string(name),
                                 start_wall_ns, end_wall_ns});
}

size_t Trace::num_device_spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return device_spans_.size();
}

size_t Trace::num_host_spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return host_spans_.size();
}

std::string Trace::to_json() const {
  std::lock_guard<std::mutex> lock(mu_);
  JsonWriter w;
  w.begin_object().key("traceEvents").begin_array();
  if (!host_spans_.empty()) {
    name_event(w, "process_name", 0, 0, "host (wall)");
    for (size_t t = 0; t < threads_.size(); ++t)
      name_event(w, "thread_name", 0, t, strformat("host thread %zu", t));
    const int64_t origin = std::min_element(host_spans_.begin(), host_spans_.end(),
                                            [](const HostSpan& a, const HostSpan& b) {
                                              return a.start_wall_ns < b.start_wall_ns;
                                            })->start_wall_ns;
    for (const HostSpan& s : host_spans_)
      span_event(w, s.name, 0, s.thread, double(s.start_wall_ns - origin) * 1e-3,
                 double(s.end_wall_ns - s.start_wall_ns) * 1e-3);
  }
  std::set<std::pair<dev::NpuId, uint32_t>> named;
  for (const DeviceSpan& s : device_spans_) {
    const uint64_t pid = uint64_t{s.npu} + 1;
    if (named.insert({s.npu, dev::kInvalidId}).second)
      name_event(w, "process_name", pid, 0, strformat("NPU %u (modelled)", s.npu));
    if (named.insert({s.npu, s.lane}).second) name_event(w, "thread_name", pid, s.lane, lanes_[s.lane]);
    span_event(w, s.name, pid, s.lane, s.start.us(), (s.end - s.start).us());
  }
  w.end_array().key("displayTimeUnit").value("ns").end_object();
  return w.take();
}

Status Trace::write(const std::string& path) const {
  const std::string text = to_json();
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr)
    return make_error(errno == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                      "trace %s: %s", path.c_str(), std::strerror(errno));
  const size_t written = std::fwrite(text.data(), 1, text.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != text.size() || !closed)
    return make_error(StatusCode::kInvalidArgument, "trace %s: short write (%zu of %zu bytes)",
                      path.c_str(), written, text.size());
  return Status();
}

}  // namespace moe::rt
