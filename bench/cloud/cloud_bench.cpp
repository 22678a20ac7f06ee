// SPDX-License-Identifier: Apache-2.0
// Benchmarks of the cloud client, against the bare tool in the same run:
//  1. download throughput of a large artifact through nginx (mutual TLS): the
//     daemon's Download fd (HTTPS + SHA-256 + pipe) against `curl` with the same
//     TLS settings writing to /dev/null, and against `curl | openssl dgst -sha256`
//     (the bare tools doing the same job);
//  2. bytes on the wire per idle poll, with the kept connection against a fresh
//     TLS handshake per poll (a counting TCP relay sits between client and nginx);
//  3. idle RSS/PSS of the daemon;
//  4. wake-ups (context switches of all its threads) per idle minute.
// Usage: cloud-bench [--size-mib N] [--runs N] [--polls N] [--idle-sec N] [--load N]
//                    [--modes python,static,link] [--link-mbit N]      (root; needs nginx)
// Throughput modes: `python` (the DDI test server streams the artifact through
// nginx), `static` (the test server answers with X-Accel-Redirect and nginx serves
// the file: the server costs far less CPU, so the clients' own cost shows),
// `link` (as static, with the server's port shaped to --link-mbit, default 1000,
// by tc htb on lo: a device's network link). --load N runs N busy-looping
// processes during the throughput rounds.
// Build without sanitizers for meaningful figures (see the README).

#include "cloud_env.h"
#include "http.h"

#include "mbl/crypto.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <iostream>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// A TCP relay on 127.0.0.1 that counts the bytes in both directions.
class CountingRelay {
public:
    explicit CountingRelay(int upstreamPort) : upstream_(upstreamPort)
    {
        listen_ = Fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        int one = 1;
        ::setsockopt(listen_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        ::listen(listen_.get(), 16);
        thread_ = std::thread([this] { acceptLoop(); });
    }
    ~CountingRelay()
    {
        stop_ = true;
        ::shutdown(listen_.get(), SHUT_RDWR);
        thread_.join();
        for (auto& t : pumps_) {
            t.join();
        }
    }
    int port() const { return port_; }
    std::uint64_t bytes() const { return bytes_; }
    int connections() const { return connections_; }

private:
    void acceptLoop()
    {
        while (!stop_) {
            struct pollfd p = {listen_.get(), POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) {
                continue;
            }
            int c = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) {
                continue;
            }
            ++connections_;
            auto client = std::make_shared<Fd>(c);
            auto up = std::make_shared<Fd>(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<std::uint16_t>(upstream_));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(up->get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
                continue;
            }
            pumps_.emplace_back([this, client, up] { pump(client->get(), up->get()); });
        }
    }
    void pump(int a, int b)
    {
        char buf[65536];
        struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        while (!stop_) {
            if (::poll(p, 2, 100) <= 0) {
                continue;
            }
            for (int i = 0; i < 2; ++i) {
                if (p[i].revents == 0) {
                    continue;
                }
                ssize_t n = ::read(p[i].fd, buf, sizeof buf);
                if (n <= 0) {
                    ::shutdown(a, SHUT_RDWR);
                    ::shutdown(b, SHUT_RDWR);
                    return;
                }
                bytes_ += static_cast<std::uint64_t>(n);
                (void)fs::writeAll(p[1 - i].fd, buf, static_cast<std::size_t>(n));
            }
        }
    }
    int upstream_;
    Fd listen_;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> bytes_{0};
    std::atomic<int> connections_{0};
    std::thread thread_;
    std::vector<std::thread> pumps_;
};

// Shapes what nginx sends from `port` on lo to `mbit` (tc htb + u32 filter on the
// source port; everything else on lo is left alone). Removed again on destruction.
class LinkShaper {
public:
    LinkShaper(int port, int mbit)
    {
        const std::string rate = std::to_string(mbit) + "mbit";
        const std::vector<std::vector<std::string>> cmds = {
            {"tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "20", "r2q", "1000"},
            {"tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", rate},
            {"tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "100gbit"},
            {"tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
             "sport", std::to_string(port), "0xffff", "flowid", "1:10"}};
        for (const auto& c : cmds) {
            auto r = mbl::run(c);
            if (!r || !r->status.success()) {
                why_ = "tc " + c[1] + " " + c[2] + ": " + (r ? str::trim(r->err) : r.error().message);
                return;
            }
            installed_ = true;
        }
        ok_ = true;
    }
    ~LinkShaper()
    {
        if (installed_) {
            (void)mbl::run({"tc", "qdisc", "del", "dev", "lo", "root"});
        }
    }
    LinkShaper(const LinkShaper&) = delete;
    LinkShaper& operator=(const LinkShaper&) = delete;
    bool ok() const { return ok_; }
    const std::string& why() const { return why_; }

private:
    bool ok_ = false;
    bool installed_ = false;
    std::string why_;
};

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

std::uint64_t kbField(const std::string& text, const std::string& key)
{
    auto pos = text.find(key);
    if (pos == std::string::npos) {
        return 0;
    }
    return std::strtoull(text.c_str() + pos + key.size(), nullptr, 10);
}

std::uint64_t contextSwitches(pid_t pid)
{
    std::uint64_t total = 0;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return 0;
    }
    while (auto* e = ::readdir(d)) {
        if (e->d_name[0] == '.') {
            continue;
        }
        auto st = fs::readFile(dir + "/" + e->d_name + "/status");
        if (st) {
            total += kbField(*st, "voluntary_ctxt_switches:\t") + kbField(*st, "nonvoluntary_ctxt_switches:\t");
        }
    }
    ::closedir(d);
    return total;
}

// CPU seconds (user + system) a process has used so far.
double processCpu(pid_t pid)
{
    auto st = fs::readFile("/proc/" + std::to_string(pid) + "/stat");
    if (!st) {
        return 0;
    }
    // Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
    const auto close = st->rfind(')');
    auto fields = str::split(st->substr(close + 2), ' ');
    if (fields.size() < 13) {
        return 0;
    }
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    return (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
}

double childrenCpu()
{
    rusage ru{};
    ::getrusage(RUSAGE_CHILDREN, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

} // namespace

int main(int argc, char** argv)
{
    std::size_t sizeMib = 256;
    int polls = 20;
    int idleSec = 60;
    int runs = 3;
    int load = 0;
    std::string modes = "python,static,link";
    int linkMbit = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--size-mib") {
            sizeMib = std::stoul(argv[i + 1]);
        } else if (a == "--polls") {
            polls = std::stoi(argv[i + 1]);
        } else if (a == "--runs") {
            runs = std::max(1, std::stoi(argv[i + 1]));
        } else if (a == "--idle-sec") {
            idleSec = std::stoi(argv[i + 1]);
        } else if (a == "--load") {
            load = std::max(0, std::stoi(argv[i + 1]));
        } else if (a == "--modes") {
            modes = argv[i + 1];
        } else if (a == "--link-mbit") {
            linkMbit = std::max(1, std::stoi(argv[i + 1]));
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CloudEnvOptions o;
    CloudEnv env(o);
    env.cloud.admin("POST", "/admin/config", {{"sleep", "00:01:00"}});
    if (!CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; })) {
        std::cerr << "cloud client did not connect\n" << env.clientLog();
        return 1;
    }

    // --- 1. throughput --------------------------------------------------------------
    const std::string path = env.cloud.dir() + "/artifacts/big.bin";
    {
        std::string chunk(1 << 20, '\0');
        for (std::size_t i = 0; i < chunk.size(); ++i) {
            chunk[i] = static_cast<char>((i * 2654435761u) >> 13);
        }
        Fd f{::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
        for (std::size_t i = 0; i < sizeMib; ++i) {
            chunk[0] = static_cast<char>(i);
            (void)fs::writeAll(f.get(), chunk.data(), chunk.size());
        }
    }
    auto art = env.cloud.admin("POST", "/admin/artifacts", {{"name", "big.bin"}, {"path", path}});
    const std::string url = env.cloud.serverUrl() + "/DEFAULT/controller/v1/" + env.deviceId + "/softwaremodules/" +
                            std::to_string(art["smid"].get<int>()) + "/artifacts/big.bin";
    json artifact = {{"url", url}, {"size", art["size"]}, {"sha256", art["sha256"]}, {"filename", "big.bin"}};
    const double bytes = static_cast<double>(art["size"].get<std::uint64_t>());
    const pid_t daemonPid = env.stack.pid("cloud-client");
    const std::string pki = env.cloud.dir() + "/pki";
    const std::vector<std::string> curlArgv = {"curl", "-sS", "--fail", "--tlsv1.2", "--cacert", pki + "/test-ca.pem",
                                               "--cert", pki + "/device-dev-01.pem", "--key",
                                               pki + "/device-dev-01.key", "-o", "/dev/null", url};
    // The daemon's stream: Download → pipe → spliced into /dev/null, so the consumer
    // costs what curl's -o /dev/null costs (no copy into a process).
    auto daemonRun = [&](double& cpu) -> double {
        const double cpu0 = processCpu(daemonPid);
        const auto t0 = Clock::now();
        sdbus::UnixFd fd;
        env.proxy().callMethod("Download").onInterface("org.mbl.CloudClient1").withArguments(std::string("1"), artifact.dump()).storeResultsTo(fd);
        Fd devNull{::open("/dev/null", O_WRONLY | O_CLOEXEC)};
        std::uint64_t got = 0;
        while (true) {
            ssize_t n = ::splice(fd.get(), nullptr, devNull.get(), nullptr, 1 << 20, SPLICE_F_MOVE);
            if (n <= 0) {
                break;
            }
            got += static_cast<std::uint64_t>(n);
        }
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (got != art["size"].get<std::uint64_t>()) {
            std::cerr << "daemon download incomplete: " << got << "\n";
        }
        cpu = (processCpu(daemonPid) - cpu0) / (bytes / (1 << 30));
        return bytes / s / 1e6;
    };
    auto curlRun = [&](double& cpu) -> double {
        const double ccpu0 = childrenCpu();
        const auto t0 = Clock::now();
        auto r = mbl::run(curlArgv);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!r || !r->status.success()) {
            std::cerr << "curl failed: " << (r ? r->err : r.error().message) << "\n";
        }
        cpu = (childrenCpu() - ccpu0) / (bytes / (1 << 30));
        return bytes / s / 1e6;
    };
    // The bare tools doing the daemon's whole job, download and SHA-256 check:
    // curl into `openssl dgst -sha256` (the same EVP code, with the CPU's SHA
    // instructions; coreutils' sha256sum has none and runs at a quarter of it).
    auto curlShaRun = [&](double& cpu) -> double {
        std::string cmd;
        for (std::size_t i = 0; i + 3 < curlArgv.size(); ++i) {
            cmd += curlArgv[i] + " ";
        }
        cmd += "-o - '" + url + "' | openssl dgst -sha256 -r";
        const double ccpu0 = childrenCpu();
        const auto t0 = Clock::now();
        auto r = mbl::run({"sh", "-c", cmd});
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (!r || !r->status.success() || r->out.substr(0, 64) != art["sha256"].get<std::string>()) {
            std::cerr << "curl | openssl dgst failed\n";
        }
        cpu = (childrenCpu() - ccpu0) / (bytes / (1 << 30));
        return bytes / s / 1e6;
    };
    // The same HTTPS code in-process, without pipe and hash: isolates the fd path's cost.
    auto inprocRun = [&]() -> double {
        cloud::TlsSettings tls;
        tls.caPem = env.cloud.caPem();
        tls.keyPem = env.creds.keyPem;
        tls.chainPem = env.creds.chainPem;
        cloud::HttpSession hs(tls, *cloud::originOf(url));
        std::uint64_t n = 0;
        const auto t0 = Clock::now();
        (void)hs.stream(url, 0, [&](long, const char*, std::size_t len) {
            n += len;
            return true;
        });
        return bytes / std::chrono::duration<double>(Clock::now() - t0).count() / 1e6;
    };
    // Optional competing load: N busy-looping processes (a device doing other work).
    std::vector<pid_t> hogs;
    for (int i = 0; i < load; ++i) {
        const pid_t h = ::fork();
        if (h == 0) {
            volatile std::uint64_t spin = 0;
            while (true) {
                spin = spin + 1;
            }
        }
        hogs.push_back(h);
    }
    const std::string loadText = load > 0 ? ", " + std::to_string(load) + " busy-looping process(es)" : "";
    // One set of rounds against one server setup. Who goes first alternates, so
    // neither side always gets a warmer cache or a quieter machine.
    auto rounds = [&](const std::string& label) {
        std::vector<double> ours, theirs, theirsSha, inproc, oursCpu, theirsCpu, shaCpu, ratios, shaRatios;
        for (int run = 0; run < runs; ++run) {
            double oc = 0, tc = 0, sc = 0, o = 0, t = 0, ts = 0;
            if (run % 2 == 0) {
                o = daemonRun(oc);
                t = curlRun(tc);
                ts = curlShaRun(sc);
            } else {
                ts = curlShaRun(sc);
                t = curlRun(tc);
                o = daemonRun(oc);
            }
            ours.push_back(o);
            theirs.push_back(t);
            theirsSha.push_back(ts);
            ratios.push_back(o / t);
            shaRatios.push_back(o / ts);
            oursCpu.push_back(oc);
            theirsCpu.push_back(tc);
            shaCpu.push_back(sc);
            inproc.push_back(inprocRun());
        }
        std::printf("download %zu MiB via nginx mTLS, %s%s (medians of %d rounds):\n", sizeMib, label.c_str(),
                    loadText.c_str(), runs);
        std::printf("  mbl-cloud-client Download fd (HTTPS + SHA-256 check + pipe)  %5.0f MB/s  %.2f s CPU/GiB\n",
                    median(ours), median(oursCpu));
        std::printf("  curl -o /dev/null (transport only)                          %5.0f MB/s  %.2f s CPU/GiB"
                    "  ratio %.2f\n",
                    median(theirs), median(theirsCpu), median(ratios));
        std::printf("  curl | openssl dgst -sha256 (the same job, bare tools)      %5.0f MB/s  %.2f s CPU/GiB"
                    "  ratio %.2f\n",
                    median(theirsSha), median(shaCpu), median(shaRatios));
        std::printf("  in-process HttpSession, no pipe, no hash                    %5.0f MB/s\n", median(inproc));
        std::printf("  per round (MB/s) daemon / curl / curl|dgst:");
        for (std::size_t i = 0; i < ours.size(); ++i) {
            std::printf(" %.0f/%.0f/%.0f", ours[i], theirs[i], theirsSha[i]);
        }
        std::printf("\n");
        std::fflush(stdout);
    };
    const int tlsPort = std::stoi(env.cloud.serverUrl().substr(env.cloud.serverUrl().rfind(':') + 1));
    for (const auto& mode : str::split(modes, ',')) {
        if (mode == "python") {
            env.cloud.admin("POST", "/admin/config", {{"accel_redirect", nullptr}});
            rounds("artifact streamed by the Python test server (nginx proxies it)");
        } else if (mode == "static") {
            env.cloud.admin("POST", "/admin/config", {{"accel_redirect", "/_mbl_artifact"}});
            rounds("artifact served by nginx itself (X-Accel-Redirect)");
        } else if (mode == "link") {
            env.cloud.admin("POST", "/admin/config", {{"accel_redirect", "/_mbl_artifact"}});
            LinkShaper shaper(tlsPort, linkMbit);
            if (!shaper.ok()) {
                std::printf("download over a %d Mbit/s link: skipped (%s)\n", linkMbit, shaper.why().c_str());
                continue;
            }
            rounds("artifact served by nginx, its port shaped to " + std::to_string(linkMbit) +
                   " Mbit/s (tc htb on lo), as a device's link");
        } else {
            std::cerr << "unknown mode " << mode << " (python, static, link)\n";
            return 2;
        }
    }
    env.cloud.admin("POST", "/admin/config", {{"accel_redirect", nullptr}});
    for (pid_t h : hogs) {
        ::kill(h, SIGKILL);
        ::waitpid(h, nullptr, 0);
    }

    // --- 2. bytes per idle poll ------------------------------------------------------
    {
        CountingRelay relay(tlsPort);
        const std::string base = "https://localhost:" + std::to_string(relay.port());
        auto origin = cloud::originOf(base);
        cloud::TlsSettings tls;
        tls.caPem = env.cloud.caPem();
        tls.keyPem = env.creds.keyPem;
        tls.chainPem = env.creds.chainPem;
        const std::string pollUrl = base + "/DEFAULT/controller/v1/" + env.deviceId;
        std::string etag;
        // Kept connection (what the daemon does): steady-state bytes after the first poll.
        {
            cloud::HttpSession s(tls, *origin);
            (void)s.request("GET", pollUrl);
            const auto after1 = relay.bytes();
            for (int i = 0; i < polls; ++i) {
                auto r = s.request("GET", pollUrl, "", etag.empty() ? std::vector<std::string>{} :
                                                                     std::vector<std::string>{"If-None-Match: " + etag});
                if (r && !r->etag.empty()) {
                    etag = r->etag;
                }
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            const double per = static_cast<double>(relay.bytes() - after1) / polls;
            std::printf("idle poll, kept connection (If-None-Match/304): %.0f bytes/poll, %.1f KiB/day at 5 min\n", per,
                        per * 288 / 1024);
        }
        const auto before = relay.bytes();
        const int connsBefore = relay.connections();
        for (int i = 0; i < polls; ++i) {
            cloud::HttpSession s(tls, *origin);
            (void)s.request("GET", pollUrl);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const double per = static_cast<double>(relay.bytes() - before) / polls;
        std::printf("idle poll, fresh TLS handshake each: %.0f bytes/poll, %.1f KiB/day at 5 min (%d connections)\n", per,
                    per * 288 / 1024, relay.connections() - connsBefore);
    }

    // --- 3./4. idle memory and wake-ups -----------------------------------------------
    const pid_t pid = env.stack.pid("cloud-client");
    std::this_thread::sleep_for(std::chrono::seconds(2));
    auto rollup = fs::readFile("/proc/" + std::to_string(pid) + "/smaps_rollup");
    if (rollup) {
        std::printf("idle memory: RSS %llu KiB, PSS %llu KiB\n",
                    static_cast<unsigned long long>(kbField(*rollup, "Rss:")),
                    static_cast<unsigned long long>(kbField(*rollup, "Pss:")));
    }
    const auto cs0 = contextSwitches(pid);
    std::this_thread::sleep_for(std::chrono::seconds(idleSec));
    const auto cs1 = contextSwitches(pid);
    std::printf("wake-ups (context switches, all threads) over %d s idle at a 60 s poll: %llu (%.1f per minute)\n",
                idleSec, static_cast<unsigned long long>(cs1 - cs0),
                static_cast<double>(cs1 - cs0) * 60.0 / idleSec);
    curl_global_cleanup();
    return 0;
}
