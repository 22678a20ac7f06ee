// SPDX-License-Identifier: Apache-2.0
// EST (RFC 7030) without a network: the renewal state machine driven by a clock
// the test holds, the reading of EST answers (certs-only PKCS#7 made by the
// openssl CLI, and what a broken server sends), and the "est" configuration.

#include "ca_trust.h"
#include "est.h"
#include "openssl_cli.h"
#include "renewal.h"

#include "harness.h"

#include "mbl/fs.h"

#include <catch2/catch.hpp>

using namespace mbl;
using namespace mbl::identity;

namespace {

RenewalPolicy policy()
{
    RenewalPolicy p;
    p.configured = true;
    p.retryMinSeconds = 10;
    p.retryMaxSeconds = 80;
    return p;
}

} // namespace

TEST_CASE("renewal: planned at two thirds of the validity by default, at the configured fraction otherwise")
{
    RenewalEngine e(policy());
    CHECK(e.state() == RenewalState::NoCertificate);
    e.certificateInstalled(1000, 1000 + 3000, 1000);
    CHECK(e.state() == RenewalState::Valid);
    CHECK(e.nextAttempt() == 1000 + 2001); // 667 per mille of 3000 s
    CHECK(e.due(3000) == RenewalAction::None);
    CHECK(e.due(3001) == RenewalAction::Reenroll);
    RenewalPolicy half = policy();
    half.renewAtPermille = 500;
    RenewalEngine h(half);
    h.certificateInstalled(0, 100, 0);
    CHECK(h.nextAttempt() == 50);
}

TEST_CASE("renewal: a failure keeps the certificate, backs off doubling to the maximum, honours Retry-After; "
          "a success clears the error")
{
    RenewalEngine e(policy());
    e.certificateInstalled(0, 10000, 0);
    REQUIRE(e.attemptStarted(7000));
    CHECK(e.state() == RenewalState::Renewing);
    CHECK_FALSE(e.attemptStarted(7000)); // one at a time
    e.attemptFailed("org.mbl.Error.AccessDenied: 403", 7000);
    CHECK(e.state() == RenewalState::Retrying);
    CHECK(e.nextAttempt() == 7010);
    CHECK(e.lastError() == "org.mbl.Error.AccessDenied: 403");
    CHECK(e.notAfter() == 10000);
    std::time_t t = 7010;
    for (std::int64_t wait : {20, 40, 80, 80}) {
        REQUIRE(e.due(t) == RenewalAction::Reenroll);
        REQUIRE(e.attemptStarted(t));
        e.attemptFailed("x", t);
        CHECK(e.nextAttempt() == t + wait);
        t = e.nextAttempt();
    }
    REQUIRE(e.attemptStarted(t));
    e.attemptFailed("busy", t, 33);
    CHECK(e.nextAttempt() == t + 33);
    e.certificateInstalled(t, t + 100, t);
    CHECK(e.state() == RenewalState::Valid);
    CHECK(e.lastError().empty());
    CHECK(e.failures() == 0);
}

TEST_CASE("renewal: past notAfter the state is expired, nothing more is planned, and only an enrolment helps")
{
    RenewalEngine e(policy());
    e.certificateInstalled(0, 100, 0);
    CHECK(e.nextWakeup() == 66); // 667 per mille of 100 s, rounded down
    REQUIRE(e.attemptStarted(66));
    e.attemptFailed("refused", 66);
    CHECK(e.nextWakeup() == 76);
    e.tick(100);
    CHECK(e.state() == RenewalState::Expired);
    CHECK(e.nextAttempt() == 0);
    CHECK(e.nextWakeup() == 0);
    CHECK(e.due(1000) == RenewalAction::None);
    REQUIRE(e.attemptStarted(1000)); // Enroll by hand
    e.certificateInstalled(1000, 2000, 1000);
    CHECK(e.state() == RenewalState::Valid);
}

TEST_CASE("renewal: without a certificate an enrolment is due at once (enroll_at_start) or never; without EST nothing")
{
    RenewalEngine e(policy());
    e.certificateRemoved(500);
    CHECK(e.due(500) == RenewalAction::Enroll);
    REQUIRE(e.attemptStarted(500));
    e.attemptFailed("unreachable", 500);
    CHECK(e.due(510) == RenewalAction::Enroll);
    RenewalPolicy manual = policy();
    manual.enrollWithoutCertificate = false;
    RenewalEngine m(manual);
    m.certificateRemoved(500);
    CHECK(m.due(100000) == RenewalAction::None);
    RenewalEngine off{RenewalPolicy{}};
    off.certificateInstalled(0, 100, 0);
    CHECK(off.state() == RenewalState::NotConfigured);
    CHECK(off.nextWakeup() == 0);
    CHECK(std::string(renewalStateName(RenewalState::Retrying)) == "retrying");
}

TEST_CASE("EST answers: a certs-only PKCS#7 made by openssl is read; 202, 401, 403, garbage and no certificate are "
          "named errors")
{
    test::TempDir d{"mbl-est-unit"};
    const std::string p = d.path();
    REQUIRE(test::openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                           p + "/k.pem", "-out", p + "/c.pem", "-subj", "/CN=leaf", "-days", "1"})
                .status.success());
    REQUIRE(test::openssl({"crl2pkcs7", "-nocrl", "-certfile", p + "/c.pem", "-out", p + "/p7.pem"}).status.success());
    auto pem = fs::readFile(p + "/p7.pem");
    REQUIRE(pem);
    // The PEM armour off: the base64 body is what an EST server sends.
    std::string b64 = *pem;
    b64 = b64.substr(b64.find('\n') + 1);
    b64 = b64.substr(0, b64.find("-----END"));
    EstHttpReply ok{200, "application/pkcs7-mime; smime-type=certs-only", b64, ""};
    auto certs = certificatesFromReply(ok, "simpleenroll");
    REQUIRE(certs);
    CHECK(*certs == *fs::readFile(p + "/c.pem"));

    auto err = [](const EstHttpReply& r) { return certificatesFromReply(r, "simpleenroll"); };
    auto pending = err({202, "text/plain", "", "120"});
    REQUIRE_FALSE(pending);
    CHECK(pending.error().code == ErrorCode::Busy);
    CHECK(pending.error().message.find("retry after 120 s") != std::string::npos);
    CHECK(retryAfterSeconds("120") == 120);
    CHECK_FALSE(retryAfterSeconds("Fri, 31 Dec 1999 23:59:59 GMT"));
    CHECK(err({401, "text/plain", "", ""}).error().code == ErrorCode::AccessDenied);
    CHECK(err({403, "text/plain", "", ""}).error().code == ErrorCode::AccessDenied);
    CHECK(err({500, "text/plain", "boom", ""}).error().code == ErrorCode::Failed);
    auto garbage = err({200, "application/pkcs7-mime", "MIIBAAAA", ""});
    CHECK(garbage.error().code == ErrorCode::InvalidArgument);
    CHECK(garbage.error().message.find("not a PKCS#7") != std::string::npos);
    CHECK(err({200, "application/pkcs7-mime", "%%%", ""}).error().message.find("not base64") != std::string::npos);
    CHECK(err({200, "text/html", b64, ""}).error().message.find("Content-Type") != std::string::npos);
}

TEST_CASE("the est section of identity.json: strict keys, https only, a credential that names its files")
{
    auto read = [](const nlohmann::json& est) { return readEstConfig(Config({{"est", est}}, "identity.json")); };
    auto none = readEstConfig(Config(nlohmann::json::object(), "identity.json"));
    REQUIRE(none);
    CHECK_FALSE(none->has_value());
    auto good = read({{"url", "https://est.example/.well-known/est/"}, {"token_file", "/t"}});
    REQUIRE(good);
    REQUIRE(good->has_value());
    CHECK((*good)->url == "https://est.example/.well-known/est");
    CHECK((*good)->renewAtPermille == 667);
    CHECK(read({{"url", "http://est.example"}, {"token_file", "/t"}}).error().message.find("https://") !=
          std::string::npos);
    CHECK(read({{"url", "https://e"}, {"credential", "bootstrap-certificate"}}).error().message.find(
              "est.bootstrap_certificate") != std::string::npos);
    CHECK(read({{"url", "https://e"}, {"credential", "password"}}).error().message.find("est.credential") !=
          std::string::npos);
    Config typo({{"est", {{"url", "https://e"}, {"token_file", "/t"}, {"renew_at", 500}}}}, "identity.json");
    REQUIRE(readEstConfig(typo));
    auto st = typo.rejectUnreadKeys();
    REQUIRE_FALSE(st);
    CHECK(st.error().message.find("est.renew_at") != std::string::npos);
}

TEST_CASE("which /cacerts answers make a new fleet CA trusted (RFC 7030 §4.1.3): only one linked by NewWithOld to a "
          "trusted CA")
{
    // CAs and the NewWithOld certificate made by the openssl CLI, as a fleet's PKI would.
    test::TempDir d{"mbl-ca-trust"};
    auto path = [&](const std::string& n) { return d.path() + "/" + n; };
    auto read = [&](const std::string& n) {
        auto t = fs::readFile(path(n));
        REQUIRE(t);
        return *t;
    };
    auto ca = [&](const std::string& name, const std::string& cn) {
        REQUIRE(test::openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                               "-keyout", path(name + ".key"), "-out", path(name + ".pem"), "-days", "2", "-subj",
                               "/CN=" + cn, "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                               "keyUsage=critical,keyCertSign,cRLSign"})
                    .status.success());
    };
    ca("old", "Fleet CA");
    ca("new", "Fleet CA 2");
    ca("other", "Fleet CA"); // same name as the old one, another key
    REQUIRE(fs::writeFileAtomic(path("ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n"));
    REQUIRE(test::openssl({"req", "-new", "-key", path("new.key"), "-subj", "/CN=Fleet CA 2", "-out", path("new.csr")})
                .status.success());
    REQUIRE(test::openssl({"x509", "-req", "-in", path("new.csr"), "-CA", path("old.pem"), "-CAkey", path("old.key"),
                           "-CAcreateserial", "-out", path("nwo.pem"), "-days", "2", "-extfile", path("ext")})
                .status.success());
    // The same NewWithOld, signed by the unrelated CA instead of the trusted one.
    REQUIRE(test::openssl({"x509", "-req", "-in", path("new.csr"), "-CA", path("other.pem"), "-CAkey",
                           path("other.key"), "-CAcreateserial", "-out", path("nwo-other.pem"), "-days", "2",
                           "-extfile", path("ext")})
                .status.success());
    const std::time_t now = std::time(nullptr);
    const std::string old = read("old.pem");

    SECTION("the current CA alone: accepted, nothing added")
    {
        auto t = acceptCaCertificates(old, old, now);
        REQUIRE(t);
        CHECK(t->added == 0);
        CHECK(countCertificates(t->pem) == 1);
    }
    SECTION("new root + old root + NewWithOld: the new root is added, the old kept, each once")
    {
        auto t = acceptCaCertificates(old + old, read("new.pem") + old + read("nwo.pem"), now);
        REQUIRE(t);
        CHECK(t->added == 1);
        CHECK(countCertificates(t->pem) == 2);
        CHECK(t->pem.find(read("new.pem")) != std::string::npos);
    }
    SECTION("refused with SignatureInvalid: the new root alone, an unrelated CA of the same name, a NewWithOld "
            "signed by an untrusted CA")
    {
        for (const std::string& answer : {read("new.pem"), read("other.pem"), read("new.pem") + read("nwo-other.pem")}) {
            auto t = acceptCaCertificates(old, answer, now);
            REQUIRE_FALSE(t);
            CHECK(t.error().code == ErrorCode::SignatureInvalid);
            CHECK(t.error().message.find("is not a trusted fleet CA and is not signed by one") != std::string::npos);
        }
    }
    SECTION("after the rotation is trusted, the new root alone is accepted")
    {
        auto t = acceptCaCertificates(old + read("new.pem"), read("new.pem"), now);
        REQUIRE(t);
        CHECK(t->added == 0);
    }
    SECTION("no self-signed CA in the answer (NewWithOld alone): InvalidArgument")
    {
        auto t = acceptCaCertificates(old, read("nwo.pem"), now);
        REQUIRE_FALSE(t);
        CHECK(t.error().code == ErrorCode::InvalidArgument);
    }
}
