// SPDX-License-Identifier: Apache-2.0
#pragma once
// Integration-test harness: a private dbus-daemon of type system loaded with the
// real files of dbus-policy/, the five daemons started from the build tree with
// their state in a temporary folder (MBL_ROOT), and a teardown that leaves no
// process or file behind, also when a test fails (children die with the test).

#include "mbl/expected.h"
#include "mbl/process.h"

#include <sdbus-c++/sdbus-c++.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mbl::test {

// From the environment meson sets for every test.
std::string buildRoot();
std::string sourceRoot();
std::string policyDir();

// Skips the current test executable (exit 77) with the reason on stderr.
[[noreturn]] void skip(const std::string& reason);

// A temporary directory, removed with everything in it on destruction.
class TempDir {
public:
    explicit TempDir(const std::string& prefix = "mbl-test");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

struct ServiceSpec {
    std::string label;      // "update"
    std::string busName;    // "org.mbl.Update1"
    std::string objectPath; // "/org/mbl/Update1"
    std::string binary;     // path relative to the build root
    std::string user;       // user the daemon runs as (as on a device)
    std::string stateName;  // its folder under var/lib/mbl and run/mbl
};
const std::vector<ServiceSpec>& allServices();
const ServiceSpec& service(const std::string& label);

// uid/gid of a user name; nullopt if the user does not exist.
std::optional<std::pair<uid_t, gid_t>> lookupUser(const std::string& name);

class TestStack {
public:
    struct Options {
        // Policy files (by bus name) left out of the bus configuration.
        std::vector<std::string> withoutPolicies;
        // Other policy files put beside ours (e.g. the host's
        // /usr/share/dbus-1/system.d/org.freedesktop.systemd1.conf for a double
        // of systemd on the private bus).
        std::vector<std::string> extraPolicies;
    };
    TestStack();
    explicit TestStack(const Options& options);
    ~TestStack();
    TestStack(const TestStack&) = delete;
    TestStack& operator=(const TestStack&) = delete;

    const std::string& root() const { return root_; }   // MBL_ROOT of the daemons
    const std::string& address() const { return address_; }
    std::string logPath(const std::string& label) const;
    std::string log(const std::string& label) const;

    struct StartOptions {
        std::optional<std::string> user; // overrides the spec's user
        std::vector<std::string> env;    // extra KEY=VALUE
        std::vector<std::string> args;   // extra arguments
        std::chrono::milliseconds timeout{10000};
    };
    // Starts a daemon and waits until it owns its name. On failure (it exited or
    // timed out) the error carries its exit status and the last lines of its log.
    Status start(const std::string& label);
    Status start(const std::string& label, const StartOptions& opts);
    Status startAll();
    // Spawns without waiting for the name (for tests of failing starts).
    Expected<Child> spawn(const std::string& label, const StartOptions& opts);
    // SIGTERM and wait; returns the exit status and how long it took.
    std::pair<ExitStatus, std::chrono::milliseconds> stop(const std::string& label);
    // SIGKILL, as a crash would.
    void kill(const std::string& label);
    bool running(const std::string& label);
    pid_t pid(const std::string& label) const;

    // A connection to the private bus as the test process (root).
    sdbus::IConnection& bus();
    bool nameHasOwner(const std::string& busName);

    // busctl --address=<bus> ARGS, optionally as another user (setpriv).
    RunResult busctl(const std::vector<std::string>& args, const std::optional<std::string>& asUser = std::nullopt);
    // Any command with DBUS_SYSTEM_BUS_ADDRESS and MBL_ROOT pointing at this stack.
    RunResult runTool(const std::vector<std::string>& argv, const std::optional<std::string>& asUser = std::nullopt);

    // Environment entries a client needs for this stack.
    std::vector<std::string> clientEnv() const;

private:
    void prepareTree();
    std::string dir_;
    std::string root_;
    std::string address_;
    Child busDaemon_;
    std::map<std::string, Child> daemons_;
    std::unique_ptr<sdbus::IConnection> bus_;
};

} // namespace mbl::test
