// SPDX-License-Identifier: Apache-2.0
// End-to-end deployment benchmark (issue 7). Each round starts a fresh world
// (tests/e2e/world.h: five daemons, DDI server behind nginx with mutual TLS, real
// runc) and deploys a ~64 MiB bundle (rootfs + one OCI app) from the server.
// Both sides run with the world up and its daemons idle; which side goes first
// alternates every round (odd rounds: bare first).
//   ours = DeploymentRequested (poll) -> reboot requested
//        + daemons restarted after the simulated reboot -> app running on slot b
//   (the simulated reboot itself is excluded). It downloads the bundle over mTLS,
//   checks its hash and CMS signature, writes the rootfs into slot b with fsync,
//   checks the app image's digests, unpacks it, generates its runtime config,
//   records state crash-safely, and starts the app with runc.
//   bare = curl (same mTLS, same nginx) of the bundle into a file
//        + `openssl dgst -sha256` of it, compared with the server's digest
//        + dd bs=1M conv=fsync,notrunc of the rootfs image into a preallocated
//          file of the slot's size (written and synced before, as slot b is)
//        + the app: tar -xf of its OCI archive, `openssl dgst -sha256` of its
//          manifest, config and layer compared with their names, tar -xzf of the
//          layer into the runtime bundle's rootfs
//        + `runc run -d` of that bundle (config.json made by umoci, untimed).
//   Bare does not verify a signature, split the bundle, record any state or
//   restart anything.
// Printed: per round, medians, median/median and the paired per-round ratios;
// the summed PSS of the five daemons idle and at the peak of a deployment.
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
#include <nlohmann/json.hpp>
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
    double ours = 0, install = 0, afterBoot = 0, bare = 0, curl = 0, sha = 0, dd = 0, app = 0, runc = 0;
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
    const std::string d = w.work.path();

    // Bare side, prepared untimed: the artifact's URL, the app's blobs and a
    // runtime config from umoci, the slot-sized target written and synced.
    const auto art = w.cloud.admin("POST", "/admin/artifacts", {{"name", "bare.mblb"}, {"path", bundle}});
    // curl fetches it outside any action (hawkBit's skip-artifact-access-check tenant option).
    w.cloud.admin("POST", "/admin/config", {{"skip_artifact_access_check", true}});
    const std::string url = w.cloud.serverUrl() + "/DEFAULT/controller/v1/" + w.deviceId + "/softwaremodules/" +
                            std::to_string(art["smid"].get<int>()) + "/artifacts/bare.mblb";
    const std::string pki = w.cloud.dir() + "/pki";
    const std::string scratch = d + "/bare-scratch";
    timed({"mkdir", "-p", scratch});
    timed({"tar", "-C", scratch, "-xf", app});
    timed({"umoci", "unpack", "--image", scratch + ":hello-1.0.0", d + "/umoci-bundle"});
    const std::string bareBundle = d + "/bare-bundle";
    timed({"mkdir", "-p", bareBundle});
    timed({"cp", d + "/umoci-bundle/config.json", bareBundle + "/config.json"});
    // umoci's runtime config asks for a terminal; a detached run without a console socket cannot have one.
    timed({"sh", "-c", "sed -i 's/\"terminal\": *true/\"terminal\": false/' '" + bareBundle + "/config.json'"});
    std::vector<std::string> blobs;
    {
        auto index = nlohmann::json::parse(*fs::readFile(scratch + "/index.json"));
        blobs.push_back(index["manifests"][0]["digest"].get<std::string>().substr(7));
        auto manifest = nlohmann::json::parse(*fs::readFile(scratch + "/blobs/sha256/" + blobs[0]));
        blobs.push_back(manifest["config"]["digest"].get<std::string>().substr(7));
        for (const auto& l : manifest["layers"]) {
            blobs.push_back(l["digest"].get<std::string>().substr(7));
        }
    }
    std::string appJob = "set -e; l=" + d + "/bare-layout; rm -rf \"$l\" " + bareBundle + "/rootfs; mkdir -p \"$l\" " +
                         bareBundle + "/rootfs; tar -xf " + app + " -C \"$l\"; b=\"$l/blobs/sha256\"; ";
    for (const auto& digest : blobs) {
        appJob += "test \"$(openssl dgst -sha256 -r \"$b/" + digest + "\" | cut -c1-64)\" = " + digest + "; ";
    }
    for (std::size_t i = 2; i < blobs.size(); ++i) {
        appJob += "tar -xzf \"$b/" + blobs[i] + "\" -C " + bareBundle + "/rootfs; ";
    }
    const std::string bareSlot = d + "/bare-slot.img";
    update::writeFile(bareSlot, std::string(o.slotSize, '\0'));
    timed({"sync", bareSlot, w.device->slotB});

    auto bareSide = [&] {
        r.curl = ms(timed({"curl", "-sSf", "--cacert", pki + "/test-ca.pem", "--cert",
                           pki + "/device-" + w.deviceId + ".pem", "--key", pki + "/device-" + w.deviceId + ".key",
                           "-o", d + "/bare.mblb", url}));
        const auto t = Clock::now();
        auto sum = mbl::run({"openssl", "dgst", "-sha256", "-r", d + "/bare.mblb"});
        r.sha = ms(Clock::now() - t);
        if (!sum || !sum->status.success() || sum->out.substr(0, 64) != art["sha256"].get<std::string>()) {
            throw std::runtime_error("openssl dgst of the downloaded bundle failed or differs from the server's digest");
        }
        r.dd = ms(timed({"dd", "if=" + rootfs, "of=" + bareSlot, "bs=1M", "conv=fsync,notrunc", "status=none"}));
        r.app = ms(timed({"sh", "-c", appJob}));
        const std::string id = "bench-bare-" + std::to_string(n);
        r.runc = ms(timedDetached({"runc", "--root", d + "/bare-runc", "run", "-d", "-b", bareBundle, id}));
        (void)mbl::run({"runc", "--root", d + "/bare-runc", "delete", "--force", id});
    };

    if (n % 2 == 1) {
        // The server serves artifacts to targets it knows: wait for the device's first poll.
        if (!w.runUntil([&] { return w.cloud.admin("GET", "/admin/state")["targets"].contains(w.deviceId); },
                        std::chrono::seconds(60))) {
            throw std::runtime_error("the device never polled the server");
        }
        bareSide();
    }
    std::this_thread::sleep_for(std::chrono::seconds(2)); // settle: idle (not timed)
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

    if (n % 2 == 0) {
        bareSide();
    }
    r.bare = r.curl + r.sha + r.dd + r.app + r.runc;
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
            std::printf("round %d (%s first): ours %.0f ms (install %.0f + after boot %.0f) | bare %.0f ms (curl %.0f + "
                        "openssl dgst %.0f + dd %.0f + app digests+untar %.0f + runc run %.0f) | ratio %.2f | PSS idle "
                        "%.1f MiB, peak %.1f MiB\n",
                        i + 1, i % 2 ? "bare" : "ours", r.ours, r.install, r.afterBoot, r.bare, r.curl, r.sha, r.dd,
                        r.app, r.runc, r.ours / r.bare, r.idlePss / 1024.0, r.peakPss / 1024.0);
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
    std::printf("  bare: %.0f ms (curl %.0f + openssl dgst %.0f + dd %.0f + app digests+untar %.0f + runc run -d %.0f)\n",
                col(&Round::bare), col(&Round::curl), col(&Round::sha), col(&Round::dd), col(&Round::app),
                col(&Round::runc));
    std::vector<double> ratios;
    for (const auto& r : all) {
        ratios.push_back(r.ours / r.bare);
    }
    const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
    std::printf("  ours/bare: median/median %.2f, paired per-round ratios median %.2f (%.2f-%.2f)\n",
                col(&Round::ours) / col(&Round::bare), median(ratios), *lo, *hi);
    std::printf("  summed PSS of the five daemons: idle %.1f MiB, peak during a deployment %.1f MiB\n", median(idle),
                median(peak));
    return 0;
}
