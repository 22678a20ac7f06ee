#include "mbl/config.h"
#include "mbl/fs.h"

#include "harness.h"

#include <catch2/catch.hpp>

using namespace mbl;

TEST_CASE("configuration errors name the file and the key")
{
    auto cfg = Config::parse(R"({"poll": {"interval": "often"}, "name": 3, "list": ["a", 1]})", "/etc/mbl/cloud.json");
    REQUIRE(cfg);
    auto interval = cfg->getInt("poll.interval", 300, 1, 86400);
    REQUIRE_FALSE(interval);
    CHECK(interval.error().code == ErrorCode::InvalidArgument);
    CHECK(interval.error().message == "/etc/mbl/cloud.json: key 'poll.interval' must be an integer");
    auto name = cfg->getString("name", "");
    REQUIRE_FALSE(name);
    CHECK(name.error().message.find("'name'") != std::string::npos);
    CHECK_FALSE(cfg->getStringList("list", {}));
    auto unknown = cfg->rejectUnknownKeys({"poll", "name"});
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().message == "/etc/mbl/cloud.json: unknown key 'list'");
}

TEST_CASE("configuration values out of range are refused, missing keys take the default")
{
    auto cfg = Config::parse(R"({"limit": 99999})", "c.json");
    REQUIRE(cfg);
    CHECK_FALSE(cfg->getInt("limit", 1, 0, 100));
    auto missing = cfg->getInt("other", 42, 0, 100);
    REQUIRE(missing);
    CHECK(*missing == 42);
    auto b = cfg->getBool("flag", true);
    REQUIRE(b);
    CHECK(*b);
}

TEST_CASE("a configuration file that is not a JSON object is refused with its path")
{
    test::TempDir tmp;
    const std::string p = tmp.path() + "/update.json";
    REQUIRE(fs::writeFileAtomic(p, "{ not json"));
    auto cfg = Config::load(p);
    REQUIRE_FALSE(cfg);
    CHECK(cfg.error().message == p + ": not valid JSON");
    REQUIRE(fs::writeFileAtomic(p, "[1,2]"));
    CHECK_FALSE(Config::load(p));
    auto absent = Config::load(tmp.path() + "/none.json");
    REQUIRE(absent);
    CHECK(absent->json().empty());
    CHECK_FALSE(Config::load(tmp.path() + "/none.json", false));
}
