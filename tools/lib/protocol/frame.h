// Framing of the moed protocol: how messages are cut out of a byte stream.
//
// A frame is an 8-byte header and a payload:
//   bytes 0..3  payload length, little-endian uint32 (the FlatBuffer's size, header excluded)
//   bytes 4..7  'M' 'O' 'E' and the protocol version (kProtocolVersion)
//   bytes 8..   the payload: one FlatBuffer whose root is a moe.proto.fb.Envelope
// The header's layout is fixed for every version, so a peer of another version is always
// recognised and refused by name. A frame is at most max_frame_bytes long, header included
// (option PROTOCOL_MAX_FRAME_BYTES, env MOE_PROTOCOL_MAX_FRAME_BYTES, default 1 MiB).
//
// FrameDecoder takes bytes in pieces of any size, as a socket delivers them, and yields one
// complete payload at a time. It never reads outside the bytes it is given and never holds
// more than one frame (the buffer grows to the announced length, which is checked against
// the limit before anything is allocated). Errors come in two kinds:
//   - in the header (a length of 0 or over the limit, wrong magic, another version): the
//     stream has lost its framing or speaks something else; the decoder stops
//     (can_continue() false) and the server answers with an error and closes;
//   - in the payload (tools/lib/protocol/codec.h: the FlatBuffers Verifier rejects it, an
//     unknown message type): the frame was cut out correctly, so the stream goes on.
//
// Thread-safety: a FrameDecoder is used by one thread at a time. The functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/base/status.h"
#include "tools/lib/protocol/messages.h"

namespace moe::proto {

inline constexpr size_t kFrameHeaderBytes = 8;
inline constexpr uint8_t kFrameMagic[3] = {'M', 'O', 'E'};
// Bounds on max_frame_bytes: the smallest holds any header plus a small message; the largest
// keeps the length in a uint32 with room to spare.
inline constexpr size_t kMinFrameBytes = 64;
inline constexpr size_t kMaxFrameBytesCeiling = size_t{1} << 30;

// The limit from the option TOOLS/PROTOCOL_MAX_FRAME_BYTES, clamped into
// [kMinFrameBytes, kMaxFrameBytesCeiling] (a warning is logged when it had to be).
size_t max_frame_bytes_option();

// Writes the header of a frame whose payload has `payload_bytes` bytes into `out`.
void write_frame_header(uint32_t payload_bytes, uint8_t out[kFrameHeaderBytes],
                        uint8_t version = kProtocolVersion);

// A complete frame: `payload` + a header, appended to *out. kInvalidArgument when the frame
// would exceed max_frame_bytes (naming both sizes); *out is unchanged then.
Status append_frame(std::span<const uint8_t> payload, size_t max_frame_bytes,
                    std::vector<uint8_t>* out);

class FrameDecoder {
 public:
  enum class State : uint8_t {
    kNeedMore,  // every byte given was taken; no frame complete yet
    kFrame,     // payload() holds a complete frame's payload
    kError,     // error() says what was wrong; can_continue() whether to go on
  };

  // Precondition: kMinFrameBytes <= max_frame_bytes <= kMaxFrameBytesCeiling.
  explicit FrameDecoder(size_t max_frame_bytes);
  FrameDecoder() : FrameDecoder(max_frame_bytes_option()) {}

  // Takes bytes from the front of *input (advancing it) until a frame is complete, an error
  // is found or the input is used up. Returns kFrame at most once per frame: call again
  // (with the rest of the input) for the next one. After an error that cannot be continued
  // from, every call returns kError and takes nothing.
  State decode(std::span<const uint8_t>* input);

  // The payload of the frame just returned (8-byte aligned, as the FlatBuffers accessors
  // need). Valid until the next decode(). Precondition: the last decode() returned kFrame.
  // (The buffer behind it keeps the capacity of the largest frame seen, at most the limit.)
  std::span<const uint8_t> payload() const;
  // The header's version byte of the frame just returned.
  uint8_t version() const { return header_[7]; }

  // Why the last decode() returned kError, naming the frame (its index in the stream and
  // its byte offset) and what was wrong.
  const Status& error() const { return error_; }
  // False after a header error: the stream cannot be resynchronised.
  bool can_continue() const { return !broken_; }

  // Records an error found in the payload of the frame just returned (by the codec), so
  // that it names the frame like the decoder's own errors. The stream goes on. Returns it.
  Status payload_error(const Status& status) const;

  size_t max_frame_bytes() const { return max_frame_bytes_; }
  uint64_t frames_decoded() const { return frames_; }
  uint64_t bytes_consumed() const { return consumed_; }

 private:
  State fail_header(Status status);

  size_t max_frame_bytes_;
  uint8_t header_[kFrameHeaderBytes] = {};
  size_t header_have_ = 0;
  uint32_t payload_bytes_ = 0;
  size_t payload_have_ = 0;
  std::vector<uint64_t> payload_;  // uint64_t words: the payload starts 8-byte aligned
  bool frame_ready_ = false;
  bool broken_ = false;
  Status error_;
  uint64_t frames_ = 0;      // frames completed
  uint64_t consumed_ = 0;    // bytes taken
  uint64_t frame_start_ = 0; // stream offset of the current frame's header
};

}  // namespace moe::proto
