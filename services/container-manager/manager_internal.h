// SPDX-License-Identifier: Apache-2.0
#pragma once
// What the files of the container manager share inside the manager: an app's
// record in memory and the helpers every concern uses. Not for outside users.

#include "app_state.h"
#include "container_manager.h"
#include "oci_image.h"
#include "userns.h"

#include "mbl/fd.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
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
    std::vector<std::string> withheld; // what its image asked for and was not given (mbl-app.json)
    bool desiredRunning = false;

    AppState state = AppState::Installed;
    AppHold hold = AppHold::None; // the operation that owns the app (Busy to others)
    pid_t pid = 0;
    std::int32_t exitCode = 0;
    std::uint32_t restartCount = 0;
    std::string health = "unknown";
    bool oomKilled = false;

    Fd pidfd;
    bool ownChild = false;
    pid_t shimPid = 0; // the pidfd is the shim's (its exit status is in the exit record)
    std::uint64_t gen = 0;
    bool suppressRestart = false; // the restart policy waits (an update, a settings restart)
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
    // The app's host ids (user namespace), size 0 without one; newRange: allocated by this install.
    std::uint32_t idBase = 0;
    std::uint32_t idSize = 0;
    bool newRange = false;
    bool newAddress = false; // a private-network address this install reserved
    std::string txnId; // staged under a transaction (C3): not switched to
    bool derivedName = false; // the name came from the image, not from the options
    bool replace = false;     // the options allow replacing another image's app of that name
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

// "<key> <n>" lines of a cgroup file (memory.events, memory.oom_control): n, 0 if absent.
std::uint64_t readCounter(const std::string& path, const std::string& key);
// "<a> <b>\n" records of the shim directory; {0, 0} when unreadable.
std::pair<long, long> readPair(const std::string& path);
// Is pid (still) a shim? Guards against a reused pid after a reboot-less restart.
bool isShim(pid_t pid, const std::string& shimPath);
// mbl-container-shim beside the daemon's executable, "" if absent.
std::string shimBinary();
// "a, b, c"
std::string joined(const std::vector<std::string>& v);
int pidfdOpen(pid_t pid);
// The image's process as kept in mbl-app.json.
nlohmann::json processJson(const ImageProcess& p);
// The bundle's config.json for these settings, from the image's process kept in
// mbl-app.json; "" for a version installed before that was kept.
// `host`: the host side (data folder, cgroup, network and bus paths); the
// image's process and ids come from mbl-app.json.
Expected<std::string> specText(const std::string& bundle, const AppSettings& settings, SpecInputs host);
// Regenerates the bundle's config.json from the image's process and the app's
// effective settings; rewrites it only when it differs. Runs on the runtime
// worker, before the runtime reads it.
Status ensureSpec(const std::string& bundle, const AppSettings& settings, const SpecInputs& host);
// What a bundle's image asked for and was not given (its mbl-app.json "withheld").
std::vector<std::string> bundleWithheld(const std::string& bundle);
// The image a bundle came from: its title, else its ref name ("" if unknown).
std::string bundleIdentity(const std::string& bundle);
// "1.0.0", "v2", "2024.1-rc1": a tag that names a version rather than an app.
bool looksLikeVersion(const std::string& s);
// The largest install options document taken (C4: a bundle's settings, 64 KiB).
inline constexpr std::size_t kMaxOptionsBytes = 64 * 1024;
// The host ids a bundle's app runs with (its mbl-app.json "userns"), size 0 without a user namespace.
IdRange bundleIds(const std::string& bundle);
// The host uid the bundle's process runs as (config.json's process.user.uid
// through its uid mappings); nullopt when config.json cannot tell.
std::optional<std::uint32_t> bundleHostUid(const std::string& bundle);
// Before an "app_api" start: the bus (dbus-daemon) refuses a uid it cannot look
// up, so the app's host uid must resolve through NSS (user_records.h); else
// NotFound saying what to fix. Runtime worker (an NSS lookup may block).
Status checkBusIdentity(const std::string& bundle);
// Before a start of a bundle with a user namespace: /data given to the app's
// ids if it is not theirs yet (data from a version without one). Runtime worker.
Status prepareData(const std::string& bundle, const std::string& dataDir);
// chmod 0711: runc enters the container's user namespace before it mounts the
// rootfs, so the app's root (an unprivileged host id) must be able to cross
// every folder above it.
void traversable(const std::string& dir);

} // namespace mbl::containers
