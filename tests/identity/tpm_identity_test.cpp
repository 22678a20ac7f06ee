// SPDX-License-Identifier: Apache-2.0
// The device key in a TPM 2.0 (key_uri "tpm2:<blob>"), against swtpm started and
// stopped here: the key is made in the TPM on first start, only a TPM-wrapped
// blob is on disk, CSR and Sign go through the TPM and verify with the openssl
// CLI, the key never leaves (GetTlsCredentials gives the chain only), and a copy of the
// whole state on a second TPM cannot sign (anti-cloning). Skips (77) where swtpm
// or tpm2-openssl is missing.

#include "identity.h"
#include "swtpm.h"

#include "harness.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include "org.mbl.DeviceIdentity1_proxy.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;
using namespace mbl::identity;
using test::Swtpm;

namespace {

const char* const kBus = "org.mbl.DeviceIdentity1";
const char* const kPath = "/org/mbl/DeviceIdentity1";

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

RunResult sh(const std::vector<std::string>& argv)
{
    auto r = mbl::run(argv);
    REQUIRE(r);
    return *r;
}

void requireTpm()
{
    static const std::string why = Swtpm::missing();
    if (!why.empty()) {
        test::skip("TPM tests: " + why);
    }
}

std::unique_ptr<Swtpm> startTpm(const std::string& dir)
{
    auto tpm = Swtpm::start(dir);
    INFO((tpm ? "" : tpm.error().describe()));
    REQUIRE(tpm);
    return std::move(tpm).value();
}

// Points this process's tpm2 provider at a TPM (tpm2-openssl reads the variable
// when a library context loads it; each TCTI gets its own context).
void useTpm(const Swtpm& tpm)
{
    REQUIRE(::setenv("TPM2OPENSSL_TCTI", tpm.tcti().c_str(), 1) == 0);
}

// Verifies a signature of `data` with a public key the way a TLS peer does.
bool verifies(const test::TempDir& dir, const std::string& pubPem, const std::string& data, const std::string& sig)
{
    REQUIRE(fs::writeFileAtomic(dir.path() + "/pub.pem", pubPem, 0644));
    REQUIRE(fs::writeFileAtomic(dir.path() + "/data", data, 0644));
    REQUIRE(fs::writeFileAtomic(dir.path() + "/sig", sig, 0644));
    auto r = sh({"openssl", "dgst", "-sha256", "-verify", dir.path() + "/pub.pem", "-signature", dir.path() + "/sig",
                 dir.path() + "/data"});
    return r.status.success() && contains(r.out, "Verified OK");
}

std::string sha256(const test::TempDir& dir, const std::string& data)
{
    REQUIRE(fs::writeFileAtomic(dir.path() + "/data", data, 0644));
    return sh({"openssl", "dgst", "-sha256", "-binary", dir.path() + "/data"}).out;
}

std::unique_ptr<Identity> openIdentity(const std::string& root, const std::string& blob)
{
    auto id = Identity::open(Paths::underRoot(root), Config({{"key_uri", "tpm2:" + blob}}, "identity.json"));
    INFO((id ? "" : id.error().describe()));
    REQUIRE(id);
    return std::move(id).value();
}

const std::string kContent = std::string(64, ' ') + "TLS 1.3, client CertificateVerify" + std::string(1, '\0') + "th";

} // namespace

TEST_CASE("tpm2: the first start makes the key in the TPM and stores only its wrapped blob; it signs and restarts")
{
    requireTpm();
    test::TempDir tmp("mbl-identity-tpm");
    auto tpm = startTpm(tmp.path() + "/tpm-a");
    useTpm(*tpm);
    const std::string blob = tmp.path() + "/root/var/lib/mbl/identity/device.tss2";
    std::string firstId;
    {
        auto id = openIdentity(tmp.path() + "/root", blob);
        INFO(id->properties().state);
        REQUIRE(id->properties().state == "ok");
        firstId = id->deviceId();
        CHECK(firstId.size() == 64);
        auto text = fs::readFile(blob);
        REQUIRE(text);
        CHECK(contains(*text, "-----BEGIN TSS2 PRIVATE KEY-----"));
        CHECK_FALSE(contains(*text, "BEGIN PRIVATE KEY"));
        struct stat st {};
        REQUIRE(::stat(blob.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0600);

        CHECK(id->signingAlgorithms() == std::vector<std::string>{"ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512"});
        CHECK(id->keyIsSlow());
        auto sig = id->signDigest(SignAlgorithm::EcdsaSha256, sha256(tmp, kContent));
        INFO((sig ? "" : sig.error().describe()));
        REQUIRE(sig);
        auto key = DeviceKey::load("tpm2:" + blob);
        REQUIRE(key);
        CHECK(verifies(tmp, key->publicPem(), kContent, *sig));
        CHECK_FALSE(verifies(tmp, key->publicPem(), kContent + "!", *sig));

        auto csr = id->createCertificateRequest({});
        REQUIRE(csr);
        REQUIRE(fs::writeFileAtomic(tmp.path() + "/dev.csr", *csr, 0644));
        auto req = sh({"openssl", "req", "-in", tmp.path() + "/dev.csr", "-verify", "-noout", "-subject"});
        INFO(req.err);
        CHECK(req.status.success());
        CHECK(contains(req.out, "CN = " + firstId));

        auto creds = id->tlsCredentials();
        REQUIRE_FALSE(creds);
        CHECK(creds.error().code == ErrorCode::NotProvisioned); // no certificate yet
    }
    // A restart loads the same key from its blob.
    auto again = openIdentity(tmp.path() + "/root", blob);
    CHECK(again->properties().state == "ok");
    CHECK(again->deviceId() == firstId);
}

TEST_CASE("tpm2: a copy of the state and the blob on another TPM cannot sign; the original still does")
{
    requireTpm();
    test::TempDir tmp("mbl-identity-tpm");
    auto tpmA = startTpm(tmp.path() + "/tpm-a");
    auto tpmB = startTpm(tmp.path() + "/tpm-b");
    useTpm(*tpmA);
    const std::string blobA = tmp.path() + "/a/var/lib/mbl/identity/device.tss2";
    auto original = openIdentity(tmp.path() + "/a", blobA);
    REQUIRE(original->properties().state == "ok");
    const std::string digest = sha256(tmp, kContent);
    REQUIRE(original->signDigest(SignAlgorithm::EcdsaSha256, digest));

    // The thief copies everything the device stores.
    REQUIRE(sh({"cp", "-a", tmp.path() + "/a", tmp.path() + "/b"}).status.success());
    const std::string blobB = tmp.path() + "/b/var/lib/mbl/identity/device.tss2";
    const auto copied = fs::readFile(blobB);
    REQUIRE(copied);
    useTpm(*tpmB);
    auto clone = openIdentity(tmp.path() + "/b", blobB);
    const auto props = clone->properties();
    INFO(props.state);
    CHECK(contains(props.state, "error: "));
    CHECK(contains(props.state, "another TPM"));
    auto sig = clone->signDigest(SignAlgorithm::EcdsaSha256, digest);
    REQUIRE_FALSE(sig);
    CHECK(sig.error().code == ErrorCode::Failed);
    CHECK_FALSE(clone->createCertificateRequest({}));
    // The copy is neither replaced by a new key nor changed.
    CHECK(*fs::readFile(blobB) == *copied);

    // The original, on its own TPM, signs on.
    CHECK(original->signDigest(SignAlgorithm::EcdsaSha256, digest));
}

TEST_CASE("tpm2: no TPM at the TCTI is a visible error state, no key is made, and nothing is written")
{
    requireTpm();
    test::TempDir tmp("mbl-identity-tpm");
    // A TCTI where nothing listens: a TPM that is absent.
    std::string port;
    {
        auto tpm = startTpm(tmp.path() + "/gone");
        port = std::to_string(tpm->port());
    }
    REQUIRE(::setenv("TPM2OPENSSL_TCTI", ("swtpm:host=127.0.0.1,port=" + port).c_str(), 1) == 0);
    const std::string blob = tmp.path() + "/root/var/lib/mbl/identity/device.tss2";
    auto id = openIdentity(tmp.path() + "/root", blob);
    const auto state = id->properties().state;
    INFO(state);
    CHECK(contains(state, "error: "));
    CHECK(contains(state, "tpm2"));
    CHECK_FALSE(fs::exists(blob));
    auto sig = id->signDigest(SignAlgorithm::EcdsaSha256, std::string(32, 'd'));
    REQUIRE_FALSE(sig);
    CHECK(sig.error().code == ErrorCode::Failed);
}

TEST_CASE("tpm2 over the bus: the daemon makes the key in the TPM, its CSR and Sign verify, GetTlsCredentials gives the chain only, a clone on another TPM fails")
{
    requireTpm();
    test::TempDir tmp("mbl-identity-tpm");
    auto tpmA = startTpm(tmp.path() + "/tpm-a");
    auto tpmB = startTpm(tmp.path() + "/tpm-b");
    test::TestStack stack;
    const std::string stateDir = stack.root() + "/var/lib/mbl/identity";
    const std::string blob = stateDir + "/device.tss2";
    REQUIRE(fs::writeFileAtomic(stack.root() + "/etc/mbl/identity.json",
                                nlohmann::json({{"key_uri", "tpm2:" + blob}}).dump(), 0644));
    test::TestStack::StartOptions opts;
    opts.env = {tpmA->tctiEnv()};
    auto st = stack.start("device-identity", opts);
    INFO((st ? "" : st.error().message));
    REQUIRE(st);
    auto conn = sdbus::createSystemBusConnection();
    auto proxy = sdbus::createProxy(*conn, kBus, kPath);
    auto prop = [&](const char* name) { return proxy->getProperty(name).onInterface(kBus); };
    CHECK(prop("State").get<std::string>() == "ok");
    CHECK(prop("KeyStorage").get<std::string>() == "tpm2:" + blob);
    const std::string deviceId = prop("DeviceId").get<std::string>();
    CHECK(contains(*fs::readFile(blob), "-----BEGIN TSS2 PRIVATE KEY-----"));
    CHECK(contains(stack.log("device-identity"), "device key in the TPM"));

    // CSR from the TPM key, signed by a CA made with the openssl CLI, installed.
    std::string csr;
    proxy->callMethod("CreateCertificateRequest").onInterface(kBus).withArguments(std::map<std::string, sdbus::Variant>{})
        .storeResultsTo(csr);
    REQUIRE(fs::writeFileAtomic(tmp.path() + "/dev.csr", csr, 0644));
    REQUIRE(sh({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                tmp.path() + "/ca.key", "-out", tmp.path() + "/ca.pem", "-subj", "/CN=Fleet CA", "-days", "3"})
                .status.success());
    auto signed_ = sh({"openssl", "x509", "-req", "-in", tmp.path() + "/dev.csr", "-CA", tmp.path() + "/ca.pem",
                       "-CAkey", tmp.path() + "/ca.key", "-CAcreateserial", "-days", "2", "-out",
                       tmp.path() + "/dev.pem"});
    INFO(signed_.err);
    REQUIRE(signed_.status.success());
    proxy->callMethod("InstallCertificate").onInterface(kBus).withArguments(*fs::readFile(tmp.path() + "/dev.pem")).storeResultsTo();
    CHECK(prop("CertificateNotAfter").get<uint64_t>() > 0);

    // Sign through the TPM verifies with the certificate's key.
    const std::string digest = sha256(tmp, kContent);
    std::vector<uint8_t> sig;
    proxy->callMethod("Sign").onInterface(kBus)
        .withArguments(std::string("ecdsa-sha256"), std::vector<uint8_t>(digest.begin(), digest.end()))
        .storeResultsTo(sig);
    auto pub = sh({"openssl", "x509", "-in", tmp.path() + "/dev.pem", "-pubkey", "-noout"});
    CHECK(verifies(tmp, pub.out, kContent, std::string(sig.begin(), sig.end())));

    // The key cannot leave: GetTlsCredentials gives the chain (and server CA) only.
    std::string chain;
    std::string serverCa;
    proxy->callMethod("GetTlsCredentials").onInterface(kBus).storeResultsTo(chain, serverCa);
    CHECK(chain == *fs::readFile(tmp.path() + "/dev.pem"));
    CHECK_FALSE(contains(chain + serverCa, "PRIVATE KEY"));
    // Nothing in the state directory holds a key in clear.
    auto grep = sh({"grep", "-rl", "BEGIN PRIVATE KEY", stateDir});
    CHECK_FALSE(grep.status.success());

    // Restart: same key, same id.
    stack.stop("device-identity");
    REQUIRE(stack.start("device-identity", opts));
    CHECK(prop("DeviceId").get<std::string>() == deviceId);
    CHECK(prop("State").get<std::string>() == "ok");

    // The clone: the same state on a device with another TPM.
    stack.stop("device-identity");
    opts.env = {tpmB->tctiEnv()};
    REQUIRE(stack.start("device-identity", opts));
    CHECK(contains(prop("State").get<std::string>(), "another TPM"));
    try {
        proxy->callMethod("Sign").onInterface(kBus)
            .withArguments(std::string("ecdsa-sha256"), std::vector<uint8_t>(digest.begin(), digest.end()))
            .storeResultsTo(sig);
        FAIL("a clone signed");
    } catch (const sdbus::Error& e) {
        CHECK(e.getName() == "org.mbl.Error.Failed");
    }
    CHECK(contains(*fs::readFile(blob), "-----BEGIN TSS2 PRIVATE KEY-----"));

    // Back on its own TPM, the device signs again.
    stack.stop("device-identity");
    opts.env = {tpmA->tctiEnv()};
    REQUIRE(stack.start("device-identity", opts));
    CHECK(prop("State").get<std::string>() == "ok");
    // A fresh vector: sdbus-c++ 1.2 appends to the one it is given.
    std::vector<uint8_t> again;
    proxy->callMethod("Sign").onInterface(kBus)
        .withArguments(std::string("ecdsa-sha256"), std::vector<uint8_t>(digest.begin(), digest.end()))
        .storeResultsTo(again);
    CHECK(verifies(tmp, pub.out, kContent, std::string(again.begin(), again.end())));
}

TEST_CASE("tpm2 factory reset: the blob goes and a new key is made in the TPM, the service signs only with the new "
          "one; and what a reset cannot do: a copy of the old blob taken before still loads into the same TPM")
{
    requireTpm();
    test::TempDir tmp("mbl-identity-tpm");
    auto tpm = startTpm(tmp.path() + "/tpm-a");
    useTpm(*tpm);
    const std::string blob = tmp.path() + "/root/var/lib/mbl/identity/device.tss2";
    auto id = openIdentity(tmp.path() + "/root", blob);
    REQUIRE(id->properties().state == "ok");
    const std::string oldId = id->deviceId();
    const auto oldBlob = fs::readFile(blob);
    REQUIRE(oldBlob);
    REQUIRE(fs::writeFileAtomic(tmp.path() + "/backup.tss2", *oldBlob, 0600)); // a backup of the data partition
    // Each key loaded here is freed at once: swtpm has no resource manager and few object slots.
    auto publicOf = [](const std::string& path) {
        auto k = DeviceKey::load("tpm2:" + path);
        INFO((k ? "" : k.error().describe()));
        REQUIRE(k);
        return k->publicPem();
    };
    const std::string oldPub = publicOf(blob);

    auto reset = id->factoryReset();
    INFO((reset ? "" : reset.error().describe()));
    REQUIRE(reset);
    CHECK(id->properties().state == "ok");
    CHECK(id->deviceId() != oldId);
    const auto newBlob = fs::readFile(blob);
    REQUIRE(newBlob);
    CHECK(contains(*newBlob, "-----BEGIN TSS2 PRIVATE KEY-----"));
    CHECK(*newBlob != *oldBlob);
    const std::string newPub = publicOf(blob);
    CHECK(newPub != oldPub);
    const std::string digest = sha256(tmp, kContent);
    auto sig = id->signDigest(SignAlgorithm::EcdsaSha256, digest);
    REQUIRE(sig);
    CHECK(verifies(tmp, newPub, kContent, *sig));
    CHECK_FALSE(verifies(tmp, oldPub, kContent, *sig));

    // The limit, pinned so that a change is noticed: the reset changes no TPM seed,
    // so the old blob from a backup still loads into this TPM and is the old key.
    CHECK(publicOf(tmp.path() + "/backup.tss2") == oldPub);
}
