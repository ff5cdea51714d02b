// Every collective against a host reference, for seeded random sizes and random groups
// (subsets of n8, n16 and n64 in random order). Data encodes (source, destination, index),
// so a misrouted element is named in the failure message; reductions are checked against
// double-precision (floats, with a stated tolerance) or exact (integers) references.
#include <doctest/doctest.h>

#include <cmath>

#include "tests/interconnect/test_collectives_util.h"

using namespace colltest;
using moe::ic::DataType;
using moe::ic::ReduceOp;

namespace {

struct Preset {
  const char* name;
  uint32_t npus;
  int iterations;
};
const Preset kPresets[] = {{"n8", 8, 4}, {"n16", 16, 3}, {"n64", 64, 2}};

uint32_t group_size(std::mt19937_64& rng, uint32_t npus) {
  return 1 + static_cast<uint32_t>(rng() % npus);
}

uint64_t expected_cross_node(Machine& m, const Communicator& c, uint64_t bytes_per_pair) {
  uint64_t cross = 0;
  const auto& t = m.driver->topology();
  for (uint32_t s = 0; s < c.size(); ++s)
    for (uint32_t d = 0; d < c.size(); ++d)
      if (s != d && t.npus[c.member(s).npu].node != t.npus[c.member(d).npu].node)
        cross += bytes_per_pair;
  return cross;
}

// ---- reduction references ----

void fill_random(std::mt19937_64& rng, DataType type, std::vector<uint8_t>* out, uint64_t count) {
  out->resize(count * ic::data_type_bytes(type));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (uint64_t i = 0; i < count; ++i) {
    switch (type) {
      case DataType::kFloat32: {
        float v = u(rng);
        std::memcpy(out->data() + i * 4, &v, 4);
        break;
      }
      case DataType::kBFloat16: {
        uint16_t v = ic::float_to_bf16(4.0f * u(rng));
        std::memcpy(out->data() + i * 2, &v, 2);
        break;
      }
      case DataType::kInt32: {
        uint32_t v = static_cast<uint32_t>(rng());
        std::memcpy(out->data() + i * 4, &v, 4);
        break;
      }
      case DataType::kInt64: {
        uint64_t v = rng();
        std::memcpy(out->data() + i * 8, &v, 8);
        break;
      }
    }
  }
}

double as_double(DataType type, const uint8_t* p) {
  if (type == DataType::kFloat32) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  return ic::bf16_to_float(b);
}

// Checks element `elem` of each input range [first, first + count) reduced equals got.
// Floats: |got - ref| <= (n + 1) * 2^-24 * sum |x| (float accumulation in rank order),
// plus 2^-8 * |ref| for bfloat16 (the final rounding). Integers: exact (sums wrap).
void check_reduced(DataType type, ReduceOp op, const std::vector<std::vector<uint8_t>>& inputs,
                   uint64_t first, const std::vector<uint8_t>& got, uint64_t count,
                   const std::string& where) {
  const uint32_t es = ic::data_type_bytes(type);
  REQUIRE(got.size() >= count * es);
  const size_t n = inputs.size();
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t at = (first + i) * es;
    if (type == DataType::kInt32 || type == DataType::kInt64) {
      uint64_t ref = 0;
      int64_t best = INT64_MIN;
      for (size_t k = 0; k < n; ++k) {
        int64_t v;
        if (type == DataType::kInt32) {
          int32_t x;
          std::memcpy(&x, inputs[k].data() + at, 4);
          v = x;
        } else {
          std::memcpy(&v, inputs[k].data() + at, 8);
        }
        ref += static_cast<uint64_t>(v);
        best = std::max(best, v);
      }
      int64_t g;
      if (type == DataType::kInt32) {
        int32_t x;
        std::memcpy(&x, got.data() + i * es, 4);
        g = x;
        ref = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(ref)));
      } else {
        std::memcpy(&g, got.data() + i * es, 8);
      }
      const int64_t want = op == ReduceOp::kSum ? static_cast<int64_t>(ref) : best;
      if (g != want) {
        FAIL_CHECK(where << " element " << first + i << ": got " << g << ", want " << want);
        return;
      }
      continue;
    }
    double ref = 0, mag = 0, best = -INFINITY;
    for (size_t k = 0; k < n; ++k) {
      const double v = as_double(type, inputs[k].data() + at);
      ref += v;
      mag += std::fabs(v);
      best = std::max(best, v);
    }
    const double g = as_double(type, got.data() + i * es);
    if (op == ReduceOp::kMax) {
      if (g != best) {
        FAIL_CHECK(where << " element " << first + i << ": max got " << g << ", want " << best);
        return;
      }
      continue;
    }
    double tol = (n + 1) * std::ldexp(1.0, -24) * mag;
    if (type == DataType::kBFloat16) tol += std::ldexp(1.0, -8) * std::fabs(ref);
    if (std::fabs(g - ref) > tol) {
      FAIL_CHECK(where << " element " << first + i << ": got " << g << ", want " << ref
                       << " (tolerance " << tol << ")");
      return;
    }
  }
}

const DataType kTypes[] = {DataType::kFloat32, DataType::kBFloat16, DataType::kInt32,
                           DataType::kInt64};
const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kMax};

}  // namespace

TEST_CASE("ic.coll: all_to_all matches the reference for random sizes and groups") {
  std::mt19937_64 rng(11);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (int it = 0; it < p.iterations; ++it) {
      const auto npus = random_group(rng, p.npus, group_size(rng, p.npus));
      auto comm = make_comm(m, npus);
      const uint32_t n = comm->size();
      const uint64_t words = rng() % 40;  // per peer; 0 included
      CAPTURE(p.name);
      CAPTURE(n);
      CAPTURE(words);
      auto send = alloc_each(m, *comm, words * 8 * n);
      auto recv = alloc_each(m, *comm, words * 8 * n, 0xEE);
      for (uint32_t s = 0; s < n; ++s) {
        std::vector<uint64_t> v(words * n);
        for (uint32_t d = 0; d < n; ++d)
          for (uint64_t i = 0; i < words; ++i) v[d * words + i] = tag_word(s, d, i, it);
        write(m, send[s], v.data(), v.size() * 8);
      }
      auto r = ok_result(comm->all_to_all(send, recv, words * 8));
      for (uint32_t d = 0; d < n; ++d) {
        auto got = read_words(m, recv[d], words * n);
        std::vector<uint64_t> want(words * n);
        for (uint32_t s = 0; s < n; ++s)
          for (uint64_t i = 0; i < words; ++i) want[s * words + i] = tag_word(s, d, i, it);
        check_words(got, want, "recv of member " + std::to_string(d));
      }
      CHECK(r.payload_bytes == uint64_t{n} * (n - 1) * words * 8);
      CHECK(r.cross_node_bytes == expected_cross_node(m, *comm, words * 8));
      CHECK(r.messages == uint64_t{n} * n);
    }
  }
}

TEST_CASE("ic.coll: all_to_all_v with random and zero-size chunks at random offsets") {
  std::mt19937_64 rng(12);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (int it = 0; it < p.iterations; ++it) {
      const auto npus = random_group(rng, p.npus, group_size(rng, p.npus));
      auto comm = make_comm(m, npus);
      const uint32_t n = comm->size();
      CAPTURE(p.name);
      CAPTURE(n);
      std::vector<uint64_t> sb(n * n), so(n * n), rb(n * n), ro(n * n);
      for (uint32_t s = 0; s < n; ++s)
        for (uint32_t d = 0; d < n; ++d)
          sb[s * n + d] = rng() % 3 == 0 ? 0 : 8 * (rng() % 30);
      // Chunks in a shuffled order with gaps, on both sides.
      std::vector<uint64_t> send_extent(n), recv_extent(n);
      for (uint32_t s = 0; s < n; ++s) {
        std::vector<uint32_t> order(n);
        for (uint32_t d = 0; d < n; ++d) order[d] = d;
        std::shuffle(order.begin(), order.end(), rng);
        uint64_t at = 0;
        for (uint32_t d : order) {
          at += 8 * (rng() % 3);
          so[s * n + d] = at;
          at += sb[s * n + d];
        }
        send_extent[s] = at;
      }
      for (uint32_t d = 0; d < n; ++d) {
        uint64_t at = 0;
        for (uint32_t s = n; s-- > 0;) {  // reversed source order
          at += 8 * (rng() % 3);
          rb[d * n + s] = sb[s * n + d];
          ro[d * n + s] = at;
          at += rb[d * n + s];
        }
        recv_extent[d] = at;
      }
      std::vector<GlobalAddr> send, recv;
      for (uint32_t r = 0; r < n; ++r) {
        auto a = m.memory->allocate_local(comm->member(r).npu, std::max<uint64_t>(8, send_extent[r]));
        auto b = m.memory->allocate_local(comm->member(r).npu, std::max<uint64_t>(8, recv_extent[r]));
        REQUIRE((a.ok() && b.ok()));
        send.push_back(a.value());
        recv.push_back(b.value());
        std::vector<uint64_t> fill(recv_extent[r] / 8, 0xEEEEEEEEEEEEEEEEull);
        write(m, b.value(), fill.data(), recv_extent[r]);
        std::vector<uint64_t> v(send_extent[r] / 8, 0);
        for (uint32_t d = 0; d < n; ++d)
          for (uint64_t i = 0; i < sb[r * n + d] / 8; ++i)
            v[so[r * n + d] / 8 + i] = tag_word(r, d, i, it);
        write(m, a.value(), v.data(), send_extent[r]);
      }
      ic::AllToAllVArgs args{send, recv, sb, so, rb, ro};
      auto res = ok_result(comm->all_to_all_v(args));
      uint64_t payload = 0;
      for (uint32_t d = 0; d < n; ++d) {
        auto got = read_words(m, recv[d], recv_extent[d] / 8);
        std::vector<uint64_t> want(recv_extent[d] / 8, 0xEEEEEEEEEEEEEEEEull);  // gaps untouched
        for (uint32_t s = 0; s < n; ++s) {
          for (uint64_t i = 0; i < rb[d * n + s] / 8; ++i)
            want[ro[d * n + s] / 8 + i] = tag_word(s, d, i, it);
          if (s != d) payload += rb[d * n + s];
        }
        check_words(got, want, "recv of member " + std::to_string(d));
      }
      CHECK(res.payload_bytes == payload);
    }
  }
}

TEST_CASE("ic.coll: all_gather matches the reference for random sizes and groups") {
  std::mt19937_64 rng(13);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (int it = 0; it < p.iterations; ++it) {
      auto comm = make_comm(m, random_group(rng, p.npus, group_size(rng, p.npus)));
      const uint32_t n = comm->size();
      const uint64_t words = rng() % 50;
      CAPTURE(p.name);
      CAPTURE(n);
      auto send = alloc_each(m, *comm, words * 8);
      auto recv = alloc_each(m, *comm, words * 8 * n, 0xEE);
      for (uint32_t s = 0; s < n; ++s) {
        std::vector<uint64_t> v(words);
        for (uint64_t i = 0; i < words; ++i) v[i] = tag_word(s, 0, i, it);
        write(m, send[s], v.data(), words * 8);
      }
      auto r = ok_result(comm->all_gather(send, recv, words * 8));
      std::vector<uint64_t> want(words * n);
      for (uint32_t s = 0; s < n; ++s)
        for (uint64_t i = 0; i < words; ++i) want[s * words + i] = tag_word(s, 0, i, it);
      for (uint32_t d = 0; d < n; ++d)
        check_words(read_words(m, recv[d], words * n), want, "recv of member " + std::to_string(d));
      CHECK(r.payload_bytes == uint64_t{n} * (n - 1) * words * 8);
    }
  }
}

TEST_CASE("ic.coll: broadcast, direct and scatter + all-gather, from a random root") {
  std::mt19937_64 rng(14);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (int it = 0; it < p.iterations + 1; ++it) {
      auto comm = make_comm(m, random_group(rng, p.npus, group_size(rng, p.npus)));
      const uint32_t n = comm->size();
      const uint32_t root = static_cast<uint32_t>(rng() % n);
      // Small (direct) on even iterations, above the direct limit on odd ones; odd sizes.
      const uint64_t bytes = it % 2 == 0 ? rng() % 5000 : ic::kDefaultBroadcastDirectMaxBytes +
                                                              1 + rng() % 100000;
      CAPTURE(p.name);
      CAPTURE(n);
      CAPTURE(root);
      CAPTURE(bytes);
      auto buf = alloc_each(m, *comm, bytes, 0xEE);
      const auto data = ictest::pattern(1000 + it, bytes);
      write(m, buf[root], data.data(), bytes);
      auto r = ok_result(comm->broadcast(buf, bytes, root));
      for (uint32_t d = 0; d < n; ++d) {
        auto got = read(m, buf[d], bytes);
        if (got != data) {
          size_t i = 0;
          while (i < bytes && got[i] == data[i]) ++i;
          FAIL_CHECK("member " << d << " byte " << i << " differs from the root's");
        }
      }
      CHECK(r.payload_bytes >= uint64_t{n - 1} * bytes);
    }
  }
}

TEST_CASE("ic.coll: reduce_scatter of every type and op, in slices through a small scratch") {
  std::mt19937_64 rng(15);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (DataType type : kTypes)
      for (ReduceOp op : kOps) {
        const auto npus = random_group(rng, p.npus, group_size(rng, p.npus));
        const uint32_t n = static_cast<uint32_t>(npus.size());
        ic::CommConfig cfg;
        // Small scratch: several slices per call (n x 8 x 3 bytes: 3 int64 per source).
        cfg.scratch_bytes = rng() % 2 == 0 ? n * 8 * 3 : 0;
        auto comm = make_comm(m, npus, cfg);
        const uint32_t es = ic::data_type_bytes(type);
        const uint64_t count = rng() % 40;  // per member output
        CAPTURE(p.name);
        CAPTURE(n);
        CAPTURE(ic::data_type_name(type));
        CAPTURE(ic::reduce_op_name(op));
        CAPTURE(count);
        std::vector<std::vector<uint8_t>> in(n);
        auto send = alloc_each(m, *comm, count * n * es);
        auto recv = alloc_each(m, *comm, count * es, 0xEE);
        for (uint32_t s = 0; s < n; ++s) {
          fill_random(rng, type, &in[s], count * n);
          write(m, send[s], in[s].data(), in[s].size());
        }
        auto r = ok_result(comm->reduce_scatter(send, recv, count, type, op));
        for (uint32_t d = 0; d < n; ++d)
          check_reduced(type, op, in, d * count, read(m, recv[d], count * es), count,
                        "recv of member " + std::to_string(d));
        CHECK(r.payload_bytes == uint64_t{n} * (n - 1) * count * es);
      }
  }
}

TEST_CASE("ic.coll: all_reduce of every type and op, in place and not, identical everywhere") {
  std::mt19937_64 rng(16);
  for (const Preset& p : kPresets) {
    Machine m(p.name);
    for (DataType type : kTypes)
      for (ReduceOp op : kOps) {
        const auto npus = random_group(rng, p.npus, group_size(rng, p.npus));
        const uint32_t n = static_cast<uint32_t>(npus.size());
        ic::CommConfig cfg;
        cfg.scratch_bytes = rng() % 2 == 0 ? n * 8 * 2 : 0;
        auto comm = make_comm(m, npus, cfg);
        const uint32_t es = ic::data_type_bytes(type);
        const uint64_t count = rng() % 300;  // not a multiple of n in general
        const bool in_place = rng() % 2 == 0;
        CAPTURE(p.name);
        CAPTURE(n);
        CAPTURE(ic::data_type_name(type));
        CAPTURE(ic::reduce_op_name(op));
        CAPTURE(count);
        CAPTURE(in_place);
        std::vector<std::vector<uint8_t>> in(n);
        auto send = alloc_each(m, *comm, count * es);
        auto recv = in_place ? send : alloc_each(m, *comm, count * es, 0xEE);
        for (uint32_t s = 0; s < n; ++s) {
          fill_random(rng, type, &in[s], count);
          write(m, send[s], in[s].data(), in[s].size());
        }
        ok_result(comm->all_reduce(send, recv, count, type, op));
        const auto first = read(m, recv[0], count * es);
        check_reduced(type, op, in, 0, first, count, "recv of member 0");
        for (uint32_t d = 1; d < n; ++d)
          if (read(m, recv[d], count * es) != first)
            FAIL_CHECK("member " << d << "'s result is not bit-identical to member 0's");
      }
  }
}

TEST_CASE("ic.coll: consecutive collectives on one communicator reuse counters and scratch") {
  Machine m("n16");
  std::mt19937_64 rng(17);
  ic::CommConfig cfg;
  cfg.scratch_bytes = 16 * 8;  // one int64 per source per slice
  auto comm = make_comm(m, random_group(rng, 16, 11), cfg);
  const uint32_t n = comm->size();
  const uint64_t count = 37;
  auto send = alloc_each(m, *comm, count * 8);
  auto recv = alloc_each(m, *comm, count * 8);
  for (int round = 0; round < 5; ++round) {
    std::vector<std::vector<uint8_t>> in(n);
    for (uint32_t s = 0; s < n; ++s) {
      fill_random(rng, DataType::kInt64, &in[s], count);
      write(m, send[s], in[s].data(), in[s].size());
    }
    ok_result(comm->all_reduce(send, recv, count, DataType::kInt64, ReduceOp::kSum));
    for (uint32_t d = 0; d < n; ++d)
      check_reduced(DataType::kInt64, ReduceOp::kSum, in, 0, read(m, recv[d], count * 8), count,
                    "round " + std::to_string(round) + " member " + std::to_string(d));
    ok_result(comm->barrier());
  }
}

TEST_CASE("ic.coll: a group of dies (two members per NPU) exchanges and reduces correctly") {
  Machine m("n16");
  std::vector<ic::CommMember> members;
  for (dev::NpuId p : {3u, 9u, 0u, 12u})
    for (uint32_t die : {1u, 0u}) members.push_back({p, die});
  auto c = Communicator::create(*m.transport, *m.memory, members);
  REQUIRE_MESSAGE(c.ok(), c.status().to_string());
  auto& comm = *c.value();
  const uint32_t n = comm.size();
  REQUIRE(n == 8);
  CHECK(comm.rank_of(9, 0) == 3);
  CHECK(comm.rank_of(9, 1) == 2);
  const uint64_t words = 9;
  auto send = alloc_each(m, comm, words * 8 * n);
  auto recv = alloc_each(m, comm, words * 8 * n);
  for (uint32_t s = 0; s < n; ++s) {
    std::vector<uint64_t> v(words * n);
    for (uint32_t d = 0; d < n; ++d)
      for (uint64_t i = 0; i < words; ++i) v[d * words + i] = tag_word(s, d, i);
    write(m, send[s], v.data(), v.size() * 8);
  }
  ok_result(comm.all_to_all(send, recv, words * 8));
  for (uint32_t d = 0; d < n; ++d) {
    std::vector<uint64_t> want(words * n);
    for (uint32_t s = 0; s < n; ++s)
      for (uint64_t i = 0; i < words; ++i) want[s * words + i] = tag_word(s, d, i);
    check_words(read_words(m, recv[d], words * n), want, "die member " + std::to_string(d));
  }
  std::mt19937_64 rng(18);
  std::vector<std::vector<uint8_t>> in(n);
  for (uint32_t s = 0; s < n; ++s) {
    fill_random(rng, DataType::kFloat32, &in[s], 100);
    write(m, send[s], in[s].data(), 400);
  }
  ok_result(comm.all_reduce(send, recv, 100, DataType::kFloat32, ReduceOp::kSum));
  for (uint32_t d = 0; d < n; ++d)
    check_reduced(DataType::kFloat32, ReduceOp::kSum, in, 0, read(m, recv[d], 400), 100,
                  "die member " + std::to_string(d));
  ok_result(comm.barrier());
}

TEST_CASE("ic.coll: a group of one member") {
  Machine m("n8");
  auto comm = make_comm(m, {5});
  auto send = alloc_each(m, *comm, 64);
  auto recv = alloc_each(m, *comm, 64);
  std::vector<uint64_t> v(8);
  for (uint64_t i = 0; i < 8; ++i) v[i] = tag_word(0, 0, i);
  write(m, send[0], v.data(), 64);
  auto r = ok_result(comm->all_to_all(send, recv, 64));
  check_words(read_words(m, recv[0], 8), v, "recv");
  CHECK(r.payload_bytes == 0);
  ok_result(comm->all_reduce(send, recv, 8, DataType::kInt64, ReduceOp::kSum));
  check_words(read_words(m, recv[0], 8), v, "all_reduce of one");
  ok_result(comm->barrier());
  ok_result(comm->broadcast(recv, 64, 0));
}
