// SPDX-License-Identifier: Apache-2.0
// Container manager benchmark, against the bare tools in the same run. The two
// sides alternate which goes first every round; each figure is printed as
// median/median and as the median (min-max) of the paired per-round ratios.
//  1. start to running.
//     ours: StartApp (D-Bus call from this process) until its reply, which the
//           manager sends once the app's process runs (shim, runc create+start,
//           generated config with seccomp). Not timed: the StopApp after it.
//     bare: `runc run -d` of the same bundle and the same generated config.json
//           until it returns (the process runs). Not timed: `runc delete --force`.
//     CLI clients, each a process timed from its exec to its exit (the client's
//     own start-up included, as a person at a shell or a script sees it):
//       `mblctl app start` (connects to the bus, StartApp, its reply once the
//           app runs; not timed: the StopApp after it);
//       `ctr run -d` (when containerd is installed; the same image, ctr's
//           default config) until it returns with the task running; not timed:
//           `ctr task delete --force` and `ctr container delete`;
//       `podman run -d` (when podman is installed; the confinement of side 2
//           below) until it returns with the container running; not timed:
//           `podman rm -f -t 0`.
//     All sides of a round rotate which goes first.
//  2. start to removed, for a /bin/true app (a short-lived job).
//     ours: StartApp until the container is gone from the manager's runc root
//           (inotify: the runtime's state directory deleted), i.e. after the
//           app exited and the manager's `runc delete` ran. The "exited" signal's
//           time is printed too, for reference only (it comes before the delete).
//     bare: `runc run` (foreground) of the same bundle until it returns: the
//           process ran, exited and runc destroyed the container.
//     peer (when containerd and ctr are installed, e.g. Debian's containerd 1.6):
//           `ctr run --rm` of the same image (imported into a containerd started
//           here with its own root, state and socket; overlayfs snapshotter,
//           runc v2 shim) until it returns: started, exited, container and
//           snapshot removed. Its own generated config (no seccomp profile
//           unless asked; ours has one).
//     peer (when podman is installed, e.g. Debian's podman 4.3.1; no daemon):
//           `podman run --rm` of the same image (loaded here into a storage of
//           the bench's own: --root/--runroot in the work folder, overlay
//           driver, runc as runtime since crun refuses this machine's hybrid
//           cgroups, cgroupfs, events to a file) with our app's confinement:
//           no network, read-only root, a user namespace of 65536 ids, the same
//           four capabilities, no-new-privileges, podman's default seccomp
//           profile, nofile 1024/4096 (and nproc 1024: podman sets one; its
//           default is above this machine's hard limit). Until it returns:
//           conmon started, runc create/start, exited, container and its
//           storage layer removed. It includes the podman CLI's own start-up (a
//           Go binary: it is also the engine). One untimed warm-up run first
//           (the image's layer is copied for the id mapping then, once).
//     Between rounds nothing sleeps: the next round starts once the removal was seen.
//     The sides rotate which goes first.
//  3. install of a ~50 MiB image (an OCI layout archive, one gzip layer).
//     ours: InstallApp until InstallCompleted: reads the archive, checks the
//           manifest, config and layer digests, unpacks the layer, writes the
//           runtime bundle and config, records the app.
//     bare: `tar -xf` of the archive, `openssl dgst -sha256` of the manifest,
//           config and layer blobs compared to their names, `tar -xzf` of the
//           layer into a fresh rootfs. Bare does not generate a runtime config,
//           fsync, or record anything.
//  4. idle RSS/PSS of the daemon with 0 and with 20 installed apps (no ratio).
// Needs root, runc, busybox-static, umoci (only to build the test images);
// containerd + ctr and podman optional (apt-get install containerd podman) for the peer sides.
//   bench/containers/bench-containers [ROUNDS]      (run from a release build dir)

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <optional>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

using namespace mbl;
using Clock = std::chrono::steady_clock;

namespace {

// Runs argv with stdio on /dev/null (a detached container keeps its stdio:
// capturing it in a pipe would wait for the container's end).
bool runQuiet(const std::vector<std::string>& argv, const SpawnOptions& quiet)
{
    auto c = Child::spawn(argv, quiet);
    return c && c->wait().success();
}

// An untimed clean-up between rounds: `podman rm -f` now and then fails to
// remove the root file system of a container it has just killed (the overlay
// still busy); it removes it when asked again. Tries a few times, then gives up
// with the tool's own message.
void cleanUp(const std::vector<std::string>& argv)
{
    std::string err;
    for (int attempt = 0; attempt < 5; ++attempt) {
        auto r = mbl::run(argv);
        if (r && r->status.success()) {
            return;
        }
        err = r ? r->err : r.error().message;
    }
    throw std::runtime_error("clean-up failed 5 times: " + str::join(argv, " ") + ": " + err);
}

double ms(Clock::duration d)
{
    return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

std::pair<long, long> rssPss(pid_t pid)
{
    long rss = 0, pss = 0;
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/smaps_rollup");
    if (text) {
        for (const auto& line : str::split(*text, '\n')) {
            if (str::startsWith(line, "Rss:")) {
                rss = std::atol(line.c_str() + 4);
            } else if (str::startsWith(line, "Pss:")) {
                pss = std::atol(line.c_str() + 4);
            }
        }
    }
    return {rss, pss};
}

// Prints median/median and the median (min-max) of the paired per-round ratios.
void report(const std::string& what, const std::vector<double>& ours, const std::vector<double>& bare,
            const std::string& bareName, const std::string& oursName = "manager")
{
    const double a = median(ours), b = median(bare);
    std::vector<double> ratios;
    for (std::size_t i = 0; i < ours.size() && i < bare.size(); ++i) {
        if (bare[i] > 0) {
            ratios.push_back(ours[i] / bare[i]);
        }
    }
    const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
    std::printf("%-32s %-12s %8.2f ms  %-24s %8.2f ms  median/median %.2f  paired %.2f (%.2f-%.2f)\n",
                what.c_str(), oursName.c_str(), a, bareName.c_str(), b, b > 0 ? a / b : 0, median(ratios),
                ratios.empty() ? 0 : *lo, ratios.empty() ? 0 : *hi);
}

// Waits for a directory entry of `dir` to be deleted (inotify IN_DELETE): runc
// removes its state directory <root>/<id> last in `runc delete`.
class RemovalWatch {
public:
    explicit RemovalWatch(const std::string& dir)
    {
        fd_ = Fd{::inotify_init1(IN_CLOEXEC | IN_NONBLOCK)};
        if (!fd_ || ::inotify_add_watch(fd_.get(), dir.c_str(), IN_DELETE) < 0) {
            throw std::runtime_error("inotify on " + dir + " failed");
        }
    }
    void drain() { (void)waitFor("", 0); }
    // The time the deletion of `name` was read; a zero time_point on timeout.
    Clock::time_point waitFor(const std::string& name, int timeoutMs = 30000)
    {
        alignas(inotify_event) char buf[4096];
        const auto end = Clock::now() + std::chrono::milliseconds(timeoutMs);
        while (true) {
            ssize_t n = ::read(fd_.get(), buf, sizeof buf);
            const auto at = Clock::now();
            for (ssize_t off = 0; n > 0 && off < n;) {
                const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
                if (!name.empty() && ev->len > 0 && name == ev->name) {
                    return at;
                }
                off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
            }
            if (n > 0) {
                continue;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
            if (left <= 0) {
                return {};
            }
            struct pollfd p = {fd_.get(), POLLIN, 0};
            (void)::poll(&p, 1, static_cast<int>(left));
        }
    }

private:
    Fd fd_;
};

// The blobs of `tag` in an OCI layout: manifest, config, layers (digests, hex).
std::vector<std::string> imageBlobs(const std::string& layout, const std::string& tag)
{
    std::vector<std::string> out;
    auto index = nlohmann::json::parse(*fs::readFile(layout + "/index.json"));
    for (const auto& m : index["manifests"]) {
        if (m.value("annotations", nlohmann::json::object()).value("org.opencontainers.image.ref.name", "") == tag) {
            out.push_back(m["digest"].get<std::string>().substr(7));
        }
    }
    if (out.empty()) {
        throw std::runtime_error("no manifest for " + tag);
    }
    auto manifest = nlohmann::json::parse(*fs::readFile(layout + "/blobs/sha256/" + out[0]));
    out.push_back(manifest["config"]["digest"].get<std::string>().substr(7));
    for (const auto& l : manifest["layers"]) {
        out.push_back(l["digest"].get<std::string>().substr(7));
    }
    return out;
}

// Waits for the AppStateChanged signal naming `state` for `app`.
class StateWatch {
public:
    StateWatch()
    {
        conn_ = dbus::connectSystemBus();
        proxy_ = sdbus::createProxy(*conn_, "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1");
        proxy_->uponSignal("AppStateChanged")
            .onInterface("org.mbl.ContainerManager1")
            .call([this](const std::string& name, const std::string& state) {
                std::lock_guard<std::mutex> l(m_);
                seen_.push_back({name + "=" + state, Clock::now()});
                cv_.notify_all();
            });
        proxy_->finishRegistration();
        conn_->enterEventLoopAsync();
    }
    ~StateWatch() { conn_->leaveEventLoop(); }
    void clear()
    {
        std::lock_guard<std::mutex> l(m_);
        seen_.clear();
    }
    Clock::time_point wait(const std::string& key)
    {
        std::unique_lock<std::mutex> l(m_);
        Clock::time_point at{};
        cv_.wait_for(l, std::chrono::seconds(30), [&] {
            for (const auto& [k, t] : seen_) {
                if (k == key) {
                    at = t;
                    return true;
                }
            }
            return false;
        });
        return at;
    }

private:
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::mutex m_;
    std::condition_variable cv_;
    std::vector<std::pair<std::string, Clock::time_point>> seen_;
};

} // namespace

int main(int argc, char** argv)
{
    const int rounds = argc > 1 ? std::atoi(argv[1]) : 15;
    try {
        test::TestStack stack;
        test::TempDir work{"mbl-cm-bench"};
        (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json",
                                  R"({"stop_grace_ms": 500, "quota_bytes": 1073741824, "userns": {"userdb_dir": ""}})");
        if (auto st = stack.start("container-manager"); !st) {
            std::cerr << st.error().describe() << "\n";
            return 1;
        }
        const pid_t daemon = stack.pid("container-manager");
        auto idle0 = rssPss(daemon);
        test::CmClient cm;
        StateWatch watch;
        const std::string runcRoot = work.path() + "/runc-bare";
        (void)fs::makeDirs(runcRoot, 0700);
        Fd devnull{::open("/dev/null", O_RDWR | O_CLOEXEC)};
        SpawnOptions quiet;
        quiet.stdinFd = devnull.get();
        quiet.stdoutFd = devnull.get();
        quiet.stderrFd = devnull.get();

        // 1. StartApp -> running.
        auto layout = test::umociBusyboxImage(work.path(), "bench", "sleep", {"/bin/sleep", "1000"});
        auto sleepTar = test::layoutArchive(layout, "sleep", work.path() + "/sleep.tar", false);
        auto r = cm.install(sleepTar, R"({"name": "sleeper", "autostart": false, "image": "sleep"})");
        if (!r.success) {
            std::cerr << "install failed: " << r.message << "\n";
            return 1;
        }
        const std::string bundleSleep = stack.root() + "/var/lib/mbl/apps/sleeper/versions/" +
                                        cm.prop("sleeper", "Version").get<std::string>();
        // The other peer: podman, daemonless, with a storage of our own, if installed.
        std::vector<std::string> podman, podmanBase, podmanDetached;
        std::string podmanImage;
        if (test::haveTool("podman")) {
            podman = {"podman", "--root", work.path() + "/podman-root", "--runroot", work.path() + "/podman-run",
                      "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                      "--storage-driver", "overlay"};
            auto load = podman;
            for (const char* a : {"load", "-i"}) {
                load.emplace_back(a);
            }
            load.push_back(sleepTar);
            const std::string out = test::mustRun(load).out;
            const auto at = out.find("Loaded image: ");
            if (at == std::string::npos) {
                throw std::runtime_error("podman load printed no image name: " + out);
            }
            podmanImage = str::trim(out.substr(at + 14, out.find('\n', at) - at - 14));
            podmanBase = podman;
            // Our app's confinement, as podman run options.
            const std::vector<std::string> confine = {
                "--network", "none", "--read-only", "--uidmap", "0:2000000000:65536", "--gidmap",
                "0:2000000000:65536", "--cap-drop", "all", "--cap-add", "KILL,SETGID,SETUID,NET_BIND_SERVICE",
                "--security-opt", "no-new-privileges", "--ulimit", "nofile=1024:4096", "--ulimit", "nproc=1024:1024"};
            podman.insert(podman.end(), {"run", "--rm"});
            podman.insert(podman.end(), confine.begin(), confine.end());
            podman.insert(podman.end(), {podmanImage, "/bin/true"});
            if (!runQuiet(podman, quiet)) { // warm-up, untimed
                throw std::runtime_error("podman run --rm failed");
            }
            podmanDetached = podmanBase;
            podmanDetached.insert(podmanDetached.end(), {"run", "-d", "--name", "mblbench-sleep"});
            podmanDetached.insert(podmanDetached.end(), confine.begin(), confine.end());
            podmanDetached.insert(podmanDetached.end(), {podmanImage, "/bin/sleep", "1000"});
        }
        // The peer: a containerd of our own, if installed.
        std::optional<Child> containerd;
        const std::string ctrSock = work.path() + "/containerd.sock";
        const std::vector<std::string> ctr = {"ctr", "-a", ctrSock, "-n", "mblbench"};
        if (test::haveTool("containerd") && test::haveTool("ctr")) {
            (void)fs::writeFileAtomic(work.path() + "/containerd.toml",
                                      "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
            auto c = Child::spawn({"containerd", "--root", work.path() + "/containerd-root", "--state",
                                   work.path() + "/containerd-state", "--address", ctrSock, "--config",
                                   work.path() + "/containerd.toml"},
                                  quiet);
            if (!c) {
                throw std::runtime_error("cannot start containerd: " + c.error().message);
            }
            containerd = std::move(*c);
            auto versionOk = [&] {
                auto v = ctr;
                v.emplace_back("version");
                auto r = mbl::run(v);
                return r && r->status.success();
            };
            if (!test::CmClient::waitFor(versionOk)) {
                throw std::runtime_error("containerd did not answer on " + ctrSock);
            }
            auto imp = ctr;
            for (const char* a : {"images", "import", "--base-name", "docker.io/library/mblbench", "--digests",
                                  "--all-platforms"}) {
                imp.emplace_back(a);
            }
            imp.push_back(sleepTar);
            test::mustRun(imp);
        }
        std::vector<double> startOurs, startBare, startCli, startPodman, startCtr;
        const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
        for (int i = 0; i < rounds; ++i) {
            auto oursRun = [&] {
                auto t0 = Clock::now();
                cm.call("StartApp", "sleeper");
                startOurs.push_back(ms(Clock::now() - t0));
                cm.call("StopApp", "sleeper");
            };
            auto bareRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet({"runc", "--root", runcRoot, "run", "-d", "--bundle", bundleSleep, "bare-sleep"}, quiet);
                startBare.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("bare runc run -d failed");
                }
                (void)mbl::run({"runc", "--root", runcRoot, "delete", "--force", "bare-sleep"});
            };
            // The same StartApp from a CLI client: mblctl's own start-up and bus
            // connection are timed, as podman's and ctr's are.
            auto cliRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet({mblctl, "--root", stack.root(), "app", "start", "sleeper"}, quiet);
                startCli.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("mblctl app start failed");
                }
                cm.call("StopApp", "sleeper");
            };
            auto podmanRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet(podmanDetached, quiet);
                startPodman.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("podman run -d failed");
                }
                auto rm = podmanBase;
                rm.insert(rm.end(), {"rm", "-f", "-t", "0", "mblbench-sleep"});
                cleanUp(rm);
            };
            auto ctrRun = [&] {
                auto argv = ctr;
                argv.insert(argv.end(), {"run", "-d", "docker.io/library/mblbench:sleep", "mblbench-sleep", "/bin/sleep",
                                         "1000"});
                auto t0 = Clock::now();
                bool b = runQuiet(argv, quiet);
                startCtr.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("ctr run -d failed");
                }
                auto del = ctr;
                del.insert(del.end(), {"task", "delete", "--force", "mblbench-sleep"});
                cleanUp(del);
                del = ctr;
                del.insert(del.end(), {"container", "delete", "mblbench-sleep"});
                cleanUp(del);
            };
            std::vector<std::function<void()>> sides = {oursRun, bareRun, cliRun};
            if (containerd) {
                sides.push_back(ctrRun);
            }
            if (!podmanDetached.empty()) {
                sides.push_back(podmanRun);
            }
            for (std::size_t k = 0; k < sides.size(); ++k) {
                sides[(k + static_cast<std::size_t>(i)) % sides.size()]();
            }
        }

        // 2. StartApp -> exit, /bin/true.
        r = cm.install(sleepTar, R"({"name": "truth", "autostart": false, "restart": "no", "image": "sleep",
                                     "args": ["/bin/true"]})");
        if (!r.success) {
            std::cerr << "install failed: " << r.message << "\n";
            return 1;
        }
        const std::string bundleTrue = stack.root() + "/var/lib/mbl/apps/truth/versions/" +
                                       cm.prop("truth", "Version").get<std::string>();
        const std::string managerRuncRoot = stack.root() + "/run/mbl/apps/runc";
        RemovalWatch removal(managerRuncRoot);
        std::vector<double> exitOurs, removedOurs, exitBare, exitCtr, exitPodman;
        for (int i = 0; i < rounds; ++i) {
            auto oursRun = [&] {
                watch.clear();
                removal.drain();
                auto t0 = Clock::now();
                cm.call("StartApp", "truth");
                auto gone = removal.waitFor("truth");
                auto exited = watch.wait("truth=exited");
                if (gone == Clock::time_point{} || exited == Clock::time_point{}) {
                    throw std::runtime_error("the /bin/true app's container was not removed within 30 s");
                }
                removedOurs.push_back(ms(gone - t0));
                exitOurs.push_back(ms(exited - t0));
            };
            auto bareRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet({"runc", "--root", runcRoot, "run", "--bundle", bundleTrue, "bare-true"}, quiet);
                exitBare.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("bare runc run failed");
                }
            };
            auto ctrRun = [&] {
                auto argv = ctr;
                for (const char* a : {"run", "--rm", "docker.io/library/mblbench:sleep", "mblbench-true", "/bin/true"}) {
                    argv.emplace_back(a);
                }
                auto t0 = Clock::now();
                bool b = runQuiet(argv, quiet);
                exitCtr.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("ctr run --rm failed");
                }
            };
            auto podmanRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet(podman, quiet);
                exitPodman.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("podman run --rm failed");
                }
            };
            std::vector<std::function<void()>> sides = {oursRun, bareRun};
            if (containerd) {
                sides.push_back(ctrRun);
            }
            if (!podman.empty()) {
                sides.push_back(podmanRun);
            }
            for (std::size_t k = 0; k < sides.size(); ++k) {
                sides[(k + static_cast<std::size_t>(i)) % sides.size()]();
            }
        }
        std::pair<long, long> ctrIdle{0, 0};
        if (containerd) {
            ctrIdle = rssPss(containerd->pid());
            (void)containerd->terminate(std::chrono::seconds(5));
        }

        // 3. Install of a ~50 MiB image against tar + openssl dgst + tar -xzf (umoci only builds it).
        const std::string big = work.path() + "/big-bundle";
        test::mustRun({"umoci", "new", "--image", layout + ":big"});
        test::mustRun({"umoci", "unpack", "--image", layout + ":big", big});
        (void)fs::makeDirs(big + "/rootfs/bin");
        test::mustRun({"cp", "/bin/busybox", big + "/rootfs/bin/"});
        for (int i = 0; i < 50; ++i) {
            test::mustRun({"dd", "if=/dev/urandom", "of=" + big + "/rootfs/blob" + std::to_string(i), "bs=1M", "count=1",
                           "status=none"});
        }
        test::mustRun({"umoci", "repack", "--image", layout + ":big", big});
        test::mustRun({"umoci", "config", "--image", layout + ":big", "--config.cmd=/bin/busybox"});
        (void)fs::removeTree(big);
        auto bigTar = test::layoutArchive(layout, "big", work.path() + "/big.tar", false);
        // The bare job: unpack the archive, check the image's blobs against their
        // digests with OpenSSL, untar the layer (one shell, `set -e`).
        std::string bareJob = "set -e; d=" + work.path() + "/bare-install; rm -rf \"$d\"; mkdir -p \"$d/rootfs\"; tar -xf " +
                              bigTar + " -C \"$d\"; b=\"$d/blobs/sha256\"; ";
        const auto blobs = imageBlobs(layout, "big");
        for (const auto& digest : blobs) {
            bareJob += "test \"$(openssl dgst -sha256 -r \"$b/" + digest + "\" | cut -c1-64)\" = " + digest + "; ";
        }
        bareJob += "tar -xzf \"$b/" + blobs.back() + "\" -C \"$d/rootfs\"";
        std::vector<double> instOurs, instBare;
        for (int i = 0; i < std::max(3, rounds / 3); ++i) {
            auto oursRun = [&] {
                auto t0 = Clock::now();
                auto res = cm.install(bigTar, R"({"name": "big", "autostart": false, "image": "big", "version": "v)" +
                                                  std::to_string(i) + "\"}");
                instOurs.push_back(ms(Clock::now() - t0));
                if (!res.success) {
                    throw std::runtime_error("install failed: " + res.message);
                }
            };
            auto bareRun = [&] {
                auto t0 = Clock::now();
                bool b = runQuiet({"sh", "-c", bareJob}, quiet);
                instBare.push_back(ms(Clock::now() - t0));
                if (!b) {
                    throw std::runtime_error("bare install (tar, openssl dgst, tar -xzf) failed");
                }
                (void)fs::removeTree(work.path() + "/bare-install");
            };
            if (i % 2 == 0) {
                oursRun();
                bareRun();
            } else {
                bareRun();
                oursRun();
            }
        }
        cm.remove("big", true);

        // 4. Idle memory with 20 installed apps.
        for (int i = 0; i < 20; ++i) {
            auto res = cm.install(sleepTar, R"({"name": "idle)" + std::to_string(i) +
                                                R"(", "autostart": false, "image": "sleep"})");
            if (!res.success) {
                std::cerr << "install failed: " << res.message << "\n";
                return 1;
            }
        }
        cm.remove("sleeper", true);
        cm.remove("truth", true);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        auto idle20 = rssPss(daemon);

        std::printf("container manager benchmark, %d rounds (install %d), order alternating\n", rounds,
                    std::max(3, rounds / 3));
        report("StartApp -> running (sleep)", startOurs, startBare, "runc run -d");
        report("CLI: mblctl app start", startCli, startBare, "runc run -d", "mblctl");
        if (!startCtr.empty()) {
            report("CLI: ctr run -d (sleep)", startCtr, startBare, "runc run -d", "ctr run -d");
            report("CLI: mblctl vs ctr run -d", startCli, startCtr, "ctr run -d", "mblctl");
        }
        if (!startPodman.empty()) {
            report("CLI: podman run -d (sleep)", startPodman, startBare, "runc run -d", "podman run -d");
            report("CLI: mblctl vs podman run -d", startCli, startPodman, "podman run -d", "mblctl");
        }
        report("StartApp -> removed (/bin/true)", removedOurs, exitBare, "runc run");
        std::printf("  (for reference, StartApp -> \"exited\" signal: %.2f ms; the delete comes after it)\n",
                    median(exitOurs));
        if (!exitCtr.empty()) {
            report("peer: ctr run --rm (/bin/true)", exitCtr, exitBare, "runc run", "ctr run --rm");
            report("StartApp -> removed vs ctr", removedOurs, exitCtr, "ctr run --rm");
            std::printf("  containerd idle after the rounds: RSS %ld kB PSS %ld kB (no shim left)\n", ctrIdle.first,
                        ctrIdle.second);
        } else {
            std::printf("  (containerd/ctr not installed: no peer side)\n");
        }
        if (!exitPodman.empty()) {
            report("peer: podman run --rm (/bin/true)", exitPodman, exitBare, "runc run", "podman run");
            report("StartApp -> removed vs podman", removedOurs, exitPodman, "podman run --rm");
            std::printf("  podman %s: no daemon, nothing idle after the rounds\n", podmanImage.c_str());
        } else {
            std::printf("  (podman not installed: no podman side)\n");
        }
        report("install ~50 MiB image", instOurs, instBare, "tar+openssl dgst+tar -xzf");
        std::printf("idle daemon memory: 0 apps RSS %ld kB PSS %ld kB; 20 apps RSS %ld kB PSS %ld kB\n", idle0.first,
                    idle0.second, idle20.first, idle20.second);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "bench failed: " << e.what() << "\n";
        return 1;
    }
}
