// Control of the BLAS's own threading for the functional kernels.
//
// OpenBLAS (the pthread build the project links) has one process-wide thread count and no
// per-call mode. Kernels that run several products concurrently on their own threads want
// each product on its calling thread alone (no oversubscription, no cross-thread barriers
// per call), so they hold a BlasSerialScope for the duration: the first scope to open saves
// the BLAS thread count and sets it to 1, the last to close restores the saved count.
//
// Consequence to know: while any scope is open, BLAS calls made by ANY thread of the process
// run on their calling thread. Changing the count only sets the number the next call uses;
// a call already running is not affected. Scopes nest and may be opened from any thread.
// Thread-safety: thread-safe (one process-wide mutex, taken at open and close only).
#pragma once

namespace moe::models {

// The BLAS's current thread count (what a product started now would use).
int blas_num_threads();

class BlasSerialScope {
 public:
  BlasSerialScope();
  ~BlasSerialScope();
  BlasSerialScope(const BlasSerialScope&) = delete;
  BlasSerialScope& operator=(const BlasSerialScope&) = delete;
};

}  // namespace moe::models
