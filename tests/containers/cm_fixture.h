#pragma once
// The container-manager integration tests' fixture: a private stack whose
// manager runs with short timers, real runc, images built by umoci and
// archived by skopeo or tar, and a teardown that leaves no container behind.

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
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

// A stack whose container manager uses short timers, so tests stay quick.
using test::TestStack;

struct Fixture {
    TestStack stack;
    test::TempDir work{"mbl-cm-it"};

    explicit Fixture(json config = json::object())
    {
        requireRunc();
        json c = {{"stop_grace_ms", 1500}, {"backoff_base_ms", 200}, {"backoff_cap_ms", 800}};
        for (auto it = config.begin(); it != config.end(); ++it) {
            c[it.key()] = it.value();
        }
        (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json", c.dump());
        startManager();
    }
    void startManager(const std::vector<std::string>& env = {})
    {
        TestStack::StartOptions o;
        o.env = env;
        auto st = stack.start("container-manager", o);
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
        if (stack.running("container-manager")) {
            (void)stack.stop("container-manager");
        }
        for (const auto& id : runcContainers()) {
            (void)mbl::run({"runc", "--root", runcRoot(), "delete", "--force", id});
        }
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
