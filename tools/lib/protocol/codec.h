// Encoding messages into frames and decoding frame payloads into messages.
//
// encode_frame() builds the FlatBuffer of one message (tools/lib/protocol/moe_protocol.fbs)
// and frames it (frame.h); decode_payload() verifies one payload with the FlatBuffers
// Verifier and reads it into the plain types of messages.h. Nothing here exposes a
// FlatBuffers type.
//
// What decoding checks, and the error each failure gives:
//   - the payload is a well-formed Envelope with the "MOEP" identifier, every offset, string
//     and vector inside it (FlatBuffers Verifier, depth <= 64): else kParseError;
//   - it carries a message (union type not NONE, body present): else kParseError;
//   - the message type is one this version knows: else kUnsupported (a newer peer's message;
//     the stream goes on, the server answers with an error for that request id);
//   - every enum field holds a known value: else kUnsupported, naming the field.
// Everything else (sampling ranges, model names, an empty prompt) is for the server to judge.
//
// Encoding is deterministic: the same Message gives the same bytes.
// Thread-safety: all functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "runtime/base/status.h"
#include "tools/lib/protocol/frame.h"
#include "tools/lib/protocol/messages.h"

namespace moe::proto {

// The FlatBuffer of `message` (a frame's payload), appended to *out.
void encode_payload(const Message& message, std::vector<uint8_t>* out);

// One complete frame (header + payload) of `message`, appended to *out. kInvalidArgument
// when it would be longer than max_frame_bytes (say a prompt too long for one frame); *out
// is unchanged then.
Status append_message_frame(const Message& message, std::vector<uint8_t>* out,
                            size_t max_frame_bytes = max_frame_bytes_option());

// One frame of `message`, or why it cannot be sent.
StatusOr<std::vector<uint8_t>> encode_frame(const Message& message,
                                            size_t max_frame_bytes = max_frame_bytes_option());

// The same for a request id and a body of any message type: encode_frame(7, CancelRequest{3}).
template <typename T>
StatusOr<std::vector<uint8_t>> encode_frame(uint64_t request_id, T body,
                                            size_t max_frame_bytes = max_frame_bytes_option()) {
  return encode_frame(Message{request_id, Body(std::move(body))}, max_frame_bytes);
}

// Decodes one frame payload (FrameDecoder::payload()). The payload may sit at any address
// (a misaligned one is copied first). When request_id is given it is set to the envelope's
// request id whenever that could be read (an unknown message type in a verified envelope),
// else to kNoRequestId, so an error reply can name the request it answers.
StatusOr<Message> decode_payload(std::span<const uint8_t> payload,
                                 uint64_t* request_id = nullptr);

// The wire type (the schema's Message union value) of a body: index() + 1.
inline uint8_t wire_type(const Body& body) { return static_cast<uint8_t>(body.index() + 1); }

}  // namespace moe::proto
