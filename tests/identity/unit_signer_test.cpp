// SPDX-License-Identifier: Apache-2.0
// Handshake signatures without a bus: each algorithm of the table against the
// openssl CLI's verification of the same data (what a TLS peer does), the caller
// and size checks, the rate limit and the audit log's coalescing.

#include "identity.h"
#include "signer.h"

#include "harness.h"
#include "openssl_cli.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using namespace mbl;
using namespace mbl::identity;

using test::openssl;

namespace {

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

struct Keys {
    test::TempDir tmp{"mbl-signer-unit"};
    std::string put(const std::string& name, const std::string& data)
    {
        const std::string p = tmp.path() + "/" + name;
        REQUIRE(fs::writeFileAtomic(p, data, 0600));
        return p;
    }
    // A key made by the openssl CLI, as a factory would, and its public half.
    std::string make(const std::string& name, const std::vector<std::string>& genpkeyArgs)
    {
        std::vector<std::string> args = {"genpkey"};
        args.insert(args.end(), genpkeyArgs.begin(), genpkeyArgs.end());
        args.insert(args.end(), {"-out", tmp.path() + "/" + name});
        auto r = openssl(args);
        INFO(r.err);
        REQUIRE(r.status.success());
        REQUIRE(openssl({"pkey", "-in", tmp.path() + "/" + name, "-pubout", "-out", tmp.path() + "/" + name + ".pub"})
                    .status.success());
        return tmp.path() + "/" + name;
    }
    // The digest of `data` as the openssl CLI computes it.
    std::string digest(const std::string& md, const std::string& data)
    {
        return openssl({"dgst", "-" + md, "-binary", put("data", data)}).out;
    }
    // `openssl dgst -verify` over the data itself: the check a TLS peer makes.
    bool verifies(const std::string& keyFile, const std::string& md, const std::string& data, const std::string& sig,
                  const std::vector<std::string>& sigopts = {})
    {
        std::vector<std::string> args = {"dgst", "-" + md, "-verify", keyFile + ".pub", "-signature", put("sig", sig)};
        for (const auto& o : sigopts) {
            args.insert(args.end(), {"-sigopt", o});
        }
        args.push_back(put("data", data));
        auto r = openssl(args);
        INFO(r.out << r.err);
        return r.status.success() && contains(r.out, "Verified OK");
    }
};

const std::string kContent = std::string(64, ' ') + "TLS 1.3, client CertificateVerify" + std::string(1, '\0') +
                             std::string(32, '\x5a');

} // namespace

TEST_CASE("an EC P-256 key signs ecdsa-sha256/384/512 digests that openssl dgst -verify accepts over the data")
{
    Keys k;
    const auto file = k.make("ec.pem", {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"});
    auto key = DeviceKey::load(file);
    REQUIRE(key);
    CHECK(algorithmsFor(*key) == std::vector<std::string>{"ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"});
    for (auto [alg, md] : {std::pair{SignAlgorithm::EcdsaSha256, "sha256"}, std::pair{SignAlgorithm::EcdsaSha384, "sha384"},
                           std::pair{SignAlgorithm::EcdsaSha512, "sha512"}}) {
        INFO(md);
        auto sig = signDigest(*key, alg, k.digest(md, kContent));
        REQUIRE(sig);
        CHECK(k.verifies(file, md, kContent, *sig));
        CHECK_FALSE(k.verifies(file, md, kContent + "x", *sig));
    }
    for (auto alg : {"rsa-pss-sha256", "rsa-pkcs1-sha256"}) {
        auto refused = signDigest(*key, *parseSignAlgorithm(alg), std::string(32, 'd'));
        REQUIRE_FALSE(refused);
        CHECK(refused.error().code == ErrorCode::NotSupported);
        CHECK(contains(refused.error().message, "EC P-256"));
    }
}

TEST_CASE("an RSA key signs rsa-pss (salt = hash length, MGF1 same hash) and rsa-pkcs1 digests openssl verifies")
{
    Keys k;
    const auto file = k.make("rsa.pem", {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"});
    auto key = DeviceKey::load(file);
    REQUIRE(key);
    CHECK(algorithmsFor(*key).size() == 6);
    const std::vector<std::string> pss = {"rsa_padding_mode:pss", "rsa_pss_saltlen:digest"};
    for (auto [alg, md] : {std::pair{"rsa-pss-sha256", "sha256"}, std::pair{"rsa-pss-sha384", "sha384"},
                           std::pair{"rsa-pss-sha512", "sha512"}}) {
        INFO(alg);
        auto sig = signDigest(*key, *parseSignAlgorithm(alg), k.digest(md, kContent));
        REQUIRE(sig);
        CHECK(k.verifies(file, md, kContent, *sig, pss));
        // TLS 1.3 peers insist on the salt length; a wrong one fails.
        CHECK_FALSE(k.verifies(file, md, kContent, *sig, {"rsa_padding_mode:pss", "rsa_pss_saltlen:20"}));
    }
    auto sig = signDigest(*key, SignAlgorithm::RsaPkcs1Sha256, k.digest("sha256", kContent));
    REQUIRE(sig);
    CHECK(k.verifies(file, "sha256", kContent, *sig));
    CHECK_FALSE(signDigest(*key, SignAlgorithm::EcdsaSha256, std::string(32, 'd')));
}

TEST_CASE("an RSASSA-PSS key offers PSS only")
{
    Keys k;
    const auto file = k.make("pss.pem", {"-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048"});
    auto key = DeviceKey::load(file);
    REQUIRE(key);
    CHECK(algorithmsFor(*key) == std::vector<std::string>{"rsa-pss-sha256", "rsa-pss-sha384", "rsa-pss-sha512"});
    auto sig = signDigest(*key, SignAlgorithm::RsaPssSha256, k.digest("sha256", kContent));
    REQUIRE(sig);
    CHECK(k.verifies(file, "sha256", kContent, *sig, {"rsa_padding_mode:pss", "rsa_pss_saltlen:digest"}));
    auto pkcs1 = signDigest(*key, SignAlgorithm::RsaPkcs1Sha256, std::string(32, 'd'));
    REQUIRE_FALSE(pkcs1);
    CHECK(pkcs1.error().code == ErrorCode::NotSupported);
}

TEST_CASE("Signer: wrong digest sizes are InvalidArgument without the bytes; unknown algorithms NotSupported")
{
    int calls = 0;
    Signer signer({0, 1234}, RateLimiter(1000, 1000), [&](SignAlgorithm, const std::string&) -> Expected<std::string> {
        ++calls;
        return std::string("sig");
    });
    auto req = [](const std::string& alg, std::string digest) {
        SignRequest r;
        r.uid = 1234;
        r.algorithm = alg;
        r.digest = std::move(digest);
        return r;
    };
    for (std::size_t size : {std::size_t(0), std::size_t(31), std::size_t(33), std::size_t(48),
                             std::size_t(16u << 20)}) {
        INFO(size);
        auto r = signer.sign(req("ecdsa-sha256", std::string(size, 'Q')));
        REQUIRE_FALSE(r);
        CHECK(r.error().code == ErrorCode::InvalidArgument);
        CHECK(contains(r.error().message, "32-byte digest; got " + std::to_string(size) + " bytes"));
        CHECK_FALSE(contains(r.error().message, "QQ"));
        CHECK(r.error().message.size() < 200);
    }
    auto unknown = signer.sign(req("ecdsa-md5", std::string(16, 'Q')));
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().code == ErrorCode::NotSupported);
    CHECK(contains(unknown.error().message, "'ecdsa-md5' is not supported"));
    // A long or binary name is not echoed back.
    auto junk = signer.sign(req(std::string(1u << 20, 'A'), std::string(32, 'Q')));
    REQUIRE_FALSE(junk);
    CHECK(junk.error().code == ErrorCode::NotSupported);
    CHECK(junk.error().message.size() < 300);
    CHECK(calls == 0);
    CHECK(signer.sign(req("ecdsa-sha256", std::string(32, 'Q'))));
    CHECK(calls == 1);
}

TEST_CASE("Signer: a uid outside the set is AccessDenied and nothing is signed")
{
    int calls = 0;
    Signer signer({0, 1234}, RateLimiter(1000, 1000), [&](SignAlgorithm, const std::string&) -> Expected<std::string> {
        ++calls;
        return std::string("sig");
    });
    SignRequest r;
    r.algorithm = "ecdsa-sha256";
    r.digest = std::string(32, 'd');
    for (uid_t uid : {uid_t(1), uid_t(65534), uid_t(1233)}) {
        r.uid = uid;
        auto refused = signer.sign(r);
        REQUIRE_FALSE(refused);
        CHECK(refused.error().code == ErrorCode::AccessDenied);
    }
    CHECK(calls == 0);
    r.uid = 0;
    CHECK(signer.sign(r));
    r.uid = 1234;
    CHECK(signer.sign(r));
    CHECK(calls == 2);
}

TEST_CASE("Signer: past the burst, requests are Busy with the wait until the next token, then served again")
{
    Clock::time_point now{};
    int calls = 0;
    Signer signer({0}, RateLimiter(10, 5),
                  [&](SignAlgorithm, const std::string&) -> Expected<std::string> {
                      ++calls;
                      return std::string("sig");
                  },
                  [&] { return now; });
    SignRequest r;
    r.algorithm = "ecdsa-sha256";
    r.digest = std::string(32, 'd');
    for (int i = 0; i < 5; ++i) {
        CHECK(signer.sign(r));
    }
    auto busy = signer.sign(r);
    REQUIRE_FALSE(busy);
    CHECK(busy.error().code == ErrorCode::Busy);
    CHECK(contains(busy.error().message, "retry in 100 ms"));
    CHECK(calls == 5);
    now += std::chrono::milliseconds(100);
    CHECK(signer.sign(r));
    CHECK_FALSE(signer.sign(r));
    now += std::chrono::seconds(10); // refills to the burst, not beyond
    for (int i = 0; i < 5; ++i) {
        CHECK(signer.sign(r));
    }
    CHECK_FALSE(signer.sign(r));
    CHECK(calls == 11);
}

TEST_CASE("SignAudit: the first request is logged at once, a flood is one line a second with counts")
{
    Clock::time_point t{};
    SignAudit audit(std::chrono::seconds(1));
    auto first = audit.record(999, 42, "ecdsa-sha256 signed", true, t);
    REQUIRE(first);
    CHECK(contains(*first, "uid 999 (pid 42): ecdsa-sha256 signed"));
    int lines = 0;
    for (int i = 1; i <= 100; ++i) {
        if (audit.record(999, 42, "ecdsa-sha256 signed", i % 10 != 0, t + std::chrono::milliseconds(i))) {
            ++lines;
        }
    }
    CHECK(lines == 0);
    auto next = audit.record(999, 42, "ecdsa-sha256 signed", true, t + std::chrono::milliseconds(1001));
    REQUIRE(next);
    CHECK(contains(*next, "90 more signed, 10 more refused"));
    // Another caller has its own line.
    CHECK(audit.record(0, 1, "ecdsa-sha256 signed", true, t + std::chrono::milliseconds(1002)));
}
