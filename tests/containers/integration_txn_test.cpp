// Contract C3 seen from the bus, with real runc: apps staged under a
// transaction, activated together, committed or rolled back, and a manager
// killed (-9) in the middle of each step that finishes it at its next start.

#include "cm_client.h"
#include "cm_fixture.h"

#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::cm;
using test::CmClient;
using nlohmann::json;

namespace {

// Three versions of "web" (each appends its name to /data/history), an app
// that crashes, and a side app; one layout archived whole by tar ("image" picks one).
struct Images {
    std::string all;
    explicit Images(Fixture& f)
    {
        const std::string dir = f.work.path();
        auto layout = test::umociBusyboxImage(dir, "tx", "v1",
                                              {"/bin/sh", "-c", "echo v1 >> /data/history; echo serving-v1; exec sleep 1000"});
        test::umociBusyboxImage(dir, "tx", "v2",
                                {"/bin/sh", "-c", "echo v2 >> /data/history; echo serving-v2; exec sleep 1000"});
        test::umociBusyboxImage(dir, "tx", "v3",
                                {"/bin/sh", "-c", "echo v3 >> /data/history; echo serving-v3; exec sleep 1000"});
        test::umociBusyboxImage(dir, "tx", "crash", {"/bin/sh", "-c", "echo crashing; exit 3"});
        test::umociBusyboxImage(dir, "tx", "side", {"/bin/sh", "-c", "echo side-up; exec sleep 1000"});
        all = test::layoutArchive(layout, "", dir + "/all.tar", false);
    }
};

std::string opts(const std::string& name, const std::string& version, const std::string& image,
                 const std::string& txn = "", json extra = json::object())
{
    json o = {{"name", name}, {"version", version}, {"image", image}};
    if (!txn.empty()) {
        o["transaction"] = txn;
    }
    for (auto it = extra.begin(); it != extra.end(); ++it) {
        o[it.key()] = it.value();
    }
    return o.dump();
}

std::string versionsOf(Fixture& f, const std::string& app)
{
    auto r = mbl::run({"ls", f.stack.root() + "/var/lib/mbl/apps/" + app + "/versions"});
    return r ? str::trim(r->out) : std::string("?");
}

std::string errorOf(const std::function<void()>& call)
{
    try {
        call();
    } catch (const sdbus::Error& e) {
        return e.getName();
    }
    return "";
}

json txnOf(CmClient& cm, const std::string& id)
{
    return json::parse(cm.getTransaction(id));
}

std::string appState(const json& t, const std::string& app)
{
    for (const auto& a : t["apps"]) {
        if (a["name"] == app) {
            return a["state"];
        }
    }
    return "";
}

} // namespace

TEST_CASE("C3: apps staged under a transaction are not switched to until it is activated; activation switches them "
          "together, keeps the previous versions, and commit deletes them")
{
    Fixture f;
    CmClient cm;
    Images img(f);
    REQUIRE(cm.install(img.all, opts("web", "1", "v1")).success);
    REQUIRE(cm.waitLog("web", "serving-v1"));
    REQUIRE(cm.waitState("web", "running")); // its output may come before the start's reply
    const pid_t pid1 = static_cast<pid_t>(cm.pid("web"));

    auto s1 = cm.install(img.all, opts("web", "2", "v2", "t1"));
    INFO(s1.message);
    REQUIRE(s1.success);
    CHECK(s1.name == "web");
    auto s2 = cm.install(img.all, opts("side", "1", "side", "t1"));
    REQUIRE(s2.success);

    // Staged: what runs is untouched, the added app is not installed yet.
    CHECK(static_cast<pid_t>(cm.pid("web")) == pid1);
    CHECK(cm.prop("web", "Version").get<std::string>() == "1");
    CHECK(cm.appCount() == 1);
    CHECK(f.runcContainers() == std::vector<std::string>{"web"});
    json t = txnOf(cm, "t1");
    CHECK(t["state"] == "staged");
    REQUIRE(t["apps"].size() == 2);
    CHECK(t["apps"][0] == json({{"name", "web"}, {"from_version", "1"}, {"to_version", "2"}, {"state", "staged"}}));
    CHECK(t["apps"][1] == json({{"name", "side"}, {"from_version", ""}, {"to_version", "1"}, {"state", "staged"}}));
    CHECK(errorOf([&] { cm.txn("CommitTransaction", "t1"); }) == "org.mbl.Error.InvalidArgument");
    // A plain install or a removal of an app in a transaction would pull the rug from under it.
    auto plain = cm.install(img.all, opts("web", "3", "v3"));
    CHECK_FALSE(plain.success);
    CHECK(plain.errorName == "org.mbl.Error.Busy");
    CHECK(errorOf([&] { cm.remove("web", false); }) == "org.mbl.Error.Busy");

    cm.txn("ActivateTransaction", "t1");
    CHECK(cm.prop("web", "Version").get<std::string>() == "2");
    CHECK(cm.state("web") == "running");
    CHECK(cm.state("side") == "running");
    CHECK(cm.appCount() == 2);
    CHECK_FALSE(alive(pid1));
    const pid_t pid2 = static_cast<pid_t>(cm.pid("web"));
    REQUIRE(cm.waitLog("web", "serving-v2"));
    REQUIRE(cm.waitLog("side", "side-up"));
    CHECK(*fs::readFile(f.dataDir("web") + "/history") == "v1\nv2\n"); // /data carried over
    CHECK(versionsOf(f, "web") == "1\n2");                              // the previous version is kept
    t = txnOf(cm, "t1");
    CHECK(t["state"] == "active");
    CHECK(appState(t, "web") == "active");
    CHECK(appState(t, "side") == "active");

    // Idempotent: nothing restarts.
    cm.txn("ActivateTransaction", "t1");
    CHECK(static_cast<pid_t>(cm.pid("web")) == pid2);

    cm.txn("CommitTransaction", "t1");
    CHECK(versionsOf(f, "web") == "2");
    CHECK(txnOf(cm, "t1")["state"] == "committed");
    CHECK(appState(txnOf(cm, "t1"), "web") == "committed");
    cm.txn("CommitTransaction", "t1");
    cm.txn("ActivateTransaction", "t1");
    CHECK(errorOf([&] { cm.txn("RollbackTransaction", "t1"); }) == "org.mbl.Error.Failed");
    CHECK(static_cast<pid_t>(cm.pid("web")) == pid2);
    CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/.transactions/t1"));

    // A finished transaction takes no new apps; unknown ids are named.
    CHECK(errorOf([&] { cm.installAsync(img.all, opts("web", "3", "v3", "t1")); }) == "org.mbl.Error.InvalidArgument");
    CHECK(errorOf([&] { cm.installAsync(img.all, opts("web", "3", "v3", "../t")); }) ==
          "org.mbl.Error.InvalidArgument");
    CHECK(txnOf(cm, "never") == json({{"id", "never"}, {"state", "unknown"}, {"apps", json::array()}}));
    CHECK(errorOf([&] { cm.txn("ActivateTransaction", "never"); }) == "org.mbl.Error.NotFound");
    CHECK(errorOf([&] { cm.txn("CommitTransaction", "never"); }) == "org.mbl.Error.NotFound");
    cm.txn("RollbackTransaction", "never"); // nothing was staged under it: nothing to undo

    // Anyone may read a transaction; only admins may act on one.
    auto denied = f.stack.busctl({"call", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
                                  "org.mbl.ContainerManager1", "RollbackTransaction", "s", "t1"},
                                 "mbl-test-user");
    CHECK(contains(denied.err, "Access denied"));
    auto read = f.stack.busctl({"call", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
                                "org.mbl.ContainerManager1", "GetTransaction", "s", "t1"},
                               "mbl-test-user");
    CHECK(contains(read.out, "committed"));
}

TEST_CASE("C3: rollback puts every app of the transaction back on its previous version (running if it ran, /data "
          "kept, ExitCode of the version that runs), removes the apps it added and drops staged versions")
{
    Fixture f;
    CmClient cm;
    Images img(f);
    REQUIRE(cm.install(img.all, opts("web", "1", "v1")).success);
    REQUIRE(cm.install(img.all, opts("idle", "1", "v1", "", {{"autostart", false}})).success);
    REQUIRE(cm.waitLog("web", "serving-v1"));
    CHECK(cm.state("idle") == "installed");

    // web gets a version that crashes; idle (not running) an update; extra is added.
    REQUIRE(cm.install(img.all, opts("web", "2", "crash", "t2", {{"restart", "no"}})).success);
    REQUIRE(cm.install(img.all, opts("idle", "2", "v2", "t2")).success);
    REQUIRE(cm.install(img.all, opts("extra", "1", "side", "t2")).success);
    cm.txn("ActivateTransaction", "t2"); // replies once switched, not waiting for health
    REQUIRE(cm.waitState("web", "failed"));
    CHECK(cm.prop("web", "ExitCode").get<int32_t>() == 3);
    CHECK(cm.prop("web", "Version").get<std::string>() == "2");
    CHECK(cm.prop("idle", "Version").get<std::string>() == "2");
    CHECK(cm.pid("idle") == 0); // it did not run before: it does not run now
    REQUIRE(cm.waitLog("extra", "side-up"));
    CHECK(cm.appCount() == 3);
    CHECK(fs::exists(f.dataDir("extra")));

    cm.txn("RollbackTransaction", "t2");
    CHECK(cm.prop("web", "Version").get<std::string>() == "1");
    CHECK(cm.state("web") == "running");
    CHECK(cm.prop("web", "ExitCode").get<int32_t>() == 0); // not the failed version's 3
    REQUIRE(cm.waitLog("web", "crashing"));
    REQUIRE(CmClient::waitFor([&] { return *fs::readFile(f.dataDir("web") + "/history") == "v1\nv1\n"; }));
    CHECK(cm.prop("idle", "Version").get<std::string>() == "1");
    CHECK(cm.pid("idle") == 0);
    CHECK(cm.appCount() == 2);
    CHECK(errorOf([&] { cm.state("extra"); }) != ""); // its object is gone
    CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/extra")); // its /data did not exist before
    CHECK(f.runcContainers() == std::vector<std::string>{"web"});
    CHECK(versionsOf(f, "web") == "1");
    CHECK(versionsOf(f, "idle") == "1");
    json t = txnOf(cm, "t2");
    CHECK(t["state"] == "rolled-back");
    for (const auto& a : t["apps"]) {
        CHECK(a["state"] == "rolled-back");
    }
    cm.txn("RollbackTransaction", "t2"); // idempotent
    CHECK(errorOf([&] { cm.txn("CommitTransaction", "t2"); }) == "org.mbl.Error.Failed");
    CHECK(errorOf([&] { cm.txn("ActivateTransaction", "t2"); }) == "org.mbl.Error.Failed");
    auto list = cm.list();
    REQUIRE(list.size() == 2);

    // A staged, never-activated transaction: rollback drops it and touches nothing.
    REQUIRE(cm.waitState("web", "running"));
    const auto pid = cm.pid("web");
    REQUIRE(cm.install(img.all, opts("web", "3", "v3", "t3")).success);
    REQUIRE(cm.install(img.all, opts("web", "1", "v1", "t3")).success); // staged again: the later archive wins
    CHECK(txnOf(cm, "t3")["apps"].size() == 1);
    CHECK(fs::exists(f.stack.root() + "/var/lib/mbl/apps/.transactions/t3/web"));
    cm.txn("RollbackTransaction", "t3");
    CHECK(cm.pid("web") == pid);
    CHECK(txnOf(cm, "t3")["state"] == "rolled-back");
    CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/.transactions/t3"));

    // A reinstall of the running version in a transaction goes beside it and back.
    REQUIRE(cm.install(img.all, opts("web", "1", "v2", "t4")).success);
    cm.txn("ActivateTransaction", "t4");
    REQUIRE(cm.waitLog("web", "serving-v2"));
    CHECK(versionsOf(f, "web") == "1\n1+t4");
    cm.txn("RollbackTransaction", "t4");
    CHECK(versionsOf(f, "web") == "1");
    REQUIRE(CmClient::waitFor([&] { return str::endsWith(*fs::readFile(f.dataDir("web") + "/history"), "v2\nv1\n"); }));
}

TEST_CASE("C3: a manager killed in the middle of an activation, a rollback or a commit finishes it at its next start")
{
    Fixture f;
    Images img(f);
    const std::string paused = f.stack.root() + "/var/lib/mbl/apps/.paused";
    auto restartPausedAt = [&](const std::string& point) {
        f.stack.kill("container-manager");
        ::unlink(paused.c_str());
        f.startManager(point.empty() ? std::vector<std::string>{}
                                     : std::vector<std::string>{"MBL_CM_TEST_PAUSE=" + point});
    };
    {
        CmClient cm;
        REQUIRE(cm.install(img.all, opts("web", "1", "v1")).success);
        REQUIRE(cm.waitLog("web", "serving-v1"));
    }
    restartPausedAt("txn-app-switched");
    {
        CmClient cm;
        REQUIRE(cm.waitState("web", "running"));
        REQUIRE(cm.install(img.all, opts("web", "2", "v2", "t5")).success);
        REQUIRE(cm.install(img.all, opts("extra", "1", "side", "t5")).success);
        // Killed once web's record names version 2, before the transaction says so.
        cm.txnAsync("ActivateTransaction", "t5");
        REQUIRE(CmClient::waitFor([&] { return fs::exists(paused); }, std::chrono::seconds(60)));
    }
    restartPausedAt("txn-app-back");
    {
        CmClient cm;
        REQUIRE(CmClient::waitFor([&] { return txnOf(cm, "t5")["state"] == "active"; }, std::chrono::seconds(60)));
        REQUIRE(cm.waitLog("web", "serving-v2"));
        REQUIRE(cm.waitLog("extra", "side-up"));
        CHECK(cm.prop("web", "Version").get<std::string>() == "2");
        REQUIRE(cm.waitState("web", "running"));
        REQUIRE(cm.waitState("extra", "running"));
        auto containers = f.runcContainers();
        std::sort(containers.begin(), containers.end());
        CHECK(containers == std::vector<std::string>{"extra", "web"});
        cm.txn("ActivateTransaction", "t5"); // a coordinator that lost the reply asks again

        // Killed after the first app of the rollback (extra, the last added) lost its record.
        cm.txnAsync("RollbackTransaction", "t5");
        REQUIRE(CmClient::waitFor([&] { return fs::exists(paused); }, std::chrono::seconds(60)));
    }
    restartPausedAt("txn-commit");
    {
        CmClient cm;
        REQUIRE(CmClient::waitFor([&] { return txnOf(cm, "t5")["state"] == "rolled-back"; }, std::chrono::seconds(60)));
        CHECK(cm.prop("web", "Version").get<std::string>() == "1");
        REQUIRE(cm.waitState("web", "running"));
        CHECK(cm.appCount() == 1);
        CHECK(f.runcContainers() == std::vector<std::string>{"web"});
        CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/extra"));
        CHECK(versionsOf(f, "web") == "1");
        REQUIRE(CmClient::waitFor(
            [&] { return *fs::readFile(f.dataDir("web") + "/history") == "v1\nv2\nv1\n"; }));

        // Killed after the commit was recorded, before the previous version was deleted.
        REQUIRE(cm.install(img.all, opts("web", "3", "v3", "t6")).success);
        cm.txn("ActivateTransaction", "t6");
        REQUIRE(cm.waitLog("web", "serving-v3"));
        cm.txnAsync("CommitTransaction", "t6");
        REQUIRE(CmClient::waitFor([&] { return fs::exists(paused); }, std::chrono::seconds(60)));
        CHECK(versionsOf(f, "web") == "1\n3");
    }
    restartPausedAt("");
    CmClient cm;
    REQUIRE(CmClient::waitFor([&] { return txnOf(cm, "t6")["state"] == "committed"; }, std::chrono::seconds(60)));
    CHECK(versionsOf(f, "web") == "3");
    CHECK(cm.prop("web", "Version").get<std::string>() == "3");
    REQUIRE(cm.waitState("web", "running"));
    CHECK(txnOf(cm, "t5")["state"] == "rolled-back"); // finished transactions are remembered
}
