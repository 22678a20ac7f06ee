// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cloud client's logic: the hawkBit DDI connection of one device. A worker
// thread polls (when and how the connection stands is the Poller's decision),
// delivers the feedback queue, keeps the server's attributes equal to the
// device's (AttributeStore), and reads deployments, cancellations and
// confirmations (ActionBook). Downloads run in the Downloader. The bus side only
// queues work and is told about changes through a Listener. No bus code here.

#include "actions.h"
#include "attributes.h"
#include "cloud_config.h"
#include "ddi.h"
#include "downloader.h"
#include "feedback_queue.h"
#include "http.h"
#include "poller.h"
#include "mbl/remote_key.h"
#include "settings.h"

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/fd.h"
#include "mbl/log.h"
#include "mbl/paths.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace mbl::cloud {

// What the identity service hands over (org.mbl.DeviceIdentity1).
struct Provisioning {
    std::string serverUrl;
    std::string tenant;
    std::string authMode; // mtls, target-token, gateway-token
    std::string token;
    std::string serverCaPem;
    std::string deviceId;
    bool operator==(const Provisioning& o) const
    {
        return serverUrl == o.serverUrl && tenant == o.tenant && authMode == o.authMode && token == o.token &&
               serverCaPem == o.serverCaPem && deviceId == o.deviceId;
    }
};
// Mutual TLS: the certificate chain (leaf first) and who signs the handshake.
// The device's identity service keeps its key and signs (`signer`); `keyPem`
// (an in-process key) is for benchmarks and fakes only.
struct TlsCredentials {
    std::string keyPem;
    std::string chainPem;
    crypto::HandshakeSigner signer;
};

// Where identity and device facts come from (the bus side implements it; tests may fake it).
// Called from the worker thread only.
class DeviceSource {
public:
    virtual ~DeviceSource() = default;
    // NotProvisioned when there is no provisioning document yet.
    virtual Expected<Provisioning> provisioning() = 0;
    virtual Expected<TlsCredentials> tlsCredentials() = 0;
    // Facts published as attributes: firmware version, installed apps (best effort).
    virtual std::map<std::string, std::string> systemAttributes() = 0;
};

// Told about changes; called from worker threads (the bus side posts to its loop).
class Listener {
public:
    virtual ~Listener() = default;
    virtual void propertiesChanged(const std::vector<std::string>& names) = 0;
    virtual void deploymentRequested(const std::string& actionId, const std::string& json) = 0;
    virtual void cancelRequested(const std::string& actionId) = 0;
    virtual void downloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                                  const std::string& message) = 0;
    // An action waits for the device's consent (confirmation "manual").
    virtual void confirmationRequested(const std::string& actionId, const std::string& json) = 0;
};

struct Snapshot {
    std::string connectionState = "unprovisioned";
    std::uint64_t lastContact = 0;
    std::uint32_t pollInterval = 0;
    std::uint64_t nextPoll = 0; // epoch seconds of the next planned attempt
    std::string serverUrl;
    std::uint32_t downloadProgress = 0;
    std::uint32_t activeDownloads = 0;
    std::string lastError;
    std::string installedActionId; // the server's installedBase: the last action finished on this device
};

class CloudClient : public Downloader::Events {
public:
    // `clock`: the time polls are planned in (the real one unless a benchmark scales it); must outlive the client.
    static Expected<std::unique_ptr<CloudClient>> open(const Paths& paths, const Config& config,
                                                       Clock& clock = Clock::real());
    ~CloudClient() override;
    CloudClient(const CloudClient&) = delete;
    CloudClient& operator=(const CloudClient&) = delete;

    // Starts the polling worker.
    void start(DeviceSource& source, Listener& listener);
    // Stops the worker and every download (joins them).
    void stop();

    Snapshot snapshot() const;
    void pollNow();
    // The identity service changed something (IdentityChanged): the worker reads
    // provisioning and credentials again and uses what changed for the next request.
    void identityChanged();
    // The coordinator's bus name has a new owner (it started or restarted): what
    // the old process was told is gone with it, so every open action is read and
    // announced again at once (an unchanged document of the action it carries
    // out is nothing new to the coordinator).
    void listenerRestarted();

    // Queued persistently and delivered in order by the worker.
    Status reportFeedback(const std::string& actionId, const Feedback& feedback);
    // Apps' attributes under "<namespace>."; an empty map removes the namespace
    // (on the server too: configData is sent with mode replace).
    Status setAttributes(const std::string& ns, const std::map<std::string, std::string>& attrs);
    std::map<std::string, std::string> attributes() const;

    // Answers an action that waits for confirmation (confirmation "manual"):
    // queued persistently like feedback. NotFound when no such action waits.
    Status confirm(const std::string& actionId, bool confirmed, const std::vector<std::string>& details);
    // Actions waiting for confirmation: id -> normalised deployment JSON.
    std::map<std::string, std::string> pendingConfirmations() const;

    // The bus could not send the DeploymentRequested signal carrying `json` (the
    // listener says so): the deployment counts as not announced; the next poll
    // announces it again, and LastError says why.
    void deploymentNotAnnounced(const std::string& actionId, const std::string& json, const std::string& why);

    // The server's installedBase (the last finished action) as a normalised
    // deployment JSON (same form as DeploymentRequested); "" when none is known.
    std::string installedDeployment() const;

    // Over-the-air settings: the overrides in effect, in the form applySettings takes.
    std::string settingsJson() const;
    // Replaces every override (absent keys revert to the defaults), persisted
    // atomically in the state dir first; a bad document changes nothing. A new
    // poll interval becomes PollInterval and the worker's current wait at once.
    Status applySettings(const std::string& json);

    // Starts a download; returns the read end of a pipe. The stream is complete
    // only when exactly `size` bytes arrive: on any failure (hash or size
    // mismatch, retries exhausted, cancel) the pipe is closed early, before the
    // last byte, and downloadFinished reports the reason. AccessDenied while the
    // server says download "skip" for the action.
    Expected<Fd> download(const std::string& actionId, const std::string& artifactJson);

    const std::string& stateDir() const { return stateDir_; }

private:
    explicit CloudClient(Clock& clock) : clock_(clock) {}

    void run();
    // One attempt: connect if needed, poll, feedback, attributes, links. Returns the event for the Poller.
    PollEvent cycle(std::optional<std::chrono::seconds>& retryAfter);
    Status connect();
    // The session to use for the next request: connected, with credentials read again if the identity changed.
    void refreshIdentity();
    void setLastError(const std::string& error);
    void publishState(std::chrono::milliseconds wait);
    Status deliverFeedback();
    void pushAttributes(const std::string& url);
    void handleDeployment(const std::string& href);
    void handleCancel(const std::string& href);
    void handleInstalledBase(const std::string& href);
    // True when it confirmed the action (poll again soon: it is offered next).
    bool handleConfirmation(const std::string& href);
    // Closes an action whose deployment the device refuses (closed/failure with the reason).
    void refuseDeployment(const std::string& actionId, const std::string& why);
    std::string authFailureHint(long status) const;
    void notify(const std::vector<std::string>& names);
    // The PollInterval in effect (override, else the server's sleep, else poll.default_sleep); mu_ held.
    std::uint32_t effectivePollSecsLocked() const;

    // Downloader::Events
    void downloadProgress(std::uint32_t percent, std::uint32_t running) override;
    void downloadFinished(const std::string& actionId, const std::string& filename, const std::string& result,
                          const std::string& message) override;

    Clock& clock_;
    std::string stateDir_;
    CloudSettings settings_;
    std::string otherHostsCaPem_;
    std::unique_ptr<FeedbackQueue> queue_;
    std::unique_ptr<Downloader> downloader_;

    DeviceSource* source_ = nullptr;
    Listener* listener_ = nullptr;
    std::thread worker_;

    mutable std::mutex mu_;
    std::mutex settingsMu_; // serialises applySettings (taken before mu_, never inside it)
    std::condition_variable cv_;
    bool stop_ = false;
    std::atomic<bool> stopping_{false}; // aborts the worker's transfer on stop()
    bool wake_ = false;
    bool identityChanged_ = false;
    RuntimeSettings overrides_;
    log::Level startLogLevel_ = log::Level::Info;
    std::uint32_t serverPollSecs_ = 0; // the server's sleep; 0 before the first answer
    bool intervalChanged_ = false;     // settings changed the poll interval: recompute the wait
    std::string installedJson_;
    Snapshot snap_;
    std::unique_ptr<AttributeStore> attributes_;
    std::unique_ptr<ActionBook> actions_;
    std::map<std::string, std::string> pendingConfirmations_; // manual: action id -> deployment JSON
    std::shared_ptr<const SessionConfig> sessionConfig_;       // for download sessions
    Origin origin_;
    std::string baseUrl_;

    // Worker-thread only.
    std::unique_ptr<Poller> poller_;
    std::unique_ptr<HttpSession> session_;
    Provisioning provisioning_;
    TlsCredentials credentials_;
    std::string certificateCn_; // of the client certificate in use (mTLS), for the 401 hint
    std::string etag_;
    PollResult lastPoll_;
    std::string configDataUrl_;
    std::string installedBaseHref_;
    std::map<std::string, std::string> confirmationsSeen_; // action id -> confirmationBase href handled
    bool pollSoon_ = false; // the cycle confirmed an action: it is offered at the next poll
};

} // namespace mbl::cloud
