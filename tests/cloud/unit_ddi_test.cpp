// SPDX-License-Identifier: Apache-2.0
// The DDI protocol pieces of the cloud client, without network or bus.

#include "attribute_access.h"
#include "cloud_config.h"
#include "ddi.h"
#include "feedback_queue.h"
#include "settings.h"
#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <grp.h>
#include <pwd.h>
#include <nlohmann/json.hpp>

using namespace mbl;
using namespace mbl::cloud;
using nlohmann::json;
using std::chrono::seconds;

namespace {
const Origin kServer{"https", "hawkbit.example.com", 443};

json deploymentDoc()
{
    return json::parse(R"({
      "id": "8",
      "deployment": {
        "download": "forced", "update": "attempt", "maintenanceWindow": "unavailable",
        "chunks": [{
          "part": "os", "version": "2.1", "name": "rootfs",
          "metadata": [{"key": "slot", "value": "b"}],
          "artifacts": [{
            "filename": "fw.bundle", "size": 1234,
            "hashes": {"sha1": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "md5": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                       "sha256": "0000000000000000000000000000000000000000000000000000000000000001"},
            "_links": {"download": {"href": "https://hawkbit.example.com/DEFAULT/controller/v1/d/softwaremodules/1/artifacts/fw.bundle"},
                       "download-http": {"href": "http://hawkbit.example.com/x"}}
          }]
        }]
      },
      "actionHistory": {"status": "RUNNING", "messages": []}
    })");
}
} // namespace

TEST_CASE("poll sleep is read in HH:MM:SS and ISO-8601 forms")
{
    CHECK(*parseSleep("00:05:00") == seconds(300));
    CHECK(*parseSleep("12:00:00") == seconds(43200));
    CHECK(*parseSleep("PT36H") == seconds(36 * 3600));
    CHECK(*parseSleep("PT5M30S") == seconds(330));
    CHECK(*parseSleep("P1DT2H") == seconds(26 * 3600));
}

TEST_CASE("invalid poll sleep values are refused with InvalidArgument")
{
    for (const char* bad : {"", "5", "00:00:00", "00:99:00", "aa:bb:cc", "PT", "P", "PT5X", "PTH", "-00:01:00",
                            "P400D", "999999999:00:00", "PT1H30", "01:02"}) {
        INFO(bad);
        auto r = parseSleep(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ErrorCode::InvalidArgument);
    }
}

TEST_CASE("server text in a refusal is quoted: no control characters, no cut characters (fuzz finding D1)")
{
    // The minimised D1 input: a multi-byte character (U+03EC) where the unit should be.
    auto multi = parseSleep("P3\xcf\xac");
    REQUIRE_FALSE(multi);
    CHECK(multi.error().message.find("an unknown unit") != std::string::npos);
    CHECK(multi.error().message.find("P3\xcf\xac") != std::string::npos); // the whole character, quoted
    auto ctl = parseSleep("00:\x1b[2J:00");
    REQUIRE_FALSE(ctl);
    CHECK(ctl.error().message.find('\x1b') == std::string::npos);
    auto link = checkLink("https://hawkbit.example.com/\x01x", kServer);
    if (!link) {
        CHECK(link.error().message.find('\x01') == std::string::npos);
    }
    auto other = checkLink("https://cdn.example.net/a", kServer, {}, true);
    REQUIRE_FALSE(other);
    CHECK(other.error().message.find("cdn.example.net") != std::string::npos);
}

TEST_CASE("the controller base yields sleep and the links as given")
{
    auto r = parsePoll(R"({"config":{"polling":{"sleep":"00:00:30"}},
        "_links":{"deploymentBase":{"href":"https://h/T/controller/v1/d/deploymentBase/5?c=-21"},
                  "configData":{"href":"https://h/T/controller/v1/d/configData"},
                  "cancelAction":{"href":"https://h/T/controller/v1/d/cancelAction/4"}}})");
    REQUIRE(r);
    CHECK(*r->sleep == seconds(30));
    CHECK(r->deploymentBase == "https://h/T/controller/v1/d/deploymentBase/5?c=-21");
    CHECK(actionIdFromHref(r->deploymentBase) == "5");
    CHECK(actionIdFromHref(r->cancelAction) == "4");
    CHECK(r->configData == "https://h/T/controller/v1/d/configData");
}

TEST_CASE("an action waiting for confirmation is read like a deployment and answered in hawkBit's form")
{
    auto r = parsePoll(R"({"config":{"polling":{"sleep":"00:05:00"}},
        "_links":{"confirmationBase":{"href":"https://h/T/controller/v1/d/confirmationBase/6?c=-2122565939"}}})");
    REQUIRE(r);
    CHECK(r->confirmationBase == "https://h/T/controller/v1/d/confirmationBase/6?c=-2122565939");
    CHECK(actionIdFromHref(r->confirmationBase) == "6");
    CHECK(r->deploymentBase.empty());

    // confirmationBase/{id}: the deployment sits under "confirmation".
    auto doc = deploymentDoc();
    doc["confirmation"] = doc["deployment"];
    doc.erase("deployment");
    doc["actionHistory"]["status"] = "WAIT_FOR_CONFIRMATION";
    auto c = normaliseConfirmation(doc.dump(), kServer);
    REQUIRE(c);
    auto d = normaliseDeployment(deploymentDoc().dump(), kServer);
    REQUIRE(d);
    CHECK(*c == *d);
    // A deploymentBase document is not a confirmation, and errors name the resource.
    auto wrong = normaliseConfirmation(deploymentDoc().dump(), kServer);
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().message == "confirmationBase: 'confirmation' is missing or not an object");

    auto yes = json::parse(confirmationBody(true, {"ok"}));
    CHECK(yes == json::parse(R"({"confirmation":"confirmed","details":["ok"]})"));
    CHECK(json::parse(confirmationBody(false, {}))["confirmation"] == "denied");
}

TEST_CASE("malformed, truncated or mistyped controller bases are refused with a clear error")
{
    for (const char* bad : {"{", "", "[]", "null", R"({"config":{"polling":{"sleep":300}}})",
                            R"({"config":"x"})", R"({"_links":[]})", R"({"config":{"polling":{"sleep":"never"}}})",
                            R"({"config":{"polling":{"sleep":"00:00:3)"}) {
        INFO(bad);
        auto r = parsePoll(bad);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ErrorCode::InvalidArgument);
        CHECK_FALSE(r.error().message.empty());
    }
}

TEST_CASE("links must be https and point to the configured server")
{
    CHECK(checkLink("https://hawkbit.example.com/a", kServer));
    CHECK(checkLink("https://HAWKBIT.example.com:443/a", kServer));
    auto http = checkLink("http://hawkbit.example.com/a", kServer);
    REQUIRE_FALSE(http);
    CHECK(http.error().message.find("not https") != std::string::npos);
    auto other = checkLink("https://evil.example.com/a", kServer);
    REQUIRE_FALSE(other);
    CHECK(other.error().message.find("another host") != std::string::npos);
    CHECK_FALSE(checkLink("https://hawkbit.example.com:8443/a", kServer));
    CHECK_FALSE(checkLink("not a url", kServer));
    // allow_other_hosts and allow_http only ever apply to artifact links, never to DDI resources.
    const LinkPolicy open{true, true};
    CHECK(checkLink("https://cdn.example.net/a", kServer, open, true));
    CHECK(checkLink("http://cdn.example.net/a", kServer, open, true));
    CHECK_FALSE(checkLink("https://cdn.example.net/a", kServer, open, false));
    CHECK_FALSE(checkLink("http://hawkbit.example.com/a", kServer, open, false));
    CHECK_FALSE(checkLink("https://cdn.example.net/a", kServer, LinkPolicy{false, true}, true));
    CHECK_FALSE(checkLink("http://hawkbit.example.com/a", kServer, LinkPolicy{true, false}, true));
    auto ftp = checkLink("ftp://hawkbit.example.com/a", kServer, open, true);
    REQUIRE_FALSE(ftp);
    CHECK(ftp.error().message.find("scheme 'ftp'") != std::string::npos);
}

TEST_CASE("a deploymentBase is normalised for the coordinator")
{
    auto d = normaliseDeployment(deploymentDoc().dump(), kServer);
    REQUIRE(d);
    CHECK((*d)["action_id"] == "8");
    CHECK((*d)["update"] == "attempt");
    CHECK((*d)["maintenance_window"] == "unavailable");
    CHECK((*d)["install_allowed"] == false);
    CHECK((*d)["download_only"] == false);
    const auto& a = (*d)["chunks"][0]["artifacts"][0];
    CHECK((*d)["chunks"][0]["part"] == "os");
    CHECK((*d)["chunks"][0]["metadata"]["slot"] == "b");
    CHECK(a["filename"] == "fw.bundle");
    CHECK(a["size"] == 1234);
    CHECK(a["url"] == "https://hawkbit.example.com/DEFAULT/controller/v1/d/softwaremodules/1/artifacts/fw.bundle");
}

TEST_CASE("a download-only deployment is marked so and may not be installed")
{
    auto doc = deploymentDoc();
    doc["deployment"]["update"] = "skip";
    doc["deployment"].erase("maintenanceWindow");
    auto d = normaliseDeployment(doc.dump(), kServer);
    REQUIRE(d);
    CHECK((*d)["download_only"] == true);
    CHECK((*d)["install_allowed"] == false);
    CHECK((*d)["maintenance_window"].is_null());
}

TEST_CASE("artifact file names as hawkBit allows them (spaces, brackets, non-ASCII) are kept as given")
{
    for (const std::string name : {"My App (1.2).tar", "firmware+extra_v2.swu", "пакет-1.bin", "a.b.c", ".hidden"}) {
        auto doc = deploymentDoc();
        doc["deployment"]["chunks"][0]["artifacts"][0]["filename"] = name;
        auto d = normaliseDeployment(doc.dump(), kServer);
        INFO(name);
        REQUIRE(d);
        CHECK((*d)["chunks"][0]["artifacts"][0]["filename"] == name);
    }
}

TEST_CASE("deploymentBase documents with bad fields are refused")
{
    auto check = [](const std::function<void(json&)>& mutate, const std::string& needle) {
        auto doc = deploymentDoc();
        mutate(doc);
        auto d = normaliseDeployment(doc.dump(), kServer);
        INFO(needle);
        REQUIRE_FALSE(d);
        CHECK(d.error().message.find(needle) != std::string::npos);
    };
    check([](json& j) { j["deployment"]["update"] = "now"; }, "update");
    check([](json& j) { j["deployment"]["chunks"] = "x"; }, "chunks");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["size"] = "12"; }, "size");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["hashes"]["sha256"] = "abc"; }, "sha256");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = "../etc/passwd"; }, "file name");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = ".."; }, "file name");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = "a\\b"; }, "file name");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = "fw\n2024 INFO ok"; }, "file name");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = ""; }, "file name");
    check([](json& j) { j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = std::string(256, 'a'); }, "file name");
    check([](json& j) {
        j["deployment"]["chunks"][0]["artifacts"][0]["_links"]["download"]["href"] = "http://hawkbit.example.com/a";
    }, "not https");
    check([](json& j) {
        j["deployment"]["chunks"][0]["artifacts"][0]["_links"]["download"]["href"] = "https://cdn.example.net/a";
    }, "another host");
    check([](json& j) { j.erase("id"); }, "id");
    {
        // A refused name is quoted without its control characters (no forged log lines).
        auto doc = deploymentDoc();
        doc["deployment"]["chunks"][0]["artifacts"][0]["filename"] = "fw\n2024 INFO ok";
        auto d = normaliseDeployment(doc.dump(), kServer);
        REQUIRE_FALSE(d);
        CHECK(d.error().message.find('\n') == std::string::npos);
        CHECK(d.error().message.find("fw?2024 INFO ok") != std::string::npos);
    }
    auto trunc = normaliseDeployment(deploymentDoc().dump().substr(0, 50), kServer);
    REQUIRE_FALSE(trunc);
    CHECK(trunc.error().message.find("malformed JSON") != std::string::npos);
}

TEST_CASE("feedback has the DDI shape and its limits are checked")
{
    Feedback f{"proceeding", "none", 2, 5, {"writing slot b"}};
    REQUIRE(validateFeedback(f));
    json j = json::parse(feedbackBody(f, 1700000000000));
    CHECK(j["timestamp"] == 1700000000000);
    CHECK(j["status"]["execution"] == "proceeding");
    CHECK(j["status"]["result"]["finished"] == "none");
    CHECK(j["status"]["result"]["progress"]["cnt"] == 2);
    CHECK(j["status"]["result"]["progress"]["of"] == 5);
    CHECK(j["status"]["details"][0] == "writing slot b");

    CHECK_FALSE(validateFeedback({"done", "success", 0, 0, {}}));
    CHECK_FALSE(validateFeedback({"closed", "ok", 0, 0, {}}));
    CHECK_FALSE(validateFeedback({"closed", "success", 0, 0, std::vector<std::string>(49, "x")}));
    CHECK(validateFeedback({"closed", "success", 0, 0, std::vector<std::string>(48, "x")}));
    CHECK_FALSE(validateFeedback({"proceeding", "none", 6, 5, {}}));
}

TEST_CASE("attributes over the server's limits are refused with a clear error")
{
    std::map<std::string, std::string> a;
    for (int i = 0; i < 100; ++i) {
        a["k" + std::to_string(i)] = "v";
    }
    CHECK(validateAttributes(a));
    a["one-more"] = "v";
    auto r = validateAttributes(a);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("at most 100") != std::string::npos);
    CHECK_FALSE(validateAttributes({{std::string(129, 'k'), "v"}}));
    CHECK_FALSE(validateAttributes({{"k", std::string(129, 'v')}}));
    CHECK(validateAttributes({{std::string(128, 'k'), std::string(128, 'v')}}));
    json body = json::parse(configDataBody({{"a", "1"}}));
    CHECK(body["mode"] == "replace");
    CHECK(body["data"]["a"] == "1");
}

TEST_CASE("back-off grows exponentially with jitter and stays under its cap")
{
    Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(1000), 42);
    std::vector<long> waits;
    for (int i = 0; i < 8; ++i) {
        waits.push_back(static_cast<long>(b.next().count()));
    }
    CHECK(waits[0] >= 50);
    CHECK(waits[0] <= 100);
    CHECK(waits[3] >= 400);
    CHECK(waits[3] <= 800);
    for (long w : waits) {
        CHECK(w <= 1000);
    }
    CHECK(waits[7] >= 500);
    // Two devices with different seeds do not retry in lock step.
    Backoff c(std::chrono::milliseconds(100), std::chrono::milliseconds(100000), 7);
    Backoff d(std::chrono::milliseconds(100), std::chrono::milliseconds(100000), 8);
    int same = 0;
    for (int i = 0; i < 10; ++i) {
        same += c.next() == d.next() ? 1 : 0;
    }
    CHECK(same < 10);
}

TEST_CASE("Retry-After is read as seconds or an HTTP date")
{
    CHECK(*parseRetryAfter("7", 0) == seconds(7));
    CHECK(*parseRetryAfter("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480) == seconds(10));
    CHECK_FALSE(parseRetryAfter("soon", 0));
    CHECK_FALSE(parseRetryAfter("", 0));
}

TEST_CASE("queued feedback survives a restart in order and a closed action's entries are dropped")
{
    test::TempDir dir;
    const std::string path = dir.path() + "/queue.json";
    {
        auto q = FeedbackQueue::open(path);
        REQUIRE(q);
        REQUIRE((*q)->push({"1", "deploymentBase", "a"}));
        REQUIRE((*q)->push({"2", "deploymentBase", "b"}));
        REQUIRE((*q)->push({"1", "deploymentBase", "c"}));
    }
    auto q = FeedbackQueue::open(path);
    REQUIRE(q);
    CHECK((*q)->size() == 3);
    CHECK((*q)->front()->body == "a");
    REQUIRE((*q)->dropAction("1"));
    CHECK((*q)->size() == 1);
    CHECK((*q)->front()->body == "b");
    REQUIRE((*q)->pop());
    CHECK((*q)->size() == 0);
}

TEST_CASE("a corrupt feedback queue file is kept aside and the queue starts empty")
{
    test::TempDir dir;
    const std::string path = dir.path() + "/queue.json";
    REQUIRE(fs::writeFileAtomic(path, "[{\"action_id\": 1", 0600));
    auto q = FeedbackQueue::open(path);
    REQUIRE(q);
    CHECK((*q)->size() == 0);
    CHECK(fs::exists(path + ".corrupt"));
}

TEST_CASE("over-the-air settings parse every documented key and print back in the same form")
{
    auto s = RuntimeSettings::parse(R"({"poll_interval_sec": 60, "log_level": "debug"})");
    REQUIRE(s);
    CHECK(s->pollIntervalSec == 60u);
    CHECK(s->logLevel == std::string("debug"));
    auto again = RuntimeSettings::parse(s->dump());
    REQUIRE(again);
    CHECK(*again == *s);
    auto empty = RuntimeSettings::parse("{}");
    REQUIRE(empty);
    CHECK_FALSE(empty->pollIntervalSec);
    CHECK_FALSE(empty->logLevel);
    CHECK(empty->dump() == "{}");
    CHECK(RuntimeSettings::parse(R"({"poll_interval_sec": 1})"));
    CHECK(RuntimeSettings::parse(R"({"poll_interval_sec": 2592000})"));
}

TEST_CASE("bad over-the-air settings are refused with a reason naming the key")
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"poll_interval_sec": 0})", "poll_interval_sec"},
        {R"({"poll_interval_sec": 2592001})", "poll_interval_sec"},
        {R"({"poll_interval_sec": -5})", "poll_interval_sec"},
        {R"({"poll_interval_sec": 18446744073709551615})", "poll_interval_sec"},
        {R"({"poll_interval_sec": "60"})", "integer"},
        {R"({"poll_interval_sec": 60.5})", "integer"},
        {R"({"poll_interval_sec": true})", "integer"},
        {R"({"log_level": "verbose"})", "log_level"},
        {R"({"log_level": 3})", "log_level"},
        {R"({"loglevel": "debug"})", "unknown key 'loglevel'"},
        {R"([1])", "object"},
        {R"({"poll_interval_sec": )", "JSON"},
        {"", "JSON"},
        {"{\"log_level\": \"" + std::string(70000, 'x') + "\"}", "larger"},
    };
    for (const auto& [text, why] : cases) {
        INFO(text.substr(0, 80));
        auto s = RuntimeSettings::parse(text);
        REQUIRE_FALSE(s);
        CHECK(s.error().code == ErrorCode::InvalidArgument);
        CHECK(s.error().message.find(why) != std::string::npos);
    }
}

TEST_CASE("cloud.json: a misspelled key at any depth is refused at start-up, naming the key path")
{
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"poll": {"default_slep": "00:01:00"}})", "unknown key 'poll.default_slep'"},
        {R"({"http": {"conect_timeout_sec": 5}})", "unknown key 'http.conect_timeout_sec'"},
        {R"({"download": {"max_retires": 3}})", "unknown key 'download.max_retires'"},
        {R"({"colour": "blue"})", "unknown key 'colour'"},
        {R"({"confirmation": "sometimes"})", "confirmation"},
        {R"({"poll": 5})", "poll"},
    };
    for (const auto& [text, why] : cases) {
        INFO(text);
        auto c = Config::parse(text, "cloud.json");
        REQUIRE(c);
        auto s = CloudSettings::fromConfig(*c);
        REQUIRE_FALSE(s);
        CHECK(s.error().code == ErrorCode::InvalidArgument);
        CHECK(s.error().message.find(why) != std::string::npos);
    }
    auto good = Config::parse(R"({"poll": {"default_sleep": "00:01:00", "jitter_percent": 5},
                                  "download": {"max_retries": 2, "other_hosts_ca_file": "/etc/ca.pem"},
                                  "confirmation": "manual"})",
                              "cloud.json");
    REQUIRE(good);
    auto s = CloudSettings::fromConfig(*good);
    REQUIRE(s);
    CHECK(s->defaultSleep == std::chrono::seconds(60));
    CHECK(s->download.maxRetries == 2);
    CHECK(s->confirmManually);
    CHECK(s->otherHostsCaFile == "/etc/ca.pem");
}

TEST_CASE("attributes: root, the privileged users and the admin group write any namespace, an app its own only, "
          "anyone else nothing")
{
    const uid_t coordinator = 4242;
    const uid_t app = 100000;
    int lookups = 0;
    AttributeAccess access({coordinator}, std::nullopt, [&](uid_t uid) -> Expected<std::string> {
        ++lookups;
        if (uid == app) {
            return std::string("sensor");
        }
        if (uid == 100500) {
            return unexpected(ErrorCode::Failed, "the container manager: org.freedesktop.DBus.Error.ServiceUnknown");
        }
        return unexpected(ErrorCode::NotFound, "no app holds it");
    });
    CHECK(access.check(0, "anything"));
    CHECK(access.check(coordinator, "sensor"));
    CHECK(lookups == 0); // the privileged are not looked up
    CHECK(access.check(app, "sensor"));
    auto other = access.check(app, "camera");
    REQUIRE_FALSE(other);
    CHECK(other.error().code == ErrorCode::AccessDenied);
    CHECK(other.error().message == "uid 100000 is app 'sensor', which may write only the namespace 'sensor', not 'camera'");
    auto stranger = access.check(1234, "sensor");
    REQUIRE_FALSE(stranger);
    CHECK(stranger.error().code == ErrorCode::AccessDenied);
    CHECK(stranger.error().message == "uid 1234 is neither an app nor privileged: it may not write attributes");
    auto unknown = access.check(100500, "sensor");
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().code == ErrorCode::AccessDenied);
    CHECK(unknown.error().message.find("cannot tell which app uid 100500 is") != std::string::npos);

    // The admin group as the system defines it (tests/setup.sh makes mbl-test-admin a member of mbl-admin).
    // (getpwnam/getgrnam return static storage: each value is copied before the next call.)
    std::optional<gid_t> gid;
    std::optional<uid_t> memberUid;
    std::optional<uid_t> plainUid;
    if (const struct group* g = ::getgrnam("mbl-admin")) {
        gid = g->gr_gid;
    }
    if (const struct passwd* p = ::getpwnam("mbl-test-admin")) {
        memberUid = p->pw_uid;
    }
    if (const struct passwd* p = ::getpwnam("mbl-test-user")) {
        plainUid = p->pw_uid;
    }
    if (gid && memberUid && plainUid) {
        AttributeAccess withGroup({}, gid, [](uid_t) -> Expected<std::string> {
            return unexpected(ErrorCode::NotFound, "no app holds it");
        });
        CHECK(withGroup.check(*memberUid, "any"));
        CHECK_FALSE(withGroup.check(*plainUid, "any"));
    } else {
        WARN("mbl-admin/mbl-test-admin/mbl-test-user missing (tests/setup.sh makes them): the group case was not run");
    }
}
