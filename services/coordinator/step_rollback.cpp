// SPDX-License-Identifier: Apache-2.0
// The rollback chain, entered at its first step that has work to do:
// "rolling-back-apps" (RollbackTransaction: every app of the transaction back to
// its previous version, data kept; staged versions dropped) →
// "rolling-back-config" (the saved settings applied again, step_config.cpp) →
// "releasing" (an armed slot that never booted is disarmed with MarkBad, every
// bundle's staging released) → "rolling-back-firmware" (on the trial slot:
// MarkBad and a reboot into the old slot) → failed (or cancelled). Every step is
// idempotent and journaled, so a restart in any of them does it again. Undo
// calls are retried while a peer restarts; what could not be undone is said in
// the outcome.

#include "coordinator.h"
#include "sequence.h"

#include "mbl/log.h"

namespace mbl::coordinator {

namespace {

constexpr unsigned kUndoRetries = 60; // one a second while a peer restarts

bool isRollbackState(State s)
{
    return s == State::RollingBackApps || s == State::RollingBackConfig || s == State::Releasing ||
           s == State::RollingBackFirmware;
}

// The rollback steps in order; -1 for a forward state.
int rollbackRank(State s)
{
    switch (s) {
    case State::RollingBackApps:
        return 0;
    case State::RollingBackConfig:
        return 1;
    case State::Releasing:
        return 2;
    case State::RollingBackFirmware:
        return 3;
    default:
        return -1;
    }
}

} // namespace

void Coordinator::retryUndo(std::function<void(Done)> call, Done done)
{
    // Retried while it fails (a restarting peer; undo calls are idempotent).
    auto tries = std::make_shared<unsigned>(0);
    auto attempt = std::make_shared<std::function<void()>>();
    *attempt = [this, call, done, tries, weak = std::weak_ptr<std::function<void()>>(attempt)] {
        auto self = weak.lock();
        call(guarded([this, self, tries, done](Status st) {
            if (!st && ++*tries < kUndoRetries) {
                after(std::chrono::seconds(1), [self] { (*self)(); });
                return;
            }
            done(st);
        }));
    };
    (*attempt)();
}

void Coordinator::rollBack(const Error& why)
{
    if (!op_) {
        return;
    }
    if (isRollbackState(op_->state) || isFinal(op_->state)) {
        log::warning(op_->id + ": while rolling back: " + why.message);
        return;
    }
    relay_.reset();
    if (!op_->failure) {
        op_->failure = why;
    }
    if (why.code == ErrorCode::Cancelled) {
        op_->cancelled = true;
    }
    log::warning(op_->id + ": " + (op_->cancelled ? "cancelling" : "rolling back") + ": " + why.message);
    rollbackNext();
}

void Coordinator::rollbackNext()
{
    const Operation& op = *op_;
    const int rank = rollbackRank(op.state);
    const bool appsToUndo = op.appsHandedOver;
    const bool configToUndo = op.configPrevious && op.configAttempted > 0;
    const bool stagingToRelease = !op.bundles.empty() || !op.pendingUpdateOp.empty();
    const bool onTrial = op.armed && op.bootedNew;
    if (rank < 0 && appsToUndo) {
        if (enter(State::RollingBackApps, "rolling back the apps to their previous versions")) {
            rollbackApps();
        }
        return;
    }
    if (rank < 1 && configToUndo) {
        if (enter(State::RollingBackConfig, "restoring the previous configuration")) {
            restoreConfig();
        }
        return;
    }
    if (rank < 2 && stagingToRelease) {
        if (enter(State::Releasing, "dropping what was staged")) {
            releaseBundles();
        }
        return;
    }
    if (rank < 3 && onTrial) {
        if (enter(State::RollingBackFirmware, "leaving the new firmware: back to slot " + op.bootedBefore)) {
            rollbackFirmware();
        }
        return;
    }
    finish(op.cancelled ? State::Cancelled : State::Failed, op.failureMessage());
}

void Coordinator::rollbackApps()
{
    const std::string id = op_->id;
    retryUndo([this, id](Done done) { peers_.rollbackTransaction(id, done); },
        guarded([this](Status st) {
            if (st) {
                if (op_->appsActivated) {
                    op_->undone.push_back("the apps went back to their previous versions (data kept)");
                }
            } else {
                log::error(op_->id + ": RollbackTransaction failed: " + st.error().describe());
                op_->undoFailures.push_back("the apps could not be rolled back (" + st.error().message + ")");
            }
            op_->appsHandedOver = false;
            if (save()) {
                rollbackNext();
            }
        }));
}

void Coordinator::releaseBundles()
{
    auto release = [this] {
        std::vector<std::string> ops;
        for (const auto& b : op_->bundles) {
            ops.push_back(b.updateOp);
        }
        if (!op_->pendingUpdateOp.empty()) {
            ops.push_back(op_->pendingUpdateOp);
        }
        sequence(
            ops.size(),
            [this, ops](std::size_t i, Done next) {
                // A failure here leaves staged files, never anything armed: go on.
                retryUndo([this, op = ops[i]](Done done) { peers_.release(op, done); },
                    guarded([ops, i, next](Status st) {
                        if (!st) {
                            log::warning("releasing the staging of " + ops[i] + " failed: " + st.error().describe());
                        }
                        next({});
                    }));
            },
            guarded([this](Status) {
                op_->bundles.clear();
                op_->pendingUpdateOp.clear();
                if (save()) {
                    rollbackNext();
                }
            }));
    };
    if (!op_->armed || op_->bootedNew || op_->markedBad) {
        release();
        return;
    }
    // Armed but not booted (a failure before the reboot, or the bootloader fell
    // back): disarm the slot if it is still what boots next.
    peers_.updateState(guarded([this, release](Expected<UpdateState> us) {
        if (!us) {
            after(std::chrono::seconds(1), [this] { releaseBundles(); });
            return;
        }
        if (us->activeSlot != op_->targetSlot || op_->targetSlot == us->bootedSlot || op_->targetSlot.empty()) {
            op_->markedBad = true;
            release();
            return;
        }
        peers_.markBad(guarded([this, release](Status st) {
            if (!st) {
                log::error(op_->id + ": MarkBad of the armed slot failed: " + st.error().describe());
                op_->undoFailures.push_back("the armed slot could not be disarmed (" + st.error().message + ")");
            } else {
                op_->undone.push_back("the armed slot " + op_->targetSlot + " was disarmed");
            }
            op_->markedBad = true;
            if (save()) {
                release();
            }
        }));
    }));
}

void Coordinator::rollbackFirmware()
{
    peers_.updateState(guarded([this](Expected<UpdateState> us) {
        if (!us) {
            after(std::chrono::milliseconds(500), [this] { rollbackFirmware(); });
            return;
        }
        if (us->bootedSlot != op_->targetSlot) {
            // Back on the old slot (our reboot, or the bootloader's own fallback).
            op_->undone.push_back("the device runs the previous firmware again (slot " + us->bootedSlot + ")");
            finish(op_->cancelled ? State::Cancelled : State::Failed, op_->failureMessage());
            return;
        }
        auto rebootBack = [this] {
            feedbackProgress("rebooting back to slot " + op_->bootedBefore);
            peers_.reboot(guarded([this](Status rb) {
                if (!rb) {
                    op_->undoFailures.push_back("the reboot command failed (" + rb.error().message +
                                                "): the device falls back at its next reboot");
                    finish(State::Failed, op_->failureMessage());
                }
            }));
        };
        if (op_->markedBad) {
            rebootBack();
            return;
        }
        peers_.markBad(guarded([this, rebootBack](Status st) {
            if (!st) {
                log::error(op_->id + ": MarkBad failed: " + st.error().describe());
            }
            op_->markedBad = true;
            if (save() && !pauseAt("rolling-back-firmware:marked-bad")) {
                rebootBack();
            }
        }));
    }));
}

} // namespace mbl::coordinator
