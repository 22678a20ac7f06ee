// SPDX-License-Identifier: Apache-2.0
// Isolation seen from inside a running container and from the host, with real
// runc: user namespaces (root in the app is an unprivileged host user of the
// app's own range) and the seccomp profile (namespace and kernel-reconfiguring
// calls fail with EPERM, a plain fork works).

#include "cm_client.h"
#include "cm_fixture.h"

#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::cm;
using test::CmClient;
using nlohmann::json;

namespace {

// "0 100000 65536" (the first line of a uid_map) as numbers.
std::vector<unsigned long> mapLine(const std::string& text)
{
    std::vector<unsigned long> out;
    for (const auto& f : str::split(str::trim(str::split(str::trim(text), '\n')[0]), ' ')) {
        if (!f.empty()) {
            out.push_back(std::stoul(f));
        }
    }
    return out;
}

// The line after `marker` in an app's log.
std::string lineAfter(const std::string& log, const std::string& marker)
{
    auto p = log.find(marker + "\n");
    if (p == std::string::npos) {
        return "";
    }
    p += marker.size() + 1;
    return log.substr(p, log.find('\n', p) - p);
}

uid_t ownerOf(const std::string& path)
{
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? st.st_uid : static_cast<uid_t>(-1);
}

std::string errorOf(const std::function<void()>& call)
{
    try {
        call();
    } catch (const sdbus::Error& e) {
        return e.getName() + ": " + e.getMessage();
    }
    return "";
}

} // namespace

TEST_CASE("user namespaces: root in an app is the first id of the app's own range of host ids, seen from inside and "
          "outside; the range stays across updates and reinstalls, and files in /data are the app's")
{
    Fixture f;
    CmClient cm;
    const std::string dir = f.work.path();
    const std::string script = "echo uid_map:; cat /proc/self/uid_map; echo id:; id -u; touch /data/by-$V; "
                               "echo ready-$V; exec sleep 1000";
    auto layout = test::umociBusyboxImage(dir, "iso", "v1", {"/bin/sh", "-c", "V=v1; " + script});
    test::umociBusyboxImage(dir, "iso", "v2", {"/bin/sh", "-c", "V=v2; " + script});
    const std::string all = test::layoutArchive(layout, "", dir + "/all.tar", false);
    auto r = cm.install(all, R"({"name": "a", "version": "1", "image": "v1"})");
    INFO(r.message << f.stack.log("container-manager"));
    REQUIRE(r.success);
    REQUIRE(cm.install(all, R"({"name": "b", "version": "1", "image": "v1"})").success);
    REQUIRE(cm.waitLog("a", "ready-v1"));
    REQUIRE(cm.waitLog("b", "ready-v1"));
    REQUIRE(cm.waitState("a", "running"));

    // Inside: uid 0, mapped to a range of 65536 host ids from 100000 on.
    const std::string log = cm.logs("a");
    INFO(log);
    auto inside = mapLine(lineAfter(log, "uid_map:"));
    REQUIRE(inside.size() == 3);
    CHECK(inside[0] == 0);
    const uid_t base = static_cast<uid_t>(inside[1]);
    CHECK(base >= 100000);
    CHECK(inside[2] == 65536);
    CHECK(lineAfter(log, "id:") == "0");
    // Outside: the same map, and the process's real uid is the unprivileged base.
    const pid_t pid = static_cast<pid_t>(cm.pid("a"));
    CHECK(mapLine(*fs::readFile("/proc/" + std::to_string(pid) + "/uid_map")) == inside);
    CHECK(mapLine(*fs::readFile("/proc/" + std::to_string(pid) + "/gid_map")) == inside);
    CHECK(str::split(statusField(pid, "Uid"), '\t')[0] == std::to_string(base));
    // What it writes to /data belongs to its host id; its rootfs too (given at install).
    CHECK(ownerOf(f.dataDir("a") + "/by-v1") == base);
    CHECK(ownerOf(f.dataDir("a")) == base);
    CHECK(ownerOf(f.stack.root() + "/var/lib/mbl/apps/a/versions/1/rootfs/bin/busybox") == base);
    // Another app: another range, no overlap.
    auto other = mapLine(lineAfter(cm.logs("b"), "uid_map:"));
    REQUIRE(other.size() == 3);
    CHECK((other[1] >= base + 65536 || other[1] + 65536 <= base));
    CHECK(ownerOf(f.dataDir("b") + "/by-v1") == other[1]);

    // An update keeps the range: /data stays the app's.
    REQUIRE(cm.install(all, R"({"name": "a", "version": "2", "image": "v2"})").success);
    REQUIRE(cm.waitLog("a", "ready-v2"));
    CHECK(mapLine(lineAfter(cm.logs("a"), "uid_map:")) == inside);
    CHECK(ownerOf(f.dataDir("a") + "/by-v2") == base);
    CHECK(fs::exists(f.dataDir("a") + "/by-v1"));

    // Removed with its data kept and installed again: the same range.
    cm.remove("a", false);
    REQUIRE(cm.install(all, R"({"name": "a", "version": "1", "image": "v1"})").success);
    REQUIRE(CmClient::waitFor([&] { return fs::exists(f.dataDir("a") + "/by-v1") && cm.state("a") == "running"; }));
    CHECK(str::split(statusField(static_cast<pid_t>(cm.pid("a")), "Uid"), '\t')[0] == std::to_string(base));
    // Removed with its data: its range is free again for the next new app.
    cm.remove("a", true);
    REQUIRE(cm.install(all, R"({"name": "c", "version": "1", "image": "v1"})").success);
    REQUIRE(cm.waitLog("c", "ready-v1"));
    CHECK(mapLine(lineAfter(cm.logs("c"), "uid_map:"))[1] == base);
}

TEST_CASE("user namespaces: an app asking to run without one is refused by the default policy; an image running as "
          "root without one is refused unless the policy allows host root, and nothing is left of it")
{
    {
        Fixture f;
        CmClient cm;
        const std::string archive = f.image("root", "id -u; exec sleep 1000");
        const std::string e = errorOf([&] { cm.installAsync(archive, R"({"name": "r", "userns": false})"); });
        CHECK(str::startsWith(e, "org.mbl.Error.AccessDenied"));
        CHECK(contains(e, "userns"));
        CHECK(cm.appCount() == 0);
    }
    Fixture f(json{{"policy", {{"allow_no_userns", true}}}});
    CmClient cm;
    const std::string archive = f.image("root", "echo uid_map:; cat /proc/self/uid_map; exec sleep 1000");
    auto r = cm.install(archive, R"({"name": "r", "userns": false})");
    CHECK_FALSE(r.success);
    CHECK(r.errorName == "org.mbl.Error.AccessDenied");
    CHECK(contains(r.message, "allow_host_root"));
    CHECK(cm.appCount() == 0);
    CHECK_FALSE(fs::exists(f.stack.root() + "/var/lib/mbl/apps/r"));
    auto staging = mbl::run({"ls", "-A", f.stack.root() + "/var/lib/mbl/apps/.staging"});
    CHECK(str::trim(staging->out).empty());
}

TEST_CASE("user namespaces: with the device policy's consent an app runs with host ids (uid_map is the identity)")
{
    Fixture f(json{{"policy", {{"allow_no_userns", true}, {"allow_host_root", true}}}});
    CmClient cm;
    const std::string archive = f.image("hostids", "echo uid_map:; cat /proc/self/uid_map; exec sleep 1000");
    REQUIRE(cm.install(archive, R"({"name": "h", "userns": false})").success);
    REQUIRE(cm.waitLog("h", "uid_map:"));
    REQUIRE(CmClient::waitFor([&] { return !lineAfter(cm.logs("h"), "uid_map:").empty(); }));
    CHECK(mapLine(lineAfter(cm.logs("h"), "uid_map:")) == std::vector<unsigned long>{0, 0, 4294967295ul});
}

TEST_CASE("seccomp: inside an app, clone with namespace flags, unshare, setns, mount, keyctl, ptrace, bpf and the "
          "rest of what podman refuses fail with EPERM; clone3 with ENOSYS; a plain fork works")
{
    if (!test::haveTool("cc")) {
        test::skip("a C compiler is needed to build the static probe (tests/setup.sh installs build-essential)");
    }
    Fixture f;
    CmClient cm;
    const std::string probe = f.work.path() + "/nsprobe";
    test::mustRun({"cc", "-static", "-O2", "-o", probe, test::sourceRoot() + "/tests/containers/nsprobe.c"});
    auto layout = test::umociBusyboxImage(f.work.path(), "probe", "p", {"/bin/nsprobe"}, "", {{probe, "bin/nsprobe"}});
    const std::string archive = test::layoutArchive(layout, "p", f.work.path() + "/probe.tar", true);
    REQUIRE(cm.install(archive, R"({"name": "probe", "restart": "no"})").success);
    REQUIRE(cm.waitLog("probe", "probe-done"));
    std::map<std::string, std::string> got;
    for (const auto& line : str::split(cm.logs("probe"), '\n')) {
        auto eq = line.find('=');
        if (eq != std::string::npos && line[0] != '[') {
            got[line.substr(0, eq)] = line.substr(eq + 1);
        }
    }
    INFO(cm.logs("probe"));
    CHECK(got["clone_plain"] == "ok");
    CHECK(got["socket_inet"] == "ok");
    CHECK(got["clone3"] == "ENOSYS");
    for (const char* call :
         {"clone_newuser", "clone_newnet", "clone_newns", "clone_newpid", "unshare_user", "unshare_ns", "unshare_net",
          "setns", "mount", "umount2", "pivot_root", "open_tree", "fsopen", "keyctl", "add_key", "request_key", "ptrace",
          "process_vm_readv", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "kexec_load", "init_module",
          "reboot", "swapon", "acct", "syslog", "personality", "open_by_handle_at", "settimeofday", "chroot",
          "sethostname", "quotactl", "vmsplice", "iopl", "modify_ldt", "socket_netlink_audit"}) {
        INFO(call);
        CHECK(got[call] == "EPERM");
    }
}

// Not run by default (hidden tag): the install cost of user namespaces, i.e.
// of giving the unpacked rootfs to the app's host ids (chown at install; runc
// 1.1 has no idmapped rootfs). The same archive (busybox and 5000 files of
// 1 KiB) installed with and without a user namespace, in alternating order,
// 7 rounds: medians and the median of the per-round ratios. Never asserted.
//   build/tests/containers/containers-integration-tests '[bench]'
TEST_CASE("bench: install with a user namespace against without", "[.][bench]")
{
    Fixture f(json{{"policy", {{"allow_no_userns", true}, {"allow_host_root", true}}}});
    CmClient cm;
    const std::string files = f.work.path() + "/many";
    for (int d = 0; d < 20; ++d) {
        const std::string sub = files + "/d" + std::to_string(d);
        REQUIRE(fs::makeDirs(sub));
        for (int i = 0; i < 250; ++i) {
            REQUIRE(fs::writeFileAtomic(sub + "/f" + std::to_string(i), std::string(1024, 'x'), 0644));
        }
    }
    auto layout = test::umociBusyboxImage(f.work.path(), "bench", "b", {"/bin/sh", "-c", "exec sleep 1000"}, "",
                                          {{files, "many"}});
    const std::string archive = test::layoutArchive(layout, "b", f.work.path() + "/bench.tar", false);
    std::vector<double> with, without, ratio;
    for (int round = 0; round < 7; ++round) {
        double ms[2] = {0, 0};
        for (int k = 0; k < 2; ++k) {
            const bool userns = (round % 2 == 0) == (k == 0);
            const std::string name = std::string(userns ? "u" : "h") + std::to_string(round);
            const json opts = {{"name", name}, {"userns", userns}, {"autostart", false}};
            const auto t0 = std::chrono::steady_clock::now();
            auto r = cm.install(archive, opts.dump());
            const auto t1 = std::chrono::steady_clock::now();
            REQUIRE(r.success);
            ms[userns ? 0 : 1] = std::chrono::duration<double, std::milli>(t1 - t0).count();
            cm.remove(name, true);
        }
        with.push_back(ms[0]);
        without.push_back(ms[1]);
        ratio.push_back(ms[0] / ms[1]);
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    std::printf("install of busybox + 5000 files, 7 rounds: with userns median %.1f ms, without %.1f ms, "
                "per-round ratio median %.3f\n",
                median(with), median(without), median(ratio));
    const std::string log = f.stack.log("container-manager");
    const auto p = log.rfind("given to host ids");
    if (p != std::string::npos) {
        std::printf("last chown: %s\n", log.substr(p, log.find('\n', p) - p).c_str());
    }
}
