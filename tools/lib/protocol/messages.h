// The request and result types of the moed protocol, as plain C++ values.
//
// These are the types an application uses whether it embeds the runtime or talks to the
// daemon: the daemon decodes frames into them (tools/lib/protocol/codec.h), the client
// encodes them, and no FlatBuffers type appears here (STYLE.md habit 7). Each struct mirrors
// one table of tools/lib/protocol/moe_protocol.fbs field for field; defaults are the
// schema's. Semantic checks (a sampling parameter out of range, a model that does not exist)
// belong to whoever serves the request; decoding checks only that a message is well formed
// and that its enums hold known values.
//
// Units are in the names: _ns nanoseconds, _bytes bytes; "wall" is the host's clock,
// "modelled" the simulated supernode's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "runtime/base/status.h"

namespace moe::proto {

// The version in every frame header; a peer of another version is refused.
inline constexpr uint8_t kProtocolVersion = 1;
// Replies to no request (an error about a frame whose request id could not be read).
inline constexpr uint64_t kNoRequestId = 0;
// FaultRequest::target meaning "every link" (as dev::kInvalidId).
inline constexpr uint32_t kEveryTarget = 0xFFFFFFFFu;

enum class ModelSource : uint8_t { kBuiltin = 0, kReferenceConfig = 1, kSafetensors = 2 };
enum class Precision : uint8_t { kBf16 = 0, kInt8 = 1 };
enum class ExecMode : uint8_t { kFunctional = 0, kTiming = 1 };
enum class DaemonState : uint8_t { kReady = 0, kDraining = 1, kStopping = 2 };
enum class MetricsFormat : uint8_t { kJson = 0, kPrometheus = 1 };
// As dev::FaultKind (runtime/device/driver.h), value for value.
enum class FaultKind : uint8_t {
  kLinkDown = 0,
  kPlaneDown = 1,
  kNpuLost = 2,
  kPacketDrop = 3,
  kPacketCorrupt = 4,
  kHbmError = 5,
};
// Why a generate request ended: max_new_tokens reached, cancelled, failed, or a stop token.
// moed answers a failed request with an ErrorReply instead of a GenerateDone (an ErrorReply
// always ends a request), so kError appears only in records; no model has a stop token yet.
enum class FinishReason : uint8_t { kLength = 0, kCancelled = 1, kError = 2, kStop = 3 };

// ---- status and topology ----

struct StatusRequest {
  bool include_topology = true;
  bool operator==(const StatusRequest&) const = default;
};

struct TopologySummary {
  std::string name;
  uint32_t num_nodes = 0;
  uint32_t num_npus = 0;
  uint32_t dies_per_npu = 0;
  uint32_t num_planes = 0;
  uint32_t num_links = 0;
  uint64_t hbm_bytes_per_npu = 0;
  uint32_t links_down = 0;
  std::vector<uint32_t> planes_down;  // plane ids
  std::vector<uint32_t> npus_lost;    // NPU ids
  bool operator==(const TopologySummary&) const = default;
};

struct ModelInfo {
  std::string name;
  ModelSource source = ModelSource::kBuiltin;
  Precision precision = Precision::kBf16;
  ExecMode mode = ExecMode::kFunctional;
  uint32_t npus = 0;
  uint32_t attention_dp = 0;
  uint32_t num_layers = 0;
  uint32_t vocab_size = 0;
  uint64_t weight_bytes = 0;
  bool operator==(const ModelInfo&) const = default;
};

struct StatusReply {
  uint32_t protocol_version = kProtocolVersion;
  std::string daemon_version;
  DaemonState state = DaemonState::kReady;
  int64_t uptime_wall_ns = 0;
  uint32_t active_requests = 0;
  uint32_t queued_requests = 0;
  std::vector<ModelInfo> models;
  std::optional<TopologySummary> topology;  // present when asked for
  bool operator==(const StatusReply&) const = default;
};

// ---- models ----

struct LoadRequest {
  ModelSource source = ModelSource::kBuiltin;
  std::string name;  // built-in or reference config name, or a safetensors path
  Precision precision = Precision::kBf16;
  ExecMode mode = ExecMode::kFunctional;
  uint32_t npus = 0;          // 0: the daemon's default
  uint32_t attention_dp = 0;  // 0: the daemon's default
  uint64_t seed = 0;          // random weights (built-in and reference configs)
  std::string config;         // safetensors: the model config the weights follow (empty: builtin)
  bool operator==(const LoadRequest&) const = default;
};

struct LoadReply {
  ModelInfo model;
  int64_t load_wall_ns = 0;
  bool operator==(const LoadReply&) const = default;
};

struct UnloadRequest {
  std::string model;  // empty: the only loaded model
  bool operator==(const UnloadRequest&) const = default;
};

// ---- generation ----

struct GenerateRequest {
  std::string model;                   // empty: the only loaded model
  std::vector<uint32_t> prompt_tokens;  // one of prompt_tokens, prompt_text
  std::string prompt_text;
  uint32_t max_new_tokens = 16;
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
  bool operator==(const GenerateRequest&) const = default;
};

// Tokens [first_index, first_index + tokens.size()) of a request's output (prompt excluded).
struct TokenFrame {
  uint32_t first_index = 0;
  std::vector<uint32_t> tokens;
  std::string text;  // the tokens as text, when the model has a text vocabulary
  bool operator==(const TokenFrame&) const = default;
};

// Time to first token (TTFT) and time per output token (TPOT) on both clocks.
struct GenerateMetrics {
  int64_t ttft_wall_ns = 0;
  int64_t tpot_wall_ns = 0;
  int64_t total_wall_ns = 0;
  double ttft_modelled_ns = 0;
  double tpot_modelled_ns = 0;
  double total_modelled_ns = 0;
  bool operator==(const GenerateMetrics&) const = default;
};

// The last frame of a generate request, after its last TokenFrame.
struct GenerateDone {
  FinishReason finish_reason = FinishReason::kLength;
  uint32_t prompt_tokens = 0;
  uint32_t generated_tokens = 0;
  GenerateMetrics metrics;
  bool operator==(const GenerateDone&) const = default;
};

struct CancelRequest {
  uint64_t target_request_id = 0;
  bool operator==(const CancelRequest&) const = default;
};

// ---- metrics and admin ----

struct MetricsRequest {
  MetricsFormat format = MetricsFormat::kJson;
  bool operator==(const MetricsRequest&) const = default;
};

struct MetricsReply {
  MetricsFormat format = MetricsFormat::kJson;
  std::string text;  // a JSON object, or Prometheus text exposition format
  bool operator==(const MetricsReply&) const = default;
};

// Injects a fault (as dev::FaultSpec) or, with clear set, clears fault `fault_id`.
struct FaultRequest {
  FaultKind kind = FaultKind::kLinkDown;
  uint32_t target = kEveryTarget;
  double rate = 0;  // kPacketDrop / kPacketCorrupt: probability per packet
  uint64_t hbm_offset = 0;
  uint64_t hbm_bytes = 0;
  bool clear = false;
  uint32_t fault_id = 0;
  bool operator==(const FaultRequest&) const = default;
};

struct FaultReply {
  uint32_t fault_id = 0;
  bool operator==(const FaultReply&) const = default;
};

// Stop admitting generate requests; answered when the in-flight ones have finished.
struct DrainRequest {
  bool operator==(const DrainRequest&) const = default;
};

struct ShutdownRequest {
  bool drain = true;  // finish in-flight requests first
  bool operator==(const ShutdownRequest&) const = default;
};

// A request done that has no reply of its own (unload, cancel, drain, shutdown).
struct Ack {
  std::string message;
  bool operator==(const Ack&) const = default;
};

// A request failed. A code unknown to this build but of a known group (a newer peer's code)
// is kept as is: its group still says how to react.
struct ErrorReply {
  StatusCode code = StatusCode::kInternal;
  std::string message;
  bool operator==(const ErrorReply&) const = default;

  static ErrorReply from_status(const Status& status) { return {status.code(), status.message()}; }
  Status to_status() const { return Status(code, message); }
};

// The alternatives in the order of the schema's Message union: index() + 1 is the union
// type on the wire. New messages are appended at the end, as in the schema.
using Body = std::variant<StatusRequest, StatusReply, LoadRequest, LoadReply, UnloadRequest,
                          GenerateRequest, TokenFrame, GenerateDone, CancelRequest,
                          MetricsRequest, MetricsReply, FaultRequest, FaultReply, DrainRequest,
                          ShutdownRequest, Ack, ErrorReply>;

// One message: the client-chosen request id (replies, tokens and errors carry the id of the
// request they answer) and its body.
struct Message {
  uint64_t request_id = kNoRequestId;
  Body body;
  bool operator==(const Message&) const = default;
};

// "GenerateRequest", ... for logs and errors.
std::string_view message_name(const Body& body);
std::string_view message_type_name(uint8_t wire_type);  // "unknown" when out of range

}  // namespace moe::proto
