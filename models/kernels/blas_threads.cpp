// BLAS threading control (see blas_threads.h). A depth count under one mutex: the outermost
// scope saves and restores the thread count, inner ones only count.
#include "models/kernels/blas_threads.h"

#include <cblas.h>

#include <mutex>

namespace moe::models {
namespace {

struct SerialState {
  std::mutex mutex;
  int depth = 0;
  int saved_threads = 1;
};

SerialState& state() {
  static SerialState s;
  return s;
}

}  // namespace

int blas_num_threads() { return openblas_get_num_threads(); }

BlasSerialScope::BlasSerialScope() {
  SerialState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.depth++ == 0) {
    s.saved_threads = openblas_get_num_threads();
    if (s.saved_threads != 1) openblas_set_num_threads(1);
  }
}

BlasSerialScope::~BlasSerialScope() {
  SerialState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (--s.depth == 0 && s.saved_threads != 1) openblas_set_num_threads(s.saved_threads);
}

}  // namespace moe::models
