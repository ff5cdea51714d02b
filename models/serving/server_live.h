// A request's record inside the server (server.cpp, server_step.cpp). Not a public header.
#pragma once

#include <cstdint>
#include <vector>

#include "models/serving/server.h"

namespace moe::models::serving {

struct Server::Live {
  RequestId id = 0;
  Request req;
  RequestState state = RequestState::kQueued;
  bool admitted = false;          // holds sequences and counts in running_on_ / active_
  bool has_dseq = false, has_pseq = false;
  SeqId dseq, pseq;               // decode sequence; prefill sequence (split mode)
  uint32_t dhome = 0, phome = 0;  // their DP ranks
  uint32_t fed = 0;               // prompt tokens in the cache that runs the prompt
  uint32_t last = 0;              // the last sampled token (the next decode input)
  std::vector<uint32_t> out;
  RequestMetrics m;
  int64_t submit_wall = 0, first_wall = 0;
  double submit_modelled = 0, admit_modelled = 0, first_modelled = 0;
  // Split mode: when its KV cache has arrived at the decode engine (prefill end + transfer),
  // and how much later than the decode engine's clock its decode steps end (it joined a
  // step that started before it was ready; 0 when the decode engine waited for it).
  double ready_modelled = 0;
  double decode_shift_modelled = 0;
  bool decode_started = false;
};

}  // namespace moe::models::serving
