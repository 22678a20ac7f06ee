// SPDX-License-Identifier: Apache-2.0
// The device key never leaves the identity service, seen from outside (issue 15):
// the real cloud client does mutual TLS with real nginx while its handshake
// signature is made by the identity service (DeviceIdentity1.Sign), with a file
// key and with a key in swtpm; it names the failure when the service is gone
// and recovers when it is back; and a copy of a TPM-backed identity on another
// TPM cannot authenticate while the original still does.

#include "cloud_env.h"
#include "swtpm.h"

#include "mbl/crypto.h"
#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <fcntl.h>
#include <set>
#include <sstream>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& hay, const std::string& needle)
{
    return hay.find(needle) != std::string::npos;
}

std::string identityKeyFile(const CloudEnv& env)
{
    return env.stack.root() + "/var/lib/mbl/identity/device.key";
}

// The private scalar of an EC key file, big-endian and as OpenSSL's BIGNUM keeps
// it in memory (64-bit limbs, least significant first: the bytes reversed).
std::vector<std::string> privateScalarForms(const std::string& keyPem)
{
    crypto::Bio bio(BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size())));
    crypto::Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    REQUIRE(key);
    BIGNUM* d = nullptr;
    REQUIRE(EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1);
    std::string be(32, '\0');
    REQUIRE(BN_bn2binpad(d, reinterpret_cast<unsigned char*>(be.data()), 32) == 32);
    BN_clear_free(d);
    std::string le(be.rbegin(), be.rend());
    return {be, le};
}

// Which of `needles` are anywhere in the readable memory of process `pid`
// (read through /proc/PID/mem as root; regions the kernel refuses are skipped).
std::set<std::size_t> memoryHolds(pid_t pid, const std::vector<std::string>& needles)
{
    std::set<std::size_t> found;
    auto maps = fs::readFile("/proc/" + std::to_string(pid) + "/maps");
    REQUIRE(maps);
    Fd mem{::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC)};
    REQUIRE(mem);
    std::size_t overlap = 0;
    for (const auto& n : needles) {
        overlap = std::max(overlap, n.size());
    }
    std::string buf(1 << 20, '\0');
    for (const auto& line : str::split(*maps, '\n')) {
        std::istringstream in(line);
        std::string range;
        std::string perms;
        in >> range >> perms;
        if (perms.empty() || perms[0] != 'r' || contains(line, "[vvar]") || contains(line, "[vsyscall]")) {
            continue;
        }
        const auto dash = range.find('-');
        const std::uint64_t start = std::stoull(range.substr(0, dash), nullptr, 16);
        const std::uint64_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
        if (end - start > (1ull << 30)) {
            continue; // sanitizer shadow and reservations: nothing is allocated there
        }
        std::string carry;
        for (std::uint64_t at = start; at < end;) {
            const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), end - at));
            const ssize_t n = ::pread(mem.get(), buf.data(), want, static_cast<off_t>(at));
            if (n <= 0) {
                break;
            }
            std::string window = carry + buf.substr(0, static_cast<std::size_t>(n));
            for (std::size_t i = 0; i < needles.size(); ++i) {
                if (contains(window, needles[i])) {
                    found.insert(i);
                }
            }
            carry = window.substr(window.size() > overlap ? window.size() - overlap : 0);
            at += static_cast<std::uint64_t>(n);
        }
    }
    return found;
}

// "Sign for uid U (pid P): ecdsa-sha256 signed" lines of the identity service's audit log.
std::size_t signedLinesFor(const CloudEnv& env, uid_t uid, pid_t pid)
{
    const std::string prefix = "Sign for uid " + std::to_string(uid) + " (pid " + std::to_string(pid) + "): ";
    std::size_t n = 0;
    for (const auto& line : str::split(env.stack.log("device-identity"), '\n')) {
        if (contains(line, prefix) && contains(line, " signed") && !contains(line, "(refused)")) {
            ++n;
        }
    }
    return n;
}

uid_t cloudUid()
{
    auto u = lookupUser("mbl-cloud");
    if (!u) {
        skip("user mbl-cloud does not exist (tests/setup.sh creates it)");
    }
    return u->first;
}

// What user mbl-cloud can read of a file (setpriv as the cloud client runs).
bool readableBy(const std::string& user, const std::string& path)
{
    auto r = mbl::run({"setpriv", "--reuid=" + user, "--regid=" + user, "--clear-groups", "cat", path});
    REQUIRE(r);
    return r->status.success();
}

// GetTlsCredentials as the cloud client sees it (busctl as mbl-cloud).
std::string tlsCredentialsAsCloud(CloudEnv& env)
{
    auto r = env.stack.busctl({"--json=short", "call", "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1",
                               "org.mbl.DeviceIdentity1", "GetTlsCredentials"},
                              std::string("mbl-cloud"));
    INFO(r.err);
    REQUIRE(r.status.success());
    return r.out;
}

// Forces new TLS connections: nginx reloads (new workers, new session-ticket keys),
// its old workers close the client's idle keep-alive connection.
void reloadNginx(CloudEnv& env)
{
    auto pidText = fs::readFile(env.cloud.dir() + "/nginx/nginx.pid");
    REQUIRE(pidText);
    REQUIRE(::kill(static_cast<pid_t>(std::stol(*pidText)), SIGHUP) == 0);
}

std::size_t pollsAfter(CloudEnv& env, std::size_t seen)
{
    auto polls = env.requests("/DEFAULT/controller/v1/dev-01");
    return polls.size() > seen ? polls.size() - seen : 0;
}

void requireTpm()
{
    static const std::string why = Swtpm::missing();
    if (!why.empty()) {
        skip("TPM tests: " + why);
    }
}

std::unique_ptr<Swtpm> startTpm(const std::string& dir)
{
    auto tpm = Swtpm::start(dir);
    INFO((tpm ? "" : tpm.error().describe()));
    REQUIRE(tpm);
    return std::move(tpm).value();
}

} // namespace

TEST_CASE("the cloud client does mutual TLS with nginx while the file key stays in the identity service")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }, 30s));
    auto polls = env.requests("/DEFAULT/controller/v1/dev-01");
    REQUIRE_FALSE(polls.empty());
    CHECK(polls[0]["cn"] == env.deviceId); // nginx verified the client certificate

    // The handshake signature came from the identity service, asked by the cloud client's process.
    const pid_t client = env.stack.pid("cloud-client");
    CHECK(signedLinesFor(env, cloudUid(), client) >= 1);

    // The cloud client cannot get the key: not from the file, not over the bus.
    const std::string key = *fs::readFile(identityKeyFile(env));
    CHECK_FALSE(readableBy("mbl-cloud", identityKeyFile(env)));
    const std::string creds = tlsCredentialsAsCloud(env);
    CHECK(contains(creds, "BEGIN CERTIFICATE"));
    CHECK_FALSE(contains(creds, "PRIVATE KEY"));

    // And its memory holds no copy of the private scalar, while the identity
    // service's does (the scan finds a key where there is one).
    auto forms = privateScalarForms(key);
    CHECK(memoryHolds(client, forms).empty());
    CHECK_FALSE(memoryHolds(env.stack.pid("device-identity"), forms).empty());
}

TEST_CASE("with the identity service gone a new handshake fails with a named reason, and the client recovers when it is back")
{
    CloudEnv env;
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }, 30s));
    const pid_t client = env.stack.pid("cloud-client");
    const std::size_t signedBefore = signedLinesFor(env, cloudUid(), client);
    REQUIRE(signedBefore >= 1);

    const std::size_t signedBeforeStop = signedLinesFor(env, cloudUid(), client);
    env.stack.stop("device-identity");
    reloadNginx(env);
    REQUIRE(CloudEnv::waitUntil(
        [&] { return contains(env.stringProp("LastError"), "the identity service did not sign it"); }, 30s));
    const std::string why = env.stringProp("LastError");
    INFO(why);
    CHECK(contains(why, "org.freedesktop.DBus.Error.ServiceUnknown"));
    CHECK(contains(why, "org.mbl.DeviceIdentity1) is not running"));
    CHECK(env.stringProp("ConnectionState") != "connected");

    // Back: the next handshake is signed again and polls go on.
    REQUIRE(env.stack.start("device-identity", env.identityStart));
    const std::size_t seen = env.requests("/DEFAULT/controller/v1/dev-01").size();
    REQUIRE(CloudEnv::waitUntil([&] { return pollsAfter(env, seen) >= 1; }, 30s));
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }, 30s));
    CHECK(signedLinesFor(env, cloudUid(), client) > signedBeforeStop); // the restarted service signed
}

TEST_CASE("tpm2: the cloud client does mutual TLS with nginx with the key in swtpm, signing through the identity service")
{
    requireTpm();
    TempDir tmp("mbl-identity-mtls-tpm");
    auto tpm = startTpm(tmp.path() + "/tpm-a");
    CloudEnvOptions o;
    o.identityConfig = [](const std::string& root) {
        return json{{"key_uri", "tpm2:" + root + "/var/lib/mbl/identity/device.tss2"}};
    };
    o.identityEnv = {tpm->tctiEnv()};
    CloudEnv env(o);
    const std::string blob = env.stack.root() + "/var/lib/mbl/identity/device.tss2";
    REQUIRE(CloudEnv::waitUntil([&] { return env.stringProp("ConnectionState") == "connected"; }, 60s));
    auto polls = env.requests("/DEFAULT/controller/v1/dev-01");
    REQUIRE_FALSE(polls.empty());
    CHECK(polls[0]["cn"] == env.deviceId);
    CHECK(signedLinesFor(env, cloudUid(), env.stack.pid("cloud-client")) >= 1);
    CHECK(contains(*fs::readFile(blob), "-----BEGIN TSS2 PRIVATE KEY-----"));
    CHECK(env.creds.keyPem.empty()); // no PEM key anywhere in the state
    CHECK_FALSE(contains(tlsCredentialsAsCloud(env), "PRIVATE KEY"));
    CHECK_FALSE(readableBy("mbl-cloud", blob));
}

TEST_CASE("tpm2 anti-cloning: a copy of the identity (state, certificate, wrapped key) on another TPM cannot authenticate; the original still does")
{
    requireTpm();
    TempDir tmp("mbl-identity-clone");
    auto tpmA = startTpm(tmp.path() + "/tpm-a");
    auto tpmB = startTpm(tmp.path() + "/tpm-b");
    CloudEnvOptions o;
    o.identityConfig = [](const std::string& root) {
        return json{{"key_uri", "tpm2:" + root + "/var/lib/mbl/identity/device.tss2"}};
    };
    o.identityEnv = {tpmA->tctiEnv()};
    CloudEnv original(o);
    REQUIRE(CloudEnv::waitUntil([&] { return original.stringProp("ConnectionState") == "connected"; }, 60s));
    const uid_t cloud = cloudUid();
    const pid_t originalClient = original.stack.pid("cloud-client");

    // The thief copies the whole data partition (identity state, certificate, the
    // TPM-wrapped key blob, the cloud client's state) and the configuration onto a
    // second device whose TPM is another one. Only the test's roots differ, so the
    // key_uri names the copy's own blob (the same path on a real device).
    TestStack clone;
    auto cp = mbl::run({"cp", "-a", original.stack.root() + "/var/lib/mbl/.", clone.root() + "/var/lib/mbl/"});
    REQUIRE(cp);
    REQUIRE(cp->status.success());
    const std::string blob = clone.root() + "/var/lib/mbl/identity/device.tss2";
    REQUIRE(*fs::readFile(blob) == *fs::readFile(original.stack.root() + "/var/lib/mbl/identity/device.tss2"));
    REQUIRE(fs::writeFileAtomic(clone.root() + "/etc/mbl/identity.json", json{{"key_uri", "tpm2:" + blob}}.dump(), 0644));
    REQUIRE(fs::writeFileAtomic(clone.root() + "/etc/mbl/cloud.json",
                                *fs::readFile(original.stack.root() + "/etc/mbl/cloud.json"), 0644));
    TestStack::StartOptions onB;
    onB.env = {tpmB->tctiEnv()};
    REQUIRE(clone.start("device-identity", onB));
    REQUIRE(clone.start("cloud-client"));

    // The clone's identity service cannot use the key, so its cloud client never
    // authenticates: it says why and stays disconnected.
    auto identityB = sdbus::createProxy(clone.bus(), "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1");
    const auto stateB = identityB->getProperty("State").onInterface("org.mbl.DeviceIdentity1").get<std::string>();
    INFO(stateB);
    CHECK(contains(stateB, "another TPM"));
    auto clientB = sdbus::createProxy(clone.bus(), "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    auto propB = [&](const char* name) {
        return clientB->getProperty(name).onInterface("org.mbl.CloudClient1").get<std::string>();
    };
    REQUIRE(CloudEnv::waitUntil([&] { return !propB("LastError").empty(); }, 30s));
    INFO(propB("LastError"));
    CHECK(contains(propB("LastError"), "org.mbl.Error.Failed"));
    CHECK(propB("ConnectionState") != "connected");
    clone.stop("cloud-client");
    clone.stop("device-identity");

    // The thief's own TLS client with the copied certificate and blob, on TPM B: the
    // blob does not load there, so there is nothing to sign the handshake with.
    // (The same command is not run on TPM A: swtpm has no resource manager, and the
    // objects the original's service left loaded fill its slots; the original's
    // own reconnection below is the control.)
    const std::string dir = tmp.path();
    REQUIRE(fs::writeFileAtomic(dir + "/ca.pem", original.cloud.caPem(), 0644));
    REQUIRE(fs::writeFileAtomic(dir + "/chain.pem", original.creds.chainPem, 0644));
    const std::string port = original.cloud.serverUrl().substr(original.cloud.serverUrl().rfind(':') + 1);
    auto thief = mbl::run({"sh", "-c",
                           "printf 'GET /DEFAULT/controller/v1/dev-01 HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: "
                           "close\\r\\n\\r\\n' | TPM2OPENSSL_TCTI='" +
                               tpmB->tcti() + "' timeout 60 openssl s_client -quiet -connect 127.0.0.1:" + port +
                               " -servername localhost -verify_return_error -CAfile " + dir + "/ca.pem -cert " + dir +
                               "/chain.pem -key " + blob + " -provider tpm2 -provider default"});
    REQUIRE(thief);
    INFO("TPM B: " << thief->out << thief->err);
    CHECK_FALSE(thief->status.success());
    CHECK_FALSE(contains(thief->out, "HTTP/1.1 200"));
    CHECK(contains(thief->out + thief->err, "Could not read client certificate private key"));

    // The original keeps working: a new full handshake (nginx reloaded) signed by TPM A.
    const std::size_t signedBefore = signedLinesFor(original, cloud, originalClient);
    const std::size_t seen = original.requests("/DEFAULT/controller/v1/dev-01").size();
    reloadNginx(original);
    REQUIRE(CloudEnv::waitUntil(
        [&] { return signedLinesFor(original, cloud, originalClient) > signedBefore && pollsAfter(original, seen) >= 1; },
        60s));
    CHECK(original.stringProp("ConnectionState") == "connected");
}
