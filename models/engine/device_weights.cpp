// DeviceWeights: replicas and expert blocks into HBM through copy streams, then the host
// working copies (expert banks, shared-expert banks, FP32 router gates) built from HBM.
//
// Each block (one tensor of a replica, one routed expert's three matrices) is read from the
// store into a staging buffer, copied by the NPU's host-copy engine and synchronised before
// the buffer is reused: one copy per block, a few thousand for 384 NPUs.
#include "models/engine/device_weights.h"

#include "models/engine/device_weights_state.h"

#include <unordered_map>

#include "interconnect/quant_int8.h"
#include "models/weights/weight_spec.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"
#include "runtime/stream.h"

namespace moe::models {

namespace {

// The replica's tensors: everything that is not a routed expert.
struct ReplicaLayout {
  std::vector<TensorSpec> specs;
  uint64_t bytes = 0;
};

ReplicaLayout replica_layout(const ModelConfig& config) {
  ReplicaLayout out;
  for (TensorSpec& s : model_tensor_specs(config)) {
    if (s.expert >= 0) continue;
    out.bytes += s.size_bytes();
    out.specs.push_back(std::move(s));
  }
  return out;
}

uint64_t expert_elems(const ModelConfig& c) { return uint64_t{c.hidden} * c.expert_intermediate; }

// Copies host bytes into HBM blocks through each NPU's copy stream.
class Uploader {
 public:
  explicit Uploader(rt::Runtime& runtime) : runtime_(runtime) {}
  Status upload(const HbmBlock& block, const std::vector<uint8_t>& bytes) {
    auto& stream = streams_[block.npu()];
    if (!stream) {
      auto s = rt::Stream::create(runtime_, block.npu(), rt::StreamKind::kCopy);
      if (!s.ok()) return Status(s.status()).with_context(strformat("copy stream of NPU %u", block.npu()));
      stream = std::move(s).value();
    }
    MOE_TRY(stream->copy_from_host(block.addr(), bytes.data(), bytes.size()));
    return stream->synchronize();
  }

 private:
  rt::Runtime& runtime_;
  std::unordered_map<dev::NpuId, std::unique_ptr<rt::Stream>> streams_;
};

Status check_placement(const ModelConfig& c, const DevicePlacement& p, uint32_t num_npus) {
  const char* bad = nullptr;
  if (p.npus.empty()) bad = "no NPUs";
  else if (p.dp_ranks.empty()) bad = "no attention DP ranks";
  else if (p.map.num_ranks() != p.npus.size()) bad = "the expert map's rank count is not the NPU count";
  else if (p.map.num_experts() != c.num_experts) bad = "the expert map's expert count is not the model's";
  else if (p.map.num_shared() != 0) bad = "the expert map holds shared experts (they live with the replicas)";
  if (bad != nullptr)
    return make_error(StatusCode::kInvalidArgument,
                      "placement of '%s': %s (%zu NPUs, %zu DP ranks, map %u experts over %u "
                      "ranks, model %u experts)",
                      c.name.c_str(), bad, p.npus.size(), p.dp_ranks.size(), p.map.num_experts(),
                      p.map.num_ranks(), c.num_experts);
  for (size_t i = 0; i < p.npus.size(); ++i)
    if (p.npus[i] >= num_npus)
      return make_error(StatusCode::kOutOfRange, "placement of '%s': NPU %u (rank %zu) does not "
                        "exist; the supernode has %u", c.name.c_str(), p.npus[i], i, num_npus);
  for (size_t i = 0; i < p.dp_ranks.size(); ++i)
    if (p.dp_ranks[i] >= p.npus.size() || (i > 0 && p.dp_ranks[i] <= p.dp_ranks[i - 1]))
      return make_error(StatusCode::kInvalidArgument,
                        "placement of '%s': DP rank list must be ascending EP ranks below %zu; "
                        "entry %zu is %u", c.name.c_str(), p.npus.size(), i, p.dp_ranks[i]);
  MOE_TRY(p.map.validate());
  return ok_status();
}

const uint16_t* find_bf16(const std::vector<HbmBlock>& blocks,
                          const std::unordered_map<std::string, size_t>& index, const std::string& name) {
  auto it = index.find(name);
  if (it == index.end()) return nullptr;
  return blocks[it->second].as<const uint16_t>();
}

}  // namespace

DeviceWeights::DeviceWeights() = default;
DeviceWeights::~DeviceWeights() = default;
DeviceWeights::DeviceWeights(DeviceWeights&&) noexcept = default;
DeviceWeights& DeviceWeights::operator=(DeviceWeights&&) noexcept = default;

const ModelConfig& DeviceWeights::config() const { return s_->config; }
const DevicePlacement& DeviceWeights::placement() const { return s_->placement; }
const ReplicaWeights& DeviceWeights::replica(uint32_t d) const { return s_->replicas[d]; }
const MoeLayerWorking& DeviceWeights::moe_layer(uint32_t m) const { return s_->moe[m]; }
const ExpertBank& DeviceWeights::experts(uint32_t m, uint32_t rank) const { return s_->banks[m][rank]; }
uint64_t DeviceWeights::hbm_bytes_on_rank(uint32_t rank) const { return s_->hbm_per_rank[rank]; }
const ic::ExpertMap& DeviceWeights::layer_map(uint32_t m) const { return s_->layer_maps[m]; }

uint64_t DeviceWeights::hbm_bytes_needed(const ModelConfig& config, const DevicePlacement& p) {
  uint64_t local = 0;
  for (uint32_t r = 0; r < p.map.num_ranks(); ++r) local += p.map.local_experts(r).size();
  return replica_layout(config).bytes * p.dp_ranks.size() +
         local * 3 * expert_elems(config) * 2 * config.num_moe_layers();
}

StatusOr<DeviceWeights> DeviceWeights::load(rt::Runtime& runtime, const ModelWeights& weights,
                                            const DevicePlacement& placement,
                                            const LoadProgress& progress) {
  const ModelConfig& c = weights.config();
  if (!runtime.functional())
    return make_error(StatusCode::kFailedPrecondition,
                      "device weights of '%s': the runtime is in timing mode, which holds no "
                      "weights (use moe simulate for full-size timing)", c.name.c_str());
  MOE_TRY(check_placement(c, placement, runtime.num_devices()));
  mem::GlobalMemory& memory = runtime.memory();
  DeviceWeights out;
  out.s_ = std::make_unique<State>();
  State& s = *out.s_;
  s.config = c;
  s.placement = placement;
  const uint32_t R = static_cast<uint32_t>(placement.npus.size());
  s.hbm_per_rank.assign(R, 0);
  const uint64_t total = hbm_bytes_needed(c, placement);
  uint64_t done = 0;
  auto report = [&](uint64_t bytes) {
    done += bytes;
    if (progress) progress(done, total);
  };
  Uploader uploader(runtime);
  std::vector<uint8_t> staging;

  // Replicas: one block per tensor; each tensor is read once and uploaded to every DP rank.
  const ReplicaLayout layout = replica_layout(c);
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < layout.specs.size(); ++i) index.emplace(layout.specs[i].name, i);
  s.replica_blocks.resize(placement.dp_ranks.size());
  for (size_t i = 0; i < layout.specs.size(); ++i) {
    const TensorSpec& spec = layout.specs[i];
    staging.resize(spec.size_bytes());
    MOE_TRY(weights.read_into(spec.name, staging));
    for (size_t d = 0; d < placement.dp_ranks.size(); ++d) {
      const uint32_t rank = placement.dp_ranks[d];
      auto block = HbmBlock::allocate(memory, placement.npus[rank], spec.size_bytes(), spec.name);
      if (!block.ok()) return Status(block.status()).with_context(strformat("replica on EP rank %u", rank));
      MOE_TRY(uploader.upload(block.value(), staging));
      s.replica_blocks[d].push_back(std::move(block).value());
      s.hbm_per_rank[rank] += spec.size_bytes();
      report(spec.size_bytes());
    }
  }
  for (size_t d = 0; d < placement.dp_ranks.size(); ++d) {
    const std::vector<HbmBlock>& b = s.replica_blocks[d];
    ReplicaWeights rw;
    rw.embed = find_bf16(b, index, "model.embed_tokens.weight");
    rw.final_norm = find_bf16(b, index, "model.norm.weight");
    rw.lm_head = c.tie_embeddings ? rw.embed : find_bf16(b, index, "lm_head.weight");
    for (uint32_t l = 0; l < c.num_layers; ++l) {
      const std::string p = strformat("model.layers.%u.", l);
      ReplicaWeights::Layer L;
      L.input_norm = find_bf16(b, index, p + "input_layernorm.weight");
      L.post_norm = find_bf16(b, index, p + "post_attention_layernorm.weight");
      L.q_proj = find_bf16(b, index, p + "self_attn.q_proj.weight");
      L.k_proj = find_bf16(b, index, p + "self_attn.k_proj.weight");
      L.v_proj = find_bf16(b, index, p + "self_attn.v_proj.weight");
      L.o_proj = find_bf16(b, index, p + "self_attn.o_proj.weight");
      L.q_norm = find_bf16(b, index, p + "self_attn.q_norm.weight");
      L.k_norm = find_bf16(b, index, p + "self_attn.k_norm.weight");
      L.mlp_gate = find_bf16(b, index, p + "mlp.gate_proj.weight");
      L.mlp_up = find_bf16(b, index, p + "mlp.up_proj.weight");
      L.mlp_down = find_bf16(b, index, p + "mlp.down_proj.weight");
      rw.layers.push_back(L);
    }
    s.replicas.push_back(std::move(rw));
  }

  // Per MoE layer: working copies from the first replica, then each rank's experts.
  const uint64_t n = expert_elems(c);
  const uint32_t M = c.num_moe_layers();
  s.moe.resize(M);
  s.expert_blocks.resize(uint64_t{M} * R);
  s.banks.assign(M, std::vector<ExpertBank>(R));
  s.layer_maps.assign(M, placement.map);
  const std::vector<HbmBlock>& first = s.replica_blocks.front();
  for (uint32_t m = 0; m < M; ++m) {
    const uint32_t l = c.num_dense_layers + m;
    const std::string p = strformat("model.layers.%u.mlp.", l);
    MoeLayerWorking& w = s.moe[m];
    const uint16_t* gate = find_bf16(first, index, p + "gate.weight");
    w.gate.resize(uint64_t{c.num_experts} * c.hidden);
    for (size_t i = 0; i < w.gate.size(); ++i) w.gate[i] = ic::bf16_to_float(gate[i]);
    if (c.router_bias) {
      const auto* bias = reinterpret_cast<const float*>(find_bf16(first, index, p + "gate.e_score_correction_bias"));
      w.bias.assign(bias, bias + c.num_experts);
    }
    if (c.num_shared_experts > 0) {
      const uint64_t sn = n * c.num_shared_experts;
      ExpertWeights sw{{find_bf16(first, index, p + "shared_experts.gate_proj.weight"), sn},
                       {find_bf16(first, index, p + "shared_experts.up_proj.weight"), sn},
                       {find_bf16(first, index, p + "shared_experts.down_proj.weight"), sn}};
      auto bank = ExpertBank::create(c.hidden, c.expert_intermediate * c.num_shared_experts,
                                     std::span(&sw, 1), placement.precision);
      if (!bank.ok()) return Status(bank.status()).with_context(strformat("layer %u shared experts", l));
      w.shared = std::move(bank).value();
    }
    for (uint32_t r = 0; r < R; ++r) {
      const std::vector<ic::LocalExpert> local = placement.map.local_experts(r);
      std::vector<HbmBlock>& blocks = s.expert_blocks[uint64_t{m} * R + r];
      std::vector<ExpertWeights> views(local.size());
      const uint64_t bytes = 3 * n * 2;
      staging.resize(bytes);
      for (size_t j = 0; j < local.size(); ++j) {
        for (uint32_t proj = 0; proj < 3; ++proj)
          MOE_TRY(weights.read_into(
              expert_tensor_name(l, local[j].expert, static_cast<ExpertProj>(proj)),
              std::span(staging).subspan(proj * n * 2, n * 2)));
        const std::string what = strformat("layer %u expert %u", l, local[j].expert);
        auto block = placement.expert_own_pages
                         ? HbmBlock::allocate_own_page(memory, placement.npus[r], bytes, what)
                         : HbmBlock::allocate(memory, placement.npus[r], bytes, what);
        if (!block.ok())
          return Status(block.status()).with_context(strformat("experts on EP rank %u", r));
        MOE_TRY(uploader.upload(block.value(), staging));
        const uint16_t* base = block.value().as<const uint16_t>();
        views[j] = {{base, n}, {base + n, n}, {base + 2 * n, n}};
        blocks.push_back(std::move(block).value());
        s.hbm_per_rank[r] += bytes;
        report(bytes);
      }
      if (local.empty()) continue;
      auto bank = ExpertBank::create(c.hidden, c.expert_intermediate, views, placement.precision);
      if (!bank.ok())
        return Status(bank.status()).with_context(strformat("layer %u experts on EP rank %u", l, r));
      s.banks[m][r] = std::move(bank).value();
    }
  }
  return out;
}

}  // namespace moe::models
