// SPDX-License-Identifier: Apache-2.0
// Container manager benchmark, against the bare tools in the same run:
//  1. StartApp -> process running, against `runc run -d` of the same bundle and
//     the same generated config.json (seccomp included);
//  2. StartApp -> exit observed, for a /bin/true app, against `runc run`;
//  3. install of a ~50 MiB image (InstallApp -> InstallCompleted) against
//     `umoci unpack` of the same image;
//  4. idle RSS/PSS of the daemon with 0 and with 20 installed apps.
// Prints medians and ratios. Needs root, runc, umoci, busybox-static.
//   bench/containers/bench-containers [ROUNDS]      (run from the build dir)

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

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

void report(const std::string& what, const std::vector<double>& ours, const std::vector<double>& bare,
            const std::string& bareName)
{
    const double a = median(ours), b = median(bare);
    std::printf("%-34s manager %8.2f ms   %-16s %8.2f ms   ratio %.3f (overhead %+.1f%%)\n", what.c_str(), a,
                bareName.c_str(), b, b > 0 ? a / b : 0, b > 0 ? (a / b - 1) * 100 : 0);
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
                                  R"({"stop_grace_ms": 500, "quota_bytes": 1073741824})");
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
        std::vector<double> startOurs, startBare;
        for (int i = 0; i < rounds; ++i) {
            auto t0 = Clock::now();
            cm.call("StartApp", "sleeper");
            startOurs.push_back(ms(Clock::now() - t0));
            cm.call("StopApp", "sleeper");
            t0 = Clock::now();
            bool b = runQuiet({"runc", "--root", runcRoot, "run", "-d", "--bundle", bundleSleep, "bare-sleep"}, quiet);
            startBare.push_back(ms(Clock::now() - t0));
            if (!b) {
                std::cerr << "bare runc run -d failed\n";
                return 1;
            }
            (void)mbl::run({"runc", "--root", runcRoot, "delete", "--force", "bare-sleep"});
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
        std::vector<double> exitOurs, exitBare;
        for (int i = 0; i < rounds; ++i) {
            watch.clear();
            auto t0 = Clock::now();
            cm.call("StartApp", "truth");
            auto t1 = watch.wait("truth=exited");
            exitOurs.push_back(ms(t1 - t0));
            test::CmClient::waitFor([&] { return cm.prop("truth", "Pid").get<uint32_t>() == 0; });
            std::this_thread::sleep_for(std::chrono::milliseconds(50)); // the runtime's delete
            t0 = Clock::now();
            bool b = runQuiet({"runc", "--root", runcRoot, "run", "--bundle", bundleTrue, "bare-true"}, quiet);
            exitBare.push_back(ms(Clock::now() - t0));
            if (!b) {
                std::cerr << "bare runc run failed\n";
                return 1;
            }
        }

        // 3. Install of a ~50 MiB image against umoci unpack.
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
        std::vector<double> instOurs, instBare;
        for (int i = 0; i < std::max(3, rounds / 3); ++i) {
            auto t0 = Clock::now();
            auto res = cm.install(bigTar, R"({"name": "big", "autostart": false, "image": "big", "version": "v)" +
                                              std::to_string(i) + "\"}");
            instOurs.push_back(ms(Clock::now() - t0));
            if (!res.success) {
                std::cerr << "install failed: " << res.message << "\n";
                return 1;
            }
            const std::string out = work.path() + "/unpacked";
            t0 = Clock::now();
            test::mustRun({"umoci", "unpack", "--image", layout + ":big", out});
            instBare.push_back(ms(Clock::now() - t0));
            (void)fs::removeTree(out);
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

        std::printf("container manager benchmark, %d rounds, medians\n", rounds);
        report("StartApp -> running (sleep)", startOurs, startBare, "runc run -d");
        report("StartApp -> exited (/bin/true)", exitOurs, exitBare, "runc run");
        report("install ~50 MiB image", instOurs, instBare, "umoci unpack");
        std::printf("idle daemon memory: 0 apps RSS %ld kB PSS %ld kB; 20 apps RSS %ld kB PSS %ld kB\n", idle0.first,
                    idle0.second, idle20.first, idle20.second);
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "bench failed: " << e.what() << "\n";
        return 1;
    }
}
