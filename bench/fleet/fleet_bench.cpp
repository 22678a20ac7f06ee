// SPDX-License-Identifier: Apache-2.0
// A fleet of cloud clients against one DDI server on this machine: how the
// polling and back-off of services/cloud-client behave when many devices share
// a server (issue 13, "Fleet behaviour").
//
// How the fleet is simulated: N CloudClient objects (the cloud client's own
// logic: Poller, back-off, jitter, HttpSession, feedback and attributes code,
// unchanged) run in this one process, each with its own worker thread, its own
// libcurl handle and keep-alive TLS connection, its own state directory and its
// own identity (an EC key and a client certificate with CN = its device id,
// signed by the test CA), against the DDI test server behind one nginx doing
// mutual TLS. One process rather than N daemons: the D-Bus adaptor is the only
// part left out (it is not on the polling path), and 1000 daemons would need
// 1000 bus connections and ~17 GB of RSS here; threads cost ~100 KB each.
//
// The clock: a scaled clock (--scale K) makes every wait of the poller K times
// shorter in real time. The code under test runs unchanged: CloudClient takes a
// Clock (poller.h), and everything it plans — poll sleeps, jitter, the first
// poll's spread, back-off, Retry-After — is computed in that clock's time. The
// server's sleep (00:05:00), the back-off base and cap and the outage are all
// given in device time; what is real time is the network and the CPU, which are
// fast against the scaled waits. Figures are reported in device time.
//
// The run (device time): all N start at t=0; steady window [10, 30) min; the
// server (nginx) is stopped at t=30 min for --outage-min (10) minutes and
// started again; measured until 15 minutes after it is back. Requests are read
// from nginx's access log ($msec, the request line), bytes from the kernel's
// per-connection counters (ss -tin: bytes_received + bytes_acked of every
// connection to nginx, i.e. TLS records as they cross the wire, headers of IP
// and TCP not counted) over the steady window.
//
// Usage: fleet-bench [--devices N] [--scale K] [--outage-min M] [--baseline] [--start-only]
//   --baseline  also runs the same fleet with jitter and first-poll spread off
//               (poll.jitter_percent 0, poll.first_poll_spread_sec 0: the client
//               before issue 13) and prints both side by side.
//   --start-only only the first 3 device minutes (the first-poll spread). The
//               clock scale multiplies real latency too: 1000 TLS handshakes on a
//               loaded 2-CPU machine take ~10 s real, 200 s of device time at
//               --scale 20, which hides the client's own spread; measure the
//               start with --scale 1.
// Needs root (nginx, ports) and nginx-light; run it from a non-sanitized build.

#include "cloud_client.h"
#include "cloud_fixture.h"
#include "poller.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <fcntl.h>
#include <iostream>
#include <map>
#include <sstream>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace mbl;
using namespace mbl::cloud;
using namespace mbl::test;
using nlohmann::json;
using Steady = std::chrono::steady_clock;

namespace {

// Device time runs `k` times faster than real time, from `base` on.
class ScaledClock final : public Clock {
public:
    ScaledClock(double k, TimePoint base) : k_(k), base_(base) {}
    TimePoint now() const override
    {
        const auto real = Steady::now() - base_;
        return base_ + std::chrono::duration_cast<Steady::duration>(real * k_);
    }
    TimePoint toReal(TimePoint t) const override
    {
        const auto dev = t - base_;
        return base_ + std::chrono::duration_cast<Steady::duration>(dev / k_);
    }
    double deviceSeconds(TimePoint real) const { return std::chrono::duration<double>(real - base_).count() * k_; }

private:
    double k_;
    TimePoint base_;
};

struct Identity {
    std::string id;
    std::string keyPem;
    std::string chainPem;
};

std::string pemOf(X509* c)
{
    BIO* b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, c);
    char* p = nullptr;
    const long n = BIO_get_mem_data(b, &p);
    std::string s(p, static_cast<std::size_t>(n));
    BIO_free(b);
    return s;
}

// N device identities: an EC P-256 key each and a clientAuth certificate with
// CN = the device id, signed by the fixture's test CA (in process: openssl
// x509 -req per device would take minutes).
std::vector<Identity> makeIdentities(const std::string& pki, int n)
{
    auto caPem = *fs::readFile(pki + "/test-ca.pem");
    auto caKeyPem = *fs::readFile(pki + "/test-ca.key");
    BIO* b = BIO_new_mem_buf(caPem.data(), static_cast<int>(caPem.size()));
    X509* ca = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    b = BIO_new_mem_buf(caKeyPem.data(), static_cast<int>(caKeyPem.size()));
    EVP_PKEY* caKey = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    std::vector<Identity> out;
    for (int i = 0; i < n; ++i) {
        char id[32];
        std::snprintf(id, sizeof id, "fleet-%05d", i);
        EVP_PKEY* key = EVP_EC_gen("P-256");
        X509* c = X509_new();
        X509_set_version(c, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(c), 1000 + i);
        X509_gmtime_adj(X509_getm_notBefore(c), -60);
        X509_gmtime_adj(X509_getm_notAfter(c), 2 * 24 * 3600);
        X509_set_pubkey(c, key);
        X509_NAME* name = X509_get_subject_name(c);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(id), -1, -1, 0);
        X509_set_issuer_name(c, X509_get_subject_name(ca));
        X509V3_CTX ctx;
        X509V3_set_ctx(&ctx, ca, c, nullptr, nullptr, 0);
        X509_EXTENSION* eku = X509V3_EXT_conf_nid(nullptr, &ctx, NID_ext_key_usage, "clientAuth");
        X509_add_ext(c, eku, -1);
        X509_EXTENSION_free(eku);
        X509_sign(c, caKey, EVP_sha256());
        BIO* kb = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr);
        char* p = nullptr;
        const long kn = BIO_get_mem_data(kb, &p);
        out.push_back({id, std::string(p, static_cast<std::size_t>(kn)), pemOf(c)});
        BIO_free(kb);
        X509_free(c);
        EVP_PKEY_free(key);
    }
    X509_free(ca);
    EVP_PKEY_free(caKey);
    return out;
}

class FleetSource final : public DeviceSource {
public:
    FleetSource(Identity id, std::string url, std::string caPem)
        : id_(std::move(id)), url_(std::move(url)), ca_(std::move(caPem))
    {
    }
    Expected<Provisioning> provisioning() override
    {
        return Provisioning{url_, "DEFAULT", "mtls", "", ca_, id_.id};
    }
    Expected<TlsCredentials> tlsCredentials() override { return TlsCredentials{id_.keyPem, id_.chainPem, {}}; }
    std::map<std::string, std::string> systemAttributes() override { return {{"firmware_version", "2.0.0"}}; }

private:
    Identity id_;
    std::string url_;
    std::string ca_;
};

class NullListener final : public Listener {
public:
    void propertiesChanged(const std::vector<std::string>&) override {}
    void deploymentRequested(const std::string&, const std::string&) override {}
    void cancelRequested(const std::string&) override {}
    void downloadFinished(const std::string&, const std::string&, const std::string&, const std::string&) override {}
    void confirmationRequested(const std::string&, const std::string&) override {}
};

// The fleet's own nginx in front of the fixture's DDI server: mutual TLS as in
// the tests, room for thousands of connections, $msec in the access log, and
// stop/start for the outage.
class FleetNginx {
public:
    FleetNginx(const CloudFixture& cloud, int port) : dir_(cloud.dir() + "/fleet-nginx"), port_(port)
    {
        const std::string pki = cloud.dir() + "/pki";
        for (const char* sub : {"", "/logs", "/tmp"}) {
            (void)fs::makeDirs(dir_ + sub, 0755);
        }
        const std::string conf =
            "worker_processes 1;\nworker_rlimit_nofile 20000;\nuser root root;\n"
            "pid " + dir_ + "/nginx.pid;\nerror_log " + dir_ + "/logs/error.log crit;\n"
            "events { worker_connections 8192; }\n"
            "http {\n"
            "  log_format fleet '$msec $request_length $bytes_sent \"$request\" $status';\n"
            "  access_log " + dir_ + "/logs/access.log fleet buffer=256k flush=1s;\n"
            "  client_body_temp_path " + dir_ + "/tmp/body;\n  proxy_temp_path " + dir_ + "/tmp/proxy;\n"
            "  fastcgi_temp_path " + dir_ + "/tmp/fcgi;\n  uwsgi_temp_path " + dir_ + "/tmp/uwsgi;\n"
            "  scgi_temp_path " + dir_ + "/tmp/scgi;\n"
            "  map $ssl_client_s_dn $cn_raw { default \"\"; \"~(^|,)CN=(?<cn>[^,]+)\" $cn; }\n"
            "  map $ssl_client_verify $cn_ok { SUCCESS $cn_raw; default \"\"; }\n"
            "  upstream ddi { server 127.0.0.1:" + std::to_string(cloud.backendPort()) + "; keepalive 64; }\n"
            "  server {\n"
            "    listen 127.0.0.1:" + std::to_string(port_) + " ssl backlog=4096;\n"
            "    ssl_certificate " + pki + "/server.pem;\n    ssl_certificate_key " + pki + "/server.key;\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_client_certificate " + pki + "/test-ca.pem;\n    ssl_verify_client optional;\n"
            "    ssl_session_cache shared:fleet:16m;\n"
            // Longer than the poll sleep: an idle poll reuses its connection (see the cloud README).
            "    keepalive_timeout 600s;\n    keepalive_requests 100000;\n"
            "    location / {\n"
            "      proxy_pass http://ddi;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n"
            "      proxy_set_header Host $http_host;\n      proxy_set_header X-Forwarded-Proto https;\n"
            "      proxy_set_header X-Ssl-Client-Cn $cn_ok;\n"
            "      proxy_set_header X-Ssl-Issuer-Hash-1 \"" + cloud.issuerHash() + "\";\n"
            "    }\n  }\n}\n";
        (void)fs::writeFileAtomic(dir_ + "/nginx.conf", conf, 0644);
    }
    ~FleetNginx() { stop(); }
    void start()
    {
        SpawnOptions so;
        so.dieWithParent = true;
        auto c = Child::spawn({"/usr/sbin/nginx", "-p", dir_, "-c", dir_ + "/nginx.conf", "-g", "daemon off;"}, so);
        if (!c) {
            throw std::runtime_error("nginx: " + c.error().message);
        }
        child_ = std::move(c).value();
        for (int i = 0; i < 500; ++i) {
            if (fs::exists(dir_ + "/nginx.pid")) {
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    void stop()
    {
        if (child_.running()) {
            // SIGINT: nginx's fast shutdown closes every connection at once (a server that dies).
            ::kill(child_.pid(), SIGINT);
            (void)child_.wait();
        }
    }
    std::string accessLog() const { return dir_ + "/logs/access.log"; }
    int port() const { return port_; }

private:
    std::string dir_;
    int port_;
    Child child_;
};

// Payload bytes (TLS records) of every established connection to `port`: ss -tin.
std::map<std::string, std::uint64_t> connectionBytes(int port)
{
    std::map<std::string, std::uint64_t> out;
    auto r = mbl::run({"ss", "-tinH", "state", "established", "( sport = :" + std::to_string(port) + " )"});
    if (!r) {
        return out;
    }
    std::istringstream in(r->out);
    std::string line;
    std::string peer;
    while (std::getline(in, line)) {
        if (line.empty()) {
            continue;
        }
        if (line[0] != ' ' && line[0] != '\t') {
            std::istringstream f(line);
            std::string recvq, sendq, local;
            f >> recvq >> sendq >> local >> peer;
            continue;
        }
        auto grab = [&](const char* key) -> std::uint64_t {
            auto at = line.find(key);
            return at == std::string::npos ? 0 : std::stoull(line.substr(at + std::strlen(key)));
        };
        out[peer] += grab("bytes_acked:") + grab("bytes_received:");
    }
    return out;
}

struct Request {
    double t; // device seconds since the start
    std::string device;
    bool poll;
};

std::vector<Request> readLog(const std::string& path, double realStart, double scale)
{
    std::vector<Request> out;
    auto text = fs::readFile(path, 1u << 30);
    if (!text) {
        return out;
    }
    for (const auto& line : str::split(*text, '\n')) {
        if (line.empty()) {
            continue;
        }
        const double ms = std::stod(line.substr(0, line.find(' ')));
        const auto q = line.find('"');
        const auto sp = line.find(' ', q + 1);
        const std::string uri = line.substr(sp + 1, line.find(' ', sp + 1) - sp - 1);
        const auto at = uri.find("/controller/v1/");
        if (at == std::string::npos) {
            continue;
        }
        std::string rest = uri.substr(at + 15);
        const std::string device = rest.substr(0, rest.find('/'));
        out.push_back({(ms - realStart) * scale, device, rest.find('/') == std::string::npos});
    }
    return out;
}

double wallNow()
{
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Figures {
    double steadyRps = 0;
    double steadyPerMin = 0;
    double herdPeakPerMin = 0;
    double herdFirstMin = 0;
    double firstSpreadSec = 0;
    double firstP50 = 0;
    double firstPeak10s = 0;
    int firstPolled = 0;
    double bytesPerDeviceDay = 0;
    double herdBackSec = 0; // device seconds after the outage until 95 % of devices polled again
    bool startOnly = false; // only the first polls were measured
};

Figures runFleet(int devices, double scale, double outageMin, bool baseline, bool startOnly)
{
    using std::chrono::duration;
    CloudFixture cloud;
    cloud.admin("POST", "/admin/config", {{"sleep", "00:05:00"}});
    FleetNginx nginx(cloud, freePort());
    nginx.start();
    std::cerr << "fleet: " << devices << " identities...\n";
    auto ids = makeIdentities(cloud.dir() + "/pki", devices);
    const std::string url = "https://localhost:" + std::to_string(nginx.port());
    json cfg = json::object();
    if (baseline) {
        cfg = {{"poll", {{"jitter_percent", 0}, {"first_poll_spread_sec", 0}}}};
    }
    const Config config(cfg, "fleet");
    const auto base = Steady::now();
    ScaledClock clock(scale, base);
    const double realStart = wallNow();
    std::vector<std::unique_ptr<FleetSource>> sources;
    std::vector<std::unique_ptr<CloudClient>> clients;
    NullListener listener;
    for (int i = 0; i < devices; ++i) {
        const std::string root = cloud.dir() + "/devices/" + ids[i].id;
        auto c = CloudClient::open(Paths::underRoot(root), config, clock);
        if (!c) {
            throw std::runtime_error(c.error().message);
        }
        sources.push_back(std::make_unique<FleetSource>(ids[i], url, cloud.caPem()));
        clients.push_back(std::move(c).value());
    }
    // All of them at once, as after a power cut.
    const double startDev = clock.deviceSeconds(Steady::now());
    for (int i = 0; i < devices; ++i) {
        clients[i]->start(*sources[i], listener);
    }
    auto sleepUntilDev = [&](double devSec) {
        const auto real = base + std::chrono::duration_cast<Steady::duration>(duration<double>(devSec / scale));
        std::this_thread::sleep_until(real);
    };
    std::cerr << "fleet: started at device t=" << startDev << " s; steady window 10..30 min\n";
    double outageEnd = 0;
    std::map<std::string, std::uint64_t> bytes0;
    std::map<std::string, std::uint64_t> bytes1;
    if (startOnly) {
        // Only the start: 3 device minutes (every first poll is due within the spread).
        sleepUntilDev(startDev + 180);
    } else {
        sleepUntilDev(600);
        bytes0 = connectionBytes(nginx.port());
        sleepUntilDev(1800);
        bytes1 = connectionBytes(nginx.port());
        std::cerr << "fleet: outage of " << outageMin << " min\n";
        nginx.stop();
        outageEnd = 1800 + outageMin * 60;
        sleepUntilDev(outageEnd);
        nginx.start();
        std::cerr << "fleet: server back; 15 min more\n";
        sleepUntilDev(outageEnd + 900);
    }
    for (auto& c : clients) {
        c->stop();
    }
    nginx.stop();

    Figures f;
    auto reqs = readLog(nginx.accessLog(), realStart, scale);
    f.startOnly = startOnly;
    // Steady: device minutes [10, 30).
    std::size_t steady = 0;
    for (const auto& r : reqs) {
        steady += r.t >= 600 && r.t < 1800 ? 1 : 0;
    }
    f.steadyRps = static_cast<double>(steady) / 1200.0;
    f.steadyPerMin = f.steadyRps * 60;
    // Herd: per device-minute after the outage.
    std::vector<std::size_t> perMin(15, 0);
    std::map<std::string, double> back;
    for (const auto& r : reqs) {
        if (r.t >= outageEnd && r.t < outageEnd + 900) {
            perMin[static_cast<std::size_t>((r.t - outageEnd) / 60)]++;
            if (back.count(r.device) == 0) {
                back[r.device] = r.t - outageEnd;
            }
        }
    }
    f.herdFirstMin = static_cast<double>(perMin[0]);
    f.herdPeakPerMin = static_cast<double>(*std::max_element(perMin.begin(), perMin.end()));
    std::vector<double> backs;
    for (const auto& [d, t] : back) {
        backs.push_back(t);
    }
    std::sort(backs.begin(), backs.end());
    if (!backs.empty()) {
        f.herdBackSec = backs[std::min(backs.size() - 1, static_cast<std::size_t>(0.95 * devices))];
    }
    // First polls after the simultaneous start.
    std::map<std::string, double> first;
    for (const auto& r : reqs) {
        if (r.poll && first.count(r.device) == 0) {
            first[r.device] = r.t - startDev;
        }
    }
    std::vector<double> firsts;
    for (const auto& [d, t] : first) {
        firsts.push_back(t);
    }
    std::sort(firsts.begin(), firsts.end());
    f.firstPolled = static_cast<int>(firsts.size());
    if (!firsts.empty()) {
        f.firstSpreadSec = firsts.back() - firsts.front();
        f.firstP50 = firsts[firsts.size() / 2];
        std::map<int, int> per10;
        for (double t : firsts) {
            per10[static_cast<int>(t / 10)]++;
        }
        int peak = 0;
        for (const auto& [k, v] : per10) {
            peak = std::max(peak, v);
        }
        f.firstPeak10s = peak;
    }
    // Bytes per device per day: the connections that lived through the whole steady window.
    std::uint64_t total = 0;
    int conns = 0;
    for (const auto& [peer, b1] : bytes1) {
        auto it = bytes0.find(peer);
        if (it != bytes0.end() && b1 >= it->second) {
            total += b1 - it->second;
            ++conns;
        }
    }
    if (conns > 0) {
        f.bytesPerDeviceDay = static_cast<double>(total) / conns / 1200.0 * 86400.0;
    }
    std::cerr << "fleet: " << conns << " connections lived through the steady window\n";
    return f;
}

void print(const char* name, const Figures& f, int devices)
{
    std::printf("%s\n", name);
    // Without a steady window the reference is what a 5-minute sleep gives: N/300 polls per second.
    const double steady10 = f.startOnly ? devices / 30.0 : f.steadyRps * 10;
    std::printf("  first polls after a simultaneous start: %d of %d devices, spread %.0f s (median %.0f s), "
                "peak %.0f in 10 s (steady: %.1f per 10 s)\n",
                f.firstPolled, devices, f.firstSpreadSec, f.firstP50, f.firstPeak10s, steady10);
    if (f.startOnly) {
        return;
    }
    std::printf("  steady: %.2f requests/s (%.0f per minute)\n", f.steadyRps, f.steadyPerMin);
    std::printf("  after the outage: first minute %.0f, peak minute %.0f requests -> peak/steady %.2f; "
                "95 %% of devices back after %.0f s\n",
                f.herdFirstMin, f.herdPeakPerMin, f.herdPeakPerMin / f.steadyPerMin, f.herdBackSec);
    std::printf("  bytes per device per day at a 5-minute sleep: %.0f KiB\n", f.bytesPerDeviceDay / 1024);
}

} // namespace

int main(int argc, char** argv)
{
    int devices = 1000;
    double scale = 5;
    double outage = 10;
    bool baseline = false;
    bool startOnly = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--devices" && i + 1 < argc) {
            devices = std::atoi(argv[++i]);
        } else if (a == "--scale" && i + 1 < argc) {
            scale = std::atof(argv[++i]);
        } else if (a == "--outage-min" && i + 1 < argc) {
            outage = std::atof(argv[++i]);
        } else if (a == "--baseline") {
            baseline = true;
        } else if (a == "--start-only") {
            startOnly = true;
        } else {
            std::cerr << "usage: fleet-bench [--devices N] [--scale K] [--outage-min M] [--baseline] [--start-only]\n";
            return 2;
        }
    }
    if (::geteuid() != 0) {
        std::cerr << "fleet-bench: needs root (nginx)\n";
        return 77;
    }
    struct rlimit rl;
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    log::setLevel(log::Level::Error);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    try {
        std::printf("fleet-bench: %d devices, clock x%.1f, outage %.0f min (device time throughout)\n", devices,
                    scale, outage);
        const Figures now = runFleet(devices, scale, outage, false, startOnly);
        print("cloud client (jitter 10 %, first poll spread 60 s):", now, devices);
        if (baseline) {
            const Figures old = runFleet(devices, scale, outage, true, startOnly);
            print("baseline (jitter 0, first poll at once: the client before issue 13):", old, devices);
        }
    } catch (const std::exception& e) {
        std::cerr << "fleet-bench: " << e.what() << "\n";
        return 1;
    }
    curl_global_cleanup();
    return 0;
}
