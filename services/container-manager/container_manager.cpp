#include "container_manager.h"
#include "manager_internal.h"

#include "oci_image.h"
#include "shim_record.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace mbl::containers {

using nlohmann::json;

void appendLine(const std::string& path, const std::string& line)
{
    Fd f{::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)};
    if (f) {
        const std::string l = line + "\n";
        (void)fs::writeAll(f.get(), l.data(), l.size());
    }
}

std::string nowStamp()
{
    char buf[64];
    std::time_t t = std::time(nullptr);
    struct tm tm {};
    ::gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::vector<std::string> listDir(const std::string& dir)
{
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return out;
    }
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") {
            out.push_back(n);
        }
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

namespace {

std::uint64_t readCounter(const std::string& path, const std::string& key)
{
    auto text = fs::readFile(path, 1 << 16);
    if (!text) {
        return 0;
    }
    for (const auto& line : str::split(*text, '\n')) {
        auto f = str::split(line, ' ');
        if (f.size() == 2 && f[0] == key) {
            return std::strtoull(f[1].c_str(), nullptr, 10);
        }
    }
    return 0;
}

// "<a> <b>\n" records of the shim directory.
std::pair<long, long> readPair(const std::string& path)
{
    auto text = fs::readFile(path, 256);
    if (!text) {
        return {0, 0};
    }
    auto f = str::split(str::trim(*text), ' ');
    if (f.size() != 2) {
        return {0, 0};
    }
    return {std::strtol(f[0].c_str(), nullptr, 10), std::strtol(f[1].c_str(), nullptr, 10)};
}

// Is pid (still) a shim? Guards against a reused pid after a reboot-less restart.
bool isShim(pid_t pid, const std::string& shimPath)
{
    auto cmd = fs::readFile("/proc/" + std::to_string(pid) + "/cmdline", 4096);
    return cmd && !shimPath.empty() && str::startsWith(*cmd, shimPath + std::string(1, '\0'));
}

std::string shimBinary()
{
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) {
        return "";
    }
    std::string self(buf, static_cast<std::size_t>(n));
    const std::string path = self.substr(0, self.rfind('/')) + "/mbl-container-shim";
    return ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

std::string joined(const std::vector<std::string>& v)
{
    std::string out;
    for (const auto& x : v) {
        out += (out.empty() ? "" : ", ") + x;
    }
    return out;
}

int pidfdOpen(pid_t pid)
{
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

json processJson(const ImageProcess& p)
{
    return json{{"args", p.args}, {"env", p.env}, {"cwd", p.cwd}, {"user", p.user}};
}

// Regenerates the bundle's config.json from the image's process (kept in
// mbl-app.json at install) and the app's effective settings; rewrites it only
// when it differs. Runs on the runtime worker, before the runtime reads it.
// The bundle's config.json for these settings, from the image's process kept in
// mbl-app.json; "" for a version installed before that was kept.
Expected<std::string> specText(const std::string& bundle, const AppSettings& settings, const std::string& dataDir,
                               const std::string& cgroupsPath)
{
    auto meta = fs::readFile(bundle + "/" + kVersionMeta);
    if (!meta) {
        return unexpected(meta.error());
    }
    SpecInputs in;
    try {
        const json m = json::parse(*meta);
        if (!m.contains("process")) {
            return std::string();
        }
        const json& p = m.at("process");
        in.process.args = p.at("args").get<std::vector<std::string>>();
        in.process.env = p.at("env").get<std::vector<std::string>>();
        in.process.cwd = p.at("cwd").get<std::string>();
        in.process.user = p.at("user").get<std::string>();
        in.uid = m.at("uid").get<std::uint32_t>();
        in.gid = m.at("gid").get<std::uint32_t>();
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, bundle + "/" + kVersionMeta + " is unreadable: " + e.what());
    }
    in.dataDir = dataDir;
    in.cgroupsPath = cgroupsPath;
    return generateSpec(settings, in).dump(2) + "\n";
}

// Regenerates the bundle's config.json from the image's process and the app's
// effective settings; rewrites it only when it differs. Runs on the runtime
// worker, before the runtime reads it.
Status ensureSpec(const std::string& bundle, const AppSettings& settings, const std::string& dataDir,
                  const std::string& cgroupsPath)
{
    auto text = specText(bundle, settings, dataDir, cgroupsPath);
    if (!text) {
        return unexpected(text.error());
    }
    if (text->empty()) {
        // Installed before settings could be layered: its config.json stays as generated then.
        log::warning(bundle + ": no image process recorded; settings overrides do not apply to this version");
        return {};
    }
    auto current = fs::readFile(bundle + "/config.json", 16u << 20);
    if (current && *current == *text) {
        return {};
    }
    return fs::writeFileAtomic(bundle + "/config.json", *text, 0600);
}

} // namespace

// ---------------------------------------------------------------- open / load / adopt

ContainerManager::ContainerManager(const Paths& paths, ManagerConfig config, EventLoop& loop)
    : paths_(paths),
      config_(std::move(config)),
      loop_(loop),
      runtime_(config_.runtime, paths.runtime("apps") + "/runc"),
      appsDir_(paths.state("apps")),
      logDir_(paths.log("apps"))
{
    cgroupParent_ = paths.root.empty() ? "mbl" : "mbl-" + crypto::sha256Hex(paths.root).substr(0, 10);
}

ContainerManager::~ContainerManager()
{
    *alive_ = false;
    for (auto& t : installThreads_) {
        if (t.joinable()) {
            t.join();
        }
    }
    for (auto& [name, a] : apps_) {
        if (a->pidfd) {
            loop_.unwatchFd(a->pidfd.get());
        }
    }
    if (inotify_) {
        loop_.unwatchFd(inotify_.get());
    }
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
    for (const auto& d : {m->appsDir_, m->runtime_.root(), m->logDir_}) {
        if (auto st = fs::makeDirs(d, 0700); !st) {
            return unexpected(st.error());
        }
    }
    (void)fs::removeTree(m->appsDir_ + "/.staging");
    const std::string marker = paths.runtime("apps") + "/started";
    m->firstSinceBoot_ = !fs::exists(marker);
    (void)fs::writeFileAtomic(marker, nowStamp() + "\n", 0600);
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
            a->state = "running";
            a->health = "starting";
            // Its shim (if it still runs) is the init's parent and will record the exit status.
            const auto rec = readPair(shimRecord(c.id));
            const pid_t shim = rec.second == c.pid && rec.first > 0 && isShim(static_cast<pid_t>(rec.first), shimPath_)
                                   ? static_cast<pid_t>(rec.first)
                                   : 0;
            watchExit(*a, c.pid, false, shim);
            // Settings applied while it ran whose restart never happened (the manager
            // stopped first): it restarts once the loop runs (startup()).
            auto want = specText(c.bundle, effective(*a), appDir(c.id) + "/data", cgroupsPath(c.id));
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
                a->state = a->exitCode == 0 ? "exited" : "failed";
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
        if (a->pid > 0 || a->starting) {
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
    const std::string p = cgroupsPath(name);
    std::uint64_t n = readCounter("/sys/fs/cgroup/memory" + p + "/memory.oom_control", "oom_kill");
    if (n == 0) {
        n = readCounter("/sys/fs/cgroup" + p + "/memory.events", "oom_kill");
    }
    return n;
}

// ---------------------------------------------------------------- events helpers

void ContainerManager::changed(App& a, std::vector<std::string> props)
{
    if (events_ != nullptr) {
        events_->appChanged(a.settings.name, props);
    }
}

void ContainerManager::setState(App& a, const std::string& state)
{
    if (a.state == state) {
        return;
    }
    a.state = state;
    if (events_ != nullptr) {
        events_->appChanged(a.settings.name, {"State"});
        events_->appStateChanged(a.settings.name, state);
    }
}

void ContainerManager::setHealth(App& a, const std::string& health)
{
    if (a.health != health) {
        a.health = health;
        changed(a, {"Health"});
    }
}

void ContainerManager::notifyHealth(App& a, bool healthy, const std::string& why)
{
    auto waiters = std::move(a.healthWaiters);
    a.healthWaiters.clear();
    for (auto& w : waiters) {
        w(healthy, why);
    }
}

void ContainerManager::waitHealth(App& a, std::function<void(bool, std::string)> cb)
{
    if (a.pid > 0 && a.health == "healthy") {
        cb(true, "");
    } else if (a.pid > 0 && a.health == "unhealthy") {
        cb(false, "the health probe failed");
    } else if (a.pid <= 0 && !a.starting) {
        cb(false, "it is not running (" + a.state + (a.exitCode != 0 ? ", exit code " + std::to_string(a.exitCode) : "") +
                      ")");
    } else {
        a.healthWaiters.push_back(std::move(cb));
    }
}

// ---------------------------------------------------------------- lifecycle

void ContainerManager::startApp(App& a, Done done)
{
    const std::string name = a.settings.name;
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
    if (a.starting) {
        return;
    }
    if (a.restartTimer != 0) {
        loop_.cancelTimer(a.restartTimer);
        a.restartTimer = 0;
    }
    a.starting = true;
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
    const std::string dataDir = appDir(name) + "/data";
    const std::string cgPath = cgroupsPath(name);
    const std::string shim = shimPath_;
    const std::string logFile = logPath(name);
    const std::string exitFile = exitRecord(name);
    const std::string shimFile = shimRecord(name);
    const std::uint64_t logMax = config_.logMaxBytes;
    const std::uint32_t logKeep = config_.logKeep;
    runtimeQueue_.post([this, rt, name, bundle, out, gen, loop, alive, oneCall, spec, dataDir, cgPath, shim, logFile,
                        exitFile, shimFile, logMax, logKeep] {
        if (spec) {
            if (auto st = ensureSpec(bundle, *spec, dataDir, cgPath); !st) {
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
    a->starting = false;
    auto waiters = std::move(a->startWaiters);
    a->startWaiters.clear();
    if (!pid) {
        log::warning("app " + name + ": " + pid.error().message);
        appendLine(logPath(name), "[mbl " + nowStamp() + "] start failed: " + pid.error().message);
        a->health = "unhealthy";
        setState(*a, "failed");
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
    setState(*a, "running");
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
    const bool failed = !a->stopping && (code != 0 || oom);
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
    runtimeQueue_.post([this, rt, name, loop, alive] {
        (void)rt.remove(name, true);
        loop->post([this, name, alive] {
            if (*alive) {
                onDeleted(name);
            }
        });
    });
    changed(*a, {"Pid", "ExitCode", "Health", "OomKilled"});
    setState(*a, a->stopping ? "stopped" : (failed ? "failed" : "exited"));
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
    if (!a->afterDelete.empty()) {
        auto pending = std::move(a->afterDelete);
        a->afterDelete.clear();
        for (auto& fn : pending) {
            fn();
        }
    }
    if (a->stopping) {
        a->stopping = false;
        if (a->killTimer != 0) {
            loop_.cancelTimer(a->killTimer);
            a->killTimer = 0;
        }
        auto waiters = std::move(a->stopWaiters);
        a->stopWaiters.clear();
        for (auto& w : waiters) {
            w({});
        }
        return;
    }
    scheduleRestart(*a, a->state == "failed");
}

void ContainerManager::scheduleRestart(App& a, bool failed)
{
    if (!a.desiredRunning || a.suppressRestart || a.removing || a.pid > 0 || a.starting) {
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
        if (!x->desiredRunning || x->pid > 0 || x->starting) {
            return;
        }
        x->restartCount++;
        changed(*x, {"RestartCount"});
        persistLater(*x);
        startApp(*x, [](Status) {});
    });
}

void ContainerManager::onGraceOver(const std::string& name, std::uint64_t gen)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen || a->pid <= 0) {
        return;
    }
    a->graceTimer = 0;
    if (a->settings.health.probe.empty()) {
        setHealth(*a, "healthy");
        notifyHealth(*a, true, "");
        return;
    }
    runProbe(name, gen);
}

void ContainerManager::runProbe(const std::string& name, std::uint64_t gen)
{
    App* a = find(name);
    if (a == nullptr || a->gen != gen || a->pid <= 0) {
        return;
    }
    a->probeTimer = 0;
    Runtime rt = runtime_;
    auto probe = a->settings.health.probe;
    auto timeout = std::chrono::milliseconds(a->settings.health.timeoutMs);
    auto out = std::make_shared<Fd>(::open(logPath(name).c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640));
    EventLoop* loop = &loop_;
    auto alive = alive_;
    probeQueue_.post([this, rt, name, gen, probe, timeout, out, loop, alive] {
        auto r = rt.exec(name, probe, timeout, out->get());
        loop->post([this, name, gen, r, alive] {
            if (!*alive) {
                return;
            }
            App* x = find(name);
            if (x == nullptr || x->gen != gen || x->pid <= 0) {
                return;
            }
            const bool ok = r && *r == 0;
            const std::string why = !r ? r.error().message : "the health probe exited with code " + std::to_string(*r);
            if (!ok) {
                appendLine(logPath(name), "[mbl " + nowStamp() + "] health probe failed: " + why);
            }
            setHealth(*x, ok ? "healthy" : "unhealthy");
            notifyHealth(*x, ok, why);
            if (x->settings.health.intervalMs > 0) {
                x->probeTimer = loop_.addTimer(std::chrono::milliseconds(x->settings.health.intervalMs),
                                               [this, name, gen] { runProbe(name, gen); });
            }
        });
    });
}

void ContainerManager::stopApp(App& a, Done done)
{
    const std::string name = a.settings.name;
    if (a.restartTimer != 0) {
        loop_.cancelTimer(a.restartTimer);
        a.restartTimer = 0;
    }
    if (a.starting) {
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
    if (a.deleting && !a.stopping) {
        a.afterDelete.push_back([this, name, done] {
            if (App* x = find(name)) {
                stopApp(*x, done);
            } else {
                done({});
            }
        });
        return;
    }
    if (a.pid <= 0 && !a.stopping) {
        if (a.state == "failed" || a.state == "exited") {
            setState(a, "stopped");
        }
        done({});
        return;
    }
    a.stopWaiters.push_back(std::move(done));
    if (a.stopping) {
        return;
    }
    a.stopping = true;
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
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if (a->removing || a->inTransaction || a->stopping) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " +
                                             (a->removing ? "removed" : a->stopping ? "stopped" : "updated")));
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
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if (a->removing || a->inTransaction) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " + (a->removing ? "removed" : "updated")));
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
    App* a = find(name);
    if (a == nullptr) {
        done(unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed"));
        return;
    }
    if (a->removing || a->inTransaction) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is being " + (a->removing ? "removed" : "updated")));
        return;
    }
    if (const Transaction* t = transactionOf(name)) {
        done(unexpected(ErrorCode::Busy, "app '" + name + "' is part of transaction '" + t->id + "' (" +
                                             txnStateName(t->state) + "): commit or roll it back first"));
        return;
    }
    a->removing = true;
    a->desiredRunning = false;
    stopApp(*a, [this, name, removeData, done](Status) {
        const std::string dir = appDir(name);
        const std::string logs = logPath(name);
        ::unlink(shimRecord(name).c_str());
        ::unlink(exitRecord(name).c_str());
        EventLoop* loop = &loop_;
        auto alive = alive_;
        // In the records' queue: no record write queued before can bring the app back.
        diskQueue_.post([this, dir, logs, removeData, name, done, loop, alive] {
            // The record goes first (durably): a crash from here on leaves no app.
            ::unlink((dir + "/" + kAppFile).c_str());
            (void)fs::syncDir(dir);
            Status st;
            if (removeData) {
                st = fs::removeTree(dir);
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
        });
    });
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
    v.state = a->state;
    v.pid = static_cast<std::uint32_t>(a->pid > 0 ? a->pid : 0);
    v.exitCode = a->exitCode;
    v.restartCount = a->restartCount;
    v.health = a->health;
    v.oomKilled = a->oomKilled;
    return v;
}

Expected<std::string> ContainerManager::logs(const std::string& name, std::uint32_t lines) const
{
    if (find(name) == nullptr && !fs::exists(logPath(name))) {
        return unexpected(ErrorCode::NotFound, "no app named '" + name + "' is installed");
    }
    std::string text;
    if (auto older = fs::readFile(logPath(name) + ".1", 64u << 20)) {
        text = *older;
    }
    if (auto cur = fs::readFile(logPath(name), 64u << 20)) {
        text += *cur;
    }
    if (lines == 0) {
        return text;
    }
    std::size_t pos = text.size();
    if (pos > 0 && text[pos - 1] == '\n') {
        --pos;
    }
    std::uint32_t seen = 0;
    while (pos > 0) {
        if (text[pos - 1] == '\n' && ++seen == lines) {
            break;
        }
        --pos;
    }
    return text.substr(pos);
}

std::string ContainerManager::operation() const
{
    return installs_.empty() ? std::string() : installs_.begin()->first;
}

// ---------------------------------------------------------------- shims

Expected<Runtime::WaitingShim> ContainerManager::takeShim()
{
    {
        std::lock_guard<std::mutex> lock(shimMutex_);
        if (waitingShim_) {
            Runtime::WaitingShim w = std::move(*waitingShim_);
            waitingShim_.reset();
            return w;
        }
    }
    return Runtime::spawnShim(shimPath_);
}

void ContainerManager::refillShim()
{
    diskQueue_.post([this] {
        auto w = Runtime::spawnShim(shimPath_);
        if (!w) {
            log::warning("cannot start " + shimPath_ + ": " + w.error().message);
            return;
        }
        std::lock_guard<std::mutex> lock(shimMutex_);
        if (!waitingShim_) {
            waitingShim_ = std::move(w).value();
        }
    });
}

// ---------------------------------------------------------------- over-the-air settings

AppSettings ContainerManager::effective(const App& a) const
{
    return applyOverride(a.settings, overrides_.forApp(a.settings.name));
}

void ContainerManager::loadOverrides()
{
    if (const char* lvl = std::getenv("MBL_LOG_LEVEL")) {
        (void)log::parseLevel(lvl, baseLogLevel_);
    }
    if (!fs::exists(settingsPath_)) {
        return;
    }
    auto text = fs::readFile(settingsPath_, 1u << 20);
    auto parsed = text ? parseOverrides(*text, config_.policy) : Expected<Overrides>(unexpected(text.error()));
    if (!parsed) {
        // E.g. the device policy was tightened since they were applied: run on the defaults.
        log::error(settingsPath_ + " is not applied: " + parsed.error().message);
        return;
    }
    overrides_ = std::move(parsed).value();
    if (overrides_.logLevel) {
        log::Level l;
        if (log::parseLevel(*overrides_.logLevel, l)) {
            log::setLevel(l);
        }
    }
}

void ContainerManager::restartForSettings(App& app)
{
    const std::string n = app.settings.name;
    appendLine(logPath(n), "[mbl " + nowStamp() + "] restarting to apply new settings");
    app.suppressRestart = true;
    stopApp(app, [this, n](Status) {
        App* x = find(n);
        if (x == nullptr) {
            return;
        }
        x->suppressRestart = false;
        if (x->desiredRunning && !x->removing && !x->inTransaction) {
            x->backoffAttempt = 0;
            startApp(*x, [n](Status st) {
                if (!st) {
                    log::warning("app " + n + " did not start with its new settings: " + st.error().message);
                }
            });
        }
    });
}

Status ContainerManager::applySettings(const std::string& text)
{
    auto parsed = parseOverrides(text, config_.policy);
    if (!parsed) {
        return unexpected(parsed.error());
    }
    Overrides next = std::move(parsed).value();
    const std::string doc = next.toJson().dump(2) + "\n";
    if (auto st = fs::writeFileAtomic(settingsPath_, doc, 0600); !st) {
        return st;
    }
    Overrides previous = std::move(overrides_);
    overrides_ = std::move(next);
    log::Level level = baseLogLevel_;
    if (overrides_.logLevel) {
        (void)log::parseLevel(*overrides_.logLevel, level);
    }
    log::setLevel(level);

    // Running apps whose effective settings changed restart to take them.
    std::vector<std::string> restarted;
    std::vector<std::string> later;
    for (auto& [name, a] : apps_) {
        if (previous.forApp(name) == overrides_.forApp(name)) {
            continue;
        }
        if (a->pid <= 0 && !a->starting) {
            continue; // the next start takes them
        }
        if (a->removing || a->inTransaction || a->stopping) {
            later.push_back(name); // its next start takes them
            continue;
        }
        restarted.push_back(name);
        restartForSettings(*a);
    }
    log::notice("settings applied (" + std::to_string(overrides_.apps.size()) + " app override(s)" +
                (overrides_.logLevel ? ", log level " + *overrides_.logLevel : std::string()) + "); restarted: " +
                (restarted.empty() ? std::string("none") : joined(restarted)) +
                (later.empty() ? std::string() : "; at their next start: " + joined(later)));
    return {};
}

// ---------------------------------------------------------------- logs

void ContainerManager::watchLogs()
{
    inotify_ = Fd{::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)};
    if (!inotify_ || ::inotify_add_watch(inotify_.get(), logDir_.c_str(), IN_MODIFY) < 0) {
        log::warning("cannot watch the app logs for rotation: " + std::string(std::strerror(errno)));
        return;
    }
    loop_.watchFd(inotify_.get(), POLLIN, [this](short) {
        alignas(struct inotify_event) char buf[8192];
        std::vector<std::string> names;
        while (true) {
            ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            for (char* p = buf; p < buf + n;) {
                auto* ev = reinterpret_cast<struct inotify_event*>(p);
                if (ev->len > 0) {
                    std::string fname = ev->name;
                    if (str::endsWith(fname, ".log") &&
                        std::find(names.begin(), names.end(), fname) == names.end()) {
                        names.push_back(fname);
                    }
                }
                p += sizeof(struct inotify_event) + ev->len;
            }
        }
        for (const auto& f : names) {
            rotateLogs(f);
        }
    });
}

void ContainerManager::rotateLogs(const std::string& fileName)
{
    const std::string path = logDir_ + "/" + fileName;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) <= config_.logMaxBytes) {
        return;
    }
    const App* a = find(fileName.substr(0, fileName.size() - 4));
    const bool running = a != nullptr && (a->pid > 0 || a->starting);
    if (running && (a->shimPid > 0 || (a->starting && !shimPath_.empty()))) {
        return; // its shim is the log's writer and rotates it
    }
    auto shift = [&] {
        for (std::uint32_t i = config_.logKeep; i > 1; --i) {
            ::rename((path + "." + std::to_string(i - 1)).c_str(), (path + "." + std::to_string(i)).c_str());
        }
    };
    if (!running) {
        // Only the manager writes it (one open per line, by path): a rename loses nothing.
        if (config_.logKeep == 0) {
            (void)::truncate(path.c_str(), 0);
            return;
        }
        shift();
        ::rename(path.c_str(), (path + ".1").c_str());
        return;
    }
    // Without a shim (start_mode "create-start") the container writes straight to
    // the O_APPEND file: copy and truncate. Lines written between the copy and the
    // truncate are lost; the shim's rotation (the default) never loses one.
    shift();
    if (config_.logKeep > 0) {
        Fd in{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
        Fd out{::open((path + ".1").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)};
        char buf[65536];
        ssize_t n = 0;
        while (in && out && (n = ::read(in.get(), buf, sizeof buf)) > 0) {
            (void)fs::writeAll(out.get(), buf, static_cast<std::size_t>(n));
        }
    }
    if (::truncate(path.c_str(), 0) != 0) {
        log::warning("cannot truncate " + path + ": " + std::strerror(errno));
    }
}

// ---------------------------------------------------------------- install

// Test-only crash point: MBL_CM_TEST_PAUSE=<point>[:seconds] makes the install
// worker write <apps>/.paused and wait there (for ever without seconds) so a test
// can kill -9 the manager mid-install. Without the variable it is one getenv.
void testPause(const std::string& point, const std::string& appsDir)
{
    const char* env = std::getenv("MBL_CM_TEST_PAUSE");
    if (env == nullptr) {
        return;
    }
    const std::string spec = env;
    const auto colon = spec.find(':');
    if (spec.substr(0, colon) != point) {
        return;
    }
    (void)fs::writeFileAtomic(appsDir + "/.paused", point + "\n", 0644);
    if (colon == std::string::npos) {
        for (;;) {
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
    }
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(spec.c_str() + colon + 1)));
}

Expected<std::string> ContainerManager::install(Fd archive, const std::string& optionsText)
{
    // "transaction" is not an app setting: it says where the app is staged (C3).
    std::string txnId;
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
    installThreads_.emplace_back([this, op, stagingRoot, appsDir, cgroupParent, cfg, s, loop, alive, fd, txnId]() mutable {
        auto staged = std::make_shared<Staged>();
        staged->txnId = txnId;
        staged->settings = s;
        staged->dir = stagingRoot + "/" + op;
        auto fail = [&](const Error& e) {
            staged->result = unexpected(e);
            (void)fs::removeTree(staged->dir);
        };
        auto work = [&]() -> Status {
            if (auto st = fs::makeDirs(staged->dir, 0700); !st) {
                return st;
            }
            StageOptions so;
            so.limits.quotaBytes = cfg.quotaBytes;
            so.limits.allowSetuid = cfg.policy.allowSetuid;
            so.imageRef = s.imageRef;
            auto img = stageArchive(fd->get(), staged->dir, so);
            fd->reset();
            if (!img) {
                return unexpected(img.error());
            }
            staged->image = *img;
            AppSettings& set = staged->settings;
            if (set.name.empty()) {
                if (str::isSafeName(img->refName, 48)) {
                    set.name = img->refName;
                } else {
                    return unexpected(ErrorCode::InvalidArgument,
                                      "the install options name no app (\"name\") and the image has no usable ref.name");
                }
            }
            if (set.version.empty()) {
                set.version = str::isSafeName(img->version, 64) ? img->version
                              : !img->manifestDigest.empty()     ? img->manifestDigest.substr(7, 12)
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
            SpecInputs in;
            in.process = img->process;
            in.uid = ids->first;
            in.gid = ids->second;
            in.dataDir = appsDir + "/" + set.name + "/data";
            in.cgroupsPath = "/" + cgroupParent + "/" + set.name;
            auto spec = generateSpec(set, in);
            if (auto st = fs::writeFileAtomic(staged->dir + "/config.json", spec.dump(2) + "\n", 0600); !st) {
                return st;
            }
            json meta = {{"settings", set.toJson()},
                         {"kind", img->kind},
                         {"digest", img->manifestDigest},
                         {"installed", nowStamp()},
                         {"process", processJson(img->process)},
                         {"uid", ids->first},
                         {"gid", ids->second}};
            return fs::writeFileAtomic(staged->dir + "/" + kVersionMeta, meta.dump(2) + "\n", 0600);
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
    const std::string newVersion = staged->settings.version;
    const std::string dataDir = appDir(name) + "/data";

    if (a == nullptr) {
        if (auto st = fs::makeDirs(appDir(name) + "/versions", 0700); !st) {
            return abort(st.error());
        }
        if (!fs::exists(dataDir)) {
            if (auto st = fs::makeDirs(dataDir, 0755); !st) {
                return abort(st.error());
            }
            if (::chown(dataDir.c_str(), staged->uid, staged->gid) != 0) {
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
    if (a->removing || a->inTransaction || a->stopping || a->starting) {
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
        x.exitCode = 0;
        x.oomKilled = false;
        changed(x, {"Version", "ExitCode", "OomKilled"});
    };

    if (!wasRunning) {
        switchTo(a);
        if (auto st = persist(a); !st) {
            return finishInstall(op, name, st);
        }
        removeLater(versionDir(name, oldDir));
        return finishInstall(op, name, {});
    }

    a.inTransaction = true;
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
                    z->inTransaction = false;
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
                    // ExitCode belongs to the version that runs: the failed one's goes with it.
                    w->exitCode = 0;
                    w->oomKilled = false;
                    changed(*w, {"Version", "ExitCode", "OomKilled"});
                    startApp(*w, [=](Status st) {
                        App* v = find(name);
                        if (v != nullptr) {
                            v->inTransaction = false;
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
