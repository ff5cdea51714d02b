// The layer check itself is tested: it passes on the tree and fails on a planted upward
// include (and on a memory -> firmware-sim include that bypasses the device interface).
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace {

std::string source_root() {
  const char* root = std::getenv("MOE_SOURCE_ROOT");
  return root ? root : ".";
}

// Runs the checker on `root`; returns its exit status and appends its output to `*out`.
int run_check(const fs::path& root, std::string* out) {
  fs::path log = fs::temp_directory_path() / ("moe-layers-" + std::to_string(::getpid()) + ".log");
  std::string cmd = source_root() + "/tools/check-layers.sh '" + root.string() + "' > '" + log.string() + "' 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream in(log);
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  fs::remove(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

}  // namespace

TEST_CASE("tools.check-layers: the source tree passes") {
  std::string out;
  CHECK(run_check(source_root(), &out) == 0);
  CHECK(out.find("check-layers: ok") != std::string::npos);
}

TEST_CASE("tools.check-layers: a planted upward include fails and is named") {
  fs::path root = fs::temp_directory_path() / ("moe-layers-tree-" + std::to_string(::getpid()));
  fs::remove_all(root);
  write_file(root / "runtime/base/ok.h", "#pragma once\n#include <vector>\n");
  write_file(root / "memory/alloc.h", "#pragma once\n#include \"runtime/base/ok.h\"\n#include \"runtime/device/driver.h\"\n");
  std::string out;
  CHECK(run_check(root, &out) == 0);

  SUBCASE("base includes memory") {
    write_file(root / "runtime/base/bad.cpp", "#include \"memory/alloc.h\"\n");
    CHECK(run_check(root, &out) == 1);
    CHECK(out.find("runtime/base/bad.cpp:1") != std::string::npos);
    CHECK(out.find("layer base must not include the higher layer memory") != std::string::npos);
  }
  SUBCASE("memory includes firmware-sim, bypassing the device interface") {
    write_file(root / "memory/sneaky.cpp", "#include \"firmware-sim/hbm.h\"\n");
    CHECK(run_check(root, &out) == 1);
    CHECK(out.find("memory/sneaky.cpp:1") != std::string::npos);
    CHECK(out.find("only through runtime/device/") != std::string::npos);
  }
  SUBCASE("interconnect includes models") {
    write_file(root / "interconnect/x.h", "  #  include \"models/y.h\"\n");
    CHECK(run_check(root, &out) == 1);
    CHECK(out.find("layer interconnect must not include the higher layer models") != std::string::npos);
  }
  fs::remove_all(root);
}
