// SPDX-License-Identifier: Apache-2.0
// The identity logic without a bus: key, device id, CSR, certificate checks,
// provisioning validation, signing, TLS credentials and factory reset, checked
// from outside with the openssl CLI where a person would use it.

#include "identity.h"
#include "test_certs.h"

#include "harness.h"
#include "openssl_cli.h"

#include "mbl/fs.h"
#include "mbl/process.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <sys/stat.h>
#include <unistd.h>

using namespace mbl;
using namespace mbl::identity;

using test::openssl;

namespace {

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

struct Fixture {
    test::TempDir tmp{"mbl-identity-unit"};
    Paths paths = Paths::underRoot(tmp.path());
    std::string dir() const { return paths.state("identity"); }
    std::string keyFile() const { return dir() + "/device.key"; }
    std::string stateFile() const { return dir() + "/identity.json"; }

    std::unique_ptr<Identity> open(const nlohmann::json& cfg = nlohmann::json::object())
    {
        auto id = Identity::open(paths, Config(cfg, "identity.json"));
        INFO((id ? "" : id.error().describe()));
        REQUIRE(id);
        return std::move(id).value();
    }
    std::string write(const std::string& name, const std::string& data)
    {
        const std::string p = tmp.path() + "/" + name;
        REQUIRE(fs::writeFileAtomic(p, data, 0644));
        return p;
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
};

std::string provisioningDoc(const std::string& caPem, nlohmann::json extra = nlohmann::json::object())
{
    nlohmann::json d = {{"server_url", "https://hawkbit.example.com:8443"},
                        {"tenant", "DEFAULT"},
                        {"auth_mode", "target-token"},
                        {"token", "s3cr3t-token"},
                        {"server_ca_pem", caPem}};
    for (auto& [k, v] : extra.items()) {
        if (v.is_null()) {
            d.erase(k);
        } else {
            d[k] = v;
        }
    }
    return d.dump();
}

} // namespace

TEST_CASE("on first start an EC P-256 key is made with mode 0600 and DeviceId is the SHA-256 of its public key")
{
    Fixture f;
    auto id = f.open();
    struct stat st {};
    REQUIRE(::stat(f.keyFile().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    auto text = openssl({"pkey", "-in", f.keyFile(), "-noout", "-text"});
    CHECK(text.status.success());
    CHECK(contains(text.out, "prime256v1"));

    const std::string spki = f.tmp.path() + "/spki.der";
    REQUIRE(openssl({"pkey", "-in", f.keyFile(), "-pubout", "-outform", "DER", "-out", spki}).status.success());
    auto digest = openssl({"dgst", "-sha256", "-r", spki});
    const auto props = id->properties();
    CHECK(digest.out.substr(0, 64) == props.deviceId);
    CHECK(props.deviceId.size() == 64);
    CHECK(isValidDeviceId(props.deviceId));
    CHECK(props.state == "ok");
    CHECK(props.keyStorage == f.keyFile());
    CHECK_FALSE(props.provisioned);
    CHECK(props.certificateNotAfter == 0);
}

TEST_CASE("an existing key is never regenerated: a restart keeps the key file and the DeviceId")
{
    Fixture f;
    std::string firstId = f.open()->deviceId();
    auto keyBefore = fs::readFile(f.keyFile());
    REQUIRE(keyBefore);
    auto again = f.open();
    CHECK(again->deviceId() == firstId);
    CHECK(*fs::readFile(f.keyFile()) == *keyBefore);
}

TEST_CASE("key_type ed25519 makes an Ed25519 key whose pure Ed25519 signatures openssl verifies")
{
    Fixture f;
    auto id = f.open({{"key_type", "ed25519"}});
    auto text = openssl({"pkey", "-in", f.keyFile(), "-noout", "-text"});
    CHECK(contains(text.out, "ED25519"));
    const std::string data = "challenge from the server";
    auto key = DeviceKey::load(f.keyFile());
    REQUIRE(key);
    auto sig = key->sign(data.data(), data.size());
    REQUIRE(sig);
    CHECK(sig->size() == 64);
    // Pure Ed25519 signs messages, so it offers no digest algorithm for Sign.
    CHECK(id->signingAlgorithms().empty());
    auto refused = id->signDigest(SignAlgorithm::EcdsaSha256, std::string(32, 'd'));
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == ErrorCode::NotSupported);
    const std::string pub = f.tmp.path() + "/pub.pem";
    REQUIRE(openssl({"pkey", "-in", f.keyFile(), "-pubout", "-out", pub}).status.success());
    auto verify = openssl({"pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", f.write("data", data),
                           "-sigfile", f.write("sig", *sig)});
    INFO(verify.out << verify.err);
    CHECK(verify.status.success());
}

TEST_CASE("an unknown key_type stops the start with an error naming the key")
{
    Fixture f;
    auto id = Identity::open(f.paths, Config({{"key_type", "rsa"}}, "/etc/mbl/identity.json"));
    REQUIRE_FALSE(id);
    CHECK(contains(id.error().message, "key_type 'rsa'"));
    CHECK_FALSE(fs::exists(f.keyFile()));
}

TEST_CASE("a misspelled, unknown or mistyped key of identity.json stops the start naming the file and the key, and "
          "nothing is made")
{
    struct Case {
        nlohmann::json config;
        const char* message;
    };
    for (const Case& k : {Case{{{"key_typ", "ed25519"}}, "/etc/mbl/identity.json: unknown key 'key_typ' (expected one of: "
                                                         "est, fleet_ca, key_type, key_uri, state_dir)"},
                          Case{{{"fleet_ca", "/ca.pem"},
                                {"est", {{"url", "https://e"}, {"token_file", "/t"}, {"renew_at", 500}}}},
                               "/etc/mbl/identity.json: unknown key 'est.renew_at' (expected one of: "
                               "bootstrap_certificate, bootstrap_key, credential, enroll_at_start, renew_at_permille, "
                               "retry_max_seconds, retry_min_seconds, server_ca, timeout_seconds, token_file, url)"},
                          Case{{{"est", {{"url", "https://e"}, {"token_file", "/t"}}}},
                               "/etc/mbl/identity.json: key 'est' needs 'fleet_ca': an enrolled certificate is only "
                               "installed when it leads to the fleet CA"},
                          Case{{{"fleet_ca", {{"path", "/etc/ca.pem"}}}},
                               "/etc/mbl/identity.json: key 'fleet_ca' must be a string"},
                          Case{{{"key_uri", 7}}, "/etc/mbl/identity.json: key 'key_uri' must be a string"}}) {
        Fixture f;
        auto id = Identity::open(f.paths, Config(k.config, "/etc/mbl/identity.json"));
        REQUIRE_FALSE(id);
        CHECK(id.error().code == ErrorCode::InvalidArgument);
        CHECK(id.error().message == k.message);
        CHECK_FALSE(fs::exists(f.dir()));
    }
}

TEST_CASE("a corrupt key puts the service in the error state and is neither replaced nor used")
{
    Fixture f;
    REQUIRE(fs::makeDirs(f.dir(), 0700));
    REQUIRE(fs::writeFileAtomic(f.keyFile(), "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n",
                                0600));
    const auto before = f.snapshot();
    auto id = f.open();
    const auto props = id->properties();
    CHECK(contains(props.state, "error: "));
    CHECK(contains(props.state, "no usable private key"));
    CHECK(props.deviceId.empty());
    CHECK(f.snapshot() == before);
    auto sig = id->signDigest(SignAlgorithm::EcdsaSha256, std::string(32, 'x'));
    REQUIRE_FALSE(sig);
    CHECK(sig.error().code == ErrorCode::Failed);
    CHECK(contains(sig.error().message, "does not make a new identity"));
    CHECK_FALSE(id->createCertificateRequest({}));
    CHECK_FALSE(id->provision("{}"));
    CHECK(f.snapshot() == before);
}

TEST_CASE("a key path that cannot be read (a dangling link) is an error state, not a reason for a new key")
{
    Fixture f;
    REQUIRE(fs::makeDirs(f.dir(), 0700));
    REQUIRE(::symlink("/nonexistent/device.key", f.keyFile().c_str()) == 0);
    auto id = f.open();
    CHECK(contains(id->properties().state, "error: "));
    char target[256] = {0};
    CHECK(::readlink(f.keyFile().c_str(), target, sizeof target - 1) > 0);
    CHECK(std::string(target) == "/nonexistent/device.key");
}

TEST_CASE("the key is loaded through an OpenSSL key URI: a file: URI to an openssl-made key works as is")
{
    Fixture f;
    const std::string key = f.tmp.path() + "/factory.key";
    REQUIRE(openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key})
                .status.success());
    auto id = f.open({{"key_uri", "file:" + key}});
    const auto props = id->properties();
    CHECK(props.state == "ok");
    CHECK(props.keyStorage == "file:" + key);
    auto viaPath = DeviceKey::load(key);
    REQUIRE(viaPath);
    CHECK(props.deviceId == viaPath->derivedDeviceId());
    CHECK_FALSE(fs::exists(f.keyFile())); // no second key was made

    CHECK(filePathOfKeyUri("file:///a/b.key") == std::optional<std::string>("/a/b.key"));
    CHECK(filePathOfKeyUri("/a/b.key") == std::optional<std::string>("/a/b.key"));
    CHECK_FALSE(filePathOfKeyUri("pkcs11:token=dev;object=key").has_value());
}

TEST_CASE("a key URI no provider can open (pkcs11: without the module) is an error state and makes no key")
{
    Fixture f;
    auto id = f.open({{"key_uri", "pkcs11:token=device;object=identity"}});
    CHECK(contains(id->properties().state, "error: "));
    CHECK(contains(id->properties().state, "pkcs11:token=device"));
    CHECK_FALSE(fs::exists(f.keyFile()));
}

TEST_CASE("the CSR has CN = DeviceId, the subject fields and SANs asked for, and openssl req -verify accepts it")
{
    Fixture f;
    auto id = f.open();
    CsrOptions opts;
    opts.subject = {{"O", "Acme Devices"}, {"OU", "Fleet 7"}, {"C", "GB"}, {"ST", "Cambs"}, {"L", "Cambridge"}};
    opts.san = {"DNS:dev-42.fleet.example.com", "IP:10.1.2.3", "URI:urn:dev:42"};
    auto csr = id->createCertificateRequest(opts);
    REQUIRE(csr);
    const std::string path = f.write("dev.csr", *csr);
    auto verify = openssl({"req", "-in", path, "-verify", "-noout"});
    INFO(verify.err);
    CHECK(verify.status.success());
    auto text = openssl({"req", "-in", path, "-noout", "-text", "-nameopt", "RFC2253"});
    CHECK(contains(text.out, "CN=" + id->deviceId()));
    CHECK(contains(text.out, "O=Acme Devices"));
    CHECK(contains(text.out, "OU=Fleet 7"));
    CHECK(contains(text.out, "C=GB"));
    CHECK(contains(text.out, "L=Cambridge"));
    CHECK(contains(text.out, "DNS:dev-42.fleet.example.com"));
    CHECK(contains(text.out, "IP Address:10.1.2.3"));
    CHECK(contains(text.out, "URI:urn:dev:42"));
    CHECK(contains(text.out, "ecdsa-with-SHA256"));
}

TEST_CASE("bad CSR options are refused with InvalidArgument naming the option")
{
    Fixture f;
    auto id = f.open();
    auto expectBad = [&](CsrOptions o, const std::string& named) {
        auto csr = id->createCertificateRequest(o);
        REQUIRE_FALSE(csr);
        CHECK(csr.error().code == ErrorCode::InvalidArgument);
        CHECK(contains(csr.error().message, named));
    };
    expectBad({{{"CN", "other"}}, {}}, "option 'CN'");
    expectBad({{{"C", "GBR"}}, {}}, "option 'C'");
    expectBad({{{"O", ""}}, {}}, "option 'O'");
    expectBad({{}, {"dev.example.com"}}, "option 'SAN'");
    expectBad({{}, {"IP:not-an-ip"}}, "option 'SAN'");
    expectBad({{}, {"DNS:a,DNS:b"}}, "option 'SAN'");
}

TEST_CASE("an Ed25519 identity makes a CSR that openssl verifies")
{
    Fixture f;
    auto id = f.open({{"key_type", "ed25519"}});
    auto csr = id->createCertificateRequest({});
    REQUIRE(csr);
    CHECK(openssl({"req", "-in", f.write("ed.csr", *csr), "-verify", "-noout"}).status.success());
}

TEST_CASE("a certificate for the device key chaining to the fleet CA installs and sets CertificateNotAfter")
{
    Fixture f;
    auto ca = test::makeCa("Fleet CA");
    const std::string caFile = f.write("fleet-ca.pem", ca.pem());
    auto id = f.open({{"fleet_ca", caFile}});
    auto key = DeviceKey::load(f.keyFile());
    REQUIRE(key);
    auto leaf = test::makeLeaf(ca, key->get(), id->deviceId());
    REQUIRE(id->installCertificate(test::certPem(leaf.get()) + ca.pem()));
    CHECK(id->properties().certificateNotAfter == notAfterOf(leaf.get()));
    CHECK(id->properties().certificateNotAfter > static_cast<std::uint64_t>(std::time(nullptr)));
    struct stat st {};
    REQUIRE(::stat(f.stateFile().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    // and it survives a restart
    auto again = f.open({{"fleet_ca", caFile}});
    CHECK(again->properties().certificateNotAfter == notAfterOf(leaf.get()));
}

TEST_CASE("a leaf issued by an intermediate installs with the intermediate in the chain, and not without it")
{
    Fixture f;
    auto root = test::makeCa("Fleet Root");
    auto inter = test::makeIntermediate(root, "Fleet Issuing CA");
    auto id = f.open({{"fleet_ca", f.write("root.pem", root.pem())}});
    auto key = DeviceKey::load(f.keyFile());
    auto leaf = test::makeLeaf(inter, key->get(), id->deviceId());
    auto alone = id->installCertificate(test::certPem(leaf.get()));
    REQUIRE_FALSE(alone);
    CHECK(alone.error().code == ErrorCode::SignatureInvalid);
    CHECK(id->installCertificate(test::certPem(leaf.get()) + inter.pem()));
}

TEST_CASE("every bad certificate is refused with a named error and nothing stored changes")
{
    Fixture f;
    auto ca = test::makeCa("Fleet CA");
    auto otherCa = test::makeCa("Somebody else's CA");
    auto id = f.open({{"fleet_ca", f.write("fleet-ca.pem", ca.pem())}});
    auto key = DeviceKey::load(f.keyFile());
    REQUIRE(key);
    // A valid state first, so "unchanged" means something.
    auto good = test::makeLeaf(ca, key->get(), id->deviceId());
    REQUIRE(id->installCertificate(test::certPem(good.get())));
    const auto before = f.snapshot();
    const auto notAfter = id->properties().certificateNotAfter;

    auto otherKey = DeviceKey::generate(KeyType::EcP256);
    struct Case {
        std::string label;
        std::string pem;
        ErrorCode code;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"empty", "", ErrorCode::InvalidArgument, "is empty"},
        {"garbage", "hello, I am not a certificate\n", ErrorCode::InvalidArgument, "no PEM certificate"},
        {"damaged PEM", "-----BEGIN CERTIFICATE-----\nAAAA!!!\n-----END CERTIFICATE-----\n", ErrorCode::InvalidArgument,
         "damaged"},
        {"another key", test::certPem(test::makeLeaf(ca, otherKey->get(), "other").get()), ErrorCode::InvalidArgument,
         "another key"},
        {"expired", test::certPem(test::makeLeaf(ca, key->get(), "x", -86400 * 10, -86400).get()),
         ErrorCode::InvalidArgument, "expired"},
        {"not yet valid", test::certPem(test::makeLeaf(ca, key->get(), "x", 86400, 86400 * 10).get()),
         ErrorCode::InvalidArgument, "not valid yet"},
        {"wrong CA", test::certPem(test::makeLeaf(otherCa, key->get(), "x").get()), ErrorCode::SignatureInvalid,
         "does not lead to the fleet CA"},
    };
    for (const auto& c : cases) {
        INFO(c.label);
        auto st = id->installCertificate(c.pem);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == c.code);
        CHECK(contains(st.error().message, c.says));
        CHECK(f.snapshot() == before);
        CHECK(id->properties().certificateNotAfter == notAfter);
    }
}

TEST_CASE("without a fleet CA any currently valid certificate for the device key installs")
{
    Fixture f;
    auto ca = test::makeCa("Factory CA");
    auto id = f.open();
    auto key = DeviceKey::load(f.keyFile());
    CHECK(id->installCertificate(test::certPem(test::makeLeaf(ca, key->get(), id->deviceId()).get())));
}

TEST_CASE("a valid provisioning document is stored; GetProvisioning hides the token, the secrets view has it")
{
    Fixture f;
    auto ca = test::makeCa("Server CA");
    auto id = f.open();
    REQUIRE(id->provision(provisioningDoc(ca.pem())));
    CHECK(id->properties().provisioned);
    auto pub = id->provisioningJson(false);
    REQUIRE(pub);
    auto doc = nlohmann::json::parse(*pub);
    CHECK(doc["server_url"] == "https://hawkbit.example.com:8443");
    CHECK(doc["tenant"] == "DEFAULT");
    CHECK(doc["auth_mode"] == "target-token");
    CHECK(doc["token_set"] == true);
    CHECK_FALSE(doc.contains("token"));
    CHECK_FALSE(contains(*pub, "s3cr3t-token"));
    CHECK(doc["device_id"] == id->deviceId());
    auto secret = nlohmann::json::parse(*id->provisioningJson(true));
    CHECK(secret["token"] == "s3cr3t-token");
    auto again = f.open();
    CHECK(again->properties().provisioned);
}

TEST_CASE("provisioning may assign the DeviceId, which then survives restarts")
{
    Fixture f;
    auto ca = test::makeCa("Server CA");
    auto id = f.open();
    REQUIRE(id->provision(provisioningDoc(ca.pem(), {{"device_id", "line-7_unit.0042"}})));
    CHECK(id->deviceId() == "line-7_unit.0042");
    CHECK(f.open()->deviceId() == "line-7_unit.0042");
}

TEST_CASE("mtls provisioning needs a certificate: from the document or already installed")
{
    Fixture f;
    auto ca = test::makeCa("Fleet CA");
    auto id = f.open();
    auto key = DeviceKey::load(f.keyFile());
    auto none = id->provision(provisioningDoc(ca.pem(), {{"auth_mode", "mtls"}, {"token", nullptr}}));
    REQUIRE_FALSE(none);
    CHECK(contains(none.error().message, "certificate_chain_pem"));
    auto leaf = test::certPem(test::makeLeaf(ca, key->get(), id->deviceId()).get());
    REQUIRE(id->provision(
        provisioningDoc(ca.pem(), {{"auth_mode", "mtls"}, {"token", nullptr}, {"certificate_chain_pem", leaf}})));
    CHECK(id->properties().certificateNotAfter > 0);
    auto creds = id->tlsCredentials();
    REQUIRE(creds);
    CHECK(contains(creds->chainPem, "BEGIN CERTIFICATE"));
}

TEST_CASE("every bad provisioning document is refused with InvalidArgument naming the field, and nothing changes")
{
    Fixture f;
    auto ca = test::makeCa("Server CA");
    auto id = f.open();
    REQUIRE(id->provision(provisioningDoc(ca.pem())));
    const auto before = f.snapshot();
    auto otherKey = DeviceKey::generate(KeyType::EcP256);
    const std::string foreignLeaf = test::certPem(test::makeLeaf(ca, otherKey->get(), "x").get());
    struct Case {
        std::string label;
        std::string doc;
        std::string says;
    };
    const std::vector<Case> cases = {
        {"not JSON", "{server_url:", "not valid JSON"},
        {"not an object", "[1,2]", "JSON object"},
        {"missing server_url", provisioningDoc(ca.pem(), {{"server_url", nullptr}}), "'server_url' is missing"},
        {"missing tenant", provisioningDoc(ca.pem(), {{"tenant", nullptr}}), "'tenant' is missing"},
        {"missing auth_mode", provisioningDoc(ca.pem(), {{"auth_mode", nullptr}}), "'auth_mode' is missing"},
        {"missing server_ca_pem", provisioningDoc(ca.pem(), {{"server_ca_pem", nullptr}}), "'server_ca_pem' is missing"},
        {"missing token", provisioningDoc(ca.pem(), {{"token", nullptr}}), "'token' is missing"},
        {"http URL", provisioningDoc(ca.pem(), {{"server_url", "http://hawkbit.example.com"}}), "'server_url'"},
        {"URL without host", provisioningDoc(ca.pem(), {{"server_url", "https:///x"}}), "'server_url'"},
        {"unknown auth mode", provisioningDoc(ca.pem(), {{"auth_mode", "password"}}), "'auth_mode'"},
        {"number tenant", provisioningDoc(ca.pem(), {{"tenant", 42}}), "'tenant' must be a string"},
        {"bool token", provisioningDoc(ca.pem(), {{"token", true}}), "'token' must be a string"},
        {"null device_id", provisioningDoc(ca.pem()).substr(0, provisioningDoc(ca.pem()).size() - 1) + ",\"device_id\":null}",
         "'device_id' must be a string"},
        {"object url", provisioningDoc(ca.pem(), {{"server_url", {{"a", 1}}}}), "'server_url' must be a string"},
        {"unknown field", provisioningDoc(ca.pem(), {{"sever_url", "https://typo"}}), "'sever_url' is not known"},
        {"CA not PEM", provisioningDoc(ca.pem(), {{"server_ca_pem", "nope"}}), "'server_ca_pem'"},
        {"bad device_id", provisioningDoc(ca.pem(), {{"device_id", "has space"}}), "'device_id'"},
        {"long device_id", provisioningDoc(ca.pem(), {{"device_id", std::string(65, 'a')}}), "'device_id'"},
        {"token with mtls", provisioningDoc(ca.pem(), {{"auth_mode", "mtls"}}), "'token'"},
        {"foreign certificate", provisioningDoc(ca.pem(), {{"certificate_chain_pem", foreignLeaf}}),
         "'certificate_chain_pem'"},
        {"too big", provisioningDoc(ca.pem(), {{"tenant", "T"}, {"server_ca_pem", ca.pem() + std::string(70000, '\n')}}),
         "64 KiB"},
    };
    for (const auto& c : cases) {
        INFO(c.label);
        auto st = id->provision(c.doc);
        REQUIRE_FALSE(st);
        CHECK(st.error().code == ErrorCode::InvalidArgument);
        CHECK(contains(st.error().message, c.says));
        CHECK(f.snapshot() == before);
    }
}

TEST_CASE("GetProvisioning before provisioning is NotProvisioned")
{
    Fixture f;
    auto id = f.open();
    auto doc = id->provisioningJson(false);
    REQUIRE_FALSE(doc);
    CHECK(doc.error().code == ErrorCode::NotProvisioned);
}

TEST_CASE("TLS credentials give the chain and the provisioned server CA, never the key; none before a certificate")
{
    Fixture f;
    auto ca = test::makeCa("Fleet CA");
    auto server = test::makeCa("Server CA");
    auto id = f.open();
    auto none = id->tlsCredentials();
    REQUIRE_FALSE(none);
    CHECK(none.error().code == ErrorCode::NotProvisioned);
    auto key = DeviceKey::load(f.keyFile());
    REQUIRE(id->installCertificate(test::certPem(test::makeLeaf(ca, key->get(), id->deviceId()).get())));
    auto creds = id->tlsCredentials();
    REQUIRE(creds);
    CHECK(contains(creds->chainPem, "BEGIN CERTIFICATE"));
    CHECK(creds->caPem.empty()); // not provisioned yet
    REQUIRE(id->provision(provisioningDoc(server.pem())));
    creds = id->tlsCredentials();
    REQUIRE(creds);
    CHECK(creds->caPem == server.pem());
    CHECK_FALSE(contains(creds->chainPem + creds->caPem, "PRIVATE KEY"));
}

TEST_CASE("FactoryReset removes certificate and provisioning and makes a new key and DeviceId at once")
{
    Fixture f;
    auto ca = test::makeCa("Fleet CA");
    auto id = f.open();
    auto key = DeviceKey::load(f.keyFile());
    REQUIRE(id->installCertificate(test::certPem(test::makeLeaf(ca, key->get(), id->deviceId()).get())));
    REQUIRE(id->provision(provisioningDoc(ca.pem(), {{"device_id", "assigned-1"}})));
    const std::string oldDerived = key->derivedDeviceId();
    REQUIRE(id->factoryReset());
    const auto props = id->properties();
    CHECK_FALSE(props.provisioned);
    CHECK(props.certificateNotAfter == 0);
    CHECK(props.deviceId != "assigned-1");
    CHECK(props.deviceId != oldDerived);
    CHECK_FALSE(fs::exists(f.stateFile()));
    auto newKey = DeviceKey::load(f.keyFile());
    REQUIRE(newKey);
    CHECK(newKey->derivedDeviceId() == props.deviceId);
    CHECK(f.open()->deviceId() == props.deviceId);
}

TEST_CASE("FactoryReset recovers a service whose key was corrupt")
{
    Fixture f;
    REQUIRE(fs::makeDirs(f.dir(), 0700));
    REQUIRE(fs::writeFileAtomic(f.keyFile(), "garbage", 0600));
    auto id = f.open();
    REQUIRE(contains(id->properties().state, "error"));
    REQUIRE(id->factoryReset());
    CHECK(id->properties().state == "ok");
    CHECK(id->properties().deviceId.size() == 64);
}

TEST_CASE("a factory reset cut short is finished on the next start")
{
    Fixture f;
    auto ca = test::makeCa("Server CA");
    std::string oldId;
    {
        auto id = f.open();
        oldId = id->deviceId();
        REQUIRE(id->provision(provisioningDoc(ca.pem())));
    }
    // What a crash right after the marker was written leaves.
    REQUIRE(fs::writeFileAtomic(f.dir() + "/reset-pending", "x", 0600));
    auto id = f.open();
    CHECK(id->deviceId() != oldId);
    CHECK_FALSE(id->properties().provisioned);
    CHECK_FALSE(fs::exists(f.dir() + "/reset-pending"));
}

TEST_CASE("temp files of an interrupted write are removed at start and never taken for state")
{
    Fixture f;
    auto ca = test::makeCa("Server CA");
    {
        auto id = f.open();
        REQUIRE(id->provision(provisioningDoc(ca.pem())));
    }
    const auto before = f.snapshot();
    REQUIRE(fs::writeFileAtomic(f.dir() + "/identity.json.tmp.123.456", "{\"truncat", 0600));
    REQUIRE(fs::writeFileAtomic(f.dir() + "/device.key.new", "half a key", 0600));
    auto id = f.open();
    CHECK(id->properties().state == "ok");
    CHECK(id->properties().provisioned);
    CHECK(f.snapshot() == before);
    CHECK_FALSE(fs::exists(f.dir() + "/identity.json.tmp.123.456"));
    CHECK_FALSE(fs::exists(f.dir() + "/device.key.new"));
}

TEST_CASE("a damaged state file is an error state that refuses changes until a factory reset")
{
    Fixture f;
    f.open();
    REQUIRE(fs::writeFileAtomic(f.stateFile(), "{ damaged", 0600));
    auto id = f.open();
    CHECK(contains(id->properties().state, "error: "));
    auto ca = test::makeCa("Server CA");
    auto st = id->provision(provisioningDoc(ca.pem()));
    REQUIRE_FALSE(st);
    CHECK(contains(st.error().message, "factory reset"));
    REQUIRE(id->factoryReset());
    CHECK(id->properties().state == "ok");
}

TEST_CASE("device ids follow hawkBit controllerId rules")
{
    CHECK(isValidDeviceId("abc-DEF_0.9"));
    CHECK(isValidDeviceId(std::string(64, 'a')));
    CHECK_FALSE(isValidDeviceId(std::string(65, 'a')));
    CHECK_FALSE(isValidDeviceId(""));
    CHECK_FALSE(isValidDeviceId(".."));
    CHECK_FALSE(isValidDeviceId("a/b"));
    CHECK_FALSE(isValidDeviceId("a b"));
}
