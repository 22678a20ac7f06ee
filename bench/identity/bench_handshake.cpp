// SPDX-License-Identifier: Apache-2.0
// The cost of keeping the key in the identity service, per TLS handshake: the
// cloud client's HTTP code (HttpSession, libcurl, OpenSSL) polls the DDI test
// server behind real nginx with mutual TLS, once with the handshake signed
// through DeviceIdentity1.Sign over the bus (the remote key), once with the same
// file key in-process; same requests, same pacing, order rotated each round,
// per-round ratios of medians.
//   full: a new session per request (no connection, no TLS session to reuse);
//   resumed: one session, "Connection: close" on each request, so each request
//   opens a new connection that may resume the previous TLS session.
// nginx's log says whether each handshake was resumed; the identity service's
// Sign count says how many signatures the remote side asked for.
//
//   build/bench/identity/identity-handshake-bench   (as root; MBL_BUILD_ROOT and
//   MBL_SOURCE_ROOT as meson test sets them, or run it with meson test --benchmark)

#include "cloud_env.h"
#include "http.h"
#include "swtpm.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include "identity_client.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using namespace mbl;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
    double p50;
    double p99;
};

Stats stats(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

std::vector<double> timeEach(int n, std::chrono::milliseconds pace, const std::function<void()>& fn)
{
    std::vector<double> out;
    for (int i = 0; i < n; ++i) {
        const auto t0 = Clock::now();
        fn();
        out.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        std::this_thread::sleep_until(t0 + pace);
    }
    return out;
}

struct Paired {
    Stats remote;
    Stats local;
    Stats ratio;
};

Paired measure(const std::function<void()>& remote, const std::function<void()>& local, int rounds, int perRound,
               std::chrono::milliseconds pace)
{
    (void)timeEach(3, pace, remote);
    (void)timeEach(3, pace, local);
    std::vector<double> r;
    std::vector<double> l;
    std::vector<double> ratios;
    for (int i = 0; i < rounds; ++i) {
        std::vector<double> a;
        std::vector<double> b;
        if (i % 2 == 0) {
            a = timeEach(perRound, pace, remote);
            b = timeEach(perRound, pace, local);
        } else {
            b = timeEach(perRound, pace, local);
            a = timeEach(perRound, pace, remote);
        }
        ratios.push_back(stats(a).p50 / stats(b).p50);
        r.insert(r.end(), a.begin(), a.end());
        l.insert(l.end(), b.begin(), b.end());
    }
    return {stats(r), stats(l), stats(ratios)};
}

void print(const char* title, const Paired& p)
{
    std::printf("%s\n", title);
    std::printf("  %-52s %10s %10s\n", "", "p50 ms", "p99 ms");
    std::printf("  %-52s %10.2f %10.2f\n", "key in the identity service (Sign over D-Bus)", p.remote.p50 / 1000,
                p.remote.p99 / 1000);
    std::printf("  %-52s %10.2f %10.2f\n", "same key in-process", p.local.p50 / 1000, p.local.p99 / 1000);
    std::printf("  per-round ratio remote/in-process (median of round medians): %.2f\n", p.ratio.p50);
}

// nginx's log lines for the poll since `from`: how many handshakes were resumed ("r").
std::pair<int, int> resumedSince(const std::string& logPath, std::size_t from)
{
    auto text = fs::readFile(logPath);
    int resumed = 0;
    int total = 0;
    if (!text || text->size() < from) {
        return {0, 0};
    }
    for (const auto& line : str::split(text->substr(from), '\n')) {
        auto w = str::words(line);
        if (w.size() > 3 && line.find("/controller/v1/dev-01") != std::string::npos) {
            ++total;
            resumed += w[2] == "r" ? 1 : 0;
        }
    }
    return {resumed, total};
}

std::size_t logSize(const std::string& path)
{
    auto t = fs::readFile(path);
    return t ? t->size() : 0;
}

// The remote signer as the cloud client has it: Sign on a connection of its own, one call at a time.
struct BusSigner {
    std::unique_ptr<sdbus::IConnection> conn = sdbus::createSystemBusConnection();
    IdentityProxy proxy{*conn};
    std::mutex mu;
    unsigned long signs = 0;
    crypto::HandshakeSigner fn()
    {
        return [this](const std::string& alg, const std::string& digest) -> Expected<std::string> {
            std::lock_guard<std::mutex> lk(mu);
            try {
                auto sig = proxy.Sign(alg, std::vector<uint8_t>(digest.begin(), digest.end()));
                ++signs;
                return std::string(sig.begin(), sig.end());
            } catch (const sdbus::Error& e) {
                return unexpected(ErrorCode::Failed, e.getName() + ": " + e.getMessage());
            }
        };
    }
};

// Full handshakes with the key in swtpm, through the identity service (there is no
// in-process twin here: the TPM key signs only in the TPM; bench_identity.cpp
// compares Sign with an in-process TPM signature).
void benchTpm(int n, std::chrono::milliseconds pace)
{
    if (const std::string why = test::Swtpm::missing(); !why.empty()) {
        std::printf("TPM key: not measured: %s\n", why.c_str());
        return;
    }
    test::TempDir tmp("mbl-handshake-bench-tpm");
    auto tpm = test::Swtpm::start(tmp.path() + "/tpm");
    if (!tpm) {
        std::printf("TPM key: not measured: %s\n", tpm.error().describe().c_str());
        return;
    }
    test::CloudEnvOptions o;
    o.startClient = false;
    o.identityConfig = [](const std::string& root) {
        return nlohmann::json{{"key_uri", "tpm2:" + root + "/var/lib/mbl/identity/device.tss2"}};
    };
    o.identityEnv = {(*tpm)->tctiEnv()};
    test::CloudEnv env(o);
    const std::string url = env.cloud.serverUrl() + "/DEFAULT/controller/v1/" + env.deviceId;
    BusSigner signer;
    cloud::TlsSettings remote;
    remote.caPem = env.cloud.caPem();
    remote.chainPem = env.creds.chainPem;
    remote.signer = signer.fn();
    const auto origin = cloud::originOf(url);
    auto times = timeEach(n, pace, [&] {
        cloud::HttpSession s(remote, *origin);
        auto r = s.request("GET", url);
        if (!r || r->status != 200) {
            std::cerr << "TPM poll failed: " << (r ? "HTTP " + std::to_string(r->status) : r.error().describe()) << "\n";
            std::exit(1);
        }
    });
    auto st = stats(times);
    std::printf("mutual TLS poll, full handshake, EC P-256 key in swtpm (TCP TCTI) through the identity service; %d "
                "handshakes, one every %lld ms\n  p50 %.2f ms, p99 %.2f ms; Sign calls %lu\n",
                n, static_cast<long long>(pace.count()), st.p50 / 1000, st.p99 / 1000, signer.signs);
}

} // namespace

int main()
{
    test::CloudEnvOptions o;
    o.startClient = false;
    test::CloudEnv env(o);
    if (env.creds.keyPem.empty()) {
        std::cerr << "no file key to compare with\n";
        return 1;
    }
    const std::string url = env.cloud.serverUrl() + "/DEFAULT/controller/v1/" + env.deviceId;
    const auto origin = cloud::originOf(url);
    if (!origin) {
        std::cerr << origin.error().describe() << "\n";
        return 1;
    }
    BusSigner signer;
    const unsigned long& signs = signer.signs;
    cloud::TlsSettings remote;
    remote.caPem = env.cloud.caPem();
    remote.chainPem = env.creds.chainPem;
    remote.signer = signer.fn();
    cloud::TlsSettings local;
    local.caPem = env.cloud.caPem();
    local.chainPem = env.creds.chainPem;
    local.keyPem = env.creds.keyPem;

    auto poll = [&](cloud::HttpSession& s, const std::vector<std::string>& headers) {
        auto r = s.request("GET", url, "", headers);
        if (!r || r->status != 200) {
            std::cerr << "poll failed: " << (r ? "HTTP " + std::to_string(r->status) : r.error().describe()) << "\n";
            std::exit(1);
        }
    };
    const int rounds = 10;
    const int perRound = 20;
    const auto pace = std::chrono::milliseconds(40); // 25 handshakes a second: under Sign's 50
    const std::string log = env.cloud.dir() + "/nginx/logs/access.log";

    auto fullRemote = [&] {
        cloud::HttpSession s(remote, *origin);
        poll(s, {});
    };
    auto fullLocal = [&] {
        cloud::HttpSession s(local, *origin);
        poll(s, {});
    };
    const unsigned long signs0 = signs;
    const Paired full = measure(fullRemote, fullLocal, rounds, perRound, pace);
    const unsigned long fullSigns = signs - signs0;

    cloud::HttpSession keptRemote(remote, *origin);
    cloud::HttpSession keptLocal(local, *origin);
    const std::vector<std::string> close = {"Connection: close"};
    const std::size_t logFrom = logSize(log);
    const unsigned long signs1 = signs;
    const Paired resumed = measure([&] { poll(keptRemote, close); }, [&] { poll(keptLocal, close); }, rounds, perRound,
                                   pace);
    const unsigned long resumedSigns = signs - signs1;
    const auto [reused, total] = resumedSince(log, logFrom);

    char title[320];
    std::snprintf(title, sizeof title,
                  "mutual TLS poll (TLS 1.3, EC P-256 client key, nginx on loopback), full handshake each time; "
                  "%d rounds x %d a side, order rotated, one every %lld ms",
                  rounds, perRound, static_cast<long long>(pace.count()));
    print(title, full);
    std::printf("  Sign calls by the remote side: %lu for %d handshakes (+3 warm-up)\n", fullSigns, rounds * perRound);
    std::snprintf(title, sizeof title,
                  "the same over a new connection each time that may resume the TLS session; %d rounds x %d a side",
                  rounds, perRound);
    print(title, resumed);
    std::printf("  nginx: %d of %d handshakes resumed; Sign calls by the remote side: %lu\n", reused, total,
                resumedSigns);
    benchTpm(40, std::chrono::milliseconds(100));
    return 0;
}
