// One example of every protocol message, every field away from its default.
//
// For tests (round trips), the fuzzer's seed corpus (tools/fuzz/) and anyone who wants a
// valid frame of each kind to look at. The values are fixed, so the frames are the same on
// every run.
#pragma once

#include <vector>

#include "tools/lib/protocol/messages.h"

namespace moe::proto {

// One Message per Body alternative, in the variant's order; request ids 1, 2, 3, ...
std::vector<Message> sample_messages();

}  // namespace moe::proto
