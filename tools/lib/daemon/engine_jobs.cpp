// The engine-thread side of status, load, unload, metrics and fault requests.
#include "tools/lib/daemon/engine_jobs.h"

#include "runtime/base/log.h"
#include "runtime/base/strformat.h"
#include "tools/lib/daemon/metrics_text.h"
#include "tools/lib/daemon/topology_summary.h"

namespace moe::daemon {

namespace {

proto::Body error(const Status& status) { return proto::ErrorReply::from_status(status); }

}  // namespace

proto::Body status_job(EngineContext& context, proto::StatusReply base, bool include_topology) {
  base.models = context.models->models();
  if (include_topology) base.topology = summarize_topology(*context.runtime);
  return base;
}

proto::Body load_job(EngineContext& context, const proto::LoadRequest& request) {
  MOE_INFO("moed: loading %s", request.name.empty() ? "builtin" : request.name.c_str());
  StatusOr<proto::LoadReply> reply = context.models->load(request);
  if (!reply.ok()) return error(reply.status());
  MOE_INFO("moed: loaded %s on %u NPUs in %.0f ms", reply->model.name.c_str(), reply->model.npus,
           reply->load_wall_ns / 1e6);
  return *reply;
}

proto::Body unload_job(EngineContext& context, const proto::UnloadRequest& request) {
  Status status = context.models->unload(request.model);
  if (!status.ok()) return error(status);
  return proto::Ack{"unloaded"};
}

proto::Body metrics_job(EngineContext& context, const DaemonCounters& c,
                        proto::MetricsFormat format) {
  const ServiceFigures f = context.models->figures();
  const proto::TopologySummary topology = summarize_topology(*context.runtime);
  MetricsText m;
  m.gauge("moed_uptime_seconds", "Seconds since the daemon started (wall clock)", c.uptime_s)
      .gauge("moed_draining", "1 while the daemon drains or stops", c.draining ? 1 : 0)
      .gauge("moed_connections", "Client connections open", c.connections_open)
      .counter("moed_connections_total", "Client connections accepted", c.connections_total)
      .counter("moed_connections_refused_total",
               "Connections refused (uid not allowed, too many connections)",
               c.connections_refused_total)
      .counter("moed_requests_total", "Requests received", c.requests_total)
      .counter("moed_errors_total", "Error replies sent", c.errors_total)
      .counter("moed_busy_total", "Requests refused because the engine queue was full",
               c.busy_total)
      .counter("moed_timeouts_total", "Requests that passed their deadline", c.timeouts_total)
      .counter("moed_bad_frames_total", "Frames refused (header or payload)", c.bad_frames_total)
      .gauge("moed_active_requests", "Requests in flight", c.active_requests)
      .gauge("moed_queued_jobs", "Jobs waiting for the engine thread", c.queued_jobs)
      .counter("moed_failed_steps_total", "Engine steps that failed", f.failed_steps)
      .gauge("moe_model_loaded", "1 when a model is loaded", f.loaded ? 1 : 0)
      .gauge("moe_model_npus", "NPUs the loaded model runs on", f.model.npus)
      .gauge("moe_model_weight_bytes", "HBM bytes of the loaded model's weights",
             static_cast<double>(f.model.weight_bytes))
      .counter("moe_generate_submitted_total", "Generate requests accepted", f.submitted)
      .counter("moe_generate_finished_total", "Generate requests finished", f.finished)
      .counter("moe_generate_cancelled_total", "Generate requests cancelled", f.cancelled)
      .counter("moe_generate_failed_total", "Generate requests failed", f.failed)
      .gauge("moe_generate_queued", "Generate requests waiting for admission", f.queued)
      .gauge("moe_generate_running", "Generate requests admitted (prefill or decode)", f.running)
      .counter("moe_prompt_tokens_total", "Prompt tokens processed", f.prompt_tokens)
      .counter("moe_generated_tokens_total", "Tokens generated", f.generated_tokens)
      .counter("moe_engine_steps_total", "Serving steps run", f.steps)
      .counter("moe_decode_steps_total", "Steps that carried decode tokens", f.decode_steps)
      .counter("moe_decode_steps_over_target_total",
               "Decode steps over the TPOT target (modelled clock)", f.steps_over_target)
      .gauge("moe_modelled_clock_ms", "The serving engine's modelled clock", f.modelled_ms)
      .gauge("moe_engine_wall_ms", "Wall time inside engine forward steps", f.engine_wall_ms)
      .gauge("moe_tpot_target_ms", "TPOT target (modelled clock)", f.tpot_target_ms)
      .gauge("moe_tpot_estimated_ms", "Estimated TPOT at the current batch (modelled clock)",
             f.estimated_tpot_ms)
      .gauge("moe_tpot_target_met", "0 once a decode step ran over the TPOT target",
             f.tpot_target_met ? 1 : 0)
      .gauge("moe_decode_batch_limit", "Decode batch per DP rank the TPOT target allows",
             f.decode_batch_limit)
      .gauge("moe_latency_samples", "Finished requests the latency figures cover",
             f.latency_samples)
      .gauge("moe_ttft_wall_p50_ms", "Time to first token, median (wall clock)", f.ttft_wall_p50_ms)
      .gauge("moe_ttft_wall_p99_ms", "Time to first token, p99 (wall clock)", f.ttft_wall_p99_ms)
      .gauge("moe_tpot_wall_p50_ms", "Time per output token, median (wall clock)", f.tpot_wall_p50_ms)
      .gauge("moe_tpot_wall_p99_ms", "Time per output token, p99 (wall clock)", f.tpot_wall_p99_ms)
      .gauge("moe_ttft_modelled_p50_ms", "Time to first token, median (modelled clock)",
             f.ttft_modelled_p50_ms)
      .gauge("moe_ttft_modelled_p99_ms", "Time to first token, p99 (modelled clock)",
             f.ttft_modelled_p99_ms)
      .gauge("moe_tpot_modelled_p50_ms", "Time per output token, median (modelled clock)",
             f.tpot_modelled_p50_ms)
      .gauge("moe_tpot_modelled_p99_ms", "Time per output token, p99 (modelled clock)",
             f.tpot_modelled_p99_ms)
      .gauge("moe_expert_imbalance_max",
             "Routed tokens per EP rank, max over mean, worst MoE layer (1 = even)",
             f.expert_imbalance_max)
      .gauge("moe_expert_imbalance_mean", "Routed tokens per EP rank, max over mean, mean of layers",
             f.expert_imbalance_mean)
      .counter("moe_expert_routed_tokens_total", "Token-to-expert routings (all MoE layers)",
               static_cast<double>(f.expert_tokens))
      .counter("moe_eplb_rebalances_total", "Expert re-placements applied (EPLB)",
               static_cast<double>(f.eplb_rebalances))
      .counter("moe_eplb_replicas_copied_total", "Expert replicas copied by re-placements",
               static_cast<double>(f.eplb_replicas_copied))
      .gauge("moe_eplb_last_imbalance_before", "The last re-placement: imbalance on its load "
             "window before (worst MoE layer)", f.eplb_last_before)
      .gauge("moe_eplb_last_imbalance_after", "The last re-placement: imbalance on its load "
             "window after (worst MoE layer)", f.eplb_last_after)
      .gauge("moe_eplb_last_pause_ms",
             "The last re-placement: its longest pause of serving, one stage (wall clock)",
             f.eplb_last_pause_ms)
      .gauge("moe_kv_free_blocks", "Free KV cache blocks (all DP ranks)",
             static_cast<double>(f.kv_free_blocks))
      .gauge("moe_kv_total_blocks", "KV cache blocks (all DP ranks)",
             static_cast<double>(f.kv_total_blocks))
      .gauge("moe_supernode_npus", "NPUs of the supernode", topology.num_npus)
      .gauge("moe_links_down", "Fabric links down", topology.links_down)
      .gauge("moe_planes_down", "Fabric planes down", topology.planes_down.size())
      .gauge("moe_npus_lost", "NPUs lost", topology.npus_lost.size());
  dev::FaultCounters faults;
  if (context.runtime->driver().fault_counters(&faults).ok()) {
    m.counter("moe_faults_injected_total", "Faults injected (simulator)", faults.faults_injected)
        .counter("moe_packets_dropped_total", "Packets dropped by injected faults",
                 faults.packets_dropped)
        .counter("moe_packets_corrupted_total", "Packets corrupted by injected faults",
                 faults.packets_corrupted);
  }
  proto::MetricsReply reply;
  reply.format = format;
  reply.text = format == proto::MetricsFormat::kJson ? m.json() : m.prometheus();
  return reply;
}

proto::Body fault_job(EngineContext& context, const proto::FaultRequest& request) {
  dev::Driver& driver = context.runtime->driver();
  if (request.clear) {
    Status status = driver.fault_clear(request.fault_id);
    if (!status.ok()) return error(status);
    MOE_INFO("moed: fault %u cleared", request.fault_id);
    return proto::Ack{strformat("fault %u cleared", request.fault_id)};
  }
  const dev::Topology& topology = driver.topology();
  dev::FaultSpec spec;
  spec.kind = static_cast<dev::FaultKind>(request.kind);
  spec.target = request.target;
  spec.rate = request.rate;
  spec.hbm_offset = request.hbm_offset;
  spec.hbm_bytes = request.hbm_bytes;
  uint64_t limit = 0;
  const char* what = "";
  switch (request.kind) {
    case proto::FaultKind::kLinkDown:
    case proto::FaultKind::kPacketDrop:
    case proto::FaultKind::kPacketCorrupt:
      limit = topology.links.size();
      what = "links";
      break;
    case proto::FaultKind::kPlaneDown:
      limit = topology.num_planes;
      what = "planes";
      break;
    case proto::FaultKind::kNpuLost:
    case proto::FaultKind::kHbmError:
      limit = topology.num_npus();
      what = "NPUs";
      break;
  }
  const bool every = request.target == proto::kEveryTarget &&
                     (request.kind == proto::FaultKind::kPacketDrop ||
                      request.kind == proto::FaultKind::kPacketCorrupt);
  if (!every && request.target >= limit) {
    return error(make_error(StatusCode::kInvalidArgument,
                            "FaultRequest.target %u: the supernode has %llu %s", request.target,
                            static_cast<unsigned long long>(limit), what));
  }
  if ((request.kind == proto::FaultKind::kPacketDrop ||
       request.kind == proto::FaultKind::kPacketCorrupt) &&
      !(request.rate > 0 && request.rate <= 1)) {
    return error(make_error(StatusCode::kInvalidArgument,
                            "FaultRequest.rate %g: a packet fault needs a rate in (0, 1]",
                            request.rate));
  }
  dev::FaultId id = 0;
  Status status = driver.fault_inject(spec, &id);
  if (!status.ok()) return error(status);
  MOE_WARN("moed: fault %u injected (kind %u, target %u)", id, static_cast<unsigned>(request.kind),
           request.target);
  return proto::FaultReply{id};
}

}  // namespace moe::daemon
