// SPDX-License-Identifier: Apache-2.0
// Enrolment and renewal over EST (RFC 7030, issue 15 item 4), seen from outside:
// the real identity service on a private bus with the real policy, enrolling
// against the EST test server (est_server.py, its CA signing with `openssl ca`)
// behind a real nginx with TLS client authentication. What a user sees: the
// DeviceIdentity1 properties and errors, the certificate the service hands out,
// mblctl's output, and the requests the server saw.

#include "est_fixture.h"
#include "harness.h"
#include "swtpm.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include "recording_identity_client.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fcntl.h>
#include <iostream>
#include <mutex>
#include <thread>

using namespace mbl;
using test::EstFixture;
using test::IdentityClient;
using test::TestStack;

namespace {

const char* const kBus = "org.mbl.DeviceIdentity1";
const char* const kPath = "/org/mbl/DeviceIdentity1";

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

// Waits for a state (polled); the bound only guards a hang on a loaded machine.
template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(90))
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
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
    EstFixture est;
    TestStack stack;
    test::TempDir work{"mbl-est-it"};
    std::unique_ptr<IdentityClient> client;

    std::string file(const std::string& name) const { return work.path() + "/" + name; }
    std::string put(const std::string& name, const std::string& data)
    {
        REQUIRE(fs::writeFileAtomic(file(name), data, 0644));
        return file(name);
    }
    std::string stateFile() const { return stack.root() + "/var/lib/mbl/identity/identity.json"; }
    std::string stored() const
    {
        auto t = fs::readFile(stateFile());
        return t ? *t : std::string("<absent>");
    }

    // identity.json with an EST section; `est` entries override the defaults;
    // `top` entries are added at the top level (e.g. key_uri).
    void configure(const nlohmann::json& estOverrides = {}, bool bootstrap = false,
                   const nlohmann::json& top = nlohmann::json::object())
    {
        nlohmann::json e = {{"url", est.estUrl()}, {"server_ca", est.tlsCaFile()}, {"enroll_at_start", false}};
        if (bootstrap) {
            e["credential"] = "bootstrap-certificate";
            e["bootstrap_certificate"] = est.bootstrapCertFile();
            e["bootstrap_key"] = est.bootstrapKeyFile();
        } else {
            e["credential"] = "basic";
            e["token_file"] = put("est-token", est.basicCredential() + "\n");
        }
        for (const auto& [k, v] : estOverrides.items()) {
            e[k] = v;
        }
        nlohmann::json cfg = {{"fleet_ca", est.fleetCaFile()}, {"est", e}};
        for (const auto& [k, v] : top.items()) {
            cfg[k] = v;
        }
        REQUIRE(fs::writeFileAtomic(stack.root() + "/etc/mbl/identity.json", cfg.dump(), 0644));
    }
    void start(const std::vector<std::string>& env = {})
    {
        TestStack::StartOptions opts;
        opts.env = env;
        auto st = stack.start("device-identity", opts);
        INFO((st ? "" : st.error().message));
        REQUIRE(st);
        client = std::make_unique<IdentityClient>(sdbus::createSystemBusConnection());
    }
    std::string chain() { return std::get<0>(client->GetTlsCredentials()); }
    // Subject, issuer and public key of the certificate the service hands out, by the openssl CLI.
    std::string describeChain()
    {
        auto r = sh({"openssl", "x509", "-in", put("chain.pem", chain()), "-noout", "-subject", "-issuer",
                     "-nameopt", "RFC2253"});
        REQUIRE(r.status.success());
        return r.out;
    }
    std::string certPubkey()
    {
        auto r = sh({"openssl", "x509", "-in", put("chain.pem", chain()), "-noout", "-pubkey"});
        REQUIRE(r.status.success());
        return r.out;
    }
    std::string log() { return stack.log("device-identity"); }
};

void expectBusError(const std::function<void()>& call, const std::string& name, const std::string& says)
{
    try {
        call();
        FAIL("expected " << name);
    } catch (const sdbus::Error& e) {
        INFO(e.getMessage());
        CHECK(e.getName() == name);
        CHECK(contains(e.getMessage(), says));
    }
}

std::uint64_t now()
{
    return static_cast<std::uint64_t>(std::time(nullptr));
}

} // namespace

TEST_CASE("first enrolment at start: with a one-time token (HTTP Basic) the service enrols over EST by itself; the "
          "certificate is for its key, names its DeviceId and comes from the fleet CA; renewal is planned at 2/3")
{
    Fixture f;
    f.est.configure({{"validity_seconds", 3000}});
    f.configure({{"enroll_at_start", true}});
    f.start();
    REQUIRE(waitFor([&] { return f.client->RenewalState() == "valid"; }));
    const std::string id = f.client->DeviceId();
    const std::string cert = f.describeChain();
    CHECK(contains(cert, "subject=CN=" + id));
    CHECK(contains(cert, "issuer=CN=Test Fleet CA"));
    // The certificate's public key is the service's key: the service signs, openssl verifies with the certificate.
    auto key = fs::readFile(f.stack.root() + "/var/lib/mbl/identity/device.key");
    REQUIRE(key);
    auto pub = sh({"openssl", "pkey", "-in", f.put("k.pem", *key), "-pubout"});
    CHECK(pub.out == f.certPubkey());
    auto verify = sh({"openssl", "verify", "-CAfile", f.est.fleetCaFile(), f.put("c.pem", f.chain())});
    CHECK(verify.status.success());
    const std::uint64_t notAfter = f.client->CertificateNotAfter();
    CHECK(notAfter >= now() + 2990);
    CHECK(notAfter <= now() + 3001);
    // Renewal at two thirds of notBefore..notAfter (3000 s): 2000 s after issue.
    const std::uint64_t next = f.client->NextRenewal();
    CHECK(next >= notAfter - 3000 + 1999);
    CHECK(next <= notAfter - 3000 + 2001);
    CHECK(f.client->LastRenewalError().empty());
    CHECK(f.client->InterfaceRevision() == 3);
    // The server saw /cacerts (RFC 7030 §4.1.1: the CA certificates first) and one
    // simpleenroll, both authenticated by the Basic credential.
    auto st = f.est.state();
    REQUIRE(st["requests"].size() == 2);
    CHECK(st["requests"][0]["path"] == "/.well-known/est/cacerts");
    CHECK(st["requests"][0]["auth"] == "basic");
    CHECK(st["requests"][1]["path"] == "/.well-known/est/simpleenroll");
    CHECK(st["requests"][1]["auth"] == "basic");
    CHECK(st["requests"][1]["status"] == 200);
    // Kept across a restart.
    const std::string before = f.chain();
    f.client.reset();
    f.stack.stop("device-identity");
    f.start();
    CHECK(f.chain() == before);
    CHECK(f.client->RenewalState() == "valid");
}

TEST_CASE("first enrolment with a factory bootstrap certificate (TLS client authentication), by Enroll")
{
    Fixture f;
    f.configure({}, true);
    f.start();
    CHECK(f.client->RenewalState() == "no-certificate");
    CHECK(f.client->NextRenewal() == 0); // enroll_at_start false: nothing planned
    expectBusError([&] { f.client->GetTlsCredentials(); }, "org.mbl.Error.NotProvisioned", "no certificate");
    f.client->Enroll();
    CHECK(f.client->RenewalState() == "valid");
    CHECK(contains(f.describeChain(), "subject=CN=" + f.client->DeviceId()));
    auto reqs = f.est.state()["requests"];
    REQUIRE(reqs.size() == 2); // /cacerts, then simpleenroll, each with the bootstrap certificate
    CHECK(reqs[0]["path"] == "/.well-known/est/cacerts");
    CHECK(reqs[0]["auth"] == "bootstrap-certificate");
    CHECK(reqs[1]["path"] == "/.well-known/est/simpleenroll");
    CHECK(reqs[1]["auth"] == "bootstrap-certificate");
    CHECK(f.client->identityChangedCount() >= 1);
}

TEST_CASE("a wrong one-time token is refused by the server: AccessDenied, no certificate, the error is shown")
{
    Fixture f;
    f.configure({{"token_file", f.put("bad-token", "factory:wrong\n")}});
    f.start();
    expectBusError([&] { f.client->Enroll(); }, "org.mbl.Error.AccessDenied", "401");
    CHECK(f.client->RenewalState() == "retrying");
    CHECK(contains(f.client->LastRenewalError(), "org.mbl.Error.AccessDenied"));
    CHECK(f.client->CertificateNotAfter() == 0);
}

TEST_CASE("renewal before expiry: a short-lived certificate is renewed by itself at the configured fraction with "
          "simplereenroll, authenticated by the certificate in force; the old one stays in use until then")
{
    Fixture f;
    f.est.configure({{"validity_seconds", 20}});
    f.configure({{"renew_at_permille", 400}}); // 8 s into 20 s
    f.start();
    f.client->Enroll();
    const std::string first = f.chain();
    const std::uint64_t firstNotAfter = f.client->CertificateNotAfter();
    const std::uint64_t planned = f.client->NextRenewal();
    CHECK(planned >= firstNotAfter - 20 + 7);
    CHECK(planned <= firstNotAfter - 20 + 9);
    const std::size_t changes = f.client->identityChangedCount();
    // Until the renewal the service hands out the first certificate.
    CHECK(f.chain() == first);
    REQUIRE(waitFor([&] { return f.client->CertificateNotAfter() != firstNotAfter; }));
    const std::uint64_t renewedAt = now();
    CHECK(renewedAt >= planned);
    CHECK(f.chain() != first);
    CHECK(contains(f.describeChain(), "subject=CN=" + f.client->DeviceId()));
    REQUIRE(waitFor([&] { return f.client->identityChangedCount() > changes; }));
    CHECK(f.client->RenewalState() == "valid");
    CHECK(f.client->NextRenewal() > planned);
    bool sawReenroll = false;
    const nlohmann::json server = f.est.state();
    for (const auto& r : server["requests"]) {
        if (r["path"] == "/.well-known/est/simplereenroll") {
            sawReenroll = true;
            CHECK(r["auth"] == "certificate");
            CHECK(r["status"] == 200);
        }
    }
    CHECK(sawReenroll);
    CHECK(contains(f.log(), "EST simplereenroll: installed certificate"));
}

TEST_CASE("renewal refused by the server: the old certificate is kept and works, the state shows the error and the "
          "retry; once the server agrees the old certificate authenticates the renewal")
{
    Fixture f;
    f.configure({{"retry_min_seconds", 600}});
    f.start();
    f.client->Enroll();
    const std::string first = f.chain();
    const std::string onDisk = f.stored();
    f.est.configure({{"reenroll", "refuse"}});
    expectBusError([&] { f.client->Renew(); }, "org.mbl.Error.AccessDenied", "403");
    CHECK(f.chain() == first);
    CHECK(f.stored() == onDisk);
    CHECK(f.client->RenewalState() == "retrying");
    CHECK(contains(f.client->LastRenewalError(), "org.mbl.Error.AccessDenied: "));
    CHECK(contains(f.client->LastRenewalError(), "403"));
    CHECK(f.client->NextRenewal() >= now() + 590);
    CHECK(f.client->NextRenewal() <= now() + 601);
    // The server's 202 with Retry-After: Busy, and the retry planned when the server said.
    f.est.configure({{"reenroll", "retry"}, {"retry_after", 42}});
    expectBusError([&] { f.client->Renew(); }, "org.mbl.Error.Busy", "retry after 42 s");
    CHECK(f.client->NextRenewal() >= now() + 40);
    CHECK(f.client->NextRenewal() <= now() + 43);
    CHECK(f.chain() == first);
    f.est.configure({{"reenroll", "ok"}});
    f.client->Renew();
    CHECK(f.chain() != first);
    CHECK(f.client->RenewalState() == "valid");
    CHECK(f.client->LastRenewalError().empty());
}

TEST_CASE("libcurl is in the service only while an EST exchange runs: not mapped at start, loaded for Enroll and "
          "Renew, unmapped again after each (issue 18: Debian's libcurl brings ~30 libraries)")
{
    Fixture f;
    f.configure();
    f.start();
    // The libraries mapped into the running service, as /proc shows them.
    auto mapsCurl = [&] {
        auto maps = fs::readFile("/proc/" + std::to_string(f.stack.pid("device-identity")) + "/maps", 1u << 24);
        REQUIRE(maps);
        return contains(*maps, "/libcurl");
    };
    CHECK(f.client->RenewalState() == "no-certificate");
    CHECK_FALSE(mapsCurl());
    f.client->Enroll();
    CHECK(f.client->RenewalState() == "valid");
    CHECK_FALSE(mapsCurl());
    const std::string first = f.chain();
    f.client->Renew(); // TLS client authentication with the device key, in the service
    CHECK(f.chain() != first);
    CHECK(f.client->LastRenewalError().empty());
    CHECK_FALSE(mapsCurl());
    f.client->Renew(); // and once more: loading again after an unload works
    CHECK(f.client->RenewalState() == "valid");
    CHECK_FALSE(mapsCurl());
    // Its threads (the worker ran the exchanges) end cleanly with nothing of
    // libcurl's left behind.
    f.client.reset();
    const auto stopped = f.stack.stop("device-identity").first;
    INFO(stopped.describe() << "\n" << f.log());
    CHECK(stopped.success());
}

TEST_CASE("CA rotation (RFC 7030 §4.1.3): the server's new fleet CA comes with NewWithOld in /cacerts; the old "
          "certificate authenticates the renewal, the new certificate is from the new CA, and a restart keeps the trust")
{
    Fixture f;
    f.configure({{"retry_min_seconds", 600}});
    f.start();
    f.client->Enroll();
    const std::string first = f.chain();
    CHECK(contains(f.describeChain(), "issuer=CN=Test Fleet CA\n"));
    const std::string trustFile = f.stack.root() + "/var/lib/mbl/identity/fleet-cas.pem";
    CHECK_FALSE(fs::exists(trustFile)); // nothing rotated yet: fleet_ca alone
    // The fleet rotates its CA: a new key, NewWithOld served in /cacerts.
    f.est.configure({{"ca", "fleet-ca-2"}});
    const std::size_t changedBefore = f.client->identityChangedCount();
    // Until the renewal, the old certificate stays in use (the cloud client's TLS
    // keeps its chain until IdentityChanged).
    CHECK(f.chain() == first);
    f.client->Renew();
    CHECK(f.chain() != first);
    CHECK(contains(f.describeChain(), "issuer=CN=Test Fleet CA 2\n"));
    CHECK(waitFor([&] { return f.client->identityChangedCount() > changedBefore; }));
    CHECK(f.client->RenewalState() == "valid");
    CHECK(f.client->LastRenewalError().empty());
    // The certificate verifies against the new CA alone, and not against the old one.
    auto verifyNew = sh({"openssl", "verify", "-CAfile", f.est.newFleetCaFile(), f.put("c.pem", f.chain())});
    INFO(verifyNew.out << verifyNew.err);
    CHECK(verifyNew.status.success());
    auto verifyOld = sh({"openssl", "verify", "-CAfile", f.est.fleetCaFile(), f.put("c.pem", f.chain())});
    CHECK_FALSE(verifyOld.status.success());
    // The renewal fetched /cacerts authenticated by the certificate in force.
    bool sawCacerts = false;
    const auto serverState = f.est.state();
    for (const auto& r : serverState["requests"]) {
        if (contains(r["path"].get<std::string>(), "cacerts") && r["auth"] == "certificate") {
            sawCacerts = true;
        }
    }
    CHECK(sawCacerts);
    CHECK(contains(f.log(), "a new fleet CA is trusted"));
    // The trusted set is stored: after a restart, a /cacerts answer with the new
    // CA alone (no NewWithOld) is accepted, since the device trusts it already,
    // and the certificate of the new CA renews.
    REQUIRE(fs::exists(trustFile));
    f.client.reset();
    f.stack.stop("device-identity");
    f.start();
    f.est.configure({{"cacerts", "new-only"}});
    const std::string rotated = f.chain();
    f.client->Renew();
    CHECK(f.chain() != rotated);
    CHECK(contains(f.describeChain(), "issuer=CN=Test Fleet CA 2\n"));
    CHECK(f.client->LastRenewalError().empty());
}

TEST_CASE("CA rotation refused: a /cacerts answer with the new CA alone (no NewWithOld) or an unrelated CA of the same "
          "name is SignatureInvalid, nothing is requested or changed, and the old certificate keeps working")
{
    Fixture f;
    f.configure({{"retry_min_seconds", 600}});
    f.start();
    f.client->Enroll();
    const std::string first = f.chain();
    const std::string onDisk = f.stored();
    const std::string trustFile = f.stack.root() + "/var/lib/mbl/identity/fleet-cas.pem";
    for (const char* mode : {"unrelated", "new-only"}) {
        SECTION(mode)
        {
            f.est.configure({{"cacerts", mode}, {"ca", std::string(mode) == "new-only" ? "fleet-ca-2" : "fleet-ca"}});
            const auto issued = f.est.state()["issued"].get<int>();
            expectBusError([&] { f.client->Renew(); }, "org.mbl.Error.SignatureInvalid",
                           "is not a trusted fleet CA and is not signed by one");
            CHECK(f.est.state()["issued"].get<int>() == issued); // no simplereenroll was sent
            CHECK(f.chain() == first);
            CHECK(f.stored() == onDisk);
            CHECK_FALSE(fs::exists(trustFile));
            CHECK(f.client->RenewalState() == "retrying");
            CHECK(contains(f.client->LastRenewalError(), "org.mbl.Error.SignatureInvalid: "));
            // The old certificate still authenticates: once the server answers as it should, it renews.
            f.est.configure({{"cacerts", "ca"}, {"ca", "fleet-ca"}});
            f.client->Renew();
            CHECK(f.chain() != first);
            CHECK(contains(f.describeChain(), "issuer=CN=Test Fleet CA\n"));
        }
    }
}

TEST_CASE("expired certificate: reported as expired (renewal refused until then), Renew says to enrol again, and "
          "Enroll with the factory credential gets a new certificate")
{
    Fixture f;
    f.est.configure({{"validity_seconds", 8}, {"reenroll", "refuse"}});
    f.configure({{"renew_at_permille", 250}, {"retry_min_seconds", 1}, {"retry_max_seconds", 2}});
    f.start();
    f.client->Enroll();
    const std::uint64_t notAfter = f.client->CertificateNotAfter();
    REQUIRE(waitFor([&] { return f.client->RenewalState() == "expired"; }));
    CHECK(now() >= notAfter);
    CHECK(f.client->NextRenewal() == 0);
    CHECK(contains(f.client->LastRenewalError(), "org.mbl.Error.AccessDenied"));
    auto states = f.client->renewalStates();
    CHECK(std::find(states.begin(), states.end(), "retrying") != states.end());
    CHECK(contains(f.log(), "the device certificate expired"));
    expectBusError([&] { f.client->Renew(); }, "org.mbl.Error.Failed", "enrol again with the factory credential");
    f.est.configure({{"validity_seconds", 3000}});
    f.client->Enroll();
    CHECK(f.client->RenewalState() == "valid");
    CHECK(f.client->CertificateNotAfter() > notAfter);
}

TEST_CASE("bad EST answers: a certificate for another key, another CN, another CA, already expired, garbage PKCS#7 "
          "or not base64 are each a named error; the identity is unchanged and the old certificate still renews")
{
    struct Case {
        const char* mode;
        const char* error;
        const char* says;
    };
    const Case cases[] = {
        {"wrong-key", "org.mbl.Error.InvalidArgument", "is for another key"},
        {"wrong-cn", "org.mbl.Error.InvalidArgument", "CN 'another-device' is not this device's id"},
        {"wrong-ca", "org.mbl.Error.SignatureInvalid", "does not lead to the fleet CA"},
        {"expired", "org.mbl.Error.InvalidArgument", "expired on"},
        {"garbage", "org.mbl.Error.InvalidArgument", "not a PKCS#7 structure"},
        {"not-base64", "org.mbl.Error.InvalidArgument", "is not base64"},
    };
    Fixture f;
    f.configure({{"retry_min_seconds", 600}});
    f.start();
    f.client->Enroll();
    const std::string first = f.chain();
    const std::string onDisk = f.stored();
    const std::uint64_t notAfter = f.client->CertificateNotAfter();
    for (const auto& c : cases) {
        INFO(c.mode);
        f.est.configure({{"enroll", c.mode}, {"reenroll", c.mode}});
        expectBusError([&] { f.client->Renew(); }, c.error, c.says);
        expectBusError([&] { f.client->Enroll(); }, c.error, c.says);
        CHECK(f.chain() == first);
        CHECK(f.stored() == onDisk);
        CHECK(f.client->CertificateNotAfter() == notAfter);
        CHECK(f.client->State() == "ok");
        CHECK(contains(f.client->LastRenewalError(), c.error));
    }
    // Still working: the old certificate authenticates a renewal.
    f.est.configure({{"enroll", "ok"}, {"reenroll", "ok"}});
    f.client->Renew();
    CHECK(f.chain() != first);
    CHECK(f.client->LastRenewalError().empty());
}

TEST_CASE("mblctl identity enroll, renew and show (not-after and next renewal)")
{
    Fixture f;
    f.configure();
    f.start();
    const std::string mblctl = test::buildRoot() + "/services/mblctl/mblctl";
    if (::access(mblctl.c_str(), X_OK) != 0) {
        test::skip("mblctl is not built");
    }
    auto enroll = f.stack.runTool({mblctl, "identity", "enroll"});
    INFO(enroll.err);
    REQUIRE(enroll.status.success());
    CHECK(contains(enroll.out, "Enrolled; certificate valid until 20"));
    auto renew = f.stack.runTool({mblctl, "identity", "renew"});
    INFO(renew.err);
    REQUIRE(renew.status.success());
    CHECK(contains(renew.out, "Renewed; certificate valid until 20"));
    auto show = f.stack.runTool({mblctl, "identity", "show"});
    REQUIRE(show.status.success());
    CHECK(contains(show.out, "CertificateNotAfter: 20"));
    CHECK(contains(show.out, "Renewal:             valid"));
    CHECK(contains(show.out, "NextRenewal:         20"));
    auto json = f.stack.runTool({mblctl, "identity", "show", "--json"});
    auto doc = nlohmann::json::parse(json.out);
    CHECK(doc["next_renewal"].get<std::uint64_t>() == f.client->NextRenewal());
    CHECK(doc["certificate_not_after"].get<std::uint64_t>() == f.client->CertificateNotAfter());
    f.est.configure({{"reenroll", "refuse"}});
    auto refused = f.stack.runTool({mblctl, "identity", "renew"});
    CHECK_FALSE(refused.status.success());
    CHECK(contains(refused.err, "AccessDenied"));
    show = f.stack.runTool({mblctl, "identity", "show"});
    CHECK(contains(show.out, "Renewal:             retrying"));
    CHECK(contains(show.out, "LastRenewalError:    org.mbl.Error.AccessDenied"));
}

TEST_CASE("EST enrolment time (simpleenroll over TLS through nginx, CA signing with openssl ca)", "[.timing]")
{
    // Same job on both sides: a new TLS connection to nginx, Basic auth, a base64
    // PKCS#10 body, the CA signing with openssl ca, a certs-only PKCS#7 back.
    // Ours: Enroll over D-Bus (CSR made and the answer checked and fsync'd in the
    // service). Bare: the curl CLI posting a CSR made once by openssl. Rotated order,
    // medians and paired per-round ratios; never asserted.
    Fixture f;
    f.configure();
    f.start();
    f.client->Enroll();
    auto csr = sh({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", f.file("bare.key"), "-subj", "/CN=" + f.client->DeviceId(), "-outform", "DER", "-out",
                   f.file("bare.der")});
    REQUIRE(csr.status.success());
    REQUIRE(sh({"openssl", "base64", "-in", f.file("bare.der"), "-out", f.file("bare.b64")}).status.success());
    const std::vector<std::string> bare = {"curl", "-sS", "-f", "--cacert", f.est.tlsCaFile(), "-u",
                                           f.est.basicCredential(), "-H", "Content-Type: application/pkcs10",
                                           "-H", "Content-Transfer-Encoding: base64", "--data-binary",
                                           "@" + f.file("bare.b64"), "-o", "/dev/null",
                                           f.est.estUrl() + "/simpleenroll"};
    auto ms = [](auto t0) {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    std::vector<double> ours;
    std::vector<double> theirs;
    std::vector<double> ratio;
    for (int i = 0; i < 30; ++i) {
        double a = 0;
        double b = 0;
        for (int side = 0; side < 2; ++side) {
            if ((side + i) % 2 == 0) {
                const auto t0 = std::chrono::steady_clock::now();
                f.client->Enroll();
                a = ms(t0);
            } else {
                const auto t0 = std::chrono::steady_clock::now();
                REQUIRE(sh(bare).status.success());
                b = ms(t0);
            }
        }
        ours.push_back(a);
        theirs.push_back(b);
        ratio.push_back(a / b);
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    std::cout << "EST simpleenroll, 30 rounds, rotated: Enroll over D-Bus median " << median(ours)
              << " ms (min " << *std::min_element(ours.begin(), ours.end()) << ", max "
              << *std::max_element(ours.begin(), ours.end()) << "); curl CLI median " << median(theirs) << " ms (min "
              << *std::min_element(theirs.begin(), theirs.end()) << ", max "
              << *std::max_element(theirs.begin(), theirs.end()) << "); paired ratio median " << median(ratio) << "\n";
    CHECK(f.client->RenewalState() == "valid");
}

TEST_CASE("factory reset resets the identity only: new key, the certificate and provisioning gone, renewal back to "
          "no-certificate; data, apps and the EST credential untouched, so the device enrols again with its new key")
{
    Fixture f;
    f.configure({{"enroll_at_start", true}});
    // What else is on the device: app and update data, and the configuration.
    const std::string root = f.stack.root();
    REQUIRE(fs::makeDirs(root + "/var/lib/mbl/apps/app1", 0755));
    REQUIRE(fs::writeFileAtomic(root + "/var/lib/mbl/apps/app1/data", "app data\n", 0644));
    REQUIRE(fs::makeDirs(root + "/var/lib/mbl/update", 0755));
    REQUIRE(fs::writeFileAtomic(root + "/var/lib/mbl/update/state.json", "{\"slot\":\"b\"}\n", 0644));
    const auto config = fs::readFile(root + "/etc/mbl/identity.json");
    f.start();
    REQUIRE(waitFor([&] { return f.client->RenewalState() == "valid"; }));
    const std::string oldId = f.client->DeviceId();
    const std::string oldChain = f.chain();
    const std::size_t issued = f.est.state()["issued"].get<std::size_t>();

    f.client->FactoryReset();
    const std::string newId = f.client->DeviceId();
    CHECK(newId != oldId);
    // enroll_at_start: the new key enrols by itself.
    REQUIRE(waitFor([&] { return f.client->RenewalState() == "valid" && f.client->CertificateNotAfter() != 0; }));
    CHECK(f.chain() != oldChain);
    CHECK(contains(f.describeChain(), "subject=CN=" + newId));
    CHECK(f.est.state()["issued"].get<std::size_t>() == issued + 1);
    expectBusError([&] { f.client->GetProvisioning(); }, "org.mbl.Error.NotProvisioned", "not provisioned");
    // Untouched.
    CHECK(*fs::readFile(root + "/var/lib/mbl/apps/app1/data") == "app data\n");
    CHECK(*fs::readFile(root + "/var/lib/mbl/update/state.json") == "{\"slot\":\"b\"}\n");
    CHECK(*fs::readFile(root + "/etc/mbl/identity.json") == *config);
}

TEST_CASE("kill -9 in the middle of a renewal leaves the old or the new certificate, whole; the old keeps working")
{
    struct Point {
        const char* name;
        bool committed;
    };
    for (const Point point : {Point{"enroll-before-commit", false}, Point{"enroll-after-commit", true}}) {
        DYNAMIC_SECTION(point.name)
        {
            Fixture f;
            f.configure({{"retry_min_seconds", 600}});
            f.start();
            f.client->Enroll();
            const std::string oldChain = f.chain();
            const std::string oldFile = f.stored();
            f.client.reset();
            f.stack.stop("device-identity");
            f.start({std::string("MBL_TEST_PAUSE=") + point.name + ":60"});
            SpawnOptions so;
            so.dieWithParent = true;
            Fd devnull{::open("/dev/null", O_WRONLY | O_CLOEXEC)};
            so.stdoutFd = devnull.get();
            so.stderrFd = devnull.get();
            auto caller = Child::spawn({"busctl", "--address=" + f.stack.address(), "--timeout=90", "call", kBus,
                                        kPath, kBus, "Renew"},
                                       so);
            REQUIRE(caller);
            REQUIRE(waitFor([&] { return contains(f.log(), point.name); }));
            // The bus still answers during the exchange, with the old certificate in force.
            CHECK(f.client->RenewalState() == "renewing");
            CHECK(f.chain() == oldChain);
            f.client.reset();
            f.stack.kill("device-identity");
            CHECK_FALSE(caller->wait().success());

            f.start();
            CHECK(f.client->State() == "ok");
            if (point.committed) {
                CHECK(f.chain() != oldChain);
                CHECK(contains(f.describeChain(), "subject=CN=" + f.client->DeviceId()));
            } else {
                CHECK(f.stored() == oldFile);
                CHECK(f.chain() == oldChain);
            }
            CHECK(f.client->RenewalState() == "valid");
            auto names = sh({"ls", "-A", f.stack.root() + "/var/lib/mbl/identity"});
            CHECK(names.out == "device.key\nidentity.json\n");
            f.client->Renew(); // whichever certificate survived authenticates the next renewal
            CHECK(f.client->LastRenewalError().empty());
        }
    }
}

TEST_CASE("a key in a TPM (swtpm): the CSR is signed in the TPM, and the renewal's TLS client signature too")
{
    if (const std::string why = test::Swtpm::missing(); !why.empty()) {
        test::skip("TPM: " + why);
    }
    Fixture f;
    auto tpm = test::Swtpm::start(f.file("tpm"));
    INFO((tpm ? "" : tpm.error().describe()));
    REQUIRE(tpm);
    f.configure({{"retry_min_seconds", 600}}, false,
                {{"key_uri", "tpm2:" + f.stack.root() + "/var/lib/mbl/identity/device.tss2"}});
    f.start({(*tpm)->tctiEnv()});
    REQUIRE(f.client->State() == "ok");
    f.client->Enroll();
    const std::string first = f.chain();
    CHECK(contains(f.describeChain(), "subject=CN=" + f.client->DeviceId()));
    f.client->Renew();
    INFO(f.log());
    CHECK(f.chain() != first);
    CHECK(f.client->LastRenewalError().empty());
    const nlohmann::json server = f.est.state();
    CHECK(server["requests"].back()["path"] == "/.well-known/est/simplereenroll");
    CHECK(server["requests"].back()["auth"] == "certificate");
}
