// The `moe` commands that ask the moed daemon something: status, load, unload, metrics and
// the admin requests (fault, drain, shutdown). `moe generate` is in cmd_generate.cpp.
//
// Each command parses its flags strictly (tools/moe/client_options.h), connects to the
// socket (--socket, default moe::default_socket_path()), sends one request through
// moe::Client and prints the answer, as text for people or, with --json, one JSON object on
// stdout for scripts. A daemon or connection error is printed as "moe <cmd>: <status>" and
// exits 1, so "no daemon" reads as the kNotFound message that names the socket path.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "runtime/base/json.h"
#include "runtime/base/strformat.h"
#include "tools/moe/client_options.h"
#include "tools/moe/commands.h"

namespace moe::tools {
namespace {

std::string socket_help() {
  return strformat("  --socket PATH      moed's socket (default %s)\n", default_socket_path().c_str());
}

void write_model_json(JsonWriter& w, const proto::ModelInfo& m) {
  w.begin_object()
      .key("name").value(m.name)
      .key("source").value(source_name(m.source))
      .key("precision").value(precision_name(m.precision))
      .key("mode").value(mode_name(m.mode))
      .key("npus").value(m.npus)
      .key("attention_dp").value(m.attention_dp)
      .key("layers").value(m.num_layers)
      .key("vocab_size").value(m.vocab_size)
      .key("weight_bytes").value(m.weight_bytes)
      .end_object();
}

std::string model_line(const proto::ModelInfo& m) {
  return strformat("%s (%s, %s, %s): %u NPUs, attention DP %u, %u layers, vocab %u, %s of weights",
                   m.name.c_str(), source_name(m.source), precision_name(m.precision),
                   mode_name(m.mode), m.npus, m.attention_dp, m.num_layers, m.vocab_size,
                   format_bytes(static_cast<double>(m.weight_bytes)).c_str());
}

std::string id_list(const std::vector<uint32_t>& ids) {
  if (ids.empty()) return "none";
  std::string out;
  for (uint32_t id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

void write_ids_json(JsonWriter& w, const std::vector<uint32_t>& ids) {
  w.begin_array();
  for (uint32_t id : ids) w.value(id);
  w.end_array();
}

// ---- status ----

void status_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe status [--socket PATH] [--json] [--no-topology]\n"
               "  The daemon's version, state, uptime, requests in flight, the loaded model and a\n"
               "  summary of the supernode (NPUs, planes, links and what is down).\n"
               "%s"
               "  --json             one JSON object on stdout\n"
               "  --no-topology      leave out the supernode summary\n",
               socket_help().c_str());
}

int print_status(const proto::StatusReply& s, bool json) {
  if (json) {
    JsonWriter w;
    w.begin_object()
        .key("daemon_version").value(s.daemon_version)
        .key("protocol_version").value(s.protocol_version)
        .key("state").value(state_name(s.state))
        .key("uptime_wall_ns").value(s.uptime_wall_ns)
        .key("active_requests").value(s.active_requests)
        .key("queued_requests").value(s.queued_requests)
        .key("models").begin_array();
    for (const proto::ModelInfo& m : s.models) write_model_json(w, m);
    w.end_array();
    if (s.topology) {
      const proto::TopologySummary& t = *s.topology;
      w.key("topology").begin_object()
          .key("name").value(t.name)
          .key("nodes").value(t.num_nodes)
          .key("npus").value(t.num_npus)
          .key("dies_per_npu").value(t.dies_per_npu)
          .key("planes").value(t.num_planes)
          .key("links").value(t.num_links)
          .key("hbm_bytes_per_npu").value(t.hbm_bytes_per_npu)
          .key("links_down").value(t.links_down)
          .key("planes_down");
      write_ids_json(w, t.planes_down);
      w.key("npus_lost");
      write_ids_json(w, t.npus_lost);
      w.end_object();
    }
    w.end_object();
    std::printf("%s\n", w.take().c_str());
    return 0;
  }
  std::printf("daemon:   %s (protocol %u), %s, up %s (wall)\n", s.daemon_version.c_str(),
              s.protocol_version, state_name(s.state),
              format_duration_ns(static_cast<double>(s.uptime_wall_ns)).c_str());
  std::printf("requests: %u active, %u queued\n", s.active_requests, s.queued_requests);
  if (s.models.empty()) std::printf("models:   none loaded (moe load)\n");
  for (const proto::ModelInfo& m : s.models) std::printf("model:    %s\n", model_line(m).c_str());
  if (s.topology) {
    const proto::TopologySummary& t = *s.topology;
    std::printf("topology: %s: %u nodes, %u NPUs (%u dies each, %s HBM), %u planes, %u links\n",
                t.name.c_str(), t.num_nodes, t.num_npus, t.dies_per_npu,
                format_bytes(static_cast<double>(t.hbm_bytes_per_npu)).c_str(), t.num_planes,
                t.num_links);
    std::printf("faults:   %u links down, planes down: %s, NPUs lost: %s\n", t.links_down,
                id_list(t.planes_down).c_str(), id_list(t.npus_lost).c_str());
  }
  return 0;
}

// ---- load ----

void load_usage(FILE* out) {
  std::string names;
  for (const std::string& n : models::model_names()) names += (names.empty() ? "" : ", ") + n;
  std::fprintf(out,
               "usage: moe load [CONFIG] [--weights PATH] [--int8] [--npus N] [--attention-dp N]\n"
               "                [--seed N] [--socket PATH] [--json]\n"
               "  Places a model on the daemon's supernode and prints it with its load time (wall).\n"
               "  CONFIG             builtin (default) or a reference config: %s\n"
               "                     (seeded random weights; full-size configs need timing mode)\n"
               "  --weights PATH     safetensors file or directory following CONFIG\n"
               "  --int8             W8A8 experts and INT8 dispatch (default BF16)\n"
               "  --npus N           NPUs to run on (default: the daemon's, every NPU)\n"
               "  --attention-dp N   attention data-parallel ranks (default: the daemon's)\n"
               "  --seed N           seed of the random weights (default 0)\n"
               "%s"
               "  --json             one JSON object on stdout\n",
               names.c_str(), socket_help().c_str());
}

// ---- unload / metrics / drain / shutdown ----

void unload_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe unload [MODEL] [--socket PATH]\n"
               "  Removes the model (default: the loaded one) from the supernode; refused while it\n"
               "  has requests running.\n%s",
               socket_help().c_str());
}

void metrics_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe metrics [--prometheus] [--socket PATH]\n"
               "  The daemon's metrics: a JSON object (default) or Prometheus text exposition.\n"
               "  --prometheus       Prometheus format\n%s",
               socket_help().c_str());
}

void drain_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe drain [--socket PATH]\n"
               "  Admin: the daemon stops admitting generate requests; returns when nothing is in\n"
               "  flight.\n%s",
               socket_help().c_str());
}

void shutdown_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe shutdown [--no-drain] [--socket PATH]\n"
               "  Admin: stops the daemon after its in-flight requests finish.\n"
               "  --no-drain         cancel the requests in flight instead of finishing them\n%s",
               socket_help().c_str());
}

void fault_usage(FILE* out) {
  std::fprintf(out,
               "usage: moe fault KIND [--target N] [--rate R] [--hbm-offset B --hbm-bytes B]\n"
               "       moe fault --clear ID\n"
               "  Admin: injects a fault into the daemon's supernode and prints its id, or clears one.\n"
               "  KIND               link-down, plane-down, npu-lost (--target: link, plane, NPU id),\n"
               "                     packet-drop, packet-corrupt (--rate: probability per packet in\n"
               "                     (0, 1]; --target: a link, default every link),\n"
               "                     hbm-error (--target NPU, --hbm-offset and --hbm-bytes)\n"
               "  --clear ID         clear fault ID instead\n"
               "%s"
               "  --json             one JSON object on stdout\n",
               socket_help().c_str());
}

bool parse_fault_kind(const std::string& word, proto::FaultKind* out) {
  static const struct {
    const char* name;
    proto::FaultKind kind;
  } kKinds[] = {
      {"link-down", proto::FaultKind::kLinkDown},
      {"plane-down", proto::FaultKind::kPlaneDown},
      {"npu-lost", proto::FaultKind::kNpuLost},
      {"packet-drop", proto::FaultKind::kPacketDrop},
      {"packet-corrupt", proto::FaultKind::kPacketCorrupt},
      {"hbm-error", proto::FaultKind::kHbmError},
  };
  for (const auto& k : kKinds) {
    if (word == k.name) {
      *out = k.kind;
      return true;
    }
  }
  return false;
}

// The flags every request command shares. Returns true when `args` is at one of them (and
// consumed its value); *error is set to a usage exit when its value was bad.
bool common_flag(ArgCursor& args, std::string* socket_path, bool* json, int* error) {
  if (args.is("--socket")) {
    if (!args.value(socket_path)) *error = ArgCursor::kUsageExit;
    return true;
  }
  if (json != nullptr && args.is("--json")) {
    *json = true;
    return true;
  }
  return false;
}

}  // namespace

int cmd_status(int argc, char** argv) {
  ArgCursor args("status", argc, argv);
  std::string socket_path;
  bool json = false, topology = true;
  int error = 0;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      status_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, &json, &error)) {
      if (error) return error;
    } else if (args.is("--no-topology")) {
      topology = false;
    } else {
      return args.unknown();
    }
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("status", client.status());
  auto reply = (*client)->status(topology);
  if (!reply.ok()) return report_failure("status", reply.status());
  return print_status(*reply, json);
}

int cmd_load(int argc, char** argv) {
  ArgCursor args("load", argc, argv);
  std::string socket_path, config, weights;
  bool json = false;
  int error = 0;
  proto::LoadRequest request;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      load_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, &json, &error)) {
      if (error) return error;
    } else if (args.is("--weights")) {
      if (!args.value(&weights)) return ArgCursor::kUsageExit;
      if (weights.empty()) return args.usage_error("--weights needs a path");
    } else if (args.is("--int8")) {
      request.precision = proto::Precision::kInt8;
    } else if (args.is("--npus")) {
      if (!args.value(&request.npus)) return ArgCursor::kUsageExit;
    } else if (args.is("--attention-dp")) {
      if (!args.value(&request.attention_dp)) return ArgCursor::kUsageExit;
    } else if (args.is("--seed")) {
      if (!args.value(&request.seed)) return ArgCursor::kUsageExit;
    } else if (args.positional()) {
      if (!config.empty()) {
        return args.usage_error(strformat("one model config at a time ('%s' and '%s')",
                                          config.c_str(), args.arg().c_str()));
      }
      config = args.arg();
    } else {
      return args.unknown();
    }
  }
  if (config.empty()) config = "builtin";
  const std::vector<std::string> names = models::model_names();
  if (std::find(names.begin(), names.end(), config) == names.end()) {
    std::string list;
    for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
    return args.usage_error(
        strformat("unknown model config '%s' (known: %s)", config.c_str(), list.c_str()));
  }
  if (!weights.empty()) {
    request.source = proto::ModelSource::kSafetensors;
    request.name = weights;
    request.config = config;
  } else if (config == "builtin") {
    request.source = proto::ModelSource::kBuiltin;
  } else {
    request.source = proto::ModelSource::kReferenceConfig;
    request.name = config;
  }

  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("load", client.status());
  auto reply = (*client)->load(request);
  if (!reply.ok()) return report_failure("load", reply.status());
  if (json) {
    JsonWriter w;
    w.begin_object().key("model");
    write_model_json(w, reply->model);
    w.key("load_wall_ns").value(reply->load_wall_ns).end_object();
    std::printf("%s\n", w.take().c_str());
  } else {
    std::printf("loaded %s in %s (wall)\n", model_line(reply->model).c_str(),
                format_duration_ns(static_cast<double>(reply->load_wall_ns)).c_str());
  }
  return 0;
}

int cmd_unload(int argc, char** argv) {
  ArgCursor args("unload", argc, argv);
  std::string socket_path, model;
  int error = 0;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      unload_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, nullptr, &error)) {
      if (error) return error;
    } else if (args.positional() && model.empty()) {
      model = args.arg();
    } else {
      return args.unknown();
    }
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("unload", client.status());
  Status status = (*client)->unload(model);
  if (!status.ok()) return report_failure("unload", status);
  std::printf("unloaded %s\n", model.empty() ? "the loaded model" : model.c_str());
  return 0;
}

int cmd_metrics(int argc, char** argv) {
  ArgCursor args("metrics", argc, argv);
  std::string socket_path;
  proto::MetricsFormat format = proto::MetricsFormat::kJson;
  int error = 0;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      metrics_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, nullptr, &error)) {
      if (error) return error;
    } else if (args.is("--prometheus")) {
      format = proto::MetricsFormat::kPrometheus;
    } else if (args.is("--json")) {
      format = proto::MetricsFormat::kJson;
    } else {
      return args.unknown();
    }
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("metrics", client.status());
  auto reply = (*client)->metrics(format);
  if (!reply.ok()) return report_failure("metrics", reply.status());
  std::fputs(reply->text.c_str(), stdout);
  if (reply->text.empty() || reply->text.back() != '\n') std::fputc('\n', stdout);
  return 0;
}

int cmd_fault(int argc, char** argv) {
  ArgCursor args("fault", argc, argv);
  std::string socket_path;
  bool json = false, have_kind = false, have_target = false, have_rate = false;
  bool have_offset = false, have_bytes = false, clear = false;
  int error = 0;
  proto::FaultRequest request;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      fault_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, &json, &error)) {
      if (error) return error;
    } else if (args.is("--clear")) {
      if (!args.value(&request.fault_id)) return ArgCursor::kUsageExit;
      clear = true;
    } else if (args.is("--target")) {
      if (!args.value(&request.target)) return ArgCursor::kUsageExit;
      have_target = true;
    } else if (args.is("--rate")) {
      if (!args.value(&request.rate)) return ArgCursor::kUsageExit;
      have_rate = true;
    } else if (args.is("--hbm-offset")) {
      if (!args.value(&request.hbm_offset)) return ArgCursor::kUsageExit;
      have_offset = true;
    } else if (args.is("--hbm-bytes")) {
      if (!args.value(&request.hbm_bytes)) return ArgCursor::kUsageExit;
      have_bytes = true;
    } else if (args.positional() && !have_kind) {
      if (!parse_fault_kind(args.arg(), &request.kind)) {
        return args.usage_error(strformat(
            "unknown fault kind '%s' (link-down, plane-down, npu-lost, packet-drop, "
            "packet-corrupt, hbm-error)", args.arg().c_str()));
      }
      have_kind = true;
    } else {
      return args.unknown();
    }
  }
  if (clear) {
    if (have_kind || have_target || have_rate || have_offset || have_bytes) {
      return args.usage_error("--clear ID takes no fault kind or fault parameters");
    }
    request.clear = true;
  } else {
    if (!have_kind) return args.usage_error("say which fault (moe fault KIND ...) or --clear ID");
    const bool packets = request.kind == proto::FaultKind::kPacketDrop ||
                         request.kind == proto::FaultKind::kPacketCorrupt;
    const bool hbm = request.kind == proto::FaultKind::kHbmError;
    if (!packets && !have_target) return args.usage_error("this fault needs --target N");
    if (packets != have_rate) {
      return args.usage_error(packets ? "packet faults need --rate R (probability per packet)"
                                      : "--rate applies to packet-drop and packet-corrupt only");
    }
    if (packets && !(request.rate > 0 && request.rate <= 1)) {
      return args.usage_error(strformat("--rate %g is outside (0, 1]", request.rate));
    }
    if (hbm != (have_offset && have_bytes) || (!hbm && (have_offset || have_bytes))) {
      return args.usage_error(hbm ? "hbm-error needs --hbm-offset B and --hbm-bytes B"
                                  : "--hbm-offset and --hbm-bytes apply to hbm-error only");
    }
    if (hbm && request.hbm_bytes == 0) return args.usage_error("--hbm-bytes must be positive");
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("fault", client.status());
  auto reply = (*client)->fault(request);
  if (!reply.ok()) return report_failure("fault", reply.status());
  if (json) {
    JsonWriter w;
    w.begin_object().key("fault_id").value(reply->fault_id).key("cleared").value(clear).end_object();
    std::printf("%s\n", w.take().c_str());
  } else if (clear) {
    std::printf("cleared fault %u\n", reply->fault_id);
  } else {
    std::printf("injected fault %u (moe fault --clear %u to clear it)\n", reply->fault_id,
                reply->fault_id);
  }
  return 0;
}

int cmd_drain(int argc, char** argv) {
  ArgCursor args("drain", argc, argv);
  std::string socket_path;
  int error = 0;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      drain_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, nullptr, &error)) {
      if (error) return error;
    } else {
      return args.unknown();
    }
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("drain", client.status());
  Status status = (*client)->drain();
  if (!status.ok()) return report_failure("drain", status);
  std::printf("drained: no requests in flight; new generate requests are refused\n");
  return 0;
}

int cmd_shutdown(int argc, char** argv) {
  ArgCursor args("shutdown", argc, argv);
  std::string socket_path;
  bool drain = true;
  int error = 0;
  while (args.next()) {
    if (args.is("--help") || args.is("-h")) {
      shutdown_usage(stdout);
      return 0;
    }
    if (common_flag(args, &socket_path, nullptr, &error)) {
      if (error) return error;
    } else if (args.is("--no-drain")) {
      drain = false;
    } else {
      return args.unknown();
    }
  }
  auto client = connect_daemon(socket_path);
  if (!client.ok()) return report_failure("shutdown", client.status());
  Status status = (*client)->shutdown(drain);
  if (!status.ok()) return report_failure("shutdown", status);
  std::printf("the daemon is shutting down%s\n", drain ? " (after its requests in flight)" : "");
  return 0;
}

}  // namespace moe::tools
