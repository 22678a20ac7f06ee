// SPDX-License-Identifier: Apache-2.0
// Starting, stopping and removing apps; the exit of their containers and the
// restart policy.

#include "container_manager.h"
#include "manager_internal.h"

#include "cgroups.h"

#include "shim_record.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace mbl::containers {

namespace {
// What StartApp, StopApp, RestartApp and RemoveApp answer while terminate()
// stops the apps for a system shutdown.
Error shuttingDownBusy()
{
    return Error{ErrorCode::Busy, "the system is shutting down: the apps are being stopped until the next boot"};
}
} // namespace

void ContainerManager::startApp(App& a, Done done)
{
    const std::string name = a.settings.name;
    if (shuttingDown_) {
        // The system is going down: nothing starts, and whatever waits for this
        // start (a restart, a transaction step) stays where it is, as at a
        // power loss; the next boot takes it from there.
        log::info("app " + name + ": not started, the system is shutting down");
        return;
    }
    if (a.pid > 0) {
        done({});
        return;
    }
    if (a.deleting) {
        a.afterDelete.push_back([this, name, done] {
            if (App* x = find(name)) {
                startApp(*x, done);
            } else {
                done(unexpected(ErrorCode::NotFound, "app '" + name + "' was removed"));
            }
        });
        return;
    }
    a.startWaiters.push_back(std::move(done));
    if (a.state == AppState::Starting) {
        return;
    }
    if (a.restartTimer != 0) {
        loop_.cancelTimer(a.restartTimer);
        a.restartTimer = 0;
    }
    setState(a, AppEvent::Start);
    a.oomKilled = false;
    const std::uint64_t gen = ++a.gen;
    (void)fs::makeDirs(logDir_, 0700);
    auto out = std::make_shared<Fd>(::open(logPath(name).c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    const std::string bundle = versionDir(name, a.dir);
    Runtime rt = runtime_;
    EventLoop* loop = &loop_;
    auto alive = alive_;
    const bool oneCall = config_.startMode == "run";
    // The runtime config follows the effective settings (install options plus
    // the over-the-air overrides): regenerated when they changed since the last start.
    std::shared_ptr<AppSettings> spec;
    AppSettings eff = effective(a);
    const std::string key = a.dir + "\n" + eff.toJson().dump();
    if (key != a.specKey) {
        spec = std::make_shared<AppSettings>(std::move(eff));
        a.specKey = key;
    }
    const SpecInputs host = hostInputs(name);
    const std::string dataDir = host.dataDir;
    const bool privateNet = effective(a).network == "private";
    const bool appApi = effective(a).appApi;
    AppNetworks* net = net_.get();
    const std::string shim = shimPath_;
    const std::string logFile = logPath(name);
    const std::string exitFile = exitRecord(name);
    const std::string shimFile = shimRecord(name);
    const std::uint64_t logMax = config_.logMaxBytes;
    const std::uint32_t logKeep = config_.logKeep;
    runtimeQueue_.post([this, rt, name, bundle, out, gen, loop, alive, oneCall, spec, host, dataDir, privateNet, appApi,
                        net, shim, logFile, exitFile, shimFile, logMax, logKeep] {
        if (spec) {
            if (auto st = ensureSpec(bundle, *spec, host); !st) {
                loop->post([this, name, gen, st, alive] {
                    if (*alive) {
                        if (App* x = find(name)) {
                            x->specKey.clear();
                        }
                        onStarted(name, gen, unexpected(st.error()));
                    }
                });
                return;
            }
        }
        Status ready = prepareData(bundle, dataDir);
        struct stat sock {};
        if (ready && appApi && (::stat(host.busSocket.c_str(), &sock) != 0 || !S_ISSOCK(sock.st_mode))) {
            // Said here, not as the runtime's "can't get final child's PID from pipe".
            ready = unexpected(ErrorCode::NotFound, "app_api: no bus socket at " + host.busSocket +
                                                        " (app_api.bus_socket in containers.json)");
        }
        if (ready && appApi) {
            // An image whose process is not the app's root (its `User`): that uid is named too.
            const IdRange range = bundleIds(bundle);
            const auto uid = bundleHostUid(bundle);
            if (range.size > 0 && uid && *uid > range.base && *uid - range.base < range.size) {
                if (auto st = ids_->nameId(name, *uid - range.base); !st) {
                    log::warning("app " + name + ": " + st.error().message);
                }
            }
            ready = checkBusIdentity(bundle);
        }
        if (ready && privateNet) {
            ready = net->prepare(name); // its namespace, veth, address, ports, resolv.conf
        }
        if (auto st = ready; !st) {
            loop->post([this, name, gen, st, alive] {
                if (*alive) {
                    onStarted(name, gen, unexpected(st.error()));
                }
            });
            return;
        }
        // "run --detach" is create + start in one runtime process; with
        // "create-start" the two steps are separate runtime calls. Either way the
        // init is our child (subreaper), so an early exit is never missed.
        pid_t shimPid = 0;
        auto launch = [&]() -> Expected<pid_t> {
            if (oneCall && !shim.empty()) {
                auto waiting = takeShim();
                if (!waiting) {
                    return unexpected(waiting.error());
                }
                refillShim();
                auto r = rt.runWithShim(std::move(waiting).value(), name, bundle, logFile, exitFile, logMax, logKeep);
                if (!r) {
                    return unexpected(r.error());
                }
                shimPid = r->shim;
                (void)writeShimRecord(shimFile, std::to_string(r->shim) + " " + std::to_string(r->init) + "\n");
                return r->init;
            }
            return oneCall ? rt.runDetached(name, bundle, out->get()) : rt.create(name, bundle, out->get());
        };
        auto pid = launch();
        if (!pid) {
            // A container of that name left by a crash: delete it and try once more.
            if (rt.remove(name, true)) {
                pid = launch();
            }
        }
        if (pid && !oneCall) {
            if (auto st = rt.start(name); !st) {
                (void)rt.remove(name, true);
                pid = unexpected(st.error());
            }
        }
        loop->post([this, name, gen, pid, alive, shimPid] {
            if (*alive) {
                onStarted(name, gen, pid, shimPid);
            }
        });
    });
}

void ContainerManager::onStarted(const std::string& name, std::uint64_t gen, Expected<pid_t> pid, pid_t shimPid)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen) {
        return;
    }
    auto waiters = std::move(a->startWaiters);
    a->startWaiters.clear();
    if (!pid) {
        log::warning("app " + name + ": " + pid.error().message);
        appendLine(logPath(name), "[mbl " + nowStamp() + "] start failed: " + pid.error().message);
        a->health = "unhealthy";
        setState(*a, AppEvent::StartFailed);
        changed(*a, {"Health"});
        notifyHealth(*a, false, pid.error().message);
        for (auto& w : waiters) {
            w(unexpected(pid.error()));
        }
        scheduleRestart(*a, true);
        return;
    }
    a->pid = *pid;
    a->startedAt = Clock::now();
    a->oomAtStart = oomKills(name);
    watchExit(*a, *pid, true, shimPid);
    a->health = "starting";
    setState(*a, AppEvent::Started);
    changed(*a, {"Pid", "Health"});
    a->graceTimer = loop_.addTimer(std::chrono::milliseconds(a->settings.health.graceMs),
                                   [this, name, gen] { onGraceOver(name, gen); });
    for (auto& w : waiters) {
        w({});
    }
}

void ContainerManager::watchExit(App& a, pid_t pid, bool ownChild, pid_t shimPid)
{
    const std::string name = a.settings.name;
    const std::uint64_t gen = a.gen;
    a.pid = pid;
    a.ownChild = ownChild;
    a.shimPid = shimPid;
    a.pidfd = Fd{pidfdOpen(shimPid > 0 ? shimPid : pid)};
    if (!a.pidfd) {
        // Already gone (and reaped by someone else): report the exit now.
        loop_.post([this, name, gen] { onExit(name, gen); });
        return;
    }
    loop_.watchFd(a.pidfd.get(), POLLIN, [this, name, gen](short) { onExit(name, gen); });
}

void ContainerManager::onExit(const std::string& name, std::uint64_t gen)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen || a->pid <= 0) {
        return;
    }
    std::int32_t code = -1;
    if (a->pidfd && a->shimPid > 0) {
        loop_.unwatchFd(a->pidfd.get());
        siginfo_t si {};
        // Reap the shim (our child unless the manager restarted since).
        (void)::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(a->pidfd.get()), &si, WEXITED | WNOHANG);
        a->pidfd.reset();
        const auto ex = readPair(exitRecord(name));
        if (ex.first == a->pid && ex.second >= 0) {
            code = static_cast<std::int32_t>(ex.second);
        } else if (::kill(a->pid, 0) == 0) {
            // The shim died (killed?) but the container runs on: watch the init itself.
            log::warning("app " + name + ": its shim (pid " + std::to_string(a->shimPid) +
                         ") ended before the app; watching the app's process directly");
            a->shimPid = 0;
            watchExit(*a, a->pid, true, 0);
            return;
        }
        a->shimPid = 0;
    } else if (a->pidfd) {
        loop_.unwatchFd(a->pidfd.get());
        siginfo_t si {};
        // We are the subreaper, so the container's init is our child (unless it was
        // re-adopted after a manager restart: then its status went to its new parent).
        if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(a->pidfd.get()), &si, WEXITED | WNOHANG) == 0 &&
            si.si_pid != 0) {
            code = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
        }
        a->pidfd.reset();
    }
    const bool oom = oomKills(name) > a->oomAtStart;
    a->pid = 0;
    a->exitCode = code;
    a->oomKilled = oom;
    for (auto* t : {&a->graceTimer, &a->probeTimer}) {
        if (*t != 0) {
            loop_.cancelTimer(*t);
            *t = 0;
        }
    }
    std::string how = code < 0 ? std::string("exited (exit status unknown)")
                               : code > 128 ? "killed by signal " + std::to_string(code - 128) + " (exit code " +
                                                  std::to_string(code) + ")"
                                            : "exited with code " + std::to_string(code);
    if (oom) {
        how += ", out of memory (the memory limit of " + std::to_string(a->settings.memoryBytes) + " bytes was hit)";
    }
    appendLine(logPath(name), "[mbl " + nowStamp() + "] " + how);
    log::info("app " + name + " " + how);
    const bool failed = !(a->state == AppState::Stopping) && (code != 0 || oom);
    const bool wasStarting = a->health == "starting";
    if (wasStarting || failed) {
        a->health = "unhealthy";
    } else {
        a->health = "unknown";
    }
    // The delete is queued first: whatever the callbacks below start waits for it.
    a->deleting = true;
    Runtime rt = runtime_;
    EventLoop* loop = &loop_;
    auto alive = alive_;
    runtimeQueue_.post([this, rt, name, loop, alive, cgroupPath = cgroupsPath(name)] {
        (void)rt.remove(name, true);
        removeCgroup(cgroupPath); // what runc's delete left (it leaves nothing when all goes well)
        loop->post([this, name, alive] {
            if (*alive) {
                onDeleted(name);
            }
        });
    });
    changed(*a, {"Pid", "ExitCode", "Health", "OomKilled"});
    setState(*a, failed || code != 0 ? AppEvent::ExitedBad : AppEvent::ExitedOk); // Stopping: Stopped either way
    if (wasStarting) {
        notifyHealth(*a, false, how);
    }
}

void ContainerManager::onDeleted(const std::string& name)
{
    App* a = find(name);
    if (a == nullptr) {
        return;
    }
    a->deleting = false;
    // A stop ended here (onExit took it from Stopping to Stopped): its waiters
    // are answered once the container is deleted, and no restart follows.
    const bool stopped = a->state == AppState::Stopped;
    std::vector<Done> stopWaiters;
    if (stopped) {
        if (a->killTimer != 0) {
            loop_.cancelTimer(a->killTimer);
            a->killTimer = 0;
        }
        stopWaiters = std::move(a->stopWaiters);
        a->stopWaiters.clear();
    }
    if (!a->afterDelete.empty()) {
        auto pending = std::move(a->afterDelete);
        a->afterDelete.clear();
        for (auto& fn : pending) {
            fn();
        }
    }
    for (auto& w : stopWaiters) {
        w({});
    }
    if (!stopped) {
        if (App* b = find(name)) {
            scheduleRestart(*b, b->state == AppState::Failed);
        }
    }
}

void ContainerManager::scheduleRestart(App& a, bool failed)
{
    if (shuttingDown_ || !a.desiredRunning || a.suppressRestart || (a.hold == AppHold::Removing) || a.pid > 0 || (a.state == AppState::Starting)) {
        return;
    }
    if (a.settings.restart == "no" || (a.settings.restart == "on-failure" && !failed)) {
        return;
    }
    const auto uptime = Clock::now() - a.startedAt;
    if (uptime > std::chrono::milliseconds(std::max<std::uint32_t>(10000, config_.backoffCapMs))) {
        a.backoffAttempt = 0; // it ran long enough: restart quickly again
    }
    std::uint64_t delay = config_.backoffBaseMs;
    for (unsigned i = 0; i < a.backoffAttempt && delay < config_.backoffCapMs; ++i) {
        delay *= 2;
    }
    delay = std::min<std::uint64_t>(delay, config_.backoffCapMs);
    a.backoffAttempt = std::min(a.backoffAttempt + 1, 30u);
    const std::string name = a.settings.name;
    log::info("app " + name + ": restarting in " + std::to_string(delay) + " ms (policy " + a.settings.restart + ")");
    a.restartTimer = loop_.addTimer(std::chrono::milliseconds(delay), [this, name] {
        App* x = find(name);
        if (x == nullptr) {
            return;
        }
        x->restartTimer = 0;
        if (!x->desiredRunning || x->pid > 0 || (x->state == AppState::Starting)) {
            return;
        }
        x->restartCount++;
        changed(*x, {"RestartCount"});
        persistLater(*x);
        startApp(*x, [](Status) {});
    });
}

void ContainerManager::stopApp(App& a, Done done)
{
    const std::string name = a.settings.name;
    if (a.restartTimer != 0) {
        loop_.cancelTimer(a.restartTimer);
        a.restartTimer = 0;
    }
    if (a.state == AppState::Starting) {
        // Let the start finish, then stop what it started.
        a.startWaiters.push_back([this, name, done](Status) {
            if (App* x = find(name)) {
                stopApp(*x, done);
            } else {
                done({});
            }
        });
        return;
    }
    if (a.deleting) {
        a.afterDelete.push_back([this, name, done] {
            if (App* x = find(name)) {
                stopApp(*x, done);
            } else {
                done({});
            }
        });
        return;
    }
    if (a.pid <= 0 && a.state != AppState::Stopping) {
        setState(a, AppEvent::Settle); // an exited or failed app is stopped now
        done({});
        return;
    }
    a.stopWaiters.push_back(std::move(done));
    if (a.state == AppState::Stopping) {
        return;
    }
    setState(a, AppEvent::Stop);
    const std::uint64_t gen = a.gen;
    Runtime rt = runtime_;
    runtimeQueue_.post([rt, name] { (void)rt.kill(name, SIGTERM); });
    a.killTimer = loop_.addTimer(std::chrono::milliseconds(config_.stopGraceMs), [this, name, gen] {
        App* x = find(name);
        if (x == nullptr || x->gen != gen || x->pid <= 0) {
            return;
        }
        x->killTimer = 0;
        log::info("app " + name + " did not stop within " + std::to_string(config_.stopGraceMs) + " ms: SIGKILL");
        Runtime rt2 = runtime_;
        runtimeQueue_.post([rt2, name] { (void)rt2.kill(name, SIGKILL, true); });
    });
}

void ContainerManager::start(const std::string& name, Done done)
{
    if (shuttingDown_) {
        done(unexpected(shuttingDownBusy()));
        return;
    }
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if ((a->hold == AppHold::Removing) || (a->hold == AppHold::Updating) || (a->state == AppState::Stopping)) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " +
                                             ((a->hold == AppHold::Removing) ? "removed" : (a->state == AppState::Stopping) ? "stopped" : "updated")));
        return;
    }
    if (!a->desiredRunning) {
        a->desiredRunning = true;
        persistLater(*a);
    }
    a->backoffAttempt = 0;
    startApp(*a, std::move(done));
}

void ContainerManager::stop(const std::string& name, Done done)
{
    if (shuttingDown_) {
        done(unexpected(shuttingDownBusy()));
        return;
    }
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if ((a->hold == AppHold::Removing) || (a->hold == AppHold::Updating)) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " + ((a->hold == AppHold::Removing) ? "removed" : "updated")));
        return;
    }
    if (a->desiredRunning) {
        a->desiredRunning = false;
        persistLater(*a);
    }
    stopApp(*a, std::move(done));
}

void ContainerManager::restart(const std::string& name, Done done)
{
    stop(name, [this, name, done](Status st) {
        if (!st) {
            done(st);
            return;
        }
        start(name, done);
    });
}

void ContainerManager::remove(const std::string& name, bool removeData, Done done)
{
    if (shuttingDown_) {
        done(unexpected(shuttingDownBusy()));
        return;
    }
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if ((a->hold == AppHold::Removing) || (a->hold == AppHold::Updating)) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " + ((a->hold == AppHold::Removing) ? "removed" : "updated")));
        return;
    }
    if (const Transaction* t = transactionOf(name)) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is part of transaction '" + t->id + "' (" +
                                             txnStateName(t->state) + "): commit or roll it back first"));
        return;
    }
    a->hold = AppHold::Removing;
    a->desiredRunning = false;
    stopApp(*a, [this, name, removeData, done](Status) {
        const std::string dir = appDir(name);
        const std::string logs = logPath(name);
        ::unlink(shimRecord(name).c_str());
        ::unlink(exitRecord(name).c_str());
        EventLoop* loop = &loop_;
        auto alive = alive_;
        // In the records' queue: no record write queued before can bring the app back.
        auto removeFiles = [this, dir, logs, removeData, name, done, loop, alive] {
            // The record goes first (durably): a crash from here on leaves no app.
            ::unlink((dir + "/" + kAppFile).c_str());
            (void)fs::syncDir(dir);
            Status st;
            if (removeData) {
                st = fs::removeTree(dir);
                (void)ids_->release(name); // its files are gone: its host ids are free
                (void)fs::removeTree(logs);
                for (int i = 1; i <= 9; ++i) {
                    (void)fs::removeTree(logs + "." + std::to_string(i));
                }
            } else {
                st = fs::removeTree(dir + "/versions");
            }
            loop->post([this, name, done, st, alive] {
                if (!*alive) {
                    return;
                }
                apps_.erase(name);
                if (events_ != nullptr) {
                    events_->appStateChanged(name, "removed");
                    events_->appRemoved(name);
                    events_->managerChanged({"AppCount"});
                }
                done(st);
            });
        };
        // Its network namespace, veth pair, published ports and address go with
        // it, and its cgroup folders (runc deleted the container's; one a crash
        // left would stay otherwise), after the container's delete queued before
        // and before the reply.
        runtimeQueue_.post([this, net = net_.get(), cgroupPath = cgroupsPath(name), name, removeFiles] {
            net->teardown(name);
            (void)net->release(name);
            net->cleanupIfUnused();
            removeCgroup(cgroupPath);
            diskQueue_.post(removeFiles);
        });
    });
}

} // namespace mbl::containers
