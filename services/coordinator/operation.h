// SPDX-License-Identifier: Apache-2.0
#pragma once
// The coordinator's operation: one deployment (cloud) or local install, as a
// typed record that the journal stores, the states it goes through (an enum
// with one name table) and the one table of transitions between them. The
// README's diagram is generated from that table (a unit test compares them).

#include "mbl/error.h"
#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mbl::coordinator {

enum class State {
    Received,            // accepted, checked, nothing done yet
    Storing,             // download-only / closed window: artifacts to disk
    Waiting,             // stored; waiting for the maintenance window
    WaitingNetwork,      // a download the network interrupted starts again once the server answers
    Downloading,         // bundle i: download → Update1.Install(arm=false) → its manifest
    StagingApps,         // app i: ContainerManager1.InstallApp(transaction) → staged beside the old version
    Arming,              // Update1.Arm of the one rootfs payload
    Rebooting,           // journaled before the reboot command runs
    Verifying,           // after the reboot: did the new slot boot?
    Configuring,         // saved settings journaled, then ApplySettings / hostname
    ActivatingApps,      // ContainerManager1.ActivateTransaction
    CheckingHealth,      // the health gate (deadline journaled against CLOCK_BOOTTIME + boot id)
    Committing,          // Update1.Commit, CommitTransaction, dropped apps removed, Release
    RollingBackApps,     // ContainerManager1.RollbackTransaction (data kept)
    RollingBackConfig,   // the saved settings applied again
    Releasing,           // Update1.Release of every staged bundle; an armed, unbooted slot disarmed (MarkBad)
    RollingBackFirmware, // on the trial slot: MarkBad, reboot back
    Succeeded,
    Failed,
    Cancelled,
};

// "checking-health" and back; nullopt for an unknown name.
const char* stateName(State s);
std::optional<State> stateFromName(const std::string& name);
bool isFinal(State s);
// The one table of transitions: every setState() is checked against it.
bool transitionAllowed(State from, State to);
const std::vector<std::pair<State, State>>& transitions();
// The table as the README shows it (a markdown list, one line per state).
std::string transitionDiagram();

enum class Source { Cloud, Local };

// One payload of a staged bundle that is handed on (app or config).
struct AppStep {
    std::string updateOp; // the Update1 operation that staged it
    std::string payload;  // its name in that bundle's manifest
    std::string name;
    std::string version;
    nlohmann::json settings = nlohmann::json::object(); // C4: the manifest's per-app settings
    bool staged = false;       // InstallCompleted(success) under the transaction
    bool unchanged = false;    // already installed at this version: nothing to stage
    bool shouldRun = true;     // settings do not say autostart: false
};

struct StagedBundle {
    std::string artifact;  // file name (cloud) or "local bundle"
    std::string updateOp;  // Update1 operation id (its staging lives until Release)
    std::string version;   // manifest version
    bool rootfs = false;
    std::vector<std::string> payloadTypes; // every payload type, in manifest order
};

struct HealthRecord {
    // Absolute deadline against CLOCK_BOOTTIME, valid only in the boot `bootId`:
    // a restart in the same boot keeps the deadline, a new boot id means a reboot.
    std::int64_t deadlineBoottimeMs = 0;
    std::string bootId;
    std::string status; // the last reason it is not (yet) healthy
};

struct Outcome {
    bool success = false;
    std::string error; // org.mbl.Error.* when !success
    std::string message;
};

struct StepRecord {
    std::int64_t time = 0;
    std::string state;
    std::string step;
};

struct Operation {
    std::string id;
    Source source = Source::Cloud;
    std::string actionId;
    nlohmann::json deployment = nlohmann::json::object(); // the C1 document as received
    State state = State::Received;
    std::string step; // human-readable
    std::vector<StepRecord> steps;
    std::int64_t created = 0;
    std::int64_t finished = 0;
    unsigned attempts = 1;
    std::uint32_t progress = 0; // 0-100, never goes back
    bool replaceApps = false; // C5: complete_app_set, or mblctl install --replace-apps

    // Downloading / storing.
    std::size_t artifact = 0;       // the artifact being installed
    std::string pendingUpdateOp;    // Update1.Install running for it
    unsigned updateProgress = 0;    // that install's Progress, 0-100
    std::string storedDir;          // download-only / maintenance window
    unsigned downloadRetries = 0;
    bool retryStore = false;        // the interrupted download was storing
    std::vector<StagedBundle> bundles;

    // Apps (the transaction id is the operation id).
    std::vector<AppStep> apps;
    std::size_t appIndex = 0;
    std::string appInstallOp;
    unsigned busyRetries = 0;
    bool appsHandedOver = false; // an InstallApp under the transaction was sent
    bool appsActivated = false;  // ActivateTransaction was sent
    // What ran before the deployment (name -> version): it must run afterwards too.
    std::map<std::string, std::string> runningBefore;
    bool cloudConnectedBefore = false;
    std::vector<std::string> dropApps; // removed at commit (C5)

    // Config.
    std::optional<std::string> configUpdateOp; // which bundle's "config" payload
    std::string configPayload;
    nlohmann::json config = nlohmann::json::object(); // the checked document
    std::optional<std::map<std::string, std::string>> configPrevious; // bus -> settings in effect
    std::size_t configAttempted = 0; // sections sent to their service so far
    bool configApplied = false;
    std::size_t configRestored = 0; // sections restored so far (rollback)

    // Firmware.
    std::string bootedBefore;
    std::string targetSlot;
    std::string bootIdBefore;
    bool armed = false;
    bool bootedNew = false; // the new slot booted (on trial until Commit)
    bool markedBad = false;

    HealthRecord health;

    // Rolling back: why, whether it ends as a cancel, what was undone and what
    // could not be (the final message says both).
    std::optional<Error> failure;
    bool cancelled = false;
    std::vector<std::string> undone;
    std::vector<std::string> undoFailures;
    // Committing: what did not go as it should after the point of no return.
    std::vector<std::string> warnings;
    std::optional<Outcome> result;

    const StagedBundle* firmwareBundle() const;
    std::size_t artifactCount() const;
    // Why it failed, what was undone and what could not be.
    std::string failureMessage() const;
    // The bundles' manifest version ("2.0.0", or "1.0, 2.0" for several).
    std::string version() const;

    nlohmann::json toJson() const;
    // A journal record; refuses what it cannot understand rather than guess.
    static Expected<Operation> fromJson(const nlohmann::json& j);
};

// Artifacts of a C1 deployment, in order (every chunk's artifacts).
std::vector<nlohmann::json> artifactsOf(const nlohmann::json& deployment);

// What a C1 deployment document allows (the one reader of its flags). A flag the
// cloud client does not send yet is derived from the fields it comes from
// (hawkBit's download/update handling, the maintenance window, the chunk
// metadata), so an older cloud client behaves as before.
struct Allowed {
    bool download = true;       // download_allowed: download != "skip"
    bool install = true;        // install_allowed: update != "skip", window not "unavailable"
    bool downloadOnly = false;  // download_only: hawkBit's downloadonly (update "skip", no window)
    bool completeAppSet = false; // complete_app_set: chunk metadata mbl.complete-app-set = true
    bool operator==(const Allowed& o) const
    {
        return download == o.download && install == o.install && downloadOnly == o.downloadOnly &&
               completeAppSet == o.completeAppSet;
    }
    bool operator!=(const Allowed& o) const { return !(*this == o); }
};
Allowed allowedBy(const nlohmann::json& deployment);

} // namespace mbl::coordinator
