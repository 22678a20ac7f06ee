// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator: turns "the cloud wants X" or "the operator installed bundle
// Y" into one transaction over the other four services, writing each step to
// the journal before taking it, and reports the outcome truthfully. It owns no
// artifacts and no slots. Runs entirely on the daemon's event loop; no bus code.
//
// The engine is split by step: coordinator.cpp (the record, the journal, the
// transitions, the entry points, resuming), step_download.cpp (artifacts into
// Update1.Install), step_apps.cpp (staging and activating apps), step_firmware.cpp
// (arm, reboot, verify), step_config.cpp, step_health.cpp (the gate),
// step_commit.cpp, step_rollback.cpp.

#include "journal.h"
#include "operation.h"
#include "peers.h"
#include "relay.h"

#include "mbl/config.h"
#include "mbl/event_loop.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace mbl::coordinator {

struct Settings {
    std::string stateDir;                  // journal and stored downloads
    // How to reboot after arming a firmware slot: the configured command, or by
    // default a request file that mbl-reboot.path answers (the coordinator holds
    // no privilege to reboot by itself).
    std::vector<std::string> rebootCommand;
    // Applies a config payload's "hostname" (the name is appended); empty: not supported.
    std::vector<std::string> hostnameCommand;
    std::string rebootRequestFile;
    // The health gate: which checks ("services": the four peers answer; "cloud": the
    // cloud client is connected; "apps": every app that should run is running and
    // healthy), how long everything may take to come up, how long it must stay up.
    std::set<std::string> healthChecks{"services", "cloud", "apps"};
    std::chrono::milliseconds healthGrace{10000};
    std::chrono::milliseconds healthTimeout{300000};
    std::chrono::milliseconds healthProbeInterval{500};
    unsigned maxAttempts = 3;              // restarts of an interrupted operation before it fails
    std::chrono::milliseconds peerCheckInterval{2000}; // how often a pending install is checked for a peer restart
    // A cloud download the network interrupted (DownloadFinished "interrupted", or no
    // answer at all) is fetched again once the server is reachable, after
    // min(downloadRetryMax, downloadRetryBase * 2^n), at most downloadRetries times.
    unsigned downloadRetries = 10;
    std::chrono::milliseconds downloadRetryBase{30000};
    std::chrono::milliseconds downloadRetryMax{900000};
    std::chrono::milliseconds connectedCheckInterval{5000}; // while waiting for the server
    std::chrono::milliseconds downloadResultWait{3000};     // for DownloadFinished after a cut stream
    // The health deadline is journaled against CLOCK_BOOTTIME, valid in one boot.
    std::string bootIdPath = "/proc/sys/kernel/random/boot_id";
    std::function<std::int64_t()> boottimeMs; // default: clock_gettime(CLOCK_BOOTTIME)
    // Test hook (MBL_COORDINATOR_TEST_PAUSE): stop at this point ("<state>" once
    // journaled, "staging-apps:N" after N apps staged, "configuring:N" after N
    // config sections applied, "rolling-back-config:N" after N sections
    // restored, "rolling-back-firmware:marked-bad" between MarkBad and the
    // reboot back) and wait for a kill.
    std::string pausePoint;

    static Expected<Settings> fromConfig(const Paths& paths, const Config& config);
};

// A local install (InstallBundle / Install).
struct LocalOptions {
    bool replaceApps = false; // C5: remove installed apps the bundle does not name
};

// What the bus side is told.
class Listener {
public:
    virtual ~Listener() = default;
    virtual void propertiesChanged(const std::vector<std::string>& names) = 0;
    virtual void operationCompleted(const std::string& id, bool success, const std::string& errorName,
                                    const std::string& message) = 0;
};

class Coordinator {
public:
    Coordinator(Settings settings, Peers& peers, EventLoop& loop, Listener& listener);
    ~Coordinator();

    // Resumes or rolls back what the journal says was running. Call once the bus is up.
    void start();

    // Events from the peers.
    void onDeploymentRequested(const std::string& actionId, const std::string& deploymentJson);
    void onCancelRequested(const std::string& actionId);
    void onUpdateCompleted(const std::string& updateOp, bool success, const std::string& errorName,
                           const std::string& message);
    void onUpdateProgress(std::uint32_t percent);
    void onAppInstallCompleted(const std::string& installOp, const std::string& app, bool success,
                               const std::string& errorName, const std::string& message);
    void onDownloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                            const std::string& message);

    // The local API.
    Expected<std::string> installBundle(Fd bundle, const LocalOptions& options = {});
    Status cancel(const std::string& operationId);
    nlohmann::json status() const;
    nlohmann::json history(std::size_t count) const;

    // Properties.
    std::string state() const;
    std::string operationId() const;
    std::uint32_t progress() const;
    std::string step() const;
    std::string lastError() const { return lastError_; }

private:
    // ------------------------------------------------ coordinator.cpp: the core
    void begin(Operation op);
    // The cloud client sent the running action's document again, changed.
    void deploymentChanged(const nlohmann::json& deployment);
    // The one way to change state: checked against the transition table,
    // journaled, announced. False: do not go on (the journal could not be
    // written and the operation is stopping, or a test pause point).
    [[nodiscard]] bool enter(State to, const std::string& step);
    // Journals the current record; false if it could not (the operation then stops).
    [[nodiscard]] bool save();
    void finish(State final, const std::string& message);
    void feedback(const std::string& execution, const std::string& result, const std::vector<std::string>& details);
    void feedbackProgress(const std::string& detail);
    void bumpProgress(std::uint32_t percent);
    // The next forward step, from what the operation holds.
    void advance();
    void resume();
    bool pauseAt(const std::string& point);

    // The one "is this still the operation and step that asked" check: wraps a
    // callback so it runs only if the operation is still current, no step was
    // taken since (each enter() starts a new epoch) and the daemon is alive.
    template <typename F>
    auto guarded(F fn)
    {
        return [this, life = std::weak_ptr<int>(life_), id = op_ ? op_->id : std::string(), epoch = epoch_,
                fn = std::move(fn)](auto&&... args) mutable {
            if (life.expired() || !isCurrent(id, epoch)) {
                return;
            }
            fn(std::forward<decltype(args)>(args)...);
        };
    }
    bool isCurrent(const std::string& id, std::uint64_t epoch) const;
    // Timers and posted work that belong to the current step.
    void after(std::chrono::milliseconds delay, std::function<void()> fn);
    void later(std::function<void()> fn);

    // ------------------------------------------------ step_download.cpp
    void startDownloadAndInstall();
    void installStored();
    void streamIntoUpdate(Fd source, const std::string& artifactName);
    void startStoreOnly();
    void storeArtifact(std::size_t i);
    void bundleStaged(const std::string& updateOp);
    void readManifest(const std::string& updateOp);
    void readConfigPayload(const std::string& updateOp, const std::string& payload);
    void afterBundles();
    enum class DownloadEnd {
        CallFailed,   // Download itself was refused (no stream)
        StreamCut,    // the stream ended short: DownloadFinished may still be on its way
        ResultAwaited // as StreamCut, after waiting for DownloadFinished
    };
    void downloadFailed(const Error& e, DownloadEnd how);
    void retryDownloadWhenConnected();
    void resumeDownloading();
    void watchPeers();
    void peerLostOperation(const std::string& bus);

    // ------------------------------------------------ step_apps.cpp
    void stageNextApp();
    void appStaged(bool success, const Error& e);
    void resumeStagingApps();
    void activateApps();
    void switchApps();
    void snapshotBeforeChange(std::function<void()> then);

    // ------------------------------------------------ step_firmware.cpp
    void armFirmware();
    void rebootNow();
    void verifyAfterReboot();
    // Runs `then` if the device still runs the new firmware (or none was
    // installed); a device that fell back meanwhile rolls back.
    void onNewSlot(std::function<void()> then);

    // ------------------------------------------------ step_config.cpp
    void applyConfig();
    void applyConfigSections();
    void restoreConfig();

    // ------------------------------------------------ step_health.cpp
    void checkHealth();
    void healthAttempt();
    void healthProbe(std::function<void(Status)> done);
    std::string readBootId() const;
    std::int64_t boottimeMs() const;

    // ------------------------------------------------ step_commit.cpp
    void commitAll();
    void commitFirmware();
    void commitApps();
    void commitDroppedApps();
    void commitRelease();

    // ------------------------------------------------ step_rollback.cpp
    // Enters the rollback chain (or ends the operation if nothing was staged).
    void rollBack(const Error& why);
    void rollbackNext();
    void rollbackApps();
    void releaseBundles();
    void rollbackFirmware();
    void retryUndo(std::function<void(Done)> call, Done done);

    Settings settings_;
    Peers& peers_;
    EventLoop& loop_;
    Listener& listener_;
    Journal journal_;
    std::optional<Operation> op_;
    std::uint64_t epoch_ = 0;
    bool journalBroken_ = false; // the current operation is stopping without a journal
    bool paused_ = false;        // test pause point reached
    std::optional<nlohmann::json> pending_; // a cloud deployment that arrived while busy (journaled)
    std::unique_ptr<Relay> relay_;
    std::string lastError_;
    // The cloud client's last DownloadFinished for the current operation.
    struct DownloadResult {
        std::string opId, result, message;
    } downloadResult_;
    unsigned downloadAttempt_ = 0; // a decision waiting for DownloadFinished belongs to one attempt
    std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

} // namespace mbl::coordinator
