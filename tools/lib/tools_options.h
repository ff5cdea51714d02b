// The tools layer's options (runtime/base/options.h): the daemon, its protocol and clients.
#pragma once

#include <cstdint>

#include "runtime/base/options.h"

namespace moe::tools {

inline const opt::Option<int64_t> kProtocolMaxFrameBytes{
    "tools", "PROTOCOL_MAX_FRAME_BYTES", int64_t{1} << 20,
    "largest moed protocol frame, header included, in bytes; a longer one is refused and the "
    "connection closed (64 .. 1G)"};

}  // namespace moe::tools
