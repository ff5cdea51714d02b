// The base layer's options table.
#pragma once

#include <string>

#include "runtime/base/options.h"

namespace moe::base_options {

inline const opt::Option<std::string> kLogLevel{
    "base", "LOG_LEVEL", "warn", "log verbosity: error, warn, info, debug or trace"};

}  // namespace moe::base_options
