// SPDX-License-Identifier: Apache-2.0
#pragma once
// The container-manager integration tests' fixture: a private stack whose
// manager runs with short timers, real runc, images built by umoci and
// archived by skopeo or tar, and a teardown that leaves no container behind.

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"
#include "systemd_unit.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <dirent.h>
#include <functional>
#include <unistd.h>
#include <string>
#include <vector>

namespace mbl::test::cm {

using nlohmann::json;

inline bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

inline bool alive(pid_t pid)
{
    return pid > 0 && ::kill(pid, 0) == 0;
}

inline void requireRunc()
{
    if (!test::haveTool("runc")) {
        test::skip("runc is not installed (tests/setup.sh installs it)");
    }
}

// Removes the user records named <prefix>* from /run/userdb and the id links to them.
inline void removeUserRecords(const std::string& prefix)
{
    const std::string dir = "/run/userdb";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr || prefix.empty()) {
        if (d != nullptr) {
            ::closedir(d);
        }
        return;
    }
    std::vector<std::string> gone;
    while (struct dirent* e = ::readdir(d)) {
        const std::string f = e->d_name;
        char target[512] = {};
        const ssize_t n = ::readlink((dir + "/" + f).c_str(), target, sizeof target - 1);
        if (str::startsWith(f, prefix) || (n > 0 && str::startsWith(std::string(target, static_cast<std::size_t>(n)), prefix))) {
            gone.push_back(dir + "/" + f);
        }
    }
    ::closedir(d);
    for (const auto& p : gone) {
        (void)::unlink(p.c_str());
    }
}

// A stack whose container manager uses short timers, so tests stay quick, and
// runs as its systemd unit runs it (Type=notify, Delegate=yes: systemd_unit.h)
// wherever cgroupfs is writable.
using test::TestStack;

struct Fixture {
    TestStack stack;
    test::TempDir work{"mbl-cm-it"};
    // Last: it goes first, after the destructor stopped the manager and its containers.
    std::unique_ptr<SystemdUnit> unit = std::make_unique<SystemdUnit>();

    // The apps' user records go to the host's /run/userdb (the only place
    // nss-systemd reads, and the bus resolves uids through it): each stack names
    // them with its own prefix and takes ids from its own first id, so stacks
    // running at once (other suites, other worktrees) never share a record.
    std::string userPrefix;
    std::uint32_t firstId = 100000;

    explicit Fixture(json config = json::object()) : Fixture(std::move(config), TestStack::Options{}) {}
    // With a bus configured by `options` (e.g. a double of systemd's policy beside ours).
    Fixture(json config, const TestStack::Options& options) : stack(options)
    {
        requireRunc();
        const std::string id = stack.root().substr(stack.root().find("mbl-stack.") + 10, 6);
        userPrefix = "mbl-t" + id + "-";
        firstId = 100000 + static_cast<std::uint32_t>(std::hash<std::string>{}(id) % 20000) * 65536;
        configure(std::move(config), false);
    }
    // containers.json: the fixture's base with `config`'s keys over it (objects
    // merged one level deep); the manager restarted when `restart`.
    void configure(const json& config, bool restart = true)
    {
        json c = {{"stop_grace_ms", 1500},
                  {"backoff_base_ms", 200},
                  {"backoff_cap_ms", 800},
                  {"userns", {{"user_prefix", userPrefix}, {"first_id", firstId}}}};
        for (auto it = config.begin(); it != config.end(); ++it) {
            if (it.value().is_object() && c.contains(it.key()) && c[it.key()].is_object()) {
                for (auto in = it.value().begin(); in != it.value().end(); ++in) {
                    c[it.key()][in.key()] = in.value();
                }
            } else {
                c[it.key()] = it.value();
            }
        }
        REQUIRE(fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json", c.dump()));
        if (restart) {
            (void)stack.stop("container-manager");
        }
        startManager();
    }
    void startManager(const std::vector<std::string>& env = {})
    {
        TestStack::StartOptions o;
        o.env = env;
        Status st;
        if (unit->unavailable().empty()) {
            o.env.push_back(unit->env()[0]);
            st = unit->startIn([&] { return stack.start("container-manager", o); });
        } else {
            st = stack.start("container-manager", o);
        }
        if (!st) {
            FAIL(st.error().describe());
        }
    }
    std::string runcRoot() const { return stack.root() + "/run/mbl/apps/runc"; }
    std::vector<std::string> runcContainers()
    {
        auto r = mbl::run({"runc", "--root", runcRoot(), "list", "-q"});
        std::vector<std::string> out;
        if (r) {
            for (auto& l : str::split(r->out, '\n')) {
                if (!str::trim(l).empty()) {
                    out.push_back(str::trim(l));
                }
            }
        }
        return out;
    }
    std::string dataDir(const std::string& app) const { return stack.root() + "/var/lib/mbl/apps/" + app + "/data"; }

    // An image made by umoci, archived by skopeo (oci-archive) or tar.
    std::string image(const std::string& tag, const std::string& script, bool skopeo = true)
    {
        auto layout = test::umociBusyboxImage(work.path(), "layout", tag, {"/bin/sh", "-c", script});
        return test::layoutArchive(layout, tag, work.path() + "/" + tag + ".tar", skopeo);
    }
    ~Fixture()
    {
        // Leave no container behind, also when a check failed. The manager stops
        // first (leaving its containers running), or it could restart an app
        // deleted here before the stack stops it.
        // A step the app lifecycle's table does not have is a bug, even when the test passed.
        CHECK_FALSE(contains(stack.log("container-manager"), "no transition from"));
        if (stack.running("container-manager")) {
            (void)stack.stop("container-manager");
        }
        for (const auto& id : runcContainers()) {
            (void)mbl::run({"runc", "--root", runcRoot(), "delete", "--force", id});
        }
        removeUserRecords(userPrefix);
    }
};

inline std::string statusField(pid_t pid, const std::string& field)
{
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/status");
    if (!text) {
        return "";
    }
    for (const auto& line : str::split(*text, '\n')) {
        if (str::startsWith(line, field + ":")) {
            return str::trim(line.substr(field.size() + 1));
        }
    }
    return "";
}

} // namespace mbl::test::cm
