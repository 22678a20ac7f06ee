// SPDX-License-Identifier: Apache-2.0
// The container manager at system shutdown (issue 14, found on the QEMU
// device): its unit has KillMode=process so that apps outlive a restart of the
// manager, so at a reboot nothing but the manager can stop them with their
// grace period; systemd-shutdown would wait 90 s for a container init that
// ignores SIGTERM. On SIGTERM the manager asks systemd whether the system is
// going down (SystemState "stopping") and only then stops every app before it
// exits, keeping what each app should do after the next boot.

#include "cm_client.h"
#include "cm_fixture.h"
#include "systemd_double.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <dirent.h>
#include <sys/stat.h>

using namespace mbl;
using namespace mbl::test::cm;
using test::CmClient;

namespace {

// The private bus with systemd's own policy file beside ours, for the double.
test::TestStack::Options withSystemdPolicy()
{
    struct stat st {};
    if (::stat(systemdPolicyFile(), &st) != 0) {
        test::skip(std::string("systemd's bus policy file ") + systemdPolicyFile() +
                   " is not installed (package systemd)");
    }
    test::TestStack::Options o;
    o.extraPolicies = {systemdPolicyFile()};
    return o;
}

std::string textOf(const std::string& path)
{
    auto text = fs::readFile(path);
    return text ? *text : std::string();
}

// Gone, or a zombie nobody reaped yet: either way it runs no more.
bool ended(pid_t pid)
{
    return !alive(pid) || statusField(pid, "State").rfind("Z", 0) == 0;
}

// The pids in the cgroup folders below `dirs` (the unit's), "" when none.
std::string processesBelow(const std::vector<std::string>& dirs)
{
    std::string out;
    std::vector<std::string> todo = dirs;
    while (!todo.empty()) {
        const std::string d = todo.back();
        todo.pop_back();
        const std::string procs = str::trim(textOf(d + "/cgroup.procs"));
        out += procs.empty() ? "" : d + ": " + procs + "\n";
        if (DIR* dir = ::opendir(d.c_str())) {
            while (dirent* e = ::readdir(dir)) {
                const std::string n = e->d_name;
                if (e->d_type == DT_DIR && n != "." && n != "..") {
                    todo.push_back(d + "/" + n);
                }
            }
            ::closedir(dir);
        }
    }
    return out;
}

// "<shim pid> <init pid>" of an app's shim record (0 when there is none).
pid_t shimOf(Fixture& f, const std::string& app)
{
    auto text = fs::readFile(f.stack.root() + "/run/mbl/apps/shim/" + app + ".shim");
    return text ? static_cast<pid_t>(std::atol(text->c_str())) : 0;
}

// Two apps as on the device: "stubborn" is a PID-namespace init without a
// SIGTERM handler (the kernel does not deliver SIGTERM to it: pid_namespaces(7)),
// "polite" exits on SIGTERM. Neither autostarts: after a reboot only the
// desired state the manager kept can bring them back. Both started by StartApp.
void startTwoApps(Fixture& f, CmClient& cm)
{
    const std::string stubborn = f.image("stubborn", "echo up; exec sleep 1000");
    const std::string polite = f.image("polite", "trap 'echo bye; exit 0' TERM; echo up; sleep 1000 & wait");
    REQUIRE(cm.install(stubborn, R"({"name": "stubborn", "autostart": false, "restart": "always"})").success);
    REQUIRE(cm.install(polite, R"({"name": "polite", "autostart": false, "restart": "always"})").success);
    cm.call("StartApp", "stubborn");
    cm.call("StartApp", "polite");
    REQUIRE(cm.waitState("stubborn", "running"));
    REQUIRE(cm.waitState("polite", "running"));
    REQUIRE(cm.waitLog("polite", "up")); // its trap is set
    REQUIRE(cm.waitLog("stubborn", "up"));
}

} // namespace

TEST_CASE("system shutdown: on SIGTERM while systemd says \"stopping\" the manager stops every app (SIGTERM, grace, "
          "SIGKILL) before it exits, and after the reboot the apps that should run start again")
{
    Fixture f(json::object(), withSystemdPolicy());
    SystemdDouble systemd("running");
    CmClient cm;
    startTwoApps(f, cm);
    const pid_t stubbornPid = static_cast<pid_t>(cm.pid("stubborn"));
    const pid_t politePid = static_cast<pid_t>(cm.pid("polite"));
    const pid_t stubbornShim = shimOf(f, "stubborn");
    const pid_t politeShim = shimOf(f, "polite");
    REQUIRE(stubbornShim > 0);
    REQUIRE(politeShim > 0);
    REQUIRE(f.runcContainers().size() == 2);

    // `systemctl reboot`: shutdown.target is queued, then systemd stops the
    // unit: SIGTERM, and SIGKILL after TimeoutStopSec (60 s; here the wait ends at 45 s).
    systemd.setState("stopping");
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(::kill(f.stack.pid("container-manager"), SIGTERM) == 0);
    REQUIRE(CmClient::waitFor([&] { return !f.stack.running("container-manager"); }, std::chrono::seconds(45)));
    const auto took = std::chrono::steady_clock::now() - t0;
    const std::string log = f.stack.log("container-manager");
    INFO(log);
    CHECK(systemd.reads() >= 1);
    CHECK(contains(log, "apps stopped for the shutdown in"));
    CHECK_FALSE(contains(log, "exiting anyway"));
    // Both containers were gone when it exited: no runc state, no init, no shim.
    CHECK(f.runcContainers().empty());
    CHECK(ended(stubbornPid));
    CHECK(ended(politePid));
    CHECK(ended(stubbornShim));
    CHECK(ended(politeShim));
    // The stubborn app had its full grace (stop_grace_ms 1500) before SIGKILL,
    // the polite one ended on SIGTERM; all within the grace and the manager's
    // own margin (20 s), far below TimeoutStopSec.
    WARN("SIGTERM to exit of the manager with 2 apps (stop_grace_ms 1500): "
         << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    CHECK(took >= std::chrono::milliseconds(1500));
    CHECK(took < std::chrono::milliseconds(1500 + 20000));
    // Nothing of the unit is left for systemd-shutdown to wait for (the shim
    // the manager kept started ahead ends at the EOF of its request pipe).
    if (f.unit->unavailable().empty()) {
        CHECK(CmClient::waitFor([&] { return processesBelow(f.unit->dirs()).empty(); }, std::chrono::seconds(10)));
        INFO("left in the unit: " << processesBelow(f.unit->dirs()));
        CHECK(processesBelow(f.unit->dirs()).empty());
    }
    CHECK(contains(log, "app stubborn: stopping it, the system is shutting down"));
    CHECK(contains(log, "app polite: stopping it, the system is shutting down"));
    CHECK(contains(log, "app stubborn did not stop within 1500 ms: SIGKILL"));
    CHECK_FALSE(contains(log, "app polite did not stop"));
    const std::string appsLogs = f.stack.root() + "/var/log/mbl/apps/";
    const std::string politeLog = textOf(appsLogs + "polite.log");
    const std::string stubbornLog = textOf(appsLogs + "stubborn.log");
    CHECK(contains(politeLog, "stopping: the system is shutting down"));
    CHECK(contains(politeLog, "bye"));
    CHECK(contains(politeLog, "exited with code 0"));
    CHECK(contains(stubbornLog, "stopping: the system is shutting down"));
    CHECK(contains(stubbornLog, "killed by signal 9"));

    // The reboot: /run is a new tmpfs (runc's state, shim records, the
    // started-since-boot marker are gone), systemd is "running" again.
    REQUIRE(fs::removeTree(f.stack.root() + "/run/mbl/apps"));
    REQUIRE(fs::makeDirs(f.stack.root() + "/run/mbl/apps", 0700)); // RuntimeDirectory=mbl/apps
    systemd.setState("running");
    f.startManager();
    CmClient cm2;
    CHECK(cm2.waitState("stubborn", "running"));
    CHECK(cm2.waitState("polite", "running"));
    CHECK(cm2.prop("stubborn", "RestartCount").get<uint32_t>() == 0);
    CHECK(f.runcContainers().size() == 2);
}

TEST_CASE("an ordinary stop of the manager (systemd says \"running\", or systemd cannot be asked) leaves the apps "
          "running and the next start re-adopts them")
{
    Fixture f(json::object(), withSystemdPolicy());
    auto systemd = std::make_unique<SystemdDouble>("running");
    CmClient cm;
    startTwoApps(f, cm);
    const pid_t stubbornPid = static_cast<pid_t>(cm.pid("stubborn"));
    const pid_t politePid = static_cast<pid_t>(cm.pid("polite"));

    // `systemctl restart mbl-container-manager`.
    {
        const ExitStatus status = f.stack.stop("container-manager").first;
        const std::string log = f.stack.log("container-manager");
        INFO(log);
        CHECK(status.success());
        CHECK(systemd->reads() >= 1);
        CHECK(contains(log, "leaving the apps running (systemd SystemState \"running\""));
        CHECK_FALSE(contains(log, "the system is shutting down"));
        CHECK(alive(stubbornPid));
        CHECK(alive(politePid));
        CHECK(f.runcContainers().size() == 2);
    }
    f.startManager();
    {
        CmClient cm2;
        REQUIRE(cm2.waitState("stubborn", "running"));
        REQUIRE(cm2.waitState("polite", "running"));
        CHECK(static_cast<pid_t>(cm2.pid("stubborn")) == stubbornPid); // re-adopted, not started again
        CHECK(static_cast<pid_t>(cm2.pid("polite")) == politePid);
    }

    // No systemd on the bus (as in a container or the tests' bus without a
    // double): today's behaviour, and the log says why.
    systemd.reset();
    const ExitStatus status = f.stack.stop("container-manager").first;
    const std::string log = f.stack.log("container-manager");
    INFO(log);
    CHECK(status.success());
    CHECK(contains(log, "leaving the apps running: cannot ask systemd whether the system is shutting down"));
    CHECK(alive(stubbornPid));
    CHECK(alive(politePid));
    CHECK(f.runcContainers().size() == 2);
    f.startManager();
    CmClient cm3;
    REQUIRE(cm3.waitState("stubborn", "running"));
    CHECK(static_cast<pid_t>(cm3.pid("stubborn")) == stubbornPid);
    CHECK(static_cast<pid_t>(cm3.pid("polite")) == politePid);
}
