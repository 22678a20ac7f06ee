#pragma once
// What the files of the container manager share inside the manager: an app's
// record in memory and the helpers every concern uses. Not for outside users.

#include "container_manager.h"

#include "mbl/fd.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mbl::containers {

using Clock = std::chrono::steady_clock;

inline constexpr char kAppFile[] = "app.json";
inline constexpr char kVersionMeta[] = "mbl-app.json";

// ---------------------------------------------------------------- App

struct ContainerManager::App {
    AppSettings settings;
    std::string version;
    std::string dir; // its bundle's folder under versions/ (the version, or "<version>+<op or transaction>")
    bool desiredRunning = false;

    std::string state = "installed";
    pid_t pid = 0;
    std::int32_t exitCode = 0;
    std::uint32_t restartCount = 0;
    std::string health = "unknown";
    bool oomKilled = false;

    Fd pidfd;
    bool ownChild = false;
    pid_t shimPid = 0; // the pidfd is the shim's (its exit status is in the exit record)
    std::uint64_t gen = 0;
    bool starting = false;
    bool stopping = false;
    bool removing = false;
    bool inTransaction = false;
    bool suppressRestart = false;
    bool exitedWhileAway = false;
    bool staleSettings = false; // re-adopted, started with settings older than those in effect
    // The runtime's delete of an exited container is queued: starts and stops wait for it.
    bool deleting = false;
    std::vector<std::function<void()>> afterDelete;
    std::vector<Done> startWaiters;
    std::vector<Done> stopWaiters;
    std::vector<std::function<void(bool, std::string)>> healthWaiters;
    EventLoop::TimerId restartTimer = 0;
    EventLoop::TimerId graceTimer = 0;
    EventLoop::TimerId killTimer = 0;
    EventLoop::TimerId probeTimer = 0;
    unsigned backoffAttempt = 0;
    Clock::time_point startedAt;
    std::uint64_t oomAtStart = 0;
    // The effective settings (and version) config.json was last generated for:
    // a start regenerates it only when they changed.
    std::string specKey;
};

struct ContainerManager::Staged {
    Status result;
    std::string txnId; // staged under a transaction (C3): not switched to
    AppSettings settings;
    StagedImage image;
    std::string dir;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
};


// A transaction's step chain in progress and the replies it owes.
struct ContainerManager::TxnRun {
    bool busy = false; // a chain of steps (activation, commit or rollback) runs
    std::vector<ContainerManager::Done> activateWaiters;
    std::vector<ContainerManager::Done> commitWaiters;
    std::vector<ContainerManager::Done> rollbackWaiters;
};

// Sorted entries of a folder ("." and ".." left out); empty when it cannot be read.
std::vector<std::string> listDir(const std::string& dir);
// Appends one line to a file (the manager's own lines in an app's log).
void appendLine(const std::string& path, const std::string& line);
// "2026-11-24T10:00:00Z"
std::string nowStamp();
// Test-only crash point: MBL_CM_TEST_PAUSE=<point>[:seconds] makes the worker
// that reaches <point> write <apps>/.paused and wait there (for ever without
// seconds) so a test can kill -9 the manager at that step. Points: "staged"
// (install), "txn-app-switched" (an app's record switched by an activation,
// its step not yet saved), "txn-app-back" (the same in a rollback),
// "txn-commit" (before a commit deletes the previous versions). Without the
// variable it is one getenv.
void testPause(const std::string& point, const std::string& appsDir);

} // namespace mbl::containers
