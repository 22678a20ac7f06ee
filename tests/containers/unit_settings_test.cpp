// SPDX-License-Identifier: Apache-2.0
// Over-the-air settings documents (no bus): what is accepted, its canonical
// form, and how an override is layered over an app's install settings.

#include "app_overrides.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace mbl;
using namespace mbl::containers;
using nlohmann::json;

namespace {
DevicePolicy policy()
{
    DevicePolicy p;
    p.maxMemoryBytes = 512u << 20;
    p.maxPids = 1000;
    p.maxCpuPercent = 200;
    return p;
}
} // namespace

TEST_CASE("a settings document round-trips through its canonical form")
{
    const json doc = {{"log_level", "debug"},
                      {"apps",
                       {{"web", {{"env", {{"A", "1"}, {"B", ""}}}, {"memory_limit", 64 << 20}, {"pids_limit", 10},
                                 {"cpu_percent", 150}}},
                        {"empty", json::object()}}}};
    auto o = parseOverrides(doc.dump(), policy());
    REQUIRE(o);
    CHECK(o->toJson() == doc);
    auto again = parseOverrides(o->toJson().dump(), policy());
    REQUIRE(again);
    CHECK(again->toJson() == doc);
    auto none = parseOverrides("{}", policy());
    REQUIRE(none);
    CHECK(none->toJson() == json::object());
    CHECK_FALSE(none->logLevel);
}

TEST_CASE("bad settings documents are refused with InvalidArgument and the reason")
{
    struct Case {
        const char* doc;
        const char* reason;
    };
    for (const Case& c : {
             Case{R"({"colour": 1})", "unknown key 'colour'"},
             Case{R"({"apps": {"a": {"memory": 1}}})", "unknown key 'memory'"},
             Case{R"({"apps": {"a": {"memory_limit": "1G"}}})", "must be an integer"},
             Case{R"({"apps": {"a": {"memory_limit": 1.5}}})", "must be an integer"},
             Case{R"({"apps": {"a": {"memory_limit": 1024}}})", "at least"},
             Case{R"({"apps": {"a": {"memory_limit": 1073741824}}})", "device policy"},
             Case{R"({"apps": {"a": {"pids_limit": 1001}}})", "device policy"},
             Case{R"({"apps": {"a": {"pids_limit": -1}}})", "negative"},
             Case{R"({"apps": {"a": {"cpu_percent": 0}}})", "at least 1"},
             Case{R"({"apps": {"a": {"cpu_percent": 201}}})", "device policy"},
             Case{R"({"apps": {"a": {"env": ["A=1"]}}})", "must be an object"},
             Case{R"({"apps": {"a": {"env": {"A": 1}}}})", "must be a string"},
             Case{R"({"apps": {"a": {"env": {"": "x"}}}})", "not a variable name"},
             Case{R"({"apps": {"a": {"env": {"MBL_APP_NAME": "x"}}}})", "set by the manager"},
             // GetSettings returns the document over D-Bus, which refuses noncharacters.
             Case{R"({"apps": {"a": {"env": {"A": "x\ufffe"}}}})", "D-Bus cannot carry"},
             Case{R"({"apps": {"a": {"env": {"A\ufdd0": "x"}}}})", "not a variable name"},
             Case{R"({"apps": {"../a": {}}})", "not a safe name"},
             Case{R"({"apps": {".hidden": {}}})", "not a safe name"},
             Case{R"({"apps": []})", "apps must be an object"},
             Case{R"({"apps": {"a": 3}})", "must be an object"},
             Case{R"({"log_level": "loud"})", "log_level"},
             Case{R"({"log_level": 7})", "log_level"},
             Case{R"("x")", "JSON object"},
             Case{R"({"apps": )", "not valid JSON"},
         }) {
        auto o = parseOverrides(c.doc, policy());
        INFO(c.doc);
        REQUIRE_FALSE(o);
        CHECK(o.error().code == ErrorCode::InvalidArgument);
        CHECK(o.error().message.find(c.reason) != std::string::npos);
    }
}

TEST_CASE("an override replaces the limits and layers env over the install settings key by key")
{
    AppSettings s;
    s.name = "web";
    s.env = {"A=install", "KEEP=yes"};
    s.memoryBytes = 64u << 20;
    s.pidsMax = 100;
    s.cpuPercent = 100;
    AppOverride o;
    o.env = std::map<std::string, std::string>{{"A", "ota"}, {"NEW", "1"}};
    o.memoryLimit = 96u << 20;
    auto e = applyOverride(s, o);
    CHECK(e.env == std::vector<std::string>{"KEEP=yes", "A=ota", "NEW=1"});
    CHECK(e.memoryBytes == (96u << 20));
    CHECK(e.pidsMax == 100);
    CHECK(e.cpuPercent == 100);
    auto unchanged = applyOverride(s, AppOverride{});
    CHECK(unchanged.toJson() == s.toJson());
}
