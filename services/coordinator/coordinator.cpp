// SPDX-License-Identifier: Apache-2.0
// The core of the engine: settings, the operation record and its journal, the
// checked transitions, the entry points (cloud, local, cancel) and resuming
// after a restart. The steps live in step_*.cpp.

#include "coordinator.h"

#include "mbl/fs.h"
#include "mbl/log.h"

#include <algorithm>
#include <cassert>
#include <ctime>
#include <random>

namespace mbl::coordinator {

namespace {

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
    if (d.contains("complete_app_set") && !d["complete_app_set"].is_boolean()) {
        return unexpected(ErrorCode::InvalidArgument, "deployment: 'complete_app_set' is not a boolean");
    }
    return {};
}

std::int64_t clockBoottimeMs()
{
    struct timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

const char* const kKnownChecks[] = {"services", "cloud", "apps"};

} // namespace

Expected<Settings> Settings::fromConfig(const Paths& paths, const Config& config)
{
    Settings s;
    s.stateDir = paths.state("coordinator");
    auto reboot = config.getStringList("reboot_command", {});
    auto hostname = config.getStringList("hostname_command", {});
    auto checks = config.getStringList("health_checks", {"services", "cloud", "apps"});
    auto grace = config.getInt("health_grace_ms", 10000, 0, 3600000);
    auto timeout = config.getInt("health_timeout_ms", 300000, 0, 86400000);
    auto attempts = config.getInt("max_attempts", 3, 1, 100);
    auto cloud = config.getBool("require_cloud_for_health", true);
    auto retries = config.getInt("download_retries", 10, 0, 1000);
    auto retryBase = config.getInt("download_retry_base_ms", 30000, 1, 86400000);
    auto retryMax = config.getInt("download_retry_max_ms", 900000, 1, 86400000);
    auto bootId = config.getString("boot_id_path", s.bootIdPath);
    for (const Error* e : {reboot ? nullptr : &reboot.error(), hostname ? nullptr : &hostname.error(),
                           checks ? nullptr : &checks.error(), grace ? nullptr : &grace.error(),
                           timeout ? nullptr : &timeout.error(), attempts ? nullptr : &attempts.error(),
                           cloud ? nullptr : &cloud.error(), retries ? nullptr : &retries.error(),
                           retryBase ? nullptr : &retryBase.error(), retryMax ? nullptr : &retryMax.error(),
                           bootId ? nullptr : &bootId.error()}) {
        if (e != nullptr) {
            return unexpected(*e);
        }
    }
    // Every key the coordinator knows was read above; anything else is a typo.
    if (auto st = config.rejectUnreadKeys(); !st) {
        return unexpected(st.error());
    }
    if (config.json().contains("reboot_command") && reboot->empty()) {
        return unexpected(ErrorCode::InvalidArgument, config.origin() + ": key 'reboot_command' must not be empty");
    }
    s.healthChecks.clear();
    for (const auto& c : *checks) {
        if (std::find(std::begin(kKnownChecks), std::end(kKnownChecks), c) == std::end(kKnownChecks)) {
            return unexpected(ErrorCode::InvalidArgument, config.origin() + ": key 'health_checks': unknown check '" +
                                                              c + "' (known: services, cloud, apps)");
        }
        s.healthChecks.insert(c);
    }
    if (!*cloud) {
        s.healthChecks.erase("cloud"); // the older spelling of leaving "cloud" out
    }
    s.rebootCommand = *reboot;
    s.hostnameCommand = *hostname;
    s.rebootRequestFile = paths.runtime("coordinator/reboot-request");
    s.healthGrace = std::chrono::milliseconds(*grace);
    s.healthTimeout = std::chrono::milliseconds(*timeout);
    s.maxAttempts = static_cast<unsigned>(*attempts);
    s.downloadRetries = static_cast<unsigned>(*retries);
    s.downloadRetryBase = std::chrono::milliseconds(*retryBase);
    s.downloadRetryMax = std::chrono::milliseconds(std::max(*retryBase, *retryMax));
    s.bootIdPath = *bootId;
    return s;
}

Coordinator::Coordinator(Settings settings, Peers& peers, EventLoop& loop, Listener& listener)
    : settings_(std::move(settings)), peers_(peers), loop_(loop), listener_(listener), journal_(settings_.stateDir)
{
    if (!settings_.boottimeMs) {
        settings_.boottimeMs = clockBoottimeMs;
    }
}

Coordinator::~Coordinator() = default;

// ---------------------------------------------------------------- properties

std::string Coordinator::state() const
{
    return op_ ? stateName(op_->state) : "idle";
}

std::string Coordinator::operationId() const
{
    return op_ ? op_->id : "";
}

std::string Coordinator::step() const
{
    return op_ ? op_->step : "";
}

std::uint32_t Coordinator::progress() const
{
    return op_ ? op_->progress : 0;
}

nlohmann::json Coordinator::status() const
{
    nlohmann::json s = {{"state", state()}, {"operation", operationId()}, {"progress", progress()},
                        {"step", step()}, {"last_error", lastError_}};
    if (op_) {
        s["current"] = op_->toJson();
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

// ---------------------------------------------------------------- the record and its journal

bool Coordinator::isCurrent(const std::string& id, std::uint64_t epoch) const
{
    return op_ && op_->id == id && epoch_ == epoch && !paused_;
}

void Coordinator::after(std::chrono::milliseconds delay, std::function<void()> fn)
{
    loop_.addTimer(delay, guarded(std::move(fn)));
}

void Coordinator::later(std::function<void()> fn)
{
    loop_.post(guarded(std::move(fn)));
}

void Coordinator::begin(Operation op)
{
    op.created = nowEpoch();
    op_ = std::move(op);
    ++epoch_;
    journalBroken_ = false;
    lastError_.clear();
    listener_.propertiesChanged({"LastError"});
    watchPeers();
}

bool Coordinator::save()
{
    if (journalBroken_) {
        return true; // stopping: the rollback goes on without a journal
    }
    auto st = journal_.saveCurrent(op_->toJson());
    if (st) {
        return true;
    }
    journalBroken_ = true;
    const Error e{st.error().code, "cannot write the operation journal (" + st.error().message +
                                       "); stopped before the next step"};
    log::error(op_->id + ": " + e.message);
    const State s = op_->state;
    if (s == State::RollingBackApps || s == State::RollingBackConfig || s == State::Releasing ||
        s == State::RollingBackFirmware) {
        return true; // already undoing: finish that
    }
    // Without a journal the next step would not survive a crash: undo what was
    // done (every undo step is idempotent) and report why.
    op_->failure = e;
    later([this, e] { rollBack(e); });
    return false;
}

bool Coordinator::pauseAt(const std::string& point)
{
    if (settings_.pausePoint.empty() || settings_.pausePoint != point) {
        return false;
    }
    // Test hook only: announce the point, then take no further step until killed.
    log::notice(op_->id + ": test pause point '" + point + "' reached");
    (void)fs::writeFileAtomic(settings_.stateDir + "/paused", point + "\n", 0600);
    paused_ = true;
    return true;
}

bool Coordinator::enter(State to, const std::string& step)
{
    if (!transitionAllowed(op_->state, to)) {
        // A bug: the table is the definition of what the engine may do.
        log::error(op_->id + ": transition " + stateName(op_->state) + " → " + stateName(to) +
                   " is not in the transition table");
        assert(false && "transition not in the table");
    }
    op_->state = to;
    op_->step = step;
    op_->steps.push_back({nowEpoch(), stateName(to), step});
    ++epoch_;
    log::info(op_->id + ": " + stateName(to) + ": " + step);
    const bool saved = save();
    listener_.propertiesChanged({"State", "Step", "Progress", "Operation"});
    if (!saved) {
        return false;
    }
    return !pauseAt(stateName(to));
}

void Coordinator::bumpProgress(std::uint32_t percent)
{
    percent = std::min<std::uint32_t>(percent, 100);
    if (op_ && percent > op_->progress) {
        op_->progress = percent;
        listener_.propertiesChanged({"Progress"});
    }
}

void Coordinator::feedback(const std::string& execution, const std::string& result,
                           const std::vector<std::string>& details)
{
    if (op_->source != Source::Cloud) {
        return;
    }
    const std::string action = op_->actionId;
    peers_.reportFeedback(action, execution, result, op_->progress, 100, details, [action, execution](Status st) {
        if (!st) {
            // The cloud client queues feedback persistently; an error here
            // means it refused the report itself.
            log::warning("feedback '" + execution + "' for action " + action + " refused: " + st.error().describe());
        }
    });
}

void Coordinator::feedbackProgress(const std::string& detail)
{
    feedback("proceeding", "none", {detail});
}

void Coordinator::finish(State final, const std::string& message)
{
    if (!op_) {
        return;
    }
    relay_.reset();
    if (!transitionAllowed(op_->state, final)) {
        log::error(op_->id + ": transition " + std::string(stateName(op_->state)) + " → " + stateName(final) +
                   " is not in the transition table");
        assert(false && "transition not in the table");
    }
    const bool success = final == State::Succeeded;
    Error e = op_->failure.value_or(Error{ErrorCode::Failed, message});
    if (final == State::Cancelled) {
        e = Error{ErrorCode::Cancelled, message};
    }
    op_->state = final;
    op_->step = message;
    op_->finished = nowEpoch();
    op_->steps.push_back({op_->finished, stateName(final), message});
    op_->result = Outcome{success, success ? "" : e.name(), message};
    if (success) {
        op_->progress = 100;
    }
    if (final != State::Cancelled) {
        // A failure names its error for the server as for the bus ("NoSpace: ...").
        feedback("closed", success ? "success" : "failure",
                 {success ? message : Error{e.code, message}.describe()});
    }
    if (!op_->storedDir.empty()) {
        (void)fs::removeTree(op_->storedDir);
    }
    if (auto st = journal_.finish(op_->toJson()); !st) {
        log::error("cannot record the finished operation: " + st.error().message);
    }
    const std::string id = op_->id;
    log::info(id + ": " + stateName(final) + ": " + message);
    if (!success) {
        lastError_ = e.name() + ": " + message;
    }
    op_.reset();
    ++epoch_;
    journalBroken_ = false;
    listener_.propertiesChanged({"State", "Step", "Progress", "Operation", "LastError"});
    listener_.operationCompleted(id, success, success ? "" : e.name(), message);
    if (pending_) {
        auto next = std::move(*pending_);
        pending_.reset();
        loop_.post([this, life = std::weak_ptr<int>(life_), next]() {
            if (!life.expired()) {
                onDeploymentRequested(next.value("action_id", ""), next.dump());
            }
        });
    }
}

// ---------------------------------------------------------------- what comes next

void Coordinator::advance()
{
    // Forward order (the README explains it): every bundle staged → every app
    // staged → firmware armed → reboot → config applied → apps activated →
    // health gate → commit. Each step skips what the deployment does not carry.
    const Operation& op = *op_;
    if (op.cancelled) {
        // A cancel is accepted only before anything is armed or changed.
        rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return;
    }
    if (op.appIndex < op.apps.size()) {
        stageNextApp();
        return;
    }
    if (op.firmwareBundle() != nullptr && !op.armed) {
        armFirmware();
        return;
    }
    if (op.firmwareBundle() != nullptr && !op.bootedNew) {
        rebootNow();
        return;
    }
    if (op.configUpdateOp && !op.configApplied) {
        applyConfig();
        return;
    }
    bool staged = false;
    for (const auto& a : op.apps) {
        staged = staged || a.staged;
    }
    if (staged && !op.appsActivated) {
        activateApps();
        return;
    }
    checkHealth();
}

// ---------------------------------------------------------------- entry points

void Coordinator::start()
{
    (void)fs::makeDirs(settings_.stateDir, 0700);
    auto pending = journal_.loadPending();
    if (pending.is_object()) {
        pending_ = pending;
    }
    auto current = journal_.loadCurrent();
    if (!current) {
        log::error(current.error().message);
        return;
    }
    if (!*current) {
        if (pending_) {
            auto next = std::move(*pending_);
            pending_.reset();
            onDeploymentRequested(next.value("action_id", ""), next.dump());
        }
        return;
    }
    // A crash between recording the history and dropping the current record.
    for (const auto& h : journal_.history(50)) {
        if (h.value("id", "") == (**current).value("id", "")) {
            (void)journal_.finish(h);
            return;
        }
    }
    auto op = Operation::fromJson(**current);
    if (!op) {
        // Refuse to guess; keep the record for a person to read.
        log::error("the journal's current operation cannot be resumed: " + op.error().message);
        (void)fs::writeFileAtomic(settings_.stateDir + "/current.unreadable.json", (**current).dump(), 0600);
        (void)journal_.finish((**current));
        return;
    }
    op_ = std::move(op).value();
    ++epoch_;
    watchPeers();
    resume();
}

void Coordinator::resume()
{
    const State state = op_->state;
    log::notice(op_->id + ": resuming after a restart in state '" + stateName(state) + "'");
    listener_.propertiesChanged({"State", "Step", "Operation", "Progress"});
    switch (state) {
    case State::Received:
    case State::Storing:
    case State::Downloading:
        resumeDownloading();
        return;
    case State::Waiting:
        return; // until the cloud says the maintenance window is open
    case State::WaitingNetwork:
        retryDownloadWhenConnected();
        return;
    case State::StagingApps:
        resumeStagingApps();
        return;
    case State::Arming:
    case State::Rebooting:
    case State::Verifying:
        verifyAfterReboot();
        return;
    case State::Configuring:
        // Replace semantics: applying again is safe; the saved settings are kept.
        onNewSlot([this] { applyConfig(); });
        return;
    case State::ActivatingApps:
        onNewSlot([this] { activateApps(); });
        return;
    case State::CheckingHealth:
        onNewSlot([this] { checkHealth(); }); // the journaled deadline holds within the same boot
        return;
    case State::Committing:
        commitAll();
        return;
    case State::RollingBackApps:
        rollbackApps();
        return;
    case State::RollingBackConfig:
        restoreConfig();
        return;
    case State::Releasing:
        releaseBundles();
        return;
    case State::RollingBackFirmware:
        rollbackFirmware();
        return;
    case State::Succeeded:
    case State::Failed:
    case State::Cancelled:
        (void)journal_.finish(op_->toJson());
        op_.reset();
        return;
    }
}

void Coordinator::onDeploymentRequested(const std::string& actionId, const std::string& deploymentJson)
{
    log::info("the cloud requests deployment " + actionId);
    auto d = nlohmann::json::parse(deploymentJson, nullptr, false);
    if (op_ && op_->source == Source::Cloud && op_->actionId == actionId) {
        // The cloud client sends an action again when its document changes (and after
        // its own restarts); an unchanged document is nothing new.
        if (d.is_discarded() || !d.is_object() || d == op_->deployment) {
            return;
        }
        deploymentChanged(d);
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
        if (!d.is_discarded() && d.is_object()) {
            d["action_id"] = actionId;
            pending_ = d;
            if (auto st = journal_.savePending(d); !st) {
                log::error("cannot keep the queued action " + actionId + ": " + st.error().message);
            }
            log::info("action " + actionId + " queued behind " + op_->id);
        }
        return;
    }
    if (pending_ && pending_->value("action_id", "") == actionId) {
        pending_.reset();
    }
    (void)journal_.savePending(nullptr);
    Operation op;
    op.id = newOperationId();
    op.source = Source::Cloud;
    op.actionId = actionId;
    if (d.is_discarded()) {
        begin(std::move(op));
        op_->failure = Error{ErrorCode::InvalidArgument, "the deployment is not valid JSON"};
        finish(State::Failed, "the deployment is not valid JSON");
        return;
    }
    op.deployment = d;
    const Allowed allowed = allowedBy(d);
    op.replaceApps = allowed.completeAppSet;
    begin(std::move(op));
    if (auto st = validateDeployment(d); !st) {
        op_->failure = st.error();
        finish(State::Failed, st.error().message);
        return;
    }
    feedbackProgress("deployment accepted by the device");
    if (!allowed.download) {
        // hawkBit's download "skip": nothing is fetched until a document allows it.
        if (enter(State::Waiting, "waiting: the server does not allow the download yet")) {
            feedback("scheduled", "none", {"waiting: the server does not allow the download yet"});
        }
        return;
    }
    if (allowed.downloadOnly || !allowed.install) {
        startStoreOnly();
    } else {
        startDownloadAndInstall();
    }
}

void Coordinator::deploymentChanged(const nlohmann::json& d)
{
    const Allowed now = allowedBy(d);
    if (op_->state == State::Storing || (op_->state == State::WaitingNetwork && op_->retryStore)) {
        op_->deployment = d; // decided once the artifacts are stored
        (void)save();
        return;
    }
    if (op_->state != State::Waiting) {
        return; // already installing: what the server allows now changes nothing
    }
    op_->deployment = d;
    const bool stored = !op_->storedDir.empty();
    const bool installNow = now.install && !now.downloadOnly;
    if (!stored && now.download) {
        log::info(op_->id + ": the server allows the download now");
        if (installNow) {
            startDownloadAndInstall();
        } else {
            startStoreOnly();
        }
        return;
    }
    if (stored && installNow) {
        log::info(op_->id + ": the server allows the installation now");
        op_->artifact = 0;
        installStored();
        return;
    }
    (void)save();
}

Expected<std::string> Coordinator::installBundle(Fd bundle, const LocalOptions& options)
{
    if (op_) {
        return unexpected(ErrorCode::Busy, "operation " + op_->id + " is running (" + stateName(op_->state) + ")");
    }
    if (!bundle) {
        return unexpected(ErrorCode::InvalidArgument, "no bundle file descriptor");
    }
    Operation op;
    op.id = newOperationId();
    op.source = Source::Local;
    op.replaceApps = options.replaceApps;
    op.deployment = {{"chunks", {{{"part", "bundle"}, {"artifacts", {{{"filename", "local bundle"}}}}}}}};
    begin(std::move(op));
    const std::string id = op_->id;
    if (!enter(State::Downloading, "verifying and staging the local bundle")) {
        return id;
    }
    streamIntoUpdate(std::move(bundle), "local bundle");
    return id;
}

Status Coordinator::cancel(const std::string& operationId)
{
    if (!op_ || op_->id != operationId) {
        return unexpected(ErrorCode::NotFound, "no running operation " + operationId);
    }
    const State s = op_->state;
    if (s == State::Storing || s == State::Waiting || s == State::WaitingNetwork) {
        op_->cancelled = true;
        rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return {};
    }
    if (s == State::Downloading || s == State::StagingApps) {
        // Nothing is armed or changed yet: the stream is cut (the update service sees
        // a truncated bundle) or the app being staged finishes, then everything staged
        // is dropped.
        op_->cancelled = true;
        if (!save()) {
            return {};
        }
        if (relay_) {
            relay_->cancel();
        }
        if (s == State::Downloading && op_->pendingUpdateOp.empty() && !relay_) {
            rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        }
        return {};
    }
    return unexpected(ErrorCode::Busy, "operation " + operationId + " is already " + stateName(s) +
                                           "; it cannot be cancelled");
}

void Coordinator::onCancelRequested(const std::string& actionId)
{
    if (!op_ || op_->source != Source::Cloud || op_->actionId != actionId) {
        if (pending_ && pending_->value("action_id", "") == actionId) {
            pending_.reset();
            (void)journal_.savePending(nullptr);
        }
        // Nothing of that action runs here: the cancel is trivially done.
        peers_.reportFeedback(actionId, "closed", "success", 0, 0, {"nothing to cancel: the action is not running"},
                              [](Status) {});
        return;
    }
    auto st = cancel(op_->id);
    if (!st) {
        peers_.reportFeedback(actionId, "rejected", "none", 0, 0, {"cannot cancel: " + st.error().message},
                              [](Status) {});
        return;
    }
    peers_.reportFeedback(actionId, "closed", "success", 0, 0, {"cancelled on the device before installing"},
                          [](Status) {});
}

} // namespace mbl::coordinator
