// Saving ModelWeights to safetensors: one file, or shards plus a Hugging Face style index.
// Each tensor's bytes are produced by a fill callback when the writer reaches it, so at most
// one tensor is materialised at a time (an INT8 tensor and its scale share one quantisation,
// computed for the weight and cached until its scale is written right after it).
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "models/weights/safetensors_writer.h"
#include "models/weights/weight_store.h"
#include "runtime/base/check.h"
#include "runtime/base/json.h"

namespace moe::models {

Status ModelWeights::save(const std::string& path, const SaveOptions& options) const {
  // The tensors to write, grouped into shards by size.
  std::vector<std::vector<TensorToWrite>> shards(1);
  std::vector<uint64_t> shard_bytes(1, 0);
  uint64_t total_bytes = 0;
  auto cache = std::make_shared<QuantizedTensor>();  // last quantised weight, for its scale
  auto place = [&](TensorToWrite t, uint64_t bytes) {
    if (options.max_shard_bytes > 0 && shard_bytes.back() > 0 &&
        shard_bytes.back() + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes.push_back(0);
    }
    shards.back().push_back(std::move(t));
    shard_bytes.back() += bytes;
    total_bytes += bytes;
  };
  for (const TensorSpec& spec : specs_) {
    const bool int8 = options.int8_experts && is_expert_weight(spec) &&
                      spec.dtype == DType::kBf16 && spec.shape.size() == 2;
    if (!int8) {
      place({.name = spec.name, .dtype = spec.dtype, .shape = spec.shape,
             .fill = [this, name = spec.name](std::span<uint8_t> out) {
               return read_into(name, out);
             }},
            spec.size_bytes());
      continue;
    }
    // Weight and scale go to the same shard, scale right after the weight (the writer keeps
    // the order of tensors whose sizes are multiples of 8, and puts the others after them;
    // the cache is keyed by name, so any order is correct, just slower).
    auto quantise = [this, cache, name = spec.name]() -> Status {
      if (cache->name == name) return Status();
      MOE_TRY_ASSIGN(*cache, quantized(name));
      return Status();
    };
    place({.name = spec.name, .dtype = DType::kI8, .shape = spec.shape,
           .fill = [cache, quantise](std::span<uint8_t> out) -> Status {
             MOE_TRY(quantise());
             std::memcpy(out.data(), cache->values.data(), out.size());
             return Status();
           }},
          spec.num_elements() + 4 * spec.shape[0]);
    shards.back().push_back({.name = int8_scale_name(spec.name), .dtype = DType::kF32,
                             .shape = {spec.shape[0]},
                             .fill = [cache, quantise](std::span<uint8_t> out) -> Status {
                               MOE_TRY(quantise());
                               std::memcpy(out.data(), cache->scales.data(), out.size());
                               return Status();
                             }});
  }

  std::vector<std::pair<std::string, std::string>> metadata = {
      {"format", "pt"}, {"moe.model", config_.name}};
  if (is_random()) metadata.emplace_back("moe.seed", std::to_string(seed_));
  if (options.max_shard_bytes == 0) return write_safetensors(path, shards[0], metadata);

  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    return make_error(StatusCode::kInvalidArgument, "cannot create directory '%s': %s",
                      path.c_str(), std::strerror(errno));
  JsonWriter index;
  index.begin_object();
  index.key("metadata").begin_object().key("total_size").value(total_bytes).end_object();
  index.key("weight_map").begin_object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = strformat("model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    MOE_TRY(write_safetensors(path + "/" + file, shards[s], metadata));
    for (const TensorToWrite& t : shards[s]) index.key(t.name).value(file);
  }
  index.end_object().end_object();
  return write_file_atomically(path + "/model.safetensors.index.json", index.str() + "\n");
}

}  // namespace moe::models
