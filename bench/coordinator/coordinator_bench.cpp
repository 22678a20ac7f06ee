// SPDX-License-Identifier: Apache-2.0
// End-to-end deployment benchmark (issue 7). Each round starts a fresh world
// (tests/e2e/world.h: five daemons, DDI server behind nginx with mutual TLS, real
// runc) and deploys a ~64 MiB bundle (rootfs + one OCI app) from the server:
//   ours = DeploymentRequested (poll) -> reboot requested
//        + daemons restarted after the simulated reboot -> app running on slot b
//   (the simulated reboot itself is excluded);
//   bare = curl (same mTLS, same nginx) of the bundle + sha256sum of it + dd
//          conv=fsync of the rootfs image into a slot file + bare `runc run -d` of the
//          app's runtime bundle (unpacked with umoci).
// Also the summed PSS of the five daemons idle and at the peak of a deployment.
// Usage: coordinator-bench [rounds]   (run as root, release build)

#include "world.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <algorithm>
#include <fcntl.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

using namespace mbl;
using namespace mbl::test;
using namespace mbl::test::e2e;
using Clock = std::chrono::steady_clock;

namespace {

double ms(Clock::duration d)
{
    return std::chrono::duration<double, std::milli>(d).count();
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// PSS of a process in KiB (smaps_rollup).
long pssKiB(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string key;
    long value = 0;
    while (in >> key) {
        if (key == "Pss:") {
            in >> value;
            return value;
        }
        in.ignore(1 << 12, '\n');
    }
    return 0;
}

long summedPss(World& w)
{
    long sum = 0;
    for (const char* label : {"device-identity", "update", "container-manager", "cloud-client", "coordinator"}) {
        if (w.stack.running(label)) {
            sum += pssKiB(w.stack.pid(label));
        }
    }
    return sum;
}

bool appRunning(World& w)
{
    for (const auto& a : w.apps()) {
        if (a.name == "hello" && a.state == "running") {
            return true;
        }
    }
    return false;
}

// A detached `runc run -d` leaves the container holding its stdio: give it /dev/null
// (as a supervisor would), or the wait for EOF on a captured pipe never ends.
Clock::duration timedDetached(const std::vector<std::string>& argv)
{
    Fd null{::open("/dev/null", O_RDWR | O_CLOEXEC)};
    SpawnOptions so;
    so.stdinFd = null.get();
    so.stdoutFd = null.get();
    so.stderrFd = null.get();
    const auto t = Clock::now();
    auto c = Child::spawn(argv, so);
    if (!c) {
        throw std::runtime_error("cannot run " + argv.front() + ": " + c.error().message);
    }
    const ExitStatus st = c->wait();
    if (!st.success()) {
        throw std::runtime_error(argv.front() + " failed with status " + std::to_string(st.code));
    }
    return Clock::now() - t;
}

Clock::duration timed(const std::vector<std::string>& argv)
{
    const auto t = Clock::now();
    auto r = mbl::run(argv);
    if (!r || !r->status.success()) {
        throw std::runtime_error("bare step failed: " + argv.front() + ": " + (r ? r->err : r.error().message));
    }
    return Clock::now() - t;
}

struct Round {
    double ours = 0, install = 0, afterBoot = 0, bare = 0, curl = 0, sha = 0, dd = 0, runc = 0;
    long idlePss = 0, peakPss = 0;
};

Round oneRound(int n)
{
    WorldOptions o;
    o.slotSize = 72u << 20;
    o.coordinator = {{"health_grace_ms", 500}};
    World w(o);
    w.startAll();
    const auto app = w.appImage("hello", "1.0.0", {"sh", "-c", "while true; do sleep 5; done"});
    const auto rootfs = w.rootfsImage("2.0.0", 63u << 20);
    const auto bundle = w.bundle({"2.0.0", 1, rootfs, {{"hello@1.0.0", app}}, ""}, "fw.mblb");
    Round r;
    std::this_thread::sleep_for(std::chrono::seconds(2)); // settle: idle
    r.idlePss = summedPss(w);
    r.peakPss = r.idlePss;

    const auto action = w.deploy(bundle);
    const auto t0 = Clock::now();
    w.pollNow();
    auto sample = [&] { r.peakPss = std::max(r.peakPss, summedPss(w)); };
    while (!w.rebootRequested()) {
        sample();
        if (Clock::now() - t0 > std::chrono::minutes(5)) {
            throw std::runtime_error("no reboot request: " + w.stack.log("coordinator"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const auto t1 = Clock::now();
    w.simulateReboot();
    const auto t2 = Clock::now();
    while (!(w.bootedSlot() == "b" && appRunning(w))) {
        sample();
        if (Clock::now() - t2 > std::chrono::minutes(2)) {
            throw std::runtime_error("the app did not run after the reboot: " + w.stack.log("coordinator"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const auto t3 = Clock::now();
    r.install = ms(t1 - t0);
    r.afterBoot = ms(t3 - t2);
    r.ours = r.install + r.afterBoot;
    w.runUntil([&] { return w.actionStatus(action) == "FINISHED"; }, std::chrono::seconds(60));

    // The bare steps, same machine, same files, same server.
    const std::string d = w.work.path();
    const auto art = w.cloud.admin("POST", "/admin/artifacts", {{"name", "bare.mblb"}, {"path", bundle}});
    const std::string url = w.cloud.serverUrl() + "/DEFAULT/controller/v1/" + w.deviceId + "/softwaremodules/" +
                            std::to_string(art["smid"].get<int>()) + "/artifacts/bare.mblb";
    const std::string pki = w.cloud.dir() + "/pki";
    r.curl = ms(timed({"curl", "-sSf", "--cacert", pki + "/test-ca.pem", "--cert", pki + "/device-" + w.deviceId + ".pem",
                       "--key", pki + "/device-" + w.deviceId + ".key", "-o", d + "/bare.mblb", url}));
    r.sha = ms(timed({"sha256sum", d + "/bare.mblb"}));
    update::writeFile(d + "/bare-slot.img", "");
    r.dd = ms(timed({"dd", "if=" + rootfs, "of=" + d + "/bare-slot.img", "bs=1M", "conv=fsync,notrunc", "status=none"}));
    // The app's runtime bundle, unpacked once (not timed), then bare runc run -d.
    const std::string layout = d + "/bare-layout";
    timed({"mkdir", "-p", layout});
    timed({"tar", "-C", layout, "-xf", app});
    timed({"umoci", "unpack", "--image", layout + ":hello-1.0.0", d + "/bare-bundle"});
    // umoci's runtime config asks for a terminal; a detached run without a console socket cannot have one.
    timed({"sh", "-c", "sed -i 's/\"terminal\": *true/\"terminal\": false/' '" + d + "/bare-bundle/config.json'"});
    const std::string id = "bench-bare-" + std::to_string(n);
    r.runc = ms(timedDetached({"runc", "--root", d + "/bare-runc", "run", "-d", "-b", d + "/bare-bundle", id}));
    (void)mbl::run({"runc", "--root", d + "/bare-runc", "delete", "--force", id});
    r.bare = r.curl + r.sha + r.dd + r.runc;
    return r;
}

} // namespace

int main(int argc, char** argv)
{
    const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
    std::vector<Round> all;
    try {
        for (int i = 0; i < rounds; ++i) {
            all.push_back(oneRound(i));
            const auto& r = all.back();
            std::printf("round %d: ours %.0f ms (install %.0f + after boot %.0f) | bare %.0f ms (curl %.0f + sha256sum %.0f "
                        "+ dd %.0f + runc run %.0f) | PSS idle %.1f MiB, peak %.1f MiB\n",
                        i + 1, r.ours, r.install, r.afterBoot, r.bare, r.curl, r.sha, r.dd, r.runc, r.idlePss / 1024.0,
                        r.peakPss / 1024.0);
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::cerr << "coordinator-bench: " << e.what() << "\n";
        return 1;
    }
    auto col = [&](double Round::*f) {
        std::vector<double> v;
        for (const auto& r : all) {
            v.push_back(r.*f);
        }
        return median(v);
    };
    std::vector<double> idle, peak;
    for (const auto& r : all) {
        idle.push_back(static_cast<double>(r.idlePss) / 1024.0);
        peak.push_back(static_cast<double>(r.peakPss) / 1024.0);
    }
    std::printf("\nmedians over %d rounds (64 MiB bundle: rootfs 63 MiB + one OCI app):\n", rounds);
    std::printf("  ours: %.0f ms (DeploymentRequested -> reboot request %.0f ms; restart -> app running %.0f ms)\n",
                col(&Round::ours), col(&Round::install), col(&Round::afterBoot));
    std::printf("  bare: %.0f ms (curl %.0f + sha256sum %.0f + dd %.0f + runc run -d %.0f)\n", col(&Round::bare),
                col(&Round::curl), col(&Round::sha), col(&Round::dd), col(&Round::runc));
    std::printf("  ratio ours/bare: %.2f\n", col(&Round::ours) / col(&Round::bare));
    std::printf("  summed PSS of the five daemons: idle %.1f MiB, peak during a deployment %.1f MiB\n", median(idle),
                median(peak));
    return 0;
}
