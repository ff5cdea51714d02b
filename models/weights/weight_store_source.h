// Internal to the weight store: where one spec's data lives in the loaded files.
#pragma once

#include <cstddef>

#include "models/weights/weight_store.h"

namespace moe::models {

struct ModelWeights::Source {
  size_t file = 0;    // index in files_
  size_t tensor = 0;  // index in files_[file].tensors()
  bool has_scale = false;  // stored as I8 with a per-row F32 scale tensor:
  size_t scale_file = 0;
  size_t scale_tensor = 0;
};

}  // namespace moe::models
