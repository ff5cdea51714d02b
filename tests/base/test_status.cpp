#include <doctest/doctest.h>

#include <string>

#include "runtime/base/check.h"
#include "runtime/base/status.h"

using moe::Status;
using moe::StatusCode;
using moe::StatusGroup;

namespace {

Status fails_with(StatusCode code) { return moe::make_error(code, "npu %d: %s", 17, "gone"); }

Status propagates(StatusCode code, int* reached_after) {
  MOE_TRY(fails_with(code));
  ++*reached_after;
  return moe::ok_status();
}

moe::StatusOr<int> half(int v) {
  if (v % 2) return moe::make_error(StatusCode::kInvalidArgument, "%d is odd", v);
  return v / 2;
}

Status quarter(int v, int* out) {
  int h = 0;
  MOE_TRY_ASSIGN(h, half(v));
  MOE_TRY_ASSIGN(*out, half(h));
  return moe::ok_status();
}

}  // namespace

TEST_CASE("status: OK is empty and errors carry code, group and message") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.to_string() == "OK");
  Status err = fails_with(StatusCode::kNpuLost);
  CHECK_FALSE(err.ok());
  CHECK(err.code() == StatusCode::kNpuLost);
  CHECK(err.group() == StatusGroup::kNode);
  CHECK(err.to_string() == "NPU_LOST: npu 17: gone");
  err.with_context("dispatch");
  CHECK(err.message() == "dispatch: npu 17: gone");
  Status copy = err;
  CHECK(copy.to_string() == err.to_string());
}

TEST_CASE("status: codes are grouped by what failed") {
  CHECK(moe::status_group(StatusCode::kInvalidArgument) == StatusGroup::kArgument);
  CHECK(moe::status_group(StatusCode::kOutOfMemory) == StatusGroup::kResource);
  CHECK(moe::status_group(StatusCode::kPlaneDown) == StatusGroup::kLink);
  CHECK(moe::status_group(StatusCode::kHbmError) == StatusGroup::kDevice);
  CHECK(moe::status_group(StatusCode::kNodeUnreachable) == StatusGroup::kNode);
  CHECK(moe::status_group(StatusCode::kInternal) == StatusGroup::kInternal);
  CHECK(moe::status_code_name(StatusCode::kPacketCorrupt) == "PACKET_CORRUPT");
}

TEST_CASE("status: MOE_TRY returns the first error and stops") {
  int reached = 0;
  Status s = propagates(StatusCode::kLinkDown, &reached);
  CHECK(s.code() == StatusCode::kLinkDown);
  CHECK(reached == 0);
  int q = -1;
  CHECK(quarter(12, &q).ok());
  CHECK(q == 3);
  q = -1;
  Status bad = quarter(6, &q);  // 6/2 = 3 is odd
  CHECK(bad.code() == StatusCode::kInvalidArgument);
  CHECK(bad.message() == "3 is odd");
  CHECK(q == -1);  // outputs are set only on success
}

#include <fstream>

#include "runtime/base/cpu_features.h"

TEST_CASE("cpu features: detected at run time and consistent with /proc/cpuinfo") {
  std::ifstream in("/proc/cpuinfo");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty()) return;  // not Linux: nothing to compare with
  CHECK(moe::cpu_features().avx2 == (text.find(" avx2") != std::string::npos));
  CHECK(moe::cpu_features().avx512f == (text.find(" avx512f") != std::string::npos));
  CHECK_FALSE(moe::cpu_features_text().empty());
}
