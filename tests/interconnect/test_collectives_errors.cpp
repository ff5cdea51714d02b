// Bad input to the collectives is refused with kInvalidArgument naming what was wrong, and
// nothing is issued: the communicator stays healthy and the next call works.
#include <doctest/doctest.h>

#include "tests/interconnect/test_collectives_util.h"

using namespace colltest;
using moe::StatusCode;
using moe::ic::DataType;
using moe::ic::ReduceOp;

namespace {

template <typename T>
void refused(const StatusOr<T>& r, const char* text) {
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_MESSAGE(r.status().message().find(text) != std::string::npos, r.status().message());
}

}  // namespace

TEST_CASE("ic.coll.errors: bad groups are refused, naming the member") {
  Machine m("n16");
  auto create = [&](std::vector<ic::CommMember> members, ic::CommConfig c = {}) {
    return Communicator::create(*m.transport, *m.memory, members, c);
  };
  refused(create({}), "no members");
  refused(create({{3, 0}, {7, 0}, {3, 0}}), "member 2 (npu 3 die 0) duplicates member 0");
  refused(create({{3, 0}, {16, 0}}), "member 1 names npu 16");
  refused(create({{3, 0}, {4, 2}}), "member 1 names die 2");
  ic::CommConfig tiny;
  tiny.scratch_bytes = 8;
  refused(create({{1, 0}, {2, 0}, {3, 0}}, tiny), "scratch_bytes 8");
  // Two dies of one NPU are distinct members.
  auto ok = create({{3, 0}, {3, 1}});
  CHECK(ok.ok());
}

TEST_CASE("ic.coll.errors: bad buffers and sizes are refused and nothing is issued") {
  Machine m("n16");
  auto comm = make_comm(m, {6, 1, 12});
  const uint32_t n = comm->size();
  auto send = alloc_each(m, *comm, 1024 * n);
  auto recv = alloc_each(m, *comm, 1024 * n);
  const auto puts_before = comm->transport_stats().puts;

  // Counts.
  refused(comm->all_to_all(std::span(send).first(2), recv, 1024), "send has 2 entries");
  // An unmapped buffer, a freed one, a null one.
  auto bad = recv;
  bad[1] = GlobalAddr{0x7000'0000'0000ull};
  refused(comm->all_to_all(send, bad, 1024), "recv[1] (member 1, npu 1)");
  refused(comm->all_to_all(send, bad, 1024), "not in a live allocation");
  auto freed = m.memory->allocate_local(12, 4096);
  REQUIRE(freed.ok());
  REQUIRE(m.memory->free(freed.value()).ok());
  bad = send;
  bad[2] = freed.value();
  refused(comm->all_gather(bad, recv, 64), "send[2] (member 2, npu 12)");
  bad[2] = GlobalAddr{};
  refused(comm->all_gather(bad, recv, 64), "is null");
  // Too small for the size asked.
  refused(comm->all_to_all(send, recv, 4096), "must hold 12288 bytes");
  refused(comm->all_to_all(send, recv, UINT64_MAX / 2), "too large");
  refused(comm->all_reduce(send, recv, UINT64_MAX / 4, DataType::kInt64, ReduceOp::kSum),
          "too large");
  // Misaligned for the element type.
  bad = send;
  bad[0] = send[0] + 2;
  refused(comm->all_reduce(bad, recv, 16, DataType::kFloat32, ReduceOp::kSum),
          "not aligned to 4 bytes");
  refused(comm->all_reduce(send, recv, 16, static_cast<DataType>(9), ReduceOp::kSum),
          "unknown data type 9");
  refused(comm->all_reduce(send, recv, 16, DataType::kInt32, static_cast<ReduceOp>(5)),
          "unknown reduction 5");
  refused(comm->broadcast(send, 64, 3), "root 3");

  // all_to_all_v: mismatched send and receive sizes, short tables.
  std::vector<uint64_t> sb(n * n, 64), so(n * n), rb(n * n, 64), ro(n * n);
  for (uint32_t i = 0; i < n * n; ++i) so[i] = ro[i] = (i % n) * 64;
  rb[2 * n + 0] = 32;  // member 2 expects 32 bytes from member 0, which sends 64
  refused(comm->all_to_all_v({send, recv, sb, so, rb, ro}),
          "member 0 sends 64 bytes to member 2, which expects 32");
  rb[2 * n + 0] = 64;
  refused(comm->all_to_all_v({send, recv, std::span(sb).first(4), so, rb, ro}),
          "send_bytes has 4 entries");
  so[1] = 1024 * n;  // past the end of member 0's send buffer
  refused(comm->all_to_all_v({send, recv, sb, so, rb, ro}), "send[0]");
  so[1] = 64;

  // Token all-to-all.
  ic::TokenRoutes wrong(2);
  refused(comm->token_all_to_all(wrong, send, recv, 64, ic::TokenAlgorithm::kFlat),
          "routes are for 2 members");
  ic::TokenRoutes routes(n);
  const uint32_t all[] = {0, 1, 2};
  for (int t = 0; t < 100; ++t) REQUIRE(routes.add_token(0, all).ok());
  refused(comm->token_all_to_all(routes, send, recv, 64, ic::TokenAlgorithm::kFlat),
          "send[0] (member 0, npu 6) 0x");  // 100 tokens of 64 B do not fit in 3 KiB
  refused(comm->token_all_to_all(routes, send, recv, 0, ic::TokenAlgorithm::kFlat),
          "token_bytes is 0");
  // Symmetric addresses: an allocation without a part on a member's NPU.
  mem::AllocRequest req;
  req.policy = mem::Policy::kSymmetric;
  req.bytes = 4096;
  req.npus = {6, 1};
  auto sym = m.memory->allocate(req);
  REQUIRE(sym.ok());
  refused(comm->addresses_of(sym.value()), "no part on npu 12 (member 2)");

  // Nothing went out, and the communicator still works.
  CHECK(comm->transport_stats().puts == puts_before);
  CHECK(comm->healthy());
  ok_result(comm->all_to_all(send, recv, 1024));
  ok_result(comm->all_to_all_v({send, recv, sb, so, rb, ro}));
}
