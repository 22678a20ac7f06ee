// SPDX-License-Identifier: Apache-2.0
// The foundation, seen from outside: the five daemons on a private system-type
// bus with the real policy files.

#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <dirent.h>

using namespace mbl;
using test::TestStack;

namespace {
bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

std::vector<pid_t> childrenOf(pid_t parent)
{
    std::vector<pid_t> out;
    DIR* d = opendir("/proc");
    while (struct dirent* e = readdir(d)) {
        pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
        if (pid <= 0) {
            continue;
        }
        auto stat = fs::readFile("/proc/" + std::string(e->d_name) + "/stat");
        if (!stat) {
            continue;
        }
        auto close = stat->rfind(')');
        int ppid = 0;
        char state = 0;
        if (close != std::string::npos && std::sscanf(stat->c_str() + close + 2, "%c %d", &state, &ppid) == 2 &&
            ppid == parent) {
            out.push_back(pid);
        }
    }
    closedir(d);
    return out;
}
} // namespace

TEST_CASE("each daemon owns its name, shows its root object and introspects its documented interface")
{
    TestStack stack;
    REQUIRE(stack.startAll());
    for (const auto& s : test::allServices()) {
        INFO(s.label);
        auto tree = stack.busctl({"tree", s.busName});
        CHECK(tree.status.success());
        CHECK(contains(tree.out, s.objectPath));
        auto intro = stack.busctl({"introspect", s.busName, s.objectPath});
        CHECK(intro.status.success());
        CHECK(contains(intro.out, s.busName)); // the interface is named like the bus name
        CHECK(contains(intro.out, ".Version"));
        CHECK(contains(intro.out, "org.freedesktop.DBus.Properties"));
        auto ping = stack.busctl({"call", s.busName, s.objectPath, "org.freedesktop.DBus.Peer", "Ping"});
        CHECK(ping.status.success());
        auto version = stack.busctl({"get-property", s.busName, s.objectPath, s.busName, "Version"});
        CHECK(version.out == "s \"0.1.0\"\n");
    }
    auto cm = stack.busctl({"introspect", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1"});
    CHECK(contains(cm.out, "org.freedesktop.DBus.ObjectManager"));
}

TEST_CASE("mblctl status shows the five services as reachable, and as JSON for scripts")
{
    TestStack stack;
    REQUIRE(stack.startAll());
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    auto table = stack.runTool({mblctl, "status"});
    INFO(table.out << table.err);
    CHECK(table.status.code == 0);
    for (const char* label : {"device-identity", "update", "container-manager", "cloud-client", "coordinator"}) {
        CHECK(contains(table.out, label));
    }
    CHECK_FALSE(contains(table.out, "UNREACHABLE"));

    auto json = stack.runTool({mblctl, "--json", "status"});
    REQUIRE(json.status.code == 0);
    auto doc = nlohmann::json::parse(json.out);
    REQUIRE(doc.size() == 5);
    for (const auto& e : doc) {
        CHECK(e["reachable"].get<bool>());
        CHECK(e["properties"]["Version"] == "0.1.0");
    }

    stack.stop("update");
    auto degraded = stack.runTool({mblctl, "status"});
    CHECK(degraded.status.code == 1);
    CHECK(contains(degraded.out, "UNREACHABLE"));

    // Through --root alone (no bus address in the environment), as a person at the demo would.
    auto viaRoot = stack.runTool({"env", "-u", "DBUS_SYSTEM_BUS_ADDRESS", mblctl, "--root", stack.root(), "status"});
    CHECK(contains(viaRoot.out, "device-identity    reachable"));
}

TEST_CASE("every daemon exits 0 within one second of SIGTERM, releases its name and leaves no process behind")
{
    TestStack stack;
    REQUIRE(stack.startAll());
    for (const auto& s : test::allServices()) {
        INFO(s.label);
        const pid_t pid = stack.pid(s.label);
        auto [status, took] = stack.stop(s.label);
        CHECK(status.success());
        CHECK(took.count() < 1000);
        CHECK(childrenOf(pid).empty());
        CHECK_FALSE(stack.nameHasOwner(s.busName));
    }
}

TEST_CASE("a second instance stops at once with a one-line reason and a non-zero exit")
{
    TestStack stack;
    REQUIRE(stack.start("update"));
    auto second = stack.spawn("update", {});
    REQUIRE(second);
    auto st = second->waitFor(std::chrono::seconds(5));
    REQUIRE(st);
    CHECK(st->code != 0);
    CHECK(contains(stack.log("update"), "another instance already owns the name"));
    CHECK(stack.running("update"));
}

TEST_CASE("an invalid configuration stops the daemon with a reason naming the file")
{
    TestStack stack;
    const std::string cfg = stack.root() + "/etc/mbl/update.json";
    REQUIRE(fs::writeFileAtomic(cfg, "{ this is not json", 0644));
    auto st = stack.start("update");
    REQUIRE_FALSE(st);
    CHECK(contains(st.error().message, "exited with code 1"));
    CHECK(contains(stack.log("update"), cfg + ": not valid JSON"));
}

TEST_CASE("a daemon run as a user that may not own its name fails to start with AccessDenied")
{
    TestStack stack;
    TestStack::StartOptions opts;
    opts.user = "mbl-test-user";
    auto st = stack.start("device-identity", opts);
    REQUIRE_FALSE(st);
    CHECK(contains(stack.log("device-identity"), "AccessDenied"));
    CHECK_FALSE(stack.nameHasOwner("org.mbl.DeviceIdentity1"));
}

TEST_CASE("removing a policy file makes the matching daemon fail to start with AccessDenied")
{
    for (const auto& s : test::allServices()) {
        INFO(s.label);
        TestStack::Options o;
        o.withoutPolicies = {s.busName};
        TestStack stack(o);
        auto st = stack.start(s.label);
        REQUIRE_FALSE(st);
        CHECK(contains(stack.log(s.label), "AccessDenied"));
    }
}

TEST_CASE("policy: mutating calls reach the daemon from root and mbl-admin, AccessDenied for others; reads work for all")
{
    TestStack stack;
    REQUIRE(stack.startAll());
    struct Call {
        std::string busName, path, member;
        std::vector<std::string> args;
    };
    // One mutating method per service; whatever the daemon answers, it must be the
    // daemon answering (an org.mbl.Error or success), not the bus refusing.
    const std::vector<Call> calls = {
        {"org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1", "InstallCertificate", {"s", "not a certificate"}},
        {"org.mbl.Update1", "/org/mbl/Update1", "MarkBad", {}},
        {"org.mbl.ContainerManager1", "/org/mbl/ContainerManager1", "StartApp", {"s", "no-such-app"}},
        {"org.mbl.CloudClient1", "/org/mbl/CloudClient1", "ReportFeedback",
         {"sssuuas", "no-such-action", "proceeding", "none", "0", "0", "0"}},
        {"org.mbl.Coordinator1", "/org/mbl/Coordinator1", "Cancel", {"s", "no-such-operation"}},
    };
    for (const auto& c : calls) {
        INFO(c.busName << "." << c.member);
        std::vector<std::string> args = {"call", c.busName, c.path, c.busName, c.member};
        args.insert(args.end(), c.args.begin(), c.args.end());

        auto asRoot = stack.busctl(args);
        CHECK_FALSE(contains(asRoot.err, "Access denied"));
        auto asAdmin = stack.busctl(args, std::string("mbl-test-admin"));
        CHECK_FALSE(contains(asAdmin.err, "Access denied"));
        auto asUser = stack.busctl(args, std::string("mbl-test-user"));
        CHECK(asUser.status.code != 0);
        CHECK(contains(asUser.err, "Access denied"));

        auto read = stack.busctl({"get-property", c.busName, c.path, c.busName, "Version"},
                                 std::string("mbl-test-user"));
        CHECK(read.status.success());
        auto introspect = stack.busctl({"introspect", c.busName, c.path}, std::string("mbl-test-user"));
        CHECK(introspect.status.success());
    }
}

TEST_CASE("the identity key and secrets are for the cloud client and root only, not for admins")
{
    TestStack stack;
    REQUIRE(stack.start("device-identity"));
    for (const char* member : {"GetTlsCredentials", "GetProvisioningSecrets"}) {
        INFO(member);
        std::vector<std::string> args = {"call", "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1",
                                         "org.mbl.DeviceIdentity1", member};
        CHECK(contains(stack.busctl(args, std::string("mbl-test-admin")).err, "Access denied"));
        CHECK(contains(stack.busctl(args, std::string("mbl-test-user")).err, "Access denied"));
        CHECK(contains(stack.busctl(args, std::string("mbl-coordinator")).err, "Access denied"));
        CHECK_FALSE(contains(stack.busctl(args, std::string("mbl-cloud")).err, "Access denied"));
        CHECK_FALSE(contains(stack.busctl(args).err, "Access denied"));
    }
}

TEST_CASE("malformed calls get a D-Bus error and the daemon keeps serving")
{
    TestStack stack;
    REQUIRE(stack.start("update"));
    auto wrongSig = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", "org.mbl.Update1", "OpenPayload",
                                  "u", "7"});
    CHECK(wrongSig.status.code != 0);
    auto unknown = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", "org.mbl.Update1", "NoSuchMethod"});
    CHECK(unknown.status.code != 0);
    auto badPath = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Nope", "org.mbl.Update1", "Commit"});
    CHECK(badPath.status.code != 0);
    CHECK(stack.running("update"));
    auto ping = stack.busctl({"call", "org.mbl.Update1", "/org/mbl/Update1", "org.freedesktop.DBus.Peer", "Ping"});
    CHECK(ping.status.success());
}
