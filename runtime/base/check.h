// Propagating and asserting.
//
// MOE_TRY(expr): evaluates an expression yielding a Status; on error logs one debug line
//   with the call site (so a failure leaves a backtrace in a debug log, as NCCL does) and
//   returns the Status from the enclosing function.
// MOE_TRY_ASSIGN(lhs, expr): the same for a StatusOr<T>, assigning the value on success.
// MOE_ASSERT(cond): an internal invariant; the level chosen at build time by
//   MOE_ASSERT_LEVEL: 0 none, 1 (release default) cheap checks, 2 (DEBUG=1) expensive too.
//   A failed assertion logs and aborts: it is a bug in this runtime, never bad input.
#pragma once

#include <cstdlib>

#include "runtime/base/log.h"
#include "runtime/base/status.h"

#ifndef MOE_ASSERT_LEVEL
#define MOE_ASSERT_LEVEL 1
#endif

#define MOE_TRY(expr)                                                                   \
  do {                                                                                  \
    ::moe::Status moe_try_status_ = (expr);                                             \
    if (!moe_try_status_.ok()) {                                                        \
      MOE_DEBUG("%s -> %s", #expr, moe_try_status_.to_string().c_str());                \
      return moe_try_status_;                                                           \
    }                                                                                   \
  } while (0)

#define MOE_CONCAT_INNER(a, b) a##b
#define MOE_CONCAT(a, b) MOE_CONCAT_INNER(a, b)
#define MOE_TRY_ASSIGN(lhs, expr) MOE_TRY_ASSIGN_IMPL(MOE_CONCAT(moe_try_or_, __LINE__), lhs, expr)
#define MOE_TRY_ASSIGN_IMPL(tmp, lhs, expr)                                             \
  auto tmp = (expr);                                                                    \
  if (!tmp.ok()) {                                                                      \
    MOE_DEBUG("%s -> %s", #expr, tmp.status().to_string().c_str());                     \
    return tmp.status();                                                                \
  }                                                                                     \
  lhs = std::move(tmp).value()

namespace moe::detail {
[[noreturn]] void assert_failed(const char* expr, const char* file, int line);
}

#if MOE_ASSERT_LEVEL >= 1
#define MOE_ASSERT(cond) \
  ((cond) ? (void)0 : ::moe::detail::assert_failed(#cond, __FILE__, __LINE__))
#else
#define MOE_ASSERT(cond) ((void)0)
#endif
#if MOE_ASSERT_LEVEL >= 2
#define MOE_ASSERT_EXPENSIVE(cond) MOE_ASSERT(cond)
#else
#define MOE_ASSERT_EXPENSIVE(cond) ((void)0)
#endif
