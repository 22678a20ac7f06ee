// SPDX-License-Identifier: Apache-2.0
// End to end: deployments created on the DDI test server (behind nginx with
// mutual TLS) carried out by the five real daemons on a private bus, with real
// runc containers, real signed bundles and the simulated reboot of world.h.

#include "world.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fcntl.h>
#include <map>
#include <optional>

using namespace mbl;
using namespace mbl::test;
using namespace mbl::test::e2e;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::vector<std::string> kServe = {"sh", "-c", "echo serving $0; while true; do sleep 1; done", "hello"};

bool appRunning(World& w, const std::string& name, const std::string& version)
{
    for (const auto& a : w.apps()) {
        if (a.name == name && a.version == version && a.state == "running") {
            return true;
        }
    }
    return false;
}

std::string describe(World& w, const std::string& action)
{
    std::string out = "server action " + action + ": " + w.actionStatus(action) + "\n";
    for (const auto& d : w.feedbackDetails(action)) {
        out += "  " + d + "\n";
    }
    out += "coordinator log:\n" + w.stack.log("coordinator");
    return out;
}

bool closedWith(World& w, const std::string& action, const std::string& status, std::chrono::milliseconds timeout)
{
    // Any final state ends the wait: a wrong one fails at once.
    w.runUntil(
        [&] {
            const auto st = w.actionStatus(action);
            return st == "FINISHED" || st == "ERROR" || st == "CANCELED" || st == "DOWNLOADED";
        },
        timeout);
    return w.actionStatus(action) == status;
}

void requireClosed(World& w, const std::string& action, const std::string& status, std::chrono::milliseconds timeout)
{
    if (!closedWith(w, action, status, timeout)) {
        FAIL("action " << action << " is not " << status << "\n" << describe(w, action) << "\ncloud client log:\n"
                       << w.stack.log("cloud-client") << "\nupdate log:\n" << w.stack.log("update"));
    }
}

void requireEventually(World& w, const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                       const std::string& what, const std::string& action)
{
    if (!w.runUntil(pred, timeout)) {
        std::string apps;
        for (const auto& a : w.apps()) {
            apps += " " + a.name + "@" + a.version + ":" + a.state;
        }
        FAIL(what << " did not happen; booted slot " << w.bootedSlot() << ", boots " << w.device->boots << ", apps"
                  << apps << "\n" << describe(w, action) << "\nupdate log:\n" << w.stack.log("update")
                  << "\ncontainer manager log:\n" << w.stack.log("container-manager"));
    }
}

// No staged payloads left once an operation is over (staging keeps at most the
// last completed install's payloads until the next one).
std::size_t stagedOperations(World& w)
{
    auto r = mbl::run({"sh", "-c", "ls -1 '" + w.stack.root() + "/var/lib/mbl/update/staging' 2>/dev/null | wc -l"});
    return r ? std::stoul(r->out) : 0;
}

} // namespace

TEST_CASE("a firmware and app deployment from the server ends with the new slot committed, the app running and "
          "closed/success on the server")
{
    World w;
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto bundle =
        w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw-2.0.0.mblb");
    const auto action = w.deploy(bundle);
    w.pollNow();
    requireClosed(w, action, "FINISHED", 180s);

    CHECK(w.device->boots == 1);
    CHECK(w.bootedSlot() == "b");
    auto env = w.bootEnv();
    CHECK(env["BOOT_ORDER"].rfind("B", 0) == 0); // committed: slot b boots first from now on
    CHECK(appRunning(w, "hello", "1.0.0"));
    CHECK(w.runcContainers().size() == 1);
    // The server heard the steps, in order, and the truth at the end.
    const auto details = w.feedbackDetails(action);
    REQUIRE(!details.empty());
    CHECK(details.back().find("closed/success") == 0);
    bool sawReboot = false;
    for (const auto& d : details) {
        sawReboot = sawReboot || d.find("rebooting into the new firmware") != std::string::npos;
    }
    CHECK(sawReboot);
    auto hist = w.coordinatorHistory(1);
    REQUIRE(hist.size() == 1);
    CHECK(hist[0]["result"]["success"] == true);
    CHECK(w.coordinatorString("State") == "idle");

    // Re-sending the same deployment is a no-op: nothing reinstalled, no second reboot.
    const auto again = w.deploy(bundle);
    w.pollNow();
    requireClosed(w, again, "FINISHED", 120s);
    CHECK(w.device->boots == 2); // a second bundle of the same version still goes through the slot (A/B)
}

TEST_CASE("an apps-only deployment installs and starts the app without a reboot; a later deployment that does not "
          "name it keeps it, unless the server marks the deployment as the complete app set")
{
    World w;
    w.startAll();
    const auto v1 = w.appImage("hello", "1.0.0", kServe);
    const auto b1 = w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", v1}}, ""}, "apps-1.mblb");
    const auto a1 = w.deploy(b1);
    w.pollNow();
    requireClosed(w, a1, "FINISHED", 120s);
    CHECK(w.device->boots == 0);
    CHECK(w.bootedSlot() == "a");
    requireEventually(w, [&] { return appRunning(w, "hello", "1.0.0"); }, 1s, "hello 1.0.0 running", a1);

    // Version 2 of the app and a new one, switched together.
    const auto v2 = w.appImage("hello", "2.0.0", kServe);
    const auto other = w.appImage("other", "1.0.0", kServe);
    const auto b2 = w.bundle({"1.2.0", 1, "", {{"hello@2.0.0", v2}, {"other@1.0.0", other}}, ""}, "apps-2.mblb");
    const auto a2 = w.deploy(b2);
    w.pollNow();
    requireClosed(w, a2, "FINISHED", 120s);
    CHECK(appRunning(w, "hello", "2.0.0"));
    CHECK(appRunning(w, "other", "1.0.0"));

    // A deployment that only names "other": it adds and updates, it removes nothing.
    const auto b3 = w.bundle({"1.3.0", 1, "", {{"other@1.0.0", other}}, ""}, "apps-3.mblb");
    const auto a3 = w.deploy(b3);
    w.pollNow();
    requireClosed(w, a3, "FINISHED", 120s);
    CHECK(appRunning(w, "hello", "2.0.0"));
    CHECK(w.apps().size() == 2);

    // The same, marked by the server as the complete set of apps: hello goes (data kept).
    const auto a4 = w.deploy(b3, {{"chunks", {{{"part", "bundle"}, {"name", "apps-3.mblb"}, {"version", "1"},
                                               {"artifacts", {"apps-3.mblb"}},
                                               {"metadata", {{{"key", "mbl.complete-app-set"}, {"value", "true"}}}}}}}});
    w.pollNow();
    requireClosed(w, a4, "FINISHED", 120s);
    auto apps = w.apps();
    REQUIRE(apps.size() == 1);
    CHECK(apps[0].name == "other");
    CHECK(w.runcContainers().size() == 1);
    CHECK(w.feedbackDetails(a4).back().find("removed the apps the deployment does not name: hello (data kept)") !=
          std::string::npos);
    CHECK(fs::exists(w.stack.root() + "/var/lib/mbl/apps/hello/data"));
    CHECK(w.device->boots == 0);
}

TEST_CASE("firmware that fails its health check after the reboot is marked bad, the device reboots back and the "
          "server hears closed/failure")
{
    World w{WorldOptions{8u << 20, {{"health_timeout_ms", 4000}}, {}, {}, {}}};
    w.startAll();
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {}, ""}, "fw.mblb");
    const auto action = w.deploy(bundle);
    w.pollNow();
    // The server becomes unreachable for the device once the new slot boots: the
    // health check (the cloud must be reachable) cannot pass.
    requireEventually(w, [&] { return w.rebootRequested(); }, 120s, "the reboot request", action);
    w.cloud.admin("POST", "/admin/faults", {{"poll_body", "{}"}, {"poll_status", 503}});
    REQUIRE(w.simulateReboot() == "b");
    requireEventually(w, [&] { return w.device->boots == 2; }, 60s, "the reboot back", action);
    CHECK(w.bootedSlot() == "a");
    w.cloud.admin("POST", "/admin/faults", json::object());
    w.pollNow();
    requireClosed(w, action, "ERROR", 60s);
    const auto details = w.feedbackDetails(action);
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(details.back().find("health check") != std::string::npos);
    // Slot a is what boots; b is never tried again.
    auto env = w.bootEnv();
    CHECK(env["BOOT_ORDER"].rfind("A", 0) == 0);
    CHECK(w.coordinatorString("State") == "idle");
}

TEST_CASE("an artifact that is not a signed bundle ends closed/failure with the reason and changes nothing")
{
    World w;
    w.startAll();
    const std::string junk = w.work.path() + "/not-a-bundle.mblb";
    update::writeFile(junk, std::string(300000, 'x'));
    const auto envBefore = w.bootEnv();
    const auto action = w.deploy(junk);
    w.pollNow();
    requireClosed(w, action, "ERROR", 60s);
    const auto details = w.feedbackDetails(action);
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(w.bootEnv() == envBefore);
    CHECK(w.device->boots == 0);
    CHECK(w.apps().empty());
    CHECK(stagedOperations(w) == 0);
}

namespace {

// An app that reads the running rootfs's /etc/os-release (bind-mounted, read-only)
// and refuses to run on firmware 2.0.0: what an app the new rootfs breaks looks like
// in this world (world.h says what stands for the rootfs).
const std::vector<std::string> kRefuses2 = {
    "sh", "-c",
    "if grep -q VERSION_ID=2.0.0 /etc/host-os-release; then echo 'cannot run on firmware 2.0.0'; exit 1; fi; "
    "echo serving; while true; do sleep 1; done"};

// The gate gives a broken app 15 s to come up (the container manager's back-off
// restarts it in between).
WorldOptions breakableWorld()
{
    WorldOptions o;
    o.coordinator = {{"health_timeout_ms", 15000}};
    return o;
}

// Installs "sensor" by hand, bind-mounting the running rootfs's os-release.
void installSensor(World& w)
{
    const auto image = w.appImage("sensor", "1.0.0", kRefuses2);
    w.installAppByHand(image, {{"name", "sensor"},
                               {"version", "1.0.0"},
                               {"mounts", {{{"source", w.stack.root() + "/etc/os-release"},
                                            {"destination", "/etc/host-os-release"}}}}});
}

void allowOsReleaseMount(World& w)
{
    // containers.json: the device policy lets apps bind the os-release file.
    auto cfg = json::parse(*fs::readFile(w.stack.root() + "/etc/mbl/containers.json"));
    cfg["policy"]["allowed_mounts"] = {w.stack.root() + "/etc/os-release"};
    (void)fs::writeFileAtomic(w.stack.root() + "/etc/mbl/containers.json", cfg.dump(2), 0644);
}

} // namespace

TEST_CASE("a firmware-only update whose new rootfs breaks an installed app is rolled back, and the server hears "
          "closed/failure naming the app")
{
    World w{breakableWorld()};
    allowOsReleaseMount(w);
    w.startAll();
    installSensor(w);
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {}, ""}, "fw-only.mblb");
    const auto action = w.deploy(bundle);
    w.pollNow();
    requireClosed(w, action, "ERROR", 240s);
    const auto details = w.feedbackDetails(action);
    INFO(describe(w, action));
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(details.back().find("failed its health check: app sensor") != std::string::npos);
    CHECK(w.device->boots == 2); // into the new slot and back
    CHECK(w.bootedSlot() == "a");
    CHECK(w.osRelease() == "VERSION_ID=1.0.0");
    CHECK(w.bootEnv()["BOOT_ORDER"].rfind("A", 0) == 0);
    requireEventually(w, [&] { return appRunning(w, "sensor", "1.0.0"); }, 60s, "sensor running again", action);
    CHECK(stagedOperations(w) == 0);
}

TEST_CASE("several bundles in one deployment are one transaction: one reboot, everything committed together")
{
    World w;
    w.startAll();
    const auto fw = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {}, ""}, "fw.mblb");
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto other = w.appImage("other", "1.0.0", kServe);
    const auto apps = w.bundle({"2.0.0", 1, "", {{"hello@1.0.0", app}, {"other@1.0.0", other}}, ""}, "apps.mblb");
    const auto action = w.deploy(std::vector<std::string>{fw, apps}, json::object());
    w.pollNow();
    requireClosed(w, action, "FINISHED", 240s);
    CHECK(w.device->boots == 1);
    CHECK(w.bootedSlot() == "b");
    CHECK(w.bootEnv()["BOOT_ORDER"].rfind("B", 0) == 0);
    CHECK(appRunning(w, "hello", "1.0.0"));
    CHECK(appRunning(w, "other", "1.0.0"));
    CHECK(stagedOperations(w) == 0);
    CHECK(w.feedbackDetails(action).back().find("firmware 2.0.0 committed in slot b") != std::string::npos);
}

TEST_CASE("a deployment carrying two rootfs payloads is refused before anything is armed or changed")
{
    World w;
    w.startAll();
    const auto fw1 = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {}, ""}, "fw-2.mblb");
    const auto fw2 = w.bundle({"3.0.0", 1, w.rootfsImage("3.0.0"), {}, ""}, "fw-3.mblb");
    const auto envBefore = w.bootEnv();
    const auto action = w.deploy(std::vector<std::string>{fw1, fw2}, json::object());
    w.pollNow();
    requireClosed(w, action, "ERROR", 240s);
    CHECK(w.feedbackDetails(action).back().find("two rootfs payloads (fw-2.mblb and fw-3.mblb)") != std::string::npos);
    CHECK(w.bootEnv() == envBefore);
    CHECK(w.device->boots == 0);
    CHECK(stagedOperations(w) == 0);
}

TEST_CASE("a deployment whose second bundle fails verification arms nothing, changes nothing and releases the first")
{
    World w;
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto fw = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw.mblb");
    const std::string junk = w.work.path() + "/second.mblb";
    update::writeFile(junk, std::string(200000, 'x'));
    const auto envBefore = w.bootEnv();
    const auto action = w.deploy(std::vector<std::string>{fw, junk}, json::object());
    w.pollNow();
    requireClosed(w, action, "ERROR", 240s);
    INFO(describe(w, action));
    const auto details = w.feedbackDetails(action);
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(details.back().find("second.mblb") != std::string::npos);
    CHECK(w.bootEnv() == envBefore);
    CHECK(w.device->boots == 0);
    CHECK(w.apps().empty());
    CHECK(w.runcContainers().empty());
    CHECK(stagedOperations(w) == 0);
}

TEST_CASE("one app of a multi-app deployment that does not come up takes every app of the deployment back to its "
          "previous version, and the server hears which app failed")
{
    World w{WorldOptions{8u << 20, {{"health_timeout_ms", 6000}, {"health_grace_ms", 1000}}, {}, {}, {}}};
    w.startAll();
    const auto v1 = w.appImage("hello", "1.0.0", kServe);
    const auto a1 = w.deploy(w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", v1}}, ""}, "apps-1.mblb"));
    w.pollNow();
    requireClosed(w, a1, "FINISHED", 120s);
    requireEventually(w, [&] { return appRunning(w, "hello", "1.0.0"); }, 30s, "hello 1.0.0 running", a1);

    const auto v2 = w.appImage("hello", "2.0.0", kServe);
    const auto crasher = w.appImage("crasher", "1.0.0", {"sh", "-c", "echo cannot start; exit 3"});
    const auto b2 = w.bundle({"1.2.0", 1, "", {{"hello@2.0.0", v2}, {"crasher@1.0.0", crasher}}, ""}, "apps-2.mblb");
    const auto a2 = w.deploy(b2);
    w.pollNow();
    requireClosed(w, a2, "ERROR", 180s);
    INFO(describe(w, a2));
    const auto details = w.feedbackDetails(a2);
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(details.back().find("app crasher") != std::string::npos);
    CHECK(details.back().find("app hello") == std::string::npos); // hello 2.0.0 was not what failed
    requireEventually(w, [&] { return appRunning(w, "hello", "1.0.0"); }, 60s, "hello 1.0.0 running again", a2);
    for (const auto& a : w.apps()) {
        CHECK(a.name != "crasher");
    }
    CHECK(w.runcContainers().size() == 1);
    CHECK(stagedOperations(w) == 0);
    CHECK(w.coordinatorString("State") == "idle");
}

TEST_CASE("with the maintenance window closed the device downloads and waits, installs nothing and reports no "
          "outcome; once the server opens the window it installs and reports success")
{
    World w;
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto bundle = w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", app}}, ""}, "apps.mblb");
    const auto action = w.deploy(bundle, {{"maintenanceWindow", "unavailable"}});
    w.pollNow();
    requireEventually(w, [&] { return w.coordinatorString("State") == "waiting"; }, 120s, "waiting", action);
    CHECK(w.actionStatus(action) == "RUNNING");
    for (const auto& d : w.feedbackDetails(action)) {
        CHECK(d.find("closed/") != 0);
    }
    CHECK(w.apps().empty());
    w.cloud.admin("POST", "/admin/actions/" + action, {{"maintenanceWindow", "available"}});
    w.pollNow();
    requireClosed(w, action, "FINISHED", 120s);
    CHECK(appRunning(w, "hello", "1.0.0"));
    CHECK(w.device->boots == 0);
}

TEST_CASE("mblctl install of a firmware and app bundle goes through the reboot, the health gate and the commit, "
          "with progress during the slot write")
{
    World w;
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0", 6u << 20), {{"hello@1.0.0", app}}, ""},
                                 "local.mblb");
    const std::string out = w.work.path() + "/mblctl.out";
    Fd outFd{::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
    SpawnOptions so;
    so.env = w.stack.clientEnv();
    so.stdoutFd = outFd.get();
    so.stderrFd = outFd.get();
    so.dieWithParent = true;
    auto child = Child::spawn({buildRoot() + "/services/mblctl/mblctl", "install", bundle}, so);
    REQUIRE(child);
    std::optional<ExitStatus> exit;
    const bool ended = w.runUntil([&] { return (exit = child->tryWait()).has_value(); }, 240s);
    const auto read = fs::readFile(out);
    const std::string printed = read ? *read : std::string();
    INFO("mblctl printed:\n" << printed << "\ncoordinator log:\n" << w.stack.log("coordinator"));
    REQUIRE(ended);
    CHECK(exit->code == 0);
    CHECK(printed.find("done: firmware 2.0.0 committed in slot b") != std::string::npos);
    CHECK(printed.find("the device reboots into the new firmware") != std::string::npos);
    CHECK(w.device->boots == 1);
    CHECK(w.bootedSlot() == "b");
    CHECK(w.bootEnv()["BOOT_ORDER"].rfind("B", 0) == 0);
    CHECK(appRunning(w, "hello", "1.0.0"));
    // Progress lines while the slot is written: more than one percentage, rising.
    std::vector<int> during;
    for (const auto& line : str::split(printed, '\n')) {
        if (line.find("written and verified") != std::string::npos) {
            during.push_back(std::atoi(line.c_str()));
        }
    }
    REQUIRE(during.size() >= 2);
    CHECK(std::is_sorted(during.begin(), during.end()));
    CHECK(during.front() < during.back());
    auto hist = w.coordinatorHistory(1);
    REQUIRE(hist.size() == 1);
    CHECK(hist[0]["source"] == "local");
    CHECK(hist[0]["result"]["success"] == true);
}

TEST_CASE("mblctl install of an apps bundle keeps apps installed by hand; with --replace-apps it removes the apps the "
          "bundle does not name (data kept)")
{
    World w;
    w.startAll();
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    w.installAppByHand(w.appImage("byhand", "1.0.0", kServe), {{"name", "byhand"}, {"version", "1.0.0"}});
    const auto bundle = w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", w.appImage("hello", "1.0.0", kServe)}}, ""},
                                 "apps.mblb");
    auto r = w.stack.runTool({mblctl, "install", bundle});
    INFO("mblctl: " << r.out << r.err << "\ncoordinator log:\n" << w.stack.log("coordinator"));
    REQUIRE(r.status.code == 0);
    CHECK(appRunning(w, "hello", "1.0.0"));
    CHECK(appRunning(w, "byhand", "1.0.0"));
    CHECK(w.runcContainers().size() == 2);

    r = w.stack.runTool({mblctl, "install", "--replace-apps", bundle});
    REQUIRE(r.status.code == 0);
    CHECK((r.out + r.err).find("removed the apps the deployment does not name: byhand (data kept)") !=
          std::string::npos);
    auto apps = w.apps();
    REQUIRE(apps.size() == 1);
    CHECK(apps[0].name == "hello");
    CHECK(w.runcContainers().size() == 1);
    CHECK(fs::exists(w.stack.root() + "/var/lib/mbl/apps/byhand/data"));
    CHECK(w.device->boots == 0);
}

// ---------------------------------------------------------------- crash and fault matrix

namespace {

enum class Scenario {
    FirmwareAndApp,      // firmware 2.0.0 + app hello: ends committed
    FirmwareAndTwoApps,  // firmware 2.0.0 + apps hello and other: ends committed
    FirmwareBreaksSensor // sensor (by hand) breaks on 2.0.0; the bundle: firmware + hello + config: rolls back
};

struct KillPoint {
    std::string name;
    std::string victim;                                      // daemon label killed with SIGKILL
    std::map<std::string, TestStack::StartOptions> pauseAt;  // pause points of the first start
    json faults = json::object();                            // server faults while it runs
    std::function<bool(World&)> when;                        // kill once this holds
    std::string expectLog = "";                              // what the coordinator's recovery must log
    Scenario scenario = Scenario::FirmwareAndApp;
};

bool pausedUpdate(World& w)
{
    return fs::exists(w.stack.root() + "/var/lib/mbl/update/paused");
}

bool pausedInstall(World& w)
{
    return fs::exists(w.stack.root() + "/var/lib/mbl/apps/.paused");
}

bool pausedCoordinator(World& w)
{
    return fs::exists(w.stack.root() + "/var/lib/mbl/coordinator/paused");
}

TestStack::StartOptions cmPause(const std::string& point)
{
    TestStack::StartOptions o;
    o.env = {"MBL_CM_TEST_PAUSE=" + point};
    return o;
}

TestStack::StartOptions updatePause(const std::string& point)
{
    TestStack::StartOptions o;
    o.env = {"MBL_UPDATE_TEST_PAUSE=" + point};
    return o;
}

TestStack::StartOptions coordinatorPause(const std::string& point)
{
    TestStack::StartOptions o;
    o.env = {"MBL_COORDINATOR_TEST_PAUSE=" + point};
    return o;
}

std::string cloudSettings(World& w)
{
    auto cloud = sdbus::createProxy(w.stack.bus(), "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    std::string out;
    cloud->callMethod("GetSettings").onInterface("org.mbl.CloudClient1").storeResultsTo(out);
    return out;
}

// What must hold however a deployment ended: success (slot b committed, the apps
// running in exactly one container each) with the server told the same thing, and
// nothing left behind.
void checkCommitted(World& w, const std::string& action, const std::string& point, const std::vector<std::string>& apps)
{
    INFO("kill point: " << point);
    requireClosed(w, action, "FINISHED", 240s);
    const auto env = w.bootEnv();
    CHECK(w.bootedSlot() == "b");
    CHECK(env.at("BOOT_ORDER").rfind("B", 0) == 0);
    CHECK(env.at("BOOT_B_LEFT") != "0");
    for (const auto& app : apps) {
        w.runUntil([&] { return appRunning(w, app, "1.0.0"); }, 30s);
        CHECK(appRunning(w, app, "1.0.0"));
    }
    CHECK(w.runcContainers().size() == apps.size()); // no orphan, no duplicate
    CHECK(stagedOperations(w) == 0);
    CHECK(w.coordinatorString("State") == "idle");
    const auto details = w.feedbackDetails(action);
    REQUIRE(!details.empty());
    CHECK(details.back().find("closed/success") == 0);
}

// A rollback of everything: slot a, sensor running, hello (added by the
// deployment) gone, the config as before, closed/failure naming the app.
void checkRolledBack(World& w, const std::string& action, const std::string& point, const std::string& settingsBefore)
{
    INFO("kill point: " << point << "\n" << describe(w, action));
    requireClosed(w, action, "ERROR", 300s);
    CHECK(w.bootedSlot() == "a");
    CHECK(w.bootEnv().at("BOOT_ORDER").rfind("A", 0) == 0);
    w.runUntil([&] { return appRunning(w, "sensor", "1.0.0"); }, 60s);
    CHECK(appRunning(w, "sensor", "1.0.0"));
    bool hello = false;
    for (const auto& a : w.apps()) {
        hello = hello || a.name == "hello";
    }
    CHECK_FALSE(hello);
    CHECK(w.runcContainers().size() == 1);
    CHECK(stagedOperations(w) == 0);
    CHECK(cloudSettings(w) == settingsBefore);
    CHECK(w.coordinatorString("State") == "idle");
    const auto details = w.feedbackDetails(action);
    REQUIRE(!details.empty());
    CHECK(details.back().find("closed/failure") == 0);
    CHECK(details.back().find("app sensor") != std::string::npos);
    CHECK(details.back().find("the previous configuration was restored") != std::string::npos);
}

void runKillPoint(const KillPoint& k)
{
    World w{k.scenario == Scenario::FirmwareBreaksSensor ? breakableWorld() : WorldOptions{}};
    if (k.scenario == Scenario::FirmwareBreaksSensor) {
        allowOsReleaseMount(w);
    }
    w.startAll(k.pauseAt);
    const auto app = w.appImage("hello", "1.0.0", kServe);
    std::string bundle;
    std::string settingsBefore;
    std::vector<std::string> apps = {"hello"};
    if (k.scenario == Scenario::FirmwareAndApp) {
        bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw.mblb");
    } else if (k.scenario == Scenario::FirmwareAndTwoApps) {
        const auto other = w.appImage("other", "1.0.0", kServe);
        bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}, {"other@1.0.0", other}}, ""},
                          "fw.mblb");
        apps.push_back("other");
    } else {
        installSensor(w);
        settingsBefore = cloudSettings(w);
        const std::string cfg = w.work.path() + "/cfg.json";
        update::writeFile(cfg, json({{"version", "cfg-1"},
                                     {"cloud", {{"poll_interval_sec", 30}}},
                                     {"containers", {{"log_level", "debug"}}}})
                                   .dump());
        bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, cfg}, "fw.mblb");
    }
    if (!k.faults.empty()) {
        w.cloud.admin("POST", "/admin/faults", k.faults);
    }
    const auto action = w.deploy(bundle);
    w.pollNow();
    requireEventually(w, [&] { return k.when(w); }, 240s, "kill point " + k.name, action);
    w.forgetStartOptions();
    w.stack.kill(k.victim);
    (void)fs::removeTree(w.stack.root() + "/var/lib/mbl/apps/.paused");
    (void)fs::removeTree(w.stack.root() + "/var/lib/mbl/coordinator/paused");
    w.cloud.admin("POST", "/admin/faults", json::object());
    w.start(k.victim);
    if (k.scenario == Scenario::FirmwareBreaksSensor) {
        checkRolledBack(w, action, k.name, settingsBefore);
    } else {
        checkCommitted(w, action, k.name, apps);
    }
    if (!k.expectLog.empty()) {
        INFO(describe(w, action));
        CHECK(w.stack.log("coordinator").find(k.expectLog) != std::string::npos);
    }
}

} // namespace

TEST_CASE("kill -9 of the coordinator, the cloud client, the update service or the container manager at any step of "
          "a deployment ends with the truth on the server, the whole transaction committed or rolled back, and "
          "nothing left behind")
{
    auto state = [](const std::string& s) { return [s](World& w) { return w.coordinatorString("State") == s; }; };
    const std::vector<KillPoint> points = {
        {"coordinator while downloading", "coordinator", {}, {{"throttle_bps", 1 << 20}},
         [](World& w) { return w.coordinatorString("State") == "downloading" && w.coordinatorString("Operation") != ""; }},
        // The stream ends short with no DownloadFinished: the coordinator waits for
        // the restarted cloud client to connect and downloads again.
        {"cloud client while downloading", "cloud-client", {}, {{"throttle_bps", 1 << 20}},
         [](World& w) { return w.coordinatorString("State") == "downloading" && w.coordinatorString("Operation") != ""; },
         "waiting-network: download interrupted"},
        {"update service while verifying the signature", "update", {{"update", updatePause("verified")}}, {}, pausedUpdate},
        {"update service in the middle of the slot write", "update", {{"update", updatePause("rootfs-half")}}, {},
         pausedUpdate},
        {"update service after the slot was written", "update", {{"update", updatePause("before-arm")}}, {},
         pausedUpdate},
        {"update service after recording the staged bundle", "update", {{"update", updatePause("after-arm")}}, {},
         pausedUpdate},
        {"update service after staging the app payload", "update", {{"update", updatePause("staged")}}, {},
         pausedUpdate},
        {"container manager while staging the app", "container-manager",
         {{"container-manager", cmPause("staged")}}, {}, pausedInstall},
        {"coordinator while staging the app", "coordinator", {{"container-manager", cmPause("staged:4")}}, {},
         pausedInstall},
        {"coordinator between the two apps of one deployment", "coordinator",
         {{"coordinator", coordinatorPause("staging-apps:1")}}, {}, pausedCoordinator, "", Scenario::FirmwareAndTwoApps},
        {"container manager while switching the apps, between the two", "container-manager",
         {{"container-manager", cmPause("txn-app-switched")}}, {}, pausedInstall, "", Scenario::FirmwareAndTwoApps},
        {"coordinator after arming, before the reboot", "coordinator", {}, {},
         [](World& w) { return w.rebootRequested(); }},
        {"coordinator after the reboot, during the health check", "coordinator", {}, {}, state("checking-health")},
        {"container manager after the reboot, while the apps start", "container-manager", {}, {},
         state("checking-health")},
        {"coordinator while committing", "coordinator", {{"coordinator", coordinatorPause("committing")}}, {},
         pausedCoordinator},
        {"coordinator during the app rollback after a failed firmware", "coordinator",
         {{"coordinator", coordinatorPause("rolling-back-apps")}}, {}, pausedCoordinator, "",
         Scenario::FirmwareBreaksSensor},
        {"container manager during the app rollback after a failed firmware", "container-manager",
         {{"container-manager", cmPause("txn-app-back")}}, {}, pausedInstall, "", Scenario::FirmwareBreaksSensor},
        {"coordinator during the config rollback after a failed firmware", "coordinator",
         {{"coordinator", coordinatorPause("rolling-back-config:1")}}, {}, pausedCoordinator, "",
         Scenario::FirmwareBreaksSensor},
    };
    for (const auto& k : points) {
        SECTION(k.name)
        {
            runKillPoint(k);
        }
    }
}

TEST_CASE("a download cut twice mid-deployment resumes where it stopped and the deployment succeeds")
{
    World w;
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw.mblb");
    w.cloud.admin("POST", "/admin/faults", {{"cut_count", 2}, {"cut_after", 1 << 20}});
    const auto action = w.deploy(bundle);
    w.pollNow();
    checkCommitted(w, action, "network cut twice", {"hello"});
    std::size_t ranged = 0;
    const auto server = w.cloud.state();
    for (const auto& r : server.at("requests")) {
        ranged += r.dump().find("206") != std::string::npos ? 1 : 0;
    }
    CHECK(ranged >= 1);
}

TEST_CASE("a download the network cuts more often than the cloud client resumes is fetched again by the coordinator "
          "and the deployment succeeds")
{
    WorldOptions o;
    o.cloud = {{"download", {{"max_retries", 1}}}}; // each Download: the first attempt and one resume
    World w{o};
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto bundle = w.bundle({"2.0.0", 1, w.rootfsImage("2.0.0"), {{"hello@1.0.0", app}}, ""}, "fw.mblb");
    // Four cuts: the first two Downloads give up ("interrupted"), the third gets it all.
    w.cloud.admin("POST", "/admin/faults", {{"cut_count", 4}, {"cut_after", 1 << 20}});
    const auto action = w.deploy(bundle);
    w.pollNow();
    checkCommitted(w, action, "network cut four times", {"hello"});
    std::size_t waits = 0;
    for (const auto& d : w.feedbackDetails(action)) {
        waits += d.find("download interrupted") != std::string::npos ? 1 : 0;
    }
    CHECK(waits == 2);
    CHECK(w.device->boots == 1); // one install was armed, once
}

TEST_CASE("a config payload reaches the cloud client and the container manager, the hostname command and the server's "
          "device attributes; a config one service refuses is rolled back everywhere")
{
    World w;
    // Changing this machine's real hostname is not for a test: the command records it.
    const std::string hostFile = w.stack.root() + "/var/lib/mbl/coordinator/hostname";
    (void)fs::writeFileAtomic(w.stack.root() + "/etc/mbl/coordinator.json",
                              json({{"health_grace_ms", 1500},
                                    {"health_timeout_ms", 60000},
                                    {"hostname_command", {"sh", "-c", "printf %s \"$1\" > \"$0\"", hostFile}}})
                                  .dump(),
                              0644);
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const std::string cfg1 = w.work.path() + "/cfg1.json";
    update::writeFile(cfg1, json({{"version", "cfg-1"},
                                  {"cloud", {{"poll_interval_sec", 30}}},
                                  {"containers", {{"apps", {{"hello", {{"env", {{"GREETING", "hi"}}}}}}}}},
                                  {"hostname", "line7-unit42"}})
                                .dump());
    const auto b1 = w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", app}}, cfg1}, "cfg-1.mblb");
    const auto a1 = w.deploy(b1);
    w.pollNow();
    requireClosed(w, a1, "FINISHED", 120s);
    auto cloud = sdbus::createProxy(w.stack.bus(), "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    std::string cloudSettings;
    cloud->callMethod("GetSettings").onInterface("org.mbl.CloudClient1").storeResultsTo(cloudSettings);
    CHECK(json::parse(cloudSettings) == json({{"poll_interval_sec", 30}}));
    CHECK(cloud->getProperty("PollInterval").onInterface("org.mbl.CloudClient1").get<std::uint32_t>() == 30);
    auto cm = sdbus::createProxy(w.stack.bus(), "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1");
    std::string cmSettings;
    cm->callMethod("GetSettings").onInterface("org.mbl.ContainerManager1").storeResultsTo(cmSettings);
    CHECK(json::parse(cmSettings)["apps"]["hello"]["env"]["GREETING"] == "hi");
    CHECK(update::readFile(hostFile) == "line7-unit42");
    CHECK(w.runUntil(
        [&] {
            auto t = w.cloud.state()["targets"][w.deviceId]["attributes"];
            return t.value("config.version", "") == "cfg-1";
        },
        30s));

    // A config whose container part is refused (an unknown setting): nothing of it stays.
    const std::string cfg2 = w.work.path() + "/cfg2.json";
    update::writeFile(cfg2, json({{"version", "cfg-2"},
                                  {"cloud", {{"poll_interval_sec", 5}}},
                                  {"containers", {{"apps", {{"hello", {{"colour", "blue"}}}}}}}})
                                .dump());
    const auto b2 = w.bundle({"1.2.0", 1, "", {{"hello@1.0.0", app}}, cfg2}, "cfg-2.mblb");
    const auto a2 = w.deploy(b2);
    w.pollNow();
    requireClosed(w, a2, "ERROR", 120s);
    cloud->callMethod("GetSettings").onInterface("org.mbl.CloudClient1").storeResultsTo(cloudSettings);
    CHECK(json::parse(cloudSettings) == json({{"poll_interval_sec", 30}}));
    const auto details = w.feedbackDetails(a2);
    CHECK(details.back().find("previous configuration was restored") != std::string::npos);
    CHECK(w.cloud.state()["targets"][w.deviceId]["attributes"].value("config.version", "") == "cfg-1");
}

TEST_CASE("bad input ends in a named error or closed/failure with the reason, and the device stays as it was")
{
    World w;
    w.startAll();
    const std::string mblctl = buildRoot() + "/services/mblctl/mblctl";
    const auto envBefore = w.bootEnv();

    // A bundle whose signature is fine but whose app image is broken.
    const std::string broken = w.work.path() + "/broken.oci.tar";
    update::writeFile(broken, std::string(4096, 'z'));
    const auto bad = w.bundle({"1.1.0", 1, "", {{"hello@1.0.0", broken}}, ""}, "broken-app.mblb");
    const auto a1 = w.deploy(bad);
    w.pollNow();
    requireClosed(w, a1, "ERROR", 120s);
    CHECK(w.feedbackDetails(a1).back().find("app hello failed") != std::string::npos);
    CHECK(w.apps().empty());
    CHECK(w.runcContainers().empty());

    // A cancel for an action the device does not run is answered, and changes nothing.
    w.cloud.admin("POST", "/admin/deployments",
                  {{"target", w.deviceId}, {"chunks", {{{"part", "bundle"}, {"artifacts", {"broken-app.mblb"}}}}}});
    // (the new action is cancelled on the server before the device saw it)
    auto st = w.cloud.state();
    std::string last;
    for (auto it = st["actions"].begin(); it != st["actions"].end(); ++it) {
        last = it.key();
    }
    w.cloud.admin("POST", "/admin/actions/" + last, {{"cancel", true}});
    w.pollNow();
    requireClosed(w, last, "CANCELED", 60s);

    // InstallBundle on a file that is not a bundle: the local API says why.
    const std::string junk = w.work.path() + "/junk.bin";
    update::writeFile(junk, "this is not a bundle");
    auto r = w.stack.runTool({mblctl, "install", junk});
    CHECK(r.status.code != 0);
    CHECK((r.err + r.out).find("not a valid tar archive") != std::string::npos);

    // A local install while a cloud deployment runs is refused as Busy.
    w.cloud.admin("POST", "/admin/faults", {{"throttle_bps", 256 << 10}});
    const auto app = w.appImage("hello", "1.0.0", kServe);
    const auto good = w.bundle({"1.2.0", 1, "", {{"hello@1.0.0", app}}, ""}, "good.mblb");
    const auto a2 = w.deploy(good);
    w.pollNow();
    requireEventually(w, [&] { return w.coordinatorString("State") == "downloading"; }, 60s, "downloading", a2);
    r = w.stack.runTool({mblctl, "install", good});
    CHECK(r.status.code != 0);
    CHECK((r.err + r.out).find("Busy") != std::string::npos);
    w.cloud.admin("POST", "/admin/faults", json::object());
    requireClosed(w, a2, "FINISHED", 180s);
    CHECK(appRunning(w, "hello", "1.0.0"));
    CHECK(w.bootEnv() == envBefore);
    CHECK(w.device->boots == 0);
}
