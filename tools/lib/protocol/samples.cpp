// Sample messages: every field set to a value other than its default (a field that an
// encoder forgot, or that a decoder read from the wrong slot, changes the round trip).
#include "tools/lib/protocol/samples.h"

namespace moe::proto {

std::vector<Message> sample_messages() {
  ModelInfo model{"deepseek-v3",  ModelSource::kReferenceConfig, Precision::kInt8,
                  ExecMode::kTiming, 384, 32, 61, 129280, 671ull << 30};
  TopologySummary topology{"cm384", 48, 384, 2, 7, 2688, 128ull << 30, 3, {2, 5}, {17, 300}};

  std::vector<Body> bodies = {
      StatusRequest{false},
      StatusReply{kProtocolVersion, "moed 0.1", DaemonState::kDraining, 123456789, 4, 9,
                  {model, ModelInfo{"builtin", ModelSource::kBuiltin, Precision::kBf16,
                                    ExecMode::kFunctional, 8, 2, 4, 256, 1 << 20}},
                  topology},
      LoadRequest{ModelSource::kSafetensors, "/data/model.safetensors", Precision::kInt8,
                  ExecMode::kTiming, 64, 8, 42, "qwen3-30b-a3b"},
      LoadReply{model, 987654321},
      UnloadRequest{"deepseek-v3"},
      GenerateRequest{"builtin", {1, 2, 3, 65535, 4000000000u}, "Hello, supernode", 32, 0.7f, 0.9f,
                      0xDEADBEEFCAFEull},
      TokenFrame{5, {72, 105, 33}, "Hi!"},
      GenerateDone{FinishReason::kCancelled, 17, 8,
                   GenerateMetrics{1500000, 250000, 3500000, 12000.5, 9400.25, 78000.125}},
      CancelRequest{6},
      MetricsRequest{MetricsFormat::kPrometheus},
      MetricsReply{MetricsFormat::kPrometheus, "# TYPE moe_requests counter\nmoe_requests 3\n"},
      FaultRequest{FaultKind::kHbmError, 12, 0.25, 4096, 65536, true, 7},
      FaultReply{11},
      DrainRequest{},
      ShutdownRequest{false},
      Ack{"drained"},
      ErrorReply{StatusCode::kNotFound, "no model named 'qwen3-30b-a3b' is loaded"},
  };
  std::vector<Message> messages;
  messages.reserve(bodies.size());
  for (size_t i = 0; i < bodies.size(); ++i) messages.push_back({i + 1, std::move(bodies[i])});
  return messages;
}

}  // namespace moe::proto
