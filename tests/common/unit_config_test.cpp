// SPDX-License-Identifier: Apache-2.0
#include "mbl/config.h"
#include "mbl/fs.h"

#include "harness.h"

#include <catch2/catch.hpp>

#include <limits>

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

TEST_CASE("a key nobody reads is refused at any depth, with the file, the key path and the keys expected there")
{
    struct Case {
        const char* doc;
        const char* message;
    };
    // What the update service reads (a list of objects, a nested object) and
    // the cloud client (nested poll settings).
    auto readAll = [](const Config& c) {
        (void)c.getString("compatible", "");
        (void)c.getString("bootloader.type", "file");
        (void)c.getString("bootloader.path", "");
        (void)c.getString("poll.default_sleep", "");
        auto n = c.getListSize("slots");
        for (std::size_t i = 0; n && i < *n; ++i) {
            (void)c.getString("slots[" + std::to_string(i) + "].name", "");
            (void)c.getString("slots[" + std::to_string(i) + "].device", "");
        }
    };
    for (const Case& k : {
             Case{R"({"compatibel": "x"})", "update.json: unknown key 'compatibel' (expected one of: bootloader, "
                                            "compatible, poll, slots)"},
             Case{R"({"bootloader": {"typ": "grub"}})",
                  "update.json: unknown key 'bootloader.typ' (expected one of: path, type)"},
             Case{R"({"poll": {"default_slep": "00:01:00"}})",
                  "update.json: unknown key 'poll.default_slep' (expected one of: default_sleep)"},
             Case{R"({"slots": [{"name": "a", "device": "/dev/a"}, {"name": "b", "devcie": "/dev/b"}]})",
                  "update.json: unknown key 'slots[1].devcie' (expected one of: device, name)"},
             Case{R"({"bootloader": {"type": "grub", "path": "/g", "extra": {"deep": 1}}})",
                  "update.json: unknown key 'bootloader.extra' (expected one of: path, type)"},
             // A section given as a scalar: its keys were asked for, so it is not
             // "unknown"; it is of the wrong type.
             Case{R"({"poll": 5})", "update.json: key 'poll' must be an object"},
             Case{R"({"bootloader": [1]})", "update.json: key 'bootloader' must be an object"},
         }) {
        INFO(k.doc);
        auto cfg = Config::parse(k.doc, "update.json");
        REQUIRE(cfg);
        readAll(*cfg);
        auto st = cfg->rejectUnreadKeys();
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::InvalidArgument);
        CHECK(st.error().message == k.message);
    }
    auto good = Config::parse(
        R"({"compatible": "x", "bootloader": {"type": "grub", "path": "/g"}, "slots": [{"name": "a", "device": "/d"}]})",
        "update.json");
    REQUIRE(good);
    readAll(*good);
    CHECK(good->rejectUnreadKeys());
}

TEST_CASE("wrong types, out-of-range and overflowing numbers, and values outside a set are refused with the key path")
{
    auto cfg = Config::parse(R"({"a": 1.5, "b": 18446744073709551615, "c": -3, "slots": [{"size": "big"}],
                                 "bootloader": {"type": "ubot"}, "list": "x", "obj": [1]})",
                             "/etc/mbl/update.json");
    REQUIRE(cfg);
    auto a = cfg->getInt("a", 0, 0, 10);
    REQUIRE_FALSE(a);
    CHECK(a.error().message == "/etc/mbl/update.json: key 'a' must be an integer");
    auto b = cfg->getInt("b", 0, 0, std::numeric_limits<std::int64_t>::max());
    REQUIRE_FALSE(b);
    CHECK(b.error().message.find("key 'b' must be between 0 and 9223372036854775807 (not 18446744073709551615)") !=
          std::string::npos);
    auto c = cfg->getInt("c", 0, 0, 10);
    REQUIRE_FALSE(c);
    CHECK(c.error().message == "/etc/mbl/update.json: key 'c' must be between 0 and 10 (not -3)");
    auto size = cfg->getInt("slots[0].size", 0, 0, 1 << 30);
    REQUIRE_FALSE(size);
    CHECK(size.error().message == "/etc/mbl/update.json: key 'slots[0].size' must be an integer");
    auto type = cfg->getEnum("bootloader.type", "file", {"file", "uboot", "grub"});
    REQUIRE_FALSE(type);
    CHECK(type.error().message ==
          "/etc/mbl/update.json: key 'bootloader.type' must be one of file, uboot, grub (not 'ubot')");
    CHECK_FALSE(cfg->getListSize("list"));
    CHECK_FALSE(cfg->getObject("obj", nlohmann::json::object()));
    auto missing = cfg->getEnum("other.type", "file", {"file", "grub"});
    REQUIRE(missing);
    CHECK(*missing == "file");
}

TEST_CASE("an object taken whole counts as read, with everything under it")
{
    auto cfg = Config::parse(R"({"defaults": {"anything": {"goes": [1, 2]}}, "names": ["a"]})", "c.json");
    REQUIRE(cfg);
    auto d = cfg->getObject("defaults", nlohmann::json::object());
    REQUIRE(d);
    CHECK((*d)["anything"]["goes"][1] == 2);
    CHECK_FALSE(cfg->rejectUnreadKeys());
    REQUIRE(cfg->getStringList("names", {}));
    CHECK(cfg->rejectUnreadKeys());
}

TEST_CASE("an ApplySettings document is refused when empty, not an object, or holding a number that overflows, and "
          "is read like a file")
{
    struct Case {
        const char* text;
        const char* message;
    };
    for (const Case& k : {Case{"{}", "ApplySettings: the document is empty (name the settings to change; nothing was "
                                     "changed)"},
                          Case{"", "ApplySettings: not valid JSON"},
                          Case{"[]", "ApplySettings: top level must be a JSON object"},
                          Case{R"({"poll": 1e999})", "ApplySettings: not valid JSON"}}) {
        INFO(k.text);
        auto d = Config::parseDocument(k.text, "ApplySettings");
        REQUIRE_FALSE(d);
        CHECK(d.error().code == ErrorCode::InvalidArgument);
        CHECK(d.error().message == k.message);
    }
    // An integer beyond 64 bits is parsed as a float by JSON: not an integer.
    auto big = Config::parseDocument(R"({"limits": {"memory": 99999999999999999999999}})", "ApplySettings");
    REQUIRE(big);
    auto mem = big->getInt("limits.memory", 0, 0, std::numeric_limits<std::int64_t>::max());
    REQUIRE_FALSE(mem);
    CHECK(mem.error().code == ErrorCode::InvalidArgument);
    CHECK(mem.error().message == "ApplySettings: key 'limits.memory' must be an integer");
    // A misspelled key of a partial document, at any depth, is named.
    auto doc = Config::parseDocument(R"({"limits": {"memroy": 5}})", "ApplySettings");
    REQUIRE(doc);
    auto absent = doc->getInt("limits.memory", -1, 0, 1 << 30); // what a partial document leaves out
    REQUIRE(absent);
    CHECK(*absent == -1);
    auto st = doc->rejectUnreadKeys();
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "ApplySettings: unknown key 'limits.memroy' (expected one of: memory)");
}
