// SPDX-License-Identifier: Apache-2.0
#include "coordinator.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <fcntl.h>
#include <random>
#include <unistd.h>

namespace mbl::coordinator {

namespace {

const char* const kPeerNames[] = {"org.mbl.DeviceIdentity1", "org.mbl.Update1", "org.mbl.ContainerManager1",
                                  "org.mbl.CloudClient1"};

std::int64_t nowEpoch()
{
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string newOperationId()
{
    std::random_device rd;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%08x", rd());
    return "op-" + std::to_string(nowEpoch()) + "-" + buf;
}

bool isStreamingState(const std::string& s)
{
    return s == "downloading";
}

// Artifacts of a normalised deployment, in order (every chunk's artifacts).
std::vector<nlohmann::json> artifactsOf(const nlohmann::json& deployment)
{
    std::vector<nlohmann::json> out;
    for (const auto& c : deployment.value("chunks", nlohmann::json::array())) {
        for (const auto& a : c.value("artifacts", nlohmann::json::array())) {
            out.push_back(a);
        }
    }
    return out;
}

Status validateDeployment(const nlohmann::json& d)
{
    if (!d.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, "deployment is not a JSON object");
    }
    if (!d.contains("chunks") || !d["chunks"].is_array()) {
        return unexpected(ErrorCode::InvalidArgument, "deployment has no 'chunks' list");
    }
    auto arts = artifactsOf(d);
    if (arts.empty()) {
        return unexpected(ErrorCode::InvalidArgument, "deployment names no artifact");
    }
    for (const auto& a : arts) {
        if (!a.is_object() || !a.contains("filename") || !a["filename"].is_string()) {
            return unexpected(ErrorCode::InvalidArgument, "an artifact has no filename");
        }
    }
    return {};
}

// A string member of a JSON object, or "" when absent or of another type.
std::string stringAt(const nlohmann::json& j, const char* key)
{
    if (!j.is_object()) {
        return {};
    }
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

} // namespace

Expected<Settings> Settings::fromConfig(const Paths& paths, const Config& config)
{
    if (auto st = config.rejectUnknownKeys({"reboot_command", "hostname_command", "health_grace_ms", "health_timeout_ms",
                                            "max_attempts", "require_cloud_for_health", "download_retries",
                                            "download_retry_base_ms", "download_retry_max_ms"});
        !st) {
        return unexpected(st.error());
    }
    Settings s;
    s.stateDir = paths.state("coordinator");
    auto reboot = config.getStringList("reboot_command", {});
    auto hostname = config.getStringList("hostname_command", {});
    auto grace = config.getInt("health_grace_ms", 10000, 0, 3600000);
    auto timeout = config.getInt("health_timeout_ms", 300000, 0, 86400000);
    auto attempts = config.getInt("max_attempts", 3, 1, 100);
    auto cloud = config.getBool("require_cloud_for_health", true);
    auto retries = config.getInt("download_retries", 10, 0, 1000);
    auto retryBase = config.getInt("download_retry_base_ms", 30000, 1, 86400000);
    auto retryMax = config.getInt("download_retry_max_ms", 900000, 1, 86400000);
    for (const Error* e : {reboot ? nullptr : &reboot.error(), hostname ? nullptr : &hostname.error(),
                           grace ? nullptr : &grace.error(),
                           timeout ? nullptr : &timeout.error(),
                           attempts ? nullptr : &attempts.error(), cloud ? nullptr : &cloud.error(),
                           retries ? nullptr : &retries.error(), retryBase ? nullptr : &retryBase.error(),
                           retryMax ? nullptr : &retryMax.error()}) {
        if (e != nullptr) {
            return unexpected(*e);
        }
    }
    if (config.json().contains("reboot_command") && reboot->empty()) {
        return unexpected(ErrorCode::InvalidArgument, config.origin() + ": key 'reboot_command' must not be empty");
    }
    s.rebootCommand = *reboot;
    s.hostnameCommand = *hostname;
    s.rebootRequestFile = paths.runtime("coordinator/reboot-request");
    s.healthGrace = std::chrono::milliseconds(*grace);
    s.healthTimeout = std::chrono::milliseconds(*timeout);
    s.maxAttempts = static_cast<unsigned>(*attempts);
    s.requireCloudForHealth = *cloud;
    s.downloadRetries = static_cast<unsigned>(*retries);
    s.downloadRetryBase = std::chrono::milliseconds(*retryBase);
    s.downloadRetryMax = std::chrono::milliseconds(std::max(*retryBase, *retryMax));
    return s;
}

Coordinator::Coordinator(Settings settings, Peers& peers, EventLoop& loop, Listener& listener)
    : settings_(std::move(settings)), peers_(peers), loop_(loop), listener_(listener), journal_(settings_.stateDir)
{
}

Coordinator::~Coordinator() = default;

// ---------------------------------------------------------------- properties

std::string Coordinator::state() const
{
    return op_ ? (*op_)["state"].get<std::string>() : "idle";
}

std::string Coordinator::operationId() const
{
    return op_ ? (*op_)["id"].get<std::string>() : "";
}

std::string Coordinator::step() const
{
    return op_ ? op_->value("step", "") : "";
}

unsigned Coordinator::totalSteps() const
{
    if (!op_) {
        return 1;
    }
    unsigned n = static_cast<unsigned>(std::max<std::size_t>(1, artifactsOf(op_->value("deployment", nlohmann::json::object())).size()));
    n += static_cast<unsigned>(op_->value("apps", nlohmann::json::array()).size());
    if (op_->value("firmware", false)) {
        n += 2; // reboot, commit
    }
    return n;
}

std::uint32_t Coordinator::progress() const
{
    if (!op_) {
        return 0;
    }
    return std::min<std::uint32_t>(100, 100u * op_->value("steps_done", 0u) / totalSteps());
}

std::string Coordinator::cur(const char* key) const
{
    return op_ ? op_->value(key, "") : "";
}

bool Coordinator::isCurrent(const std::string& opId) const
{
    return op_ && (*op_)["id"] == opId;
}

nlohmann::json Coordinator::status() const
{
    nlohmann::json s = {{"state", state()}, {"operation", operationId()}, {"progress", progress()},
                        {"step", step()}, {"last_error", lastError_}};
    if (op_) {
        s["current"] = *op_;
    }
    if (pending_) {
        s["pending_action"] = pending_->value("action_id", "");
    }
    return s;
}

nlohmann::json Coordinator::history(std::size_t count) const
{
    return journal_.history(count);
}

// ---------------------------------------------------------------- journal

void Coordinator::save()
{
    if (auto st = journal_.saveCurrent(*op_); !st) {
        // Without a journal the next step would not be crash-safe: stop here.
        log::error("cannot write the journal: " + st.error().message);
    }
}

void Coordinator::setState(const std::string& state, const std::string& step)
{
    (*op_)["state"] = state;
    (*op_)["step"] = step;
    (*op_)["steps"].push_back({{"time", nowEpoch()}, {"state", state}, {"step", step}});
    save();
    log::info(cur("id") + ": " + state + ": " + step);
    listener_.propertiesChanged({"State", "Step", "Progress", "Operation"});
}

void Coordinator::begin(nlohmann::json op)
{
    op["created"] = nowEpoch();
    op["steps"] = nlohmann::json::array();
    op["steps_done"] = 0;
    op["attempts"] = 1;
    op["artifact"] = 0;
    op_ = std::move(op);
    cancelRequested_ = false;
    lastError_.clear();
    listener_.propertiesChanged({"LastError"});
    armWatchdog();
}

// ---------------------------------------------------------------- peers that restart

void Coordinator::after(std::chrono::milliseconds delay, std::function<void()> fn)
{
    // Timers belong to the loop, which may outlive this object.
    loop_.addTimer(delay, [life = std::weak_ptr<int>(life_), fn = std::move(fn)] {
        if (!life.expired()) {
            fn();
        }
    });
}

void Coordinator::later(std::function<void()> fn)
{
    loop_.post([life = std::weak_ptr<int>(life_), fn = std::move(fn)] {
        if (!life.expired()) {
            fn();
        }
    });
}

void Coordinator::armWatchdog()
{
    const std::string id = cur("id");
    after(settings_.peerCheckInterval, [this, id] {
        if (isCurrent(id)) {
            checkPeers();
        }
    });
}

void Coordinator::checkPeers()
{
    // An install the update service or the container manager was doing dies with
    // it (kill -9, crash, OOM); its restart cleans up but sends no completion. So
    // while one is pending, ask the service which install it is running.
    const std::string id = cur("id");
    const std::string state = cur("state");
    std::string bus;
    std::string key;
    if (state == "downloading" && op_->contains("update_op") && !op_->contains("bundle_installed")) {
        bus = "org.mbl.Update1";
        key = "update_op";
    } else if (state == "installing-apps" && op_->contains("app_install_op")) {
        bus = "org.mbl.ContainerManager1";
        key = "app_install_op";
    }
    if (bus.empty()) {
        armWatchdog();
        return;
    }
    const std::string expected = cur(key.c_str());
    peers_.runningOperation(bus, [this, id, bus, key, expected, state](Expected<std::string> running) {
        if (!isCurrent(id)) {
            return;
        }
        const bool stillWaiting = cur("state") == state && op_->contains(key) && cur(key.c_str()) == expected &&
                                  !(key == "update_op" && op_->contains("bundle_installed"));
        // No answer (the service is restarting): look again later.
        if (stillWaiting && running && *running != expected) {
            peerLostOperation(bus);
        }
        armWatchdog();
    });
}

void Coordinator::peerLostOperation(const std::string& bus)
{
    const unsigned attempts = op_->value("attempts", 1u) + 1;
    (*op_)["attempts"] = attempts;
    if (bus == "org.mbl.Update1") {
        relay_.reset();
        const std::string why = "the update service stopped during the install (nothing was activated)";
        log::warning(cur("id") + ": " + why);
        if (cur("source") == "local") {
            fail(Error{ErrorCode::Failed, why + "; install the bundle again"});
            return;
        }
        if (attempts > settings_.maxAttempts) {
            fail(Error{ErrorCode::Failed, why + ", " + std::to_string(attempts - 1) + " times"});
            return;
        }
        op_->erase("update_op");
        (*op_)["artifact"] = 0;
        (*op_)["steps_done"] = 0;
        feedbackProgress(why + "; downloading and installing again");
        startDownloadAndInstall();
        return;
    }
    const std::string why = "the container manager stopped while installing an app (it removes what it left)";
    log::warning(cur("id") + ": " + why);
    if (attempts > settings_.maxAttempts) {
        fail(Error{ErrorCode::Failed, why + ", " + std::to_string(attempts - 1) + " times"});
        return;
    }
    op_->erase("app_install_op");
    save();
    feedbackProgress(why + "; installing the app again");
    installNextApp();
}

void Coordinator::feedback(const std::string& execution, const std::string& result,
                           const std::vector<std::string>& details)
{
    if (cur("source") != "cloud") {
        return;
    }
    const std::string action = cur("action_id");
    peers_.reportFeedback(action, execution, result, op_->value("steps_done", 0u), totalSteps(), details,
                          [action, execution](Status st) {
                              if (!st) {
                                  // The cloud client queues feedback persistently; an error here
                                  // means it refused the report itself.
                                  log::warning("feedback '" + execution + "' for action " + action +
                                               " refused: " + st.error().describe());
                              }
                          });
}

void Coordinator::feedbackProgress(const std::string& detail)
{
    feedback("proceeding", "none", {detail});
}

void Coordinator::fail(const Error& e)
{
    finishOp(false, e, e.message);
}

void Coordinator::finishOp(bool success, const Error& e, const std::string& message)
{
    if (!op_) {
        return;
    }
    relay_.reset();
    const bool cancelled = !success && e.code == ErrorCode::Cancelled;
    (*op_)["state"] = success ? "succeeded" : (cancelled ? "cancelled" : "failed");
    (*op_)["step"] = message;
    (*op_)["finished"] = nowEpoch();
    (*op_)["result"] = {{"success", success}, {"error", success ? "" : e.name()}, {"message", message}};
    if (success) {
        (*op_)["steps_done"] = totalSteps();
    }
    if (!cancelled) {
        feedback("closed", success ? "success" : "failure", {message});
    }
    if (op_->contains("stored_dir")) {
        (void)fs::removeTree((*op_)["stored_dir"].get<std::string>());
    }
    if (auto st = journal_.finish(*op_); !st) {
        log::error("cannot record the finished operation: " + st.error().message);
    }
    const std::string id = cur("id");
    log::info(id + ": " + (*op_)["state"].get<std::string>() + ": " + message);
    if (!success) {
        lastError_ = e.name() + ": " + message;
    }
    op_.reset();
    listener_.propertiesChanged({"State", "Step", "Progress", "Operation", "LastError"});
    listener_.operationCompleted(id, success, success ? "" : e.name(), message);
    if (pending_) {
        auto next = std::move(*pending_);
        pending_.reset();
        later([this, next]() {
            onDeploymentRequested(next.value("action_id", ""), next.dump());
        });
    }
}

// ---------------------------------------------------------------- entry points

void Coordinator::start()
{
    (void)fs::makeDirs(settings_.stateDir, 0700);
    auto current = journal_.loadCurrent();
    if (!current) {
        log::error(current.error().message);
        return;
    }
    if (!*current) {
        return;
    }
    auto op = std::move(**current);
    // A crash between recording the history and dropping the current record.
    for (const auto& h : journal_.history(50)) {
        if (h.value("id", "") == op.value("id", "")) {
            (void)journal_.finish(h);
            return;
        }
    }
    resume(std::move(op));
}

void Coordinator::resume(nlohmann::json op)
{
    op_ = std::move(op);
    armWatchdog();
    const std::string state = cur("state");
    log::notice(cur("id") + ": resuming after a restart in state '" + state + "'");
    if (state == "rebooting" || state == "verifying" || state == "committing") {
        verifyAfterReboot();
        return;
    }
    if (state == "configuring") {
        // Interrupted while applying: put back what was in effect, then apply again.
        restoreConfig([this, id = cur("id")] {
            if (isCurrent(id)) {
                applyConfigs();
            }
        });
        return;
    }
    if (state == "checking-apps") {
        afterApps(); // everything is installed; the check starts again
        return;
    }
    if (state == "rolling-back") {
        // We rebooted back into the old slot after a failed health check.
        fail(Error{ErrorCode::Failed, op_->value("rollback_reason", std::string("rolled back"))});
        return;
    }
    if (state == "waiting") {
        listener_.propertiesChanged({"State", "Step", "Operation"});
        return; // until the cloud says the maintenance window is open
    }
    if (state == "waiting-network") {
        // Nothing was activated; the download starts again once the server answers.
        listener_.propertiesChanged({"State", "Step", "Operation"});
        retryDownloadWhenConnected(cur("id"));
        return;
    }
    if (state == "installing-apps" && op_->value("bundle_installed", false) && op_->contains("update_op")) {
        // The bundle is installed and its payloads staged: go on with the apps (one
        // the container manager finished meanwhile is found running and skipped).
        op_->erase("app_install_op");
        installNextApp();
        return;
    }
    // Interrupted before anything was activated: start the operation again.
    const unsigned attempts = op_->value("attempts", 1u) + 1;
    (*op_)["attempts"] = attempts;
    if (cur("source") == "local") {
        fail(Error{ErrorCode::Failed, "interrupted by a restart of the coordinator while '" + state +
                                          "'; nothing was activated: install the bundle again"});
        return;
    }
    if (attempts > settings_.maxAttempts) {
        fail(Error{ErrorCode::Failed, "interrupted " + std::to_string(attempts - 1) + " times while '" + state + "'"});
        return;
    }
    (*op_)["artifact"] = 0;
    (*op_)["steps_done"] = 0;
    op_->erase("update_op");
    op_->erase("app_install_op");
    if (state == "storing") {
        startStoreOnly();
    } else {
        startDownloadAndInstall();
    }
}

void Coordinator::onDeploymentRequested(const std::string& actionId, const std::string& deploymentJson)
{
    log::info("the cloud requests deployment " + actionId);
    auto d = nlohmann::json::parse(deploymentJson, nullptr, false);
    if (op_ && cur("action_id") == actionId) {
        // The server repeats an action until it is closed. A waiting action may now install.
        if (cur("state") == "waiting" && !d.is_discarded() && d.value("install_allowed", false) &&
            !d.value("download_only", false)) {
            (*op_)["deployment"] = d;
            installStored();
        }
        return;
    }
    for (const auto& h : journal_.history(50)) {
        if (h.value("source", "") == "cloud" && h.value("action_id", "") == actionId && h.contains("result")) {
            // Already carried out: say so again instead of doing it twice.
            const bool ok = h["result"].value("success", false);
            peers_.reportFeedback(actionId, "closed", ok ? "success" : "failure", 1, 1,
                                  {"already carried out: " + h["result"].value("message", "")}, [](Status) {});
            return;
        }
    }
    if (op_) {
        if (!d.is_discarded()) {
            d["action_id"] = actionId;
            pending_ = d;
            log::info("action " + actionId + " queued behind " + cur("id"));
        }
        return;
    }
    nlohmann::json op = {{"id", newOperationId()}, {"source", "cloud"}, {"action_id", actionId}};
    if (d.is_discarded()) {
        begin(op);
        (*op_)["deployment"] = nlohmann::json::object();
        (*op_)["state"] = "received";
        fail(Error{ErrorCode::InvalidArgument, "the deployment is not valid JSON"});
        return;
    }
    op["deployment"] = d;
    begin(op);
    if (auto st = validateDeployment(d); !st) {
        (*op_)["state"] = "received";
        fail(st.error());
        return;
    }
    feedbackProgress("deployment accepted by the device");
    if (d.value("download_only", false) || !d.value("install_allowed", true)) {
        startStoreOnly();
    } else {
        startDownloadAndInstall();
    }
}

Expected<std::string> Coordinator::installBundle(Fd bundle)
{
    if (op_) {
        return unexpected(ErrorCode::Busy, "operation " + cur("id") + " is running (" + cur("state") + ")");
    }
    if (!bundle) {
        return unexpected(ErrorCode::InvalidArgument, "no bundle file descriptor");
    }
    nlohmann::json op = {{"id", newOperationId()}, {"source", "local"}};
    op["deployment"] = {{"chunks", {{{"part", "bundle"}, {"artifacts", {{{"filename", "local bundle"}}}}}}}};
    begin(op);
    setState("downloading", "verifying and installing the local bundle");
    const std::string id = cur("id");
    streamIntoUpdate(std::move(bundle));
    return id;
}

Status Coordinator::cancel(const std::string& operationId)
{
    if (!op_ || cur("id") != operationId) {
        return unexpected(ErrorCode::NotFound, "no running operation " + operationId);
    }
    const std::string state = cur("state");
    if (state == "storing" || state == "waiting" || state == "waiting-network") {
        fail(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return {};
    }
    if (isStreamingState(state) && !op_->contains("bundle_installed")) {
        cancelRequested_ = true;
        if (relay_) {
            relay_->cancel(); // the update service sees a truncated bundle and arms nothing
        }
        return {};
    }
    return unexpected(ErrorCode::Busy, "operation " + operationId + " is already " + state + "; it cannot be cancelled");
}

void Coordinator::onCancelRequested(const std::string& actionId)
{
    if (!op_ || cur("action_id") != actionId) {
        if (pending_ && pending_->value("action_id", "") == actionId) {
            pending_.reset();
        }
        // Nothing of that action runs here: the cancel is trivially done.
        peers_.reportFeedback(actionId, "closed", "success", 0, 0, {"nothing to cancel: the action is not running"},
                              [](Status) {});
        return;
    }
    const std::string action = actionId;
    auto st = cancel(cur("id"));
    if (!st) {
        peers_.reportFeedback(action, "rejected", "none", 0, 0, {"cannot cancel: " + st.error().message},
                              [](Status) {});
        return;
    }
    peers_.reportFeedback(action, "closed", "success", 0, 0, {"cancelled on the device before installing"},
                          [](Status) {});
}

// ---------------------------------------------------------------- steps

void Coordinator::startDownloadAndInstall()
{
    const auto arts = artifactsOf((*op_)["deployment"]);
    const std::size_t i = op_->value("artifact", 0u);
    if (op_->contains("stored_dir")) {
        installStored();
        return;
    }
    const nlohmann::json art = arts.at(i);
    const std::string name = art.value("filename", "artifact");
    setState("downloading", "downloading, verifying and installing " + name);
    feedbackProgress("downloading and installing " + name);
    const std::string id = cur("id");
    downloadResult_ = {};
    ++downloadAttempt_;
    peers_.download(cur("action_id"), art.dump(), [this, id, name](Expected<Fd> fd) {
        if (!isCurrent(id)) {
            return;
        }
        if (!fd) {
            downloadFailed(Error{fd.error().code, "download of " + name + " failed: " + fd.error().message},
                           DownloadEnd::CallFailed);
            return;
        }
        streamIntoUpdate(std::move(fd).value());
    });
}

void Coordinator::startStoreOnly()
{
    const std::string dir = settings_.stateDir + "/downloads/" + cur("id");
    (*op_)["stored_dir"] = dir;
    (void)fs::removeTree(dir);
    if (auto st = fs::makeDirs(dir, 0700); !st) {
        fail(st.error());
        return;
    }
    setState("storing", "downloading for later installation");
    const std::string id = cur("id");
    auto arts = artifactsOf((*op_)["deployment"]);
    // One artifact at a time keeps the code simple and the link fair.
    storeNext_ = [this, id, dir, arts](std::size_t i) {
        if (!isCurrent(id)) {
            return;
        }
        if (i == arts.size()) {
            (*op_)["steps_done"] = arts.size();
            feedback("downloaded", "none", {"all artifacts downloaded and verified"});
            const auto& d = (*op_)["deployment"];
            if (d.value("download_only", false)) {
                finishOp(true, Error{}, "downloaded (download-only action)");
            } else {
                setState("waiting", "downloaded; waiting for the maintenance window");
                feedback("scheduled", "none", {"waiting for the maintenance window"});
            }
            return;
        }
        const std::string name = arts[i].value("filename", "artifact");
        downloadResult_ = {};
        ++downloadAttempt_;
        peers_.download(cur("action_id"), arts[i].dump(), [this, id, dir, i, name, arts](Expected<Fd> fd) {
            if (!isCurrent(id)) {
                return;
            }
            if (!fd) {
                downloadFailed(Error{fd.error().code, "download of " + name + " failed: " + fd.error().message},
                               DownloadEnd::CallFailed);
                return;
            }
            const std::string path = dir + "/" + std::to_string(i);
            Fd out{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
            if (!out) {
                fail(errnoError("create " + path, errno));
                return;
            }
            const std::uint64_t expected = arts[i].value("size", std::uint64_t{0});
            relay_ = std::make_unique<Relay>(
                loop_, std::move(fd).value(), std::move(out),
                [this, id, i, name, expected, path](Expected<std::uint64_t> bytes) {
                    if (!isCurrent(id)) {
                        return;
                    }
                    if (!bytes) {
                        downloadFailed(Error{bytes.error().code, "download of " + name + " failed: " +
                                                                     bytes.error().message},
                                       DownloadEnd::StreamCut);
                        return;
                    }
                    // The cloud client ends the stream early when anything is wrong
                    // (hash, size, the link); DownloadFinished says which.
                    if (expected != 0 && *bytes != expected) {
                        downloadFailed(Error{ErrorCode::Io, "download of " + name + " ended after " +
                                                                std::to_string(*bytes) + " of " +
                                                                std::to_string(expected) + " bytes"},
                                       DownloadEnd::StreamCut);
                        return;
                    }
                    (void)fs::syncDir(fs::dirName(path));
                    (*op_)["steps_done"] = i + 1;
                    save();
                    storeNext_(i + 1);
                });
        });
    };
    storeNext_(0);
}

void Coordinator::onDownloadFinished(const std::string& actionId, const std::string& filename,
                                     const std::string& result, const std::string& message)
{
    if (!op_ || cur("source") != "cloud" || cur("action_id") != actionId) {
        return;
    }
    log::debug("download of " + filename + " for action " + actionId + ": " + result + " " + message);
    downloadResult_ = {cur("id"), result, message};
}

void Coordinator::downloadFailed(const Error& e, DownloadEnd how)
{
    const std::string id = cur("id");
    if (cancelRequested_) {
        fail(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return;
    }
    if (cur("source") != "cloud" || (how == DownloadEnd::CallFailed && e.code == ErrorCode::InvalidArgument)) {
        fail(e); // refused outright (a bad link, a bad request): fetching again changes nothing
        return;
    }
    if (how == DownloadEnd::StreamCut && downloadResult_.opId != id) {
        // The cloud client's DownloadFinished tells whether the artifact or the link
        // failed; it comes from another process and may arrive after the cut stream.
        relay_.reset();
        const unsigned attempt = downloadAttempt_;
        after(settings_.downloadResultWait, [this, id, e, attempt] {
            if (isCurrent(id) && downloadAttempt_ == attempt) {
                downloadFailed(e, DownloadEnd::ResultAwaited);
            }
        });
        return;
    }
    // No answer at all means the cloud client went away mid-download (it restarts):
    // as retryable as a cut link. Nothing was activated either way.
    const bool seen = downloadResult_.opId == id;
    const std::string result = seen ? downloadResult_.result : "interrupted";
    const std::string why = seen && !downloadResult_.message.empty() ? downloadResult_.message : e.message;
    if (result == "failure") {
        fail(Error{ErrorCode::Io, "the artifact failed its checks: " + why});
        return;
    }
    if (result != "interrupted") {
        fail(e); // the update service refused the bundle (the cloud client saw the stream closed or complete)
        return;
    }
    const unsigned n = op_->value("download_retries", 0u) + 1;
    if (n > settings_.downloadRetries) {
        fail(Error{ErrorCode::Io, "download interrupted " + std::to_string(n) + " times; the last time: " + why});
        return;
    }
    relay_.reset();
    op_->erase("update_op");
    (*op_)["download_retries"] = n;
    (*op_)["retry_step"] = cur("state") == "storing" ? "store" : "install";
    auto delay = settings_.downloadRetryBase;
    for (unsigned i = 1; i < n && delay < settings_.downloadRetryMax; ++i) {
        delay *= 2;
    }
    delay = std::min(delay, settings_.downloadRetryMax);
    const std::string step = "download interrupted (" + why + "); trying again (" + std::to_string(n) + " of " +
                             std::to_string(settings_.downloadRetries) + ") in " +
                             (delay.count() < 1000 ? std::to_string(delay.count()) + " ms"
                                                   : std::to_string(delay.count() / 1000) + " s") +
                             ", once the server is reachable";
    setState("waiting-network", step);
    feedbackProgress(step);
    after(delay, [this, id] {
        if (isCurrent(id)) {
            retryDownloadWhenConnected(id);
        }
    });
}

void Coordinator::retryDownloadWhenConnected(const std::string& opId)
{
    peers_.cloudConnectionState([this, opId](Expected<std::string> state) {
        if (!isCurrent(opId) || cur("state") != "waiting-network") {
            return; // cancelled meanwhile
        }
        if (!state || *state != "connected") {
            after(settings_.connectedCheckInterval, [this, opId] {
                if (isCurrent(opId)) {
                    retryDownloadWhenConnected(opId);
                }
            });
            return;
        }
        log::notice(opId + ": the server is reachable again; downloading again");
        if (cur("retry_step") == "store") {
            startStoreOnly(); // stores every artifact again (the interrupted one was incomplete)
        } else {
            startDownloadAndInstall();
        }
    });
}

void Coordinator::installStored()
{
    const std::size_t i = op_->value("artifact", 0u);
    const std::string path = (*op_)["stored_dir"].get<std::string>() + "/" + std::to_string(i);
    setState("downloading", "verifying and installing the downloaded artifact " + std::to_string(i + 1));
    feedbackProgress("installing the downloaded artifact");
    Fd in{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!in) {
        fail(errnoError("open " + path, errno));
        return;
    }
    streamIntoUpdate(std::move(in));
}

void Coordinator::streamIntoUpdate(Fd source)
{
    // The coordinator stands between the source and the update service (see Relay):
    // a cancel cuts the stream and the update service arms nothing.
    const std::string id = cur("id");
    auto p = makePipe();
    if (!p) {
        fail(p.error());
        return;
    }
    auto [readEnd, writeEnd] = std::move(p).value();
    relay_ = std::make_unique<Relay>(loop_, std::move(source), std::move(writeEnd), [](Expected<std::uint64_t>) {});
    peers_.installBundle(std::move(readEnd), [this, id](Expected<std::string> updateOp) {
        if (!isCurrent(id)) {
            return;
        }
        if (!updateOp) {
            fail(updateOp.error());
            return;
        }
        (*op_)["update_op"] = *updateOp;
        save();
    });
}

void Coordinator::onUpdateCompleted(const std::string& updateOp, bool success, const std::string& errorName,
                                    const std::string& message)
{
    log::debug("update operation " + updateOp + " completed: " + (success ? "success" : errorName + ": " + message));
    if (!op_ || cur("state") != "downloading") {
        return;
    }
    if (op_->contains("update_op") && cur("update_op") != updateOp) {
        return; // an operation of someone else, or of an earlier attempt
    }
    (*op_)["update_op"] = updateOp;
    relay_.reset();
    if (!success) {
        const Error e{errorCodeFromName(errorName), "the bundle was refused: " + message};
        if (cancelRequested_) {
            fail(Error{ErrorCode::Cancelled, "cancelled before installing"});
        } else if (cur("source") == "cloud" && !op_->contains("stored_dir") &&
                   (e.code == ErrorCode::InvalidArgument || e.code == ErrorCode::Timeout || e.code == ErrorCode::Io)) {
            // What a bundle cut short looks like (truncated, no data, a read error): the
            // download may have been cut by the network. That install is over: nothing
            // is pending in the update service any more.
            op_->erase("update_op");
            save();
            downloadFailed(e, DownloadEnd::StreamCut);
        } else {
            fail(e);
        }
        return;
    }
    (*op_)["bundle_installed"] = true;
    (*op_)["steps_done"] = op_->value("artifact", 0u) + 1;
    save();
    afterBundleInstalled();
}

void Coordinator::afterBundleInstalled()
{
    const std::string id = cur("id");
    peers_.operationManifest(cur("update_op"), [this, id](Expected<std::string> text) {
        if (!isCurrent(id)) {
            return;
        }
        if (!text) {
            fail(text.error());
            return;
        }
        auto m = nlohmann::json::parse(*text, nullptr, false);
        if (m.is_discarded() || !m.is_object()) {
            fail(Error{ErrorCode::Failed, "the update service returned a manifest that is not JSON"});
            return;
        }
        nlohmann::json apps = nlohmann::json::array();
        nlohmann::json configs = nlohmann::json::array();
        bool firmware = false;
        const auto payloads = m.contains("payloads") && m["payloads"].is_array() ? m["payloads"] : nlohmann::json::array();
        for (const auto& p : payloads) {
            const std::string type = stringAt(p, "type");
            if (type == "rootfs") {
                firmware = true;
            } else if (type == "app") {
                // The update service's manifest: {"name": payload, "app": {"name", "version"}}.
                const auto app = p.is_object() && p.contains("app") ? p["app"] : nlohmann::json::object();
                const std::string appName = stringAt(app, "name");
                if (appName.empty()) {
                    fail(Error{ErrorCode::InvalidArgument, "app payload '" + stringAt(p, "name") + "' names no app"});
                    return;
                }
                apps.push_back({{"payload", stringAt(p, "name")}, {"name", appName}, {"version", stringAt(app, "version")}});
            } else if (type == "config") {
                configs.push_back(stringAt(p, "name"));
            }
        }
        (*op_)["manifest_version"] = stringAt(m, "version");
        (*op_)["apps"] = apps;
        (*op_)["configs"] = configs;
        (*op_)["firmware"] = firmware;
        (*op_)["app_index"] = 0;
        const auto arts = artifactsOf((*op_)["deployment"]);
        const std::size_t next = op_->value("artifact", 0u) + 1;
        if (next < arts.size()) {
            // Several bundles in one deployment: install them in order.
            (*op_)["artifact"] = next;
            op_->erase("update_op");
            op_->erase("bundle_installed");
            startDownloadAndInstall();
            return;
        }
        installNextApp();
    });
}

void Coordinator::installNextApp()
{
    const auto& apps = (*op_)["apps"];
    const std::size_t i = op_->value("app_index", 0u);
    if (i >= apps.size()) {
        applyConfigs();
        return;
    }
    const std::string appName = apps[i].value("name", "");
    const std::string version = apps[i].value("version", "");
    const std::string id = cur("id");
    peers_.listApps([this, id, i, appName, version](Expected<std::vector<AppInfo>> list) {
        if (!isCurrent(id)) {
            return;
        }
        if (list) {
            for (const auto& a : *list) {
                if (a.name == appName && a.version == version && a.state == "running") {
                    // Desired state already reached: nothing to do for this app.
                    (*op_)["app_index"] = i + 1;
                    (*op_)["steps_done"] = op_->value("steps_done", 0u) + 1;
                    save();
                    installNextApp();
                    return;
                }
            }
        }
        setState("installing-apps", "installing app " + appName + " " + version);
        feedbackProgress("installing app " + appName + " " + version);
        peers_.openPayload(cur("update_op"), (*op_)["apps"][i].value("payload", ""),
                           [this, id, appName, version](Expected<Fd> fd) {
                               if (!isCurrent(id)) {
                                   return;
                               }
                               if (!fd) {
                                   fail(fd.error());
                                   return;
                               }
                               nlohmann::json options = {{"name", appName}, {"version", version}};
                               peers_.installApp(std::move(fd).value(), options.dump(),
                                                 [this, id](Expected<std::string> installOp) {
                                                     if (!isCurrent(id)) {
                                                         return;
                                                     }
                                                     if (!installOp && installOp.error().code == ErrorCode::Busy &&
                                                         op_->value("busy_retries", 0u) < 120) {
                                                         // An install of this app from before a restart of
                                                         // ours is still running there: wait for it, then
                                                         // look again (the finished app is then skipped).
                                                         (*op_)["busy_retries"] = op_->value("busy_retries", 0u) + 1;
                                                         after(std::chrono::seconds(1), [this, id] {
                                                             if (isCurrent(id)) {
                                                                 installNextApp();
                                                             }
                                                         });
                                                         return;
                                                     }
                                                     if (!installOp) {
                                                         fail(installOp.error());
                                                         return;
                                                     }
                                                     (*op_)["app_install_op"] = *installOp;
                                                     save();
                                                 });
                           });
    });
}

void Coordinator::onAppInstallCompleted(const std::string& installOp, const std::string& app, bool success,
                                        const std::string& errorName, const std::string& message)
{
    if (!op_ || cur("state") != "installing-apps" || cur("app_install_op") != installOp) {
        return;
    }
    if (!success) {
        // The container manager kept (or restarted) the previous version.
        Error e{errorCodeFromName(errorName), "app " + app + " failed: " + message};
        if (op_->value("firmware", false)) {
            // The new firmware slot is armed but not booted: abandon it too.
            const std::string id = cur("id");
            peers_.markBad([this, id, e](Status) {
                if (isCurrent(id)) {
                    fail(e);
                }
            });
            return;
        }
        fail(e);
        return;
    }
    (*op_)["app_index"] = op_->value("app_index", 0u) + 1;
    (*op_)["steps_done"] = op_->value("steps_done", 0u) + 1;
    op_->erase("app_install_op");
    save();
    installNextApp();
}

// ---------------------------------------------------------------- over-the-air configuration

namespace {
const char* const kCloudBus = "org.mbl.CloudClient1";
const char* const kContainersBus = "org.mbl.ContainerManager1";

// A config payload: {"version": s, "cloud": {...}, "containers": {...}, "hostname": s}.
Status checkConfigDocument(const nlohmann::json& doc)
{
    if (!doc.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, "the config payload is not a JSON object");
    }
    for (auto it = doc.begin(); it != doc.end(); ++it) {
        const std::string& k = it.key();
        if (k == "version" || k == "hostname") {
            if (!it->is_string() || it->get<std::string>().empty()) {
                return unexpected(ErrorCode::InvalidArgument, "config payload: '" + k + "' must be a non-empty string");
            }
        } else if (k == "cloud" || k == "containers") {
            if (!it->is_object()) {
                return unexpected(ErrorCode::InvalidArgument, "config payload: '" + k + "' must be an object");
            }
        } else {
            return unexpected(ErrorCode::InvalidArgument, "config payload: unknown key '" + k +
                                                              "' (known: version, cloud, containers, hostname)");
        }
    }
    if (!doc.contains("version")) {
        return unexpected(ErrorCode::InvalidArgument, "config payload: 'version' is missing");
    }
    const auto& h = doc.value("hostname", std::string("x"));
    for (char c : h) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) {
            return unexpected(ErrorCode::InvalidArgument, "config payload: 'hostname' has a character outside [A-Za-z0-9.-]");
        }
    }
    if (h.size() > 63 || h.front() == '-') {
        return unexpected(ErrorCode::InvalidArgument, "config payload: 'hostname' is not a valid host name");
    }
    return {};
}
} // namespace

void Coordinator::applyConfigs()
{
    const auto configs = op_->value("configs", nlohmann::json::array());
    if (configs.empty() || op_->value("config_done", false)) {
        removeDroppedApps();
        return;
    }
    if (configs.size() > 1) {
        fail(Error{ErrorCode::InvalidArgument, "the bundle has more than one config payload"});
        return;
    }
    const std::string id = cur("id");
    setState("configuring", "applying the device configuration");
    peers_.openPayload(cur("update_op"), configs[0].get<std::string>(), [this, id](Expected<Fd> fd) {
        if (!isCurrent(id)) {
            return;
        }
        if (!fd) {
            fail(fd.error());
            return;
        }
        std::string text;
        char buf[8192];
        ssize_t n;
        while ((n = ::read(fd->get(), buf, sizeof buf)) > 0 && text.size() < (1u << 20)) {
            text.append(buf, static_cast<std::size_t>(n));
        }
        auto doc = nlohmann::json::parse(text, nullptr, false);
        if (doc.is_discarded()) {
            fail(Error{ErrorCode::InvalidArgument, "the config payload is not JSON"});
            return;
        }
        if (auto st = checkConfigDocument(doc); !st) {
            fail(st.error());
            return;
        }
        applyConfigDocument(doc);
    });
}

void Coordinator::applyConfigDocument(const nlohmann::json& doc)
{
    const std::string id = cur("id");
    // 1. What is in effect now, journaled before anything changes (a restart in the
    //    middle restores it; a second pass must not take a half-applied snapshot).
    if (!op_->contains("config_previous")) {
        auto prev = std::make_shared<nlohmann::json>(nlohmann::json::object());
        auto sections = std::make_shared<std::vector<std::string>>();
        if (doc.contains("cloud")) {
            sections->push_back(kCloudBus);
        }
        if (doc.contains("containers")) {
            sections->push_back(kContainersBus);
        }
        auto step = std::make_shared<std::function<void(std::size_t)>>();
        *step = [this, id, doc, prev, sections, weak = std::weak_ptr<std::function<void(std::size_t)>>(step)](std::size_t i) {
            if (!isCurrent(id)) {
                return;
            }
            if (i == sections->size()) {
                (*op_)["config_previous"] = *prev;
                save();
                applyConfigDocument(doc);
                return;
            }
            const std::string bus = (*sections)[i];
            // The pending call holds the chain (the chain holds itself only weakly).
            peers_.getSettings(bus, [this, id, prev, bus, i, self = weak.lock()](Expected<std::string> cur) {
                if (!isCurrent(id)) {
                    return;
                }
                if (!cur) {
                    fail(Error{cur.error().code, "config: cannot read the settings of " + bus + ": " + cur.error().message});
                    return;
                }
                (*prev)[bus] = *cur;
                if (self) {
                    (*self)(i + 1);
                }
            });
        };
        later([step] { (*step)(0); });
        return;
    }
    // 2. Apply each section through the service that owns it; the first refusal
    //    restores everything.
    const std::string cloudDoc = doc.contains("cloud") ? doc["cloud"].dump() : "";
    const std::string cmDoc = doc.contains("containers") ? doc["containers"].dump() : "";
    const std::string hostname = doc.value("hostname", std::string());
    auto afterHostname = [this, id, doc](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (!st) {
            configFailed(Error{st.error().code, "config: hostname: " + st.error().message});
            return;
        }
        configApplied(doc);
    };
    auto afterContainers = [this, id, hostname, afterHostname](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (!st) {
            configFailed(Error{st.error().code, "config: containers: " + st.error().message});
            return;
        }
        if (hostname.empty()) {
            afterHostname({});
            return;
        }
        peers_.setHostname(hostname, afterHostname);
    };
    auto afterCloud = [this, id, cmDoc, afterContainers](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (!st) {
            configFailed(Error{st.error().code, "config: cloud: " + st.error().message});
            return;
        }
        if (cmDoc.empty()) {
            afterContainers({});
            return;
        }
        peers_.applySettings(kContainersBus, cmDoc, afterContainers);
    };
    if (cloudDoc.empty()) {
        afterCloud({});
    } else {
        peers_.applySettings(kCloudBus, cloudDoc, afterCloud);
    }
}

void Coordinator::configApplied(const nlohmann::json& doc)
{
    const std::string version = doc.value("version", std::string());
    (*op_)["config_done"] = true;
    (*op_)["config_version"] = version;
    save();
    feedbackProgress("device configuration " + version + " applied");
    // Published for the fleet operator (device attribute config.version).
    peers_.setAttributes("config", {{"version", version}}, [version](Status st) {
        if (!st) {
            log::warning("cannot publish config version " + version + ": " + st.error().describe());
        }
    });
    removeDroppedApps();
}

void Coordinator::configFailed(const Error& e)
{
    const std::string id = cur("id");
    restoreConfig([this, id, e] {
        if (isCurrent(id)) {
            fail(Error{e.code, e.message + "; the previous configuration was restored"});
        }
    });
}

void Coordinator::restoreConfig(std::function<void()> then)
{
    const auto prev = op_->value("config_previous", nlohmann::json::object());
    op_->erase("config_previous");
    op_->erase("config_done");
    save();
    auto remaining = std::make_shared<std::size_t>(prev.size());
    if (prev.empty()) {
        then();
        return;
    }
    for (auto it = prev.begin(); it != prev.end(); ++it) {
        const std::string bus = it.key();
        peers_.applySettings(bus, it->get<std::string>(), [remaining, then, bus](Status st) {
            if (!st) {
                log::error("restoring the settings of " + bus + " failed: " + st.error().describe());
            }
            if (--*remaining == 0) {
                then();
            }
        });
    }
}

void Coordinator::removeDroppedApps()
{
    const auto& wanted = (*op_)["apps"];
    if (wanted.empty()) {
        afterApps(); // a firmware-only bundle says nothing about apps
        return;
    }
    const std::string id = cur("id");
    peers_.listApps([this, id](Expected<std::vector<AppInfo>> list) {
        if (!isCurrent(id)) {
            return;
        }
        std::vector<std::string> drop;
        if (list) {
            for (const auto& a : *list) {
                bool keep = false;
                for (const auto& w : (*op_)["apps"]) {
                    keep = keep || w.value("name", "") == a.name;
                }
                if (!keep) {
                    drop.push_back(a.name);
                }
            }
        }
        if (drop.empty()) {
            afterApps();
            return;
        }
        setState("installing-apps", "removing apps the deployment drops: " + drop.front());
        auto remaining = std::make_shared<std::size_t>(drop.size());
        for (const auto& name : drop) {
            // Their data volumes are kept: a later deployment may bring the app back.
            peers_.removeApp(name, false, [this, id, remaining, name](Status st) {
                if (!isCurrent(id)) {
                    return;
                }
                if (!st) {
                    log::warning("removing app " + name + " failed: " + st.error().describe());
                }
                if (--*remaining == 0) {
                    afterApps();
                }
            });
        }
    });
}

void Coordinator::afterApps()
{
    if (op_->value("firmware", false)) {
        rebootNow();
        return;
    }
    if ((*op_)["apps"].empty()) {
        finishOp(true, Error{}, "installed; no app and no firmware in the bundle");
        return;
    }
    // Apps only: success once every app of the deployment runs and keeps running.
    const std::string id = cur("id");
    setState("checking-apps", "checking that the apps run");
    healthCheck(false, [this, id](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (!st) {
            fail(Error{ErrorCode::Failed, "the apps did not come up: " + st.error().message});
            return;
        }
        finishOp(true, Error{}, "installed: " + std::to_string((*op_)["apps"].size()) + " app(s) running, no reboot needed");
    });
}

void Coordinator::rebootNow()
{
    const std::string id = cur("id");
    peers_.updateState([this, id](Expected<UpdateState> us) {
        if (!isCurrent(id)) {
            return;
        }
        if (!us) {
            fail(us.error());
            return;
        }
        if (!op_->contains("booted_before")) {
            (*op_)["booted_before"] = us->bootedSlot;
            (*op_)["target_slot"] = us->activeSlot;
        }
        (*op_)["steps_done"] = totalSteps() - 2;
        // Journaled before the reboot command runs: on the next start we verify.
        setState("rebooting", "rebooting into slot " + cur("target_slot"));
        feedbackProgress("rebooting into the new firmware (slot " + cur("target_slot") + ")");
        peers_.reboot([this, id](Status st) {
            if (isCurrent(id) && !st) {
                fail(Error{st.error().code, "the reboot command failed: " + st.error().message});
            }
        });
    });
}

void Coordinator::verifyAfterReboot()
{
    const std::string id = cur("id");
    setState("verifying", "checking the new firmware after the reboot");
    peers_.updateState([this, id](Expected<UpdateState> us) {
        if (!isCurrent(id)) {
            return;
        }
        if (!us) {
            // The update service is not up yet; try again shortly.
            after(std::chrono::milliseconds(500), [this, id] {
                if (isCurrent(id)) {
                    verifyAfterReboot();
                }
            });
            return;
        }
        const std::string before = cur("booted_before");
        const std::string target = cur("target_slot");
        for (const auto& s : us->slots) {
            if (s.slot == us->bootedSlot && us->bootedSlot == target && s.state == "good") {
                // Committed before the restart (a crash after Commit returned).
                finishOp(true, Error{}, "firmware " + cur("manifest_version") + " committed in slot " + target);
                return;
            }
        }
        if (us->bootedSlot == before) {
            if (us->activeSlot == target && target != before) {
                // Not rebooted yet (the coordinator restarted before the reboot happened).
                const unsigned attempts = op_->value("attempts", 1u) + 1;
                (*op_)["attempts"] = attempts;
                if (attempts > settings_.maxAttempts) {
                    fail(Error{ErrorCode::Failed, "the device did not reboot into slot " + target});
                    return;
                }
                rebootNow();
                return;
            }
            fail(Error{ErrorCode::Failed, "rolled back: the new firmware did not boot; the bootloader fell back to slot " +
                                              us->bootedSlot});
            return;
        }
        healthCheck(true, [this, id](Status st) {
            if (!isCurrent(id)) {
                return;
            }
            if (st) {
                commitFirmware();
                return;
            }
            const std::string reason = "rolled back: the new firmware failed its health check: " + st.error().message;
            (*op_)["rollback_reason"] = reason;
            setState("rolling-back", "health check failed; rebooting back to slot " + cur("booted_before"));
            peers_.markBad([this, id, reason](Status mb) {
                if (!isCurrent(id)) {
                    return;
                }
                if (!mb) {
                    log::error("MarkBad failed: " + mb.error().describe());
                }
                peers_.reboot([this, id, reason](Status rb) {
                    if (isCurrent(id) && !rb) {
                        fail(Error{ErrorCode::Failed, reason + " (and the reboot command failed)"});
                    }
                });
            });
        });
    });
}

void Coordinator::healthCheck(bool withCloud, std::function<void(Status)> done)
{
    // After a reboot the peers, the cloud connection and the apps come up in
    // their own time: probe until everything is up (or the deadline passes),
    // then again after the grace period, so an app that dies right after its
    // start or a service that crashes fails the check.
    (*op_)["health_with_cloud"] = withCloud;
    healthAttempt(cur("id"), std::chrono::steady_clock::now() + settings_.healthTimeout, std::move(done));
}

void Coordinator::healthAttempt(const std::string& id, std::chrono::steady_clock::time_point deadline,
                                std::function<void(Status)> done)
{
    healthProbe(id, [this, id, deadline, done](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (st) {
            (*op_)["health"] = "up; holding for the grace period";
            after(settings_.healthGrace, [this, id, deadline, done] {
                if (!isCurrent(id)) {
                    return;
                }
                healthProbe(id, [this, id, deadline, done](Status again) {
                    if (!isCurrent(id)) {
                        return;
                    }
                    if (!again && std::chrono::steady_clock::now() < deadline) {
                        // Went down within the grace period (a crash, or a restart to take new
                        // settings): it must come up and stay up for a whole period again.
                        log::info(id + ": health: " + again.error().message + " within the grace period; waiting again");
                        healthAttempt(id, deadline, done);
                        return;
                    }
                    done(again ? again : Status{unexpected(again.error().code,
                                                           again.error().message + " after the grace period")});
                });
            });
            return;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            done(st);
            return;
        }
        if (op_->value("health", "") != st.error().message) {
            (*op_)["health"] = st.error().message;
            log::info(id + ": health: waiting: " + st.error().message);
        }
        after(std::chrono::milliseconds(500), [this, id, deadline, done] {
            if (isCurrent(id)) {
                healthAttempt(id, deadline, done);
            }
        });
    });
}

void Coordinator::healthProbe(const std::string& id, std::function<void(Status)> done)
{
    auto remaining = std::make_shared<std::size_t>(std::size(kPeerNames));
    auto firstError = std::make_shared<std::optional<Error>>();
    auto checkApps = [this, id, done]() {
        peers_.listApps([this, id, done](Expected<std::vector<AppInfo>> list) {
            if (!isCurrent(id)) {
                return;
            }
            if (!list) {
                done(unexpected(ErrorCode::Failed, "the container manager cannot list apps: " + list.error().message));
                return;
            }
            for (const auto& w : (*op_)["apps"]) {
                std::string state = "not installed";
                for (const auto& a : *list) {
                    if (a.name == w.value("name", "")) {
                        state = a.state + " (version " + a.version + ")";
                        if (a.state == "running") {
                            state.clear();
                        }
                    }
                }
                if (!state.empty()) {
                    done(unexpected(ErrorCode::Failed, "app " + w.value("name", "") + " is " + state));
                    return;
                }
            }
            done({});
        });
    };
    auto afterPings = [this, id, done, firstError, checkApps]() {
        if (!isCurrent(id)) {
            return;
        }
        if (*firstError) {
            done(unexpected(**firstError));
            return;
        }
        if (op_->value("health_with_cloud", false) && settings_.requireCloudForHealth && cur("source") == "cloud") {
            peers_.cloudConnectionState([this, id, done, checkApps](Expected<std::string> cs) {
                if (!isCurrent(id)) {
                    return;
                }
                if (!cs || *cs != "connected") {
                    done(unexpected(ErrorCode::Failed,
                                    "the cloud is not reachable (" + (cs ? *cs : cs.error().message) + ")"));
                    return;
                }
                checkApps();
            });
            return;
        }
        checkApps();
    };
    for (const char* name : kPeerNames) {
        peers_.ping(name, [remaining, firstError, afterPings, name = std::string(name)](Status st) {
            if (!st && !*firstError) {
                *firstError = Error{ErrorCode::Failed, name + " does not answer: " + st.error().message};
            }
            if (--*remaining == 0) {
                afterPings();
            }
        });
    }
}

void Coordinator::commitFirmware()
{
    const std::string id = cur("id");
    setState("committing", "committing slot " + cur("target_slot"));
    peers_.commit([this, id](Status st) {
        if (!isCurrent(id)) {
            return;
        }
        if (!st) {
            fail(Error{st.error().code, "commit failed: " + st.error().message});
            return;
        }
        finishOp(true, Error{}, "firmware " + cur("manifest_version") + " committed in slot " + cur("target_slot") +
                                    "; " + std::to_string((*op_)["apps"].size()) + " app(s) running");
    });
}

} // namespace mbl::coordinator
