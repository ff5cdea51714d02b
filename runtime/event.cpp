// Event: an eager record reads the stream's engine time; a captured record becomes a slot
// of the graph, filled at each replay.
#include "runtime/event.h"

#include "runtime/base/check.h"
#include "runtime/graph.h"
#include "runtime/stream.h"

namespace moe::rt {

Status Event::record(Stream& stream) {
  if (stream.capture_ != nullptr) {
    stream.capture_->capture_record(stream.capture_index_, *this);
    return Status();
  }
  if (!stream.error_.ok()) return stream.error_;
  ModelTime t{};
  MOE_TRY(stream.engine_time(&t));
  time_ = t;
  graph_ = nullptr;
  recorded_ = true;
  return Status();
}

}  // namespace moe::rt
