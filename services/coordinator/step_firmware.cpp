// SPDX-License-Identifier: Apache-2.0
// Steps "arming", "rebooting" and "verifying": once every bundle and app is
// staged, the one rootfs payload's slot is armed (Update1.Arm), the booted
// slot and boot id journaled, the device rebooted; after the restart the
// coordinator finds out which slot booted. The new slot booted: go on (config,
// apps, health gate) on it. The old one: the bootloader fell back, roll back.

#include "coordinator.h"

#include "mbl/log.h"

namespace mbl::coordinator {

void Coordinator::armFirmware()
{
    const StagedBundle* fw = op_->firmwareBundle();
    const std::string updateOp = fw->updateOp;
    if (!enter(State::Arming, "arming the inactive slot with firmware " + fw->version)) {
        return;
    }
    peers_.updateState(guarded([this, updateOp](Expected<UpdateState> us) {
        if (!us) {
            rollBack(Error{us.error().code, "the update service does not answer: " + us.error().message});
            return;
        }
        // Journaled before arming: after a reboot these tell which slot booted.
        op_->bootedBefore = us->bootedSlot;
        op_->bootIdBefore = readBootId();
        if (!save()) {
            return;
        }
        peers_.arm(updateOp, guarded([this](Status st) {
            if (!st) {
                rollBack(Error{st.error().code, "arming the new firmware failed: " + st.error().message});
                return;
            }
            op_->armed = true;
            peers_.updateState(guarded([this](Expected<UpdateState> after) {
                if (!after) {
                    rollBack(Error{after.error().code, "the update service does not answer: " + after.error().message});
                    return;
                }
                if (after->activeSlot.empty() || after->activeSlot == op_->bootedBefore) {
                    rollBack(Error{ErrorCode::Failed, "the bootloader does not boot the new slot after arming (next: " +
                                                          after->activeSlot + ")"});
                    return;
                }
                op_->targetSlot = after->activeSlot;
                bumpProgress(72);
                if (save()) {
                    rebootNow();
                }
            }));
        }));
    }));
}

void Coordinator::rebootNow()
{
    // Journaled before the reboot command runs: on the next start we verify.
    if (!enter(State::Rebooting, "rebooting into slot " + op_->targetSlot)) {
        return;
    }
    bumpProgress(75);
    feedbackProgress("rebooting into the new firmware (slot " + op_->targetSlot + ")");
    peers_.reboot(guarded([this](Status st) {
        if (!st) {
            rollBack(Error{st.error().code, "the reboot command failed: " + st.error().message});
        }
    }));
}

void Coordinator::verifyAfterReboot()
{
    peers_.updateState(guarded([this](Expected<UpdateState> us) {
        if (!us) {
            // The update service is not up yet: ask again shortly.
            after(std::chrono::milliseconds(500), [this] { verifyAfterReboot(); });
            return;
        }
        if (op_->state == State::Arming && !op_->armed) {
            if (!op_->bootedBefore.empty() && us->bootedSlot != op_->bootedBefore) {
                // Armed just before a power loss, and the new slot booted.
                op_->armed = true;
                op_->targetSlot = us->bootedSlot;
            } else {
                armFirmware(); // Arm again: it arms the same staged slot
                return;
            }
        }
        if (op_->state == State::Arming && op_->targetSlot.empty()) {
            op_->targetSlot = us->activeSlot != op_->bootedBefore ? us->activeSlot : us->bootedSlot;
        }
        const std::string before = op_->bootedBefore;
        const std::string target = op_->targetSlot;
        if (op_->state != State::Verifying &&
            !enter(State::Verifying, "checking which slot booted (expected: " + target + ")")) {
            return;
        }
        if (us->bootedSlot == target && target != before) {
            bool committed = false;
            for (const auto& s : us->slots) {
                committed = committed || (s.slot == target && s.state == "good");
            }
            op_->bootedNew = true;
            bumpProgress(80);
            if (!save()) {
                return;
            }
            if (committed) {
                // Commit is journaled before it is called, so only a journal of the
                // coordinator before transactions gets here: the gate had passed.
                commitAll();
                return;
            }
            feedbackProgress("the new firmware booted in slot " + target + "; checking it");
            advance();
            return;
        }
        if (us->bootedSlot == before && us->activeSlot == target && target != before) {
            // Not rebooted yet (the coordinator restarted before the reboot happened).
            const unsigned attempts = ++op_->attempts;
            if (attempts > settings_.maxAttempts) {
                rollBack(Error{ErrorCode::Failed, "the device did not reboot into slot " + target});
                return;
            }
            rebootNow();
            return;
        }
        rollBack(Error{ErrorCode::Failed, "rolled back: the new firmware did not boot; the bootloader fell back to slot " +
                                              us->bootedSlot});
    }));
}

void Coordinator::onNewSlot(std::function<void()> then)
{
    if (!op_->bootedNew) {
        then();
        return;
    }
    peers_.updateState(guarded([this, then](Expected<UpdateState> us) {
        if (!us) {
            after(std::chrono::milliseconds(500), [this, then] { onNewSlot(then); });
            return;
        }
        if (us->bootedSlot != op_->targetSlot) {
            // A power loss (or a watchdog) during the check: the bootloader fell back.
            rollBack(Error{ErrorCode::Failed, "rolled back: the device restarted in slot " + us->bootedSlot +
                                                  " before the new firmware was committed"});
            return;
        }
        then();
    }));
}

} // namespace mbl::coordinator
