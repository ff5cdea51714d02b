// A seeded fuzz loop over the frame decoder and the codec: valid streams of sample frames,
// mutated (bit flips, byte overwrites, insertions, deletions, truncation, a rewritten length),
// fed in random pieces under a small frame limit. Whatever the bytes, the decoder must never
// crash or read out of bounds (ASAN=1 checks that), must take only the bytes it is given,
// must stop for good after a header error, and every message it accepts must re-encode to
// bytes that decode to the same message again.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"
#include "tools/lib/protocol/samples.h"

using namespace moe;
using namespace moe::proto;

namespace {

struct Outcome {
  uint64_t messages = 0;        // frames decoded into messages
  uint64_t payload_errors = 0;  // frames cut out whose payload was refused
  uint64_t header_errors = 0;   // streams ended by a header error
};

// Decodes `stream` in random pieces; checks the decoder's invariants and the re-encode
// property of every message it accepts.
void decode_stream(const std::vector<uint8_t>& stream, size_t limit, std::mt19937_64& rng,
                   Outcome* outcome) {
  FrameDecoder decoder(limit);
  size_t at = 0;
  bool broken = false;
  while (at < stream.size() && !broken) {
    size_t piece = std::min<size_t>(stream.size() - at, 1 + rng() % 97);
    std::span<const uint8_t> input(stream.data() + at, piece);
    while (true) {
      size_t before = input.size();
      FrameDecoder::State state = decoder.decode(&input);
      REQUIRE(input.size() <= before);
      if (state == FrameDecoder::State::kNeedMore) {
        REQUIRE(input.empty());
        break;
      }
      if (state == FrameDecoder::State::kError) {
        REQUIRE_FALSE(decoder.error().ok());
        REQUIRE_FALSE(decoder.can_continue());  // the decoder's own errors are header errors
        size_t left = input.size();
        REQUIRE(decoder.decode(&input) == FrameDecoder::State::kError);
        REQUIRE(input.size() == left);
        ++outcome->header_errors;
        broken = true;
        break;
      }
      REQUIRE(decoder.payload().size() + kFrameHeaderBytes <= limit);
      uint64_t id = 0;
      auto message = decode_payload(decoder.payload(), &id);
      if (!message.ok()) {
        REQUIRE_FALSE(message.status().message().empty());
        ++outcome->payload_errors;
        continue;
      }
      REQUIRE(id == message->request_id);
      ++outcome->messages;
      // Whatever was accepted is a message this build can send: it re-encodes, and decodes
      // back to bytes that encode identically (byte comparison: a float may be NaN).
      auto again = encode_frame(*message, std::max(limit, size_t{1} << 20));
      REQUIRE(again.ok());
      auto round = decode_payload(std::span<const uint8_t>(*again).subspan(kFrameHeaderBytes));
      REQUIRE_MESSAGE(round.ok(), round.status().to_string());
      auto twice = encode_frame(*round, std::max(limit, size_t{1} << 20));
      REQUIRE(twice.ok());
      REQUIRE(*twice == *again);
    }
    at += piece;
  }
  if (!broken) REQUIRE(decoder.bytes_consumed() == stream.size());
}

void mutate(std::vector<uint8_t>* bytes, std::mt19937_64& rng) {
  int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !bytes->empty(); ++e) {
    size_t at = rng() % bytes->size();
    switch (rng() % 7) {
      case 0:
      case 1:
        (*bytes)[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 2:
        (*bytes)[at] = static_cast<uint8_t>(rng());
        break;
      case 3:
        (*bytes)[at] = (rng() & 1) ? 0xFF : 0x00;
        break;
      case 4:
        bytes->insert(bytes->begin() + static_cast<long>(at), static_cast<uint8_t>(rng()));
        break;
      case 5:
        bytes->erase(bytes->begin() + static_cast<long>(at));
        break;
      case 6:
        bytes->resize(at);
        break;
    }
  }
}

}  // namespace

TEST_CASE("tools.protocol.fuzz: mutated payloads behind valid headers never crash") {
  std::mt19937_64 rng(20261126);
  std::vector<std::vector<uint8_t>> payloads;
  for (const Message& m : sample_messages()) {
    auto frame = encode_frame(m, size_t{1} << 20);
    REQUIRE(frame.ok());
    payloads.emplace_back(frame->begin() + kFrameHeaderBytes, frame->end());
  }
  Outcome outcome;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> payload = payloads[rng() % payloads.size()];
    mutate(&payload, rng);
    if (payload.empty()) payload.push_back(0);
    std::vector<uint8_t> stream;
    REQUIRE(append_frame(payload, size_t{1} << 20, &stream).ok());
    decode_stream(stream, size_t{1} << 20, rng, &outcome);
  }
  // The loop reached both sides of the verifier (else it proves little).
  CHECK(outcome.messages > 100);
  CHECK(outcome.payload_errors > 100);
  CHECK(outcome.header_errors == 0);
  MESSAGE("payload fuzz: " << outcome.messages << " accepted, " << outcome.payload_errors
                           << " refused");
}

TEST_CASE("tools.protocol.fuzz: mutated streams and random garbage never crash") {
  std::mt19937_64 rng(384);
  std::vector<Message> samples = sample_messages();
  Outcome outcome;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> stream;
    size_t frames = 1 + rng() % 4;
    for (size_t f = 0; f < frames; ++f) {
      REQUIRE(append_message_frame(samples[rng() % samples.size()], &stream, size_t{1} << 20).ok());
    }
    mutate(&stream, rng);
    if (iter % 10 == 0) {  // now and then a rewritten length, often over the limit
      uint32_t length = static_cast<uint32_t>(rng());
      if (stream.size() >= 4) std::memcpy(stream.data(), &length, 4);
    }
    decode_stream(stream, 1024, rng, &outcome);  // a small limit: oversized frames occur
  }
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<uint8_t> garbage(rng() % 300);
    for (uint8_t& b : garbage) b = static_cast<uint8_t>(rng());
    if (iter % 2 == 0 && garbage.size() >= 8) {  // a plausible header over random bytes
      write_frame_header(static_cast<uint32_t>(garbage.size() - 8), garbage.data());
    }
    decode_stream(garbage, 1024, rng, &outcome);
  }
  CHECK(outcome.messages > 100);
  CHECK(outcome.payload_errors > 10);
  CHECK(outcome.header_errors > 100);
  MESSAGE("stream fuzz: " << outcome.messages << " accepted, " << outcome.payload_errors
                          << " refused payloads, " << outcome.header_errors << " header errors");
}
