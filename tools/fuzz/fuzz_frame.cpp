// libFuzzer target: the moed frame decoder and message codec on arbitrary bytes.
//
// The first input byte picks how the rest is cut into pieces (1..64 bytes, or whole), as a
// socket might deliver it, with an empty piece before each; the decoder runs under a 4 KiB frame limit so that oversized
// lengths are reachable. Every payload it cuts out goes through decode_payload(); every
// message accepted must re-encode, decode again and re-encode to the same bytes. ASan/UBSan
// catch reads out of bounds and undefined behaviour; the checks below abort on a broken
// contract. Built and run by `make fuzz` (seed corpus: fuzz_corpus.cpp).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/frame.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_frame: %s\n", what);
  std::abort();
}

void check_message(const moe::proto::Message& message) {
  using namespace moe::proto;
  constexpr size_t kBig = size_t{1} << 24;
  auto once = encode_frame(message, kBig);
  if (!once.ok()) fail("an accepted message does not re-encode");
  auto back = decode_payload(std::span<const uint8_t>(*once).subspan(kFrameHeaderBytes));
  if (!back.ok()) fail("a re-encoded message does not decode");
  auto twice = encode_frame(*back, kBig);
  if (!twice.ok() || *twice != *once) fail("re-encoding is not stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using moe::proto::FrameDecoder;
  if (size == 0) return 0;
  size_t piece_bytes = data[0] % 65;  // 0: the whole input at once
  std::span<const uint8_t> rest(data + 1, size - 1);
  FrameDecoder decoder(4096);
  while (!rest.empty()) {
    size_t piece = piece_bytes == 0 ? rest.size() : std::min(piece_bytes, rest.size());
    std::span<const uint8_t> input = rest.first(piece);
    rest = rest.subspan(piece);
    std::span<const uint8_t> nothing;  // a read that returned no bytes changes nothing
    if (decoder.decode(&nothing) == FrameDecoder::State::kFrame) fail("a frame from no bytes");
    while (true) {
      size_t before = input.size();
      FrameDecoder::State state = decoder.decode(&input);
      if (input.size() > before) fail("decode() grew its input");
      if (state == FrameDecoder::State::kNeedMore) {
        if (!input.empty()) fail("kNeedMore with input left");
        break;
      }
      if (state == FrameDecoder::State::kError) {
        if (decoder.error().ok() || decoder.can_continue()) fail("an error without a status");
        return 0;
      }
      if (decoder.payload().size() + moe::proto::kFrameHeaderBytes > 4096) fail("frame over the limit");
      auto message = moe::proto::decode_payload(decoder.payload());
      if (message.ok()) check_message(*message);
    }
  }
  return 0;
}
