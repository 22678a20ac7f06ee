// SPDX-License-Identifier: Apache-2.0
// Memory of the container manager across many starts and installs (issue 18:
// "RSS flat across 1,000 starts and 100 installs"). The manager is started on
// the test stack's private bus; figures are read from /proc/PID/smaps, in kB:
// RSS, PSS, USS (Private_Clean + Private_Dirty) and the resident size of the
// [heap] mapping (the main arena: the manager runs with one malloc arena).
//  - warm-up: the three apps below are installed, one start of each is made and
//    one install of each kind (only of the phases asked for); then the first sample;
//  - STARTS StartApp→StopApp cycles, alternating two apps: "sleeper" (`sleep`,
//    stopped by StopApp: SIGTERM, grace, SIGKILL, runc delete) and, every other cycle, "truth"
//    (`/bin/true`, restart "no": it exits by itself, the manager reaps it through
//    its shim and deletes the container; the cycle waits for "exited");
//  - INSTALLS installs, alternating two kinds: a new version ("v<i>") of the
//    running app "upd" (the update path: stop, switch, start, health grace,
//    old version deleted) and an install of a new app "fresh" followed by its
//    RemoveApp(name, true) (what a removal of an app does);
// sampling every 10 % of each phase, each sample the median of 3 readings once
// the manager answers a call (it is idle). Prints the series and, per figure,
// the growth (last − first). No figure is asserted.
// Needs root, runc, umoci and busybox-static (only to build the test image).
// The manager inherits this process's environment: its unit sets
// GLIBC_TUNABLES=glibc.malloc.tcache_count=0 (no per-thread malloc cache), so
// set it here too to measure the daemon as the device runs it (the value used
// is printed). Run as root from a release build dir:
//   cd build-rel && GLIBC_TUNABLES=glibc.malloc.tcache_count=0 MBL_BUILD_ROOT=$PWD MBL_SOURCE_ROOT=..
//     MBL_POLICY_DIR=$PWD/dbus-policy ./bench/containers/bench-containers-churn [STARTS] [INSTALLS]

#include "cm_client.h"
#include "harness.h"
#include "image_tools.h"
#include "manager_memory.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

using namespace mbl;

namespace {

struct Sample {
    std::string label;
    bench::ProcMem mem;
};

} // namespace

int main(int argc, char** argv)
{
    const int starts = argc > 1 ? std::atoi(argv[1]) : 1000;
    const int installs = argc > 2 ? std::atoi(argv[2]) : 100;
    try {
        test::TestStack stack;
        test::TempDir work{"mbl-cm-churn"};
        const pid_t daemon = bench::startManagerAlone(stack);
        test::CmClient cm;
        std::vector<Sample> series;
        auto sample = [&](const std::string& label) {
            (void)cm.list(); // the manager answers: its queued work is done
            std::vector<long> rss, pss, uss, heap;
            for (int i = 0; i < 3; ++i) {
                const bench::ProcMem m = bench::procMem(daemon);
                rss.push_back(m.rss);
                pss.push_back(m.pss);
                uss.push_back(m.uss);
                heap.push_back(m.heap);
            }
            series.push_back({label, {bench::median(rss), bench::median(pss), bench::median(uss), bench::median(heap)}});
            const bench::ProcMem& m = series.back().mem;
            std::printf("  %-22s RSS %6ld  PSS %6ld  USS %6ld  heap %6ld\n", label.c_str(), m.rss, m.pss, m.uss,
                        m.heap);
            std::fflush(stdout);
        };
        const char* tunables = std::getenv("GLIBC_TUNABLES");
        std::printf("container manager memory across %d starts and %d installs (kB, smaps, median of 3 readings;"
                    " GLIBC_TUNABLES=%s)\n",
                    starts, installs, tunables != nullptr ? tunables : "(unset)");
        sample("fresh");

        auto layout = test::umociBusyboxImage(work.path(), "churn", "sleep", {"/bin/sleep", "100000"});
        const std::string archive = test::layoutArchive(layout, "sleep", work.path() + "/sleep.tar", false);
        auto mustInstall = [&](const std::string& options) {
            auto r = cm.install(archive, options);
            if (!r.success) {
                throw std::runtime_error("install " + options + " failed: " + r.message);
            }
        };
        mustInstall(R"({"name": "sleeper", "autostart": false, "image": "sleep"})");
        mustInstall(R"({"name": "truth", "autostart": false, "restart": "no", "image": "sleep", "args": ["/bin/true"]})");
        // The update path waits for the health grace: keep it short.
        const std::string updOptions = R"({"name": "upd", "image": "sleep", "health": {"grace_ms": 100}, "version": "v)";
        mustInstall(updOptions + "0\"}");
        if (!cm.waitState("upd", "running", std::chrono::seconds(60))) {
            throw std::runtime_error("upd did not reach running: " + cm.state("upd"));
        }

        auto startStop = [&](int i) {
            if (i % 2 == 0) {
                cm.call("StartApp", "sleeper");
                cm.call("StopApp", "sleeper");
            } else {
                // It exits by itself: wait for this run's "exited" signal (the
                // state was "exited" already, after the previous run).
                const std::size_t seen = cm.stateChanges().size();
                cm.call("StartApp", "truth");
                const bool exited = test::CmClient::waitFor([&] {
                    const auto changes = cm.stateChanges();
                    return std::find(changes.begin() + static_cast<std::ptrdiff_t>(seen), changes.end(),
                                     "truth=exited") != changes.end();
                });
                if (!exited) {
                    throw std::runtime_error("truth did not exit: " + cm.state("truth"));
                }
            }
        };
        int version = 0;
        auto installOne = [&](int i) {
            if (i % 2 == 0) {
                mustInstall(updOptions + std::to_string(++version) + "\"}");
            } else {
                mustInstall(R"({"name": "fresh", "image": "sleep", "autostart": false})");
                cm.remove("fresh", true);
            }
        };
        // Warm-up: each path measured once (caches, the spare shim, first-use allocations).
        if (starts > 0) {
            startStop(0);
            startStop(1);
        }
        if (installs > 0) {
            installOne(0);
            installOne(1);
        }
        sample("warm");

        const int startStep = std::max(1, starts / 10);
        for (int i = 0; i < starts; ++i) {
            startStop(i);
            if ((i + 1) % startStep == 0 || i + 1 == starts) {
                sample("starts " + std::to_string(i + 1));
            }
        }
        const int installStep = std::max(1, installs / 10);
        for (int i = 0; i < installs; ++i) {
            installOne(i);
            if ((i + 1) % installStep == 0 || i + 1 == installs) {
                sample("installs " + std::to_string(i + 1));
            }
        }

        const bench::ProcMem& first = series[1].mem; // after the warm-up
        const bench::ProcMem& last = series.back().mem;
        std::printf("growth from the warm sample to the last (kB): RSS %+ld  PSS %+ld  USS %+ld  heap %+ld\n",
                    last.rss - first.rss, last.pss - first.pss, last.uss - first.uss, last.heap - first.heap);
        const bench::ProcMem& fresh = series[0].mem;
        std::printf("growth from fresh to the last (kB):          RSS %+ld  PSS %+ld  USS %+ld  heap %+ld\n",
                    last.rss - fresh.rss, last.pss - fresh.pss, last.uss - fresh.uss, last.heap - fresh.heap);
        for (const char* app : {"sleeper", "truth", "upd"}) {
            cm.remove(app, true);
        }
        // A clean stop (SIGTERM), so a sanitizer build's leak check at exit runs.
        const auto stopped = stack.stop("container-manager");
        std::printf("manager stopped: %s in %lld ms\n", stopped.first.describe().c_str(),
                    static_cast<long long>(stopped.second.count()));
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "bench failed: " << e.what() << "\n";
        return 1;
    }
}
