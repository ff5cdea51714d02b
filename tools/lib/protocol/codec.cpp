// Messages <-> FlatBuffers: one encoder and one decoder per message type.
//
// Design: the plain structs of messages.h are the API; the generated FlatBuffers types never
// leave this file (STYLE.md habit 7). Encoding visits the Body variant; each alternative's
// encoder builds its table and returns the union tag with the offset, so the variant's order
// and the schema's union order must agree. The static_asserts below pin that, and every enum
// mirror, at compile time.
//
// Decoding trusts nothing before the Verifier has passed: the payload is verified as a whole
// first (offsets, sizes, nested tables, strings' terminators, the file identifier). The
// Verifier lets three things through that this file checks itself: a union type it does not
// know (the generated verifier accepts it, for forward compatibility), a union type with no
// body (a null table is valid), and enum values outside the declared ones (FlatBuffers does
// not range-check enums). Absent tables and fields read as the schema's defaults.
#include "tools/lib/protocol/codec.h"

#include <cstring>
#include <string>
#include <type_traits>

#include <flatbuffers/flatbuffers.h>

#include "runtime/base/check.h"
#include "runtime/base/strformat.h"
#include "tools/lib/protocol/moe_protocol_generated.h"

namespace moe::proto {
namespace {

namespace fbs = ::flatbuffers;

// ---- the mirrors agree with the schema ----

// The wire type of alternative T of Body (its index + 1), without constructing one.
template <typename T, typename V>
struct AlternativeIndex;
template <typename T, typename... Ts>
struct AlternativeIndex<T, std::variant<Ts...>> {
  static constexpr size_t value = [] {
    constexpr bool same[] = {std::is_same_v<T, Ts>...};
    for (size_t i = 0; i < sizeof...(Ts); ++i) {
      if (same[i]) return i;
    }
    return sizeof...(Ts);
  }();
};
template <typename T>
constexpr uint8_t wire_index() {
  return static_cast<uint8_t>(AlternativeIndex<T, Body>::value + 1);
}
static_assert(std::variant_size_v<Body> == static_cast<size_t>(fb::Message::MAX));
static_assert(wire_index<StatusRequest>() == static_cast<uint8_t>(fb::Message::StatusRequest));
static_assert(wire_index<LoadReply>() == static_cast<uint8_t>(fb::Message::LoadReply));
static_assert(wire_index<GenerateDone>() == static_cast<uint8_t>(fb::Message::GenerateDone));
static_assert(wire_index<FaultReply>() == static_cast<uint8_t>(fb::Message::FaultReply));
static_assert(wire_index<ErrorReply>() == static_cast<uint8_t>(fb::Message::ErrorReply));
static_assert(static_cast<uint8_t>(fb::Precision::MAX) == static_cast<uint8_t>(Precision::kInt8));
static_assert(static_cast<uint8_t>(fb::ModelSource::MAX) ==
              static_cast<uint8_t>(ModelSource::kSafetensors));
static_assert(static_cast<uint8_t>(fb::ExecMode::MAX) == static_cast<uint8_t>(ExecMode::kTiming));
static_assert(static_cast<uint8_t>(fb::DaemonState::MAX) ==
              static_cast<uint8_t>(DaemonState::kStopping));
static_assert(static_cast<uint8_t>(fb::MetricsFormat::MAX) ==
              static_cast<uint8_t>(MetricsFormat::kPrometheus));
static_assert(static_cast<uint8_t>(fb::FaultKind::MAX) == static_cast<uint8_t>(FaultKind::kHbmError));
static_assert(static_cast<uint8_t>(fb::FinishReason::MAX) == static_cast<uint8_t>(FinishReason::kStop));

template <typename To, typename From>
To cast_enum(From value) {
  return static_cast<To>(static_cast<std::underlying_type_t<From>>(value));
}

// ---- encoding ----

using Builder = fbs::FlatBufferBuilder;
using Encoded = std::pair<fb::Message, fbs::Offset<void>>;

fbs::Offset<fbs::String> str(Builder& b, const std::string& s) { return b.CreateString(s); }

fbs::Offset<fb::TopologySummary> encode_topology(Builder& b, const TopologySummary& t) {
  auto name = str(b, t.name);
  auto planes = b.CreateVector(t.planes_down);
  auto npus = b.CreateVector(t.npus_lost);
  return fb::CreateTopologySummary(b, name, t.num_nodes, t.num_npus, t.dies_per_npu,
                                   t.num_planes, t.num_links, t.hbm_bytes_per_npu, t.links_down,
                                   planes, npus);
}

fbs::Offset<fb::ModelInfo> encode_model(Builder& b, const ModelInfo& m) {
  auto name = str(b, m.name);
  return fb::CreateModelInfo(b, name, cast_enum<fb::ModelSource>(m.source),
                             cast_enum<fb::Precision>(m.precision), cast_enum<fb::ExecMode>(m.mode),
                             m.npus, m.attention_dp, m.num_layers, m.vocab_size, m.weight_bytes);
}

Encoded encode(Builder& b, const StatusRequest& m) {
  return {fb::Message::StatusRequest, fb::CreateStatusRequest(b, m.include_topology).Union()};
}

Encoded encode(Builder& b, const StatusReply& m) {
  auto version = str(b, m.daemon_version);
  std::vector<fbs::Offset<fb::ModelInfo>> models;
  models.reserve(m.models.size());
  for (const ModelInfo& info : m.models) models.push_back(encode_model(b, info));
  auto models_vec = b.CreateVector(models);
  fbs::Offset<fb::TopologySummary> topology;
  if (m.topology) topology = encode_topology(b, *m.topology);
  return {fb::Message::StatusReply,
          fb::CreateStatusReply(b, m.protocol_version, version, cast_enum<fb::DaemonState>(m.state),
                                m.uptime_wall_ns, m.active_requests, m.queued_requests,
                                models_vec, topology)
              .Union()};
}

Encoded encode(Builder& b, const LoadRequest& m) {
  auto name = str(b, m.name);
  auto config = str(b, m.config);
  return {fb::Message::LoadRequest,
          fb::CreateLoadRequest(b, cast_enum<fb::ModelSource>(m.source), name,
                                cast_enum<fb::Precision>(m.precision),
                                cast_enum<fb::ExecMode>(m.mode), m.npus, m.attention_dp, m.seed,
                                config)
              .Union()};
}

Encoded encode(Builder& b, const LoadReply& m) {
  auto model = encode_model(b, m.model);
  return {fb::Message::LoadReply, fb::CreateLoadReply(b, model, m.load_wall_ns).Union()};
}

Encoded encode(Builder& b, const UnloadRequest& m) {
  auto model = str(b, m.model);
  return {fb::Message::UnloadRequest, fb::CreateUnloadRequest(b, model).Union()};
}

Encoded encode(Builder& b, const GenerateRequest& m) {
  auto model = str(b, m.model);
  auto tokens = b.CreateVector(m.prompt_tokens);
  auto text = str(b, m.prompt_text);
  return {fb::Message::GenerateRequest,
          fb::CreateGenerateRequest(b, model, tokens, text, m.max_new_tokens, m.temperature,
                                    m.top_p, m.seed)
              .Union()};
}

Encoded encode(Builder& b, const TokenFrame& m) {
  auto tokens = b.CreateVector(m.tokens);
  auto text = str(b, m.text);
  return {fb::Message::TokenFrame, fb::CreateTokenFrame(b, m.first_index, tokens, text).Union()};
}

Encoded encode(Builder& b, const GenerateDone& m) {
  const GenerateMetrics& x = m.metrics;
  fb::GenerateMetrics metrics(x.ttft_wall_ns, x.tpot_wall_ns, x.total_wall_ns, x.ttft_modelled_ns,
                              x.tpot_modelled_ns, x.total_modelled_ns);
  return {fb::Message::GenerateDone,
          fb::CreateGenerateDone(b, cast_enum<fb::FinishReason>(m.finish_reason), m.prompt_tokens,
                                 m.generated_tokens, &metrics)
              .Union()};
}

Encoded encode(Builder& b, const CancelRequest& m) {
  return {fb::Message::CancelRequest, fb::CreateCancelRequest(b, m.target_request_id).Union()};
}

Encoded encode(Builder& b, const MetricsRequest& m) {
  return {fb::Message::MetricsRequest,
          fb::CreateMetricsRequest(b, cast_enum<fb::MetricsFormat>(m.format)).Union()};
}

Encoded encode(Builder& b, const MetricsReply& m) {
  auto text = str(b, m.text);
  return {fb::Message::MetricsReply,
          fb::CreateMetricsReply(b, cast_enum<fb::MetricsFormat>(m.format), text).Union()};
}

Encoded encode(Builder& b, const FaultRequest& m) {
  return {fb::Message::FaultRequest,
          fb::CreateFaultRequest(b, cast_enum<fb::FaultKind>(m.kind), m.target, m.rate,
                                 m.hbm_offset, m.hbm_bytes, m.clear, m.fault_id)
              .Union()};
}

Encoded encode(Builder& b, const FaultReply& m) {
  return {fb::Message::FaultReply, fb::CreateFaultReply(b, m.fault_id).Union()};
}

Encoded encode(Builder& b, const DrainRequest&) {
  return {fb::Message::DrainRequest, fb::CreateDrainRequest(b).Union()};
}

Encoded encode(Builder& b, const ShutdownRequest& m) {
  return {fb::Message::ShutdownRequest, fb::CreateShutdownRequest(b, m.drain).Union()};
}

Encoded encode(Builder& b, const Ack& m) {
  auto message = str(b, m.message);
  return {fb::Message::Ack, fb::CreateAck(b, message).Union()};
}

Encoded encode(Builder& b, const ErrorReply& m) {
  auto message = str(b, m.message);
  return {fb::Message::ErrorReply,
          fb::CreateErrorReply(b, static_cast<uint16_t>(m.code), message).Union()};
}

// ---- decoding ----

std::string read_str(const fbs::String* s) { return s ? s->str() : std::string(); }

template <typename T>
std::vector<T> read_vec(const fbs::Vector<T>* v) {
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>();
}

// Enum fields: the value must be one the schema names (FlatBuffers does not check).
template <typename To, typename From>
Status read_enum(From value, const char* field, To* out) {
  auto raw = static_cast<std::underlying_type_t<From>>(value);
  if (raw > static_cast<std::underlying_type_t<From>>(From::MAX)) {
    return make_error(StatusCode::kUnsupported,
                      "%s = %u: not a value protocol version %u knows (largest %u)", field,
                      static_cast<unsigned>(raw), kProtocolVersion,
                      static_cast<unsigned>(From::MAX));
  }
  *out = static_cast<To>(raw);
  return ok_status();
}

Status decode_topology(const fb::TopologySummary* t, TopologySummary* out) {
  out->name = read_str(t->name());
  out->num_nodes = t->num_nodes();
  out->num_npus = t->num_npus();
  out->dies_per_npu = t->dies_per_npu();
  out->num_planes = t->num_planes();
  out->num_links = t->num_links();
  out->hbm_bytes_per_npu = t->hbm_bytes_per_npu();
  out->links_down = t->links_down();
  out->planes_down = read_vec(t->planes_down());
  out->npus_lost = read_vec(t->npus_lost());
  return ok_status();
}

Status decode_model(const fb::ModelInfo* m, const char* where, ModelInfo* out) {
  *out = ModelInfo{};
  if (m == nullptr) return ok_status();
  std::string prefix(where);
  out->name = read_str(m->name());
  MOE_TRY(read_enum(m->source(), (prefix + ".source").c_str(), &out->source));
  MOE_TRY(read_enum(m->precision(), (prefix + ".precision").c_str(), &out->precision));
  MOE_TRY(read_enum(m->mode(), (prefix + ".mode").c_str(), &out->mode));
  out->npus = m->npus();
  out->attention_dp = m->attention_dp();
  out->num_layers = m->num_layers();
  out->vocab_size = m->vocab_size();
  out->weight_bytes = m->weight_bytes();
  return ok_status();
}

Status decode(const fb::StatusRequest* m, StatusRequest* out) {
  out->include_topology = m->include_topology();
  return ok_status();
}

Status decode(const fb::StatusReply* m, StatusReply* out) {
  out->protocol_version = m->protocol_version();
  out->daemon_version = read_str(m->daemon_version());
  MOE_TRY(read_enum(m->state(), "StatusReply.state", &out->state));
  out->uptime_wall_ns = m->uptime_wall_ns();
  out->active_requests = m->active_requests();
  out->queued_requests = m->queued_requests();
  if (const auto* models = m->models()) {
    out->models.resize(models->size());
    for (fbs::uoffset_t i = 0; i < models->size(); ++i) {
      MOE_TRY(decode_model(models->Get(i), "StatusReply.models[]", &out->models[i]));
    }
  }
  if (m->topology() != nullptr) {
    out->topology.emplace();
    MOE_TRY(decode_topology(m->topology(), &*out->topology));
  }
  return ok_status();
}

Status decode(const fb::LoadRequest* m, LoadRequest* out) {
  MOE_TRY(read_enum(m->source(), "LoadRequest.source", &out->source));
  out->name = read_str(m->name());
  MOE_TRY(read_enum(m->precision(), "LoadRequest.precision", &out->precision));
  MOE_TRY(read_enum(m->mode(), "LoadRequest.mode", &out->mode));
  out->npus = m->npus();
  out->attention_dp = m->attention_dp();
  out->seed = m->seed();
  out->config = read_str(m->config());
  return ok_status();
}

Status decode(const fb::LoadReply* m, LoadReply* out) {
  MOE_TRY(decode_model(m->model(), "LoadReply.model", &out->model));
  out->load_wall_ns = m->load_wall_ns();
  return ok_status();
}

Status decode(const fb::UnloadRequest* m, UnloadRequest* out) {
  out->model = read_str(m->model());
  return ok_status();
}

Status decode(const fb::GenerateRequest* m, GenerateRequest* out) {
  out->model = read_str(m->model());
  out->prompt_tokens = read_vec(m->prompt_tokens());
  out->prompt_text = read_str(m->prompt_text());
  out->max_new_tokens = m->max_new_tokens();
  out->temperature = m->temperature();
  out->top_p = m->top_p();
  out->seed = m->seed();
  return ok_status();
}

Status decode(const fb::TokenFrame* m, TokenFrame* out) {
  out->first_index = m->first_index();
  out->tokens = read_vec(m->tokens());
  out->text = read_str(m->text());
  return ok_status();
}

Status decode(const fb::GenerateDone* m, GenerateDone* out) {
  MOE_TRY(read_enum(m->finish_reason(), "GenerateDone.finish_reason", &out->finish_reason));
  out->prompt_tokens = m->prompt_tokens();
  out->generated_tokens = m->generated_tokens();
  if (const fb::GenerateMetrics* x = m->metrics()) {
    out->metrics = GenerateMetrics{x->ttft_wall_ns(),     x->tpot_wall_ns(),
                                   x->total_wall_ns(),    x->ttft_modelled_ns(),
                                   x->tpot_modelled_ns(), x->total_modelled_ns()};
  }
  return ok_status();
}

Status decode(const fb::CancelRequest* m, CancelRequest* out) {
  out->target_request_id = m->target_request_id();
  return ok_status();
}

Status decode(const fb::MetricsRequest* m, MetricsRequest* out) {
  return read_enum(m->format(), "MetricsRequest.format", &out->format);
}

Status decode(const fb::MetricsReply* m, MetricsReply* out) {
  MOE_TRY(read_enum(m->format(), "MetricsReply.format", &out->format));
  out->text = read_str(m->text());
  return ok_status();
}

Status decode(const fb::FaultRequest* m, FaultRequest* out) {
  MOE_TRY(read_enum(m->kind(), "FaultRequest.kind", &out->kind));
  out->target = m->target();
  out->rate = m->rate();
  out->hbm_offset = m->hbm_offset();
  out->hbm_bytes = m->hbm_bytes();
  out->clear = m->clear();
  out->fault_id = m->fault_id();
  return ok_status();
}

Status decode(const fb::FaultReply* m, FaultReply* out) {
  out->fault_id = m->fault_id();
  return ok_status();
}

Status decode(const fb::DrainRequest*, DrainRequest*) { return ok_status(); }

Status decode(const fb::ShutdownRequest* m, ShutdownRequest* out) {
  out->drain = m->drain();
  return ok_status();
}

Status decode(const fb::Ack* m, Ack* out) {
  out->message = read_str(m->message());
  return ok_status();
}

Status decode(const fb::ErrorReply* m, ErrorReply* out) {
  uint16_t code = m->code();
  uint16_t group = code / 100;
  if (group < static_cast<uint16_t>(StatusGroup::kArgument) ||
      group > static_cast<uint16_t>(StatusGroup::kInternal)) {
    return make_error(StatusCode::kUnsupported,
                      "ErrorReply.code = %u: not in a known status group (100..699)", code);
  }
  out->code = static_cast<StatusCode>(code);
  out->message = read_str(m->message());
  return ok_status();
}

// Reads body `table` (type T of the generated code) into alternative Out of *body.
template <typename Out, typename Table>
Status decode_body(const Table* table, Body* body) {
  if (table == nullptr) {
    return make_error(StatusCode::kParseError, "message %s has no body",
                      std::string(message_type_name(wire_index<Out>())).c_str());
  }
  Out out;
  MOE_TRY(decode(table, &out));
  *body = std::move(out);
  return ok_status();
}

Status decode_envelope(const fb::Envelope* env, Body* body) {
  switch (env->body_type()) {
    case fb::Message::NONE:
      return make_error(StatusCode::kParseError, "envelope carries no message (type NONE)");
    case fb::Message::StatusRequest:
      return decode_body<StatusRequest>(env->body_as_StatusRequest(), body);
    case fb::Message::StatusReply:
      return decode_body<StatusReply>(env->body_as_StatusReply(), body);
    case fb::Message::LoadRequest:
      return decode_body<LoadRequest>(env->body_as_LoadRequest(), body);
    case fb::Message::LoadReply:
      return decode_body<LoadReply>(env->body_as_LoadReply(), body);
    case fb::Message::UnloadRequest:
      return decode_body<UnloadRequest>(env->body_as_UnloadRequest(), body);
    case fb::Message::GenerateRequest:
      return decode_body<GenerateRequest>(env->body_as_GenerateRequest(), body);
    case fb::Message::TokenFrame:
      return decode_body<TokenFrame>(env->body_as_TokenFrame(), body);
    case fb::Message::GenerateDone:
      return decode_body<GenerateDone>(env->body_as_GenerateDone(), body);
    case fb::Message::CancelRequest:
      return decode_body<CancelRequest>(env->body_as_CancelRequest(), body);
    case fb::Message::MetricsRequest:
      return decode_body<MetricsRequest>(env->body_as_MetricsRequest(), body);
    case fb::Message::MetricsReply:
      return decode_body<MetricsReply>(env->body_as_MetricsReply(), body);
    case fb::Message::FaultRequest:
      return decode_body<FaultRequest>(env->body_as_FaultRequest(), body);
    case fb::Message::FaultReply:
      return decode_body<FaultReply>(env->body_as_FaultReply(), body);
    case fb::Message::DrainRequest:
      return decode_body<DrainRequest>(env->body_as_DrainRequest(), body);
    case fb::Message::ShutdownRequest:
      return decode_body<ShutdownRequest>(env->body_as_ShutdownRequest(), body);
    case fb::Message::Ack:
      return decode_body<Ack>(env->body_as_Ack(), body);
    case fb::Message::ErrorReply:
      return decode_body<ErrorReply>(env->body_as_ErrorReply(), body);
  }
  return make_error(StatusCode::kUnsupported,
                    "message type %u unknown to protocol version %u (known: 1..%u)",
                    static_cast<unsigned>(env->body_type()), kProtocolVersion,
                    static_cast<unsigned>(fb::Message::MAX));
}

}  // namespace

std::string_view message_type_name(uint8_t wire_type) {
  if (wire_type == 0 || wire_type > static_cast<uint8_t>(fb::Message::MAX)) return "unknown";
  return fb::EnumNameMessage(static_cast<fb::Message>(wire_type));
}

std::string_view message_name(const Body& body) { return message_type_name(wire_type(body)); }

void encode_payload(const Message& message, std::vector<uint8_t>* out) {
  Builder builder(256);
  Encoded body = std::visit([&](const auto& m) { return encode(builder, m); }, message.body);
  auto envelope = fb::CreateEnvelope(builder, message.request_id, body.first, body.second);
  fb::FinishEnvelopeBuffer(builder, envelope);
  out->insert(out->end(), builder.GetBufferPointer(),
              builder.GetBufferPointer() + builder.GetSize());
}

Status append_message_frame(const Message& message, std::vector<uint8_t>* out,
                            size_t max_frame_bytes) {
  std::vector<uint8_t> payload;
  encode_payload(message, &payload);
  Status status = append_frame(payload, max_frame_bytes, out);
  if (!status.ok()) {
    status.with_context(strformat("encoding %s (request %llu)",
                                  std::string(message_name(message.body)).c_str(),
                                  static_cast<unsigned long long>(message.request_id)));
  }
  return status;
}

StatusOr<std::vector<uint8_t>> encode_frame(const Message& message, size_t max_frame_bytes) {
  std::vector<uint8_t> frame;
  MOE_TRY(append_message_frame(message, &frame, max_frame_bytes));
  return frame;
}

StatusOr<Message> decode_payload(std::span<const uint8_t> payload, uint64_t* request_id) {
  if (request_id != nullptr) *request_id = kNoRequestId;
  if (payload.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return make_error(StatusCode::kParseError, "payload of %zu bytes is larger than a FlatBuffer",
                      payload.size());
  }
  // FlatBuffers reads scalars in place: give it an 8-byte aligned copy when needed.
  std::vector<uint64_t> aligned;
  if (reinterpret_cast<uintptr_t>(payload.data()) % 8 != 0) {
    aligned.resize((payload.size() + 7) / 8);
    if (!payload.empty()) std::memcpy(aligned.data(), payload.data(), payload.size());
    payload = {reinterpret_cast<const uint8_t*>(aligned.data()), payload.size()};
  }
  fbs::Verifier verifier(payload.data(), payload.size(), /*max_depth=*/64,
                         /*max_tables=*/1000000, /*check_alignment=*/true);
  if (!fb::VerifyEnvelopeBuffer(verifier)) {
    bool identified = payload.size() >= 8 && fbs::BufferHasIdentifier(payload.data(), "MOEP");
    return make_error(StatusCode::kParseError,
                      "payload of %zu bytes is not a valid moed envelope (%s)", payload.size(),
                      identified ? "the FlatBuffers verifier rejected it"
                                 : "no \"MOEP\" file identifier");
  }
  const fb::Envelope* envelope = fb::GetEnvelope(payload.data());
  Message message;
  message.request_id = envelope->request_id();
  if (request_id != nullptr) *request_id = message.request_id;
  Status status = decode_envelope(envelope, &message.body);
  if (!status.ok()) {
    status.with_context(strformat("request %llu",
                                  static_cast<unsigned long long>(message.request_id)));
    return status;
  }
  return message;
}

}  // namespace moe::proto
