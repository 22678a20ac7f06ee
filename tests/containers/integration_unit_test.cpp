// SPDX-License-Identifier: Apache-2.0
// The manager started the way its systemd unit starts it (Type=notify with
// NOTIFY_SOCKET, Delegate=yes: its own cgroup), as on a device: apps start
// and run, systemd hears READY=1 from the manager alone, and every cgroup the
// manager makes is inside its unit's, and gone with its app.

#include "cm_client.h"
#include "cm_fixture.h"

#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>

using namespace mbl;
using namespace mbl::test::cm;
using test::CmClient;

namespace {

bool anyFolder(const std::string& relative)
{
    for (const auto& h : cgroupHierarchies()) {
        if (isDirectory(h.mount + relative)) {
            return true;
        }
    }
    return false;
}

} // namespace

TEST_CASE("under its systemd unit (NOTIFY_SOCKET set, Delegate=yes) an installed app reaches running and mblctl app "
          "list shows it; systemd hears READY=1 from the manager and never an app's pid as MAINPID")
{
    Fixture f;
    if (!f.unit->unavailable().empty()) {
        test::skip(f.unit->unavailable());
    }
    REQUIRE(f.unit->waitMessage("READY=1"));
    const std::string archive = f.image("unit", "echo up; exec sleep 1000");
    CmClient cm;
    auto r = cm.install(archive, R"({"name": "svc"})");
    INFO(r.message << f.stack.log("container-manager"));
    REQUIRE(r.success);
    REQUIRE(cm.waitState("svc", "running"));
    REQUIRE(cm.waitLog("svc", "up"));
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    auto list = f.stack.runTool({mblctl, "app", "list"});
    INFO(list.out);
    CHECK(contains(list.out, "running"));
    // A restart of the app (stop, start) takes the same path.
    CHECK(f.stack.runTool({mblctl, "app", "restart", "svc"}).status.code == 0);
    CHECK(cm.state("svc") == "running");
    for (const auto& m : f.unit->messages()) {
        INFO(m);
        CHECK_FALSE(str::startsWith(m, "MAINPID="));
    }
}

TEST_CASE("under its systemd unit the manager moves itself to <unit>/manager and puts each app at "
          "<unit>/apps/<name>; an app's cgroup goes with the app, and one a crash left is removed at start-up")
{
    Fixture f;
    if (!f.unit->unavailable().empty()) {
        test::skip(f.unit->unavailable());
    }
    const std::string unit = f.unit->cgroup();
    const std::string archive = f.image("cg", "exec sleep 1000");
    CmClient cm;
    REQUIRE(cm.install(archive, R"({"name": "a"})").success);
    REQUIRE(cm.install(archive, R"({"name": "b"})").success);
    REQUIRE(cm.waitState("a", "running"));
    REQUIRE(cm.waitState("b", "running"));

    // The manager is in its leaf; the unit's own cgroup holds no process (cgroup v2's rule).
    CHECK(cgroupOf(f.stack.pid("container-manager")) == unit + "/manager");
    for (const auto& dir : f.unit->dirs()) {
        INFO(dir);
        CHECK(str::trim(*fs::readFile(dir + "/cgroup.procs")).empty());
    }
    // Each app is below the unit.
    CHECK(cgroupOf(static_cast<pid_t>(cm.pid("a"))) == unit + "/apps/a");
    CHECK(cgroupOf(static_cast<pid_t>(cm.pid("b"))) == unit + "/apps/b");

    // Removed: its folders are gone from every hierarchy.
    cm.remove("a", true);
    CHECK_FALSE(anyFolder(unit + "/apps/a"));
    CHECK(anyFolder(unit + "/apps/b"));

    // Left by a crash: folders no app uses are removed when the manager starts;
    // a running app's is kept.
    f.stack.kill("container-manager");
    for (const auto& h : cgroupHierarchies()) {
        (void)fs::makeDirs(h.mount + unit + "/apps/ghost/sub", 0755);
    }
    REQUIRE(anyFolder(unit + "/apps/ghost"));
    f.startManager();
    CHECK_FALSE(anyFolder(unit + "/apps/ghost"));
    CHECK(cm.waitState("b", "running"));
    CHECK(cgroupOf(static_cast<pid_t>(cm.pid("b"))) == unit + "/apps/b");
}
