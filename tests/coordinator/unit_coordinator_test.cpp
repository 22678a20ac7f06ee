// SPDX-License-Identifier: Apache-2.0
// The coordinator's state machine without a bus: its peers are a recording fake
// that the test answers step by step, as the real services would.

#include "coordinator.h"

#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>

#include <map>

#include <deque>
#include <algorithm>
#include <fcntl.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::coordinator;

namespace {

struct FeedbackRecord {
    std::string action, execution, result;
    std::vector<std::string> details;
};

class FakePeers : public Peers {
public:
    // What the fake answers.
    std::string artifactBytes = "BUNDLE-BYTES";
    std::string manifest = R"({"version":"1.0.0","payloads":[{"name":"app1","type":"app","app":{"name":"hello","version":"1.0"}}]})";
    UpdateState update{"a", "a", "0.9", {{"a", "good", "0.9"}, {"b", "empty", ""}}};
    std::vector<AppInfo> apps;
    std::string cloudState = "connected";
    bool pingFails = false;

    // What the coordinator did.
    std::vector<FeedbackRecord> feedback;
    std::vector<std::string> calls;
    std::string bundleReceived;
    Callback<std::string> pendingInstall;
    int reboots = 0;
    int commits = 0;
    int markBads = 0;
    std::vector<std::string> removed;

    void download(const std::string& actionId, const std::string&, Callback<Fd> cb) override
    {
        calls.push_back("download " + actionId);
        int p[2];
        REQUIRE(pipe2(p, O_CLOEXEC) == 0);
        REQUIRE(write(p[1], artifactBytes.data(), artifactBytes.size()) == static_cast<ssize_t>(artifactBytes.size()));
        if (!holdDownloadOpen) {
            close(p[1]);
        } else {
            heldWriter = Fd{p[1]};
        }
        cb(Fd{p[0]});
    }
    bool holdDownloadOpen = false;
    Fd heldWriter;

    void reportFeedback(const std::string& actionId, const std::string& execution, const std::string& result,
                        std::uint32_t, std::uint32_t, const std::vector<std::string>& details, Done cb) override
    {
        feedback.push_back({actionId, execution, result, details});
        cb({});
    }
    void setAttributes(const std::string& ns, const std::vector<std::pair<std::string, std::string>>& attrs,
                       Done cb) override
    {
        for (const auto& [k, v] : attrs) {
            attributes[ns + "." + k] = v;
        }
        cb({});
    }
    void cloudConnectionState(Callback<std::string> cb) override { cb(cloudState); }
    void installBundle(Fd bundle, Callback<std::string> cb) override
    {
        calls.push_back("install");
        bundleFd = std::move(bundle);
        cb(std::string("u" + std::to_string(++installs)));
    }
    Fd bundleFd;
    int installs = 0;
    int downloads() const
    {
        return static_cast<int>(std::count_if(calls.begin(), calls.end(),
                                              [](const std::string& c) { return c.rfind("download ", 0) == 0; }));
    }
    // Reads what the coordinator relayed into the update service.
    std::string drainBundle()
    {
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = read(bundleFd.get(), buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }
    void operationManifest(const std::string&, Callback<std::string> cb) override { cb(manifest); }
    void openPayload(const std::string&, const std::string& payload, Callback<Fd> cb) override
    {
        calls.push_back("open " + payload);
        if (payload == "config" && !payloadText.empty()) {
            int p[2];
            REQUIRE(pipe2(p, O_CLOEXEC) == 0);
            REQUIRE(write(p[1], payloadText.data(), payloadText.size()) == static_cast<ssize_t>(payloadText.size()));
            close(p[1]);
            cb(Fd{p[0]});
            return;
        }
        cb(Fd{open("/dev/null", O_RDONLY | O_CLOEXEC)});
    }
    void updateState(Callback<UpdateState> cb) override { cb(update); }
    void commit(Done cb) override
    {
        ++commits;
        cb({});
    }
    void markBad(Done cb) override
    {
        ++markBads;
        cb({});
    }
    void installApp(Fd, const std::string& options, Callback<std::string> cb) override
    {
        calls.push_back("installApp " + options);
        // As the container manager does: the app is installed and started.
        auto o = nlohmann::json::parse(options);
        bool found = false;
        for (auto& a : apps) {
            if (a.name == o.value("name", "")) {
                a.version = o.value("version", "");
                a.state = installedAppState;
                found = true;
            }
        }
        if (!found) {
            apps.push_back({o.value("name", ""), o.value("version", ""), installedAppState});
        }
        cb(std::string("c" + std::to_string(++appInstalls)));
    }
    int appInstalls = 0;
    std::string installedAppState = "running"; // what an installed app does next
    void removeApp(const std::string& name, bool, Done cb) override
    {
        removed.push_back(name);
        cb({});
    }
    void listApps(Callback<std::vector<AppInfo>> cb) override { cb(apps); }
    // Settings of the cloud client and the container manager (replace semantics).
    std::map<std::string, std::string> settings{{"org.mbl.CloudClient1", "{}"}, {"org.mbl.ContainerManager1", "{}"}};
    std::string refuseSettingsOf; // this service answers ApplySettings with InvalidArgument
    std::vector<std::string> hostnames;
    std::map<std::string, std::string> attributes;
    std::string payloadText;      // what OpenPayload hands out ("" = /dev/null)
    void getSettings(const std::string& bus, Callback<std::string> cb) override { cb(settings[bus]); }
    void applySettings(const std::string& bus, const std::string& doc, Done cb) override
    {
        if (bus == refuseSettingsOf) {
            cb(unexpected(ErrorCode::InvalidArgument, "unknown key"));
            return;
        }
        settings[bus] = doc;
        cb({});
    }
    void setHostname(const std::string& name, Done cb) override
    {
        hostnames.push_back(name);
        cb({});
    }
    // By default the last install handed out is still running there.
    std::map<std::string, std::string> running;
    void runningOperation(const std::string& bus, Callback<std::string> cb) override
    {
        auto it = running.find(bus);
        if (it != running.end()) {
            cb(it->second);
            return;
        }
        cb(bus == "org.mbl.Update1" ? "u" + std::to_string(installs) : "c" + std::to_string(appInstalls));
    }
    void ping(const std::string& name, Done cb) override
    {
        cb(pingFails && name == "org.mbl.CloudClient1" ? Status{unexpected(ErrorCode::Failed, "no reply")} : Status{});
    }
    void reboot(Done cb) override
    {
        ++reboots;
        cb({});
    }
};

class RecordingListener : public Listener {
public:
    void propertiesChanged(const std::vector<std::string>&) override {}
    void operationCompleted(const std::string& id, bool success, const std::string& errorName,
                            const std::string& message) override
    {
        completed.push_back({id, success, errorName, message});
    }
    struct Done {
        std::string id;
        bool success;
        std::string errorName, message;
    };
    std::vector<Done> completed;
};

// Runs the loop until `until` holds or 3 s pass.
void runUntil(EventLoop& loop, const std::function<bool()>& until)
{
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!until() && std::chrono::steady_clock::now() < deadline) {
        loop.addTimer(std::chrono::milliseconds(5), [&loop] { loop.quit(); });
        loop.run();
    }
}

const char* kDeployment = R"({"action_id":"7","download":"forced","update":"forced","maintenance_window":null,
  "download_only":false,"install_allowed":true,
  "chunks":[{"part":"bApp","name":"bundle","version":"1.0","artifacts":[{"filename":"b.mblb","size":12,"sha256":"x"}]}]})";

struct Fixture {
    test::TempDir dir;
    EventLoop loop;
    FakePeers peers;
    RecordingListener listener;
    Settings settings;
    std::unique_ptr<Coordinator> c;
    Fixture()
    {
        settings.stateDir = dir.path() + "/coordinator";
        settings.rebootCommand = {"true"};
        settings.healthGrace = std::chrono::milliseconds(20);
        settings.healthTimeout = std::chrono::milliseconds(300);
        settings.peerCheckInterval = std::chrono::milliseconds(20);
        settings.downloadRetryBase = std::chrono::milliseconds(20);
        settings.downloadRetryMax = std::chrono::milliseconds(40);
        settings.connectedCheckInterval = std::chrono::milliseconds(10);
        settings.downloadResultWait = std::chrono::milliseconds(100);
        restart();
    }
    // A new coordinator on the same journal, as after a crash or a reboot.
    void restart()
    {
        c.reset();
        c = std::make_unique<Coordinator>(settings, peers, loop, listener);
        c->start();
    }
    bool hasFeedback(const std::string& execution, const std::string& result) const
    {
        for (const auto& f : peers.feedback) {
            if (f.execution == execution && f.result == result) {
                return true;
            }
        }
        return false;
    }
};

} // namespace

TEST_CASE("an apps-only cloud deployment streams the bundle into the update service, installs the app, reports closed/success")
{
    Fixture f;
    f.c->onDeploymentRequested("7", kDeployment);
    CHECK(f.c->state() == "downloading");
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    CHECK(f.peers.drainBundle() == "BUNDLE-BYTES");
    f.c->onUpdateCompleted("u1", true, "", "");
    CHECK(f.c->state() == "installing-apps");
    REQUIRE(f.peers.calls.back() == R"(installApp {"name":"hello","version":"1.0"})");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    CHECK(f.peers.reboots == 0);
    CHECK(f.hasFeedback("proceeding", "none"));
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "success");
    auto h = f.c->history(5);
    REQUIRE(h.size() == 1);
    CHECK(h[0]["state"] == "succeeded");
    CHECK_FALSE(fs::exists(f.settings.stateDir + "/current.json"));
}

TEST_CASE("a firmware deployment reboots, and after the reboot is health-checked, committed and reported")
{
    Fixture f;
    f.peers.manifest = R"({"version":"2.0.0","payloads":[{"name":"rootfs","type":"rootfs"}]})";
    f.peers.update = {"a", "b", "0.9", {{"a", "good", "0.9"}, {"b", "trial", "2.0.0"}}}; // armed
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    CHECK(f.c->state() == "rebooting");
    CHECK(f.peers.reboots == 1);
    CHECK(f.peers.commits == 0);

    // The device comes back in slot b.
    f.peers.update = {"b", "b", "2.0.0", {{"a", "good", "0.9"}, {"b", "trial", "2.0.0"}}};
    f.restart();
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.peers.commits == 1);
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "success");
}

TEST_CASE("a bootloader fallback after the reboot is reported as closed/failure, never success")
{
    Fixture f;
    f.peers.manifest = R"({"version":"2.0.0","payloads":[{"name":"rootfs","type":"rootfs"}]})";
    f.peers.update = {"a", "b", "0.9", {{"a", "good", "0.9"}, {"b", "trial", "2.0.0"}}};
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    REQUIRE(f.c->state() == "rebooting");
    // The trial boot failed: the bootloader went back to a.
    f.peers.update = {"a", "a", "0.9", {{"a", "good", "0.9"}, {"b", "bad", "2.0.0"}}};
    f.restart();
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.peers.commits == 0);
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "failure");
    CHECK(f.peers.feedback.back().details[0].find("rolled back") != std::string::npos);
}

TEST_CASE("a failed health check after the reboot marks the slot bad, reboots back and reports the failure")
{
    Fixture f;
    f.peers.manifest = R"({"version":"2.0.0","payloads":[{"name":"rootfs","type":"rootfs"},
        {"name":"app1","type":"app","app":{"name":"hello","version":"1.0"}}]})";
    f.peers.update = {"a", "b", "0.9", {{"a", "good", "0.9"}, {"b", "trial", "2.0.0"}}};
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    REQUIRE(f.c->state() == "rebooting");
    f.peers.update = {"b", "b", "2.0.0", {{"a", "good", "0.9"}, {"b", "trial", "2.0.0"}}};
    f.peers.apps = {{"hello", "1.0", "exited"}}; // the app does not run on the new firmware
    f.restart();
    runUntil(f.loop, [&] { return f.c->state() == "rolling-back"; });
    CHECK(f.peers.markBads == 1);
    CHECK(f.peers.reboots == 2);
    CHECK(f.peers.commits == 0);
    // Back in slot a.
    f.peers.update = {"a", "a", "0.9", {{"a", "good", "0.9"}, {"b", "bad", "2.0.0"}}};
    f.restart();
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    REQUIRE(f.peers.feedback.back().result == "failure");
    CHECK(f.peers.feedback.back().details[0].find("app hello is exited") != std::string::npos);
}

TEST_CASE("a coordinator killed while downloading starts the deployment again on restart")
{
    Fixture f;
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.peers.bundleFd.reset();
    f.restart(); // killed before the update service finished
    CHECK(f.c->state() == "downloading");
    runUntil(f.loop, [&] { return f.peers.installs == 2; });
    CHECK(f.c->status()["current"]["attempts"] == 2);
    f.c->onUpdateCompleted("u1", true, "", ""); // a late signal of the first attempt is ignored
    CHECK(f.c->state() == "downloading");
    f.c->onUpdateCompleted("u2", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    CHECK(f.peers.feedback.back().result == "success");
}

TEST_CASE("a cancel during the download is accepted and the update service gets a truncated stream")
{
    Fixture f;
    f.peers.holdDownloadOpen = true; // the download is still running
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onCancelRequested("7");
    runUntil(f.loop, [&] { return false; });
    CHECK(f.peers.drainBundle() == "BUNDLE-BYTES"); // and then end of stream, though the download had more
    f.c->onUpdateCompleted("u1", false, "org.mbl.Error.InvalidArgument", "truncated bundle");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "success"); // the cancel was confirmed
    for (const auto& fb : f.peers.feedback) {
        CHECK_FALSE((fb.execution == "closed" && fb.result == "failure"));
    }
    CHECK(f.c->history(1)[0]["state"] == "cancelled");
}

TEST_CASE("a cancel once apps are installing is rejected and the deployment goes on")
{
    Fixture f;
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    REQUIRE(f.c->state() == "installing-apps");
    f.c->onCancelRequested("7");
    CHECK(f.peers.feedback.back().execution == "rejected");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.peers.feedback.back().result == "success");
}

TEST_CASE("a broken deployment or a refused bundle ends in closed/failure with a readable reason")
{
    Fixture f;
    f.c->onDeploymentRequested("8", "{not json");
    REQUIRE(f.peers.feedback.back().result == "failure");
    CHECK(f.peers.feedback.back().details[0] == "the deployment is not valid JSON");
    f.c->onDeploymentRequested("9", R"({"chunks":[]})");
    CHECK(f.peers.feedback.back().details[0] == "deployment names no artifact");

    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", false, "org.mbl.Error.SignatureInvalid", "signed by an unknown CA");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    CHECK(f.peers.feedback.back().result == "failure");
    CHECK(f.peers.feedback.back().details[0] == "the bundle was refused: signed by an unknown CA");
    CHECK(f.c->lastError() == "org.mbl.Error.SignatureInvalid: the bundle was refused: signed by an unknown CA");
}

TEST_CASE("a local bundle while an operation runs is refused with Busy; an app the deployment drops is removed")
{
    Fixture f;
    f.peers.apps = {{"old-app", "3.0", "running"}};
    f.c->onDeploymentRequested("7", kDeployment);
    auto busy = f.c->installBundle(Fd{open("/dev/null", O_RDONLY | O_CLOEXEC)});
    REQUIRE_FALSE(busy);
    CHECK(busy.error().code == ErrorCode::Busy);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    CHECK(f.peers.removed == std::vector<std::string>{"old-app"});
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
}

TEST_CASE("the same action sent again after it closed is not carried out twice")
{
    Fixture f;
    f.peers.apps = {{"hello", "1.0", "running"}}; // already what the deployment wants
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    CHECK(f.peers.appInstalls == 0); // desired state already reached
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.c->state() == "idle");
    CHECK(f.peers.installs == 1);
    CHECK(f.peers.feedback.back().details[0].rfind("already carried out", 0) == 0);
}

TEST_CASE("with the maintenance window closed the bundle is downloaded, and installed once it opens")
{
    Fixture f;
    auto d = nlohmann::json::parse(kDeployment);
    d["maintenance_window"] = "unavailable";
    d["install_allowed"] = false;
    f.c->onDeploymentRequested("7", d.dump());
    runUntil(f.loop, [&] { return f.c->state() == "waiting"; });
    CHECK(f.hasFeedback("downloaded", "none"));
    CHECK(f.peers.installs == 0);
    f.restart(); // waiting survives a restart
    CHECK(f.c->state() == "waiting");
    d["maintenance_window"] = "available";
    d["install_allowed"] = true;
    f.c->onDeploymentRequested("7", d.dump());
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    CHECK(f.peers.drainBundle() == "BUNDLE-BYTES");
    f.c->onUpdateCompleted("u1", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.peers.feedback.back().result == "success");
}

TEST_CASE("a download-only action is stored and reported downloaded, then closed")
{
    Fixture f;
    auto d = nlohmann::json::parse(kDeployment);
    d["download_only"] = true;
    d["install_allowed"] = false;
    f.c->onDeploymentRequested("7", d.dump());
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    CHECK(f.hasFeedback("downloaded", "none"));
    CHECK(f.peers.installs == 0);
    CHECK(f.c->history(1)[0]["state"] == "succeeded");
}

TEST_CASE("an apps-only deployment is reported successful only once its apps run; an app that never runs fails it")
{
    Fixture f;
    f.peers.installedAppState = "exited";
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    CHECK(f.c->state() == "checking-apps");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "failure");
    CHECK(f.peers.feedback.back().details[0].find("app hello is exited") != std::string::npos);
    CHECK(f.peers.reboots == 0);
}

TEST_CASE("an update service that restarts during the install is noticed and the deployment starts again; a "
          "container manager that restarts during an app install gets the app again")
{
    Fixture f;
    f.peers.manifest = R"({"version":"2.0.0","payloads":[{"name":"rootfs","type":"rootfs"},
        {"name":"app1","type":"app","app":{"name":"hello","version":"1.0"}}]})";
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.installs == 1; });
    f.peers.running["org.mbl.Update1"] = ""; // killed: its restart forgot u1
    runUntil(f.loop, [&] { return f.peers.installs == 2; });
    CHECK(f.peers.installs == 2);
    CHECK(f.c->status()["current"]["attempts"] == 2);
    f.peers.running.erase("org.mbl.Update1");
    f.c->onUpdateCompleted("u2", true, "", "");
    REQUIRE(f.c->state() == "installing-apps");
    runUntil(f.loop, [&] { return f.peers.appInstalls == 1; });
    f.peers.running["org.mbl.ContainerManager1"] = ""; // killed: its restart removed the half-installed app
    f.peers.apps.clear();
    runUntil(f.loop, [&] { return f.peers.appInstalls == 2; });
    CHECK(f.peers.appInstalls == 2);
    f.peers.running.erase("org.mbl.ContainerManager1");
    f.c->onAppInstallCompleted("c2", "hello", true, "", "");
    CHECK(f.c->state() == "rebooting");
    bool told = false;
    for (const auto& fb : f.peers.feedback) {
        for (const auto& d : fb.details) {
            told = told || d.find("the update service stopped during the install") != std::string::npos;
        }
    }
    CHECK(told);
}

TEST_CASE("a config payload is applied through the services that own each setting and its version published; a "
          "refusal by one restores the others")
{
    const char* manifest = R"({"version":"1.0.0","payloads":[{"name":"config","type":"config"}]})";
    const std::string doc = R"({"version":"cfg-7","cloud":{"poll_interval_sec":60},
        "containers":{"apps":{"hello":{"env":{"MODE":"fast"}}}},"hostname":"line7-unit42"})";
    SECTION("applied")
    {
        Fixture f;
        f.peers.manifest = manifest;
        f.peers.payloadText = doc;
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onUpdateCompleted("u1", true, "", "");
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.settings["org.mbl.CloudClient1"] == R"({"poll_interval_sec":60})");
        CHECK(f.peers.settings["org.mbl.ContainerManager1"] == R"({"apps":{"hello":{"env":{"MODE":"fast"}}}})");
        CHECK(f.peers.hostnames == std::vector<std::string>{"line7-unit42"});
        CHECK(f.peers.attributes["config.version"] == "cfg-7");
        CHECK(f.peers.feedback.back().result == "success");
    }
    SECTION("one part refused: all restored, closed/failure")
    {
        Fixture f;
        f.peers.manifest = manifest;
        f.peers.payloadText = doc;
        f.peers.settings["org.mbl.CloudClient1"] = R"({"poll_interval_sec":300})";
        f.peers.refuseSettingsOf = "org.mbl.ContainerManager1";
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onUpdateCompleted("u1", true, "", "");
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.settings["org.mbl.CloudClient1"] == R"({"poll_interval_sec":300})");
        CHECK(f.peers.hostnames.empty());
        CHECK(f.peers.attributes.count("config.version") == 0);
        REQUIRE(f.peers.feedback.back().result == "failure");
        CHECK(f.peers.feedback.back().details[0].find("previous configuration was restored") != std::string::npos);
    }
    SECTION("an unknown key changes nothing")
    {
        Fixture f;
        f.peers.manifest = manifest;
        f.peers.payloadText = R"({"version":"x","ntp":{"server":"a"}})";
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onUpdateCompleted("u1", true, "", "");
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.settings["org.mbl.CloudClient1"] == "{}");
        REQUIRE(f.peers.feedback.back().result == "failure");
        CHECK(f.peers.feedback.back().details[0].find("unknown key 'ntp'") != std::string::npos);
    }
}

TEST_CASE("a download the network interrupted waits for the server, is fetched again from the start and succeeds")
{
    Fixture f;
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    (void)f.peers.drainBundle();
    // The cloud client gave up resuming; the update service saw a short bundle.
    f.peers.cloudState = "disconnected";
    f.c->onDownloadFinished("7", "b.mblb", "interrupted", "gave up after 6 attempts: cannot reach localhost:1");
    f.c->onUpdateCompleted("u1", false, "org.mbl.Error.InvalidArgument", "the bundle is truncated inside 'rootfs'");
    CHECK(f.c->state() == "waiting-network");
    CHECK(f.c->step().find("cannot reach localhost:1") != std::string::npos);
    CHECK(f.peers.feedback.back().execution == "proceeding");
    CHECK(f.peers.feedback.back().details[0].find("download interrupted") != std::string::npos);
    // Offline: it keeps waiting, and a restart of the coordinator keeps it waiting.
    runUntil(f.loop, [] { return false; });
    CHECK(f.c->state() == "waiting-network");
    f.restart();
    runUntil(f.loop, [] { return false; });
    CHECK(f.c->state() == "waiting-network");
    CHECK(f.peers.downloads() == 1);
    // Back online: downloaded and installed again, then the deployment goes on.
    f.peers.cloudState = "connected";
    runUntil(f.loop, [&] { return f.peers.installs == 2; });
    REQUIRE(f.peers.downloads() == 2);
    CHECK(f.c->state() == "downloading");
    CHECK(f.peers.drainBundle() == "BUNDLE-BYTES");
    f.c->onUpdateCompleted("u2", true, "", "");
    f.c->onAppInstallCompleted("c1", "hello", true, "", "");
    runUntil(f.loop, [&] { return f.c->state() == "idle"; });
    REQUIRE(f.peers.feedback.back().execution == "closed");
    CHECK(f.peers.feedback.back().result == "success");
}

TEST_CASE("a stream cut with no word from the cloud client (it restarted) is fetched again too")
{
    Fixture f;
    f.c->onDeploymentRequested("7", kDeployment);
    runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
    f.c->onUpdateCompleted("u1", false, "org.mbl.Error.Timeout", "no bundle data arrived for 120 s");
    CHECK(f.c->state() == "downloading"); // waits a moment for DownloadFinished
    runUntil(f.loop, [&] { return f.peers.downloads() == 2; });
    CHECK(f.peers.downloads() == 2);
    CHECK(f.c->state() == "downloading");
}

TEST_CASE("an artifact that failed its checks, or a bundle refused for itself, is not fetched again")
{
    SECTION("hash mismatch")
    {
        Fixture f;
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onDownloadFinished("7", "b.mblb", "failure", "SHA-256 mismatch for b.mblb: expected x, got y");
        f.c->onUpdateCompleted("u1", false, "org.mbl.Error.InvalidArgument", "the bundle is truncated inside 'rootfs'");
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.downloads() == 1);
        REQUIRE(f.peers.feedback.back().result == "failure");
        CHECK(f.peers.feedback.back().details[0] == "the artifact failed its checks: SHA-256 mismatch for b.mblb: "
                                                    "expected x, got y");
    }
    SECTION("the update service stopped reading a bundle it refused")
    {
        Fixture f;
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onUpdateCompleted("u1", false, "org.mbl.Error.InvalidArgument", "not a valid tar archive");
        f.c->onDownloadFinished("7", "b.mblb", "cancelled", "the reader closed the stream");
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.downloads() == 1);
        REQUIRE(f.peers.feedback.back().result == "failure");
        CHECK(f.peers.feedback.back().details[0] == "the bundle was refused: not a valid tar archive");
    }
}

TEST_CASE("network retries are bounded, and a cancel while waiting for the network ends the deployment")
{
    SECTION("bounded")
    {
        Fixture f;
        f.settings.downloadRetries = 2;
        f.restart();
        f.c->onDeploymentRequested("7", kDeployment);
        for (int i = 1; i <= 3; ++i) {
            runUntil(f.loop, [&] { return f.peers.installs == i; });
            REQUIRE(f.peers.installs == i);
            f.c->onDownloadFinished("7", "b.mblb", "interrupted", "transfer ended early");
            f.c->onUpdateCompleted("u" + std::to_string(i), false, "org.mbl.Error.Io", "read error");
        }
        runUntil(f.loop, [&] { return f.c->state() == "idle"; });
        CHECK(f.peers.downloads() == 3);
        REQUIRE(f.peers.feedback.back().result == "failure");
        CHECK(f.peers.feedback.back().details[0] ==
              "download interrupted 3 times; the last time: transfer ended early");
    }
    SECTION("cancel")
    {
        Fixture f;
        f.peers.cloudState = "disconnected";
        f.c->onDeploymentRequested("7", kDeployment);
        runUntil(f.loop, [&] { return f.peers.bundleFd.valid(); });
        f.c->onDownloadFinished("7", "b.mblb", "interrupted", "cannot reach the server");
        f.c->onUpdateCompleted("u1", false, "org.mbl.Error.Io", "read error");
        REQUIRE(f.c->state() == "waiting-network");
        f.c->onCancelRequested("7");
        CHECK(f.c->state() == "idle");
        CHECK(f.peers.feedback.back().execution == "closed");
        CHECK(f.peers.feedback.back().result == "success"); // the cancel is confirmed
        CHECK(f.c->history(1)[0]["state"] == "cancelled");
        CHECK(f.peers.downloads() == 1);
    }
}
