// hawkBit as hawkBit really is (issue 13), at the level of the client's parts:
// the deployment documents a default hawkBit sends (DdiRootController,
// DataConversionHelper, hawkbit-artifactdl-defaults.properties), the poller's
// state machine and jitter, the attribute store, the action book and the
// artifact cache. No network, no bus.

#include "actions.h"
#include "artifact_cache.h"
#include "attributes.h"
#include "ddi.h"
#include "harness.h"
#include "poller.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <set>
#include <unistd.h>

using namespace mbl;
using namespace mbl::cloud;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const Origin kServer{"https", "hb.example", 443};

json artifact(const std::string& name, const json& links)
{
    return {{"filename", name},
            {"hashes",
             {{"sha1", std::string(40, 'a')}, {"md5", std::string(32, 'b')}, {"sha256", std::string(64, 'c')}}},
            {"size", 13},
            {"_links", links}};
}

json defaultLinks(const std::string& name)
{
    // What a default hawkBit behind a TLS proxy sends (hawkbit-artifactdl-defaults.properties:
    // only download-http and md5sum-http, with the request's scheme).
    const std::string href = "https://hb.example:443/DEFAULT/controller/v1/dev/softwaremodules/9/artifacts/" + name;
    return {{"download-http", {{"href", href}}}, {"md5sum-http", {{"href", href + ".MD5SUM"}}}};
}

// DdiRootController calculateDownloadType / calculateUpdateType / calculateMaintenanceWindow.
json doc(const std::string& download, const std::string& update, const json& window,
         json chunks = json())
{
    if (chunks.is_null()) {
        chunks = json::array({{{"part", "os"},
                               {"version", "2.4.1"},
                               {"name", "rootfs"},
                               {"artifacts", json::array({artifact("system.mblb", defaultLinks("system.mblb"))})}}});
    }
    json dep = {{"download", download}, {"update", update}, {"chunks", chunks}};
    if (!window.is_null()) {
        dep["maintenanceWindow"] = window;
    }
    return {{"id", "42"}, {"deployment", dep}};
}

} // namespace

TEST_CASE("a closed maintenance window is not download-only: download yes, install no, the action stays open")
{
    auto d = normaliseDeployment(doc("forced", "skip", "unavailable").dump(), kServer);
    REQUIRE(d);
    CHECK((*d)["download_only"] == false);
    CHECK((*d)["download_allowed"] == true);
    CHECK((*d)["install_allowed"] == false);
    CHECK((*d)["maintenance_window"] == "unavailable");
    // The window opens: update becomes the download type.
    auto open = normaliseDeployment(doc("forced", "forced", "available").dump(), kServer);
    REQUIRE(open);
    CHECK((*open)["install_allowed"] == true);
    CHECK((*open)["download_only"] == false);
    // hawkBit's downloadonly: update skip WITHOUT a window.
    auto only = normaliseDeployment(doc("forced", "skip", nullptr).dump(), kServer);
    REQUIRE(only);
    CHECK((*only)["download_only"] == true);
    CHECK((*only)["install_allowed"] == false);
}

TEST_CASE("download skip allows neither download nor install")
{
    auto d = normaliseDeployment(doc("skip", "skip", nullptr).dump(), kServer);
    REQUIRE(d);
    CHECK((*d)["download_allowed"] == false);
    CHECK((*d)["install_allowed"] == false);
    auto soft = normaliseDeployment(doc("attempt", "attempt", nullptr).dump(), kServer);
    REQUIRE(soft);
    CHECK((*soft)["download_allowed"] == true);
    CHECK((*soft)["install_allowed"] == true);
}

TEST_CASE("a default hawkBit's download-http link is followed; download is preferred where an operator configured it")
{
    auto d = normaliseDeployment(doc("forced", "forced", nullptr).dump(), kServer);
    REQUIRE(d);
    CHECK((*d)["chunks"][0]["artifacts"][0]["url"] ==
          "https://hb.example:443/DEFAULT/controller/v1/dev/softwaremodules/9/artifacts/system.mblb");
    json both = defaultLinks("a.bin");
    both["download"] = {{"href", "https://hb.example/dl/a.bin"}};
    CHECK(*chooseArtifactLink(both) == "https://hb.example/dl/a.bin");
    CHECK(*chooseArtifactLink(defaultLinks("a.bin")) ==
          "https://hb.example:443/DEFAULT/controller/v1/dev/softwaremodules/9/artifacts/a.bin");
    CHECK_FALSE(chooseArtifactLink(json{{"md5sum-http", {{"href", "https://hb.example/x.MD5SUM"}}}}));
    CHECK_FALSE(chooseArtifactLink(json::object()));
}

TEST_CASE("a plain http artifact link is refused unless allow_http is set")
{
    auto chunks = json::array({{{"part", "os"},
                                {"version", "1"},
                                {"name", "fw"},
                                {"artifacts", json::array({artifact("a.bin", {{"download-http",
                                                                                {{"href", "http://hb.example:8080/a"}}}})})}}});
    auto refused = normaliseDeployment(doc("forced", "forced", nullptr, chunks).dump(), kServer);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("not https") != std::string::npos);
    CHECK(refused.error().message.find("allow_http") != std::string::npos);
    // The same host over http is still "another host" (another port): both must be allowed.
    auto allowed = normaliseDeployment(doc("forced", "forced", nullptr, chunks).dump(), kServer, LinkPolicy{true, true});
    REQUIRE(allowed);
}

TEST_CASE("artifact links to another host are refused with a clear error unless allow_other_hosts is set")
{
    auto chunks = json::array({{{"part", "os"},
                                {"version", "1"},
                                {"name", "fw"},
                                {"artifacts", json::array({artifact("a.bin", {{"download",
                                                                                {{"href", "https://cdn.example/a"}}}})})}}});
    auto refused = normaliseDeployment(doc("forced", "forced", nullptr, chunks).dump(), kServer);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().message.find("another host (cdn.example:443)") != std::string::npos);
    CHECK(refused.error().message.find("allow_other_hosts") != std::string::npos);
    auto allowed = normaliseDeployment(doc("forced", "forced", nullptr, chunks).dump(), kServer, LinkPolicy{true, false});
    REQUIRE(allowed);
    CHECK((*allowed)["chunks"][0]["artifacts"][0]["url"] == "https://cdn.example/a");
}

TEST_CASE("a distribution set of several chunks with several artifacts each is one deployment, in order")
{
    // DataConversionHelper.createChunks: one chunk per software module; "application" arrives as "bApp".
    auto chunks = json::array(
        {{{"part", "os"}, {"version", "2"}, {"name", "rootfs"},
          {"artifacts", json::array({artifact("os.mblb", defaultLinks("os.mblb"))})}},
         {{"part", "bApp"}, {"version", "1.1"}, {"name", "sensor"},
          {"artifacts", json::array({artifact("sensor.mblb", defaultLinks("sensor.mblb")),
                                     artifact("sensor-cfg.mblb", defaultLinks("sensor-cfg.mblb"))})},
          {"metadata", json::array({{{"key", "mbl.complete-app-set"}, {"value", "true"}}})}},
         {{"part", "bApp"}, {"version", "3"}, {"name", "ui"},
          {"artifacts", json::array({artifact("os.mblb", defaultLinks("os.mblb"))})}}});
    auto d = normaliseDeployment(doc("forced", "forced", nullptr, chunks).dump(), kServer);
    REQUIRE(d);
    REQUIRE((*d)["chunks"].size() == 3);
    CHECK((*d)["chunks"][0]["part"] == "os");
    CHECK((*d)["chunks"][1]["name"] == "sensor");
    REQUIRE((*d)["chunks"][1]["artifacts"].size() == 2);
    CHECK((*d)["chunks"][1]["artifacts"][1]["filename"] == "sensor-cfg.mblb");
    CHECK((*d)["chunks"][2]["artifacts"][0]["filename"] == "os.mblb"); // the same file name in another chunk is fine
    CHECK((*d)["complete_app_set"] == true);
    auto plain = normaliseDeployment(doc("forced", "forced", nullptr).dump(), kServer);
    REQUIRE(plain);
    CHECK((*plain)["complete_app_set"] == false);
}

TEST_CASE("bad deployment documents are refused with a reason naming what is wrong")
{
    struct Case {
        std::string what;
        std::function<void(json&)> mutate;
        std::string says;
    };
    auto art0 = [](json& j) -> json& { return j["deployment"]["chunks"][0]["artifacts"][0]; };
    const std::vector<Case> cases = {
        {"unknown download type", [](json& j) { j["deployment"]["download"] = "later"; }, "'deployment.download' is 'later'"},
        {"unknown update type", [](json& j) { j["deployment"]["update"] = "eventually"; }, "expected skip, attempt or forced"},
        {"missing update", [](json& j) { j["deployment"].erase("update"); }, "'deployment.update' is missing"},
        {"unknown window", [](json& j) { j["deployment"]["maintenanceWindow"] = "soon"; }, "maintenanceWindow"},
        {"no links", [&](json& j) { art0(j).erase("_links"); }, "no 'download' or 'download-http' link"},
        {"only md5sum links", [&](json& j) { art0(j)["_links"].erase("download-http"); }, "no 'download' or 'download-http'"},
        {"ftp link", [&](json& j) { art0(j)["_links"]["download-http"]["href"] = "ftp://hb.example/a"; }, "scheme 'ftp'"},
        {"javascript link", [&](json& j) { art0(j)["_links"]["download-http"]["href"] = "javascript:alert(1)"; }, "link"},
        {"another host", [&](json& j) { art0(j)["_links"]["download-http"]["href"] = "https://evil.example/a"; }, "another host"},
        {"sha256 too short", [&](json& j) { art0(j)["hashes"]["sha256"] = std::string(63, 'c'); }, "not 64 hexadecimal digits"},
        {"sha256 not hex", [&](json& j) { art0(j)["hashes"]["sha256"] = std::string(64, 'z'); }, "not 64 hexadecimal digits"},
        {"no sha256", [&](json& j) { art0(j)["hashes"].erase("sha256"); }, "no sha256"},
        {"sha1 too long", [&](json& j) { art0(j)["hashes"]["sha1"] = std::string(41, 'a'); }, "sha1"},
        {"md5 too short", [&](json& j) { art0(j)["hashes"]["md5"] = "abc"; }, "md5"},
        {"negative size", [&](json& j) { art0(j)["size"] = -1; }, "size"},
        {"duplicate chunk", [](json& j) { j["deployment"]["chunks"].push_back(j["deployment"]["chunks"][0]); }, "appears twice"},
        {"duplicate artifact", [&](json& j) { j["deployment"]["chunks"][0]["artifacts"].push_back(art0(j)); }, "appears twice"},
        {"chunk without part", [](json& j) { j["deployment"]["chunks"][0].erase("part"); }, "'part' is missing"},
        {"action id with a slash", [](json& j) { j["id"] = "4/../2"; }, "action id"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        auto j = doc("forced", "forced", nullptr);
        c.mutate(j);
        auto d = normaliseDeployment(j.dump(), kServer);
        REQUIRE_FALSE(d);
        CHECK(d.error().code == ErrorCode::InvalidArgument);
        CHECK(d.error().message.find(c.says) != std::string::npos);
    }
    // Deeply nested JSON is refused before it is parsed.
    std::string deep = std::string(5000, '[') + std::string(5000, ']');
    auto nested = normaliseDeployment("{\"id\":\"1\",\"x\":" + deep + "}", kServer);
    REQUIRE_FALSE(nested);
    CHECK(nested.error().message.find("nested deeper") != std::string::npos);
    // A proxy's HTML error page with 200.
    auto html = normaliseDeployment("<html><body>502 Bad Gateway</body></html>", kServer);
    REQUIRE_FALSE(html);
    CHECK(html.error().message.find("HTML, not JSON") != std::string::npos);
}

TEST_CASE("deployment JSON travels as ASCII, so any text from the server fits a D-Bus string (fuzz finding D2)")
{
    auto j = doc("forced", "forced", nullptr);
    j["deployment"]["chunks"][0]["name"] = "\xef\xbf\xbe"; // U+FFFE, refused by sd-bus
    auto d = normaliseDeployment(j.dump(), kServer);
    REQUIRE(d);
    const std::string text = busJson(*d);
    CHECK(text.find("\\ufffe") != std::string::npos);
    CHECK(std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }));
    CHECK(json::parse(text)["chunks"][0]["name"] == "\xef\xbf\xbe");
    // A file name travels as a signal string of its own: such a name is refused.
    j["deployment"]["chunks"][0]["artifacts"][0]["filename"] = "fw\xef\xbf\xbe.bin";
    CHECK_FALSE(normaliseDeployment(j.dump(), kServer));
}

TEST_CASE("a cancel accepted with canceled goes out as closed, the only form hawkBit reads as accepted")
{
    auto a = cancelAnswer({"canceled", "success", 0, 0, {"stopped"}});
    CHECK(a.execution == "closed");
    CHECK(a.result == "success");
    CHECK(a.details == std::vector<std::string>{"stopped"});
    CHECK(cancelAnswer({"rejected", "none", 0, 0, {}}).execution == "rejected");
    CHECK(cancelAnswer({"closed", "failure", 0, 0, {}}).result == "failure");
}

TEST_CASE("attributes follow hawkBit's character set and lengths")
{
    CHECK(validateAttribute("sensor.model", "BME280 (rev. B); ok!"));
    CHECK_FALSE(validateAttribute("sensor.model", "caf\xc3\xa9")); // é
    CHECK_FALSE(validateAttribute("sensor~model", "x"));
    CHECK_FALSE(validateAttribute("k", "back`tick"));
    auto r = validateAttribute("k", "a~b");
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("character the server refuses") != std::string::npos);
}

TEST_CASE("the attribute store sends the whole set so removals reach the server; an empty namespace goes away")
{
    test::TempDir dir;
    AttributeStore s(dir.path() + "/attributes.json");
    s.setFixed("device_id", "dev-7");
    s.setSystem({{"firmware_version", "2.0"}, {"app.hello", "1.0"}, {"app.gone", "0.9"}});
    REQUIRE(s.setNamespace("sensor", {{"model", "bme280"}, {"fw", "1.2"}}));
    CHECK(s.needsSending());
    s.acknowledged(s.merged());
    CHECK_FALSE(s.needsSending());
    // An app is removed and a sensor attribute is dropped: the next set lacks them.
    s.setSystem({{"firmware_version", "2.0"}, {"app.hello", "1.0"}});
    REQUIRE(s.setNamespace("sensor", {{"model", "bme280"}}));
    CHECK(s.needsSending());
    auto m = s.merged();
    CHECK(m.count("app.gone") == 0);
    CHECK(m.count("sensor.fw") == 0);
    CHECK(m["sensor.model"] == "bme280");
    json body = json::parse(configDataBody(m));
    CHECK(body["mode"] == "replace");
    CHECK(body["data"].size() == m.size());
    REQUIRE(s.setNamespace("sensor", {}));
    CHECK(s.merged().count("sensor.model") == 0);
    // Persisted: a new store reads the same apps' attributes.
    REQUIRE(s.setNamespace("ui", {{"theme", "dark"}}));
    AttributeStore again(dir.path() + "/attributes.json");
    CHECK(again.merged()["ui.theme"] == "dark");
    CHECK(again.merged().count("sensor.model") == 0);
    // A fact the server would refuse is left out; the rest still goes.
    s.setSystem({{"app.caf\xc3\xa9", "1"}, {"firmware_version", "2.1"}});
    CHECK(s.merged().count("app.caf\xc3\xa9") == 0);
    CHECK(s.merged()["firmware_version"] == "2.1");
    // Refusals change nothing.
    CHECK_FALSE(s.setNamespace("mbl", {{"k", "v"}}));
    CHECK_FALSE(s.setNamespace("ui", {{"k", "a~b"}}));
    CHECK(s.merged()["ui.theme"] == "dark");
}

TEST_CASE("every state has a transition for every event, and the table says where each leads")
{
    for (std::size_t s = 0; s < kConnStateCount; ++s) {
        for (std::size_t e = 0; e < kPollEventCount; ++e) {
            const auto t = transition(static_cast<ConnState>(s), static_cast<PollEvent>(e));
            INFO(connStateName(static_cast<ConnState>(s)) << " + " << pollEventName(static_cast<PollEvent>(e)));
            CHECK(static_cast<std::size_t>(t.to) < kConnStateCount);
        }
    }
    CHECK(transition(ConnState::BackingOff, PollEvent::Answered).to == ConnState::Connected);
    CHECK(transition(ConnState::Connected, PollEvent::Throttled).to == ConnState::Throttled);
    CHECK(transition(ConnState::Connected, PollEvent::ServerTrouble).to == ConnState::BackingOff);
    CHECK(transition(ConnState::Connected, PollEvent::AuthRefused).to == ConnState::AuthFailed);
    CHECK(transition(ConnState::AuthFailed, PollEvent::IdentityChanged).to == ConnState::Connecting);
    CHECK(transition(ConnState::AuthFailed, PollEvent::IdentityChanged).wait == WaitRule::Now);
    CHECK(std::string(connStateName(ConnState::Throttled)) == "throttled");
    CHECK(std::string(connStateName(ConnState::BackingOff)) == "disconnected");
}

TEST_CASE("every poll sleep is jittered by up to the configured share, and first polls spread over the window")
{
    PollerSettings ps;
    ps.jitterPercent = 10;
    ps.firstPollSpread = seconds(60);
    std::set<long> distinct;
    for (std::uint32_t seed = 1; seed <= 200; ++seed) {
        Poller p(ps, seed);
        const auto first = p.firstWait();
        CHECK(first >= milliseconds(0));
        CHECK(first <= seconds(60));
        const auto w = p.on(PollEvent::Answered, seconds(300));
        CHECK(w >= seconds(270));
        CHECK(w <= seconds(330));
        distinct.insert(static_cast<long>(w.count()));
        CHECK(p.state() == ConnState::Connected);
    }
    CHECK(distinct.size() > 150); // not lock-step
    ps.jitterPercent = 0;
    Poller fixed(ps, 1);
    CHECK(fixed.on(PollEvent::Answered, seconds(300)) == seconds(300));
}

TEST_CASE("Retry-After is honoured while throttled, and an answer resets the back-off")
{
    PollerSettings ps;
    ps.backoffBase = milliseconds(1000);
    ps.backoffCap = seconds(600);
    Poller p(ps, 3);
    const auto w = p.on(PollEvent::Throttled, seconds(300), seconds(120));
    CHECK(p.state() == ConnState::Throttled);
    CHECK(w >= seconds(120));
    CHECK(p.on(PollEvent::Throttled, seconds(300), seconds(100000)) <= seconds(600)); // capped
    (void)p.on(PollEvent::ServerTrouble, seconds(300));
    CHECK(p.state() == ConnState::BackingOff);
    CHECK(p.failures() == 3);
    (void)p.on(PollEvent::Answered, seconds(300));
    CHECK(p.failures() == 0);
    CHECK(p.on(PollEvent::IdentityChanged, seconds(300)) == milliseconds(0));
    CHECK(p.state() == ConnState::Connecting);
}

TEST_CASE("the action book announces a changed deployment again and asks a cancel once")
{
    test::TempDir dir;
    ActionBook b(dir.path() + "/closed.json");
    const json v1 = {{"action_id", "5"}, {"install_allowed", false}};
    CHECK(b.changed("5", v1));
    b.announced("5", v1);
    CHECK_FALSE(b.changed("5", v1));
    json v2 = v1;
    v2["install_allowed"] = true;
    CHECK(b.changed("5", v2));
    CHECK(b.askCancel("5"));
    CHECK_FALSE(b.askCancel("5"));
    b.cancelAnswered("5");
    CHECK_FALSE(b.askCancel("5"));          // the answer is on its way; the poll may still offer it
    b.cancelsOffered({});                   // the server no longer offers it
    CHECK(b.askCancel("5"));                // a new cancel of the same action is a new request
    REQUIRE(b.rememberClosed("6"));
    ActionBook again(dir.path() + "/closed.json");
    CHECK(again.closed("6"));
    CHECK_FALSE(again.askCancel("6"));
}

TEST_CASE("a deployment whose signal could not be sent counts as not announced and is announced again")
{
    test::TempDir dir;
    ActionBook b(dir.path() + "/closed.json");
    const json v1 = {{"action_id", "8"}, {"install_allowed", true}};
    b.setFetchedHref("8", "https://hb.example/DEFAULT/controller/v1/dev/deploymentBase/8?c=1");
    b.announced("8", v1);
    CHECK_FALSE(b.changed("8", v1));
    // The bus refused the signal carrying v1: the next poll reads the action and announces it.
    CHECK(b.notAnnounced("8", v1));
    CHECK(b.changed("8", v1));
    CHECK(b.fetchedHref("8").empty());
    // A failure reported for an older document does not undo a newer announcement.
    json v2 = v1;
    v2["install_allowed"] = false;
    b.announced("8", v2);
    CHECK_FALSE(b.notAnnounced("8", v1));
    CHECK_FALSE(b.changed("8", v2));
}

TEST_CASE("kept artifacts are verified before they are served and the oldest go when the quota is full")
{
    test::TempDir dir;
    ArtifactCache cache(dir.path() + "/kept", 100);
    auto put = [&](const std::string& data) {
        const std::string sha = crypto::sha256Hex(data);
        auto w = cache.begin(sha, data.size());
        REQUIRE(w);
        REQUIRE(fs::writeAll(w->fd(), data.data(), data.size()));
        REQUIRE(w->commit());
        return sha;
    };
    const std::string a = put(std::string(60, 'a'));
    CHECK(cache.open(a, 60));
    CHECK_FALSE(cache.open(a, 61));
    CHECK_FALSE(cache.begin(crypto::sha256Hex(std::string(101, 'x')), 101)); // larger than the quota
    const std::string b = put(std::string(60, 'b'));                       // a is evicted to make room
    CHECK_FALSE(cache.open(a, 60));
    auto fd = cache.open(b, 60);
    REQUIRE(fd);
    CHECK(fs::readAll(fd->get()).value() == std::string(60, 'b'));
    CHECK(cache.usedBytes() == 60);
    // A damaged entry is never served, and is deleted.
    REQUIRE(fs::writeFileAtomic(dir.path() + "/kept/" + b, std::string(60, 'X'), 0600));
    CHECK_FALSE(cache.open(b, 60));
    CHECK_FALSE(fs::exists(dir.path() + "/kept/" + b));
    // Quota 0: nothing is kept.
    ArtifactCache off(dir.path() + "/off", 0);
    CHECK_FALSE(off.begin(a, 60));
}
