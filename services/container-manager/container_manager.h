// SPDX-License-Identifier: Apache-2.0
#pragma once
// The container manager's logic: installed apps, their OCI bundles and the
// runc containers that run them. No bus code here. Everything public runs on
// the event loop's thread; blocking work (unpacking, every runtime call) runs
// on worker threads and reports back through loop.post().
//
// On disk (<state>/apps):  <name>/app.json        the app's record (atomic writes)
//                          <name>/versions/<v>/   the bundle: config.json, rootfs/
//                          <name>/data/           the /data volume (kept across versions)
//                          .staging/              installs in progress (removed at start)
// Runtime: <runtime>/apps/runc is the runtime's --root; logs in <log>/apps/<name>.log.

#include "app_config.h"
#include "app_overrides.h"
#include "app_state.h"
#include "network.h"
#include "runtime.h"
#include "transaction.h"
#include "userns.h"

#include "mbl/config.h"
#include "mbl/event_loop.h"
#include "mbl/expected.h"
#include "mbl/fd.h"
#include "mbl/log.h"
#include "mbl/paths.h"
#include "mbl/serial_worker.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mbl::containers {

// What the bus side is told; every call comes on the loop thread.
class ManagerEvents {
public:
    virtual ~ManagerEvents() = default;
    virtual void appAdded(const std::string& name) = 0;
    virtual void appRemoved(const std::string& name) = 0;
    // Names of App properties that changed (State, Version, Pid, ExitCode, RestartCount, Health).
    virtual void appChanged(const std::string& name, const std::vector<std::string>& properties) = 0;
    virtual void appStateChanged(const std::string& name, const std::string& state) = 0;
    virtual void installCompleted(const std::string& operationId, const std::string& name, const Status& result) = 0;
    // Operation or AppCount changed.
    virtual void managerChanged(const std::vector<std::string>& properties) = 0;
};

struct AppView {
    std::string name;
    std::string version;
    std::string state;  // appStateName(): installed, starting, running, stopping, stopped, exited, failed
    std::uint32_t pid = 0;
    std::int32_t exitCode = 0; // -1: unknown (the exit happened while the manager was not the parent)
    std::uint32_t restartCount = 0;
    std::string health; // unknown, starting, healthy, unhealthy
    bool oomKilled = false;
    std::vector<std::string> withheld; // what the image asked for and was not given
};

class ContainerManager {
public:
    using Done = std::function<void(Status)>;

    // Loads the installed apps, re-adopts containers that still run, cleans
    // what an interrupted install left. Call start() once the loop runs.
    static Expected<std::unique_ptr<ContainerManager>> open(const Paths& paths, const Config& config, EventLoop& loop);
    ~ContainerManager();
    ContainerManager(const ContainerManager&) = delete;
    ContainerManager& operator=(const ContainerManager&) = delete;

    void setEvents(ManagerEvents* events) { events_ = events; }
    // Autostart (first start since boot) and restarts owed by re-adopted state.
    void startup();
    // The daemon was told to stop (SIGTERM/SIGINT). `systemState` is systemd's
    // SystemState (org.freedesktop.systemd1(5)), or why it could not be had.
    // The one place that decides what a stop of the daemon does to the apps:
    //  - "stopping" (a poweroff, reboot, halt or kexec is under way): every app
    //    is stopped as StopApp stops it (SIGTERM, stop_grace_ms, SIGKILL), all at
    //    once, without changing what it should do after the boot (desired state,
    //    restart count and records are kept, as after a power loss); from then
    //    on nothing is started and no health verdict is given, so no update or
    //    transaction in progress moves; `proceed` runs once every app is
    //    stopped (or stop_grace_ms + 20 s have passed);
    //  - anything else, or unknown: the apps are left running (the unit's
    //    KillMode=process) for the next start to re-adopt; `proceed` runs at once.
    void terminate(const Expected<std::string>& systemState, std::function<void()> proceed);

    // Returns the operation id at once; the end is reported by installCompleted.
    Expected<std::string> install(Fd archive, const std::string& optionsJson);
    void start(const std::string& name, Done done);
    void stop(const std::string& name, Done done);
    void restart(const std::string& name, Done done);
    void remove(const std::string& name, bool removeData, Done done);
    std::vector<AppView> list() const;
    Expected<AppView> app(const std::string& name) const;
    Expected<std::string> logs(const std::string& name, std::uint32_t lines) const;

    // Transactions (contract C3; install() with the option "transaction" stages
    // an app under one). Each replies through `done` once the step is over.
    void activateTransaction(const std::string& id, Done done);
    void commitTransaction(const std::string& id, Done done);
    void rollbackTransaction(const std::string& id, Done done);
    // {"id", "state", "apps": [{"name", "from_version", "to_version", "state"}]};
    // state "unknown" for an id never staged.
    std::string transaction(const std::string& id) const;
    // The app whose user namespace holds host uid `uid` (for the services an app
    // calls through the app-facing API); NotFound if none.
    Expected<std::string> appOfUid(std::uint32_t uid) const;

    // Over-the-air settings: the overrides in effect, in the form applySettings takes.
    std::string settings() const { return overrides_.toJson().dump(); }
    // Replaces all overrides (absent keys revert to the defaults): checked first
    // (InvalidArgument, nothing changed), persisted atomically, the log level set
    // at once, and running apps whose effective settings changed restarted.
    Status applySettings(const std::string& json);

    std::string operation() const;
    std::uint32_t appCount() const { return static_cast<std::uint32_t>(apps_.size()); }
    const std::string& appsDir() const { return appsDir_; }
    const ManagerConfig& config() const { return config_; }
    std::string cgroupParent() const { return cgroupParent_; }

private:
    struct App;
    struct Staged;
    struct TxnRun;
    ContainerManager(const Paths& paths, ManagerConfig config, EventLoop& loop);

    Status loadApps();
    void adopt();
    App* find(const std::string& name);
    const App* find(const std::string& name) const;

    // Lifecycle on the loop thread.
    void startApp(App& a, Done done);
    void stopApp(App& a, Done done);
    void onStarted(const std::string& name, std::uint64_t gen, Expected<pid_t> pid, pid_t shimPid = 0);
    // Watches for the exit of the app's init: through its shim when there is one
    // (the shim records the exit status), else through the init itself.
    void watchExit(App& a, pid_t pid, bool ownChild, pid_t shimPid = 0);
    std::string shimRecord(const std::string& name) const { return shimDir_ + "/" + name + ".shim"; }
    std::string exitRecord(const std::string& name) const { return shimDir_ + "/" + name + ".exit"; }
    void onExit(const std::string& name, std::uint64_t gen);
    void onDeleted(const std::string& name);
    void onGraceOver(const std::string& name, std::uint64_t gen);
    void runProbe(const std::string& name, std::uint64_t gen);
    void setHealth(App& a, const std::string& health);
    // Moves the app's lifecycle by the transition table (app_state.h) and emits the change.
    void setState(App& a, AppEvent event);
    void changed(App& a, std::vector<std::string> props);
    void scheduleRestart(App& a, bool failed);
    void notifyHealth(App& a, bool healthy, const std::string& why);
    void waitHealth(App& a, std::function<void(bool, std::string)> cb);

    // Install.
    void onStaged(const std::string& op, std::shared_ptr<Staged> staged);
    void finishInstall(const std::string& op, const std::string& name, Status result);
    void updateTransaction(const std::string& op, std::shared_ptr<Staged> staged);

    // Transactions (container_manager_txn.cpp).
    void loadTransactions();
    void resumeTransactions();
    void stageInTransaction(const std::string& op, std::shared_ptr<Staged> staged);
    // The non-final transaction an app is part of, or nullptr.
    const Transaction* transactionOf(const std::string& app) const;
    // Versions folders a non-final transaction still needs (kept at start-up).
    bool keptByTransaction(const std::string& app, const std::string& dir) const;
    // Apps whose start the resumed transaction steps own (not autostarted).
    bool startOwnedByTransaction(const std::string& app) const;
    void saveTransaction(const Transaction& t, std::function<void(Status)> then);
    TxnRun& txnRun(const std::string& id);
    // Runs `job` on the disk worker (in order with the app records), then `then` on the loop.
    void onDisk(std::function<Status()> job, std::function<void(Status)> then);
    void activateNext(const std::string& id);
    void activateApp(const std::string& id, const std::string& name);
    void rollbackNext(const std::string& id);
    void rollbackApp(const std::string& id, const std::string& name);
    void commitNow(const std::string& id);
    void transactionStepFailed(const std::string& id, const Error& e);
    void pruneTransactions();
    std::string txnDir() const { return appsDir_ + "/.transactions"; }
    // Reads the settings a bundle was installed with (its mbl-app.json).
    Expected<AppSettings> bundleSettings(const std::string& bundleDir) const;

    // The app's record, written atomically by diskQueue_ (so writes stay in order):
    // persist waits for it, persistLater does not (the hot paths: start, stop, restarts).
    Status persist(const App& a);
    void persistLater(const App& a);
    void loadOverrides();
    // Stops a running app and starts it again with the settings now in effect.
    void restartForSettings(App& a);
    AppSettings effective(const App& a) const;
    std::string appDir(const std::string& name) const { return appsDir_ + "/" + name; }
    std::string versionDir(const std::string& name, const std::string& v) const
    {
        return appDir(name) + "/versions/" + v;
    }
    std::string logPath(const std::string& name) const { return logDir_ + "/" + name + ".log"; }
    std::string cgroupsPath(const std::string& name) const { return "/" + cgroupParent_ + "/" + name; }
    // The host side of an app's runtime config: /data, cgroup, network and bus paths.
    SpecInputs hostInputs(const std::string& name) const;
    // An app that is not installed (nor part of an unfinished transaction) holds
    // no address, and no host ids unless its /data is kept.
    void releaseUnused(const std::string& name);
    std::uint64_t oomKills(const std::string& name) const;
    void rotateLogs(const std::string& fileName);
    void watchLogs();

    Paths paths_;
    ManagerConfig config_;
    EventLoop& loop_;
    Runtime runtime_;
    std::string appsDir_;
    std::string logDir_;
    std::string cgroupParent_;
    ManagerEvents* events_ = nullptr;
    std::map<std::string, std::unique_ptr<App>> apps_;
    std::map<std::string, std::string> installs_; // operation id -> app name ("" until known)
    std::map<std::string, Transaction> txns_;
    std::unique_ptr<IdAllocator> ids_; // per-app host id ranges (user namespaces); thread-safe
    std::unique_ptr<AppNetworks> net_; // the private network (addresses thread-safe; the rest on the runtime worker)
    std::map<std::string, std::string> installTxns_; // install operation id -> transaction id
    std::map<std::string, std::unique_ptr<TxnRun>> txnRuns_; // steps in progress and their waiters
    Overrides overrides_;
    log::Level baseLogLevel_ = log::Level::Info;
    std::string settingsPath_;
    std::string shimPath_; // "" : no shim (the manager is the inits' parent while it runs)
    std::string shimDir_;  // <runtime>/apps/shim: per app, "<shim pid> <init pid>" and "<init pid> <exit code>"
    std::uint64_t nextOp_ = 1;
    bool firstSinceBoot_ = false;
    bool shuttingDown_ = false; // terminate() at system shutdown: apps are being stopped, nothing starts
    Fd inotify_;
    // One shim started ahead of time (taken by a start, refilled in the background).
    std::mutex shimMutex_;
    std::optional<Runtime::WaitingShim> waitingShim_;
    Expected<Runtime::WaitingShim> takeShim();
    void refillShim();
    SerialWorker runtimeQueue_;
    SerialWorker probeQueue_; // health probes may take long: not in the runtime's queue
    SerialWorker diskQueue_;  // app records and app removal, in order
    std::atomic<bool> stopping_{false}; // read by the install worker: the daemon stops
    SerialWorker installQueue_;         // last: joined first at destruction
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace mbl::containers
