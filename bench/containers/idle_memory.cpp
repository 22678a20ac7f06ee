// SPDX-License-Identifier: Apache-2.0
// Idle memory of the container manager and of its per-app shims (no peer: a
// footprint, not a race). Figures are Rss and Pss from /proc/PID/smaps (summed),
// in kB; Pss charges each shared page to its sharers, so the shims' sum is what
// they cost together.
//  1. the manager, started on the test stack's private bus, with no app;
//  2. the manager with N apps installed and running (`sleep`, busybox image
//     made by umoci; the default hardening, a user namespace each), each
//     sampled once the app's State is "running" and the manager is idle again;
//  3. each app's shim (mbl-container-shim, the parent of its container's init:
//     read from the manager's shim record), and the one spare shim waiting for
//     the next start, if any.
// Each figure is the median of `samples` readings taken one after another.
//   bench/containers/bench-containers-idle [APPS] [SAMPLES]   (root; release build dir)

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"
#include "manager_memory.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cstdio>
#include <dirent.h>
#include <iostream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace mbl;

namespace {

struct Mem {
    long rss = 0;
    long pss = 0;
};

// Median over `samples` readings of the sum over `pids`.
Mem sampled(const std::vector<pid_t>& pids, int samples)
{
    std::vector<long> rss, pss;
    for (int i = 0; i < samples; ++i) {
        Mem sum;
        for (pid_t p : pids) {
            const bench::ProcMem m = bench::procMem(p);
            sum.rss += m.rss;
            sum.pss += m.pss;
        }
        rss.push_back(sum.rss);
        pss.push_back(sum.pss);
    }
    return {bench::median(rss), bench::median(pss)};
}

std::string exeName(pid_t pid)
{
    char buf[4096] = {};
    const ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf - 1);
    const std::string exe = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
    return exe.substr(exe.rfind('/') + 1);
}

pid_t parentOf(pid_t pid)
{
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/status");
    for (const auto& line : str::split(text ? *text : "", '\n')) {
        if (str::startsWith(line, "PPid:")) {
            return static_cast<pid_t>(std::atol(line.c_str() + 5));
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv)
{
    const int apps = argc > 1 ? std::atoi(argv[1]) : 20;
    const int samples = argc > 2 ? std::atoi(argv[2]) : 5;
    try {
        test::TestStack stack;
        test::TempDir work{"mbl-cm-idle"};
        const pid_t daemon = bench::startManagerAlone(stack);
        test::CmClient cm;
        // Idle: the manager answers a call (its start-up work is done).
        (void)cm.list();
        const Mem idle0 = sampled({daemon}, samples);

        auto layout = test::umociBusyboxImage(work.path(), "idle", "sleep", {"/bin/sleep", "100000"});
        const std::string archive = test::layoutArchive(layout, "sleep", work.path() + "/sleep.tar", false);
        for (int i = 0; i < apps; ++i) {
            const std::string name = "idle" + std::to_string(i);
            auto r = cm.install(archive, R"({"name": ")" + name + R"(", "image": "sleep"})");
            if (!r.success) {
                std::cerr << "install of " << name << " failed: " << r.message << "\n";
                return 1;
            }
            if (!cm.waitState(name, "running", std::chrono::seconds(60))) {
                std::cerr << name << " did not reach running: " << cm.state(name) << "\n";
                return 1;
            }
        }
        (void)cm.list();
        const Mem idleN = sampled({daemon}, samples);

        // The shims: each app's from its record ("<shim pid> <init pid>"), and
        // any other shim child of the manager (the spare one).
        std::vector<pid_t> appShims, spare;
        const std::string shimDir = stack.root() + "/run/mbl/apps/shim";
        for (int i = 0; i < apps; ++i) {
            auto rec = fs::readFile(shimDir + "/idle" + std::to_string(i) + ".shim");
            const pid_t shim = rec ? static_cast<pid_t>(std::atol(rec->c_str())) : 0;
            if (shim > 0 && exeName(shim) == "mbl-container-shim") {
                appShims.push_back(shim);
            }
        }
        if (DIR* d = ::opendir("/proc")) {
            while (struct dirent* e = ::readdir(d)) {
                const pid_t p = static_cast<pid_t>(std::atol(e->d_name));
                if (p > 0 && parentOf(p) == daemon && exeName(p) == "mbl-container-shim" &&
                    std::find(appShims.begin(), appShims.end(), p) == appShims.end()) {
                    spare.push_back(p);
                }
            }
            ::closedir(d);
        }
        const Mem shims = sampled(appShims, samples);
        std::vector<long> each;
        for (pid_t p : appShims) {
            each.push_back(bench::procMem(p).pss);
        }
        const Mem spareMem = sampled(spare, samples);

        std::printf("container manager idle memory (kB, median of %d readings of smaps)\n", samples);
        std::printf("  manager, 0 apps:                 RSS %6ld  PSS %6ld\n", idle0.rss, idle0.pss);
        std::printf("  manager, %2d apps running:        RSS %6ld  PSS %6ld  (PSS +%ld, %.1f per app)\n", apps,
                    idleN.rss, idleN.pss, idleN.pss - idle0.pss,
                    apps > 0 ? static_cast<double>(idleN.pss - idle0.pss) / apps : 0.0);
        std::printf("  shims, %2zu found, together:       RSS %6ld  PSS %6ld  (PSS per shim: median %ld, %.1f mean)\n",
                    appShims.size(), shims.rss, shims.pss, bench::median(each),
                    appShims.empty() ? 0.0 : static_cast<double>(shims.pss) / static_cast<double>(appShims.size()));
        std::printf("  spare shim(s) waiting, %zu:        RSS %6ld  PSS %6ld\n", spare.size(), spareMem.rss,
                    spareMem.pss);
        std::printf("  manager + shims, %2d apps:        PSS %6ld\n", apps, idleN.pss + shims.pss + spareMem.pss);
        for (int i = 0; i < apps; ++i) {
            cm.remove("idle" + std::to_string(i), true);
        }
        if (static_cast<int>(appShims.size()) != apps) {
            std::cerr << "expected " << apps << " shims, found " << appShims.size() << "\n";
            return 1;
        }
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "bench failed: " << e.what() << "\n";
        return 1;
    }
}
