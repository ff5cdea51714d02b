#include "runtime/base/clock.h"

#include <time.h>

namespace moe {

int64_t wall_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace moe
