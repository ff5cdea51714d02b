#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/base/json.h"
#include "runtime/base/log.h"
#include "runtime/base/options.h"
#include "runtime/base/stats.h"

namespace {
const moe::opt::Option<int64_t> kTestInt{"test", "TEST_INT_OPTION", 42, "an int for tests"};
const moe::opt::Option<double> kTestDouble{"test", "TEST_DOUBLE_OPTION", 1.5, "a double"};
const moe::opt::Option<bool> kTestBool{"test", "TEST_BOOL_OPTION", false, "a bool"};
moe::stats::Counter g_test_counter{"test", "events", "count", "events seen by a test"};
moe::stats::Gauge g_test_gauge{"test", "level", "bytes", "a level for tests"};
}  // namespace

TEST_CASE("options: defaults, set, reset, bad values named") {
  CHECK(kTestInt.get() == 42);
  REQUIRE(moe::opt::set_option("MOE_TEST_INT_OPTION", "8K").ok());
  CHECK(kTestInt.get() == 8192);
  moe::Status bad = moe::opt::set_option("test_int_option", "eight");
  CHECK(bad.code() == moe::StatusCode::kInvalidArgument);
  CHECK(bad.message().find("TEST_INT_OPTION") != std::string::npos);
  CHECK(kTestInt.get() == 8192);  // a refused value changes nothing
  CHECK(moe::opt::reset_option("TEST_INT_OPTION").ok());
  CHECK(kTestInt.get() == 42);
  CHECK(moe::opt::set_option("NO_SUCH_OPTION", "1").code() == moe::StatusCode::kNotFound);
  REQUIRE(moe::opt::set_option("TEST_BOOL_OPTION", "yes").ok());
  CHECK(kTestBool.get());
  REQUIRE(moe::opt::set_option("TEST_DOUBLE_OPTION", "2.25").ok());
  CHECK(kTestDouble.get() == doctest::Approx(2.25));
  CHECK(moe::opt::reset_option("TEST_BOOL_OPTION").ok());
  CHECK(moe::opt::reset_option("TEST_DOUBLE_OPTION").ok());
}

TEST_CASE("options: listed with layer, type, default and help; JSON and text") {
  bool found = false;
  for (const auto& o : moe::opt::list_options()) {
    if (o.name == "TEST_INT_OPTION") {
      found = true;
      CHECK(o.layer == "test");
      CHECK(o.type == moe::opt::Type::kInt);
      CHECK(o.default_text == "42");
      CHECK(o.help == "an int for tests");
    }
  }
  CHECK(found);
  CHECK(moe::opt::options_to_json().find("\"TEST_INT_OPTION\":{\"layer\":\"test\"") != std::string::npos);
  CHECK(moe::opt::options_to_text().find("MOE_LOG_LEVEL") != std::string::npos);
}

TEST_CASE("options: environment typos and bad values are reported") {
  setenv("MOE_TEST_NO_SUCH_THING", "1", 1);
  moe::Status s = moe::opt::check_environment();
  unsetenv("MOE_TEST_NO_SUCH_THING");
  CHECK(s.code() == moe::StatusCode::kInvalidArgument);
  CHECK(s.message().find("MOE_TEST_NO_SUCH_THING names no option") != std::string::npos);
}

TEST_CASE("options: integer parsing") {
  int64_t v = 0;
  CHECK(moe::opt::parse_int("2MiB", &v));
  CHECK(v == 2 << 20);
  CHECK(moe::opt::parse_int("0x10", &v));
  CHECK(v == 16);
  CHECK_FALSE(moe::opt::parse_int("12Q", &v));
  CHECK_FALSE(moe::opt::parse_int("", &v));
  CHECK_FALSE(moe::opt::parse_int("99999999999T", &v));
}

TEST_CASE("stats: counters and gauges export as JSON") {
  g_test_counter.reset();
  g_test_gauge.reset();
  g_test_counter.add(3);
  g_test_gauge.add(100);
  g_test_gauge.add(50);
  g_test_gauge.sub(120);
  CHECK(g_test_gauge.current() == 30);
  CHECK(g_test_gauge.peak() == 150);
  CHECK(g_test_gauge.total() == 150);
  std::string json = moe::stats::stats_to_json();
  CHECK(json.find("\"events\":{\"unit\":\"count\",\"help\":\"events seen by a test\",\"total\":3}") != std::string::npos);
  CHECK(json.find("\"level\":{\"unit\":\"bytes\",\"help\":\"a level for tests\",\"current\":30,\"peak\":150,\"total\":150}") != std::string::npos);
  int64_t total = 0;
  CHECK(moe::stats::find_stat("test.events", &total));
  CHECK(total == 3);
}

TEST_CASE("log: levels filter and the sink sees whole lines") {
  std::vector<std::string> lines;
  auto old = moe::log::set_sink([&](moe::log::Level, const std::string& line) { lines.push_back(line); });
  moe::log::Level saved = moe::log::current_level();
  moe::log::set_level(moe::log::Level::kInfo);
  MOE_INFO("hello %d", 7);
  MOE_DEBUG("hidden");
  moe::log::set_level(saved);
  moe::log::set_sink(old);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("INFO") != std::string::npos);
  CHECK(lines[0].find("hello 7") != std::string::npos);
  moe::log::Level parsed;
  CHECK(moe::log::parse_level("debug", &parsed));
  CHECK(parsed == moe::log::Level::kDebug);
  CHECK_FALSE(moe::log::parse_level("loud", &parsed));
}

TEST_CASE("json: escaping and nesting") {
  moe::JsonWriter w;
  w.begin_object().key("a\"b").value("x\ny").key("list").begin_array().value(1).value(2.5).value(true).null().end_array().end_object();
  CHECK(w.str() == "{\"a\\\"b\":\"x\\ny\",\"list\":[1,2.5,true,null]}");
}
