// App transactions (contract C3): staging under a transaction id, activation,
// commit and rollback, each step persisted before and after it so that a
// manager killed at any point resumes or finishes it at its next start.
//
// Activation, per app in staging order: stop the running version (if any) →
// move the staged bundle into versions/<to_dir> and rewrite the app's record
// (the commit point of that app's switch) → mark the app "active" in the
// transaction → start it where the old one ran (or its autostart for an added
// app). Rollback, per switched app in reverse order: stop the new version →
// rewrite the record to the previous version (or remove the record of an app
// the transaction added) and delete the new bundle → mark "rolled-back" →
// start the previous version if it ran. /data is never touched, except the
// /data of an added app that did not exist before the transaction.

#include "container_manager.h"
#include "manager_internal.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <unistd.h>

namespace mbl::containers {

using nlohmann::json;

namespace {

// Finished transactions whose records are kept (for idempotent replies and GetTransaction).
constexpr std::size_t kKeptFinished = 32;

json appRecord(const std::string& version, const std::string& dir, bool desiredRunning, std::uint32_t restartCount)
{
    return json{{"version", version}, {"dir", dir}, {"desired_running", desiredRunning}, {"restart_count", restartCount}};
}

} // namespace

// ---------------------------------------------------------------- records

void ContainerManager::onDisk(std::function<Status()> job, std::function<void(Status)> then)
{
    EventLoop* loop = &loop_;
    auto alive = alive_;
    diskQueue_.post([job = std::move(job), then = std::move(then), loop, alive] {
        Status st;
        try {
            st = job();
        } catch (const std::exception& e) {
            st = unexpected(ErrorCode::Failed, std::string("internal error: ") + e.what());
        }
        loop->post([then, st, alive] {
            if (*alive) {
                then(st);
            }
        });
    });
}

void ContainerManager::saveTransaction(const Transaction& t, std::function<void(Status)> then)
{
    const std::string path = txnDir() + "/" + t.id + ".json";
    const std::string text = t.toJson().dump(2) + "\n";
    const std::string dir = txnDir();
    onDisk(
        [path, text, dir]() -> Status {
            if (auto st = fs::makeDirs(dir, 0700); !st) {
                return st;
            }
            return fs::writeFileAtomic(path, text, 0600);
        },
        std::move(then));
}

ContainerManager::TxnRun& ContainerManager::txnRun(const std::string& id)
{
    auto& r = txnRuns_[id];
    if (!r) {
        r = std::make_unique<TxnRun>();
    }
    return *r;
}

void ContainerManager::loadTransactions()
{
    (void)fs::makeDirs(txnDir(), 0700);
    for (const auto& f : listDir(txnDir())) {
        if (!str::endsWith(f, ".json")) {
            continue;
        }
        auto text = fs::readFile(txnDir() + "/" + f, 1u << 20);
        Expected<Transaction> t = text ? [&]() -> Expected<Transaction> {
            try {
                return Transaction::fromJson(json::parse(*text));
            } catch (const std::exception& e) {
                return unexpected(ErrorCode::Io, e.what());
            }
        }()
                                       : Expected<Transaction>(unexpected(text.error()));
        if (!t || t->id + ".json" != f) {
            log::error("transaction record " + f + " is unreadable and ignored: " +
                       (t ? std::string("its id does not match its name") : t.error().message));
            continue;
        }
        txns_[t->id] = std::move(t).value();
    }
    // Staged folders of transactions that are over (or whose record never got written).
    for (const auto& f : listDir(txnDir())) {
        if (str::endsWith(f, ".json") || str::endsWith(f, ".tmp")) {
            continue;
        }
        auto it = txns_.find(f);
        if (it == txns_.end() || it->second.final()) {
            (void)fs::removeTree(txnDir() + "/" + f);
        }
    }
}

const Transaction* ContainerManager::transactionOf(const std::string& app) const
{
    for (const auto& [id, t] : txns_) {
        if (!t.final() && t.app(app) != nullptr) {
            return &t;
        }
    }
    return nullptr;
}

bool ContainerManager::keptByTransaction(const std::string& app, const std::string& dir) const
{
    const Transaction* t = transactionOf(app);
    const TxnApp* x = t != nullptr ? t->app(app) : nullptr;
    return x != nullptr && (x->fromDir == dir || x->toDir == dir);
}

bool ContainerManager::startOwnedByTransaction(const std::string& app) const
{
    const Transaction* t = transactionOf(app);
    const TxnApp* x = t != nullptr ? t->app(app) : nullptr;
    if (x == nullptr) {
        return false;
    }
    return (t->state == TxnState::Activating && x->step == TxnAppStep::Staged) ||
           (t->state == TxnState::RollingBack && x->step == TxnAppStep::Active);
}

Expected<AppSettings> ContainerManager::bundleSettings(const std::string& bundleDir) const
{
    auto meta = fs::readFile(bundleDir + "/" + kVersionMeta);
    if (!meta) {
        return unexpected(meta.error());
    }
    try {
        return AppSettings::fromJson(json::parse(*meta).at("settings"));
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, bundleDir + "/" + kVersionMeta + " is unreadable: " + e.what());
    }
}

void ContainerManager::resumeTransactions()
{
    std::vector<std::string> ids;
    for (const auto& [id, t] : txns_) {
        ids.push_back(id);
    }
    for (const auto& id : ids) {
        Transaction& t = txns_[id];
        TxnRun& run = txnRun(id);
        switch (t.state) {
        case TxnState::Activating:
            log::notice("transaction " + id + ": resuming its activation");
            run.busy = true;
            activateNext(id);
            break;
        case TxnState::Committing:
            log::notice("transaction " + id + ": finishing its commit");
            run.busy = true;
            commitNow(id);
            break;
        case TxnState::RollingBack:
            log::notice("transaction " + id + ": finishing its rollback");
            run.busy = true;
            rollbackNext(id);
            break;
        default:
            break;
        }
    }
}

void ContainerManager::transactionStepFailed(const std::string& id, const Error& e)
{
    log::error("transaction " + id + ": " + e.describe());
    TxnRun& run = txnRun(id);
    run.busy = false;
    std::vector<Done> waiters;
    for (auto* list : {&run.activateWaiters, &run.commitWaiters, &run.rollbackWaiters}) {
        for (auto& w : *list) {
            waiters.push_back(std::move(w));
        }
        list->clear();
    }
    for (auto& w : waiters) {
        w(unexpected(e));
    }
}

void ContainerManager::pruneTransactions()
{
    std::vector<std::pair<std::string, std::string>> finished; // (created, id)
    for (const auto& [id, t] : txns_) {
        if (t.final() && !txnRun(id).busy) {
            finished.emplace_back(t.created, id);
        }
    }
    if (finished.size() <= kKeptFinished) {
        return;
    }
    std::sort(finished.begin(), finished.end());
    finished.resize(finished.size() - kKeptFinished);
    std::vector<std::string> paths;
    for (const auto& [created, id] : finished) {
        txns_.erase(id);
        txnRuns_.erase(id);
        paths.push_back(txnDir() + "/" + id + ".json");
    }
    diskQueue_.post([paths] {
        for (const auto& p : paths) {
            ::unlink(p.c_str());
        }
    });
}

std::string ContainerManager::transaction(const std::string& id) const
{
    auto it = txns_.find(id);
    if (it == txns_.end()) {
        return json{{"id", id}, {"state", "unknown"}, {"apps", json::array()}}.dump();
    }
    return it->second.publicJson().dump();
}

// ---------------------------------------------------------------- staging

void ContainerManager::stageInTransaction(const std::string& op, std::shared_ptr<Staged> staged)
{
    const std::string id = staged->txnId;
    const std::string name = staged->settings.name;
    auto fail = [&](Error e) {
        diskQueue_.post([dir = staged->dir] { (void)fs::removeTree(dir); });
        finishInstall(op, name, unexpected(std::move(e)));
    };
    auto it = txns_.find(id);
    if (it != txns_.end() && it->second.state != TxnState::Staged) {
        return fail(Error{ErrorCode::InvalidArgument, "transaction '" + id + "' is " + txnStateName(it->second.state) +
                                                          ": apps can be staged only in a new transaction"});
    }
    if (const Transaction* other = transactionOf(name); other != nullptr && other->id != id) {
        return fail(Error{ErrorCode::Busy, "app '" + name + "' is already part of transaction '" + other->id + "' (" +
                                               txnStateName(other->state) + ")"});
    }
    const App* a = find(name);
    if (a != nullptr && a->removing) {
        return fail(Error{ErrorCode::Busy, "app '" + name + "' is being removed"});
    }
    if (it == txns_.end()) {
        Transaction t;
        t.id = id;
        t.created = nowStamp();
        it = txns_.emplace(id, std::move(t)).first;
    }
    Transaction& t = it->second;
    TxnApp x;
    x.name = name;
    x.fromVersion = a != nullptr ? a->version : std::string();
    x.fromDir = a != nullptr ? a->dir : std::string();
    x.toVersion = staged->settings.version;
    x.toDir = stagedDirName(x.fromDir, x.toVersion, id);
    const bool restaged = t.app(name) != nullptr;
    if (TxnApp* old = t.app(name)) {
        *old = x; // staged again (e.g. a coordinator that restarted): the later archive wins
    } else {
        t.apps.push_back(x);
    }
    const std::string src = staged->dir;
    const std::string dst = txnDir() + "/" + id + "/" + name;
    const std::string folder = txnDir() + "/" + id;
    const std::string path = txnDir() + "/" + id + ".json";
    const std::string text = t.toJson().dump(2) + "\n";
    // The bundle is in place before the record names it.
    onDisk(
        [src, dst, folder, path, text]() -> Status {
            if (auto st = fs::makeDirs(folder, 0700); !st) {
                return st;
            }
            (void)fs::removeTree(dst);
            if (::rename(src.c_str(), dst.c_str()) != 0) {
                return unexpected(errnoError("rename into " + dst, errno));
            }
            (void)fs::syncDir(folder);
            return fs::writeFileAtomic(path, text, 0600);
        },
        [this, op, id, name, x, restaged, src](Status st) {
            if (!st) {
                auto t = txns_.find(id);
                if (t != txns_.end() && !restaged) {
                    auto& apps = t->second.apps;
                    apps.erase(std::remove_if(apps.begin(), apps.end(), [&](const TxnApp& y) { return y.name == name; }),
                               apps.end());
                }
                diskQueue_.post([src] { (void)fs::removeTree(src); });
                return finishInstall(op, name, st);
            }
            log::info("transaction " + id + ": staged " + name + " " + x.toVersion +
                      (x.fromVersion.empty() ? std::string(" (new app)") : " (installed: " + x.fromVersion + ")"));
            finishInstall(op, name, {});
        });
}

// ---------------------------------------------------------------- activation

void ContainerManager::activateTransaction(const std::string& id, Done done)
{
    auto it = txns_.find(id);
    if (it == txns_.end()) {
        return done(unexpected(ErrorCode::NotFound, "no transaction '" + id + "' (nothing was staged under it)"));
    }
    Transaction& t = it->second;
    TxnRun& run = txnRun(id);
    switch (t.state) {
    case TxnState::Active:
    case TxnState::Committing:
    case TxnState::Committed:
        return done({});
    case TxnState::RollingBack:
    case TxnState::RolledBack:
        return done(unexpected(ErrorCode::Failed, "transaction '" + id + "' was rolled back"));
    case TxnState::Activating:
        run.activateWaiters.push_back(std::move(done));
        if (!run.busy) {
            run.busy = true;
            activateNext(id);
        }
        return;
    case TxnState::Staged:
        break;
    }
    for (const auto& [op, txn] : installTxns_) {
        if (txn == id) {
            return done(unexpected(ErrorCode::Busy, "an install into transaction '" + id + "' is still running (" + op +
                                                        "): wait for its InstallCompleted"));
        }
    }
    for (const auto& x : t.apps) {
        const App* a = find(x.name);
        if (a != nullptr && (a->removing || a->inTransaction)) {
            return done(unexpected(ErrorCode::Busy, "app '" + x.name + "' is being " +
                                                        (a->removing ? "removed" : "updated")));
        }
    }
    // What runs now is what a rollback goes back to.
    for (auto& x : t.apps) {
        const App* a = find(x.name);
        x.fromVersion = a != nullptr ? a->version : std::string();
        x.fromDir = a != nullptr ? a->dir : std::string();
        x.toDir = stagedDirName(x.fromDir, x.toVersion, id);
        x.dataExisted = fs::exists(appDir(x.name) + "/data");
        if (a != nullptr) {
            x.wasRunning = a->desiredRunning;
        } else {
            auto s = bundleSettings(txnDir() + "/" + id + "/" + x.name);
            x.wasRunning = s && s->autostart;
        }
    }
    auto next = txnNext(t.state, TxnEvent::Activate);
    t.state = *next;
    run.activateWaiters.push_back(std::move(done));
    run.busy = true;
    log::info("transaction " + id + ": activating " + std::to_string(t.apps.size()) + " app(s)");
    saveTransaction(t, [this, id](Status st) {
        if (!st) {
            return transactionStepFailed(id, st.error());
        }
        activateNext(id);
    });
}

void ContainerManager::activateNext(const std::string& id)
{
    Transaction& t = txns_[id];
    TxnRun& run = txnRun(id);
    if (t.state != TxnState::Activating) {
        // A rollback took over between two apps.
        auto waiters = std::move(run.activateWaiters);
        run.activateWaiters.clear();
        for (auto& w : waiters) {
            w(unexpected(ErrorCode::Cancelled, "transaction '" + id + "' was rolled back during its activation"));
        }
        if (t.state == TxnState::RollingBack) {
            return rollbackNext(id);
        }
        run.busy = false;
        return;
    }
    for (const auto& x : t.apps) {
        if (x.step == TxnAppStep::Staged) {
            return activateApp(id, x.name);
        }
    }
    t.state = *txnNext(t.state, TxnEvent::Switched);
    saveTransaction(t, [this, id](Status st) {
        if (!st) {
            return transactionStepFailed(id, st.error());
        }
        TxnRun& r = txnRun(id);
        log::info("transaction " + id + " is active");
        if (txns_[id].state != TxnState::Active) {
            return activateNext(id); // a rollback was asked meanwhile
        }
        r.busy = false;
        auto waiters = std::move(r.activateWaiters);
        r.activateWaiters.clear();
        for (auto& w : waiters) {
            w({});
        }
    });
}

void ContainerManager::activateApp(const std::string& id, const std::string& name)
{
    const TxnApp x = *txns_[id].app(name);
    auto doSwitch = [this, id, name, x] {
        const std::string src = txnDir() + "/" + id + "/" + name;
        const std::string versions = appDir(name) + "/versions";
        const std::string dst = versionDir(name, x.toDir);
        const std::string data = appDir(name) + "/data";
        const App* a = find(name);
        const std::string rec =
            appRecord(x.toVersion, x.toDir, x.wasRunning, a != nullptr ? a->restartCount : 0).dump(2) + "\n";
        const std::string recPath = appDir(name) + "/" + kAppFile;
        onDisk(
            [src, versions, dst, data, rec, recPath, name, appsDir = appsDir_]() -> Status {
                if (auto st = fs::makeDirs(versions, 0700); !st) {
                    return st;
                }
                if (fs::exists(src)) {
                    (void)fs::removeTree(dst);
                    if (::rename(src.c_str(), dst.c_str()) != 0) {
                        return unexpected(errnoError("rename into " + dst, errno));
                    }
                    (void)fs::syncDir(versions);
                } else if (!fs::exists(dst)) {
                    return unexpected(ErrorCode::NotFound, "the staged version of " + name + " is gone");
                }
                if (!fs::exists(data)) {
                    auto meta = fs::readFile(dst + "/" + kVersionMeta);
                    if (!meta) {
                        return unexpected(meta.error());
                    }
                    const json m = json::parse(*meta);
                    if (auto st = fs::makeDirs(data, 0755); !st) {
                        return st;
                    }
                    if (::chown(data.c_str(), m.at("uid").get<std::uint32_t>(), m.at("gid").get<std::uint32_t>()) != 0) {
                        return unexpected(errnoError("chown " + data, errno));
                    }
                }
                // The commit point of this app's switch.
                if (auto st = fs::writeFileAtomic(recPath, rec, 0600); !st) {
                    return st;
                }
                testPause("txn-app-switched", appsDir);
                return {};
            },
            [this, id, name, x, dst](Status st) {
                App* a = find(name);
                Expected<AppSettings> settings = st ? bundleSettings(dst) : Expected<AppSettings>(unexpected(st.error()));
                if (!settings) {
                    if (a != nullptr) {
                        a->inTransaction = false;
                        a->suppressRestart = false;
                        if (a->desiredRunning) {
                            startApp(*a, [](Status) {}); // the old version, still current
                        }
                    }
                    return transactionStepFailed(id, Error{settings.error().code, "cannot switch " + name + " to " +
                                                                                      x.toVersion + ": " +
                                                                                      settings.error().message});
                }
                const bool added = a == nullptr;
                if (added) {
                    auto app = std::make_unique<App>();
                    a = app.get();
                    apps_[name] = std::move(app);
                }
                a->version = x.toVersion;
                a->dir = x.toDir;
                a->settings = std::move(settings).value();
                a->settings.name = name;
                a->desiredRunning = x.wasRunning;
                a->exitCode = 0;
                a->oomKilled = false;
                a->backoffAttempt = 0;
                a->inTransaction = false;
                a->suppressRestart = false;
                if (added && events_ != nullptr) {
                    events_->appAdded(name);
                    events_->appStateChanged(name, "installed");
                    events_->managerChanged({"AppCount"});
                } else {
                    changed(*a, {"Version", "ExitCode", "OomKilled"});
                }
                log::info("transaction " + id + ": " + name + " switched to " + x.toVersion);
                Transaction& t = txns_[id];
                if (TxnApp* e = t.app(name)) {
                    e->step = TxnAppStep::Active;
                }
                saveTransaction(t, [this, id, name, x](Status saved) {
                    if (!saved) {
                        return transactionStepFailed(id, saved.error());
                    }
                    App* b = find(name);
                    if (b != nullptr && x.wasRunning) {
                        startApp(*b, [this, id](Status) { activateNext(id); });
                    } else {
                        activateNext(id);
                    }
                });
            });
    };
    if (App* a = find(name)) {
        a->inTransaction = true;
        a->suppressRestart = true;
        stopApp(*a, [doSwitch](Status) { doSwitch(); });
    } else {
        doSwitch();
    }
}

// ---------------------------------------------------------------- commit

void ContainerManager::commitTransaction(const std::string& id, Done done)
{
    auto it = txns_.find(id);
    if (it == txns_.end()) {
        return done(unexpected(ErrorCode::NotFound, "no transaction '" + id + "'"));
    }
    Transaction& t = it->second;
    TxnRun& run = txnRun(id);
    switch (t.state) {
    case TxnState::Committed:
        return done({});
    case TxnState::Committing:
        run.commitWaiters.push_back(std::move(done));
        if (!run.busy) {
            run.busy = true;
            commitNow(id);
        }
        return;
    case TxnState::Staged:
        return done(unexpected(ErrorCode::InvalidArgument,
                               "transaction '" + id + "' is staged, not active: activate it first"));
    case TxnState::Activating:
        return done(unexpected(ErrorCode::Busy, "transaction '" + id + "' is being activated"));
    case TxnState::RollingBack:
    case TxnState::RolledBack:
        return done(unexpected(ErrorCode::Failed, "transaction '" + id + "' was rolled back"));
    case TxnState::Active:
        break;
    }
    t.state = *txnNext(t.state, TxnEvent::Commit);
    run.commitWaiters.push_back(std::move(done));
    run.busy = true;
    saveTransaction(t, [this, id](Status st) {
        if (!st) {
            return transactionStepFailed(id, st.error());
        }
        commitNow(id);
    });
}

void ContainerManager::commitNow(const std::string& id)
{
    std::vector<std::string> gone = {txnDir() + "/" + id};
    for (const auto& x : txns_[id].apps) {
        if (!x.fromDir.empty() && x.fromDir != x.toDir) {
            gone.push_back(versionDir(x.name, x.fromDir));
        }
    }
    onDisk(
        [gone, appsDir = appsDir_]() -> Status {
            testPause("txn-commit", appsDir);
            for (const auto& d : gone) {
                if (auto st = fs::removeTree(d); !st) {
                    return st;
                }
            }
            return {};
        },
        [this, id](Status st) {
            if (!st) {
                return transactionStepFailed(id, st.error());
            }
            Transaction& t = txns_[id];
            for (auto& x : t.apps) {
                x.step = TxnAppStep::Committed;
            }
            t.state = *txnNext(t.state, TxnEvent::Deleted);
            saveTransaction(t, [this, id](Status saved) {
                if (!saved) {
                    return transactionStepFailed(id, saved.error());
                }
                log::info("transaction " + id + " is committed");
                TxnRun& run = txnRun(id);
                run.busy = false;
                auto waiters = std::move(run.commitWaiters);
                run.commitWaiters.clear();
                for (auto& w : waiters) {
                    w({});
                }
                pruneTransactions();
            });
        });
}

// ---------------------------------------------------------------- rollback

void ContainerManager::rollbackTransaction(const std::string& id, Done done)
{
    auto it = txns_.find(id);
    if (it == txns_.end()) {
        // Nothing was ever staged under it: nothing to undo.
        log::info("transaction " + id + ": rollback of a transaction with nothing staged");
        return done({});
    }
    Transaction& t = it->second;
    TxnRun& run = txnRun(id);
    switch (t.state) {
    case TxnState::RolledBack:
        return done({});
    case TxnState::Committing:
    case TxnState::Committed:
        return done(unexpected(ErrorCode::Failed,
                               "transaction '" + id + "' is committed: the previous versions are deleted"));
    case TxnState::RollingBack:
        run.rollbackWaiters.push_back(std::move(done));
        if (!run.busy) {
            run.busy = true;
            rollbackNext(id);
        }
        return;
    case TxnState::Staged:
    case TxnState::Activating:
    case TxnState::Active:
        break;
    }
    for (const auto& [op, txn] : installTxns_) {
        if (txn == id) {
            return done(unexpected(ErrorCode::Busy, "an install into transaction '" + id + "' is still running (" + op +
                                                        "): wait for its InstallCompleted"));
        }
    }
    log::info("transaction " + id + ": rolling back (" + txnStateName(t.state) + ")");
    t.state = *txnNext(t.state, TxnEvent::Rollback);
    run.rollbackWaiters.push_back(std::move(done));
    saveTransaction(t, [this, id](Status st) {
        if (!st) {
            return transactionStepFailed(id, st.error());
        }
        TxnRun& r = txnRun(id);
        if (!r.busy) {
            // (A running activation notices the rollback at its next app and hands over.)
            r.busy = true;
            rollbackNext(id);
        }
    });
}

void ContainerManager::rollbackNext(const std::string& id)
{
    Transaction& t = txns_[id];
    for (auto x = t.apps.rbegin(); x != t.apps.rend(); ++x) {
        if (x->step == TxnAppStep::Active) {
            return rollbackApp(id, x->name);
        }
    }
    // Nothing switched any more: the staged, never-activated versions go.
    onDisk([folder = txnDir() + "/" + id]() -> Status { return fs::removeTree(folder); },
           [this, id](Status st) {
               if (!st) {
                   return transactionStepFailed(id, st.error());
               }
               Transaction& tx = txns_[id];
               for (auto& x : tx.apps) {
                   x.step = TxnAppStep::RolledBack;
               }
               tx.state = *txnNext(tx.state, TxnEvent::RolledBack);
               saveTransaction(tx, [this, id](Status saved) {
                   if (!saved) {
                       return transactionStepFailed(id, saved.error());
                   }
                   log::info("transaction " + id + " is rolled back");
                   TxnRun& run = txnRun(id);
                   run.busy = false;
                   auto waiters = std::move(run.rollbackWaiters);
                   run.rollbackWaiters.clear();
                   for (auto& w : waiters) {
                       w({});
                   }
                   pruneTransactions();
               });
           });
}

void ContainerManager::rollbackApp(const std::string& id, const std::string& name)
{
    const TxnApp x = *txns_[id].app(name);
    auto doSwitchBack = [this, id, name, x] {
        const std::string dir = appDir(name);
        const std::string recPath = dir + "/" + kAppFile;
        const std::string newDir = versionDir(name, x.toDir);
        const App* a = find(name);
        const std::string rec =
            appRecord(x.fromVersion, x.fromDir, x.wasRunning, a != nullptr ? a->restartCount : 0).dump(2) + "\n";
        const bool added = x.fromVersion.empty();
        if (added) {
            ::unlink(shimRecord(name).c_str());
            ::unlink(exitRecord(name).c_str());
        }
        onDisk(
            [dir, recPath, newDir, rec, added, dataExisted = x.dataExisted, appsDir = appsDir_]() -> Status {
                if (added) {
                    // The record first (durably): from here on there is no app.
                    if (::unlink(recPath.c_str()) != 0 && errno != ENOENT) {
                        return unexpected(errnoError("unlink " + recPath, errno));
                    }
                    (void)fs::syncDir(dir);
                    testPause("txn-app-back", appsDir);
                    if (auto st = fs::removeTree(dir + "/versions"); !st) {
                        return st;
                    }
                    if (!dataExisted) {
                        return fs::removeTree(dir);
                    }
                    return {};
                }
                // The commit point of this app's switch back.
                if (auto st = fs::writeFileAtomic(recPath, rec, 0600); !st) {
                    return st;
                }
                testPause("txn-app-back", appsDir);
                return fs::removeTree(newDir);
            },
            [this, id, name, x, added](Status st) {
                Expected<AppSettings> settings =
                    !st ? Expected<AppSettings>(unexpected(st.error()))
                        : added ? Expected<AppSettings>(AppSettings{})
                                : bundleSettings(versionDir(name, x.fromDir));
                App* a = find(name);
                if (!settings) {
                    if (a != nullptr) {
                        a->inTransaction = false;
                        a->suppressRestart = false;
                    }
                    return transactionStepFailed(id, Error{settings.error().code, "cannot roll " + name + " back to " +
                                                                                      x.fromVersion + ": " +
                                                                                      settings.error().message});
                }
                if (added) {
                    if (a != nullptr) {
                        apps_.erase(name);
                        if (events_ != nullptr) {
                            events_->appStateChanged(name, "removed");
                            events_->appRemoved(name);
                            events_->managerChanged({"AppCount"});
                        }
                    }
                } else {
                    if (a == nullptr) {
                        auto app = std::make_unique<App>();
                        a = app.get();
                        apps_[name] = std::move(app);
                        if (events_ != nullptr) {
                            events_->appAdded(name);
                            events_->managerChanged({"AppCount"});
                        }
                    }
                    a->version = x.fromVersion;
                    a->dir = x.fromDir;
                    a->settings = std::move(settings).value();
                    a->settings.name = name;
                    a->desiredRunning = x.wasRunning;
                    a->exitCode = 0; // the exit code of the version that runs
                    a->oomKilled = false;
                    a->backoffAttempt = 0;
                    a->inTransaction = false;
                    a->suppressRestart = false;
                    changed(*a, {"Version", "ExitCode", "OomKilled"});
                }
                log::info("transaction " + id + ": " + name +
                          (added ? std::string(" removed (the transaction added it)") : " back on " + x.fromVersion));
                Transaction& t = txns_[id];
                if (TxnApp* e = t.app(name)) {
                    e->step = TxnAppStep::RolledBack;
                }
                saveTransaction(t, [this, id, name, x, added](Status saved) {
                    if (!saved) {
                        return transactionStepFailed(id, saved.error());
                    }
                    App* b = find(name);
                    if (!added && b != nullptr && x.wasRunning) {
                        startApp(*b, [this, id](Status) { rollbackNext(id); });
                    } else {
                        rollbackNext(id);
                    }
                });
            });
    };
    if (App* a = find(name)) {
        a->inTransaction = true;
        a->suppressRestart = true;
        stopApp(*a, [doSwitchBack](Status) { doSwitchBack(); });
    } else {
        doSwitchBack();
    }
}

} // namespace mbl::containers
