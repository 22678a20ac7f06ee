// SPDX-License-Identifier: Apache-2.0
// Step "downloading" (and "storing", "waiting", "waiting-network"): every
// artifact of the deployment, one after the other, streamed through the relay
// into Update1.Install with arm=false. The update service verifies the bundle
// and stages its payloads (the rootfs written to the inactive slot, unarmed);
// the coordinator reads each staged manifest, refuses what one transaction
// cannot hold (two rootfs payloads, one app twice, two configs, a payload type
// it does not know) and checks the config document, all before anything is
// armed or changed.

#include "coordinator.h"

#include "mbl/fs.h"
#include "mbl/log.h"

#include <fcntl.h>
#include <unistd.h>

namespace mbl::coordinator {

namespace {

std::string stringAt(const nlohmann::json& j, const char* key)
{
    if (!j.is_object()) {
        return {};
    }
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string artifactName(const Operation& op, std::size_t i)
{
    if (op.source == Source::Local) {
        return "local bundle";
    }
    const auto arts = artifactsOf(op.deployment);
    return i < arts.size() ? arts[i].value("filename", "artifact") : "artifact";
}

std::string ofCount(const Operation& op)
{
    const std::size_t n = op.artifactCount();
    return n > 1 ? " (" + std::to_string(op.artifact + 1) + " of " + std::to_string(n) + ")" : "";
}

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
            return unexpected(ErrorCode::InvalidArgument,
                              "config payload: 'hostname' has a character outside [A-Za-z0-9.-]");
        }
    }
    if (h.size() > 63 || h.front() == '-') {
        return unexpected(ErrorCode::InvalidArgument, "config payload: 'hostname' is not a valid host name");
    }
    return {};
}

} // namespace

void Coordinator::startDownloadAndInstall()
{
    if (!op_->storedDir.empty()) {
        installStored();
        return;
    }
    const auto arts = artifactsOf(op_->deployment);
    if (op_->artifact >= arts.size()) {
        afterBundles();
        return;
    }
    const nlohmann::json art = arts[op_->artifact];
    const std::string name = art.value("filename", "artifact");
    op_->pendingUpdateOp.clear();
    op_->updateProgress = 0;
    if (!enter(State::Downloading, "downloading, verifying and staging " + name + ofCount(*op_))) {
        return;
    }
    feedbackProgress("downloading, verifying and staging " + name);
    downloadResult_ = {};
    ++downloadAttempt_;
    peers_.download(op_->actionId, art.dump(), guarded([this, name](Expected<Fd> fd) {
        if (op_->cancelled) {
            rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
            return;
        }
        if (!fd) {
            downloadFailed(Error{fd.error().code, "download of " + name + " failed: " + fd.error().message},
                           DownloadEnd::CallFailed);
            return;
        }
        streamIntoUpdate(std::move(fd).value(), name);
    }));
}

void Coordinator::installStored()
{
    const std::size_t i = op_->artifact;
    if (i >= artifactsOf(op_->deployment).size()) {
        afterBundles();
        return;
    }
    const std::string path = op_->storedDir + "/" + std::to_string(i);
    op_->pendingUpdateOp.clear();
    op_->updateProgress = 0;
    if (!enter(State::Downloading, "verifying and staging the downloaded " + artifactName(*op_, i) + ofCount(*op_))) {
        return;
    }
    feedbackProgress("installing the downloaded " + artifactName(*op_, i));
    Fd in{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!in) {
        rollBack(errnoError("open " + path, errno));
        return;
    }
    streamIntoUpdate(std::move(in), artifactName(*op_, i));
}

void Coordinator::streamIntoUpdate(Fd source, const std::string& name)
{
    // The coordinator stands between the source and the update service (see Relay):
    // a cancel cuts the stream and the update service stages nothing.
    auto p = makePipe();
    if (!p) {
        rollBack(p.error());
        return;
    }
    auto [readEnd, writeEnd] = std::move(p).value();
    relay_ = std::make_unique<Relay>(loop_, std::move(source), std::move(writeEnd), [](Expected<std::uint64_t>) {});
    peers_.installBundle(std::move(readEnd), false, guarded([this, name](Expected<std::string> updateOp) {
        if (!updateOp) {
            relay_.reset();
            rollBack(Error{updateOp.error().code, "the update service refused " + name + ": " +
                                                      updateOp.error().message});
            return;
        }
        if (op_->pendingUpdateOp.empty()) { // its Completed may have come first
            op_->pendingUpdateOp = *updateOp;
            (void)save();
        }
    }));
}

void Coordinator::onUpdateProgress(std::uint32_t percent)
{
    if (!op_ || op_->state != State::Downloading || paused_) {
        return;
    }
    // Update1.Progress moves while the bundle streams and the slot is written.
    percent = std::min<std::uint32_t>(percent, 100);
    if (percent == op_->updateProgress) {
        return;
    }
    op_->updateProgress = percent;
    const std::size_t n = op_->artifactCount();
    const auto overall = static_cast<std::uint32_t>((60 * (op_->artifact * 100 + percent)) / (n * 100));
    op_->progress = std::max(op_->progress, overall);
    const std::string base = op_->step.substr(0, op_->step.find(" — "));
    op_->step = base + " — " + std::to_string(percent) + "% written and verified";
    listener_.propertiesChanged({"Progress", "Step"});
}

void Coordinator::onUpdateCompleted(const std::string& updateOp, bool success, const std::string& errorName,
                                    const std::string& message)
{
    log::debug("update operation " + updateOp + " completed: " + (success ? "success" : errorName + ": " + message));
    if (!op_ || op_->state != State::Downloading || paused_) {
        return;
    }
    if (!op_->pendingUpdateOp.empty() && op_->pendingUpdateOp != updateOp) {
        return; // an operation of someone else, or of an earlier attempt
    }
    relay_.reset();
    if (!success) {
        // A failed install drops its own staging: nothing is pending there any more.
        op_->pendingUpdateOp.clear();
        // The server hears which artifact of the distribution set was refused.
        const std::string which = op_->source == Source::Local ? "" : artifactName(*op_, op_->artifact) + " ";
        const Error e{errorCodeFromName(errorName), "the bundle " + which + "was refused: " + message};
        if (e.code == ErrorCode::Busy && op_->firmwareBundle() != nullptr && !op_->cancelled) {
            // Update1 refuses a second rootfs while ours is staged (C2), before writing it.
            rollBack(Error{ErrorCode::InvalidArgument,
                           "the deployment carries two rootfs payloads (" + op_->firmwareBundle()->artifact + " and " +
                               artifactName(*op_, op_->artifact) +
                               "): a device tries one firmware at a time; nothing was changed (" + message + ")"});
            return;
        }
        if (op_->cancelled) {
            rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        } else if (op_->source == Source::Cloud && op_->storedDir.empty() &&
                   (e.code == ErrorCode::InvalidArgument || e.code == ErrorCode::Timeout || e.code == ErrorCode::Io)) {
            // What a bundle cut short looks like (truncated, no data, a read error):
            // the download may have been cut by the network.
            if (save()) {
                downloadFailed(e, DownloadEnd::StreamCut);
            }
        } else {
            rollBack(e);
        }
        return;
    }
    bundleStaged(updateOp);
}

void Coordinator::bundleStaged(const std::string& updateOp)
{
    op_->pendingUpdateOp = updateOp;
    ++epoch_; // whatever waited for this install is answered
    readManifest(updateOp);
}

void Coordinator::readManifest(const std::string& updateOp)
{
    peers_.operationManifest(updateOp, guarded([this, updateOp](Expected<std::string> text) {
        // From here on the staging is the transaction's: released on any failure.
        StagedBundle b;
        b.artifact = artifactName(*op_, op_->artifact);
        b.updateOp = updateOp;
        op_->pendingUpdateOp.clear();
        if (!text) {
            op_->bundles.push_back(b);
            rollBack(text.error());
            return;
        }
        auto m = nlohmann::json::parse(*text, nullptr, false);
        if (m.is_discarded() || !m.is_object()) {
            op_->bundles.push_back(b);
            rollBack(Error{ErrorCode::Failed, "the update service returned a manifest that is not JSON"});
            return;
        }
        b.version = stringAt(m, "version");
        std::optional<Error> refused;
        auto refuse = [&refused](ErrorCode code, std::string msg) {
            if (!refused) {
                refused = Error{code, std::move(msg)};
            }
        };
        const auto payloads = m.contains("payloads") && m["payloads"].is_array() ? m["payloads"] : nlohmann::json::array();
        for (const auto& p : payloads) {
            const std::string type = stringAt(p, "type");
            const std::string pname = stringAt(p, "name");
            b.payloadTypes.push_back(type);
            if (type == "rootfs") {
                if (b.rootfs || op_->firmwareBundle() != nullptr) {
                    const std::string other = b.rootfs ? b.artifact : op_->firmwareBundle()->artifact;
                    refuse(ErrorCode::InvalidArgument,
                           "the deployment carries two rootfs payloads (" + other + " and " + b.artifact +
                               "): a device tries one firmware at a time; nothing was changed");
                }
                b.rootfs = true;
            } else if (type == "app") {
                // The update service's manifest: {"name": payload, "app": {"name", "version"}, "settings": {...}}.
                const auto app = p.is_object() && p.contains("app") ? p["app"] : nlohmann::json::object();
                AppStep a;
                a.updateOp = updateOp;
                a.payload = pname;
                a.name = stringAt(app, "name");
                a.version = stringAt(app, "version");
                const nlohmann::json* settings = nullptr;
                if (p.contains("settings")) {
                    settings = &p["settings"];
                } else if (app.is_object() && app.contains("settings")) {
                    settings = &app["settings"];
                }
                if (a.name.empty()) {
                    refuse(ErrorCode::InvalidArgument, "app payload '" + pname + "' names no app");
                } else if (settings != nullptr && !settings->is_object()) {
                    refuse(ErrorCode::InvalidArgument, "app " + a.name + ": its settings are not a JSON object");
                } else if (settings != nullptr && settings->contains("autostart") &&
                           !(*settings)["autostart"].is_boolean()) {
                    refuse(ErrorCode::InvalidArgument, "app " + a.name + ": setting 'autostart' is not a boolean");
                }
                for (const auto& other : op_->apps) {
                    if (other.name == a.name) {
                        refuse(ErrorCode::InvalidArgument, "app " + a.name + " is in the deployment twice");
                    }
                }
                if (settings != nullptr && settings->is_object()) {
                    a.settings = *settings;
                    a.shouldRun = settings->value("autostart", true);
                }
                op_->apps.push_back(std::move(a));
            } else if (type == "config") {
                if (op_->configUpdateOp) {
                    refuse(ErrorCode::InvalidArgument, "the deployment carries more than one config payload");
                }
                op_->configUpdateOp = updateOp;
                op_->configPayload = pname;
            } else if (type == "file") {
                // Installed by the update service itself (contract C2); the coordinator
                // commits or releases it with the rest.
            } else {
                refuse(ErrorCode::NotSupported,
                       "payload '" + pname + "' has type '" + type + "', which this device cannot apply");
            }
        }
        op_->bundles.push_back(b);
        if (refused) {
            rollBack(*refused);
            return;
        }
        if (!save()) {
            return;
        }
        if (op_->configUpdateOp == updateOp && op_->config.empty()) {
            readConfigPayload(updateOp, op_->configPayload);
            return;
        }
        ++op_->artifact;
        op_->updateProgress = 0;
        if (op_->artifact < artifactsOf(op_->deployment).size() && op_->source == Source::Cloud) {
            startDownloadAndInstall(); // the next bundle of the same transaction
            return;
        }
        afterBundles();
    }));
}

void Coordinator::readConfigPayload(const std::string& updateOp, const std::string& payload)
{
    peers_.openPayload(updateOp, payload, guarded([this](Expected<Fd> fd) {
        if (!fd) {
            rollBack(fd.error());
            return;
        }
        auto text = fs::readAll(fd->get(), 1u << 20);
        if (!text) {
            rollBack(Error{text.error().code, "config payload: " + text.error().message});
            return;
        }
        auto doc = nlohmann::json::parse(*text, nullptr, false);
        if (doc.is_discarded()) {
            rollBack(Error{ErrorCode::InvalidArgument, "the config payload is not JSON"});
            return;
        }
        if (auto st = checkConfigDocument(doc); !st) {
            rollBack(st.error());
            return;
        }
        op_->config = doc;
        ++op_->artifact;
        if (!save()) {
            return;
        }
        if (op_->artifact < artifactsOf(op_->deployment).size() && op_->source == Source::Cloud) {
            startDownloadAndInstall();
            return;
        }
        afterBundles();
    }));
}

void Coordinator::afterBundles()
{
    bumpProgress(60);
    std::string what;
    for (const auto& b : op_->bundles) {
        what += (what.empty() ? "" : ", ") + b.artifact + " " + b.version;
    }
    feedbackProgress(std::to_string(op_->bundles.size()) + " bundle(s) verified and staged: " + what);
    if (op_->cancelled) {
        rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return;
    }
    snapshotBeforeChange([this] { advance(); });
}

// ---------------------------------------------------------------- download-only, maintenance window

void Coordinator::startStoreOnly()
{
    const std::string dir = settings_.stateDir + "/downloads/" + op_->id;
    op_->storedDir = dir;
    op_->artifact = 0;
    (void)fs::removeTree(dir);
    if (auto st = fs::makeDirs(dir, 0700); !st) {
        rollBack(st.error());
        return;
    }
    if (!enter(State::Storing, "downloading for later installation")) {
        return;
    }
    storeArtifact(0);
}

void Coordinator::storeArtifact(std::size_t i)
{
    const auto arts = artifactsOf(op_->deployment);
    if (i == arts.size()) {
        bumpProgress(50);
        feedback("downloaded", "none", {"all artifacts downloaded and verified"});
        const Allowed allowed = allowedBy(op_->deployment);
        if (allowed.downloadOnly) {
            finish(State::Succeeded, "downloaded (download-only action)");
        } else if (allowed.install) {
            op_->artifact = 0;
            installStored(); // the window opened meanwhile
        } else if (enter(State::Waiting, "downloaded; waiting for the maintenance window")) {
            feedback("scheduled", "none", {"waiting for the maintenance window"});
        }
        return;
    }
    const std::string name = arts[i].value("filename", "artifact");
    const std::string dir = op_->storedDir;
    downloadResult_ = {};
    ++downloadAttempt_;
    peers_.download(op_->actionId, arts[i].dump(), guarded([this, dir, i, name, arts](Expected<Fd> fd) {
        if (!fd) {
            downloadFailed(Error{fd.error().code, "download of " + name + " failed: " + fd.error().message},
                           DownloadEnd::CallFailed);
            return;
        }
        const std::string path = dir + "/" + std::to_string(i);
        Fd out{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
        if (!out) {
            rollBack(errnoError("create " + path, errno));
            return;
        }
        const std::uint64_t expected = arts[i].value("size", std::uint64_t{0});
        relay_ = std::make_unique<Relay>(loop_, std::move(fd).value(), std::move(out),
                                         guarded([this, i, name, expected, path](Expected<std::uint64_t> bytes) {
                                             if (!bytes) {
                                                 downloadFailed(Error{bytes.error().code, "download of " + name +
                                                                                              " failed: " +
                                                                                              bytes.error().message},
                                                                DownloadEnd::StreamCut);
                                                 return;
                                             }
                                             // The cloud client ends the stream early when anything is wrong
                                             // (hash, size, the link); DownloadFinished says which.
                                             if (expected != 0 && *bytes != expected) {
                                                 downloadFailed(Error{ErrorCode::Io,
                                                                      "download of " + name + " ended after " +
                                                                          std::to_string(*bytes) + " of " +
                                                                          std::to_string(expected) + " bytes"},
                                                                DownloadEnd::StreamCut);
                                                 return;
                                             }
                                             (void)fs::syncDir(fs::dirName(path));
                                             op_->artifact = i + 1;
                                             bumpProgress(static_cast<std::uint32_t>(
                                                 50 * (i + 1) / artifactsOf(op_->deployment).size()));
                                             if (save()) {
                                                 storeArtifact(i + 1);
                                             }
                                         }));
    }));
}

// ---------------------------------------------------------------- network outages

void Coordinator::onDownloadFinished(const std::string& actionId, const std::string& filename,
                                     const std::string& result, const std::string& message)
{
    if (!op_ || op_->source != Source::Cloud || op_->actionId != actionId) {
        return;
    }
    log::debug("download of " + filename + " for action " + actionId + ": " + result + " " + message);
    downloadResult_ = {op_->id, result, message};
}

void Coordinator::downloadFailed(const Error& e, DownloadEnd how)
{
    const std::string id = op_->id;
    if (op_->cancelled) {
        rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return;
    }
    if (op_->source != Source::Cloud || (how == DownloadEnd::CallFailed && e.code == ErrorCode::InvalidArgument)) {
        rollBack(e); // refused outright (a bad link, a bad request): fetching again changes nothing
        return;
    }
    if (how == DownloadEnd::StreamCut && downloadResult_.opId != id) {
        // The cloud client's DownloadFinished tells whether the artifact or the link
        // failed; it comes from another process and may arrive after the cut stream.
        relay_.reset();
        const unsigned attempt = downloadAttempt_;
        after(settings_.downloadResultWait, [this, e, attempt] {
            if (downloadAttempt_ == attempt) {
                downloadFailed(e, DownloadEnd::ResultAwaited);
            }
        });
        return;
    }
    // No answer at all means the cloud client went away mid-download (it restarts):
    // as retryable as a cut link. Nothing was armed or changed either way.
    const bool seen = downloadResult_.opId == id;
    const std::string result = seen ? downloadResult_.result : "interrupted";
    const std::string why = seen && !downloadResult_.message.empty() ? downloadResult_.message : e.message;
    if (result == "failure") {
        rollBack(Error{ErrorCode::Io, "the artifact failed its checks: " + why});
        return;
    }
    if (result != "interrupted") {
        rollBack(e); // the update service refused the bundle (the cloud client saw the stream closed or complete)
        return;
    }
    const unsigned n = op_->downloadRetries + 1;
    if (n > settings_.downloadRetries) {
        rollBack(Error{ErrorCode::Io, "download interrupted " + std::to_string(n) + " times; the last time: " + why});
        return;
    }
    relay_.reset();
    op_->pendingUpdateOp.clear();
    op_->downloadRetries = n;
    op_->retryStore = op_->state == State::Storing;
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
    if (!enter(State::WaitingNetwork, step)) {
        return;
    }
    feedbackProgress(step);
    after(delay, [this] { retryDownloadWhenConnected(); });
}

void Coordinator::retryDownloadWhenConnected()
{
    peers_.cloudConnectionState(guarded([this](Expected<std::string> state) {
        if (!state || *state != "connected") {
            after(settings_.connectedCheckInterval, [this] { retryDownloadWhenConnected(); });
            return;
        }
        log::notice(op_->id + ": the server is reachable again; downloading again");
        if (op_->retryStore) {
            startStoreOnly(); // stores every artifact again (the interrupted one was incomplete)
        } else {
            startDownloadAndInstall(); // this artifact again; the bundles before it stay staged
        }
    }));
}

// ---------------------------------------------------------------- restarts (ours and the peers')

void Coordinator::resumeDownloading()
{
    const State state = op_->state;
    if (state == State::Downloading && !op_->pendingUpdateOp.empty()) {
        // The install we started may still run there, or may have completed while we
        // were away (its Completed signal lost): ask before starting it again.
        const std::string pending = op_->pendingUpdateOp;
        peers_.runningOperation("org.mbl.Update1", guarded([this, pending](Expected<std::string> running) {
            if (running && *running == pending) {
                return; // its Completed will come (watchPeers notices if it dies)
            }
            peers_.operationManifest(pending, guarded([this, pending](Expected<std::string> m) {
                if (m) {
                    bundleStaged(pending);
                    return;
                }
                op_->pendingUpdateOp.clear();
                resumeDownloading();
            }));
        }));
        return;
    }
    const unsigned attempts = op_->attempts + 1;
    op_->attempts = attempts;
    if (op_->source == Source::Local) {
        rollBack(Error{ErrorCode::Failed, std::string("interrupted by a restart of the coordinator while '") +
                                              stateName(state) + "'; nothing was armed or changed: install the "
                                                                 "bundle again"});
        return;
    }
    if (attempts > settings_.maxAttempts) {
        rollBack(Error{ErrorCode::Failed, "interrupted " + std::to_string(attempts - 1) + " times while '" +
                                              stateName(state) + "'"});
        return;
    }
    if (state == State::Storing) {
        startStoreOnly();
    } else {
        startDownloadAndInstall(); // bundles staged before stay staged (Update1 keeps them until Release)
    }
}

void Coordinator::watchPeers()
{
    // An install the update service or the container manager was doing dies with
    // it (kill -9, crash, OOM); its restart cleans up but sends no completion. So
    // while one is pending, ask the service which install it is running.
    loop_.addTimer(settings_.peerCheckInterval, [this, life = std::weak_ptr<int>(life_), id = op_->id] {
        if (life.expired() || !op_ || op_->id != id || paused_) {
            return;
        }
        std::string bus;
        std::string expected;
        if (op_->state == State::Downloading && !op_->pendingUpdateOp.empty()) {
            bus = "org.mbl.Update1";
            expected = op_->pendingUpdateOp;
        } else if (op_->state == State::StagingApps && !op_->appInstallOp.empty()) {
            bus = "org.mbl.ContainerManager1";
            expected = op_->appInstallOp;
        }
        if (bus.empty()) {
            watchPeers();
            return;
        }
        peers_.runningOperation(bus, guarded([this, bus, expected](Expected<std::string> running) {
            // No answer (the service is restarting): look again later.
            if (running && *running != expected) {
                peerLostOperation(bus);
            }
        }));
        watchPeers();
    });
}

void Coordinator::peerLostOperation(const std::string& bus)
{
    if (bus == "org.mbl.Update1") {
        // Completed and the property change race: a finished install is found staged.
        const std::string pending = op_->pendingUpdateOp;
        peers_.operationManifest(pending, guarded([this, pending](Expected<std::string> m) {
            if (m) {
                relay_.reset();
                bundleStaged(pending);
                return;
            }
            if (m.error().code != ErrorCode::NotFound) {
                // No answer (a busy or restarting service: the bus's timeout)
                // says nothing about the install: the next check asks again.
                // Only the service itself saying it has no such operation does.
                log::info(op_->id + ": no answer about update operation " + pending + " (" +
                          m.error().message + "); asking again");
                return;
            }
            relay_.reset();
            op_->pendingUpdateOp.clear();
            const std::string why = "the update service stopped during the install (nothing was armed)";
            log::warning(op_->id + ": " + why);
            const unsigned attempts = ++op_->attempts;
            if (op_->source == Source::Local) {
                rollBack(Error{ErrorCode::Failed, why + "; install the bundle again"});
                return;
            }
            if (attempts > settings_.maxAttempts) {
                rollBack(Error{ErrorCode::Failed, why + ", " + std::to_string(attempts - 1) + " times"});
                return;
            }
            feedbackProgress(why + "; downloading and staging again");
            startDownloadAndInstall();
        }));
        return;
    }
    const std::string why = "the container manager stopped while staging an app";
    log::warning(op_->id + ": " + why);
    const unsigned attempts = ++op_->attempts;
    if (attempts > settings_.maxAttempts) {
        rollBack(Error{ErrorCode::Failed, why + ", " + std::to_string(attempts - 1) + " times"});
        return;
    }
    op_->appInstallOp.clear();
    if (!save()) {
        return;
    }
    feedbackProgress(why + "; staging the app again");
    resumeStagingApps();
}

} // namespace mbl::coordinator
