#pragma once
// App transactions (contract C3): apps staged under one transaction id beside
// their installed versions, then switched together (activate), and either made
// permanent (commit: previous versions deleted) or undone (rollback: previous
// versions run again, added apps removed, staged versions dropped).
//
// This file holds the record and its state machine; no I/O beyond reading and
// writing the record, no bus. The container manager drives the steps
// (container_manager_txn.cpp).
//
// On disk (<state>/apps/.transactions/):
//   <id>.json        the record, replaced atomically at every step
//   <id>/<app>/      a staged bundle (config.json, rootfs/, mbl-app.json) until activation
// A manager killed at any step finds the record at start and finishes what
// it says: an activation or a rollback in progress resumes, a commit completes.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace mbl::containers {

enum class TxnState {
    Staged,      // apps staged, nothing switched
    Activating,  // switching app by app (resumed after a restart)
    Active,      // every app switched; previous versions kept
    Committing,  // deleting previous versions (resumed after a restart)
    Committed,   // final
    RollingBack, // switching back app by app (resumed after a restart)
    RolledBack,  // final
};

enum class TxnEvent {
    Stage,       // an app is staged
    Activate,    // ActivateTransaction
    Switched,    // every app of the transaction runs its new version
    Commit,      // CommitTransaction
    Deleted,     // previous versions deleted
    Rollback,    // RollbackTransaction
    RolledBack,  // every app is back
};

// Where each app of a transaction stands.
enum class TxnAppStep {
    Staged,     // its new version waits in the transaction's folder
    Active,     // switched to the new version
    Committed,  // its previous version is deleted
    RolledBack, // back on its previous version (or removed if the transaction added it)
};

const char* txnStateName(TxnState s);
const char* txnEventName(TxnEvent e);
const char* txnAppStepName(TxnAppStep s);
std::optional<TxnState> txnStateFromName(const std::string& name);
std::optional<TxnAppStep> txnAppStepFromName(const std::string& name);

// The one table of transitions: the next state, or nullopt when the event is
// not allowed in that state. Repeating the event that led to a state where it
// is idempotent (Activate on Active, Commit on Committed, Rollback on
// RolledBack) is answered by the caller before it asks the table.
std::optional<TxnState> txnNext(TxnState from, TxnEvent event);

struct TxnApp {
    std::string name;
    std::string fromVersion; // "" : the transaction adds the app
    std::string fromDir;     // its folder under versions/ ("" when added)
    std::string toVersion;
    std::string toDir;       // the new version's folder under versions/ (never fromDir)
    bool wasRunning = false; // recorded when activation starts: should it run after the switch / rollback
    bool dataExisted = true; // recorded at activation: an added app's /data is removed on rollback only if it did not exist
    TxnAppStep step = TxnAppStep::Staged;
};

struct Transaction {
    std::string id;
    TxnState state = TxnState::Staged;
    std::vector<TxnApp> apps;
    std::string created; // UTC time stamp

    TxnApp* app(const std::string& name);
    const TxnApp* app(const std::string& name) const;
    // The record on disk.
    nlohmann::json toJson() const;
    static Expected<Transaction> fromJson(const nlohmann::json& j);
    // GetTransaction's document: {"id", "state", "apps": [{"name", "from_version", "to_version", "state"}]}.
    nlohmann::json publicJson() const;
    bool final() const { return state == TxnState::Committed || state == TxnState::RolledBack; }
};

// The folder name of a transaction's new version of an app: the version, or
// "<version>+<id>" when it equals the installed one ('+' is never in a version
// name, so the two never collide and a running container's bundle path never
// changes meaning).
std::string stagedDirName(const std::string& fromDir, const std::string& toVersion, const std::string& txnId);

// A folder name under versions/: a version, or "<version>+<transaction id>".
bool isVersionDirName(const std::string& dir);

// Transaction ids: safe path components of at most 64 characters.
Status checkTxnId(const std::string& id);

} // namespace mbl::containers
