// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator: turns "the cloud wants X" or "the operator installed bundle
// Y" into calls on the other four services, in order, writing each step to the
// journal before taking it, and reports the outcome truthfully. It owns no
// artifacts and no slots. Runs entirely on the daemon's event loop; no bus code.

#include "journal.h"
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
    std::chrono::milliseconds healthGrace{10000};    // everything must stay up this long
    std::chrono::milliseconds healthTimeout{300000}; // for everything to come up after a reboot
    unsigned maxAttempts = 3;              // restarts of an interrupted operation before it fails
    bool requireCloudForHealth = true;     // the cloud must be reachable for a firmware commit
    std::chrono::milliseconds peerCheckInterval{2000}; // how often a pending install is checked for a peer restart
    // A cloud download the network interrupted (DownloadFinished "interrupted", or no
    // answer at all) is fetched again once the server is reachable, after
    // min(downloadRetryMax, downloadRetryBase * 2^n), at most downloadRetries times.
    unsigned downloadRetries = 10;
    std::chrono::milliseconds downloadRetryBase{30000};
    std::chrono::milliseconds downloadRetryMax{900000};
    std::chrono::milliseconds connectedCheckInterval{5000}; // while waiting for the server
    std::chrono::milliseconds downloadResultWait{3000};     // for DownloadFinished after a cut stream

    static Expected<Settings> fromConfig(const Paths& paths, const Config& config);
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
    void onAppInstallCompleted(const std::string& installOp, const std::string& app, bool success,
                               const std::string& errorName, const std::string& message);
    void onDownloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                            const std::string& message);

    // The local API.
    Expected<std::string> installBundle(Fd bundle);
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
    // Journaled transitions.
    void begin(nlohmann::json op);
    void setState(const std::string& state, const std::string& step);
    void save();
    void advance();
    void fail(const Error& e);
    void finishOp(bool success, const Error& e, const std::string& message);
    void feedback(const std::string& execution, const std::string& result, const std::vector<std::string>& details);
    void feedbackProgress(const std::string& detail);

    // Steps.
    void startDownloadAndInstall();
    void streamIntoUpdate(Fd source);
    void startStoreOnly();
    void installStored();
    void afterBundleInstalled();
    void installNextApp();
    void applyConfigs();
    void applyConfigDocument(const nlohmann::json& doc);
    void configApplied(const nlohmann::json& doc);
    void configFailed(const Error& e);
    void restoreConfig(std::function<void()> then);
    void removeDroppedApps();
    void afterApps();
    void rebootNow();
    void verifyAfterReboot();
    void healthCheck(bool withCloud, std::function<void(Status)> done);
    void healthAttempt(const std::string& id, std::chrono::steady_clock::time_point deadline,
                       std::function<void(Status)> done);
    void healthProbe(const std::string& id, std::function<void(Status)> done);
    void commitFirmware();
    void resume(nlohmann::json op);
    // loop_.addTimer / loop_.post for callbacks that touch this object.
    void after(std::chrono::milliseconds delay, std::function<void()> fn);
    void later(std::function<void()> fn);
    void armWatchdog();
    void checkPeers();
    void peerLostOperation(const std::string& bus);
    // A cloud download ended without the artifact: fetch it again later when the
    // network was at fault, otherwise fail.
    enum class DownloadEnd {
        CallFailed,   // Download itself was refused (no stream)
        StreamCut,    // the stream ended short: DownloadFinished may still be on its way
        ResultAwaited // as StreamCut, after waiting for DownloadFinished
    };
    void downloadFailed(const Error& e, DownloadEnd how);
    void retryDownloadWhenConnected(const std::string& opId);

    bool isCurrent(const std::string& opId) const;
    std::string cur(const char* key) const;
    unsigned totalSteps() const;

    Settings settings_;
    Peers& peers_;
    EventLoop& loop_;
    Listener& listener_;
    Journal journal_;
    std::optional<nlohmann::json> op_;
    std::optional<nlohmann::json> pending_; // a cloud deployment that arrived while busy
    std::unique_ptr<Relay> relay_;
    std::function<void(std::size_t)> storeNext_; // download-only: stores artifact i, then the next
    std::string lastError_;
    bool cancelRequested_ = false;
    // The cloud client's last DownloadFinished for the current operation.
    struct DownloadResult {
        std::string opId, result, message;
    } downloadResult_;
    unsigned downloadAttempt_ = 0; // a decision waiting for DownloadFinished belongs to one attempt
    std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

} // namespace mbl::coordinator
