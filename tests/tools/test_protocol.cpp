// The moed wire protocol: every message round-trips; frames are cut out of a stream however
// it is split; malformed, truncated, oversized and wrong-version frames give the error that
// names them, and the decoder says whether the stream can go on.
#include <doctest/doctest.h>

#include <flatbuffers/flatbuffers.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/options.h"
#include "runtime/base/strformat.h"
#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"
#include "tools/lib/protocol/moe_protocol_generated.h"
#include "tools/lib/protocol/samples.h"

using namespace moe;
using namespace moe::proto;

namespace {

constexpr size_t kLimit = size_t{1} << 20;

std::vector<uint8_t> frame_of(const Message& m, size_t limit = kLimit) {
  auto frame = encode_frame(m, limit);
  REQUIRE_MESSAGE(frame.ok(), frame.status().to_string());
  return std::move(frame).value();
}

std::vector<uint8_t> stream_of(const std::vector<Message>& messages) {
  std::vector<uint8_t> stream;
  for (const Message& m : messages) REQUIRE(append_message_frame(m, &stream, kLimit).ok());
  return stream;
}

// Feeds `pieces` one after the other; returns the messages decoded. Fails the test on any
// decoder or codec error.
std::vector<Message> decode_pieces(const std::vector<std::span<const uint8_t>>& pieces,
                                   FrameDecoder* decoder) {
  std::vector<Message> out;
  for (std::span<const uint8_t> input : pieces) {
    while (true) {
      FrameDecoder::State state = decoder->decode(&input);
      REQUIRE_MESSAGE(state != FrameDecoder::State::kError, decoder->error().to_string());
      if (state == FrameDecoder::State::kNeedMore) {
        REQUIRE(input.empty());
        break;
      }
      auto message = decode_payload(decoder->payload());
      REQUIRE_MESSAGE(message.ok(), message.status().to_string());
      out.push_back(std::move(message).value());
    }
  }
  return out;
}

// A default-constructed body of every alternative.
template <size_t... I>
std::vector<Body> default_bodies(std::index_sequence<I...>) {
  return {Body(std::in_place_index<I>)...};
}

// A frame around an arbitrary payload (valid header).
std::vector<uint8_t> raw_frame(std::span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  REQUIRE(append_frame(payload, kLimit, &out).ok());
  return out;
}

std::vector<uint8_t> finished(flatbuffers::FlatBufferBuilder& b) {
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

}  // namespace

TEST_CASE("tools.protocol: every message type round-trips through a frame") {
  std::vector<Message> samples = sample_messages();
  std::set<size_t> kinds;
  for (const Message& m : samples) kinds.insert(m.body.index());
  CHECK(kinds.size() == std::variant_size_v<Body>);  // the samples cover every message

  for (const Message& m : samples) {
    CAPTURE(message_name(m.body));
    std::vector<uint8_t> frame = frame_of(m);
    CHECK(frame.size() % 8 == 0);  // a FlatBuffer is padded to its alignment
    CHECK(frame[4] == 'M');
    CHECK(frame[7] == kProtocolVersion);
    FrameDecoder decoder(kLimit);
    std::span<const uint8_t> input(frame);
    REQUIRE(decoder.decode(&input) == FrameDecoder::State::kFrame);
    CHECK(input.empty());
    CHECK(decoder.payload().size() == frame.size() - kFrameHeaderBytes);
    auto decoded = decode_payload(decoder.payload());
    REQUIRE_MESSAGE(decoded.ok(), decoded.status().to_string());
    CHECK(decoded->request_id == m.request_id);
    CHECK(wire_type(decoded->body) == wire_type(m.body));
    CHECK(*decoded == m);
    // Encoding is deterministic: the decoded message encodes to the same bytes.
    CHECK(frame_of(*decoded) == frame);
  }
}

TEST_CASE("tools.protocol: default messages round-trip, and names follow the schema") {
  std::vector<Body> bodies = default_bodies(std::make_index_sequence<std::variant_size_v<Body>>());
  for (size_t i = 0; i < bodies.size(); ++i) {
    Message m{~uint64_t{0} - i, bodies[i]};
    CAPTURE(message_name(m.body));
    auto decoded = decode_payload(std::span<const uint8_t>(frame_of(m)).subspan(kFrameHeaderBytes));
    REQUIRE_MESSAGE(decoded.ok(), decoded.status().to_string());
    CHECK(*decoded == m);
  }
  CHECK(message_name(GenerateRequest{}) == "GenerateRequest");
  CHECK(message_name(ErrorReply{}) == "ErrorReply");
  CHECK(message_type_name(0) == "unknown");
  CHECK(message_type_name(200) == "unknown");
  auto cancel = encode_frame(7, CancelRequest{3});  // the request-id + body shorthand
  REQUIRE(cancel.ok());
  CHECK(*cancel == frame_of({7, CancelRequest{3}}));
  CHECK(wire_type(StatusRequest{}) == static_cast<uint8_t>(fb::Message::StatusRequest));
  CHECK(wire_type(ErrorReply{}) == static_cast<uint8_t>(fb::Message::ErrorReply));
}

TEST_CASE("tools.protocol: a stream split at every byte boundary decodes the same") {
  std::vector<Message> samples = sample_messages();
  std::vector<uint8_t> stream = stream_of(samples);
  std::span<const uint8_t> all(stream);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    FrameDecoder decoder(kLimit);
    std::vector<Message> got = decode_pieces({all.first(cut), all.subspan(cut)}, &decoder);
    REQUIRE(got == samples);
    CHECK(decoder.frames_decoded() == samples.size());
    CHECK(decoder.bytes_consumed() == stream.size());
  }
  // One byte at a time.
  std::vector<std::span<const uint8_t>> bytes;
  for (size_t i = 0; i < stream.size(); ++i) bytes.push_back(all.subspan(i, 1));
  FrameDecoder decoder(kLimit);
  CHECK(decode_pieces(bytes, &decoder) == samples);
}

TEST_CASE("tools.protocol: many frames in one buffer, and empty pieces") {
  std::vector<Message> messages;
  for (uint64_t id = 1; id <= 2000; ++id) {
    if (id % 3 == 0) {
      messages.push_back({id, TokenFrame{static_cast<uint32_t>(id), {static_cast<uint32_t>(id)}, ""}});
    } else if (id % 3 == 1) {
      messages.push_back({id, GenerateRequest{"", {1, 2, static_cast<uint32_t>(id)}, "", 4}});
    } else {
      messages.push_back({id, CancelRequest{id - 1}});
    }
  }
  std::vector<uint8_t> stream = stream_of(messages);
  FrameDecoder decoder(kLimit);
  std::span<const uint8_t> none;
  std::vector<Message> got = decode_pieces({none, std::span<const uint8_t>(stream), none}, &decoder);
  CHECK(got == messages);
}

TEST_CASE("tools.protocol: a frame truncated anywhere waits for the rest") {
  std::vector<uint8_t> frame = frame_of(sample_messages()[5]);
  for (size_t have = 0; have < frame.size(); ++have) {
    FrameDecoder decoder(kLimit);
    std::span<const uint8_t> input(frame.data(), have);
    CHECK(decoder.decode(&input) == FrameDecoder::State::kNeedMore);
    CHECK(input.empty());
    CHECK(decoder.bytes_consumed() == have);
    std::span<const uint8_t> rest(frame.data() + have, frame.size() - have);
    CHECK(decoder.decode(&rest) == FrameDecoder::State::kFrame);
  }
}

TEST_CASE("tools.protocol: oversized frames are refused by the encoder and the decoder") {
  GenerateRequest big;
  big.prompt_tokens.assign(300000, 7);  // 1.2 MB of tokens
  Message m{9, big};
  std::vector<uint8_t> out = {1, 2, 3};
  Status status = append_message_frame(m, &out, kLimit);
  CHECK(status.code() == StatusCode::kInvalidArgument);
  CHECK(status.message().find("GenerateRequest") != std::string::npos);
  CHECK(status.message().find("1048576") != std::string::npos);
  CHECK(out == std::vector<uint8_t>{1, 2, 3});  // untouched

  auto frame = encode_frame(m, 2 * kLimit);  // fits a larger limit
  REQUIRE(frame.ok());
  FrameDecoder decoder(kLimit);
  std::span<const uint8_t> input(*frame);
  CHECK(decoder.decode(&input) == FrameDecoder::State::kError);
  CHECK(decoder.error().code() == StatusCode::kInvalidArgument);
  CHECK(decoder.error().message().find("over the limit") != std::string::npos);
  CHECK_FALSE(decoder.can_continue());
  CHECK(decoder.bytes_consumed() == kFrameHeaderBytes);  // the payload is never taken
  CHECK(decoder.decode(&input) == FrameDecoder::State::kError);
  CHECK(decoder.bytes_consumed() == kFrameHeaderBytes);

  // The same frame under a limit it fits decodes.
  FrameDecoder large(2 * kLimit);
  std::span<const uint8_t> again(*frame);
  REQUIRE(large.decode(&again) == FrameDecoder::State::kFrame);
  auto decoded = decode_payload(large.payload());
  REQUIRE(decoded.ok());
  CHECK(*decoded == m);
}

TEST_CASE("tools.protocol: header errors name what was wrong and end the stream") {
  std::vector<uint8_t> good = frame_of(sample_messages()[0]);

  struct Case {
    const char* what;
    size_t byte;
    uint8_t value;
    StatusCode code;
    const char* says;
  };
  const Case cases[] = {
      {"magic", 4, 'X', StatusCode::kParseError, "bad magic"},
      {"magic", 6, 0, StatusCode::kParseError, "bad magic"},
      {"version", 7, kProtocolVersion + 1, StatusCode::kUnsupported, "protocol version 2"},
      {"version", 7, 0, StatusCode::kUnsupported, "protocol version 0"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    std::vector<uint8_t> stream = good;
    stream[c.byte] = c.value;
    stream.insert(stream.end(), good.begin(), good.end());  // a good frame after it
    FrameDecoder decoder(kLimit);
    std::span<const uint8_t> input(stream);
    CHECK(decoder.decode(&input) == FrameDecoder::State::kError);
    CHECK(decoder.error().code() == c.code);
    CHECK(decoder.error().message().find(c.says) != std::string::npos);
    CHECK(decoder.error().message().find("frame 0 at stream byte 0") != std::string::npos);
    CHECK_FALSE(decoder.can_continue());
    size_t left = input.size();
    CHECK(decoder.decode(&input) == FrameDecoder::State::kError);  // takes nothing more
    CHECK(input.size() == left);
  }

  // A zero length, as the second frame of a stream: the message names that frame.
  std::vector<uint8_t> stream = good;
  uint8_t zero[kFrameHeaderBytes];
  write_frame_header(0, zero);
  stream.insert(stream.end(), zero, zero + kFrameHeaderBytes);
  FrameDecoder decoder(kLimit);
  std::span<const uint8_t> input(stream);
  CHECK(decoder.decode(&input) == FrameDecoder::State::kFrame);
  CHECK(decoder.decode(&input) == FrameDecoder::State::kError);
  CHECK(decoder.error().code() == StatusCode::kParseError);
  CHECK(decoder.error().message().find("payload length 0") != std::string::npos);
  CHECK(decoder.error().message().find(strformat("frame 1 at stream byte %zu", good.size())) !=
        std::string::npos);
}

TEST_CASE("tools.protocol: a payload the verifier rejects is reported and the stream goes on") {
  std::vector<Message> samples = sample_messages();
  std::vector<uint8_t> garbage(64, 0xA5);
  std::vector<uint8_t> stream = raw_frame(garbage);
  std::vector<uint8_t> good = frame_of(samples[3]);
  stream.insert(stream.end(), good.begin(), good.end());

  FrameDecoder decoder(kLimit);
  std::span<const uint8_t> input(stream);
  REQUIRE(decoder.decode(&input) == FrameDecoder::State::kFrame);
  uint64_t id = 99;
  auto bad = decode_payload(decoder.payload(), &id);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kParseError);
  CHECK(id == kNoRequestId);
  Status named = decoder.payload_error(bad.status());
  CHECK(named.message().find("frame 0 at stream byte 0") != std::string::npos);
  CHECK(decoder.can_continue());
  REQUIRE(decoder.decode(&input) == FrameDecoder::State::kFrame);
  auto next = decode_payload(decoder.payload(), &id);
  REQUIRE(next.ok());
  CHECK(*next == samples[3]);
  CHECK(id == samples[3].request_id);

  // Every truncation of every sample payload fails cleanly, except a cut into the alignment
  // padding at its end (the builder writes back to front, so the end holds padding); a byte
  // appended is ignored (trailing bytes after a verified buffer are allowed).
  for (const Message& m : samples) {
    std::vector<uint8_t> payload = frame_of(m);
    payload.erase(payload.begin(), payload.begin() + kFrameHeaderBytes);
    size_t accepted = 0;
    for (size_t n = 0; n < payload.size(); ++n) {
      auto cut = decode_payload(std::span<const uint8_t>(payload.data(), n));
      if (cut.ok()) {  // only alignment padding at the buffer's end was cut
        CHECK(*cut == m);
        ++accepted;
      }
    }
    CHECK(accepted < 8);
    payload.push_back(0);
    auto longer = decode_payload(payload);
    REQUIRE(longer.ok());
    CHECK(*longer == m);
  }
}

TEST_CASE("tools.protocol: a payload at an odd address decodes (it is copied aligned)") {
  Message m = sample_messages()[1];
  std::vector<uint8_t> payload;
  encode_payload(m, &payload);
  std::vector<uint8_t> shifted(3, 0);
  shifted.insert(shifted.end(), payload.begin(), payload.end());
  auto decoded = decode_payload(std::span<const uint8_t>(shifted).subspan(3));
  REQUIRE_MESSAGE(decoded.ok(), decoded.status().to_string());
  CHECK(*decoded == m);
}

TEST_CASE("tools.protocol: unknown message types, missing bodies and unknown enum values") {
  SUBCASE("a union type from a newer peer: kUnsupported, and the request id is read") {
    flatbuffers::FlatBufferBuilder b;
    auto body = fb::CreateAck(b, b.CreateString("from the future"));
    auto env = fb::CreateEnvelope(b, 77, static_cast<fb::Message>(42), body.Union());
    fb::FinishEnvelopeBuffer(b, env);
    uint64_t id = 0;
    auto decoded = decode_payload(finished(b), &id);
    REQUIRE_FALSE(decoded.ok());
    CHECK(decoded.status().code() == StatusCode::kUnsupported);
    CHECK(decoded.status().message().find("message type 42 unknown") != std::string::npos);
    CHECK(decoded.status().message().find("request 77") != std::string::npos);
    CHECK(id == 77);
  }
  SUBCASE("no message, or a type with no body: kParseError") {
    flatbuffers::FlatBufferBuilder b;
    fb::FinishEnvelopeBuffer(b, fb::CreateEnvelope(b, 5));
    auto none = decode_payload(finished(b));
    CHECK(none.status().code() == StatusCode::kParseError);
    CHECK(none.status().message().find("no message") != std::string::npos);

    flatbuffers::FlatBufferBuilder c;
    fb::FinishEnvelopeBuffer(c, fb::CreateEnvelope(c, 6, fb::Message::LoadRequest, 0));
    auto empty = decode_payload(finished(c));
    CHECK(empty.status().code() == StatusCode::kParseError);
    CHECK(empty.status().message().find("LoadRequest has no body") != std::string::npos);
  }
  SUBCASE("an enum value the schema does not name: kUnsupported naming the field") {
    flatbuffers::FlatBufferBuilder b;
    auto load = fb::CreateLoadRequest(b, fb::ModelSource::Builtin, b.CreateString("builtin"),
                                      static_cast<fb::Precision>(9));
    fb::FinishEnvelopeBuffer(b, fb::CreateEnvelope(b, 8, fb::Message::LoadRequest, load.Union()));
    auto decoded = decode_payload(finished(b));
    CHECK(decoded.status().code() == StatusCode::kUnsupported);
    CHECK(decoded.status().message().find("LoadRequest.precision = 9") != std::string::npos);

    flatbuffers::FlatBufferBuilder c;
    auto model = fb::CreateModelInfo(c, 0, static_cast<fb::ModelSource>(3));
    fb::FinishEnvelopeBuffer(
        c, fb::CreateEnvelope(c, 8, fb::Message::LoadReply, fb::CreateLoadReply(c, model).Union()));
    auto reply = decode_payload(finished(c));
    CHECK(reply.status().code() == StatusCode::kUnsupported);
    CHECK(reply.status().message().find("LoadReply.model.source = 3") != std::string::npos);
  }
  SUBCASE("a payload without the MOEP identifier") {
    flatbuffers::FlatBufferBuilder b;
    b.Finish(fb::CreateEnvelope(b, 5, fb::Message::DrainRequest, fb::CreateDrainRequest(b).Union()));
    auto decoded = decode_payload(finished(b));
    CHECK(decoded.status().code() == StatusCode::kParseError);
    CHECK(decoded.status().message().find("MOEP") != std::string::npos);
  }
}

TEST_CASE("tools.protocol: error replies carry status codes, known or of a known group") {
  Status original = make_error(StatusCode::kNpuLost, "npu 17 is lost");
  ErrorReply reply = ErrorReply::from_status(original);
  auto decoded = decode_payload(std::span<const uint8_t>(frame_of({3, reply})).subspan(kFrameHeaderBytes));
  REQUIRE(decoded.ok());
  Status back = std::get<ErrorReply>(decoded->body).to_status();
  CHECK(back.code() == StatusCode::kNpuLost);
  CHECK(back.message() == "npu 17 is lost");

  // A newer peer's code in a known group is kept, so its group still guides the client.
  auto newer = decode_payload(std::span<const uint8_t>(
      frame_of({4, ErrorReply{static_cast<StatusCode>(399), "new link error"}})).subspan(kFrameHeaderBytes));
  REQUIRE(newer.ok());
  CHECK(status_group(std::get<ErrorReply>(newer->body).code) == StatusGroup::kLink);

  for (uint16_t code : {0, 42, 700, 65535}) {
    auto bad = decode_payload(std::span<const uint8_t>(
        frame_of({4, ErrorReply{static_cast<StatusCode>(code), ""}})).subspan(kFrameHeaderBytes));
    CHECK(bad.status().code() == StatusCode::kUnsupported);
  }
}

TEST_CASE("tools.protocol: the frame limit option is clamped to sane bounds") {
  CHECK(max_frame_bytes_option() == kLimit);  // the default
  REQUIRE(opt::set_option("PROTOCOL_MAX_FRAME_BYTES", "8").ok());
  CHECK(max_frame_bytes_option() == kMinFrameBytes);
  REQUIRE(opt::set_option("PROTOCOL_MAX_FRAME_BYTES", "4G").ok());
  CHECK(max_frame_bytes_option() == kMaxFrameBytesCeiling);
  REQUIRE(opt::set_option("PROTOCOL_MAX_FRAME_BYTES", "64K").ok());
  CHECK(FrameDecoder().max_frame_bytes() == 65536);
  REQUIRE(opt::reset_option("PROTOCOL_MAX_FRAME_BYTES").ok());
}
