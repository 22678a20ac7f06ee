// SPDX-License-Identifier: Apache-2.0
// Step "committing": after the health gate, everything together. Update1.Commit
// first — the point of no return for the firmware; if it is refused nothing is
// permanent yet and the whole transaction rolls back. Then the apps' previous
// versions are deleted (CommitTransaction), the apps a complete app set drops
// are removed (data kept), every bundle's staging is released and the config
// version published. Each of these is idempotent, so a restart in this state
// does them again; none of them can make what runs untrue, so a failure there
// is a warning in the (successful) outcome, not a rollback.

#include "coordinator.h"
#include "sequence.h"

#include "mbl/log.h"

#include <algorithm>

namespace mbl::coordinator {

namespace {
constexpr unsigned kCommitRetries = 30;
}

void Coordinator::commitAll()
{
    if (!enter(State::Committing, "committing " + (op_->version().empty() ? op_->id : op_->version()))) {
        return;
    }
    bumpProgress(95);
    const StagedBundle* fw = op_->firmwareBundle();
    if (fw == nullptr || !op_->bootedNew) {
        commitApps();
        return;
    }
    commitFirmware();
}

void Coordinator::commitFirmware()
{
    peers_.updateState(guarded([this](Expected<UpdateState> us) {
        if (!us) {
            after(std::chrono::milliseconds(500), [this] { commitFirmware(); });
            return;
        }
        for (const auto& s : us->slots) {
            if (s.slot == op_->targetSlot && us->bootedSlot == op_->targetSlot && s.state == "good") {
                commitApps(); // committed before a restart
                return;
            }
        }
        if (us->bootedSlot != op_->targetSlot) {
            // Rebooted into the old slot between the gate and the commit.
            rollBack(Error{ErrorCode::Failed, "rolled back: the device left the new firmware (now slot " +
                                                  us->bootedSlot + ") before it was committed"});
            return;
        }
        peers_.commit(guarded([this](Status st) {
            if (!st && st.error().code == ErrorCode::Io && ++op_->busyRetries < 60) {
                // No answer (the update service restarts): look again; a commit that
                // happened is found in SlotStates.
                after(std::chrono::seconds(1), [this] { commitFirmware(); });
                return;
            }
            if (!st) {
                rollBack(Error{st.error().code, "committing the new firmware failed: " + st.error().message});
                return;
            }
            commitApps();
        }));
    }));
}

void Coordinator::commitApps()
{
    if (!op_->appsHandedOver) {
        commitDroppedApps();
        return;
    }
    auto tries = std::make_shared<unsigned>(0);
    auto attempt = std::make_shared<std::function<void()>>();
    *attempt = [this, tries, weak = std::weak_ptr<std::function<void()>>(attempt)] {
        auto self = weak.lock();
        peers_.commitTransaction(op_->id, guarded([this, tries, self](Status st) {
            if (!st && ++*tries < kCommitRetries) {
                after(std::chrono::seconds(1), [self] { (*self)(); });
                return;
            }
            if (!st) {
                op_->warnings.push_back("the apps' previous versions were not deleted (" + st.error().message + ")");
            }
            commitDroppedApps();
        }));
    };
    (*attempt)();
}

void Coordinator::commitDroppedApps()
{
    auto removed = std::make_shared<std::vector<std::string>>();
    const auto drop = op_->dropApps;
    sequence(
        drop.size(),
        [this, drop, removed](std::size_t i, Done next) {
            // Their data volumes are kept: a later deployment may bring the app back.
            peers_.removeApp(drop[i], false, guarded([this, drop, i, removed, next](Status st) {
                if (st || st.error().code == ErrorCode::NotFound) {
                    removed->push_back(drop[i]);
                } else {
                    op_->warnings.push_back("app " + drop[i] + " was not removed (" + st.error().message + ")");
                }
                next({});
            }));
        },
        guarded([this, removed](Status) {
            if (!removed->empty()) {
                std::string names;
                for (const auto& n : *removed) {
                    names += (names.empty() ? "" : ", ") + n;
                }
                op_->undone.push_back("removed the apps the deployment does not name: " + names + " (data kept)");
            }
            if (save()) {
                commitRelease();
            }
        }));
}

void Coordinator::commitRelease()
{
    std::vector<std::string> ops;
    for (const auto& b : op_->bundles) {
        ops.push_back(b.updateOp);
    }
    sequence(
        ops.size(),
        [this, ops](std::size_t i, Done next) {
            peers_.release(ops[i], guarded([ops, i, next](Status st) {
                if (!st) {
                    log::warning("releasing the staging of " + ops[i] + " failed: " + st.error().describe());
                }
                next({});
            }));
        },
        guarded([this](Status) {
            // What the outcome says: what runs now.
            const StagedBundle* fw = op_->firmwareBundle();
            std::string message;
            if (fw != nullptr) {
                message = "firmware " + fw->version + " committed in slot " + op_->targetSlot;
            }
            std::string apps;
            for (const auto& a : op_->apps) {
                if (a.staged) {
                    apps += (apps.empty() ? "" : ", ") + a.name + " " + a.version;
                }
            }
            if (!apps.empty()) {
                message += (message.empty() ? "installed: " : "; ") + std::string("apps ") + apps + " running";
            }
            const std::string configVersion = op_->config.value("version", std::string());
            if (op_->configApplied) {
                message += (message.empty() ? "" : "; ") + std::string("configuration ") + configVersion + " applied";
                // Published for the fleet operator (device attribute config.version).
                peers_.setAttributes("config", {{"version", configVersion}}, [configVersion](Status st) {
                    if (!st) {
                        log::warning("cannot publish config version " + configVersion + ": " + st.error().describe());
                    }
                });
            }
            std::size_t files = 0;
            for (const auto& b : op_->bundles) {
                files += static_cast<std::size_t>(std::count(b.payloadTypes.begin(), b.payloadTypes.end(), "file"));
            }
            if (files > 0) {
                message += (message.empty() ? "installed: " : "; ") + std::to_string(files) + " file payload(s)";
            }
            if (message.empty()) {
                bool unchanged = !op_->apps.empty();
                for (const auto& a : op_->apps) {
                    unchanged = unchanged && a.unchanged;
                }
                message = unchanged ? "installed: every app already runs the version the deployment names"
                                    : "installed: nothing to switch (the bundles carry no firmware, app or config)";
            }
            if (fw == nullptr && !apps.empty()) {
                message += "; no reboot needed";
            }
            for (const auto& u : op_->undone) {
                message += "; " + u;
            }
            for (const auto& w : op_->warnings) {
                message += "; warning: " + w;
            }
            finish(State::Succeeded, message);
        }));
}

} // namespace mbl::coordinator
