// The `moe` CLI's daemon commands, run as the built binary ($MOE_BIN_DIR/moe) against a moed
// server started in this process on a temporary socket (supernode n8): status and load as
// JSON, generation streamed as text and as JSON (the token count asked for, the text that
// is those tokens), Prometheus metrics, usage errors (exit 2, naming the argument), no
// daemon (exit 1, saying so), and --embedded giving the same tokens as the daemon.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "models/engine/generate.h"
#include "models/weights/json_parse.h"
#include "tests/tools/daemon_fixture.h"

using namespace moe;

namespace {

using moe::testing::Daemon;
using TempDir = moe::testing::TempSocket;

struct Run {
  int exit_status = -1;
  std::string out, err;
};

// Runs `moe ARGS` (ARGS already shell-quoted); stdout and stderr captured.
Run run_moe(const TempDir& temp, const std::string& args) {
  const char* dir = std::getenv("MOE_BIN_DIR");
  REQUIRE_MESSAGE(dir != nullptr, "MOE_BIN_DIR is not set (run through make test)");
  const std::string err_path = temp.file("stderr.txt");
  const std::string cmd = std::string(dir) + "/moe " + args + " 2>" + err_path;
  Run run;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, p)) > 0) run.out.append(buffer, n);
  const int status = ::pclose(p);
  run.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  std::stringstream text;
  text << err.rdbuf();
  run.err = text.str();
  return run;
}

models::JsonValue parse(const std::string& text) {
  auto value = models::parse_json(text);
  REQUIRE_MESSAGE(value.ok(), value.status().to_string(), " in: ", text);
  return std::move(value).value();
}

std::string string_member(const models::JsonValue& object, const char* key) {
  const models::JsonValue* v = object.find(key);
  REQUIRE_MESSAGE(v != nullptr, "no member ", key);
  REQUIRE(v->is_string());
  return v->text;
}

uint64_t u64_member(const models::JsonValue& object, const char* key) {
  const models::JsonValue* v = object.find(key);
  REQUIRE_MESSAGE(v != nullptr, "no member ", key);
  uint64_t x = 0;
  REQUIRE(v->as_u64(&x));
  return x;
}

std::vector<uint32_t> tokens_of(const models::JsonValue& generation) {
  const models::JsonValue* tokens = generation.find("tokens");
  REQUIRE(tokens != nullptr);
  REQUIRE(tokens->is_array());
  std::vector<uint32_t> out;
  for (const models::JsonValue& t : tokens->items) {
    uint64_t x = 0;
    REQUIRE(t.as_u64(&x));
    out.push_back(static_cast<uint32_t>(x));
  }
  return out;
}

// The generations array of a `moe generate --json` answer.
std::vector<models::JsonValue> generations_of(const Run& run) {
  REQUIRE_MESSAGE(run.exit_status == 0, run.err);
  models::JsonValue answer = parse(run.out);
  const models::JsonValue* list = answer.find("generations");
  REQUIRE(list != nullptr);
  REQUIRE(list->is_array());
  return list->items;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("tools.cli: status, load, streaming generate and metrics through moed") {
  Daemon daemon;
  const TempDir& temp = daemon.temp;
  const std::string socket = " --socket " + daemon.temp.path();

  Run status = run_moe(temp, "status --json" + socket);
  REQUIRE_MESSAGE(status.exit_status == 0, status.err);
  models::JsonValue s = parse(status.out);
  CHECK(string_member(s, "state") == "ready");
  REQUIRE(s.find("models") != nullptr);
  CHECK(s.find("models")->items.empty());
  const models::JsonValue* topology = s.find("topology");
  REQUIRE(topology != nullptr);
  CHECK(u64_member(*topology, "npus") == 8);
  CHECK(u64_member(*topology, "links_down") == 0);

  Run load = run_moe(temp, "load builtin --json" + socket);
  REQUIRE_MESSAGE(load.exit_status == 0, load.err);
  models::JsonValue l = parse(load.out);
  REQUIRE(l.find("model") != nullptr);
  CHECK(string_member(*l.find("model"), "name") == "builtin");
  CHECK(u64_member(*l.find("model"), "npus") == 8);
  CHECK(u64_member(*l.find("model"), "weight_bytes") > 0);

  Run after = run_moe(temp, "status --no-topology --json" + socket);
  REQUIRE_MESSAGE(after.exit_status == 0, after.err);
  models::JsonValue a = parse(after.out);
  CHECK(a.find("topology") == nullptr);
  REQUIRE(a.find("models")->items.size() == 1);

  // Two prompts, sampled (temperature > 0) so that the seed matters.
  const std::string sampling = " --max-new-tokens 6 --temperature 0.9 --seed 7";
  Run json = run_moe(temp, "generate 'The supernode' 'hello' --json" + sampling + socket);
  std::vector<models::JsonValue> generations = generations_of(json);
  REQUIRE(generations.size() == 2);
  for (const models::JsonValue& g : generations) {
    const std::vector<uint32_t> tokens = tokens_of(g);
    CHECK(tokens.size() == 6);
    CHECK(u64_member(g, "generated_tokens") == 6);
    CHECK(string_member(g, "finish_reason") == "length");
    CHECK(string_member(g, "text") == models::tokens_to_text(tokens));
  }
  CHECK(u64_member(generations[0], "prompt_tokens") == std::string("The supernode").size());
  CHECK(string_member(generations[1], "prompt") == "hello");

  // The same request as text: stdout is exactly the text, the figures go to stderr.
  Run text = run_moe(temp, "generate 'The supernode'" + sampling + socket);
  REQUIRE_MESSAGE(text.exit_status == 0, text.err);
  CHECK(text.out == string_member(generations[0], "text") + "\n");
  CHECK(contains(text.err, "6 generated"));
  CHECK(contains(text.err, "wall"));
  CHECK(contains(text.err, "modelled"));

  // --embedded: the same service in the moe process, the same tokens.
  Run embedded =
      run_moe(temp, "generate 'The supernode' 'hello' --json --embedded --supernode n8" + sampling);
  std::vector<models::JsonValue> local = generations_of(embedded);
  REQUIRE(local.size() == 2);
  CHECK(tokens_of(local[0]) == tokens_of(generations[0]));
  CHECK(tokens_of(local[1]) == tokens_of(generations[1]));

  Run metrics = run_moe(temp, "metrics --prometheus" + socket);
  REQUIRE_MESSAGE(metrics.exit_status == 0, metrics.err);
  CHECK(contains(metrics.out, "moe_generated_tokens_total 18"));
  Run metrics_json = run_moe(temp, "metrics" + socket);
  REQUIRE_MESSAGE(metrics_json.exit_status == 0, metrics_json.err);
  CHECK(parse(metrics_json.out).is_object());

  Run fault = run_moe(temp, "fault link-down --target 3 --json" + socket);
  REQUIRE_MESSAGE(fault.exit_status == 0, fault.err);
  const uint64_t fault_id = u64_member(parse(fault.out), "fault_id");
  Run faulty = run_moe(temp, "status --json" + socket);
  CHECK(u64_member(*parse(faulty.out).find("topology"), "links_down") == 1);
  Run cleared = run_moe(temp, "fault --clear " + std::to_string(fault_id) + socket);
  CHECK_MESSAGE(cleared.exit_status == 0, cleared.err);

  Run unload = run_moe(temp, "unload" + socket);
  CHECK_MESSAGE(unload.exit_status == 0, unload.err);
  Run none = run_moe(temp, "generate 'hi'" + socket);
  CHECK(none.exit_status == 1);
  CHECK(contains(none.err, "moe generate: "));
}

TEST_CASE("tools.cli: bad usage exits 2 naming the argument; no daemon exits 1 saying so") {
  TempDir temp;
  const std::string missing = " --socket " + temp.file("none.sock");
  struct Case {
    std::string args;
    std::string named;  // what the message must mention
  } cases[] = {
      {"status --bogus", "--bogus"},
      {"load --npus many", "--npus"},
      {"load no-such-config", "no-such-config"},
      {"generate", "prompt"},
      {"generate hi --max-new-tokens", "--max-new-tokens"},
      {"generate hi --supernode n8", "--embedded"},
      {"fault frobnicate --target 1", "frobnicate"},
      {"fault packet-drop --rate 2", "--rate"},
      {"shutdown --now", "--now"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    Run run = run_moe(temp, c.args + missing);
    CHECK(run.exit_status == 2);
    CHECK(contains(run.err, c.named));
  }
  for (const char* command : {"status", "metrics", "load", "generate hi"}) {
    CAPTURE(command);
    Run run = run_moe(temp, std::string(command) + missing);
    CHECK(run.exit_status == 1);
    CHECK(contains(run.err, "no daemon"));
    CHECK(contains(run.err, temp.file("none.sock")));
  }
  Run help = run_moe(temp, "generate --help");
  CHECK(help.exit_status == 0);
  CHECK(contains(help.out, "--embedded"));
}
