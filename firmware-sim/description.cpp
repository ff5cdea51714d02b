// Reading and writing supernode description files (JSON against description.fbs).
//
// Design: the schema is the one definition of the file format. Reading hands the text to
// FlatBuffers' own JSON parser, loaded with the schema text embedded at build time, so the
// file is checked against the schema by the library that defines it: syntax, field names
// (an unknown field is an error, never skipped), types and ranges of numbers, duplicate
// fields. The parser's binary result is then read through the generated accessors into a
// dev::Topology; required fields are declared `= null` in the schema, so a field left out is
// told apart from a zero and reported by its path. Then validate_topology() checks the
// machine as a whole, and finalize() builds the derived indexes.
//
// Writing does not go through FlatBuffers' text generator: that prints doubles with 12
// significant digits, which would break the exact round trip promised in description.h.
// The writer below prints each number in its shortest exact form (std::to_chars) and puts
// one list entry per line so that a description stays readable and diffs well. Its field
// names are the schema's; the round-trip tests (which parse with unknown fields refused and
// compare every field) keep the two in step.
//
// FlatBuffers types never leave this file.
#include "firmware-sim/description.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <flatbuffers/idl.h>

#include "firmware-sim/description_generated.h"
#include "firmware-sim/presets.h"
#include "firmware-sim/validate.h"
#include "runtime/base/check.h"
#include "runtime/base/json.h"
#include "runtime/base/strformat.h"

namespace moe::sim {
namespace {

using dev::Topology;

constexpr char kSchemaText[] =
#include "firmware-sim/description_fbs_text.h"
    ;

// ---- reading ---------------------------------------------------------------------------

// FlatBuffers reports "LINE: COLUMN: error: MESSAGE" (after any warnings, one per line);
// this turns its last error into "ORIGIN:LINE:COLUMN: MESSAGE".
std::string format_parser_error(const std::string& error, std::string_view origin) {
  std::string line = error;
  size_t at = error.rfind("error: ");
  if (at != std::string::npos) {
    size_t begin = error.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    size_t end = error.find('\n', at);
    line = error.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  }
  unsigned line_no = 0, column = 0;
  int consumed = 0;
  if (std::sscanf(line.c_str(), "%u: %u: error: %n", &line_no, &column, &consumed) == 2 &&
      consumed > 0) {
    return strformat("%.*s:%u:%u: %s", static_cast<int>(origin.size()), origin.data(), line_no,
                     column, line.c_str() + consumed);
  }
  return strformat("%.*s: %s", static_cast<int>(origin.size()), origin.data(), line.c_str());
}

Status missing(const std::string& path) {
  return make_error(StatusCode::kInvalidArgument, "%s: missing", path.c_str());
}

std::string item_path(const char* list, size_t index, const char* field) {
  return strformat("%s[%zu].%s", list, index, field);
}

// Sets `out` from a required (`= null`) field; false when the file left it out.
template <typename T, typename Out>
bool take(const flatbuffers::Optional<T>& field, Out& out) {
  if (!field.has_value()) return false;
  out = static_cast<Out>(*field);
  return true;
}

// `path` is only built when the field is missing.
#define MOE_TAKE_REQUIRED(field, out, path)            \
  do {                                                 \
    if (!take((field), (out))) return missing(path);   \
  } while (0)

Status read_endpoint(const fb::Endpoint* e, size_t link, const char* end, dev::Endpoint& out) {
  auto path = [&](const char* field) { return strformat("links[%zu].%s%s", link, end, field); };
  if (e == nullptr) return missing(path(""));
  if (!e->kind().has_value()) return missing(path(".kind"));
  switch (*e->kind()) {
    case fb::EndpointKind::Npu: out.kind = dev::EndpointKind::kNpu; break;
    case fb::EndpointKind::Switch: out.kind = dev::EndpointKind::kSwitch; break;
    default:
      return make_error(StatusCode::kInvalidArgument,
                        "%s: unknown value %u (expected Npu or Switch)", path(".kind").c_str(),
                        static_cast<unsigned>(*e->kind()));
  }
  MOE_TAKE_REQUIRED(e->id(), out.id, path(".id"));
  return ok_status();
}

Status read_compute(const fb::Compute* c, dev::ComputeDesc& out) {
  if (c == nullptr) return missing("compute");
  MOE_TAKE_REQUIRED(c->bf16_tflops(), out.bf16_tflops, "compute.bf16_tflops");
  MOE_TAKE_REQUIRED(c->int8_tops(), out.int8_tops, "compute.int8_tops");
  out.matmul_bandwidth_efficiency = c->matmul_bandwidth_efficiency();
  out.matmul_compute_efficiency = c->matmul_compute_efficiency();
  out.launch_ns = c->launch_ns();
  return ok_status();
}

Status read_hbm(const fb::Hbm* h, dev::HbmDesc& out) {
  if (h == nullptr) return missing("hbm");
  MOE_TAKE_REQUIRED(h->capacity_bytes(), out.capacity_bytes, "hbm.capacity_bytes");
  MOE_TAKE_REQUIRED(h->bandwidth_gbps(), out.bandwidth_gbps, "hbm.bandwidth_gbps");
  return ok_status();
}

Status read_cpus(const fb::Supernode& s, std::vector<dev::CpuDesc>& out) {
  if (s.cpus() == nullptr) return ok_status();
  out.resize(s.cpus()->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const fb::Cpu* c = s.cpus()->Get(static_cast<flatbuffers::uoffset_t>(i));
    MOE_TAKE_REQUIRED(c->id(), out[i].id, item_path("cpus", i, "id"));
    MOE_TAKE_REQUIRED(c->node(), out[i].node, item_path("cpus", i, "node"));
    MOE_TAKE_REQUIRED(c->cores(), out[i].cores, item_path("cpus", i, "cores"));
  }
  return ok_status();
}

Status read_npus(const fb::Supernode& s, std::vector<dev::NpuDesc>& out) {
  if (s.npus() == nullptr) return ok_status();
  out.resize(s.npus()->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const fb::Npu* n = s.npus()->Get(static_cast<flatbuffers::uoffset_t>(i));
    MOE_TAKE_REQUIRED(n->id(), out[i].id, item_path("npus", i, "id"));
    MOE_TAKE_REQUIRED(n->node(), out[i].node, item_path("npus", i, "node"));
    MOE_TAKE_REQUIRED(n->index_in_node(), out[i].index_in_node,
                      item_path("npus", i, "index_in_node"));
    MOE_TAKE_REQUIRED(n->near_cpu(), out[i].near_cpu, item_path("npus", i, "near_cpu"));
  }
  return ok_status();
}

Status read_switches(const fb::Supernode& s, std::vector<dev::SwitchDesc>& out) {
  if (s.switches() == nullptr) return ok_status();
  out.resize(s.switches()->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const fb::Switch* w = s.switches()->Get(static_cast<flatbuffers::uoffset_t>(i));
    MOE_TAKE_REQUIRED(w->id(), out[i].id, item_path("switches", i, "id"));
    if (!w->level().has_value()) return missing(item_path("switches", i, "level"));
    switch (*w->level()) {
      case fb::SwitchLevel::L1: out[i].level = dev::SwitchLevel::kL1; break;
      case fb::SwitchLevel::L2: out[i].level = dev::SwitchLevel::kL2; break;
      default:
        return make_error(StatusCode::kInvalidArgument,
                          "switches[%zu].level: unknown value %u (expected L1 or L2)", i,
                          static_cast<unsigned>(*w->level()));
    }
    MOE_TAKE_REQUIRED(w->plane(), out[i].plane, item_path("switches", i, "plane"));
    // Optional: an L2 switch has no node (validate_topology checks which is which).
    out[i].node = w->node().has_value() ? *w->node() : dev::kInvalidId;
  }
  return ok_status();
}

Status read_links(const fb::Supernode& s, std::vector<dev::LinkDesc>& out) {
  if (s.links() == nullptr) return ok_status();
  out.resize(s.links()->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const fb::Link* l = s.links()->Get(static_cast<flatbuffers::uoffset_t>(i));
    MOE_TAKE_REQUIRED(l->id(), out[i].id, item_path("links", i, "id"));
    MOE_TAKE_REQUIRED(l->plane(), out[i].plane, item_path("links", i, "plane"));
    MOE_TRY(read_endpoint(l->a(), i, "a", out[i].a));
    MOE_TRY(read_endpoint(l->b(), i, "b", out[i].b));
    MOE_TAKE_REQUIRED(l->bandwidth_gbps(), out[i].bandwidth_gbps,
                      item_path("links", i, "bandwidth_gbps"));
    MOE_TAKE_REQUIRED(l->latency_ns(), out[i].latency_ns, item_path("links", i, "latency_ns"));
  }
  return ok_status();
}

// The parsed file to a Topology: every required field present, enums known. The rest of
// what makes a description valid is validate_topology's job.
Status read_supernode(const fb::Supernode& s, Topology& t) {
  uint32_t version = 0;
  MOE_TAKE_REQUIRED(s.version(), version, "version");
  if (version < 1)
    return make_error(StatusCode::kInvalidArgument, "version: must be >= 1 (got %u)", version);
  if (version > kDescriptionVersion)
    return make_error(StatusCode::kUnsupported,
                      "version: %u is newer than this build reads (%u); upgrade the runtime",
                      version, kDescriptionVersion);
  if (s.name() == nullptr) return missing("name");
  t.name = s.name()->str();
  MOE_TAKE_REQUIRED(s.num_nodes(), t.num_nodes, "num_nodes");
  MOE_TAKE_REQUIRED(s.num_planes(), t.num_planes, "num_planes");
  t.dies_per_npu = s.dies_per_npu();
  MOE_TAKE_REQUIRED(s.packet_bytes(), t.packet_bytes, "packet_bytes");
  t.packet_header_bytes = s.packet_header_bytes();
  MOE_TAKE_REQUIRED(s.host_link_bandwidth_gbps(), t.host_link_bandwidth_gbps,
                    "host_link_bandwidth_gbps");
  MOE_TRY(read_compute(s.compute(), t.compute));
  MOE_TRY(read_hbm(s.hbm(), t.hbm));
  MOE_TRY(read_cpus(s, t.cpus));
  MOE_TRY(read_npus(s, t.npus));
  MOE_TRY(read_switches(s, t.switches));
  MOE_TRY(read_links(s, t.links));
  return ok_status();
}

#undef MOE_TAKE_REQUIRED

std::string origin_string(std::string_view origin) {
  return origin.empty() ? std::string("<description>") : std::string(origin);
}

// ---- writing ---------------------------------------------------------------------------

// The shortest text that reads back as exactly `v`; nan / inf for non-finite values (the
// FlatBuffers reader accepts them; the validator then refuses them).
void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "nan";
    return;
  }
  if (std::isinf(v)) {
    out += v < 0 ? "-inf" : "inf";
    return;
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, ec == std::errc() ? end : buf);
}
void append_number(std::string& out, uint64_t v) { out += std::to_string(v); }
void append_number(std::string& out, uint32_t v) { out += std::to_string(v); }

// Writes `"key": value` pairs with commas between them, on one line.
class FieldList {
 public:
  explicit FieldList(std::string& out) : out_(out) {}
  template <typename T>
  FieldList& number(const char* key, T v) {
    append_number(begin_field(key), v);
    return *this;
  }
  FieldList& text(const char* key, std::string_view v) {
    JsonWriter::escape_into(begin_field(key), v);
    return *this;
  }
  // Already-formatted JSON (an enum name in quotes, a nested object).
  FieldList& raw(const char* key, std::string_view json) {
    begin_field(key) += json;
    return *this;
  }

 private:
  std::string& begin_field(const char* key) {
    if (!first_) out_ += ", ";
    first_ = false;
    out_ += '"';
    out_ += key;
    out_ += "\": ";
    return out_;
  }
  std::string& out_;
  bool first_ = true;
};

std::string level_json(dev::SwitchLevel level) {
  switch (level) {
    case dev::SwitchLevel::kL1: return "\"L1\"";
    case dev::SwitchLevel::kL2: return "\"L2\"";
  }
  return std::to_string(static_cast<unsigned>(level));  // unknown: kept as its number
}

std::string endpoint_json(const dev::Endpoint& e) {
  std::string out = "{";
  FieldList f(out);
  switch (e.kind) {
    case dev::EndpointKind::kNpu: f.raw("kind", "\"Npu\""); break;
    case dev::EndpointKind::kSwitch: f.raw("kind", "\"Switch\""); break;
    default: f.number("kind", static_cast<uint32_t>(e.kind)); break;
  }
  f.number("id", e.id);
  out += '}';
  return out;
}

// Writes `"key": [` then one `{...}` per line from `item(out, element)`, then `]`.
template <typename T, typename F>
void append_list(std::string& out, const char* key, const std::vector<T>& items, F item) {
  out += "  \"";
  out += key;
  out += "\": [";
  for (size_t i = 0; i < items.size(); ++i) {
    out += i == 0 ? "\n    {" : ",\n    {";
    FieldList f(out);
    item(f, items[i]);
    out += '}';
  }
  out += items.empty() ? "]" : "\n  ]";
}

}  // namespace

StatusOr<Topology> parse_description_json(std::string_view json_text, std::string_view origin_view) {
  const std::string origin = origin_string(origin_view);
  if (json_text.size() > kMaxDescriptionBytes)
    return make_error(StatusCode::kOutOfRange, "%s: %zu bytes, more than the %zu a description may have",
                      origin.c_str(), json_text.size(), kMaxDescriptionBytes);
  if (size_t nul = json_text.find('\0'); nul != std::string_view::npos)
    return make_error(StatusCode::kParseError,
                      "%s: a NUL byte at offset %zu (a description is JSON text)", origin.c_str(),
                      nul);
  flatbuffers::Parser parser;
  parser.opts.strict_json = true;                     // quoted field names, as JSON has
  parser.opts.skip_unexpected_fields_in_json = false;  // an unknown field is a mistake
  if (!parser.Parse(kSchemaText))
    return make_error(StatusCode::kInternal, "the built-in description schema does not parse: %s",
                      parser.error_.c_str());
  const std::string text(json_text);  // the parser wants a NUL-terminated string
  if (!parser.ParseJson(text.c_str()))
    return Status(StatusCode::kParseError, format_parser_error(parser.error_, origin));
  const uint8_t* buffer = parser.builder_.GetBufferPointer();
  if (buffer == nullptr || parser.builder_.GetSize() == 0)
    return make_error(StatusCode::kParseError, "%s: no description in the text", origin.c_str());
  Topology t;
  Status read = read_supernode(*fb::GetSupernode(buffer), t);
  if (!read.ok()) return read.with_context(origin);
  Status valid = validate_topology(t);
  if (!valid.ok()) return valid.with_context(origin);
  t.finalize();
  return t;
}

StatusOr<Topology> load_description_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return make_error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                      "cannot open description file '%s': %s", path.c_str(), std::strerror(err));
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return make_error(StatusCode::kInvalidArgument, "cannot stat description file '%s': %s",
                      path.c_str(), std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return make_error(StatusCode::kInvalidArgument, "description file '%s' is not a regular file",
                      path.c_str());
  if (static_cast<uint64_t>(st.st_size) > kMaxDescriptionBytes)
    return make_error(StatusCode::kOutOfRange,
                      "description file '%s' has %lld bytes, more than the %zu allowed",
                      path.c_str(), static_cast<long long>(st.st_size), kMaxDescriptionBytes);
  // Read to the end, allowing one byte past the limit to notice a file that grew meanwhile.
  std::string text;
  text.resize(static_cast<size_t>(st.st_size) + 1);
  size_t have = 0;
  for (;;) {
    if (have == text.size()) {
      if (text.size() > kMaxDescriptionBytes)
        return make_error(StatusCode::kOutOfRange,
                          "description file '%s' has more than the %zu bytes allowed",
                          path.c_str(), kMaxDescriptionBytes);
      text.resize(std::min(text.size() * 2, kMaxDescriptionBytes + 1));
    }
    ssize_t n = ::read(fd, text.data() + have, text.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(StatusCode::kInvalidArgument, "cannot read description file '%s': %s",
                        path.c_str(), std::strerror(errno));
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  text.resize(have);
  return parse_description_json(text, path);
}

StatusOr<Topology> load_description(std::string_view name_or_path) {
  std::vector<std::string> presets = preset_names();
  if (std::find(presets.begin(), presets.end(), name_or_path) != presets.end()) {
    MOE_TRY_ASSIGN(Topology t, make_preset(name_or_path));
    Status valid = validate_topology(t);
    if (!valid.ok())
      return make_error(StatusCode::kInternal, "built-in preset '%s' is invalid: %s",
                        t.name.c_str(), valid.message().c_str());
    return t;
  }
  std::string path(name_or_path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) {
    std::string names;
    for (const std::string& n : presets) names += (names.empty() ? "" : ", ") + n;
    return make_error(StatusCode::kNotFound,
                      "'%s' is neither a supernode preset (%s) nor an existing description file",
                      path.c_str(), names.c_str());
  }
  return load_description_file(path);
}

std::string description_to_json(const Topology& t) {
  std::string out = "{\n";
  auto scalar = [&out](const char* key, auto v) {
    out += "  \"";
    out += key;
    out += "\": ";
    append_number(out, v);
    out += ",\n";
  };
  scalar("version", kDescriptionVersion);
  out += "  \"name\": ";
  JsonWriter::escape_into(out, t.name);
  out += ",\n";
  scalar("num_nodes", t.num_nodes);
  scalar("num_planes", t.num_planes);
  scalar("dies_per_npu", t.dies_per_npu);
  scalar("packet_bytes", t.packet_bytes);
  scalar("packet_header_bytes", t.packet_header_bytes);
  scalar("host_link_bandwidth_gbps", t.host_link_bandwidth_gbps);
  out += "  \"compute\": {";
  FieldList(out)
      .number("bf16_tflops", t.compute.bf16_tflops)
      .number("int8_tops", t.compute.int8_tops)
      .number("matmul_bandwidth_efficiency", t.compute.matmul_bandwidth_efficiency)
      .number("matmul_compute_efficiency", t.compute.matmul_compute_efficiency)
      .number("launch_ns", t.compute.launch_ns);
  out += "},\n  \"hbm\": {";
  FieldList(out)
      .number("capacity_bytes", t.hbm.capacity_bytes)
      .number("bandwidth_gbps", t.hbm.bandwidth_gbps);
  out += "},\n";
  append_list(out, "cpus", t.cpus, [](FieldList& f, const dev::CpuDesc& c) {
    f.number("id", c.id).number("node", c.node).number("cores", c.cores);
  });
  out += ",\n";
  append_list(out, "npus", t.npus, [](FieldList& f, const dev::NpuDesc& n) {
    f.number("id", n.id)
        .number("node", n.node)
        .number("index_in_node", n.index_in_node)
        .number("near_cpu", n.near_cpu);
  });
  out += ",\n";
  append_list(out, "switches", t.switches, [](FieldList& f, const dev::SwitchDesc& s) {
    f.number("id", s.id).raw("level", level_json(s.level)).number("plane", s.plane);
    if (s.node != dev::kInvalidId) f.number("node", s.node);
  });
  out += ",\n";
  append_list(out, "links", t.links, [](FieldList& f, const dev::LinkDesc& l) {
    f.number("id", l.id)
        .number("plane", l.plane)
        .raw("a", endpoint_json(l.a))
        .raw("b", endpoint_json(l.b))
        .number("bandwidth_gbps", l.bandwidth_gbps)
        .number("latency_ns", l.latency_ns);
  });
  out += "\n}\n";
  return out;
}

std::string describe_topology(const Topology& t) {
  uint64_t cores = 0;
  for (const dev::CpuDesc& c : t.cpus) cores += c.cores;
  size_t l1 = 0, l2 = 0;
  for (const dev::SwitchDesc& s : t.switches) (s.level == dev::SwitchLevel::kL1 ? l1 : l2)++;
  double bw_min = 0, bw_max = 0, lat_min = 0, lat_max = 0;
  for (dev::NpuId n = 0; n < t.num_npus(); ++n) {
    double bw = t.npu_fabric_bandwidth_gbps(n);
    bw_min = n == 0 ? bw : std::min(bw_min, bw);
    bw_max = n == 0 ? bw : std::max(bw_max, bw);
  }
  for (size_t i = 0; i < t.links.size(); ++i) {
    double lat = t.links[i].latency_ns;
    lat_min = i == 0 ? lat : std::min(lat_min, lat);
    lat_max = i == 0 ? lat : std::max(lat_max, lat);
  }
  auto range = [](double lo, double hi) {
    return lo == hi ? strformat("%g", lo) : strformat("%g..%g", lo, hi);
  };
  std::string out;
  out += strformat("%s: %u nodes, %u NPUs (%u dies each), %zu host CPUs (%llu cores)\n",
                   t.name.c_str(), t.num_nodes, t.num_npus(), t.dies_per_npu, t.cpus.size(),
                   static_cast<unsigned long long>(cores));
  out += strformat("fabric: %u planes, %zu switches (%zu L1, %zu L2), %zu links; %s GB/s per NPU "
                   "per direction; %s ns per hop\n",
                   t.num_planes, t.switches.size(), l1, l2, t.links.size(),
                   range(bw_min, bw_max).c_str(), range(lat_min, lat_max).c_str());
  out += strformat("packets: %u B payload + %u B header; host link %g GB/s\n", t.packet_bytes,
                   t.packet_header_bytes, t.host_link_bandwidth_gbps);
  out += strformat("per NPU: HBM %s at %g GB/s; per die: %g TFLOPS BF16, %g TOPS INT8\n",
                   format_bytes(static_cast<double>(t.hbm.capacity_bytes)).c_str(),
                   t.hbm.bandwidth_gbps, t.compute.bf16_tflops, t.compute.int8_tops);
  return out;
}

}  // namespace moe::sim
