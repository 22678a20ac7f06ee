// SPDX-License-Identifier: Apache-2.0
// Handshake signatures: Sign over D-Bus (dbus-daemon with the real policy, as the
// cloud client's user) against the same signDigest() in-process with the same
// key, in the same rounds with the order rotated, paced alike on both sides
// (the service allows 50 a second), so per-round ratios pair like with like. The
// bare openssl CLI for scale, and the daemon's memory.
//
//   meson test -C build --benchmark identity-sign --verbose
//   (or run build/bench/identity/identity-bench directly, as root)

#include "device_key.h"
#include "signer.h"
#include "swtpm.h"
#include "tpm_key.h"

#include "harness.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include "identity_client.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
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

Stats stats(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

// n timed calls, one every `pace` (the time between calls is not measured).
template <typename F>
std::vector<double> timeEach(int n, std::chrono::milliseconds pace, F&& fn)
{
    std::vector<double> out;
    for (int i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        fn();
        const auto t1 = Clock::now();
        out.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        std::this_thread::sleep_until(t0 + pace);
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

struct Paired {
    Stats bus;
    Stats local;
    Stats ratio;
    double ratioMin;
    double ratioMax;
};

// Rounds of perRound calls a side, the order rotated each round, both paced alike.
Paired measure(const std::function<void()>& overBus, const std::function<void()>& inProcess, int rounds, int perRound,
               std::chrono::milliseconds pace)
{
    (void)timeEach(5, pace, overBus); // warm-up: page in both paths
    (void)timeEach(5, pace, inProcess);
    std::vector<double> bus;
    std::vector<double> local;
    std::vector<double> ratios;
    for (int r = 0; r < rounds; ++r) {
        std::vector<double> b;
        std::vector<double> l;
        if (r % 2 == 0) {
            b = timeEach(perRound, pace, overBus);
            l = timeEach(perRound, pace, inProcess);
        } else {
            l = timeEach(perRound, pace, inProcess);
            b = timeEach(perRound, pace, overBus);
        }
        ratios.push_back(stats(b).median / stats(l).median);
        bus.insert(bus.end(), b.begin(), b.end());
        local.insert(local.end(), l.begin(), l.end());
    }
    return {stats(bus), stats(local), stats(ratios), *std::min_element(ratios.begin(), ratios.end()),
            *std::max_element(ratios.begin(), ratios.end())};
}

void print(const char* title, const Paired& p)
{
    std::printf("%s\n", title);
    std::printf("  %-40s %10s %10s\n", "", "p50 us", "p99 us");
    std::printf("  %-40s %10.1f %10.1f\n", "D-Bus Sign (root caller)", p.bus.median, p.bus.p99);
    std::printf("  %-40s %10.1f %10.1f\n", "in-process signDigest", p.local.median, p.local.p99);
    std::printf("  per-round ratio D-Bus/in-process: median %.2f (min %.2f, max %.2f)\n", p.ratio.median, p.ratioMin,
                p.ratioMax);
}

// The TPM: the daemon's key in one swtpm, the in-process key in another (each
// side has a TPM of its own: swtpm serves one connection at a time).
int benchTpm()
{
    if (const std::string why = test::Swtpm::missing(); !why.empty()) {
        std::printf("TPM: not measured: %s\n", why.c_str());
        return 0;
    }
    test::TempDir tmp("mbl-identity-bench-tpm");
    auto tpmA = test::Swtpm::start(tmp.path() + "/a");
    auto tpmB = test::Swtpm::start(tmp.path() + "/b");
    if (!tpmA || !tpmB) {
        std::cerr << "cannot start swtpm: " << (!tpmA ? tpmA.error() : tpmB.error()).describe() << "\n";
        return 1;
    }
    test::TestStack stack;
    const std::string blob = stack.root() + "/var/lib/mbl/identity/device.tss2";
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/identity.json",
                              nlohmann::json({{"key_uri", "tpm2:" + blob}}).dump(), 0644);
    test::TestStack::StartOptions opts;
    opts.env = {(*tpmA)->tctiEnv()};
    const auto t0 = Clock::now();
    if (auto st = stack.start("device-identity", opts); !st) {
        std::cerr << "cannot start the identity daemon on swtpm: " << st.error().message << "\n";
        return 1;
    }
    const double firstStartMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    ::setenv("TPM2OPENSSL_TCTI", (*tpmB)->tcti().c_str(), 1);
    auto made = identity::generateTpmKey(identity::KeyType::EcP256);
    if (!made) {
        std::cerr << made.error().describe() << "\n";
        return 1;
    }
    auto conn = sdbus::createSystemBusConnection();
    IdentityProxy proxy(*conn);
    const std::string digest(32, '\x5a');
    const std::vector<uint8_t> digestBytes(digest.begin(), digest.end());
    auto p = measure([&] { (void)proxy.Sign("ecdsa-sha256", digestBytes); },
                     [&] {
                         if (!identity::signDigest(made->key, identity::SignAlgorithm::EcdsaSha256, digest)) {
                             std::abort();
                         }
                     },
                     10, 10, std::chrono::milliseconds(40));
    print("identity Sign, ecdsa-sha256, EC P-256 key in swtpm (TCP loopback TCTI); 10 rounds x 10 calls a side, "
          "order rotated, one call every 40 ms",
          p);
    std::printf("  daemon first start on swtpm (key made in the TPM, blob stored), until it owns its name: %.0f ms\n",
                firstStartMs);
    return 0;
}

int benchFile()
{
    test::TestStack stack;
    if (auto st = stack.start("device-identity"); !st) {
        std::cerr << "cannot start the identity daemon: " << st.error().message << "\n";
        return 1;
    }
    const pid_t pid = stack.pid("device-identity");
    auto [idleRss, idlePss] = rssPssKb(pid);

    const std::string keyFile = stack.root() + "/var/lib/mbl/identity/device.key";
    auto key = identity::DeviceKey::load(keyFile);
    if (!key) {
        std::cerr << key.error().describe() << "\n";
        return 1;
    }
    // The caller is root here: the policy's other allowed caller, and no setpriv in the loop.
    auto conn = sdbus::createSystemBusConnection();
    IdentityProxy proxy(*conn);
    const std::string digest(32, '\xa5');
    const std::vector<uint8_t> digestBytes(digest.begin(), digest.end());

    auto overBus = [&] { (void)proxy.Sign("ecdsa-sha256", digestBytes); };
    auto inProcess = [&] {
        if (!identity::signDigest(*key, identity::SignAlgorithm::EcdsaSha256, digest)) {
            std::abort();
        }
    };
    const int rounds = 20;
    const int perRound = 25;
    const auto pace = std::chrono::milliseconds(25); // 40 a second, under the service's 50
    const Paired file = measure(overBus, inProcess, rounds, perRound, pace);

    // The bare tool: one openssl process per signature of the same digest.
    test::TempDir tmp("mbl-identity-bench");
    (void)fs::writeFileAtomic(tmp.path() + "/digest", digest, 0600);
    auto cli = stats(timeEach(30, std::chrono::milliseconds(0), [&] {
        (void)mbl::run({"openssl", "pkeyutl", "-sign", "-inkey", keyFile, "-pkeyopt", "digest:sha256", "-in",
                        tmp.path() + "/digest", "-out", tmp.path() + "/sig"});
    }));
    auto [afterRss, afterPss] = rssPssKb(pid);

    char title[256];
    std::snprintf(title, sizeof title,
                  "identity Sign, ecdsa-sha256 of a 32-byte digest, EC P-256 file key; %d rounds x %d calls a side, "
                  "order rotated, one call every %lld ms on both sides",
                  rounds, perRound, static_cast<long long>(pace.count()));
    print(title, file);
    std::printf("  %-40s %10.1f %10.1f\n", "openssl pkeyutl -sign CLI (30 runs)", cli.median, cli.p99);
    std::printf("daemon memory: idle RSS %ld kB, PSS %ld kB; after the benchmark RSS %ld kB, PSS %ld kB\n", idleRss,
                idlePss, afterRss, afterPss);
    return 0;
}

} // namespace

int main()
{
    // One stack at a time: each has its own bus and daemon.
    if (int rc = benchFile(); rc != 0) {
        return rc;
    }
    return benchTpm();
}
