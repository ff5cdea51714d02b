// Writes the seed corpus for fuzz_frame: one file per sample message (a frame prefixed with
// the piece-size byte fuzz_frame reads first), plus one stream of every sample.
//   fuzz_corpus DIR
#include <cstdio>
#include <string>
#include <vector>

#include "tools/lib/protocol/codec.h"
#include "tools/lib/protocol/samples.h"

namespace {

bool write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_corpus DIR\n");
    return 2;
  }
  std::string dir = argv[1];
  std::vector<uint8_t> all = {0};  // the whole stream in one piece
  int index = 0;
  for (const moe::proto::Message& m : moe::proto::sample_messages()) {
    std::vector<uint8_t> file = {static_cast<uint8_t>(index % 2 == 0 ? 0 : 7)};
    if (!moe::proto::append_message_frame(m, &file, 4096).ok() ||
        !moe::proto::append_message_frame(m, &all, 4096).ok()) {
      std::fprintf(stderr, "fuzz_corpus: sample %d does not fit 4096 bytes\n", index);
      return 1;
    }
    if (!write_file(dir + "/sample_" + std::to_string(index++), file)) {
      std::perror(dir.c_str());
      return 1;
    }
  }
  if (!write_file(dir + "/stream_all", all)) {
    std::perror(dir.c_str());
    return 1;
  }
  std::printf("fuzz_corpus: %d samples and one stream in %s\n", index, dir.c_str());
  return 0;
}
