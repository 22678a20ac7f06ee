// The cloud client against the DDI test server answering as a default hawkBit
// does (issue 13), behind real nginx with mutual TLS, with the real identity
// service: each finding of the issue as a user sees it, and the behaviour that
// replaced it. A second nginx with a CA of its own plays the CDN / object store.

#include "cloud_env.h"
#include "cloud_steps.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <thread>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::size_t artifactGets(CloudEnv& env, const std::string& name)
{
    std::size_t n = 0;
    for (const auto& r : env.requests("/artifacts/" + name)) {
        n += r["method"] == "GET" ? 1 : 0;
    }
    return n;
}

std::string lastDetail(CloudEnv& env, const std::string& id)
{
    auto fb = action(env, id)["feedback"];
    if (fb.empty() || fb.back()["details"].empty()) {
        return "";
    }
    return fb.back()["details"].back();
}

std::string callError(const std::function<void()>& f)
{
    try {
        f();
        return "";
    } catch (const sdbus::Error& e) {
        return e.getName() + ": " + e.getMessage();
    }
}

} // namespace

TEST_CASE("with the maintenance window closed the device downloads but neither installs nor closes; the open window "
          "announces it again")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "mw.bin", 200000);
    // A forced action with a maintenance schedule, outside its window (DdiRootController:
    // update "skip" with maintenanceWindow "unavailable").
    const std::string id = deploy(env, {"mw.bin"}, {{"type", "forced"}, {"maintenance", {{"available", false}}}});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    const json d = json::parse(dep->args[1]);
    CHECK(d["update"] == "skip");
    CHECK(d["maintenance_window"] == "unavailable");
    CHECK(d["download_only"] == false); // the old client read this as download-only and closed the action
    CHECK(d["download_allowed"] == true);
    CHECK(d["install_allowed"] == false);
    auto fd = download(env, id, firstArtifact(*dep));
    CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
    REQUIRE(sig.waitFor("DownloadFinished"));
    feedback(env, id, "downloaded", "none", 0, 0, {"downloaded; waiting for the maintenance window"});
    REQUIRE(CloudEnv::waitUntil([&] { return action(env, id)["feedback"].size() == 1; }));
    pollAndWait(env);
    CHECK(actionStatus(env, id, "RUNNING"));      // still open: nothing was installed
    CHECK(sig.count("DeploymentRequested") == 1); // nothing new to say

    SECTION("the window opens: announced again, installable")
    {
        env.cloud.admin("POST", "/admin/actions/" + id, {{"maintenanceWindow", "available"}});
        pollNow(env);
        auto again = sig.waitFor("DeploymentRequested", 2);
        REQUIRE(again);
        const json d2 = json::parse(again->args[1]);
        CHECK(d2["update"] == "forced");
        CHECK(d2["maintenance_window"] == "available");
        CHECK(d2["install_allowed"] == true);
        feedback(env, id, "closed", "success", 1, 1, {"installed in the window"});
        REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "FINISHED"); }));
    }
    SECTION("a cancel still works while the device waits for the window")
    {
        env.cloud.admin("POST", "/admin/actions/" + id, {{"cancel", true}});
        pollNow(env);
        REQUIRE(sig.waitFor("CancelRequested"));
        feedback(env, id, "closed", "success", 0, 0, {"cancelled while waiting for the window"});
        REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "CANCELED"); }));
    }
}

TEST_CASE("download skip: nothing is downloaded until the server allows it")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "skip.bin", 3000);
    // Not what hawkBit's resolver sends today, but what its DDI model allows (DdiDeployment.HandlingType).
    const std::string id = deploy(env, {"skip.bin"}, {{"type", "forced"}, {"download_override", "skip"}});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    const json d = json::parse(dep->args[1]);
    CHECK(d["download"] == "skip");
    CHECK(d["download_allowed"] == false);
    CHECK(d["install_allowed"] == true);
    const std::string refused = callError([&] { download(env, id, firstArtifact(*dep)); });
    CHECK(contains(refused, "org.mbl.Error.AccessDenied"));
    CHECK(contains(refused, "download 'skip'"));
    CHECK(artifactGets(env, "skip.bin") == 0);
    // The server lifts it: announced again, and the download goes.
    env.cloud.admin("POST", "/admin/actions/" + id, {{"download", nullptr}});
    pollNow(env);
    auto again = sig.waitFor("DeploymentRequested", 2);
    REQUIRE(again);
    CHECK(json::parse(again->args[1])["download_allowed"] == true);
    auto fd = download(env, id, firstArtifact(*again));
    CHECK(readFd(fd.get()).size() == 3000u);
}

TEST_CASE("a default hawkBit's artifact links (download-http only) are followed")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "dh.bin", 70000);
    const std::string id = deploy(env, {"dh.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep); // the old client refused every document of a default server ("no https download link")
    auto fd = download(env, id, firstArtifact(*dep));
    CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
    // The server sent no "download" rel at all.
    CHECK(contains(firstArtifact(*dep)["url"], "/softwaremodules/"));
}

TEST_CASE("artifacts on another host (a CDN) come over TLS with that host's CA, without the device's certificate "
          "or token")
{
    CloudEnvOptions o;
    o.config = {{"allow_other_hosts", true}};
    CloudEnv env(o);
    const std::string cdn = env.cloud.startCdn();
    // Written here (the fixture's CA files exist only now): the client is restarted with it.
    json cfg = json::parse(*fs::readFile(env.stack.root() + "/etc/mbl/cloud.json"));
    cfg["download"]["other_hosts_ca_file"] = env.cloud.cdnCaFile();
    REQUIRE(fs::writeFileAtomic(env.stack.root() + "/etc/mbl/cloud.json", cfg.dump(2), 0644));
    env.stack.stop("cloud-client");
    env.startClient();
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "cdn.bin", 300000);

    SECTION("the artifact link points to the CDN")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_base", cdn}});
        const std::string id = deploy(env, {"cdn.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        CHECK(firstArtifact(*dep)["url"] == cdn + "/cdn.bin");
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
        auto done = sig.waitFor("DownloadFinished");
        REQUIRE(done);
        CHECK(done->args[2] == "success");
    }
    SECTION("the server redirects the artifact request to the CDN")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_redirect", cdn}});
        const std::string id = deploy(env, {"cdn.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
        auto done = sig.waitFor("DownloadFinished");
        REQUIRE(done);
        CHECK(done->args[2] == "success");
        CHECK(artifactGets(env, "cdn.bin") == 1); // the server only redirected
    }
    const std::string log = env.cloud.cdnLog();
    INFO(log);
    CHECK(contains(log, "200 /cdn/cdn.bin cert=- auth=-")); // nothing of the device's identity went there
    CHECK_FALSE(contains(log, "CN="));
    CHECK_FALSE(contains(log, "Token"));
}

TEST_CASE("links and redirects to another host are refused with a clear error when allow_other_hosts is off")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string cdn = env.cloud.startCdn();
    makeArtifact(env, "far.bin", 1000);

    SECTION("a deployment whose artifact lives elsewhere is closed with failure and the reason")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_base", cdn}});
        const std::string id = deploy(env, {"far.bin"});
        REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "ERROR"); }));
        CHECK(contains(lastDetail(env, id), "another host (127.0.0.1:"));
        CHECK(contains(lastDetail(env, id), "allow_other_hosts"));
        CHECK(contains(env.stringProp("LastError"), "deployment " + id + " refused"));
        CHECK(sig.count("DeploymentRequested") == 0);
    }
    SECTION("a redirect of the artifact to another host ends the download with failure")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_redirect", cdn}});
        const std::string id = deploy(env, {"far.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(readFd(fd.get()).empty());
        auto done = sig.waitFor("DownloadFinished");
        REQUIRE(done);
        CHECK(done->args[2] == "failure");
        CHECK(contains(done->args[3], "redirect from"));
        CHECK(contains(done->args[3], "allow_other_hosts"));
        CHECK(artifactGets(env, "far.bin") == 1); // not retried: it would not get better
    }
    CHECK_FALSE(contains(env.cloud.cdnLog(), "far.bin"));
}

TEST_CASE("a CDN whose certificate the device cannot check is refused, and plain http needs allow_http")
{
    CloudEnvOptions o;
    o.config = {{"allow_other_hosts", true}};
    CloudEnv env(o);
    SignalRecorder sig;
    const std::string cdn = env.cloud.startCdn();
    const std::string sha = makeArtifact(env, "plain.bin", 5000);

    SECTION("no CA for the CDN (the system store does not know the test CA)")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_base", cdn}});
        const std::string id = deploy(env, {"plain.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(readFd(fd.get()).empty());
        auto done = sig.waitFor("DownloadFinished", 1, 60s);
        REQUIRE(done);
        CHECK(done->args[2] != "success");
        CHECK(contains(done->args[3], "certificate of 127.0.0.1"));
    }
    SECTION("an http:// link without allow_http closes the action with failure")
    {
        env.cloud.admin("POST", "/admin/config", {{"artifact_base", env.cloud.cdnHttpUrl()}});
        const std::string id = deploy(env, {"plain.bin"});
        REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "ERROR"); }));
        CHECK(contains(lastDetail(env, id), "not https"));
    }
    SECTION("with allow_http it comes over http, checked by its hash, and no credential goes with it")
    {
        json cfg = json::parse(*fs::readFile(env.stack.root() + "/etc/mbl/cloud.json"));
        cfg["allow_http"] = true;
        REQUIRE(fs::writeFileAtomic(env.stack.root() + "/etc/mbl/cloud.json", cfg.dump(2), 0644));
        env.stack.stop("cloud-client");
        env.startClient();
        env.cloud.admin("POST", "/admin/config", {{"artifact_base", env.cloud.cdnHttpUrl()}});
        const std::string id = deploy(env, {"plain.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
        CHECK(contains(env.cloud.cdnLog(), "200 /cdn/plain.bin cert=- auth=-"));
    }
}

TEST_CASE("a distribution set of several software modules is announced as one deployment with every artifact")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string shaOs = makeArtifact(env, "os.mblb", 40000, 1);
    const std::string shaApp = makeArtifact(env, "app.mblb", 30000, 2);
    const std::string shaCfg = makeArtifact(env, "app-config.mblb", 2000, 3);
    json chunks = json::array({{{"part", "os"}, {"name", "rootfs"}, {"version", "3.0"}, {"artifacts", {"os.mblb"}}},
                               {{"part", "application"},
                                {"name", "sensor"},
                                {"version", "1.4"},
                                {"artifacts", {"app.mblb", "app-config.mblb"}},
                                {"metadata", json::array({{{"key", "mbl.complete-app-set"}, {"value", "true"}}})}}});
    auto r = env.cloud.admin("POST", "/admin/deployments", {{"target", env.deviceId}, {"type", "forced"}, {"chunks", chunks}});
    REQUIRE(r["_status"] == 200);
    const std::string id = r["id"];
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    const json d = json::parse(dep->args[1]);
    REQUIRE(d["chunks"].size() == 2);
    CHECK(d["chunks"][0]["part"] == "os");
    CHECK(d["chunks"][1]["part"] == "bApp"); // hawkBit's name for "application"
    REQUIRE(d["chunks"][1]["artifacts"].size() == 2);
    CHECK(d["complete_app_set"] == true);
    const std::vector<std::pair<json, std::string>> all = {{d["chunks"][0]["artifacts"][0], shaOs},
                                                          {d["chunks"][1]["artifacts"][0], shaApp},
                                                          {d["chunks"][1]["artifacts"][1], shaCfg}};
    for (const auto& [art, sha] : all) {
        auto fd = download(env, id, art);
        CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
    }
}

TEST_CASE("the server's attributes equal the device's: removed ones disappear, an empty SetAttributes removes the "
          "namespace")
{
    CloudEnv env;
    auto set = [&](const std::string& ns, const std::map<std::string, std::string>& a) {
        env.proxy().callMethod("SetAttributes").onInterface("org.mbl.CloudClient1").withArguments(ns, a);
    };
    auto serverAttrs = [&] {
        const json t = env.cloud.state()["targets"][env.deviceId];
        return t.is_object() ? t["attributes"] : json::object();
    };
    set("sensor", {{"model", "bme280"}, {"fw", "1.2"}});
    REQUIRE(CloudEnv::waitUntil([&] { return serverAttrs().value("sensor.fw", "") == "1.2"; }));
    set("sensor", {{"model", "bme280"}});
    REQUIRE(CloudEnv::waitUntil([&] { return !serverAttrs().contains("sensor.fw"); }));
    CHECK(serverAttrs()["sensor.model"] == "bme280");
    set("sensor", {});
    REQUIRE(CloudEnv::waitUntil([&] { return !serverAttrs().contains("sensor.model"); }));
    CHECK(serverAttrs()["device_id"] == env.deviceId);
    const auto modes = env.cloud.state()["targets"][env.deviceId]["config_modes"];
    CHECK(std::all_of(modes.begin(), modes.end(), [](const json& m) { return m == "replace"; }));
    // What hawkBit would refuse (a character outside its set) is refused here, with the reason.
    const std::string e = callError([&] { set("sensor", {{"place", "caf\xc3\xa9"}}); });
    CHECK(contains(e, "org.mbl.Error.InvalidArgument"));
    CHECK(contains(e, "character the server refuses"));
}

TEST_CASE("every poll is jittered, so devices polling at the same interval drift apart")
{
    CloudEnvOptions o;
    o.config = {{"poll", {{"jitter_percent", 50}}}};
    CloudEnv env(o);
    env.cloud.admin("POST", "/admin/config", {{"sleep", "00:00:01"}});
    pollNow(env);
    const std::size_t start = pollCount(env);
    REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) >= start + 10; }, 40s));
    std::vector<double> times;
    for (const auto& r : env.requests("/controller/v1/" + env.deviceId)) {
        const std::string path = r["path"];
        if (str::endsWith(path, env.deviceId)) {
            times.push_back(r["time"].get<double>());
        }
    }
    std::vector<double> gaps;
    for (std::size_t i = times.size() - 8; i < times.size(); ++i) {
        gaps.push_back(times[i] - times[i - 1]);
    }
    const auto [lo, hi] = std::minmax_element(gaps.begin(), gaps.end());
    INFO("shortest gap " << *lo << " s, longest " << *hi << " s");
    CHECK(*hi - *lo > 0.25); // 1 s ± 50 %: a fixed interval would keep them within a few ms
}

TEST_CASE("a changed identity is used for the next request without a restart")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    env.cloud.admin("POST", "/admin/config", {{"sleep", "01:00:00"}});
    pollNow(env);
    REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("PollInterval") == 3600; }));

    SECTION("a new token")
    {
        env.cloud.admin("POST", "/admin/targets", {{"id", env.deviceId}, {"token", "fresh"}});
        env.writeSpec(env.provisioning("target-token", "fresh", env.cloud.serverUrl()));
        // IdentityChanged wakes the client: no restart, no waiting out the hour.
        const bool token = CloudEnv::waitUntil([&] {
            auto polls = env.requests("/controller/v1/" + env.deviceId);
            return !polls.empty() && polls.back()["auth"] == "TargetToken";
        });
        INFO(env.clientLog());
        REQUIRE(token);
        CHECK(env.stringProp("ConnectionState") == "connected");
    }
    SECTION("a new server URL")
    {
        const std::string other = "https://127.0.0.1:" + env.cloud.serverUrl().substr(env.cloud.serverUrl().rfind(':') + 1);
        env.writeSpec(env.provisioning("mtls", "", other));
        const bool moved = CloudEnv::waitUntil([&] { return env.stringProp("ServerUrl") == other; });
        INFO(env.clientLog());
        REQUIRE(moved);
        const std::size_t polls = pollCount(env);
        pollNow(env);
        REQUIRE(CloudEnv::waitUntil([&] { return pollCount(env) > polls; }));
    }
}

TEST_CASE("a 401 says what is likely wrong with the credentials")
{
    CloudEnvOptions o;
    o.authMode = "target-token";
    o.token = "stale";
    CloudEnv env(o);
    env.cloud.admin("POST", "/admin/targets", {{"id", env.deviceId}, {"token", "current"}});
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "auth-failed"; }));
    const std::string e = env.stringProp("LastError");
    CHECK(contains(e, "HTTP 401"));
    CHECK(contains(e, "target token"));
    CHECK(contains(e, env.deviceId));
}

TEST_CASE("a certificate whose CN is not the device id is refused by the identity service at install")
{
    CloudEnvOptions o;
    o.startClient = false;
    CloudEnv env(o);
    auto identity = sdbus::createProxy(env.stack.bus(), "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1");
    std::string csr;
    identity->callMethod("CreateCertificateRequest")
        .onInterface("org.mbl.DeviceIdentity1")
        .withArguments(std::map<std::string, sdbus::Variant>{})
        .storeResultsTo(csr);
    const std::string foreign = env.cloud.signDeviceCsr(csr, "someone-else");
    const std::string e = callError([&] {
        identity->callMethod("InstallCertificate").onInterface("org.mbl.DeviceIdentity1").withArguments(foreign);
    });
    CHECK(contains(e, "org.mbl.Error.InvalidArgument"));
    CHECK(contains(e, "someone-else"));
    CHECK(contains(e, env.deviceId));
}

TEST_CASE("the status tells the truth: throttled, the real poll interval, no stale download progress")
{
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    SECTION("before the first poll the interval in effect is the configured default")
    {
        CloudEnvOptions o;
        o.config = {{"poll", {{"first_poll_spread_sec", 3600}, {"default_sleep", "00:07:00"}}}};
        CloudEnv env(o);
        CHECK(env.uintProp("PollInterval") == 420);
        CHECK(env.stringProp("ConnectionState") == "connecting");
        auto st = env.stack.runTool({mblctl, "cloud", "status"});
        CHECK(contains(st.out, "Poll interval:  420 s"));
    }
    SECTION("429 and 503 with Retry-After are throttled, 503 without is disconnected")
    {
        CloudEnv env;
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
        env.cloud.admin("POST", "/admin/faults", {{"status", 429}, {"status_count", 1000}});
        pollNow(env);
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "throttled"; }));
        env.cloud.admin("POST", "/admin/faults", {{"status", 503}, {"status_count", 1000}, {"retry_after", 1}});
        REQUIRE(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "HTTP 503, Retry-After"); }));
        CHECK(env.stringProp("ConnectionState") == "throttled");
        env.cloud.admin("POST", "/admin/faults", {{"status", 503}, {"status_count", 1000}});
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "disconnected"; }));
        auto st = env.stack.runTool({mblctl, "cloud", "status"});
        CHECK(contains(st.out, "Next attempt:"));
        env.cloud.admin("POST", "/admin/faults", json::object());
        REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }));
    }
    SECTION("download progress goes back once the download ends")
    {
        CloudEnv env;
        SignalRecorder sig;
        makeArtifact(env, "p.bin", 500000);
        const std::string id = deploy(env, {"p.bin"});
        auto dep = sig.waitFor("DeploymentRequested");
        REQUIRE(dep);
        auto fd = download(env, id, firstArtifact(*dep));
        CHECK(readFd(fd.get()).size() == 500000u);
        REQUIRE(sig.waitFor("DownloadFinished"));
        REQUIRE(CloudEnv::waitUntil([&] { return env.uintProp("ActiveDownloads") == 0; }));
        CHECK(env.uintProp("DownloadProgress") == 0);
        auto st = env.stack.runTool({mblctl, "cloud", "status"});
        CHECK(contains(st.out, "Download:       none"));
    }
}

TEST_CASE("mblctl status shows a cloud client in auth-failed as failed and exits non-zero")
{
    CloudEnvOptions o;
    o.authMode = "target-token";
    o.token = "wrong";
    CloudEnv env(o);
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "auth-failed"; }));
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    auto js = env.stack.runTool({mblctl, "--json", "status"});
    CHECK(js.status.code != 0);
    const json j = json::parse(js.out, nullptr, false);
    REQUIRE(j.is_array());
    bool seen = false;
    for (const auto& e : j) {
        if (e["service"] == "cloud-client") {
            seen = true;
            CHECK(e["healthy"] == false);
            CHECK(contains(e.value("problem", ""), "auth-failed"));
        }
    }
    CHECK(seen);
    auto text = env.stack.runTool({mblctl, "status"});
    CHECK(text.status.code != 0);
    CHECK(contains(text.out, "FAILED"));
}

TEST_CASE("each cancel is asked and answered once")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "once.bin", 1000);
    const std::string id = deploy(env, {"once.bin"});
    REQUIRE(sig.waitFor("DeploymentRequested"));
    env.cloud.admin("POST", "/admin/actions/" + id, {{"cancel", true}});
    pollNow(env);
    REQUIRE(sig.waitFor("CancelRequested"));
    feedback(env, id, "closed", "success", 0, 0, {"cancelled before the download"});
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "CANCELED"); }));
    pollAndWait(env);
    pollAndWait(env);
    CHECK(sig.count("CancelRequested") == 1);
    std::size_t answers = 0;
    for (const auto& r : env.requests("/cancelAction/" + id + "/feedback")) {
        answers += r["method"] == "POST" ? 1 : 0;
    }
    CHECK(answers == 1);
}

TEST_CASE("a download-only action's artifact is kept, and the later installation does not download it again")
{
    CloudEnv env;
    SignalRecorder sig;
    const std::string sha = makeArtifact(env, "later.bin", 400000);
    const std::string first = deploy(env, {"later.bin"}, {{"type", "downloadonly"}});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    CHECK(json::parse(dep->args[1])["download_only"] == true);
    auto fd = download(env, first, firstArtifact(*dep));
    CHECK(crypto::sha256Hex(readFd(fd.get())) == sha);
    REQUIRE(sig.waitFor("DownloadFinished"));
    feedback(env, first, "downloaded", "success");
    REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, first, "DOWNLOADED"); }));
    CHECK(artifactGets(env, "later.bin") == 1);

    const std::string second = deploy(env, {"later.bin"}, {{"type", "forced"}});
    auto install = sig.waitFor("DeploymentRequested", 2);
    REQUIRE(install);
    auto again = download(env, second, firstArtifact(*install));
    CHECK(crypto::sha256Hex(readFd(again.get())) == sha);
    auto done = sig.waitFor("DownloadFinished", 2);
    REQUIRE(done);
    CHECK(done->args[2] == "success");
    CHECK(contains(done->args[3], "kept on the device"));
    CHECK(artifactGets(env, "later.bin") == 1); // no second download
}

TEST_CASE("an open action is announced again after a restart of the cloud client")
{
    CloudEnv env;
    makeArtifact(env, "r.bin", 100);
    std::string id;
    {
        SignalRecorder sig;
        id = deploy(env, {"r.bin"});
        REQUIRE(sig.waitFor("DeploymentRequested"));
    }
    env.stack.stop("cloud-client");
    SignalRecorder after;
    env.startClient();
    auto dep = after.waitFor("DeploymentRequested");
    REQUIRE(dep);
    CHECK(dep->args[0] == id);
}

TEST_CASE("bad deployment documents close the action with a readable reason, and nothing is downloaded")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "bad.bin", 100);
    const std::string good = R"({"id":"%ID%","deployment":{"download":"forced","update":"forced","chunks":[)"
                             R"({"part":"os","name":"fw","version":"1","artifacts":[{"filename":"bad.bin","size":100,)"
                             R"("hashes":{"sha1":"%SHA1%","md5":"%MD5%","sha256":"%SHA256%"},)"
                             R"("_links":{"download-http":{"href":"%URL%"}}}]}]}})";
    struct Case {
        std::string what;
        std::string from, to;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"unknown handling type", R"("update":"forced")", R"("update":"whenever")", "expected skip, attempt or forced"},
        {"no download link", R"("download-http")", R"("md5sum-http")", "no 'download' or 'download-http' link"},
        {"a link to another scheme", "%URL%", "ftp://localhost/bad.bin", "scheme 'ftp'"},
        {"a link to another host", "%URL%", "https://evil.example:443/bad.bin", "another host (evil.example:443)"},
        {"a duplicated chunk", R"(]}]}})", R"(]},{"part":"os","name":"fw","version":"1","artifacts":[]}]}})",
         "appears twice"},
        {"a short sha256", "%SHA256%", "abcdef", "not 64 hexadecimal digits"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        // The bad document is in place before the action exists (the device may poll at any time).
        const std::string id = std::to_string(env.cloud.state()["actions"].size() + 1);
        std::string body = good;
        body.replace(body.find(c.from), c.from.size(), c.to);
        for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
                 {"%ID%", id},
                 {"%SHA1%", std::string(40, 'a')},
                 {"%MD5%", std::string(32, 'b')},
                 {"%SHA256%", std::string(64, 'c')},
                 {"%URL%", env.cloud.serverUrl() + "/DEFAULT/controller/v1/dev-01/softwaremodules/1/artifacts/bad.bin"}}) {
            for (auto at = body.find(k); at != std::string::npos; at = body.find(k)) {
                body.replace(at, k.size(), v);
            }
        }
        env.cloud.admin("POST", "/admin/faults", {{"deployment_body", body}});
        REQUIRE(deploy(env, {"bad.bin"}) == id);
        pollNow(env);
        REQUIRE(CloudEnv::waitUntil([&] { return actionStatus(env, id, "ERROR"); }));
        CHECK(contains(lastDetail(env, id), "refused by the device"));
        CHECK(contains(lastDetail(env, id), c.says));
        env.cloud.admin("POST", "/admin/faults", json::object());
    }
    CHECK(sig.count("DeploymentRequested") == 0);
    CHECK(artifactGets(env, "bad.bin") == 0);
    CHECK(env.stack.running("cloud-client"));
}

TEST_CASE("a 200 with an HTML body is not a deployment: nothing happens until a real document comes")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "h.bin", 100);
    env.cloud.admin("POST", "/admin/faults", {{"deployment_body", "<html><body><h1>502 Bad Gateway</h1></body></html>"},
                                              {"deployment_content_type", "text/html"}});
    const std::string id = deploy(env, {"h.bin"});
    REQUIRE(CloudEnv::waitUntil([&] { return contains(env.stringProp("LastError"), "HTML, not JSON"); }));
    pollAndWait(env);
    CHECK(sig.count("DeploymentRequested") == 0);
    CHECK(actionStatus(env, id, "RUNNING"));
    env.cloud.admin("POST", "/admin/faults", json::object());
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    CHECK(dep->args[0] == id);
}

TEST_CASE("an artifact that redirects in a loop ends the download with a named failure, without retries")
{
    CloudEnv env;
    SignalRecorder sig;
    makeArtifact(env, "loop.bin", 1000);
    const std::string id = deploy(env, {"loop.bin"});
    auto dep = sig.waitFor("DeploymentRequested");
    REQUIRE(dep);
    env.cloud.admin("POST", "/admin/faults", {{"artifact_redirect_loop", true}});
    auto fd = download(env, id, firstArtifact(*dep));
    CHECK(readFd(fd.get()).empty());
    auto done = sig.waitFor("DownloadFinished");
    REQUIRE(done);
    CHECK(done->args[2] == "failure");
    CHECK(contains(done->args[3], "redirect loop"));
    CHECK(artifactGets(env, "loop.bin") == 1);
}

