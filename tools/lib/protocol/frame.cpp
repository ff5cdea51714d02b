// Framing: the header, and the incremental decoder that cuts frames out of a byte stream.
//
// Design: the decoder is a two-phase state machine (header, then payload) over a fixed
// 8-byte header array and one payload buffer. Bytes are copied out of the caller's pieces
// as they come, so a frame split anywhere (a socket hands over what it has) is reassembled
// the same way as one delivered whole. The payload is copied into uint64_t words so that it
// starts 8-byte aligned: FlatBuffers reads scalars in place and its Verifier checks
// alignment, so a payload left at an odd offset of the caller's buffer would be refused (or
// read misaligned). The copy costs one pass over bytes that are about to be verified anyway.
//
// Invariants: header_have_ <= 8; payload_have_ <= payload_bytes_ <= max_frame_bytes_ - 8;
// the payload buffer is sized only after the header was checked, so a hostile length never
// allocates more than the limit. Once broken_, nothing more is taken.
#include "tools/lib/protocol/frame.h"

#include <algorithm>
#include <cstring>

#include "runtime/base/check.h"
#include "runtime/base/log.h"
#include "runtime/base/strformat.h"
#include "tools/lib/tools_options.h"

namespace moe::proto {

size_t max_frame_bytes_option() {
  int64_t value = tools::kProtocolMaxFrameBytes.get();
  int64_t clamped = std::clamp<int64_t>(value, static_cast<int64_t>(kMinFrameBytes),
                                        static_cast<int64_t>(kMaxFrameBytesCeiling));
  if (clamped != value) {
    MOE_WARN("PROTOCOL_MAX_FRAME_BYTES=%lld is outside [%zu, %zu]; using %lld",
             static_cast<long long>(value), kMinFrameBytes, kMaxFrameBytesCeiling,
             static_cast<long long>(clamped));
  }
  return static_cast<size_t>(clamped);
}

void write_frame_header(uint32_t payload_bytes, uint8_t out[kFrameHeaderBytes], uint8_t version) {
  out[0] = static_cast<uint8_t>(payload_bytes);
  out[1] = static_cast<uint8_t>(payload_bytes >> 8);
  out[2] = static_cast<uint8_t>(payload_bytes >> 16);
  out[3] = static_cast<uint8_t>(payload_bytes >> 24);
  out[4] = kFrameMagic[0];
  out[5] = kFrameMagic[1];
  out[6] = kFrameMagic[2];
  out[7] = version;
}

Status append_frame(std::span<const uint8_t> payload, size_t max_frame_bytes,
                    std::vector<uint8_t>* out) {
  if (payload.empty()) {
    return make_error(StatusCode::kInvalidArgument, "frame: empty payload");
  }
  if (payload.size() > max_frame_bytes - std::min(max_frame_bytes, kFrameHeaderBytes)) {
    return make_error(StatusCode::kInvalidArgument,
                      "frame: payload of %zu bytes does not fit a frame of at most %zu bytes "
                      "(%zu of header)",
                      payload.size(), max_frame_bytes, kFrameHeaderBytes);
  }
  uint8_t header[kFrameHeaderBytes];
  write_frame_header(static_cast<uint32_t>(payload.size()), header);
  out->reserve(out->size() + kFrameHeaderBytes + payload.size());
  out->insert(out->end(), header, header + kFrameHeaderBytes);
  out->insert(out->end(), payload.begin(), payload.end());
  return ok_status();
}

FrameDecoder::FrameDecoder(size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {
  MOE_ASSERT(max_frame_bytes >= kMinFrameBytes && max_frame_bytes <= kMaxFrameBytesCeiling);
}

FrameDecoder::State FrameDecoder::fail_header(Status status) {
  broken_ = true;
  error_ = std::move(status);
  error_.with_context(strformat("frame %llu at stream byte %llu",
                                static_cast<unsigned long long>(frames_),
                                static_cast<unsigned long long>(frame_start_)));
  return State::kError;
}

FrameDecoder::State FrameDecoder::decode(std::span<const uint8_t>* input) {
  if (broken_) return State::kError;
  if (frame_ready_) {  // the previous frame was handed out: start the next one
    frame_ready_ = false;
    header_have_ = 0;
    payload_have_ = 0;
    payload_bytes_ = 0;
    frame_start_ = consumed_;
  }
  error_ = ok_status();

  if (header_have_ < kFrameHeaderBytes) {
    size_t take = std::min(kFrameHeaderBytes - header_have_, input->size());
    if (take > 0) std::memcpy(header_ + header_have_, input->data(), take);
    *input = input->subspan(take);
    header_have_ += take;
    consumed_ += take;
    if (header_have_ < kFrameHeaderBytes) return State::kNeedMore;

    if (header_[4] != kFrameMagic[0] || header_[5] != kFrameMagic[1] ||
        header_[6] != kFrameMagic[2]) {
      return fail_header(make_error(
          StatusCode::kParseError,
          "bad magic: header bytes 4..6 are %02x %02x %02x, a moed frame has 4d 4f 45 ('MOE')",
          header_[4], header_[5], header_[6]));
    }
    if (header_[7] != kProtocolVersion) {
      return fail_header(make_error(StatusCode::kUnsupported,
                                    "protocol version %u; this build speaks version %u",
                                    header_[7], kProtocolVersion));
    }
    uint32_t length = static_cast<uint32_t>(header_[0]) | static_cast<uint32_t>(header_[1]) << 8 |
                      static_cast<uint32_t>(header_[2]) << 16 |
                      static_cast<uint32_t>(header_[3]) << 24;
    size_t max_payload = max_frame_bytes_ - kFrameHeaderBytes;
    if (length == 0) {
      return fail_header(make_error(StatusCode::kParseError, "payload length 0"));
    }
    if (length > max_payload) {
      return fail_header(make_error(StatusCode::kInvalidArgument,
                                    "payload length %u bytes over the limit of %zu (frames of "
                                    "at most %zu bytes, PROTOCOL_MAX_FRAME_BYTES)",
                                    length, max_payload, max_frame_bytes_));
    }
    payload_bytes_ = length;
    payload_.resize((static_cast<size_t>(length) + 7) / 8);
  }

  auto* dst = reinterpret_cast<uint8_t*>(payload_.data());
  size_t take = std::min(static_cast<size_t>(payload_bytes_) - payload_have_, input->size());
  if (take > 0) std::memcpy(dst + payload_have_, input->data(), take);
  *input = input->subspan(take);
  payload_have_ += take;
  consumed_ += take;
  if (payload_have_ < payload_bytes_) return State::kNeedMore;

  frame_ready_ = true;
  ++frames_;
  return State::kFrame;
}

std::span<const uint8_t> FrameDecoder::payload() const {
  MOE_ASSERT(frame_ready_);
  return {reinterpret_cast<const uint8_t*>(payload_.data()), payload_bytes_};
}

Status FrameDecoder::payload_error(const Status& status) const {
  Status out = status;
  out.with_context(strformat("frame %llu at stream byte %llu",
                             static_cast<unsigned long long>(frames_ == 0 ? 0 : frames_ - 1),
                             static_cast<unsigned long long>(frame_start_)));
  return out;
}

}  // namespace moe::proto
