// SPDX-License-Identifier: Apache-2.0
#pragma once
// The boot policy: the one owner of the A/B slot states and of every write of
// the bootloader environment (BOOT_ORDER, BOOT_<name>_LEFT and the MBL_* record
// of contract C7). The environment is the authority on which slot is armed, on
// trial, committed or bad, and keeps a copy of the anti-rollback floor, so an
// empty or wiped /var/lib/mbl never commits a trial, drops the fallback or
// lowers the floor. Each slot is a typed state stepped by one transition table.

#include "bootloader.h"

#include "mbl/expected.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace mbl::update {

struct SlotConfig {
    std::string name;       // "a"
    std::string device;     // block device or image file
    std::string bootname;   // name in the bootloader environment ("A")
    std::uint64_t size = 0; // 0: the device's size
    std::string filesystem; // what a rootfs payload must be ("ext4"), "" any (rootfs_head.h)
};

enum class SlotStatus {
    Empty,  // holds no firmware (or a partial or refused image); never booted
    Staged, // written and verified by an install with arm=false; not bootable until armed
    Armed,  // armed for its trial boot, not booted yet
    Trial,  // booted for its trial: Commit or MarkBad
    Good,   // committed (or the factory firmware)
    Bad,    // ran and failed, fell back, or abandoned
};
const char* slotStatusName(SlotStatus s);
std::optional<SlotStatus> slotStatusFromName(const std::string& name);

enum class SlotEvent {
    Claim,    // an install starts writing the slot: out of BOOT_ORDER, no attempts, no record
    Stage,    // written and verified, not armed (state only)
    Arm,      // armed for one trial boot
    Boot,     // seen booted on its trial (no write)
    Commit,   // the booted trial is made permanent; the floor copy rises
    MarkBad,  // the trial (or armed slot) is abandoned
    FallBack, // seen not booted with no attempts left: the bootloader fell back
    Release,  // the staged, never armed firmware is dropped (state only)
    Refill,   // start on a good slot: its attempts refilled, first in BOOT_ORDER
};
const char* slotEventName(SlotEvent e);

struct SlotTransition {
    SlotEvent event;
    SlotStatus from;
    SlotStatus to;
};
// The whole state machine of a slot; anything else is refused.
extern const std::vector<SlotTransition> kSlotTransitions;
std::optional<SlotStatus> nextStatus(SlotStatus from, SlotEvent event);

struct SlotRecord {
    SlotStatus status = SlotStatus::Empty;
    std::string version;
    std::uint64_t securityVersion = 0;
    std::uint64_t installed = 0; // seconds since the epoch; 0 when unknown
    std::string operation;       // Staged: the install that wrote it
    // false: nothing is on record for the slot (no environment record, no state
    // copy). Its environment variables are then never rewritten: a slot we know
    // nothing about is never taken out of the boot order.
    bool onRecord = true;
};

// The environment variables the update service adds (C7; the boot scripts ignore them).
namespace bootenv {
std::string order();                          // BOOT_ORDER
std::string left(const std::string& bootname); // BOOT_<name>_LEFT
std::string state(const std::string& bootname); // MBL_<name>_STATE: empty|trial|good|bad
std::string version(const std::string& bootname); // MBL_<name>_VERSION
std::string securityVersion(const std::string& bootname); // MBL_<name>_SECURITY_VERSION
std::string floor();                          // MBL_SECURITY_VERSION_FLOOR
} // namespace bootenv

class BootPolicy {
public:
    struct Settings {
        std::vector<SlotConfig> slots;
        int trialAttempts = 1;
        int goodAttempts = 3;
        std::string factoryVersion = "0.0.0";
    };
    BootPolicy(std::unique_ptr<Bootloader> bootloader, Settings settings);

    // What the service's own state file (state.json on the data partition) says;
    // empty when it was wiped, and the only record on a device whose environment
    // was written before the MBL_* record existed.
    struct Copy {
        std::map<std::string, SlotRecord> slots;
        std::uint64_t floor = 0;
    };
    struct Started {
        std::string fellBack; // the slot the bootloader fell back from, "" if none
        std::string fellBackVersion;
    };
    // Once at start: reads the environment, merges the copy (the environment wins),
    // observes the boot (Boot, FallBack), refills a good booted slot, and writes
    // the record back where it was missing or the copy's floor is higher.
    Expected<Started> start(const std::string& booted, const Copy& copy);

    // Transitions (each at most one environment write).
    Status claim(const std::string& slot);
    Status stage(const std::string& slot, const SlotRecord& record);
    // From Empty (an install with arm=true; record gives version and security
    // version) or from Staged (Arm; record ignored).
    Status arm(const std::string& slot, const SlotRecord& record);
    Status release(const std::string& slot);
    // Commit of the booted trial: the new floor. Committing a good booted slot is a no-op.
    Expected<std::uint64_t> commit();
    // MarkBad of the trial or armed slot: the slot's name.
    Expected<std::string> markBad();

    struct View {
        std::string booted;
        std::string active; // the slot the bootloader boots next
        std::uint64_t floor = 0;
        std::map<std::string, SlotRecord> slots;
    };
    // A consistent copy; never waits for an environment write.
    View view() const;
    const SlotConfig* slot(const std::string& name) const;
    std::string describe() const { return bootloader_->describe(); }

private:
    using Env = std::map<std::string, std::string>;
    using Changes = std::map<std::string, std::optional<std::string>>;
    // Runs one transition on one slot: checks the table, writes the changes in one
    // environment write, then publishes the new records. opMutex_ held.
    Status step(const std::string& slot, SlotEvent event, const SlotRecord& after, const Changes& changes);
    Status writeEnv(const Changes& changes);
    std::vector<std::string> orderOf(const Env& env) const;
    std::string firstBootable(const Env& env) const;
    std::string activeFrom(const Env& env) const;
    // The record variables of a slot as `after` says.
    void recordChanges(const SlotConfig& s, const SlotRecord& after, Changes& out) const;
    // BOOT_ORDER with `first` (if any) first, then the good slots, then slots
    // not on record where they were; slots taken out are dropped.
    std::string orderWith(const Env& env, const std::map<std::string, SlotRecord>& slots, const std::string& first) const;

    std::unique_ptr<Bootloader> bootloader_;
    Settings settings_;
    std::mutex opMutex_;            // one transition (and environment write) at a time
    mutable std::mutex viewMutex_;  // guards what view() copies
    std::string booted_;
    std::string active_;
    std::uint64_t floor_ = 0;
    std::map<std::string, SlotRecord> slots_;
    Env env_; // the environment as last read or written
};

} // namespace mbl::update
