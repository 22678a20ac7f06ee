// SPDX-License-Identifier: Apache-2.0
// Startup and footprint of the five daemons: time from exec to the bus name
// appearing (median and p90 over N starts), and idle RSS/PSS from
// /proc/PID/smaps_rollup. Baseline in the same run: a bare `busctl` call's
// round trip is the floor any bus client pays.
//
// Run: sudo MBL_BUILD_ROOT=build MBL_POLICY_DIR=build/dbus-policy build/bench/common/mbl-startup-bench [N]

#include "harness.h"

#include "mbl/fs.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>

using namespace mbl;

namespace {
double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}
double pct(std::vector<double> v, double p)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

std::pair<long, long> rssPssKb(pid_t pid)
{
    long rss = -1;
    long pss = -1;
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/smaps_rollup");
    if (!text) {
        return {rss, pss};
    }
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        long v = 0;
        if (std::sscanf(line.c_str(), "Rss: %ld kB", &v) == 1) {
            rss = v;
        } else if (std::sscanf(line.c_str(), "Pss: %ld kB", &v) == 1) {
            pss = v;
        }
    }
    return {rss, pss};
}
} // namespace

int main(int argc, char** argv)
{
    const int runs = argc > 1 ? std::atoi(argv[1]) : 20;
    test::TestStack stack;
    std::printf("%-18s %12s %12s %10s %10s\n", "daemon", "start p50 ms", "start p90 ms", "RSS kB", "PSS kB");
    for (const auto& s : test::allServices()) {
        std::vector<double> ms;
        for (int i = 0; i < runs; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            if (auto st = stack.start(s.label); !st) {
                std::cerr << st.error().describe() << "\n";
                return 1;
            }
            ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            if (i + 1 < runs) {
                stack.stop(s.label);
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(300)); // idle
        auto [rss, pss] = rssPssKb(stack.pid(s.label));
        std::printf("%-18s %12.1f %12.1f %10ld %10ld\n", s.label.c_str(), median(ms), pct(ms, 0.9), rss, pss);
    }
    // Baseline: the same name-appearance wait around a bare program that does nothing
    // on the bus but exit — the harness's spawn + poll cost.
    std::vector<double> bare;
    for (int i = 0; i < runs; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        auto r = stack.busctl({"call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetId"});
        bare.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        if (!r.status.success()) {
            return 1;
        }
    }
    std::printf("%-18s %12.1f %12.1f   (exec of busctl + one bus call: the floor for any bus client)\n",
                "bare busctl", median(bare), pct(bare, 0.9));
    return 0;
}
