// SPDX-License-Identifier: Apache-2.0
// The container manager seen from outside, with real runc and real containers:
// images built in the test by umoci (busybox from Debian's busybox-static) and
// archived by skopeo or tar; every check is on what an operator would observe
// (bus properties, the app's log, processes, files on the host).

#include "cm_client.h"
#include "cm_fixture.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <sys/stat.h>
#include <thread>
#include <vector>

using namespace mbl;
using test::CmClient;
using test::TestStack;
using nlohmann::json;
using namespace mbl::test::cm;


TEST_CASE("an app built by umoci runs hardened: its output reaches the log, NoNewPrivs, reduced CapEff, Seccomp 2, "
          "read-only /, writable /data and /tmp")
{
    Fixture f;
    CmClient cm;
    const std::string archive = f.image(
        "v1", "grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status; "
              "if touch /rootcheck 2>/dev/null; then echo ROOT_WRITABLE; else echo ROOT_READONLY; fi; "
              "echo kept > /data/probe && echo DATA_WRITABLE; echo t > /tmp/t && echo TMP_WRITABLE; exec sleep 1000");
    auto r = cm.install(archive, R"({"name": "hello", "version": "1"})");
    INFO(r.errorName << ": " << r.message << "\n" << f.stack.log("container-manager"));
    REQUIRE(r.success);
    CHECK(r.name == "hello");
    REQUIRE(cm.waitState("hello", "running"));
    REQUIRE(cm.waitLog("hello", "TMP_WRITABLE"));
    const std::string log = cm.logs("hello");
    INFO(log);
    CHECK(contains(log, "NoNewPrivs:\t1"));
    CHECK(contains(log, "Seccomp:\t2"));
    // CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE only.
    CHECK(contains(log, "CapEff:\t00000000000004e0"));
    CHECK(contains(log, "ROOT_READONLY"));
    CHECK(contains(log, "DATA_WRITABLE"));
    CHECK(*fs::readFile(f.dataDir("hello") + "/probe") == "kept\n");

    // From outside: the process is real, confined, in its own pid namespace.
    const pid_t pid = static_cast<pid_t>(cm.pid("hello"));
    REQUIRE(alive(pid));
    CHECK(statusField(pid, "NoNewPrivs") == "1");
    CHECK(statusField(pid, "Seccomp") == "2");
    auto myNs = fs::readFile("/proc/self/stat"); // placeholder read to keep the fd table warm
    char a[256] = {}, b[256] = {};
    REQUIRE(::readlink(("/proc/" + std::to_string(pid) + "/ns/pid").c_str(), a, sizeof a - 1) > 0);
    REQUIRE(::readlink("/proc/self/ns/pid", b, sizeof b - 1) > 0);
    CHECK(std::string(a) != std::string(b));
    CHECK(cm.appCount() == 1);
    auto apps = cm.list();
    REQUIRE(apps.size() == 1);
    CHECK(apps[0].get<0>() == "hello");
    CHECK(apps[0].get<1>() == "1");
    CHECK(apps[0].get<2>() == "running");
    auto tree = f.stack.busctl({"tree", "org.mbl.ContainerManager1"});
    CHECK(contains(tree.out, "/org/mbl/ContainerManager1/apps/hello"));

    // Stop: SIGTERM, grace, SIGKILL; nothing is left in runc.
    cm.call("StopApp", "hello");
    CHECK(cm.state("hello") == "stopped");
    CHECK_FALSE(alive(pid));
    CHECK(cm.pid("hello") == 0);
    CHECK(f.runcContainers().empty());
    auto changes = cm.stateChanges();
    CHECK(std::count(changes.begin(), changes.end(), "hello=running") >= 1);
    CHECK(std::count(changes.begin(), changes.end(), "hello=stopped") == 1);

    // Remove keeps the data unless asked; a reinstall finds it.
    cm.remove("hello", false);
    CHECK(cm.appCount() == 0);
    CHECK(fs::exists(f.dataDir("hello") + "/probe"));
    auto again = cm.install(archive, R"({"name": "hello", "version": "1", "autostart": false})");
    REQUIRE(again.success);
    CHECK(cm.state("hello") == "installed");
    CHECK(fs::exists(f.dataDir("hello") + "/probe"));
    cm.remove("hello", true);
    CHECK_FALSE(fs::exists(f.dataDir("hello")));
    (void)myNs;
}

TEST_CASE("a memory hog is OOM-killed and reported as OOM")
{
    Fixture f;
    CmClient cm;
    const std::string archive = f.image("hog", "echo hogging; tail /dev/zero");
    auto r = cm.install(archive, R"({"name": "hog", "memory_mb": 32, "restart": "no"})");
    INFO(r.message);
    REQUIRE(r.success);
    REQUIRE(cm.waitState("hog", "failed", std::chrono::seconds(60)));
    CHECK(cm.prop("hog", "ExitCode").get<int32_t>() == 137);
    CHECK(cm.prop("hog", "OomKilled").get<bool>());
    CHECK(cm.prop("hog", "RestartCount").get<uint32_t>() == 0);
    CHECK(cm.waitLog("hog", "out of memory"));
}

TEST_CASE("a crashing app is restarted with exponential back-off and its exit code recorded")
{
    Fixture f;
    CmClient cm;
    const std::string archive = f.image("crash", "echo crashing; exit 3");
    auto r = cm.install(archive, R"({"name": "crash", "restart": "on-failure"})");
    REQUIRE(r.success);
    // base 200 ms, cap 800 ms: restarts after about 200, 400, 800, 800 ms.
    std::vector<std::chrono::steady_clock::time_point> seen;
    std::uint32_t last = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (seen.size() < 4 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
        std::uint32_t n = cm.prop("crash", "RestartCount").get<uint32_t>();
        if (n != last) {
            last = n;
            seen.push_back(std::chrono::steady_clock::now());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    REQUIRE(seen.size() == 4);
    auto gap = [&](std::size_t i) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(seen[i + 1] - seen[i]).count();
    };
    INFO("gaps " << gap(0) << " " << gap(1) << " " << gap(2));
    CHECK(gap(0) >= 350);  // 400 ms back-off (+ the run)
    CHECK(gap(1) >= 750);  // 800 ms (the cap)
    CHECK(gap(2) >= 750);
    // Capped: the delays the manager announced (its log), not wall-clock
    // gaps, which grow with the machine's load (gap(2) < 3000 failed at load 19).
    std::vector<long> delays;
    const std::string log = f.stack.log("container-manager");
    const std::string mark = "app crash: restarting in ";
    for (auto p = log.find(mark); p != std::string::npos; p = log.find(mark, p + 1)) {
        delays.push_back(std::atol(log.c_str() + p + mark.size()));
    }
    REQUIRE(delays.size() >= 4);
    CHECK(std::vector<long>(delays.begin(), delays.begin() + 4) == std::vector<long>{200, 400, 800, 800});
    CHECK(cm.prop("crash", "ExitCode").get<int32_t>() == 3);
    // StopApp ends the restarts.
    cm.call("StopApp", "crash");
    const auto n = cm.prop("crash", "RestartCount").get<uint32_t>();
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(cm.prop("crash", "RestartCount").get<uint32_t>() == n);
    CHECK(cm.state("crash") == "stopped");
}

TEST_CASE("an update to a crashing version rolls back, the old version keeps serving and /data survives the update")
{
    Fixture f;
    CmClient cm;
    auto layout = test::umociBusyboxImage(f.work.path(), "upd", "v1",
                                          {"/bin/sh", "-c", "echo v1 >> /data/history; echo serving-v1; exec sleep 1000"});
    test::umociBusyboxImage(f.work.path(), "upd", "v2", {"/bin/sh", "-c", "echo v2-crash; exit 1"});
    test::umociBusyboxImage(f.work.path(), "upd", "v3", {"/bin/sh", "-c", "echo v3 running; exec sleep 1000"});
    test::umociBusyboxImage(f.work.path(), "upd", "v4",
                            {"/bin/sh", "-c", "cat /data/history; echo serving-v4; exec sleep 1000"});
    const std::string v1 = test::layoutArchive(layout, "v1", f.work.path() + "/v1.tar", true);
    // The whole layout (four manifests) by tar: the "image" option picks one.
    const std::string all = test::layoutArchive(layout, "", f.work.path() + "/all.tar", false);

    auto r1 = cm.install(v1, R"({"name": "web", "version": "1", "health": {"grace_ms": 1000}})");
    REQUIRE(r1.success);
    REQUIRE(cm.waitState("web", "running"));
    REQUIRE(cm.waitLog("web", "serving-v1"));
    const pid_t pid1 = static_cast<pid_t>(cm.pid("web"));

    auto r2 = cm.install(all, R"({"name": "web", "version": "2", "image": "v2", "health": {"grace_ms": 1000}})");
    INFO(r2.message);
    CHECK_FALSE(r2.success);
    CHECK(r2.errorName == "org.mbl.Error.Failed");
    CHECK(contains(r2.message, "rolled back to 1"));
    CHECK(cm.prop("web", "Version").get<std::string>() == "1");
    CHECK(cm.state("web") == "running");
    CHECK_FALSE(alive(pid1)); // the old version was stopped for the switch and started again
    CHECK(alive(static_cast<pid_t>(cm.pid("web"))));
    CHECK(contains(cm.logs("web"), "v2-crash"));

    // A version that runs but fails its probe (run inside the container) is rolled back too.
    auto r3 = cm.install(all, R"({"name": "web", "version": "3", "image": "v3",
                                  "health": {"grace_ms": 500, "probe": ["test", "-f", "/data/ready"]}})");
    INFO(r3.message);
    CHECK_FALSE(r3.success);
    CHECK(contains(r3.message, "health"));
    if (r3.success) {
        FAIL(f.stack.log("container-manager") + "\n" + cm.logs("web"));
    }
    CHECK(cm.prop("web", "Version").get<std::string>() == "1");
    CHECK(cm.state("web") == "running");

    auto r4 = cm.install(all, R"({"name": "web", "version": "4", "image": "v4", "health": {"grace_ms": 500}})");
    INFO(r4.message);
    REQUIRE(r4.success);
    CHECK(cm.prop("web", "Version").get<std::string>() == "4");
    REQUIRE(cm.waitLog("web", "serving-v4"));
    // v4 printed the history v1 wrote to /data: twice (first start and the rollback).
    const std::string log = cm.logs("web");
    auto at = log.find("serving-v4");
    auto hist = log.substr(0, at);
    CHECK(contains(hist, "v1\nv1\n"));
    // Only the current version is kept on disk (the old one goes in the background).
    CHECK(CmClient::waitFor([&] {
        auto versions = mbl::run({"ls", f.stack.root() + "/var/lib/mbl/apps/web/versions"});
        return str::trim(versions->out) == "4";
    }, std::chrono::seconds(10)));
}

TEST_CASE("kill -9 of the manager while apps run: the restarted manager re-adopts them and still learns of their exits")
{
    Fixture f;
    CmClient cm;
    const std::string archive = f.image("svc", "echo up; exec sleep 1000");
    REQUIRE(cm.install(archive, R"({"name": "svc", "restart": "on-failure"})").success);
    REQUIRE(cm.waitState("svc", "running"));
    const pid_t pid = static_cast<pid_t>(cm.pid("svc"));
    REQUIRE(alive(pid));

    f.stack.kill("container-manager");
    CHECK(alive(pid)); // the app keeps running without its manager
    f.startManager();
    CmClient cm2;
    REQUIRE(cm2.waitState("svc", "running"));
    CHECK(static_cast<pid_t>(cm2.pid("svc")) == pid); // adopted, not started again
    CHECK(f.runcContainers() == std::vector<std::string>{"svc"});

    // It is no longer the parent, yet learns of the exit at once and applies the policy.
    ::kill(pid, SIGKILL);
    REQUIRE(CmClient::waitFor([&] { return cm2.prop("svc", "RestartCount").get<uint32_t>() == 1; },
                              std::chrono::seconds(20)));
    REQUIRE(cm2.waitState("svc", "running"));
    CHECK(static_cast<pid_t>(cm2.pid("svc")) != pid);
    CHECK(f.runcContainers() == std::vector<std::string>{"svc"});
    cm2.call("StopApp", "svc");
    CHECK(f.runcContainers().empty());
}

TEST_CASE("bad input over the bus gets a named error and changes nothing that runs")
{
    Fixture f;
    CmClient cm;
    const std::string good = f.image("ok", "echo fine; exec sleep 1000");
    REQUIRE(cm.install(good, R"({"name": "keep", "version": "1"})").success);
    REQUIRE(cm.waitState("keep", "running"));
    const auto pid = cm.pid("keep");

    const std::string hostile = test::makeArchive(
        f.work.path(), "hostile",
        {{"kind", "image"},
         {"config", {{"Cmd", {"/bin/sh"}}}},
         {"layers", {json::array({{{"name", "../../etc/passwd"}, {"type", "file"}, {"data", "pwned"}}})}}});
    auto r = cm.install(hostile, R"({"name": "keep", "version": "2"})");
    CHECK_FALSE(r.success);
    CHECK(r.errorName == "org.mbl.Error.InvalidArgument");
    CHECK(cm.pid("keep") == pid);
    CHECK(cm.prop("keep", "Version").get<std::string>() == "1");
    CHECK(cm.appCount() == 1);
    CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/keep/versions/2"));
    auto staging = mbl::run({"ls", "-A", f.stack.root() + "/var/lib/mbl/apps/.staging"});
    CHECK(str::trim(staging->out).empty());

    auto expectError = [&](const std::string& options, const std::string& name) {
        try {
            cm.installAsync(good, options);
            FAIL("accepted " << options);
        } catch (const sdbus::Error& e) {
            CHECK(e.getName() == name);
        }
    };
    expectError(R"({"name": "../evil"})", "org.mbl.Error.InvalidArgument");
    expectError(R"({"name": "x", "host_pid": true})", "org.mbl.Error.AccessDenied");
    expectError(R"({"name": "x", "capabilities": ["CAP_SYS_ADMIN"]})", "org.mbl.Error.AccessDenied");
    expectError(R"({"name": "x", "mounts": [{"source": "/etc", "destination": "/host-etc"}]})",
                "org.mbl.Error.AccessDenied");
    try {
        cm.call("StartApp", "nope");
        FAIL("StartApp of an unknown app succeeded");
    } catch (const sdbus::Error& e) {
        CHECK(e.getName() == "org.mbl.Error.NotFound");
    }
    CHECK(cm.appCount() == 1);
    CHECK(cm.pid("keep") == pid);

    // The policy: anyone may list, only admins may change.
    auto denied = f.stack.busctl({"call", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
                                  "org.mbl.ContainerManager1", "StopApp", "s", "keep"},
                                 "mbl-test-user");
    CHECK(contains(denied.err, "Access denied"));
    auto listed = f.stack.busctl({"call", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
                                  "org.mbl.ContainerManager1", "ListApps"},
                                 "mbl-test-user");
    CHECK(contains(listed.out, "keep"));
    CHECK(cm.pid("keep") == pid);
}

TEST_CASE("mblctl app drives the manager: install, list, logs, stop, start, restart, remove")
{
    Fixture f;
    const std::string archive = f.image("cli", "echo from-the-app; exec sleep 1000");
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    auto inst = f.stack.runTool({mblctl, "app", "install", archive, "--name", "cli", "--app-version", "7"});
    INFO(inst.out << inst.err);
    REQUIRE(inst.status.code == 0);
    CmClient cm;
    REQUIRE(cm.waitState("cli", "running"));
    REQUIRE(cm.waitLog("cli", "from-the-app"));
    auto list = f.stack.runTool({mblctl, "app", "list"});
    CHECK(contains(list.out, "cli"));
    CHECK(contains(list.out, "running"));
    auto json = f.stack.runTool({mblctl, "--json", "app", "list"});
    auto parsed = nlohmann::json::parse(json.out);
    CHECK(parsed[0]["name"] == "cli");
    CHECK(parsed[0]["version"] == "7");
    auto logs = f.stack.runTool({mblctl, "app", "logs", "cli"});
    CHECK(contains(logs.out, "from-the-app"));
    CHECK(f.stack.runTool({mblctl, "app", "stop", "cli"}).status.code == 0);
    CHECK(cm.state("cli") == "stopped");
    CHECK(f.stack.runTool({mblctl, "app", "start", "cli"}).status.code == 0);
    CHECK(cm.state("cli") == "running");
    CHECK(f.stack.runTool({mblctl, "app", "restart", "cli"}).status.code == 0);
    CHECK(cm.state("cli") == "running");
    auto bad = f.stack.runTool({mblctl, "app", "start", "nope"});
    CHECK(bad.status.code == 1);
    CHECK(contains(bad.err, "NotFound"));
    auto applied = f.stack.runTool({mblctl, "app", "settings", R"({"apps": {"cli": {"pids_limit": 64}}})"});
    CHECK(applied.status.code == 0);
    auto shown = f.stack.runTool({mblctl, "--json", "app", "settings"});
    CHECK(nlohmann::json::parse(shown.out) == nlohmann::json::parse(R"({"apps": {"cli": {"pids_limit": 64}}})"));
    auto refused = f.stack.runTool({mblctl, "app", "settings", R"({"apps": {"cli": {"pids_limit": "many"}}})"});
    CHECK(refused.status.code == 1);
    CHECK(contains(refused.err, "InvalidArgument"));
    // A name past 24 characters still leaves its column apart from the version.
    const std::string longName = "an-application-named-at-length";
    REQUIRE(f.stack.runTool({mblctl, "app", "install", archive, "--name", longName, "--app-version", "1.2.3-rc.45",
                             "--options", R"({"autostart": false})"})
                .status.code == 0);
    auto wide = f.stack.runTool({mblctl, "app", "list"});
    INFO(wide.out);
    CHECK(contains(wide.out, longName + "  1.2.3-rc.45  installed"));
    auto removed = f.stack.runTool({mblctl, "app", "remove", "cli", "--data"});
    CHECK(removed.status.code == 0);
    CHECK(removed.out == "removed cli and its data\n");
    CHECK(f.stack.runTool({mblctl, "app", "remove", longName}).out ==
          "removed " + longName + " (its data is kept; --data removes it)\n");
    CHECK(cm.appCount() == 0);
}

namespace {

// A cgroup limit file of a process (cgroup v2 unified, else the v1 controller's).
std::string cgroupLimit(pid_t pid, const std::string& v1Controller, const std::string& v1File, const std::string& v2File)
{
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/cgroup");
    if (!text) {
        return "";
    }
    std::string v1, v2;
    for (const auto& line : str::split(*text, '\n')) {
        auto f = str::split(line, ':');
        if (f.size() < 3) {
            continue;
        }
        const std::string path = line.substr(f[0].size() + f[1].size() + 2);
        if (f[0] == "0" && f[1].empty()) {
            v2 = path;
        }
        for (const auto& c : str::split(f[1], ',')) {
            if (c == v1Controller) {
                v1 = path;
            }
        }
    }
    if (!v1.empty()) {
        if (auto t = fs::readFile("/sys/fs/cgroup/" + v1Controller + v1 + "/" + v1File)) {
            return str::trim(*t);
        }
    }
    if (auto t = fs::readFile("/sys/fs/cgroup" + v2 + "/" + v2File)) {
        return str::trim(*t);
    }
    return "";
}

std::size_t count(const std::string& hay, const std::string& needle)
{
    std::size_t n = 0;
    for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) {
        ++n;
    }
    return n;
}

} // namespace

TEST_CASE("ApplySettings: env and memory overrides restart the running app with them; bad documents change nothing; "
          "they survive a daemon restart and the previous document restores the app")
{
    Fixture f(json{{"policy", {{"max_memory_bytes", 512 << 20}}}});
    CmClient cm;
    const std::string archive = f.image("cfg", "echo \"GREETING=$GREETING\"; exec sleep 1000");
    REQUIRE(cm.install(archive, R"({"name": "cfg", "memory_mb": 64, "env": {"GREETING": "install"}})").success);
    REQUIRE(cm.waitState("cfg", "running"));
    REQUIRE(cm.waitLog("cfg", "GREETING=install"));
    const pid_t pid1 = static_cast<pid_t>(cm.pid("cfg"));
    CHECK(cgroupLimit(pid1, "memory", "memory.limit_in_bytes", "memory.max") == std::to_string(64 << 20));
    const std::string before = cm.getSettings();
    CHECK(json::parse(before) == json::object());

    const json doc = {{"log_level", "info"},
                      {"apps",
                       {{"cfg", {{"env", {{"GREETING", "over-the-air"}}}, {"memory_limit", 96 << 20}}},
                        {"later", {{"pids_limit", 50}}}}}};
    cm.applySettings(doc.dump());
    CHECK(json::parse(cm.getSettings()) == doc);
    REQUIRE(cm.waitLog("cfg", "GREETING=over-the-air"));
    REQUIRE(cm.waitState("cfg", "running"));
    const pid_t pid2 = static_cast<pid_t>(cm.pid("cfg"));
    CHECK(pid2 != pid1);
    CHECK(cgroupLimit(pid2, "memory", "memory.limit_in_bytes", "memory.max") == std::to_string(96 << 20));
    CHECK(cm.prop("cfg", "RestartCount").get<uint32_t>() == 0); // a restart for settings is no crash
    CHECK(contains(f.stack.log("container-manager"), "restarted: cfg"));

    // Invalid documents: InvalidArgument, nothing changed, nothing restarted.
    for (const std::string bad :
         {R"({"apps": {"cfg": {"memory_limit": 1073741824}}})",     // beyond the device policy (512 MiB)
          R"({"apps": {"cfg": {"memory_limit": "big"}}})",          // wrong type
          R"({"apps": {"cfg": {"pids_limit": 0}}})",                // out of range
          R"({"apps": {"cfg": {"cpu_percent": -5}}})",              // negative
          R"({"apps": {"../etc": {"pids_limit": 5}}})",             // unsafe app name
          R"({"apps": {"cfg": {"privileged": true}}})",             // unknown key
          R"({"log_level": "chatty"})",                             // unknown level
          R"({"apps": {"cfg": {"env": {"A=B": "x"}}}})",            // not a variable name
          R"([1, 2])", R"(not json)"}) {
        try {
            cm.applySettings(bad);
            FAIL("accepted " << bad);
        } catch (const sdbus::Error& e) {
            INFO(bad << " -> " << e.getMessage());
            CHECK(e.getName() == "org.mbl.Error.InvalidArgument");
        }
    }
    CHECK(json::parse(cm.getSettings()) == doc);
    CHECK(static_cast<pid_t>(cm.pid("cfg")) == pid2);

    // Overrides of an app not installed yet apply when it is.
    REQUIRE(cm.install(archive, R"({"name": "later"})").success);
    REQUIRE(cm.waitState("later", "running"));
    CHECK(cgroupLimit(static_cast<pid_t>(cm.pid("later")), "pids", "pids.max", "pids.max") == "50");

    // A daemon restart keeps them (and the running app is re-adopted as it is).
    f.stack.kill("container-manager");
    f.startManager();
    CmClient cm2;
    CHECK(json::parse(cm2.getSettings()) == doc);
    REQUIRE(cm2.waitState("cfg", "running"));
    CHECK(static_cast<pid_t>(cm2.pid("cfg")) == pid2);

    // The previous document restores the app's install settings.
    const auto laterPid = cm2.pid("later");
    cm2.applySettings(before);
    CHECK(json::parse(cm2.getSettings()) == json::object());
    REQUIRE(CmClient::waitFor([&] { return count(cm2.logs("cfg"), "GREETING=install") == 2; }));
    REQUIRE(cm2.waitState("cfg", "running"));
    const pid_t pid3 = static_cast<pid_t>(cm2.pid("cfg"));
    CHECK(pid3 != pid2);
    CHECK(cgroupLimit(pid3, "memory", "memory.limit_in_bytes", "memory.max") == std::to_string(64 << 20));
    REQUIRE(CmClient::waitFor([&] { return cm2.pid("later") != laterPid && cm2.state("later") == "running"; }));
    CHECK(cgroupLimit(static_cast<pid_t>(cm2.pid("later")), "pids", "pids.max", "pids.max") == "256");
    CHECK(json::parse(cm2.getSettings()) == json::object());

    // log_level takes effect at once: at "warning" the manager's notices are not logged.
    cm2.applySettings(R"({"log_level": "warning"})");
    cm2.applySettings(R"({"log_level": "warning", "apps": {"nothing-here": {"cpu_percent": 50}}})");
    CHECK_FALSE(contains(f.stack.log("container-manager"), "settings applied (1 app override(s), log level warning)"));
    cm2.applySettings("{}");
    CHECK(contains(f.stack.log("container-manager"), "settings applied (0 app override(s)); restarted: none"));

    // Only admins may read or change them.
    auto denied = f.stack.busctl({"call", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
                                  "org.mbl.ContainerManager1", "GetSettings"},
                                 "mbl-test-user");
    CHECK(contains(denied.err, "Access denied"));

    // Settings persisted while the manager died before restarting the app: the
    // next manager re-adopts it, sees it runs with older settings and restarts it.
    const pid_t cfgPid = static_cast<pid_t>(cm2.pid("cfg"));
    const auto laterPid2 = cm2.pid("later");
    f.stack.kill("container-manager");
    const json pending = {{"apps", {{"cfg", {{"env", {{"GREETING", "pending"}}}}}}}};
    REQUIRE(fs::writeFileAtomic(f.stack.root() + "/var/lib/mbl/apps/.settings.json", pending.dump()));
    f.startManager();
    CmClient cm3;
    REQUIRE(cm3.waitLog("cfg", "GREETING=pending"));
    REQUIRE(CmClient::waitFor([&] { return cm3.state("cfg") == "running" && cm3.pid("cfg") != 0; }));
    CHECK(static_cast<pid_t>(cm3.pid("cfg")) != cfgPid);
    CHECK(cm3.pid("later") == laterPid2); // its settings did not change: left running
    CHECK(json::parse(cm3.getSettings()) == pending);
}

TEST_CASE("after kill -9 of the manager the exit code of a re-adopted app is still known (its shim records it), and "
          "the restart policy applies to it")
{
    Fixture f;
    CmClient cm;
    // Exits with code 7 each time /data/go appears (and removes it, so the next run waits again).
    const std::string archive =
        f.image("seven", "echo up; while [ ! -e /data/go ]; do sleep 0.1; done; rm /data/go; echo bye; exit 7");
    REQUIRE(cm.install(archive, R"({"name": "seven", "restart": "on-failure"})").success);
    REQUIRE(cm.waitState("seven", "running"));
    const pid_t pid = static_cast<pid_t>(cm.pid("seven"));

    // 1. The app exits while the restarted manager runs: it is not the init's parent.
    f.stack.kill("container-manager");
    REQUIRE(alive(pid));
    f.startManager();
    CmClient cm2;
    REQUIRE(cm2.waitState("seven", "running"));
    REQUIRE(static_cast<pid_t>(cm2.pid("seven")) == pid);
    REQUIRE(fs::writeFileAtomic(f.dataDir("seven") + "/go", "now"));
    REQUIRE(CmClient::waitFor([&] { return cm2.prop("seven", "RestartCount").get<uint32_t>() == 1; },
                              std::chrono::seconds(20)));
    CHECK(cm2.prop("seven", "ExitCode").get<int32_t>() == 7);
    CHECK(contains(cm2.logs("seven"), "exited with code 7"));
    REQUIRE(cm2.waitState("seven", "running"));
    const pid_t pid2 = static_cast<pid_t>(cm2.pid("seven"));
    CHECK(pid2 != pid);

    // 2. The app exits while no manager runs at all.
    f.stack.kill("container-manager");
    REQUIRE(fs::writeFileAtomic(f.dataDir("seven") + "/go", "now"));
    REQUIRE(CmClient::waitFor([&] { return !alive(pid2) || statusField(pid2, "State").rfind("Z", 0) == 0; },
                              std::chrono::seconds(20)));
    f.startManager();
    CmClient cm3;
    REQUIRE(CmClient::waitFor([&] { return cm3.prop("seven", "RestartCount").get<uint32_t>() == 2; },
                              std::chrono::seconds(20)));
    CHECK(cm3.prop("seven", "ExitCode").get<int32_t>() == 7);
    CHECK(contains(cm3.logs("seven"), "exited while the manager was not running (exit code 7)"));
    REQUIRE(cm3.waitState("seven", "running"));
    CHECK(f.runcContainers() == std::vector<std::string>{"seven"});

    cm3.call("StopApp", "seven");
    CHECK(cm3.state("seven") == "stopped");
}

namespace {

// The "line-N" numbers in a text, in order.
std::vector<int> lineNumbers(const std::string& text)
{
    std::vector<int> out;
    for (const auto& l : str::split(text, '\n')) {
        if (str::startsWith(l, "line-")) {
            out.push_back(std::atoi(l.c_str() + 5));
        }
    }
    return out;
}

// What the rotated files and the current one hold, oldest first.
std::string keptLog(const std::string& log)
{
    std::string kept;
    for (const auto& p : {log + ".2", log + ".1", log}) {
        if (auto t = fs::readFile(p)) {
            kept += *t;
        }
    }
    return kept;
}

} // namespace

TEST_CASE("an app writing more than log_max_bytes gets its log rotated: at most log_keep old files, GetLogs ends with "
          "the newest lines")
{
    Fixture f(json{{"log_max_bytes", 4096}, {"log_keep", 2}});
    CmClient cm;
    // ~16 KiB in 80 lines of 200 bytes, written over ~2 s, then a last marker.
    const std::string archive = f.image(
        "chatty",
        "P=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789;"
        "i=0; while [ $i -lt 80 ]; do i=$((i+1)); echo \"line-$i $P$P\"; sleep 0.025; done; echo all-written; "
        "exec sleep 1000");
    REQUIRE(cm.install(archive, R"({"name": "chatty"})").success);
    REQUIRE(cm.waitLog("chatty", "all-written"));
    const std::string log = f.stack.root() + "/var/log/mbl/apps/chatty.log";
    CHECK(fs::exists(log + ".1"));
    CHECK(fs::exists(log + ".2"));
    CHECK_FALSE(fs::exists(log + ".3"));
    // No file grows past log_max_bytes: the shim rotates before the line that would cross it.
    for (const auto& p : {log, log + ".1", log + ".2"}) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        CHECK(static_cast<std::uint64_t>(st.st_size) <= 4096);
    }
    const std::string tail = cm.logs("chatty", 2);
    INFO(tail);
    CHECK(str::split(str::trim(tail), '\n').size() == 2);
    CHECK(contains(tail, "line-80 "));
    CHECK(str::endsWith(tail, "all-written\n"));
    // The oldest lines went with the oldest rotation (only log_keep rotated files are kept),
    // and nothing in between was lost.
    const std::string kept = keptLog(log);
    CHECK_FALSE(contains(kept, "line-1 "));
    auto nums = lineNumbers(kept);
    REQUIRE_FALSE(nums.empty());
    CHECK(nums.back() == 80);
    for (std::size_t i = 1; i < nums.size(); ++i) {
        CHECK(nums[i] == nums[i - 1] + 1);
    }
}

TEST_CASE("log rotation loses no line of an app that writes as fast as it can, and the exit is recorded after its "
          "last line")
{
    Fixture f(json{{"log_max_bytes", 4096}, {"log_keep", 2}});
    CmClient cm;
    // ~40 KB in 4000 short lines in a burst: rotations happen while it writes.
    const std::string archive = f.image(
        "burst", "i=0; while [ $i -lt 4000 ]; do i=$((i+1)); echo \"line-$i\"; done; echo all-written; exit 5");
    REQUIRE(cm.install(archive, R"({"name": "burst", "restart": "no"})").success);
    REQUIRE(cm.waitState("burst", "failed", std::chrono::seconds(60)));
    CHECK(cm.prop("burst", "ExitCode").get<int32_t>() == 5);
    // By the time the exit is seen, its output is all in the log.
    const std::string log = f.stack.root() + "/var/log/mbl/apps/burst.log";
    const std::string kept = keptLog(log);
    CHECK(contains(kept, "all-written"));
    CHECK_FALSE(fs::exists(log + ".3"));
    auto nums = lineNumbers(kept);
    REQUIRE(nums.size() > 100);
    CHECK(nums.back() == 4000);
    int gaps = 0;
    for (std::size_t i = 1; i < nums.size(); ++i) {
        if (nums[i] != nums[i - 1] + 1) {
            ++gaps;
            UNSCOPED_INFO("line-" << nums[i - 1] << " is followed by line-" << nums[i]);
        }
    }
    CHECK(gaps == 0);
}

TEST_CASE("mblctl status shows the container manager as FAILED while an app has failed, naming the app")
{
    Fixture f;
    CmClient cm;
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    auto entry = [&] {
        auto out = f.stack.runTool({mblctl, "--json", "status"});
        auto doc = json::parse(out.out);
        for (const auto& e : doc) {
            if (e["service"] == "container-manager") {
                return e;
            }
        }
        FAIL("no container-manager entry in: " << out.out);
        return json();
    };
    const std::string okArchive = f.image("steady", "while true; do sleep 1; done");
    REQUIRE(cm.install(okArchive, R"({"name": "steady"})").success);
    REQUIRE(cm.waitState("steady", "running", std::chrono::seconds(60)));
    CHECK(entry()["healthy"] == true);

    const std::string archive = f.image("broken", "echo cannot start; exit 3");
    REQUIRE(cm.install(archive, R"({"name": "broken", "restart": "no"})").success);
    REQUIRE(cm.waitState("broken", "failed", std::chrono::seconds(60)));
    auto e = entry();
    CHECK(e["healthy"] == false);
    CHECK(contains(e.value("problem", ""), "broken"));
    auto table = f.stack.runTool({mblctl, "status"});
    CHECK(table.status.code == 1);
    CHECK(contains(table.out, "FAILED"));
    CHECK(contains(table.out, "app broken failed"));

    // Removing the failed app is acting on it: the manager is healthy again.
    cm.remove("broken", false);
    CHECK(entry()["healthy"] == true);
}
