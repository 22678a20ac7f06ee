// SPDX-License-Identifier: Apache-2.0
// The container manager's core: opening the state (apps, transactions,
// settings), re-adopting running containers, the app records, and what the
// bus reads. The other concerns live beside it: manager_install.cpp,
// manager_transactions.cpp, manager_lifecycle.cpp, manager_health.cpp,
// manager_shims.cpp, manager_logs.cpp, manager_settings.cpp.

#include "container_manager.h"

#include "cgroups.h"
#include "manager_internal.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <future>
#include <sys/prctl.h>
#include <unistd.h>

namespace mbl::containers {

using nlohmann::json;

namespace {
Cgroups appCgroups(const Paths& paths)
{
    return Cgroups(CgroupSystem::discover(),
                   paths.root.empty() ? "mbl" : "mbl-" + crypto::sha256Hex(paths.root).substr(0, 10));
}
} // namespace

ContainerManager::ContainerManager(const Paths& paths, ManagerConfig config, EventLoop& loop)
    : paths_(paths),
      config_(std::move(config)),
      loop_(loop),
      runtime_(config_.runtime, paths.runtime("apps") + "/runc"),
      appsDir_(paths.state("apps")),
      logDir_(paths.log("apps"))
{
    // The apps' cgroups: below the unit's under systemd (cgroups.h), else at the
    // root in "mbl" ("mbl-<hash>" for a test root, so test stacks never collide).
    cgroupParent_ = appCgroups(paths).appsParent().substr(1);
}

ContainerManager::~ContainerManager()
{
    *alive_ = false;
    stopping_ = true; // an install under way ends (Cancelled) and removes its staging

    for (auto& [name, a] : apps_) {
        if (a->pidfd) {
            loop_.unwatchFd(a->pidfd.get());
        }
    }
    if (inotify_) {
        loop_.unwatchFd(inotify_.get());
    }
    // The apps' parent if no app cgroup is left in it (in the root-cgroup layout
    // nothing else would remove it).
    removeCgroupIfEmpty("/" + cgroupParent_);
}

Expected<std::unique_ptr<ContainerManager>> ContainerManager::open(const Paths& paths, const Config& config,
                                                                    EventLoop& loop)
{
    auto cfg = ManagerConfig::fromConfig(config);
    if (!cfg) {
        return unexpected(cfg.error());
    }
    // Containers' inits are re-parented to us when the runtime exits: we reap
    // them and learn their exit status at once.
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        return unexpected(errnoError("PR_SET_CHILD_SUBREAPER", errno));
    }
    std::unique_ptr<ContainerManager> m(new ContainerManager(paths, std::move(cfg).value(), loop));
    // Under systemd (Delegate=yes) the manager leaves its unit's cgroup to a leaf
    // of its own before any app cgroup is made beside it (cgroups.h).
    const Cgroups cgroups = appCgroups(paths);
    if (auto st = cgroups.enterLeaf(); !st) {
        return unexpected(st.error());
    }
    if (const std::size_t n = cgroups.removeStale(); n > 0) {
        log::notice("removed " + std::to_string(n) + " cgroup folders no app uses under " + cgroups.appsParent());
    }
    for (const auto& d : {m->appsDir_, m->runtime_.root(), m->logDir_}) {
        if (auto st = fs::makeDirs(d, 0700); !st) {
            return unexpected(st.error());
        }
    }
    (void)fs::removeTree(m->appsDir_ + "/.staging");
    const std::string marker = paths.runtime("apps") + "/started";
    m->firstSinceBoot_ = !fs::exists(marker);
    (void)fs::writeFileAtomic(marker, nowStamp() + "\n", 0600);
    if (m->config_.usernsEnabled && !userNamespacesAvailable()) {
        log::warning("this kernel gives no user namespaces: apps run with host ids (root images are refused "
                     "unless policy.allow_host_root)");
        m->config_.usernsEnabled = false;
    }
    traversable(m->appsDir_);
    m->ids_ = std::make_unique<IdAllocator>(
        m->appsDir_ + "/.idmap.json", m->config_.usernsFirstId, m->config_.usernsIdsPerApp,
        UserRecords(m->config_.usernsEnabled ? m->config_.usernsUserdbDir : "", m->config_.usernsUserPrefix,
                    m->appsDir_));
    if (auto st = m->ids_->load(); !st) {
        return unexpected(st.error());
    }
    m->net_ = std::make_unique<AppNetworks>(m->config_.network, m->appsDir_ + "/.network.json",
                                            paths.runtime("apps") + "/net");
    if (auto st = m->net_->load(); !st) {
        return unexpected(st.error());
    }
    m->loadTransactions();
    if (auto st = m->loadApps(); !st) {
        return unexpected(st.error());
    }
    m->settingsPath_ = m->appsDir_ + "/.settings.json";
    m->shimDir_ = paths.runtime("apps") + "/shim";
    if (m->config_.startMode == "run") {
        m->shimPath_ = shimBinary();
        if (m->shimPath_.empty()) {
            log::warning("mbl-container-shim not found beside the daemon: exit codes of apps that exit while the "
                         "manager is not running will be unknown");
        }
    }
    (void)fs::makeDirs(m->shimDir_, 0700);
    if (!m->shimPath_.empty()) {
        m->refillShim();
    }
    m->loadOverrides();
    m->adopt();
    m->watchLogs();
    return m;
}

Status ContainerManager::loadApps()
{
    for (const auto& name : listDir(appsDir_)) {
        if (name[0] == '.' || !str::isSafeName(name, 48)) {
            continue;
        }
        auto text = fs::readFile(appDir(name) + "/" + kAppFile);
        if (!text) {
            if (transactionOf(name) != nullptr) {
                continue; // a transaction step in progress: resumed by resumeTransactions()
            }
            // Removed with its data kept (RemoveApp(name, false)), or an install
            // interrupted before its record was written: no bundle is kept, /data is.
            if (fs::exists(appDir(name) + "/versions")) {
                log::warning("removing " + appDir(name) + "/versions: no " + kAppFile + " (interrupted install)");
                (void)fs::removeTree(appDir(name) + "/versions");
            }
            continue;
        }
        try {
            auto rec = json::parse(*text);
            auto a = std::make_unique<App>();
            a->version = rec.at("version").get<std::string>();
            a->dir = rec.value("dir", a->version);
            if (!isVersionDirName(a->dir)) {
                log::error("app " + name + ": its record names an unsafe folder; skipped");
                continue;
            }
            a->desiredRunning = rec.value("desired_running", false);
            a->restartCount = rec.value("restart_count", 0u);
            auto meta = fs::readFile(versionDir(name, a->dir) + "/" + kVersionMeta);
            if (!meta) {
                log::error("app " + name + ": version " + a->version + " is missing; skipped");
                continue;
            }
            auto settings = AppSettings::fromJson(json::parse(*meta).at("settings"));
            if (!settings) {
                log::error("app " + name + ": " + settings.error().message);
                continue;
            }
            a->settings = std::move(settings).value();
            a->withheld = bundleWithheld(versionDir(name, a->dir));
            apps_[name] = std::move(a);
        } catch (const std::exception& e) {
            log::error("app " + name + ": unreadable record: " + e.what());
        }
    }
    return {};
}

void ContainerManager::adopt()
{
    auto containers = runtime_.list();
    if (!containers) {
        log::warning("cannot list containers: " + containers.error().message);
        return;
    }
    for (const auto& c : *containers) {
        App* a = find(c.id);
        const bool ours = a != nullptr && c.bundle == versionDir(c.id, a->dir);
        if (!ours) {
            // Not an installed app (or a version whose switch never committed):
            // no orphan is left running.
            log::notice("removing container " + c.id + " (" + c.status + "): not the installed version of an app");
            (void)runtime_.remove(c.id, true);
            continue;
        }
        if (c.status == "running" || c.status == "paused") {
            a->gen++;
            a->startedAt = Clock::now();
            a->oomAtStart = oomKills(c.id);
            a->state = AppState::Running; // reconstructed, not a transition
            a->health = "starting";
            // Its shim (if it still runs) is the init's parent and will record the exit status.
            const auto rec = readPair(shimRecord(c.id));
            const pid_t shim = rec.second == c.pid && rec.first > 0 && isShim(static_cast<pid_t>(rec.first), shimPath_)
                                   ? static_cast<pid_t>(rec.first)
                                   : 0;
            watchExit(*a, c.pid, false, shim);
            // Settings applied while it ran whose restart never happened (the manager
            // stopped first): it restarts once the loop runs (startup()).
            auto want = specText(c.bundle, effective(*a), hostInputs(c.id));
            auto have = fs::readFile(c.bundle + "/config.json", 16u << 20);
            a->staleSettings = want && !want->empty() && have && *have != *want;
            const std::uint64_t gen = a->gen;
            const std::string name = c.id;
            a->graceTimer = loop_.addTimer(std::chrono::milliseconds(a->settings.health.graceMs),
                                           [this, name, gen] { onGraceOver(name, gen); });
            log::info("re-adopted running app " + c.id + " (pid " + std::to_string(c.pid) + ")");
        } else {
            // Exited (or never started) while the manager was away.
            (void)runtime_.remove(c.id, true);
            if (c.status == "stopped") {
                // The shim recorded how it ended (the init pid ties the two records together).
                const auto rec = readPair(shimRecord(c.id));
                const auto ex = readPair(exitRecord(c.id));
                const bool known = rec.second > 0 && ex.first == rec.second && ex.second >= 0;
                a->exitCode = known ? static_cast<std::int32_t>(ex.second) : -1;
                a->state = a->exitCode == 0 ? AppState::Exited : AppState::Failed; // reconstructed
                a->exitedWhileAway = true;
                appendLine(logPath(c.id), "[mbl " + nowStamp() + "] exited while the manager was not running (" +
                                              (known ? "exit code " + std::to_string(a->exitCode)
                                                     : std::string("exit status unknown")) +
                                              ")");
            }
        }
    }
    // Versions that are not current are what an interrupted update left.
    for (const auto& [name, a] : apps_) {
        for (const auto& v : listDir(appDir(name) + "/versions")) {
            if (v != a->dir && !keptByTransaction(name, v)) {
                (void)fs::removeTree(versionDir(name, v));
            }
        }
    }
}

void ContainerManager::startup()
{
    resumeTransactions();
    for (auto& [name, a] : apps_) {
        if (startOwnedByTransaction(name)) {
            continue; // the resumed transaction step starts it (or not)
        }
        if (a->staleSettings && a->pid > 0) {
            a->staleSettings = false;
            a->desiredRunning = true; // it runs: it is wanted
            log::notice("app " + name + " runs with settings older than those in effect: restarting it");
            restartForSettings(*a);
            continue;
        }
        if (a->pid > 0 || (a->state == AppState::Starting)) {
            continue;
        }
        bool want = a->desiredRunning || (firstSinceBoot_ && a->settings.autostart);
        if (a->exitedWhileAway) {
            want = a->desiredRunning && (a->settings.restart == "always" ||
                                         (a->settings.restart == "on-failure" && a->exitCode != 0));
            if (want) {
                a->restartCount++;
            }
        }
        if (want) {
            a->desiredRunning = true;
            startApp(*a, [](Status) {});
        }
    }
}

ContainerManager::App* ContainerManager::find(const std::string& name)
{
    auto it = apps_.find(name);
    return it == apps_.end() ? nullptr : it->second.get();
}

const ContainerManager::App* ContainerManager::find(const std::string& name) const
{
    auto it = apps_.find(name);
    return it == apps_.end() ? nullptr : it->second.get();
}

Status ContainerManager::persist(const App& a)
{
    json rec = {{"version", a.version},
                {"dir", a.dir},
                {"desired_running", a.desiredRunning},
                {"restart_count", a.restartCount}};
    auto done = std::make_shared<std::promise<Status>>();
    auto result = done->get_future();
    diskQueue_.post([path = appDir(a.settings.name) + "/" + kAppFile, text = rec.dump(2) + "\n", done] {
        done->set_value(fs::writeFileAtomic(path, text, 0600));
    });
    return result.get();
}

void ContainerManager::persistLater(const App& a)
{
    json rec = {{"version", a.version},
                {"dir", a.dir},
                {"desired_running", a.desiredRunning},
                {"restart_count", a.restartCount}};
    diskQueue_.post([path = appDir(a.settings.name) + "/" + kAppFile, text = rec.dump(2) + "\n"] {
        if (auto st = fs::writeFileAtomic(path, text, 0600); !st) {
            log::error("cannot write " + path + ": " + st.error().message);
        }
    });
}

std::uint64_t ContainerManager::oomKills(const std::string& name) const
{
    const std::string f = memoryCgroupFile(cgroupsPath(name), "memory.events", "memory.oom_control");
    return f.empty() ? 0 : readCounter(f, "oom_kill");
}

void ContainerManager::changed(App& a, std::vector<std::string> props)
{
    if (events_ != nullptr) {
        events_->appChanged(a.settings.name, props);
    }
}

void ContainerManager::setState(App& a, AppEvent event)
{
    const auto next = appNext(a.state, event);
    if (!next) {
        // A bug in the caller: the table has no such step. Logged, state kept.
        log::error("app " + a.settings.name + ": no transition from " + appStateName(a.state) + " on " +
                   appEventName(event));
        return;
    }
    if (*next == a.state) {
        return;
    }
    a.state = *next;
    if (events_ != nullptr) {
        events_->appChanged(a.settings.name, {"State"});
        events_->appStateChanged(a.settings.name, appStateName(a.state));
    }
}

void ContainerManager::setHealth(App& a, const std::string& health)
{
    if (a.health != health) {
        a.health = health;
        changed(a, {"Health"});
    }
}

SpecInputs ContainerManager::hostInputs(const std::string& name) const
{
    SpecInputs in;
    in.dataDir = appDir(name) + "/data";
    in.cgroupsPath = cgroupsPath(name);
    in.netnsPath = net_->netnsPath(name);
    in.resolvConf = net_->resolvPath(name);
    in.hostsFile = net_->hostsPath(name);
    in.busSocket = config_.appApiSocket;
    return in;
}

void ContainerManager::releaseUnused(const std::string& name)
{
    if (find(name) != nullptr || transactionOf(name) != nullptr) {
        return;
    }
    (void)net_->release(name);
    if (!fs::exists(appDir(name) + "/data")) {
        (void)ids_->release(name);
    }
}

Expected<std::string> ContainerManager::appOfUid(std::uint32_t uid) const
{
    for (const auto& [name, a] : apps_) {
        const IdRange r = bundleIds(versionDir(name, a->dir));
        if (r.size > 0 && uid >= r.base && uid - r.base < r.size) {
            return name;
        }
    }
    return unexpected(ErrorCode::NotFound, "no app runs with host uid " + std::to_string(uid));
}

std::vector<AppView> ContainerManager::list() const
{
    std::vector<AppView> out;
    for (const auto& [name, a] : apps_) {
        out.push_back(*app(name));
    }
    return out;
}

Expected<AppView> ContainerManager::app(const std::string& name) const
{
    const App* a = find(name);
    if (a == nullptr) {
        return unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed");
    }
    AppView v;
    v.name = name;
    v.version = a->version;
    v.state = appStateName(a->state);
    v.pid = static_cast<std::uint32_t>(a->pid > 0 ? a->pid : 0);
    v.exitCode = a->exitCode;
    v.restartCount = a->restartCount;
    v.health = a->health;
    v.oomKilled = a->oomKilled;
    v.withheld = a->withheld;
    return v;
}

std::string ContainerManager::operation() const
{
    return installs_.empty() ? std::string() : installs_.begin()->first;
}

} // namespace mbl::containers
