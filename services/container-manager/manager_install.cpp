// SPDX-License-Identifier: Apache-2.0
// InstallApp: the archive read and staged on an install worker, then the new
// app added, or an installed one updated (with rollback if the new version is
// unhealthy), or the app staged under a transaction (manager_transactions.cpp).

#include "container_manager.h"
#include "manager_internal.h"

#include "oci_image.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <ctime>
#include <unistd.h>

namespace mbl::containers {

using nlohmann::json;

Expected<std::string> ContainerManager::install(Fd archive, const std::string& optionsText)
{
    if (optionsText.size() > kMaxOptionsBytes) {
        return unexpected(ErrorCode::InvalidArgument, "the install options are " + std::to_string(optionsText.size()) +
                                                          " bytes: at most " + std::to_string(kMaxOptionsBytes) +
                                                          " (64 KiB) are taken");
    }
    // "transaction" and "replace" are not app settings: they say how the app is installed.
    std::string txnId;
    bool replace = false;
    std::string optionsJson = optionsText;
    try {
        json opts = str::trim(optionsText).empty() ? json::object() : json::parse(optionsText);
        if (opts.is_object() && opts.contains("transaction")) {
            if (!opts["transaction"].is_string()) {
                return unexpected(ErrorCode::InvalidArgument, "setting 'transaction' must be a string");
            }
            txnId = opts["transaction"].get<std::string>();
            if (auto st = checkTxnId(txnId); !st) {
                return unexpected(st.error());
            }
            opts.erase("transaction");
        }
        if (opts.is_object() && opts.contains("replace")) {
            if (!opts["replace"].is_boolean()) {
                return unexpected(ErrorCode::InvalidArgument, "setting 'replace' must be true or false");
            }
            replace = opts["replace"].get<bool>();
            opts.erase("replace");
        }
        if (opts.is_object()) {
            optionsJson = opts.dump();
        }
    } catch (const std::exception&) {
        // parseSettings names the error
    }
    auto settings = parseSettings(optionsJson, config_);
    if (!settings) {
        return unexpected(settings.error());
    }
    if (!txnId.empty()) {
        auto t = txns_.find(txnId);
        if (t != txns_.end() && t->second.state != TxnState::Staged) {
            return unexpected(ErrorCode::InvalidArgument, "transaction '" + txnId + "' is " +
                                                              txnStateName(t->second.state) +
                                                              ": apps can be staged only in a new transaction");
        }
    }
    if (!settings->name.empty()) {
        for (const auto& [op, n] : installs_) {
            if (n == settings->name) {
                return unexpected(ErrorCode::Busy, "app '" + n + "' is already being installed (" + op + ")");
            }
        }
    }
    struct timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    const std::string op = "install-" + std::to_string(ts.tv_sec) + "-" + std::to_string(nextOp_++);
    installs_[op] = settings->name;
    if (!txnId.empty()) {
        installTxns_[op] = txnId;
    }
    if (events_ != nullptr) {
        events_->managerChanged({"Operation"});
    }
    const std::string stagingRoot = appsDir_ + "/.staging";
    const std::string appsDir = appsDir_;
    const std::string cgroupParent = cgroupParent_;
    const ManagerConfig cfg = config_;
    AppSettings s = std::move(settings).value();
    EventLoop* loop = &loop_;
    auto alive = alive_;
    auto fd = std::make_shared<Fd>(std::move(archive));
    // One install worker (installs queue up): bounded memory, joined at shutdown;
    // a stop of the daemon cancels the install under way (its staging is removed).
    installQueue_.post([this, op, stagingRoot, appsDir, cgroupParent, cfg, s, loop, alive, fd, txnId, replace]() mutable {
        auto staged = std::make_shared<Staged>();
        staged->txnId = txnId;
        staged->replace = replace;
        staged->settings = s;
        staged->dir = stagingRoot + "/" + op;
        auto fail = [&](const Error& e) {
            staged->result = unexpected(e);
            (void)fs::removeTree(staged->dir);
        };
        auto work = [&]() -> Status {
            if (auto st = fs::makeDirs(staged->dir, 0711); !st) {
                return st;
            }
            StageOptions so;
            so.limits.quotaBytes = cfg.quotaBytes;
            so.limits.allowSetuid = cfg.policy.allowSetuid;
            so.limits.cancel = &stopping_;
            so.imageRef = s.imageRef;
            so.readTimeoutMs = static_cast<int>(cfg.installReadTimeoutMs);
            auto img = stageArchive(fd->get(), staged->dir, so);
            fd->reset();
            if (!img) {
                return unexpected(img.error());
            }
            staged->image = *img;
            AppSettings& set = staged->settings;
            // The app's name: given, else the image's title, else its ref name unless
            // that is a version (skopeo, buildah and umoci put the tag there).
            if (set.name.empty()) {
                staged->derivedName = true;
                if (str::isSafeName(img->title, 48)) {
                    set.name = img->title;
                } else if (str::isSafeName(img->refName, 48) && !looksLikeVersion(img->refName)) {
                    set.name = img->refName;
                } else {
                    return unexpected(
                        ErrorCode::InvalidArgument,
                        "the app has no name: the install options give none (\"name\"; mblctl app install --name), "
                        "the image has no usable org.opencontainers.image.title" +
                            (img->refName.empty() ? std::string(" and no ref name")
                                                  : " and its ref name " + str::quotable(img->refName, 64) +
                                                        " is a version, not a name"));
                }
            }
            if (set.version.empty()) {
                set.version = str::isSafeName(img->version, 64)                                  ? img->version
                              : str::isSafeName(img->refName, 64) && looksLikeVersion(img->refName) ? img->refName
                              : !img->manifestDigest.empty() ? img->manifestDigest.substr(7, 12)
                                                             : std::string("1");
            }
            if (set.args.empty() && img->process.args.empty()) {
                return unexpected(ErrorCode::InvalidArgument,
                                  "the image names no command (Entrypoint/Cmd) and the settings give no \"args\"");
            }
            auto ids = resolveUser(staged->dir + "/rootfs", img->process.user);
            if (!ids) {
                return unexpected(ids.error());
            }
            staged->uid = ids->first;
            staged->gid = ids->second;
            // Root in the app is an unprivileged host user: the app's own range of
            // host ids, the same for every version (userns.h).
            const bool userns = cfg.usernsEnabled && set.userns;
            if (!userns && ids->first == 0 && !cfg.policy.allowHostRoot) {
                return unexpected(ErrorCode::AccessDenied,
                                  "the image runs as root (uid 0) and the app would have no user namespace (" +
                                      std::string(set.userns ? "user namespaces are off on this device"
                                                             : "setting 'userns': false") +
                                      "): it would be root on the host (not allowed by the device policy in "
                                      "containers.json: policy.allow_host_root)");
            }
            if (userns) {
                staged->newRange = !ids_->find(set.name).has_value();
                auto range = ids_->acquire(set.name);
                if (!range) {
                    return unexpected(range.error());
                }
                staged->idBase = range->base;
                staged->idSize = range->size;
                const auto t0 = Clock::now();
                auto shifted = shiftOwnership(staged->dir + "/rootfs", *range, false);
                if (!shifted) {
                    return unexpected(shifted.error());
                }
                log::info(op + ": the rootfs of " + set.name + " given to host ids " + std::to_string(range->base) +
                          "+ (" + std::to_string(shifted->entries) + " entries, " +
                          std::to_string(
                              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()) +
                          " ms)");
            }
            // A private network: the app's address (kept across versions) and its
            // published host ports, reserved now so that a clash is refused here.
            if (set.network == "private") {
                staged->newAddress = !net_->addressOf(set.name).has_value();
                auto address = net_->reserve(set.name, set.ports);
                if (!address) {
                    return unexpected(address.error());
                }
            }
            SpecInputs in = hostInputs(set.name);
            in.process = img->process;
            in.uid = ids->first;
            in.gid = ids->second;
            in.idBase = staged->idBase;
            in.idSize = staged->idSize;
            auto spec = generateSpec(set, in);
            if (auto st = fs::writeFileAtomic(staged->dir + "/config.json", spec.dump(2) + "\n", 0600); !st) {
                return st;
            }
            json meta = {{"settings", set.toJson()},
                         {"kind", img->kind},
                         {"digest", img->manifestDigest},
                         {"installed", nowStamp()},
                         {"process", processJson(img->process)},
                         {"title", img->title},
                         {"ref_name", img->refName},
                         {"withheld", img->withheld},
                         {"uid", ids->first},
                         {"gid", ids->second},
                         {"userns", userns ? json{{"base", staged->idBase}, {"size", staged->idSize}} : json(nullptr)}};
            if (auto st = fs::writeFileAtomic(staged->dir + "/" + kVersionMeta, meta.dump(2) + "\n", 0600); !st) {
                return st;
            }
            // The unpacked layers were written without a fsync per file: one
            // syncfs puts them on the disk before anything (a transaction
            // record, the app's current version) names this folder. Without it
            // a power cut after "staged" left empty files behind a record that
            // promised the app (the device test's reboot-request power cut).
            return fs::syncFileSystem(staged->dir);
        };
        // Nothing may leave this thread as an exception: std::terminate would end
        // the daemon and every app's supervision with it.
        Status st;
        try {
            st = work();
        } catch (const std::exception& e) {
            st = unexpected(ErrorCode::Failed, std::string("internal error while staging the app: ") + e.what());
        }
        if (!st) {
            fail(st.error());
            // A range this install allocated for an app that has no /data yet goes back.
            if (staged->newRange && !fs::exists(appsDir + "/" + staged->settings.name + "/data")) {
                (void)ids_->release(staged->settings.name);
            }
            if (staged->newAddress) {
                (void)net_->release(staged->settings.name);
            }
        }
        testPause("staged", appsDir);
        loop->post([this, op, staged, alive] {
            if (*alive) {
                onStaged(op, staged);
            }
        });
    });
    return op;
}

void ContainerManager::finishInstall(const std::string& op, const std::string& name, Status result)
{
    installs_.erase(op);
    installTxns_.erase(op);
    if (result) {
        log::info(op + ": installed app " + name);
    } else {
        log::warning(op + ": install of " + (name.empty() ? std::string("an app") : name) +
                     " failed: " + result.error().describe());
    }
    if (events_ != nullptr) {
        events_->installCompleted(op, name, result);
        events_->managerChanged({"Operation"});
    }
}

void ContainerManager::onStaged(const std::string& op, std::shared_ptr<Staged> staged)
{
    const std::string name = staged->settings.name;
    if (!staged->result) {
        finishInstall(op, name, staged->result);
        return;
    }
    auto abort = [&](Error e) {
        (void)fs::removeTree(staged->dir);
        releaseUnused(name);
        finishInstall(op, name, unexpected(std::move(e)));
    };
    installs_[op] = name;
    if (!staged->txnId.empty()) {
        return stageInTransaction(op, staged);
    }
    if (const Transaction* t = transactionOf(name)) {
        return abort(Error{ErrorCode::Busy, "app '" + name + "' is part of transaction '" + t->id + "' (" +
                                                txnStateName(t->state) + "): commit or roll it back first"});
    }
    App* a = find(name);
    // A name taken from the image may be another app's: that is an update only
    // when the installed app came from the same image (its title or ref name).
    if (a != nullptr && staged->derivedName && !staged->replace) {
        const std::string installed = bundleIdentity(versionDir(name, a->dir));
        const std::string incoming = !staged->image.title.empty() ? staged->image.title : staged->image.refName;
        if (installed != incoming) {
            return abort(Error{ErrorCode::AlreadyExists,
                               "an app named '" + name + "' is installed from another image (" +
                                   (installed.empty() ? std::string("of unknown title") : str::quotable(installed, 64)) +
                                   ", this archive: " + str::quotable(incoming, 64) +
                                   "): give the install a name (\"name\") or replace that app (\"replace\": true; "
                                   "mblctl app install --replace)"});
        }
    }
    for (const auto& w : staged->image.withheld) {
        log::notice(op + ": " + name + " " + staged->settings.version + ": not given: " + w);
        appendLine(logPath(name), "[mbl " + nowStamp() + "] " + staged->settings.version + ": not given: " + w);
    }
    const std::string newVersion = staged->settings.version;
    const std::string dataDir = appDir(name) + "/data";

    if (a == nullptr) {
        if (auto st = fs::makeDirs(appDir(name) + "/versions", 0711); !st) {
            return abort(st.error());
        }
        traversable(appDir(name));
        if (!fs::exists(dataDir)) {
            if (auto st = fs::makeDirs(dataDir, 0755); !st) {
                return abort(st.error());
            }
            if (::chown(dataDir.c_str(), staged->idBase + staged->uid, staged->idBase + staged->gid) != 0) {
                return abort(errnoError("chown " + dataDir, errno));
            }
        }
        (void)fs::removeTree(versionDir(name, newVersion));
        if (::rename(staged->dir.c_str(), versionDir(name, newVersion).c_str()) != 0) {
            return abort(errnoError("rename into " + versionDir(name, newVersion), errno));
        }
        auto app = std::make_unique<App>();
        app->settings = staged->settings;
        app->version = newVersion;
        app->dir = newVersion;
        app->withheld = staged->image.withheld;
        app->desiredRunning = staged->settings.autostart;
        if (auto st = persist(*app); !st) {
            (void)fs::removeTree(appDir(name));
            return finishInstall(op, name, st);
        }
        (void)fs::syncDir(appDir(name));
        App& ref = *app;
        apps_[name] = std::move(app);
        if (events_ != nullptr) {
            events_->appAdded(name);
            events_->appStateChanged(name, "installed");
            events_->managerChanged({"AppCount"});
        }
        finishInstall(op, name, {});
        if (ref.desiredRunning) {
            startApp(ref, [](Status) {});
        }
        return;
    }
    if ((a->hold == AppHold::Removing) || (a->hold == AppHold::Updating) || (a->state == AppState::Stopping) || (a->state == AppState::Starting)) {
        return abort(Error{ErrorCode::Busy, "app '" + name + "' is busy (being started, stopped, updated or removed)"});
    }
    updateTransaction(op, staged);
}

void ContainerManager::updateTransaction(const std::string& op, std::shared_ptr<Staged> staged)
{
    const std::string name = staged->settings.name;
    App& a = *find(name);
    const std::string oldVersion = a.version;
    const std::string oldDir = a.dir;
    const AppSettings oldSettings = a.settings;
    const std::string newVersion = staged->settings.version;
    // The new version goes beside the old one; a reinstall of the same version
    // under "<version>+<op>", so the running container's bundle never changes.
    const std::string newDirName = stagedDirName(oldDir, newVersion, op);
    const std::string newDir = versionDir(name, newDirName);
    (void)fs::removeTree(newDir);
    if (::rename(staged->dir.c_str(), newDir.c_str()) != 0) {
        (void)fs::removeTree(staged->dir);
        return finishInstall(op, name, unexpected(errnoError("rename into " + newDir, errno)));
    }
    const bool wasRunning = a.pid > 0;
    auto removeLater = [this](const std::string& dir) { diskQueue_.post([dir] { (void)fs::removeTree(dir); }); };
    auto switchTo = [this, newVersion, newDirName, staged](App& x) {
        x.version = newVersion;
        x.dir = newDirName;
        x.settings = staged->settings;
        x.withheld = staged->image.withheld;
        x.exitCode = 0;
        x.oomKilled = false;
        changed(x, {"Version", "ExitCode", "OomKilled", "Withheld"});
    };

    if (!wasRunning) {
        switchTo(a);
        if (auto st = persist(a); !st) {
            return finishInstall(op, name, st);
        }
        removeLater(versionDir(name, oldDir));
        return finishInstall(op, name, {});
    }

    a.hold = AppHold::Updating;
    a.suppressRestart = true;
    log::info(op + ": updating " + name + " from " + oldVersion + " to " + newVersion);
    stopApp(a, [=](Status) {
        App* x = find(name);
        if (x == nullptr) {
            return finishInstall(op, name, unexpected(ErrorCode::Cancelled, "the app was removed during the update"));
        }
        switchTo(*x);
        x->desiredRunning = true;
        startApp(*x, [=](Status) {
            App* y = find(name);
            if (y == nullptr) {
                return;
            }
            waitHealth(*y, [=](bool healthy, std::string why) {
                App* z = find(name);
                if (z == nullptr) {
                    return;
                }
                if (healthy) {
                    z->hold = AppHold::None;
                    z->suppressRestart = false;
                    z->backoffAttempt = 0;
                    Status st = persist(*z);
                    removeLater(versionDir(name, oldDir));
                    return finishInstall(op, name, st);
                }
                // Roll back: the old version runs again, the new one goes away.
                log::warning(op + ": " + name + " " + newVersion + " is unhealthy (" + why + "): rolling back to " +
                             oldVersion);
                appendLine(logPath(name), "[mbl " + nowStamp() + "] update to " + newVersion +
                                              " failed its health check: rolling back to " + oldVersion);
                stopApp(*z, [=](Status) {
                    App* w = find(name);
                    if (w == nullptr) {
                        return;
                    }
                    w->version = oldVersion;
                    w->dir = oldDir;
                    w->settings = oldSettings;
                    w->withheld = bundleWithheld(versionDir(name, oldDir));
                    // ExitCode belongs to the version that runs: the failed one's goes with it.
                    w->exitCode = 0;
                    w->oomKilled = false;
                    changed(*w, {"Version", "ExitCode", "OomKilled", "Withheld"});
                    startApp(*w, [=](Status st) {
                        App* v = find(name);
                        if (v != nullptr) {
                            v->hold = AppHold::None;
                            v->suppressRestart = false;
                            (void)persist(*v);
                        }
                        removeLater(newDir);
                        std::string msg = "version " + newVersion + " failed its health check (" + why +
                                          "); rolled back to " + oldVersion;
                        msg += st ? ", which is running again" : " but it did not start: " + st.error().message;
                        finishInstall(op, name, unexpected(ErrorCode::Failed, msg));
                    });
                });
            });
        });
    });
}

} // namespace mbl::containers
