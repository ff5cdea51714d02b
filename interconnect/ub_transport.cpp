// The UB transport object and its barrier groups (see ub_transport.h and ub_internal.h).
//
// The transport itself holds only what its endpoints share: the driver, the memory layer,
// the configuration fixed at open, and the signal visibility table. Everything on the data
// path lives in the endpoints (ub_endpoint.cpp), one per issuing context.
#include "interconnect/ub_transport.h"

#include <algorithm>
#include <bit>

#include "interconnect/ic_options.h"
#include "interconnect/ub_internal.h"
#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"

namespace moe::ic {

bool ub_can_serve(const dev::Driver& driver, std::string* why) {
  const dev::Topology& t = driver.topology();
  if (t.num_npus() == 0) {
    *why = "the machine has no NPUs";
    return false;
  }
  if (t.num_planes == 0 || t.num_planes > dev::kMaxPlanes) {
    *why = strformat("the fabric has %u planes (1..%u supported)", t.num_planes, dev::kMaxPlanes);
    return false;
  }
  if (t.packet_bytes == 0) {
    *why = "the fabric's packet_bytes is 0";
    return false;
  }
  return true;
}

StatusOr<std::unique_ptr<Transport>> open_ub_transport(dev::Driver& driver,
                                                       mem::GlobalMemory& memory,
                                                       const TransportOptions& options) {
  std::string why;
  if (!ub_can_serve(driver, &why))
    return make_error(StatusCode::kUnsupported, "ub transport on driver '%s': %s",
                      std::string(driver.name()).c_str(), why.c_str());
  const dev::Topology& t = driver.topology();
  const dev::DriverCaps dc = driver.caps();
  auto bounded = [](int64_t v, int64_t lo, int64_t hi) { return std::clamp(v, lo, hi); };
  UbConfig c;
  const uint64_t page = memory.page_bytes();
  int64_t coalesce = options.coalesce_bytes != 0 ? options.coalesce_bytes
                                                 : options::kCoalesceBytes.get();
  // A staging buffer of coalesce_bytes is one aligned block inside one global page.
  coalesce = bounded(coalesce, 64, static_cast<int64_t>(std::min<uint64_t>(page, 1 << 20)));
  c.caps.coalesce_bytes = static_cast<uint32_t>(coalesce);
  c.caps.coalesce_max_put_bytes = static_cast<uint32_t>(
      bounded(options::kCoalesceMaxPutBytes.get(), 0, c.caps.coalesce_bytes));
  c.caps.max_inline_bytes =
      static_cast<uint32_t>(bounded(options::kMaxInlineBytes.get(), 8, c.caps.coalesce_bytes));
  c.caps.packet_bytes = t.packet_bytes;
  c.caps.num_planes = t.num_planes;
  c.caps.max_segments = dc.max_transfer_segments;
  c.caps.max_retries = static_cast<uint32_t>(
      options.max_retries != 0 ? options.max_retries : bounded(options::kMaxRetries.get(), 0, 1000));
  c.caps.signal_history = kSignalHistory;
  const int64_t n = t.num_npus();
  const int64_t table_words = options::kSignalTableWords.get();
  c.caps.signal_table_words = static_cast<uint32_t>(bounded(
      table_words > 0 ? table_words : 2 * n * n + 64 * n + 16384, 16, int64_t{1} << 24));
  c.caps.functional = dc.functional;
  c.retry_detect_ns = std::max(0.0, options::kRetryDetectNs.get());
  c.host_issue_ns = std::max(0.0, options::kHostIssueNs.get());
  c.device_issue_ns = std::max(0.0, options::kDeviceIssueNs.get());
  c.wait_timeout_ns = bounded(options::kWaitTimeoutMs.get(), 0, int64_t{1} << 40) * 1'000'000;
  c.completion_timeout_ns =
      bounded(options::kCompletionTimeoutMs.get(), 1, int64_t{1} << 40) * 1'000'000;
  c.queue_depth = static_cast<uint32_t>(
      bounded(options::kQueueDepth.get(), 16, std::max<uint32_t>(16, dc.queue_depth_max)));
  return std::unique_ptr<Transport>(new UbTransport(driver, memory, c));
}

UbTransport::UbTransport(dev::Driver& driver, mem::GlobalMemory& memory, const UbConfig& config)
    : driver_(driver),
      memory_(memory),
      config_(config),
      signals_(config.caps.signal_table_words) {}

StatusOr<std::unique_ptr<Endpoint>> UbTransport::open_endpoint(const EndpointConfig& config) {
  if (config.npu >= driver_.topology().num_npus())
    return make_error(StatusCode::kInvalidArgument,
                      "open_endpoint: npu %u out of range (machine has %u NPUs)", config.npu,
                      driver_.topology().num_npus());
  if (config.mode == Mode::kFunctional && !config_.caps.functional)
    return make_error(StatusCode::kInvalidArgument,
                      "open_endpoint: npu %u: functional mode asked, but driver '%s' moves no "
                      "payload",
                      config.npu, std::string(driver_.name()).c_str());
  if (config.mode != Mode::kFunctional && config.mode != Mode::kTiming)
    return make_error(StatusCode::kInvalidArgument, "open_endpoint: npu %u: unknown mode %u",
                      config.npu, static_cast<unsigned>(config.mode));
  // A lost NPU is refused by the endpoint's queue_create (kNpuLost, naming the NPU); not
  // asked here through npu_state, which also measures the NPU's host residency (mincore over
  // its committed HBM: milliseconds each, seconds for the thousands of endpoints of an EP 384
  // MoeBuffer).
  StatusOr<std::unique_ptr<Endpoint>> ep = make_ub_endpoint(*this, config);
  if (!ep.ok()) {
    Status s = ep.status();
    return s.with_context(strformat("open_endpoint: npu %u", config.npu));
  }
  return ep;
}

StatusOr<std::unique_ptr<Group>> UbTransport::create_group(std::span<const dev::NpuId> members) {
  const uint32_t n = driver_.topology().num_npus();
  if (members.empty())
    return make_error(StatusCode::kInvalidArgument, "create_group: no members");
  std::vector<bool> seen(n, false);
  for (dev::NpuId m : members) {
    if (m >= n)
      return make_error(StatusCode::kInvalidArgument,
                        "create_group: member npu %u out of range (machine has %u NPUs)", m, n);
    if (seen[m])
      return make_error(StatusCode::kInvalidArgument, "create_group: npu %u listed twice", m);
    seen[m] = true;
  }
  mem::AllocRequest req;
  req.policy = mem::Policy::kSymmetric;
  req.bytes = 16;
  req.npus.assign(members.begin(), members.end());
  MOE_TRY_ASSIGN(mem::Allocation words, memory_.allocate(req));
  const uint64_t zero[2] = {0, 0};
  Status s = memory_.write_all(words, 0, zero, sizeof(zero));
  if (!s.ok()) {
    memory_.free(words).ignore();
    return s.with_context("create_group: zeroing the barrier words");
  }
  return std::unique_ptr<Group>(new UbGroup(
      memory_, std::vector<dev::NpuId>(members.begin(), members.end()), std::move(words), n));
}

UbGroup::UbGroup(mem::GlobalMemory& memory, std::vector<dev::NpuId> members,
                 mem::Allocation words, uint32_t num_npus)
    : memory_(memory), members_(std::move(members)), words_(std::move(words)) {
  rank_.assign(num_npus, -1);
  for (uint32_t r = 0; r < members_.size(); ++r) rank_[members_[r]] = static_cast<int>(r);
  release_.resize(members_.size());
  for (uint32_t r = 0; r < members_.size(); ++r) {
    auto a = memory_.symmetric_addr(words_, members_[r]);
    MOE_ASSERT(a.ok());
    release_[r] = a.value() + 8;
    if (r == 0) root_counter_ = a.value();
  }
  member_state_.resize(members_.size());
}

UbGroup::~UbGroup() {
  Status s = memory_.free(words_);
  if (!s.ok()) MOE_WARN("barrier group: freeing its words: %s", s.to_string().c_str());
}

bool UbGroup::arrive(uint64_t epoch, double arrival_ns, double* latest_ns) {
  const uint32_t p = epoch & 1;
  double seen = latest_ns_[p].load(std::memory_order_relaxed);
  while (arrival_ns > seen &&
         !latest_ns_[p].compare_exchange_weak(seen, arrival_ns, std::memory_order_acq_rel)) {
  }
  const uint32_t count = arrived_[p].fetch_add(1, std::memory_order_acq_rel) + 1;
  if (count != members_.size()) return false;
  // Every member of this epoch has arrived; members of the next epoch use the other parity,
  // and none can reach epoch + 2 (this parity again) before this member releases them.
  *latest_ns = latest_ns_[p].exchange(0.0, std::memory_order_acq_rel);
  arrived_[p].store(0, std::memory_order_release);
  return true;
}

}  // namespace moe::ic
