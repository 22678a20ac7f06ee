// SPDX-License-Identifier: Apache-2.0
// Steps "staging-apps" and "activating-apps": every app of the deployment is
// handed to the container manager under the transaction (the operation id),
// one after the other, with its settings from the manifest (contract C4); the
// manager unpacks, checks and stages it beside the installed version without
// switching (contract C3). Only once everything is staged (and, with firmware,
// the new slot booted) does ActivateTransaction switch them all.

#include "coordinator.h"

#include "mbl/log.h"

namespace mbl::coordinator {

void Coordinator::snapshotBeforeChange(std::function<void()> then)
{
    // What should run after the deployment: what runs now (the health gate checks
    // it too), and with a complete app set (C5) what is to be removed.
    peers_.listApps(guarded([this, then](Expected<std::vector<AppInfo>> list) {
        if (!list) {
            rollBack(Error{list.error().code, "cannot list the installed apps: " + list.error().message});
            return;
        }
        op_->runningBefore.clear();
        op_->dropApps.clear();
        for (const auto& installed : *list) {
            if (installed.state == "running") {
                op_->runningBefore[installed.name] = installed.version;
            }
            bool named = false;
            for (auto& a : op_->apps) {
                if (a.name != installed.name) {
                    continue;
                }
                named = true;
                // Desired state already reached: nothing to stage for this app.
                a.unchanged = installed.version == a.version && installed.state == "running";
                // The container manager starts a new version where the old one ran (C3):
                // an app someone stopped stays stopped, and the gate does not expect it.
                a.shouldRun = a.shouldRun && installed.state == "running";
            }
            if (!named && op_->replaceApps) {
                op_->dropApps.push_back(installed.name);
            }
        }
        peers_.cloudConnectionState(guarded([this, then](Expected<std::string> cs) {
            op_->cloudConnectedBefore = cs && *cs == "connected";
            if (save()) {
                then();
            }
        }));
    }));
}

void Coordinator::stageNextApp()
{
    auto& apps = op_->apps;
    while (op_->appIndex < apps.size() && apps[op_->appIndex].unchanged) {
        ++op_->appIndex;
    }
    if (op_->appIndex >= apps.size()) {
        if (save()) {
            advance();
        }
        return;
    }
    if (op_->cancelled) {
        rollBack(Error{ErrorCode::Cancelled, "cancelled before installing"});
        return;
    }
    const std::size_t i = op_->appIndex;
    const AppStep a = apps[i];
    op_->appsHandedOver = true;
    op_->appInstallOp.clear();
    if (!enter(State::StagingApps, "staging app " + a.name + " " + a.version + " (" + std::to_string(i + 1) + " of " +
                                       std::to_string(apps.size()) + ")")) {
        return;
    }
    feedbackProgress("staging app " + a.name + " " + a.version);
    peers_.openPayload(a.updateOp, a.payload, guarded([this, a](Expected<Fd> fd) {
        if (!fd) {
            rollBack(Error{fd.error().code, "app " + a.name + ": its staged payload cannot be opened: " +
                                                fd.error().message});
            return;
        }
        // C4: the manifest's settings, with the manifest's name and version and the
        // transaction (these win over the settings document).
        nlohmann::json options = a.settings.is_object() ? a.settings : nlohmann::json::object();
        options["name"] = a.name;
        options["version"] = a.version;
        options["transaction"] = op_->id;
        peers_.installApp(std::move(fd).value(), options.dump(), guarded([this, a](Expected<std::string> installOp) {
            if (!installOp && installOp.error().code == ErrorCode::Busy && op_->busyRetries < 120) {
                // An install of this app from before a restart of ours is still running
                // there: wait for it, then look again (a staged app is then skipped).
                ++op_->busyRetries;
                after(std::chrono::seconds(1), [this] { resumeStagingApps(); });
                return;
            }
            if (!installOp) {
                rollBack(Error{installOp.error().code, "app " + a.name + " failed: " + installOp.error().message});
                return;
            }
            if (op_->appInstallOp.empty()) {
                op_->appInstallOp = *installOp;
                (void)save();
            }
        }));
    }));
}

void Coordinator::onAppInstallCompleted(const std::string& installOp, const std::string& app, bool success,
                                        const std::string& errorName, const std::string& message)
{
    if (!op_ || op_->state != State::StagingApps || paused_ || op_->appIndex >= op_->apps.size()) {
        return;
    }
    const bool ours = op_->appInstallOp.empty() ? app == op_->apps[op_->appIndex].name : op_->appInstallOp == installOp;
    if (!ours) {
        return;
    }
    appStaged(success, Error{errorCodeFromName(errorName), message});
}

void Coordinator::appStaged(bool success, const Error& e)
{
    AppStep& a = op_->apps[op_->appIndex];
    op_->appInstallOp.clear();
    ++epoch_; // the step that waited for this install is answered
    if (!success) {
        rollBack(Error{e.code, "app " + a.name + " failed: " + e.message});
        return;
    }
    a.staged = true;
    ++op_->appIndex;
    op_->busyRetries = 0;
    std::size_t staged = 0;
    for (const auto& x : op_->apps) {
        staged += x.staged ? 1 : 0;
    }
    bumpProgress(static_cast<std::uint32_t>(60 + 10 * op_->appIndex / op_->apps.size()));
    if (!save() || pauseAt("staging-apps:" + std::to_string(staged))) {
        return;
    }
    stageNextApp();
}

void Coordinator::resumeStagingApps()
{
    // Where the container manager stands: apps staged under the transaction
    // (also one whose InstallCompleted we missed) are not staged again.
    peers_.getTransaction(op_->id, guarded([this](Expected<TransactionInfo> t) {
        if (t) {
            for (const auto& ta : t->apps) {
                for (auto& a : op_->apps) {
                    if (a.name == ta.name && a.version == ta.toVersion && ta.state != "failed") {
                        a.staged = true;
                    }
                }
            }
        }
        while (op_->appIndex < op_->apps.size() &&
               (op_->apps[op_->appIndex].staged || op_->apps[op_->appIndex].unchanged)) {
            ++op_->appIndex;
        }
        op_->appInstallOp.clear();
        if (save()) {
            stageNextApp();
        }
    }));
}

void Coordinator::activateApps()
{
    std::string names;
    for (const auto& a : op_->apps) {
        if (a.staged) {
            names += (names.empty() ? "" : ", ") + a.name + " " + a.version;
        }
    }
    if (!enter(State::ActivatingApps, "switching to " + names)) {
        return;
    }
    feedbackProgress("switching to " + names);
    switchApps();
}

void Coordinator::switchApps()
{
    // After a restart the switch may be done already.
    peers_.getTransaction(op_->id, guarded([this](Expected<TransactionInfo> t) {
        if (t && (t->state == "active" || t->state == "committed")) {
            op_->appsActivated = true;
            if (save()) {
                advance();
            }
            return;
        }
        peers_.activateTransaction(op_->id, guarded([this](Status st) {
            if (!st && (st.error().code == ErrorCode::Io || st.error().code == ErrorCode::Busy) &&
                ++op_->busyRetries < 120) {
                // The manager restarted mid-way (it resumes the switch) or an install
                // still runs: ask again; ActivateTransaction is idempotent.
                after(std::chrono::seconds(1), [this] { switchApps(); });
                return;
            }
            if (!st) {
                rollBack(Error{st.error().code, "switching the apps to their new versions failed: " +
                                                    st.error().message});
                return;
            }
            op_->busyRetries = 0;
            op_->appsActivated = true;
            bumpProgress(84);
            if (save()) {
                advance();
            }
        }));
    }));
}

} // namespace mbl::coordinator
