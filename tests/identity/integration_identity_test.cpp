// SPDX-License-Identifier: Apache-2.0
// mbl-device-identity seen from outside: through the generated proxy and busctl
// on a private system bus with the real policy, run as its real user, checked
// with the openssl CLI.

#include "harness.h"
#include "test_certs.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include "recording_identity_client.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cerrno>
#include <fcntl.h>
#include <mutex>
#include <set>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using test::IdentityClient;
using test::TestStack;

namespace {

const char* const kBus = "org.mbl.DeviceIdentity1";
const char* const kPath = "/org/mbl/DeviceIdentity1";

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000))
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

RunResult sh(const std::vector<std::string>& argv)
{
    auto r = mbl::run(argv);
    REQUIRE(r);
    return *r;
}

struct Fixture {
    TestStack stack;
    test::TempDir work{"mbl-identity-it"};
    std::unique_ptr<IdentityClient> client;

    std::string stateDir() const { return stack.root() + "/var/lib/mbl/identity"; }
    std::string keyFile() const { return stateDir() + "/device.key"; }
    std::string stateFile() const { return stateDir() + "/identity.json"; }
    std::string file(const std::string& name) const { return work.path() + "/" + name; }
    std::string put(const std::string& name, const std::string& data)
    {
        REQUIRE(fs::writeFileAtomic(file(name), data, 0644));
        return file(name);
    }

    void configure(const nlohmann::json& cfg)
    {
        REQUIRE(fs::writeFileAtomic(stack.root() + "/etc/mbl/identity.json", cfg.dump(), 0644));
    }
    void start(const std::vector<std::string>& env = {})
    {
        TestStack::StartOptions opts;
        opts.env = env;
        auto st = stack.start("device-identity", opts);
        INFO((st ? "" : st.error().message));
        REQUIRE(st);
        client.reset();
        client = std::make_unique<IdentityClient>(sdbus::createSystemBusConnection());
    }
    void restart()
    {
        client.reset();
        stack.stop("device-identity");
        start();
    }
    std::string snapshot() const
    {
        std::string s;
        for (const auto& f : {keyFile(), stateFile()}) {
            auto t = fs::readFile(f);
            s += f + ":" + (t ? *t : std::string("<absent>")) + "\n";
        }
        return s;
    }
    // The fleet CA, made with the openssl CLI as a fleet operator would.
    void makeCliCa()
    {
        auto r = sh({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", file("ca.key"), "-out", file("ca.pem"), "-subj", "/CN=Test Fleet CA", "-days", "30"});
        INFO(r.err);
        REQUIRE(r.status.success());
        REQUIRE(::chmod(file("ca.pem").c_str(), 0644) == 0);
    }
    // Signs a CSR with the CLI CA; returns the certificate PEM.
    std::string cliSign(const std::string& csrPem, int days, const std::string& out)
    {
        auto r = sh({"openssl", "x509", "-req", "-in", put(out + ".csr", csrPem), "-CA", file("ca.pem"), "-CAkey",
                     file("ca.key"), "-CAcreateserial", "-days", std::to_string(days), "-copy_extensions", "copy",
                     "-out", file(out)});
        INFO(r.err);
        REQUIRE(r.status.success());
        return *fs::readFile(file(out));
    }
};

std::string provisioningDoc(const std::string& caPem, const std::string& tenant, const std::string& deviceId = "")
{
    nlohmann::json d = {{"server_url", "https://hawkbit.example.com"},
                        {"tenant", tenant},
                        {"auth_mode", "gateway-token"},
                        {"token", "gw-token-123"},
                        {"server_ca_pem", caPem}};
    if (!deviceId.empty()) {
        d["device_id"] = deviceId;
    }
    return d.dump();
}

void expectBusError(const std::function<void()>& call, const std::string& name, const std::string& says)
{
    try {
        call();
        FAIL("expected " << name);
    } catch (const sdbus::Error& e) {
        CHECK(e.getName() == name);
        CHECK(contains(e.getMessage(), says));
    }
}

} // namespace

TEST_CASE("on first start the daemon makes a key only its user can read; DeviceId is stable across restarts")
{
    Fixture f;
    f.start();
    struct stat st {};
    REQUIRE(::stat(f.keyFile().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto ids = test::lookupUser(test::service("device-identity").user);
    REQUIRE(ids);
    CHECK(st.st_uid == ids->first);
    const std::string id = f.client->DeviceId();
    CHECK(id.size() == 64);
    CHECK(f.client->State() == "ok");
    CHECK(f.client->KeyStorage() == f.keyFile());
    CHECK_FALSE(f.client->Provisioned());
    auto key = fs::readFile(f.keyFile());
    f.restart();
    CHECK(f.client->DeviceId() == id);
    CHECK(*fs::readFile(f.keyFile()) == *key);
    auto busctl = f.stack.busctl({"get-property", kBus, kPath, kBus, "DeviceId"});
    CHECK(busctl.out == "s \"" + id + "\"\n");
}

TEST_CASE("openssl round trip: CSR signed by a CA made with openssl installs, and Sign of a SHA-256 digest verifies with openssl dgst over the data")
{
    Fixture f;
    f.makeCliCa();
    f.configure({{"fleet_ca", f.file("ca.pem")}});
    f.start();
    const std::string id = f.client->DeviceId();

    std::map<std::string, sdbus::Variant> opts = {{"O", sdbus::Variant(std::string("Acme"))},
                                                  {"SAN", sdbus::Variant(std::vector<std::string>{"DNS:dev.acme.test"})}};
    const std::string csr = f.client->CreateCertificateRequest(opts);
    auto verify = sh({"openssl", "req", "-in", f.put("dev.csr", csr), "-verify", "-noout", "-subject"});
    INFO(verify.err);
    CHECK(verify.status.success());
    CHECK(contains(verify.out, "CN = " + id));

    const std::string cert = f.cliSign(csr, 30, "dev.pem");
    f.client->clearSignals();
    f.client->InstallCertificate(cert);
    auto endDate = sh({"openssl", "x509", "-in", f.file("dev.pem"), "-noout", "-enddate"});
    CHECK(f.client->CertificateNotAfter() > static_cast<uint64_t>(std::time(nullptr)) + 29 * 86400);
    CHECK(f.client->CertificateNotAfter() < static_cast<uint64_t>(std::time(nullptr)) + 31 * 86400);
    REQUIRE(waitFor([&] { return !f.client->identityChanged().empty(); }));
    CHECK(f.client->identityChanged().front() == id);
    REQUIRE(waitFor([&] { return f.client->changedProperties().count("CertificateNotAfter") == 1; }));

    // What a TLS 1.3 client signs: the CertificateVerify content; the caller hashes it.
    const std::string challenge = std::string(64, ' ') + "TLS 1.3, client CertificateVerify" + std::string(1, '\0') +
                                  "transcript-hash-" + std::to_string(std::time(nullptr));
    auto digest = sh({"openssl", "dgst", "-sha256", "-binary", f.put("challenge", challenge)}).out;
    REQUIRE(digest.size() == 32);
    CHECK(f.client->SigningAlgorithms() == std::vector<std::string>{"ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"});
    auto sig = f.client->Sign("ecdsa-sha256", std::vector<uint8_t>(digest.begin(), digest.end()));
    REQUIRE(sh({"openssl", "x509", "-in", f.file("dev.pem"), "-pubkey", "-noout", "-out", f.file("pub.pem")})
                .status.success());
    auto dgst = sh({"openssl", "dgst", "-sha256", "-verify", f.file("pub.pem"), "-signature",
                    f.put("sig.der", std::string(sig.begin(), sig.end())), f.put("challenge", challenge)});
    INFO(dgst.err);
    CHECK(dgst.status.success());
    CHECK(contains(dgst.out, "Verified OK"));
    auto tampered = sh({"openssl", "dgst", "-sha256", "-verify", f.file("pub.pem"), "-signature", f.file("sig.der"),
                        f.put("other", challenge + "!")});
    CHECK_FALSE(tampered.status.success());

    // The installed chain is what openssl verify accepts against the CA, and survives a restart.
    f.restart();
    CHECK(f.client->CertificateNotAfter() > 0);
    CHECK(f.client->State() == "ok");
}

TEST_CASE("with key_type ed25519 the CSR verifies; Sign of a digest is NotSupported (pure Ed25519 signs messages)")
{
    Fixture f;
    f.configure({{"key_type", "ed25519"}});
    f.start();
    auto text = sh({"openssl", "pkey", "-in", f.keyFile(), "-noout", "-text"});
    CHECK(contains(text.out, "ED25519"));
    const std::string csr = f.client->CreateCertificateRequest({});
    CHECK(sh({"openssl", "req", "-in", f.put("ed.csr", csr), "-verify", "-noout"}).status.success());
    CHECK(f.client->SigningAlgorithms().empty());
    expectBusError([&] { f.client->Sign("ecdsa-sha256", std::vector<uint8_t>(32, 1)); },
                   "org.mbl.Error.NotSupported", "not possible with the device key (Ed25519");
}

TEST_CASE("no method of the interface hands out the private key: GetTlsCredentials gives the chain and server CA (revision 2)")
{
    Fixture f;
    f.makeCliCa();
    f.start();
    CHECK(f.client->InterfaceRevision() == 3u); // revision 3 (EST) keeps what revision 2 promised
    expectBusError([&] { f.client->GetTlsCredentials(); }, "org.mbl.Error.NotProvisioned", "no certificate");
    f.client->InstallCertificate(f.cliSign(f.client->CreateCertificateRequest({}), 10, "dev.pem"));
    const std::string ca = *fs::readFile(f.file("ca.pem"));
    f.client->Provision(provisioningDoc(ca, "DEFAULT"));
    auto [chain, serverCa] = f.client->GetTlsCredentials();
    CHECK(contains(chain, "BEGIN CERTIFICATE"));
    CHECK(serverCa == ca);

    // What a client of the bus sees: no method or signal carries a descriptor, and no
    // reply to any read method (as root, who may call them all) holds the key's bytes.
    auto intro = f.stack.busctl({"introspect", kBus, kPath, kBus});
    REQUIRE(intro.status.success());
    int methods = 0;
    for (const auto& line : str::split(intro.out, '\n')) {
        auto cols = str::words(line); // NAME TYPE SIGNATURE RESULT/VALUE FLAGS
        if (cols.size() >= 4 && (cols[1] == "method" || cols[1] == "signal")) {
            ++methods;
            INFO(line);
            CHECK(cols[2].find('h') == std::string::npos);
            CHECK(cols[3].find('h') == std::string::npos);
        }
    }
    CHECK(methods >= 9);
    auto key = fs::readFile(f.keyFile());
    REQUIRE(key);
    std::vector<std::string> keyLines;
    for (const auto& line : str::split(*key, '\n')) {
        if (!line.empty() && line.find("-----") == std::string::npos) {
            keyLines.push_back(line);
        }
    }
    REQUIRE_FALSE(keyLines.empty());
    std::string replies;
    for (const auto& m : {std::vector<std::string>{"GetTlsCredentials"}, {"GetProvisioning"}, {"GetProvisioningSecrets"},
                          {"CreateCertificateRequest", "a{sv}", "0"}}) {
        std::vector<std::string> argv = {"--json=short", "call", kBus, kPath, kBus};
        argv.insert(argv.end(), m.begin(), m.end());
        auto r = f.stack.busctl(argv);
        INFO(m.front() << ": " << r.err);
        CHECK(r.status.success());
        replies += r.out;
    }
    CHECK(contains(replies, "BEGIN CERTIFICATE"));
    CHECK_FALSE(contains(replies, "PRIVATE KEY"));
    for (const auto& line : keyLines) {
        CHECK_FALSE(contains(replies, line));
    }
}

TEST_CASE("every bad input over the bus gets a named error and nothing stored changes")
{
    Fixture f;
    f.makeCliCa();
    f.configure({{"fleet_ca", f.file("ca.pem")}});
    f.start();
    f.client->InstallCertificate(f.cliSign(f.client->CreateCertificateRequest({}), 10, "dev.pem"));
    f.client->Provision(provisioningDoc(*fs::readFile(f.file("ca.pem")), "DEFAULT"));
    const auto before = f.snapshot();
    const auto notAfter = f.client->CertificateNotAfter();
    const std::string id = f.client->DeviceId();

    // A CSR for another key (made with openssl), signed by the same CA.
    REQUIRE(sh({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                f.file("other.key"), "-subj", "/CN=other", "-out", f.file("other.csr")})
                .status.success());
    const std::string foreign = f.cliSign(*fs::readFile(f.file("other.csr")), 10, "other.pem");
    // Certificates for the device key with a validity window the CLI cannot make,
    // and one from a CA that is not the fleet's.
    auto deviceKey = identity::DeviceKey::load(f.keyFile());
    REQUIRE(deviceKey);
    auto otherCa = test::makeCa("Not the fleet CA");
    const std::string expired = test::certPem(test::makeLeaf(otherCa, deviceKey->get(), id, -86400 * 3, -60).get());
    const std::string future = test::certPem(test::makeLeaf(otherCa, deviceKey->get(), id, 86400, 86400 * 3).get());
    const std::string wrongCa = test::certPem(test::makeLeaf(otherCa, deviceKey->get(), id).get());

    const std::string inv = "org.mbl.Error.InvalidArgument";
    expectBusError([&] { f.client->InstallCertificate(""); }, inv, "empty");
    expectBusError([&] { f.client->InstallCertificate("garbage"); }, inv, "no PEM certificate");
    expectBusError([&] { f.client->InstallCertificate(foreign); }, inv, "another key");
    expectBusError([&] { f.client->InstallCertificate(expired); }, inv, "expired");
    expectBusError([&] { f.client->InstallCertificate(future); }, inv, "not valid yet");
    expectBusError([&] { f.client->InstallCertificate(wrongCa); }, "org.mbl.Error.SignatureInvalid", "fleet CA");

    const std::string ca = *fs::readFile(f.file("ca.pem"));
    auto doc = nlohmann::json::parse(provisioningDoc(ca, "NEW"));
    auto with = [&](const char* field, nlohmann::json value) {
        auto d = doc;
        if (value.is_null()) {
            d.erase(field);
        } else {
            d[field] = value;
        }
        return d.dump();
    };
    expectBusError([&] { f.client->Provision(with("tenant", nullptr)); }, inv, "'tenant' is missing");
    expectBusError([&] { f.client->Provision(with("auth_mode", "basic")); }, inv, "'auth_mode'");
    expectBusError([&] { f.client->Provision(with("server_url", "http://hawkbit.example.com")); }, inv, "'server_url'");
    expectBusError([&] { f.client->Provision(with("token", 12345)); }, inv, "'token' must be a string");
    expectBusError([&] { f.client->Provision(with("server_ca_pem", ca + std::string(65 * 1024, ' '))); }, inv,
                   "64 KiB");
    expectBusError([&] { f.client->Provision("not json"); }, inv, "not valid JSON");

    expectBusError([&] { f.client->CreateCertificateRequest({{"SAN", sdbus::Variant(std::string("DNS:x"))}}); }, inv,
                   "option 'SAN'");
    expectBusError([&] { f.client->CreateCertificateRequest({{"CN", sdbus::Variant(std::string("me"))}}); }, inv,
                   "option 'CN'");

    CHECK(f.snapshot() == before);
    CHECK(f.client->CertificateNotAfter() == notAfter);
    CHECK(f.client->DeviceId() == id);
    CHECK(nlohmann::json::parse(f.client->GetProvisioning())["tenant"] == "DEFAULT");
    CHECK(f.stack.running("device-identity"));
}

TEST_CASE("Sign over the bus: wrong sizes, unknown algorithms and a 16 MiB digest get named errors without echo; nothing changes")
{
    Fixture f;
    f.start();
    const auto before = f.snapshot();
    const std::string inv = "org.mbl.Error.InvalidArgument";
    expectBusError([&] { f.client->Sign("ecdsa-sha256", std::vector<uint8_t>(31, 0x51)); }, inv,
                   "32-byte digest; got 31 bytes");
    expectBusError([&] { f.client->Sign("ecdsa-sha384", std::vector<uint8_t>(32, 0x51)); }, inv,
                   "48-byte digest; got 32 bytes");
    expectBusError([&] { f.client->Sign("ecdsa-sha256", {}); }, inv, "got 0 bytes");
    expectBusError([&] { f.client->Sign("ecdsa-md5", std::vector<uint8_t>(16, 0x51)); },
                   "org.mbl.Error.NotSupported", "'ecdsa-md5' is not supported");
    expectBusError([&] { f.client->Sign("rsa-pss-sha256", std::vector<uint8_t>(32, 0x51)); },
                   "org.mbl.Error.NotSupported", "not possible with the device key (EC P-256");
    // 16 MiB of 'Q': refused by size, and the reply carries none of it. sdbus-c++ 1.2
    // (de)serialises an ay element by element on both sides (slow under ASan), so
    // the call gets minutes instead of the default 25 s.
    try {
        auto conn = sdbus::createSystemBusConnection();
        auto proxy = sdbus::createProxy(*conn, kBus, kPath);
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<uint8_t> sig;
        try {
            proxy->callMethod("Sign")
                .onInterface(kBus)
                .withTimeout(std::chrono::minutes(5))
                .withArguments(std::string("ecdsa-sha256"), std::vector<uint8_t>(16u << 20, 'Q'))
                .storeResultsTo(sig);
        } catch (const sdbus::Error&) {
            WARN("16 MiB Sign refused after "
                 << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s");
            throw;
        }
        FAIL("a 16 MiB digest was signed");
    } catch (const sdbus::Error& e) {
        INFO(e.getName() << ": " << e.getMessage().substr(0, 200));
        CHECK(e.getName() == inv);
        CHECK(contains(e.getMessage(), "got 16777216 bytes"));
        CHECK(e.getMessage().size() < 200);
    }
    CHECK(f.snapshot() == before);
    CHECK(f.client->State() == "ok");
    // Still serving.
    CHECK(f.client->Sign("ecdsa-sha256", std::vector<uint8_t>(32, 0x51)).size() > 60);
}

TEST_CASE("Sign is rate-limited (Busy with the wait) and logged with the caller's uid")
{
    Fixture f;
    f.start();
    const std::vector<uint8_t> digest(32, 0x42);
    int served = 0;
    int busy = 0;
    const int n = 200;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
        try {
            (void)f.client->Sign("ecdsa-sha256", digest);
            ++served;
        } catch (const sdbus::Error& e) {
            REQUIRE(e.getName() == "org.mbl.Error.Busy");
            CHECK(contains(e.getMessage(), "retry in"));
            ++busy;
        }
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO("served " << served << ", busy " << busy << " in " << elapsed << " s");
    // Never more than the burst plus what the rate refilled meanwhile.
    CHECK(served <= 50 + static_cast<int>(50 * elapsed) + 1);
    if (elapsed < (n - 50) / 50.0 - 0.1) {
        CHECK(busy > 0);
    }
    // The journal gets the caller and the algorithm, and a flood is summarised.
    const std::string log = f.stack.log("device-identity");
    CHECK(contains(log, "Sign for uid 0 (pid "));
    CHECK(contains(log, "ecdsa-sha256 signed"));
    std::size_t lines = 0;
    for (std::size_t at = log.find("Sign for uid"); at != std::string::npos; at = log.find("Sign for uid", at + 1)) {
        ++lines;
    }
    CHECK(lines <= static_cast<std::size_t>(elapsed) + 3);

    // As the cloud client's user (what the policy allows), the log names its uid.
    auto cloud = test::lookupUser("mbl-cloud");
    REQUIRE(cloud);
    std::vector<std::string> sign = {"call", kBus, kPath, kBus, "Sign", "say", "ecdsa-sha256", "32"};
    for (int i = 0; i < 32; ++i) {
        sign.push_back("1");
    }
    // Wait out the limiter: the service says how long.
    for (int attempt = 0; attempt < 100; ++attempt) {
        auto r = f.stack.busctl(sign, std::string("mbl-cloud"));
        if (r.status.success()) {
            break;
        }
        REQUIRE(contains(r.err, "retry in"));
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    REQUIRE(waitFor([&] {
        return contains(f.stack.log("device-identity"), "Sign for uid " + std::to_string(cloud->first) + " (pid ");
    }));
}

// The identity service's unit runs it with ProtectProc=invisible: systemd mounts
// a /proc with hidepid=invisible for it, where another user's processes do not
// exist. A caller's uid must then come from the bus daemon (which recorded it
// when the caller connected), never from /proc/<pid>. Hidden from the normal
// run; the meson test identity-hidden-proc runs it inside such a mount
// (tests/identity/meson.build), as the unit would.
TEST_CASE("Sign from callers the service cannot see in /proc (its unit's ProtectProc=invisible) is served and "
          "logged with each caller's uid",
          "[.hidden-proc]")
{
    auto mounts = fs::readFile("/proc/self/mountinfo");
    if (!mounts || !contains(*mounts, "hidepid=invisible")) {
        test::skip("/proc is not mounted with hidepid=invisible (run it through the meson test identity-hidden-proc)");
    }
    Fixture f;
    f.start();
    // Root (this test) is invisible to the service's user.
    const std::vector<uint8_t> digest(32, 0x42);
    CHECK(f.client->Sign("ecdsa-sha256", digest).size() > 60);
    CHECK(waitFor([&] { return contains(f.stack.log("device-identity"), "Sign for uid 0 (pid "); }));
    // So is the cloud client's user, the one the policy lets sign.
    auto cloud = test::lookupUser("mbl-cloud");
    REQUIRE(cloud);
    std::vector<std::string> sign = {"call", kBus, kPath, kBus, "Sign", "say", "ecdsa-sha256", "32"};
    for (int i = 0; i < 32; ++i) {
        sign.push_back("1");
    }
    auto r = f.stack.busctl(sign, std::string("mbl-cloud"));
    for (int attempt = 0; attempt < 100 && !r.status.success() && contains(r.err, "retry in"); ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(25)); // the limiter said to wait
        r = f.stack.busctl(sign, std::string("mbl-cloud"));
    }
    INFO(r.err);
    CHECK(r.status.success());
    CHECK(waitFor([&] {
        return contains(f.stack.log("device-identity"), "Sign for uid " + std::to_string(cloud->first) + " (pid ");
    }));
}

TEST_CASE("policy: only root and the cloud client get the key and the secrets; mutating calls need privilege")
{
    Fixture f;
    f.makeCliCa();
    f.start();
    f.client->InstallCertificate(f.cliSign(f.client->CreateCertificateRequest({}), 10, "dev.pem"));
    const std::string ca = *fs::readFile(f.file("ca.pem"));
    f.client->Provision(provisioningDoc(ca, "DEFAULT"));
    const auto before = f.snapshot();

    auto call = [&](const std::optional<std::string>& user, std::vector<std::string> args) {
        std::vector<std::string> argv = {"call", kBus, kPath, kBus};
        argv.insert(argv.end(), args.begin(), args.end());
        return f.stack.busctl(argv, user);
    };
    auto denied = [](const RunResult& r) { return !r.status.success() && contains(r.err, "ccess denied"); };
    const std::string doc = provisioningDoc(ca, "OTHER");

    for (const char* user : {"mbl-test-user", "mbl-test-admin", "mbl-cloud"}) {
        INFO(user);
        CHECK(denied(call(user, {"GetTlsCredentials"})) == (std::string(user) != "mbl-cloud"));
        CHECK(denied(call(user, {"GetProvisioningSecrets"})) == (std::string(user) != "mbl-cloud"));
        auto pub = call(user, {"GetProvisioning"});
        CHECK(pub.status.success());
        CHECK_FALSE(contains(pub.out, "gw-token-123"));
        CHECK(f.stack.busctl({"get-property", kBus, kPath, kBus, "DeviceId"}, std::string(user)).status.success());
    }
    for (const char* user : {"mbl-test-user", "mbl-cloud"}) {
        INFO(user);
        CHECK(denied(call(user, {"FactoryReset"})));
        CHECK(denied(call(user, {"Provision", "s", doc})));
        CHECK(denied(call(user, {"InstallCertificate", "s", "x"})));
        CHECK(denied(call(user, {"Enroll"}))); // revision 3: mutating, as InstallCertificate
        CHECK(denied(call(user, {"Renew"})));
    }
    // Allowed to the admin group: without an "est" section the service says so.
    auto enroll = call(std::string("mbl-test-admin"), {"Enroll"});
    CHECK_FALSE(enroll.status.success());
    CHECK(contains(enroll.err, "no EST server is configured"));
    CHECK(f.stack.busctl({"get-property", kBus, kPath, kBus, "RenewalState"}, std::string("mbl-test-user")).out ==
          "s \"not-configured\"\n");
    // A handshake signature authenticates as the device: the cloud client and root only.
    std::vector<std::string> sign = {"Sign", "say", "ecdsa-sha256", "32"};
    for (int i = 0; i < 32; ++i) {
        sign.push_back(std::to_string(i));
    }
    CHECK(denied(call(std::string("mbl-test-user"), sign)));
    CHECK(denied(call(std::string("mbl-test-admin"), sign)));
    CHECK(call(std::string("mbl-cloud"), sign).status.success());
    CHECK(call(std::nullopt, sign).status.success());
    CHECK(f.snapshot() == before);

    auto secrets = call(std::string("mbl-cloud"), {"GetProvisioningSecrets"});
    CHECK(contains(secrets.out, "gw-token-123"));
    auto creds = call(std::string("mbl-cloud"), {"GetTlsCredentials"});
    CHECK(creds.status.success());
    CHECK(contains(creds.out, "BEGIN CERTIFICATE"));
    CHECK(call(std::nullopt, {"GetTlsCredentials"}).status.success());

    // The admin group may change the identity (here: provision), but not read the key.
    CHECK(call(std::string("mbl-test-admin"), {"Provision", "s", doc}).status.success());
    CHECK(nlohmann::json::parse(f.client->GetProvisioning())["tenant"] == "OTHER");
}

TEST_CASE("a corrupt key leaves the daemon up in a visible error state with a log line and no new identity")
{
    Fixture f;
    REQUIRE(fs::writeFileAtomic(f.keyFile(), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0600));
    auto ids = test::lookupUser(test::service("device-identity").user);
    REQUIRE(::chown(f.keyFile().c_str(), ids->first, ids->second) == 0);
    const auto before = f.snapshot();
    f.start();
    CHECK(contains(f.client->State(), "error: "));
    CHECK(f.client->DeviceId().empty());
    CHECK(contains(f.stack.log("device-identity"), "device key is unusable"));
    expectBusError([&] { f.client->Sign("ecdsa-sha256", std::vector<uint8_t>(32, 3)); }, "org.mbl.Error.Failed",
                   "does not make a new identity");
    CHECK(f.snapshot() == before);
}

TEST_CASE("an unreadable key (wrong owner) is an error state too, never replaced")
{
    Fixture f;
    REQUIRE(sh({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f.keyFile()})
                .status.success());
    REQUIRE(::chmod(f.keyFile().c_str(), 0600) == 0); // owned by root: the service user cannot read it
    const auto before = f.snapshot();
    f.start();
    CHECK(contains(f.client->State(), "not readable"));
    CHECK(f.snapshot() == before);
}

TEST_CASE("FactoryReset gives a new identity at once, announces it, and the next start keeps it")
{
    Fixture f;
    f.makeCliCa();
    f.start();
    const std::string oldId = f.client->DeviceId();
    f.client->InstallCertificate(f.cliSign(f.client->CreateCertificateRequest({}), 10, "dev.pem"));
    f.client->Provision(provisioningDoc(*fs::readFile(f.file("ca.pem")), "DEFAULT", "assigned-7"));
    CHECK(f.client->DeviceId() == "assigned-7");
    CHECK(f.client->Provisioned());
    f.client->clearSignals();
    f.client->FactoryReset();
    const std::string newId = f.client->DeviceId();
    CHECK(newId != oldId);
    CHECK(newId.size() == 64);
    CHECK_FALSE(f.client->Provisioned());
    CHECK(f.client->CertificateNotAfter() == 0);
    REQUIRE(waitFor([&] { return !f.client->identityChanged().empty(); }));
    CHECK(f.client->identityChanged().back() == newId);
    REQUIRE(waitFor([&] { return f.client->changedProperties().count("DeviceId") == 1; }));
    CHECK_FALSE(fs::exists(f.stateFile()));
    expectBusError([&] { f.client->GetProvisioning(); }, "org.mbl.Error.NotProvisioned", "not provisioned");
    f.restart();
    CHECK(f.client->DeviceId() == newId);
}

TEST_CASE("kill -9 in the middle of InstallCertificate or Provision leaves the old or the new state, whole")
{
    struct Point {
        const char* name;
        bool committed;
    };
    for (const Point point : {Point{"install-before-commit", false}, Point{"install-after-commit", true},
                              Point{"provision-before-commit", false}, Point{"provision-after-commit", true}}) {
        DYNAMIC_SECTION(point.name)
        {
            Fixture f;
            f.makeCliCa();
            f.start();
            const std::string ca = *fs::readFile(f.file("ca.pem"));
            const std::string csr = f.client->CreateCertificateRequest({});
            f.client->InstallCertificate(f.cliSign(csr, 10, "old.pem"));
            f.client->Provision(provisioningDoc(ca, "OLD"));
            const uint64_t oldNotAfter = f.client->CertificateNotAfter();
            const std::string oldId = f.client->DeviceId();
            const auto oldFiles = f.snapshot();
            const std::string newCert = f.cliSign(csr, 20, "new.pem");

            f.client.reset();
            f.stack.stop("device-identity");
            f.start({std::string("MBL_TEST_PAUSE=") + point.name + ":60"});
            const bool install = std::string(point.name).rfind("install", 0) == 0;
            // "--": the PEM argument starts with dashes.
            std::vector<std::string> argv = {"busctl", "--address=" + f.stack.address(), "--timeout=90", "--", "call",
                                             kBus,     kPath,                           kBus};
            if (install) {
                argv.insert(argv.end(), {"InstallCertificate", "s", newCert});
            } else {
                argv.insert(argv.end(), {"Provision", "s", provisioningDoc(ca, "NEW", "new-device-id")});
            }
            SpawnOptions so;
            so.dieWithParent = true;
            Fd devnull{::open("/dev/null", O_WRONLY | O_CLOEXEC)};
            so.stdoutFd = devnull.get();
            so.stderrFd = devnull.get();
            auto caller = Child::spawn(argv, so);
            REQUIRE(caller);
            REQUIRE(waitFor([&] { return contains(f.stack.log("device-identity"), point.name); },
                            std::chrono::milliseconds(15000)));
            // The bus thread still answers while the write is under way.
            CHECK(f.client->DeviceId() == oldId);
            f.client.reset();
            f.stack.kill("device-identity");
            CHECK_FALSE(caller->wait().success());

            f.start();
            CHECK(f.client->State() == "ok");
            auto prov = nlohmann::json::parse(f.client->GetProvisioning());
            if (!point.committed) {
                CHECK(f.snapshot() == oldFiles);
                CHECK(f.client->CertificateNotAfter() == oldNotAfter);
                CHECK(prov["tenant"] == "OLD");
                CHECK(f.client->DeviceId() == oldId);
            } else if (install) {
                CHECK(f.client->CertificateNotAfter() > oldNotAfter + 5 * 86400);
                CHECK(prov["tenant"] == "OLD");
            } else {
                CHECK(prov["tenant"] == "NEW");
                CHECK(f.client->DeviceId() == "new-device-id");
                CHECK(f.client->CertificateNotAfter() == oldNotAfter);
            }
            // No half-written file is left behind for anyone to trip over.
            auto names = sh({"ls", "-A", f.stateDir()});
            CHECK(names.out == "device.key\nidentity.json\n");
        }
    }
}

TEST_CASE("kill -9 in the middle of FactoryReset: the next start finishes the reset")
{
    Fixture f;
    f.makeCliCa();
    f.start();
    f.client->Provision(provisioningDoc(*fs::readFile(f.file("ca.pem")), "DEFAULT"));
    const std::string oldId = f.client->DeviceId();
    f.client.reset();
    f.stack.stop("device-identity");
    f.start({"MBL_TEST_PAUSE=reset-after-state-removed:60"});
    std::vector<std::string> argv = {"busctl", "--address=" + f.stack.address(), "--timeout=90", "call",
                                     kBus,     kPath,                           kBus,           "FactoryReset"};
    SpawnOptions so;
    so.dieWithParent = true;
    auto caller = Child::spawn(argv, so);
    REQUIRE(caller);
    REQUIRE(waitFor([&] { return contains(f.stack.log("device-identity"), "reset-after-state-removed"); },
                    std::chrono::milliseconds(15000)));
    f.client.reset();
    f.stack.kill("device-identity");
    caller->wait();
    f.start();
    CHECK(f.client->DeviceId() != oldId);
    CHECK_FALSE(f.client->Provisioned());
    CHECK(f.client->State() == "ok");
}

TEST_CASE("mblctl identity shows, makes a CSR, installs a certificate, provisions and resets")
{
    Fixture f;
    f.makeCliCa();
    f.start();
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    const std::string id = f.client->DeviceId();

    auto show = f.stack.runTool({mblctl, "identity", "show"});
    INFO(show.out << show.err);
    CHECK(show.status.code == 0);
    CHECK(contains(show.out, id));
    CHECK(contains(show.out, "Provisioned:         no"));

    auto csr = f.stack.runTool({mblctl, "identity", "csr", "--o", "Acme", "--san", "DNS:d.acme.test", "--out",
                                f.file("m.csr")});
    INFO(csr.err);
    REQUIRE(csr.status.code == 0);
    CHECK(sh({"openssl", "req", "-in", f.file("m.csr"), "-verify", "-noout"}).status.success());
    f.cliSign(*fs::readFile(f.file("m.csr")), 10, "m.pem");
    auto install = f.stack.runTool({mblctl, "identity", "install-cert", f.file("m.pem")});
    INFO(install.err);
    CHECK(install.status.code == 0);
    CHECK(f.client->CertificateNotAfter() > 0);

    auto bad = f.stack.runTool({mblctl, "identity", "install-cert", f.put("bad.pem", "nonsense")});
    CHECK(bad.status.code == 1);
    CHECK(contains(bad.err, "InvalidArgument"));

    f.put("prov.json", provisioningDoc(*fs::readFile(f.file("ca.pem")), "DEFAULT"));
    auto prov = f.stack.runTool({mblctl, "identity", "provision", f.file("prov.json")});
    INFO(prov.err);
    CHECK(prov.status.code == 0);
    auto json = f.stack.runTool({mblctl, "--json", "identity", "show"});
    auto doc = nlohmann::json::parse(json.out);
    CHECK(doc["provisioned"] == true);
    CHECK(doc["provisioning"]["tenant"] == "DEFAULT");
    CHECK_FALSE(contains(json.out, "gw-token-123"));

    auto denied = f.stack.runTool({mblctl, "identity", "reset", "--yes"}, std::string("mbl-test-user"));
    CHECK(denied.status.code == 1);
    CHECK(contains(denied.err, "ccess"));
    CHECK(f.client->DeviceId() == id);

    auto reset = f.stack.runTool({mblctl, "identity", "reset", "--yes"});
    INFO(reset.err);
    CHECK(reset.status.code == 0);
    CHECK(f.client->DeviceId() != id);
}
