// SPDX-License-Identifier: Apache-2.0
// Benchmarks of the cloud client, against the bare tools in the same run:
//  1. download of a large artifact through nginx (mutual TLS), order alternating
//     every round, medians and paired per-round ratios:
//     ours: the daemon's Download fd: HTTPS, SHA-256 check, bytes through a pipe
//           spliced into /dev/null by this process;
//     bare: `curl -o /dev/null` with the same TLS settings (transport only: no
//           hash), and `curl | openssl dgst -sha256` compared with the digest (the
//           same job with the best bare tools).
//     Over a link shaped with tc (mode `link`) both sides run at the link's rate by
//     construction: only the CPU seconds per GiB are compared there.
//  2. bytes per idle poll, measured on the daemon itself: the server's sleep set
//     to --poll-sleep seconds, the daemon polls on its own kept connection;
//     nginx's access log gives the HTTP bytes ($request_length + $bytes_sent) and
//     the status of each poll (304 means the daemon sent If-None-Match), and an
//     iptables chain counting the packets to and from nginx's TLS port on lo gives
//     the IP-level bytes (TCP/IP headers, TLS records, ACKs). Only the daemon talks
//     to that port during the window. TCP keep-alive probes: the daemon sets
//     the idle time a minute beyond its next poll, so a polling connection sends
//     none (before, idle 120 s: two probes and their ACKs per 5-minute sleep); run
//     with --poll-sleep 300 for the 5-minute figure. Ethernet adds 14 B per packet
//     (or 38 B with preamble and gap), not counted on lo.
//     The device id is the hawkBit controllerId, in every poll's path
//     (/DEFAULT/controller/v1/<id>), and neither HTTP/1.1 nor HTTP/2 compresses it
//     (nghttp2 never puts :path into the HPACK table), so each poll carries it
//     whole. The default is of the form a product device has by default (64 hex
//     digits, the SHA-256 of its key's SPKI: DeviceKey::derivedDeviceId), here
//     the SHA-256 of a fixed string; --device-id dev-01 gives the tests' short id.
//     The ETag the device sends back is hawkBit's form (Spring's "0<md5 hex>", 35
//     characters, tests/cloud/ddi_server.py), in the request and in each 304.
//  3. idle RSS/PSS of the daemon; 4. wake-ups (context switches of all its threads)
//     per idle minute (no bare side).
// Usage: cloud-bench [--size-mib N] [--runs N] [--polls N] [--poll-sleep S] [--idle-sec N]
//                    [--load N] [--modes python,static,link|none] [--link-mbit N] [--server-http 1.1|2]
//                    [--device-id ID]
//                    (root; needs nginx, iptables)
// --server-http 2: nginx offers HTTP/2 (ALPN h2) on the device's server port; the
// daemon's control requests (polls, feedback) then use it, downloads stay HTTP/1.1.
// The default (1.1) is hawkBit's own (Spring Boot's server.http2.enabled=false).
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

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <iostream>
#include <set>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Counts the IP packets and bytes to and from one TCP port on lo: an iptables
// chain of its own, hooked into OUTPUT (every loopback packet passes it once).
// Removed again on destruction.
class PortCounter {
public:
    explicit PortCounter(int port) : chain_("MBLBENCH" + std::to_string(::getpid()))
    {
        const std::string p = std::to_string(port);
        const std::vector<std::vector<std::string>> cmds = {
            {"iptables", "-w", "-N", chain_},
            {"iptables", "-w", "-A", chain_, "-p", "tcp", "--dport", p},
            {"iptables", "-w", "-A", chain_, "-p", "tcp", "--sport", p},
            // Packets of at most 52 B (IPv4 + TCP with timestamps, no payload): bare ACKs.
            {"iptables", "-w", "-A", chain_, "-p", "tcp", "--dport", p, "-m", "length", "--length", "0:52"},
            {"iptables", "-w", "-A", chain_, "-p", "tcp", "--sport", p, "-m", "length", "--length", "0:52"},
            {"iptables", "-w", "-I", "OUTPUT", "-o", "lo", "-j", chain_}};
        for (const auto& c : cmds) {
            auto r = mbl::run(c);
            if (!r || !r->status.success()) {
                why_ = "iptables " + c[2] + ": " + (r ? str::trim(r->err) : r.error().message);
                return;
            }
            steps_++;
        }
    }
    ~PortCounter()
    {
        if (steps_ >= 6) {
            (void)mbl::run({"iptables", "-w", "-D", "OUTPUT", "-o", "lo", "-j", chain_});
        }
        if (steps_ >= 1) {
            (void)mbl::run({"iptables", "-w", "-F", chain_});
            (void)mbl::run({"iptables", "-w", "-X", chain_});
        }
    }
    PortCounter(const PortCounter&) = delete;
    PortCounter& operator=(const PortCounter&) = delete;
    bool ok() const { return steps_ == 6; }
    const std::string& why() const { return why_; }
    // Packets and bytes (IP level) so far: to the port (client to server), from it,
    // and the bare ACKs among each.
    struct Counts {
        std::uint64_t toPk = 0, toBy = 0, fromPk = 0, fromBy = 0, toAcks = 0, fromAcks = 0;
        std::uint64_t packets() const { return toPk + fromPk; }
        std::uint64_t bytes() const { return toBy + fromBy; }
    };
    Counts read() const
    {
        std::vector<std::pair<std::uint64_t, std::uint64_t>> rules;
        auto r = mbl::run({"iptables", "-w", "-L", chain_, "-v", "-x", "-n"});
        if (r && r->status.success()) {
            for (const auto& line : str::split(r->out, '\n')) {
                auto w = str::words(line);
                if (w.size() > 2 && std::isdigit(static_cast<unsigned char>(w[0][0]))) {
                    rules.emplace_back(std::stoull(w[0]), std::stoull(w[1]));
                }
            }
        }
        Counts c;
        if (rules.size() == 4) {
            c = {rules[0].first, rules[0].second, rules[1].first, rules[1].second, rules[2].first, rules[3].first};
        }
        return c;
    }

private:
    std::string chain_;
    std::string why_;
    int steps_ = 0;
};

// The daemon's polls in nginx's access log (format `ddi` of tests/cloud/cloud_fixture.cpp:
// $connection $connection_requests $ssl_session_reused "$request" $status $request_length $bytes_sent).
struct LogPoll {
    std::string connection, status;
    std::uint64_t bytes = 0; // request_length + bytes_sent
};
std::vector<LogPoll> pollLines(const std::string& logPath, const std::string& pollPath)
{
    std::vector<LogPoll> out;
    auto text = fs::readFile(logPath);
    if (!text) {
        return out;
    }
    const std::string needle = "\"GET " + pollPath + " ";
    for (const auto& line : str::split(*text, '\n')) {
        if (line.find(needle) == std::string::npos) {
            continue;
        }
        auto w = str::words(line);
        if (w.size() < 4) {
            continue;
        }
        LogPoll p;
        p.connection = w[0];
        p.status = w[w.size() - 3];
        p.bytes = std::stoull(w[w.size() - 2]) + std::stoull(w[w.size() - 1]);
        out.push_back(p);
    }
    return out;
}

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
    int polls = 10;
    int pollSleep = 3;
    int idleSec = 60;
    int runs = 3;
    int load = 0;
    std::string modes = "python,static,link";
    int linkMbit = 1000;
    bool http2 = false;
    // 64 hex digits, as the product's default id (see the header comment).
    std::string deviceId = crypto::sha256Hex(std::string("mbl cloud-bench device"));
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--size-mib") {
            sizeMib = std::stoul(argv[i + 1]);
        } else if (a == "--polls") {
            polls = std::stoi(argv[i + 1]);
        } else if (a == "--runs") {
            runs = std::max(1, std::stoi(argv[i + 1]));
        } else if (a == "--poll-sleep") {
            pollSleep = std::min(3599, std::max(1, std::stoi(argv[i + 1])));
        } else if (a == "--idle-sec") {
            idleSec = std::stoi(argv[i + 1]);
        } else if (a == "--load") {
            load = std::max(0, std::stoi(argv[i + 1]));
        } else if (a == "--modes") {
            modes = argv[i + 1];
        } else if (a == "--link-mbit") {
            linkMbit = std::max(1, std::stoi(argv[i + 1]));
        } else if (a == "--server-http") {
            http2 = std::string(argv[i + 1]) == "2";
        } else if (a == "--device-id") {
            deviceId = argv[i + 1];
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CloudEnvOptions o;
    o.http2 = http2;
    o.deviceId = deviceId;
    CloudEnv env(o);
    const std::string serverUrl = http2 ? env.cloud.http2Url() : env.cloud.serverUrl();
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
    // Downloaded outside any action (hawkBit's skip-artifact-access-check tenant option).
    env.cloud.admin("POST", "/admin/config", {{"skip_artifact_access_check", true}});
    const std::string url = serverUrl + "/DEFAULT/controller/v1/" + env.deviceId + "/softwaremodules/" +
                            std::to_string(art["smid"].get<int>()) + "/artifacts/big.bin";
    json artifact = {{"url", url}, {"size", art["size"]}, {"sha256", art["sha256"]}, {"filename", "big.bin"}};
    const double bytes = static_cast<double>(art["size"].get<std::uint64_t>());
    const pid_t daemonPid = env.stack.pid("cloud-client");
    const std::string pki = env.cloud.dir() + "/pki";
    const std::vector<std::string> curlArgv = {"curl", "-sS", "--fail", "--http1.1", "--tlsv1.2", "--cacert", pki + "/test-ca.pem",
                                               "--cert", pki + "/device-" + env.deviceId + ".pem",
                                               "--key", pki + "/device-" + env.deviceId + ".key", "-o", "/dev/null", url};
    // curl --http1.1: the daemon fetches artifacts over HTTP/1.1 even where the
    // server offers h2 (--server-http 2), so both sides do the same job.
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
            throw std::runtime_error("the daemon's download is incomplete: " + std::to_string(got) + " bytes");
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
            throw std::runtime_error("curl failed: " + (r ? r->err : r.error().message));
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
            throw std::runtime_error("curl | openssl dgst failed or gave another digest");
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
    auto rounds = [&](const std::string& label, bool linkBound) {
        std::vector<double> ours, theirs, theirsSha, inproc, oursCpu, theirsCpu, shaCpu, ratios, shaRatios, cpuRatios;
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
            cpuRatios.push_back(sc > 0 ? oc / sc : 0);
            oursCpu.push_back(oc);
            theirsCpu.push_back(tc);
            shaCpu.push_back(sc);
            inproc.push_back(inprocRun());
        }
        auto range = [](const std::vector<double>& v) {
            const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
            char buf[64];
            std::snprintf(buf, sizeof buf, "%.2f (%.2f-%.2f)", median(v), *lo, *hi);
            return std::string(buf);
        };
        std::printf("download %zu MiB via nginx mTLS, %s%s (medians of %d rounds, order alternating):\n", sizeMib,
                    label.c_str(), loadText.c_str(), runs);
        std::printf("  mbl-cloud-client Download fd (HTTPS + SHA-256 check + pipe)  %5.0f MB/s  %.2f s CPU/GiB\n",
                    median(ours), median(oursCpu));
        std::printf("  curl -o /dev/null (transport only, no hash)                 %5.0f MB/s  %.2f s CPU/GiB\n",
                    median(theirs), median(theirsCpu));
        std::printf("  curl | openssl dgst -sha256 (the same job, bare tools)      %5.0f MB/s  %.2f s CPU/GiB\n",
                    median(theirsSha), median(shaCpu));
        std::printf("  in-process HttpSession, no pipe, no hash                    %5.0f MB/s\n", median(inproc));
        if (linkBound) {
            // Both sides run at the link's rate: a throughput ratio would be 1.00 by construction.
            std::printf("  CPU per GiB, daemon / curl|dgst: median/median %.2f, paired %s\n",
                        median(oursCpu) / median(shaCpu), range(cpuRatios).c_str());
        } else {
            std::printf("  throughput daemon / curl|dgst: median/median %.2f, paired %s\n",
                        median(ours) / median(theirsSha), range(shaRatios).c_str());
            std::printf("  throughput daemon / curl -o /dev/null: median/median %.2f, paired %s\n",
                        median(ours) / median(theirs), range(ratios).c_str());
            std::printf("  CPU per GiB, daemon / curl|dgst: median/median %.2f, paired %s\n",
                        median(oursCpu) / median(shaCpu), range(cpuRatios).c_str());
        }
        std::printf("  per round (MB/s) daemon / curl / curl|dgst:");
        for (std::size_t i = 0; i < ours.size(); ++i) {
            std::printf(" %.0f/%.0f/%.0f", ours[i], theirs[i], theirsSha[i]);
        }
        std::printf("\n");
        std::fflush(stdout);
    };
    const int tlsPort = std::stoi(serverUrl.substr(serverUrl.rfind(':') + 1));
    // A failed run ends the benchmark: no figure is printed for a job that did not happen.
    try {
        for (const auto& mode : str::split(modes, ',')) {
            if (mode == "python") {
                env.cloud.admin("POST", "/admin/config", {{"accel_redirect", nullptr}});
                rounds("artifact streamed by the Python test server (nginx proxies it)", false);
            } else if (mode == "static") {
                env.cloud.admin("POST", "/admin/config", {{"accel_redirect", "/_mbl_artifact"}});
                rounds("artifact served by nginx itself (X-Accel-Redirect)", false);
            } else if (mode == "link") {
                env.cloud.admin("POST", "/admin/config", {{"accel_redirect", "/_mbl_artifact"}});
                LinkShaper shaper(tlsPort, linkMbit);
                if (!shaper.ok()) {
                    std::printf("download over a %d Mbit/s link: skipped (%s)\n", linkMbit, shaper.why().c_str());
                    continue;
                }
                rounds("artifact served by nginx, its port shaped to " + std::to_string(linkMbit) +
                       " Mbit/s (tc htb on lo), as a device's link", true);
            } else if (mode != "none") { // none: the idle figures only
                std::cerr << "unknown mode " << mode << " (python, static, link, none)\n";
                return 2;
            }
        }
    } catch (const std::exception& e) {
        for (pid_t h : hogs) {
            ::kill(h, SIGKILL);
            ::waitpid(h, nullptr, 0);
        }
        std::cerr << "cloud-bench: " << e.what() << "\n";
        return 1;
    }
    env.cloud.admin("POST", "/admin/config", {{"accel_redirect", nullptr}});
    for (pid_t h : hogs) {
        ::kill(h, SIGKILL);
        ::waitpid(h, nullptr, 0);
    }

    // --- 2. bytes per idle poll, on the daemon ------------------------------------------
    {
        PortCounter counter(tlsPort);
        if (!counter.ok()) {
            std::printf("idle poll bytes: skipped (%s)\n", counter.why().c_str());
        } else {
            const std::string logPath = env.cloud.dir() + "/nginx/logs/access.log";
            const std::string pollPath = "/DEFAULT/controller/v1/" + env.deviceId;
            char sleepText[16];
            std::snprintf(sleepText, sizeof sleepText, "%02d:%02d:%02d", pollSleep / 3600, pollSleep / 60 % 60,
                          pollSleep % 60);
            env.cloud.admin("POST", "/admin/config", {{"sleep", sleepText}});
            // A poll now, so the daemon learns the new sleep; then one more of its own.
            env.proxy().callMethod("PollNow").onInterface("org.mbl.CloudClient1");
            const std::size_t start = pollLines(logPath, pollPath).size();
            // Each poll may come up to a sleep (plus jitter) after the last.
            auto waitPolls = [&](std::size_t n) {
                return CloudEnv::waitUntil([&] { return pollLines(logPath, pollPath).size() >= n; },
                                           std::chrono::seconds(pollSleep * (polls + 3) + 30));
            };
            if (!waitPolls(start + 1)) {
                std::cerr << "the daemon did not poll on its own\n" << env.clientLog();
                return 1;
            }
            const std::size_t first = pollLines(logPath, pollPath).size();
            const auto c0 = counter.read();
            if (!waitPolls(first + static_cast<std::size_t>(polls))) {
                std::cerr << "the daemon did not poll " << polls << " times\n" << env.clientLog();
                return 1;
            }
            const auto c1 = counter.read();
            auto lines = pollLines(logPath, pollPath);
            lines.resize(first + static_cast<std::size_t>(polls));
            std::uint64_t http = 0;
            int notModified = 0;
            std::set<std::string> connections;
            for (std::size_t i = first; i < lines.size(); ++i) {
                http += lines[i].bytes;
                notModified += lines[i].status == "304";
                connections.insert(lines[i].connection);
            }
            const double perHttp = static_cast<double>(http) / polls;
            const double perIp = static_cast<double>(c1.bytes() - c0.bytes()) / polls;
            const double perPk = static_cast<double>(c1.packets() - c0.packets()) / polls;
            std::printf("idle poll, the daemon at a %d s sleep, %d polls, device id %s (%zu characters): %d answered "
                        "304 (If-None-Match), %zu TCP connection(s)\n",
                        pollSleep, polls, env.deviceId.c_str(), env.deviceId.size(), notModified, connections.size());
            std::printf("  HTTP (nginx $request_length + $bytes_sent): %.0f B/poll, %.1f kB/day at 5 min\n", perHttp,
                        perHttp * 288 / 1000);
            std::printf("  IP level (iptables on lo, both directions): %.0f B/poll in %.1f packets, %.1f kB/day at 5 min"
                        " (+ %.1f kB/day of Ethernet headers)\n",
                        perIp, perPk, perIp * 288 / 1000, perPk * 14 * 288 / 1000);
            auto per = [&](std::uint64_t a, std::uint64_t b) { return static_cast<double>(b - a) / polls; };
            std::printf("  device to server: %.1f packets, %.0f B (%.1f bare ACKs); server to device: %.1f packets, "
                        "%.0f B (%.1f bare ACKs) per poll\n",
                        per(c0.toPk, c1.toPk), per(c0.toBy, c1.toBy), per(c0.toAcks, c1.toAcks),
                        per(c0.fromPk, c1.fromPk), per(c0.fromBy, c1.fromBy), per(c0.fromAcks, c1.fromAcks));
            env.cloud.admin("POST", "/admin/config", {{"sleep", "00:01:00"}});
            env.proxy().callMethod("PollNow").onInterface("org.mbl.CloudClient1");
        }
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
