#pragma once
// The cloud client's logic: the hawkBit DDI connection, polling, device
// attributes, deployments, downloads and feedback. All network work runs on a
// worker thread (polling) and on one thread per download; the bus side only
// queues work and is told about changes through a Listener. No bus code here.

#include "ddi.h"
#include "feedback_queue.h"
#include "http.h"
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
};
struct TlsCredentials {
    std::string keyPem;
    std::string chainPem;
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

struct CloudSettings {
    std::chrono::seconds defaultSleep{300};
    std::chrono::milliseconds backoffBase{2000};
    std::chrono::milliseconds backoffCap{600000};
    std::chrono::seconds authRetry{300};
    std::chrono::seconds unprovisionedRetry{60};
    long connectTimeoutSec = 30;
    long requestTimeoutSec = 120;
    std::size_t maxBodyBytes = 1u << 20;
    long lowSpeedLimit = 1024;
    long lowSpeedTimeSec = 60;
    int downloadRetries = 5;
    std::chrono::milliseconds downloadRetryBase{1000};
    std::int64_t maxBytesPerSec = 0;
    std::string deviceClass;
    bool allowOtherHosts = false;
    bool verbose = false;
    // hawkBit's confirmation flow: confirm every action at once ("auto"), or ask
    // through ConfirmationRequested and wait for Confirm ("manual").
    bool confirmManually = false;

    static Expected<CloudSettings> fromConfig(const Config& config);
};

struct Snapshot {
    std::string connectionState = "unprovisioned";
    std::uint64_t lastContact = 0;
    std::uint32_t pollInterval = 0;
    std::string serverUrl;
    std::uint32_t downloadProgress = 0;
    std::string lastError;
    std::string installedActionId; // the server's installedBase: the last action finished on this device
};

class CloudClient {
public:
    static Expected<std::unique_ptr<CloudClient>> open(const Paths& paths, const Config& config);
    ~CloudClient();
    CloudClient(const CloudClient&) = delete;
    CloudClient& operator=(const CloudClient&) = delete;

    // Starts the polling worker.
    void start(DeviceSource& source, Listener& listener);
    // Stops the worker and every download (joins them).
    void stop();

    Snapshot snapshot() const;
    void pollNow();

    // Queued persistently and delivered in order by the worker.
    Status reportFeedback(const std::string& actionId, const Feedback& feedback);
    // Apps' attributes under "<namespace>."; an empty map removes the namespace.
    Status setAttributes(const std::string& ns, const std::map<std::string, std::string>& attrs);
    std::map<std::string, std::string> attributes() const;

    // Answers an action that waits for confirmation (confirmation "manual"):
    // queued persistently like feedback. NotFound when no such action waits.
    Status confirm(const std::string& actionId, bool confirmed, const std::vector<std::string>& details);
    // Actions waiting for confirmation: id -> normalised deployment JSON.
    std::map<std::string, std::string> pendingConfirmations() const;

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
    // last byte, and downloadFinished reports the reason.
    Expected<Fd> download(const std::string& actionId, const std::string& artifactJson);

    const std::string& stateDir() const { return stateDir_; }

private:
    CloudClient() = default;
    struct DownloadJob;

    void run();
    std::chrono::milliseconds cycle();
    Status connect();
    void setState(const std::string& state, const std::string& error = "");
    std::chrono::milliseconds serverTrouble(const std::string& why, const HttpResponse* resp);
    Status deliverFeedback();
    Status pushAttributes(const std::string& url, bool force);
    void handleDeployment(const std::string& href);
    void handleCancel(const std::string& href);
    void handleInstalledBase(const std::string& href);
    // True when it confirmed the action (poll again soon: it is offered next).
    bool handleConfirmation(const std::string& href);
    // Actions this device closed (persisted): never announced again. mu_ held.
    bool closedLocked(const std::string& actionId) const;
    Status rememberClosedLocked(const std::string& actionId);
    void downloadWorker(std::shared_ptr<DownloadJob> job);
    std::map<std::string, std::string> mergedAttributes(const std::map<std::string, std::string>& system) const;
    void notify(const std::vector<std::string>& names);
    // The PollInterval in effect (override, else the server's sleep); mu_ held.
    std::uint32_t effectivePollSecsLocked() const;

    std::string stateDir_;
    CloudSettings settings_;
    std::unique_ptr<FeedbackQueue> queue_;

    DeviceSource* source_ = nullptr;
    Listener* listener_ = nullptr;
    std::thread worker_;

    mutable std::mutex mu_;
    std::mutex settingsMu_; // serialises applySettings (taken before mu_, never inside it)
    std::condition_variable cv_;
    bool stop_ = false;
    std::atomic<bool> stopping_{false}; // aborts the worker's transfer on stop()
    bool wake_ = false;
    RuntimeSettings overrides_;
    log::Level startLogLevel_ = log::Level::Info;
    std::uint32_t serverPollSecs_ = 0; // the server's (or default) sleep; 0 before the first poll
    bool intervalChanged_ = false;     // settings changed the poll interval: recompute the wait
    std::vector<std::string> closedActions_; // oldest first, at most kClosedActionsKept
    std::set<std::string> downloadOnly_;      // announced download-only actions ("downloaded" closes them)
    std::string installedJson_;
    Snapshot snap_;
    std::map<std::string, std::map<std::string, std::string>> appAttributes_;
    std::map<std::string, std::string> systemAttributes_;
    bool attributesDirty_ = true;
    std::set<std::string> cancelPending_;
    std::map<std::string, std::string> pendingConfirmations_; // manual: action id -> deployment JSON
    std::vector<std::shared_ptr<DownloadJob>> downloads_;
    std::shared_ptr<const TlsSettings> tls_; // for download sessions
    Origin origin_;
    std::string baseUrl_;

    // Worker-thread only.
    std::unique_ptr<HttpSession> session_;
    std::unique_ptr<Backoff> backoff_;
    std::string etag_;
    PollResult lastPoll_;
    std::map<std::string, std::string> lastSent_;
    std::string configDataUrl_;
    std::map<std::string, std::string> emittedDeployments_; // action id -> href
    std::string installedBaseHref_;
    std::map<std::string, std::string> confirmationsSeen_; // action id -> confirmationBase href handled
    bool pollSleep_ = false; // the last cycle ended in a regular poll sleep (not a back-off)
};

} // namespace mbl::cloud
