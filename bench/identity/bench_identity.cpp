// SPDX-License-Identifier: Apache-2.0
// Sign over D-Bus against the same signature made in-process with the same key
// in the same run (the ratio is the bus overhead), the bare openssl CLI for
// scale, and the daemon's idle memory (RSS/PSS from /proc/PID/smaps_rollup).
//
//   meson test -C build --benchmark identity-sign --verbose
//   (or run build/bench/identity/identity-bench directly, as root)

#include "device_key.h"

#include "harness.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include "identity_client.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>
#include <vector>

using namespace mbl;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
    double median;
    double p99;
};

Stats stats(std::vector<double> us)
{
    std::sort(us.begin(), us.end());
    return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

template <typename F>
std::vector<double> timeEach(int n, F&& fn)
{
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        auto t0 = Clock::now();
        fn();
        out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    return out;
}

std::pair<long, long> rssPssKb(pid_t pid)
{
    auto text = fs::readFile("/proc/" + std::to_string(pid) + "/smaps_rollup");
    long rss = -1;
    long pss = -1;
    if (text) {
        std::istringstream in(*text);
        std::string line;
        while (std::getline(in, line)) {
            std::sscanf(line.c_str(), "Rss: %ld kB", &rss);
            std::sscanf(line.c_str(), "Pss: %ld kB", &pss);
        }
    }
    return {rss, pss};
}

} // namespace

int main()
{
    test::TestStack stack;
    if (auto st = stack.start("device-identity"); !st) {
        std::cerr << "cannot start the identity daemon: " << st.error().message << "\n";
        return 1;
    }
    const pid_t pid = stack.pid("device-identity");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto [idleRss, idlePss] = rssPssKb(pid);

    const std::string keyFile = stack.root() + "/var/lib/mbl/identity/device.key";
    auto key = identity::DeviceKey::load(keyFile);
    if (!key) {
        std::cerr << key.error().describe() << "\n";
        return 1;
    }
    auto conn = sdbus::createSystemBusConnection();
    IdentityProxy proxy(*conn);
    const std::vector<uint8_t> challenge(32, 0xa5);
    const int n = 1000;

    for (int i = 0; i < 50; ++i) { // warm-up: page in both paths
        (void)proxy.Sign(challenge);
        (void)key->sign(challenge.data(), challenge.size());
    }
    auto bus = stats(timeEach(n, [&] { (void)proxy.Sign(challenge); }));
    auto local = stats(timeEach(n, [&] { (void)key->sign(challenge.data(), challenge.size()); }));

    const std::vector<uint8_t> page(64 * 1024, 0x3c);
    auto bus64k = stats(timeEach(200, [&] { (void)proxy.Sign(page); }));
    auto local64k = stats(timeEach(200, [&] { (void)key->sign(page.data(), page.size()); }));

    // The bare tool: one openssl process per signature.
    test::TempDir tmp("mbl-identity-bench");
    (void)fs::writeFileAtomic(tmp.path() + "/challenge", std::string(challenge.begin(), challenge.end()), 0600);
    auto cli = stats(timeEach(30, [&] {
        (void)mbl::run({"openssl", "dgst", "-sha256", "-sign", keyFile, "-out", tmp.path() + "/sig",
                        tmp.path() + "/challenge"});
    }));
    auto [afterRss, afterPss] = rssPssKb(pid);

    std::printf("identity Sign (EC P-256, ECDSA-SHA256), %d calls each, same key, same run\n", n);
    std::printf("  %-36s %10s %10s %8s\n", "", "median us", "p99 us", "ratio");
    std::printf("  %-36s %10.1f %10.1f %8.1f\n", "D-Bus Sign, 32 B challenge", bus.median, bus.p99,
                bus.median / local.median);
    std::printf("  %-36s %10.1f %10.1f %8.1f\n", "in-process sign, 32 B", local.median, local.p99, 1.0);
    std::printf("  %-36s %10.1f %10.1f %8.1f\n", "D-Bus Sign, 64 KiB (200 calls)", bus64k.median, bus64k.p99,
                bus64k.median / local64k.median);
    std::printf("  %-36s %10.1f %10.1f %8.1f\n", "in-process sign, 64 KiB", local64k.median, local64k.p99, 1.0);
    std::printf("  %-36s %10.1f %10.1f %8.1f\n", "openssl dgst -sign CLI (30 runs)", cli.median, cli.p99,
                cli.median / local.median);
    std::printf("daemon memory: idle RSS %ld kB, PSS %ld kB; after the benchmark RSS %ld kB, PSS %ld kB\n", idleRss,
                idlePss, afterRss, afterPss);
    return 0;
}
