// Reduce-scatter and all-reduce (collectives.h, "Algorithms"), and the host reduction
// kernels that stand for the NPU's vector cores.
//
// Reduce-scatter is direct: for each slice (a scratch half holds one element range of n
// chunks, slot = source rank), every member puts its part of chunk d into member d's
// scratch; member d then reduces its own input and the n - 1 slots in rank order, writing
// its output. Slices alternate halves, so the next slice's puts overlap this slice's
// reduction in modelled time; a writer waits for the half's credit (Call::send). The
// reduction starts on the vector-core timeline when both the cores are free and every input
// has arrived (the rx clock after the slice's waits), and lasts vector_cost_ns.
// All-reduce is reduce-scatter of n balanced chunks into the output, then an all-gather of
// the reduced chunks inside the output; every element is reduced once, by its owner, so all
// members get bit-identical results.
//
// The kernels accumulate a block of elements at a time (float for float32 and bfloat16,
// wrapping unsigned arithmetic for sums of integers) and store the block only after the
// last input: the output may alias an input (in-place all-reduce). Ranges are walked in
// pieces that stay inside one global page of every buffer, inside a read section.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "interconnect/collectives_internal.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

uint32_t data_type_bytes(DataType type) {
  switch (type) {
    case DataType::kFloat32: return 4;
    case DataType::kBFloat16: return 2;
    case DataType::kInt32: return 4;
    case DataType::kInt64: return 8;
  }
  return 0;
}

const char* data_type_name(DataType type) {
  switch (type) {
    case DataType::kFloat32: return "float32";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
  }
  return "unknown";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

uint16_t float_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

float bf16_to_float(uint16_t bits) { return std::bit_cast<float>(uint32_t{bits} << 16); }

namespace {

constexpr size_t kBlock = 1024;  // elements accumulated at a time

template <typename T>
T load(const uint8_t* p, size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}
template <typename T>
void store(uint8_t* p, size_t i, T v) {
  std::memcpy(p + i * sizeof(T), &v, sizeof(T));
}

// Element loader and storer for each type, with the accumulator type.
struct F32 {
  using Acc = float;
  static Acc get(const uint8_t* p, size_t i) { return load<float>(p, i); }
  static void put(uint8_t* p, size_t i, Acc v) { store<float>(p, i, v); }
};
struct BF16 {
  using Acc = float;
  static Acc get(const uint8_t* p, size_t i) { return bf16_to_float(load<uint16_t>(p, i)); }
  static void put(uint8_t* p, size_t i, Acc v) { store<uint16_t>(p, i, float_to_bf16(v)); }
};
struct I32 {
  using Acc = int32_t;
  static Acc get(const uint8_t* p, size_t i) { return load<int32_t>(p, i); }
  static void put(uint8_t* p, size_t i, Acc v) { store<int32_t>(p, i, v); }
};
struct I64 {
  using Acc = int64_t;
  static Acc get(const uint8_t* p, size_t i) { return load<int64_t>(p, i); }
  static void put(uint8_t* p, size_t i, Acc v) { store<int64_t>(p, i, v); }
};

template <ReduceOp kOp, typename A>
A combine(A a, A b) {
  if constexpr (kOp == ReduceOp::kMax) {
    return b > a ? b : a;
  } else if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;
    return static_cast<A>(static_cast<U>(a) + static_cast<U>(b));  // wraps, no UB
  } else {
    return a + b;
  }
}

// The operation is a template parameter so the inner loops have no branch (they vectorise).
template <typename E, ReduceOp kOp>
void reduce_block(std::span<const uint8_t* const> in, uint8_t* out, size_t count) {
  using Acc = typename E::Acc;
  Acc acc[kBlock];
  size_t base = 0;
  // Whole blocks: constant trip counts, which -O2's cheap vectoriser accepts.
  for (; base + kBlock <= count; base += kBlock) {
    for (size_t i = 0; i < kBlock; ++i) acc[i] = E::get(in[0], base + i);
    for (size_t k = 1; k < in.size(); ++k) {
      const uint8_t* p = in[k];
      for (size_t i = 0; i < kBlock; ++i) acc[i] = combine<kOp>(acc[i], E::get(p, base + i));
    }
    for (size_t i = 0; i < kBlock; ++i) E::put(out, base + i, acc[i]);
  }
  const size_t m = count - base;
  for (size_t i = 0; i < m; ++i) acc[i] = E::get(in[0], base + i);
  for (size_t k = 1; k < in.size(); ++k)
    for (size_t i = 0; i < m; ++i) acc[i] = combine<kOp>(acc[i], E::get(in[k], base + i));
  for (size_t i = 0; i < m; ++i) E::put(out, base + i, acc[i]);
}

template <typename E>
void reduce_block(std::span<const uint8_t* const> in, uint8_t* out, size_t count, ReduceOp op) {
  if (op == ReduceOp::kMax)
    reduce_block<E, ReduceOp::kMax>(in, out, count);
  else
    reduce_block<E, ReduceOp::kSum>(in, out, count);
}

void reduce_span(DataType type, ReduceOp op, std::span<const uint8_t* const> in, uint8_t* out,
                 size_t count) {
  switch (type) {
    case DataType::kFloat32: reduce_block<F32>(in, out, count, op); break;
    case DataType::kBFloat16: reduce_block<BF16>(in, out, count, op); break;
    case DataType::kInt32: reduce_block<I32>(in, out, count, op); break;
    case DataType::kInt64: reduce_block<I64>(in, out, count, op); break;
  }
}

}  // namespace

Status reduce_on_host(mem::GlobalMemory& memory, DataType type, ReduceOp op,
                      std::span<const GlobalAddr> inputs, GlobalAddr out, uint64_t count) {
  const uint32_t es = data_type_bytes(type);
  std::vector<const uint8_t*> in(inputs.size());
  mem::GlobalMemory::ReadGuard guard(memory);
  for (uint64_t done = 0; done < count;) {
    uint64_t elems = count - done;
    const uint64_t at = done * es;
    elems = std::min(elems, memory.contiguous_bytes(out + at) / es);
    for (size_t k = 0; k < inputs.size(); ++k)
      elems = std::min(elems, memory.contiguous_bytes(inputs[k] + at) / es);
    auto* o = static_cast<uint8_t*>(memory.translate_host(out + at));
    if (o == nullptr || elems == 0)
      return make_error(StatusCode::kInvalidArgument, "reduction: output %s is not mapped",
                        mem::to_string(out + at).c_str());
    for (size_t k = 0; k < inputs.size(); ++k) {
      in[k] = static_cast<const uint8_t*>(memory.translate_host(inputs[k] + at));
      if (in[k] == nullptr)
        return make_error(StatusCode::kInvalidArgument, "reduction: input %zu at %s is not mapped",
                          k, mem::to_string(inputs[k] + at).c_str());
    }
    reduce_span(type, op, in, o, elems);
    done += elems;
  }
  return ok_status();
}

Status reduce_scatter_core(Call& call, std::span<const GlobalAddr> send,
                           std::span<const GlobalAddr> recv,
                           std::span<const uint64_t> chunk_begin,
                           std::span<const uint64_t> chunk_count,
                           std::span<const uint64_t> out_offset, DataType type, ReduceOp op) {
  CommState& st = call.state();
  const uint32_t n = st.size();
  const uint32_t es = data_type_bytes(type);
  const uint64_t slot_elems = st.half_bytes / (uint64_t{n} * es);  // >= 1 (create checks)
  uint64_t longest = 0;
  for (uint32_t d = 0; d < n; ++d) longest = std::max(longest, chunk_count[d]);
  std::vector<GlobalAddr> inputs(n);
  for (uint64_t e0 = 0; e0 < longest; e0 += slot_elems) {
    const uint32_t half = st.next_half;
    st.next_half ^= 1;
    auto len = [&](uint32_t d) {
      return chunk_count[d] > e0 ? std::min(slot_elems, chunk_count[d] - e0) : uint64_t{0};
    };
    MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
      if (s == d || len(d) == 0) return false;
      msg->scratch_half = static_cast<int>(half);
      msg->pieces.push_back({send[s] + (chunk_begin[d] + e0) * es,
                             st.m[d].scratch[half] + uint64_t{s} * slot_elems * es,
                             len(d) * es});
      return true;
    }));
    for (uint32_t d = 0; d < n; ++d) {
      const uint64_t count = len(d);
      if (count == 0) continue;
      MemberState& ms = st.m[d];
      const double start = std::max(ms.vector_ns, ms.rx->now().ns);
      ms.vector_ns = start + st.vector_cost_ns((uint64_t{n} + 1) * count * es);
      ms.drained_ns[half] = ms.vector_ns;
      if (!st.functional()) continue;
      for (uint32_t s = 0; s < n; ++s)
        inputs[s] = s == d ? send[d] + (chunk_begin[d] + e0) * es
                           : ms.scratch[half] + uint64_t{s} * slot_elems * es;
      Status r = reduce_on_host(st.memory, type, op, inputs, recv[d] + (out_offset[d] + e0) * es,
                                count);
      if (!r.ok()) return call.fail(std::move(r).with_context(strformat("member %u", d)));
    }
  }
  return ok_status();
}

StatusOr<CollectiveResult> Communicator::reduce_scatter(std::span<const GlobalAddr> send,
                                                        std::span<const GlobalAddr> recv,
                                                        uint64_t recv_count, DataType type,
                                                        ReduceOp op) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "reduce_scatter";
  MOE_TRY(check_types(what, type, op));
  const uint32_t es = data_type_bytes(type);
  MOE_TRY(check_size(what, "recv_count", recv_count, n, es));
  MOE_TRY(check_buffers(st, what, "send", send,
                        [&](uint32_t) { return recv_count * n * es; }, es));
  MOE_TRY(check_buffers(st, what, "recv", recv, [&](uint32_t) { return recv_count * es; }, es));
  std::vector<uint64_t> begin(n), count(n, recv_count), offset(n, 0);
  for (uint32_t d = 0; d < n; ++d) begin[d] = d * recv_count;
  Call call(st, what);
  MOE_TRY(call.begin());
  MOE_TRY(reduce_scatter_core(call, send, recv, begin, count, offset, type, op));
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

StatusOr<CollectiveResult> Communicator::all_reduce(std::span<const GlobalAddr> send,
                                                    std::span<const GlobalAddr> recv,
                                                    uint64_t count, DataType type, ReduceOp op) {
  CommState& st = *state_;
  const uint32_t n = st.size();
  const char* what = "all_reduce";
  MOE_TRY(check_types(what, type, op));
  const uint32_t es = data_type_bytes(type);
  MOE_TRY(check_size(what, "count", count, es, n));
  MOE_TRY(check_buffers(st, what, "send", send, [&](uint32_t) { return count * es; }, es));
  MOE_TRY(check_buffers(st, what, "recv", recv, [&](uint32_t) { return count * es; }, es));
  std::vector<uint64_t> begin(n + 1), len(n);
  for (uint32_t d = 0; d <= n; ++d) begin[d] = count * d / n;
  for (uint32_t d = 0; d < n; ++d) len[d] = begin[d + 1] - begin[d];
  Call call(st, what);
  MOE_TRY(call.begin());
  MOE_TRY(reduce_scatter_core(call, send, recv, std::span(begin).first(n), len,
                              std::span(begin).first(n), type, op));
  // All-gather of the reduced chunks: each leaves when its reduction is done.
  for (uint32_t d = 0; d < n; ++d) st.m[d].tx->advance_to(ModelTime{st.m[d].vector_ns});
  MOE_TRY(call.exchange(Sender::kTx, [&](uint32_t s, uint32_t d, Message* msg) {
    if (s == d) return false;
    if (len[s] > 0)
      msg->pieces.push_back({recv[s] + begin[s] * es, recv[d] + begin[s] * es, len[s] * es});
    return true;
  }));
  CollectiveResult res;
  MOE_TRY(call.finish(&res));
  return res;
}

}  // namespace moe::ic
