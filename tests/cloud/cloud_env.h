// SPDX-License-Identifier: Apache-2.0
#pragma once
// One integration-test world for the cloud client: the private bus (TestStack),
// the real identity service (mbl-device-identity) provisioned through its D-Bus
// API, the DDI test server behind real nginx with mutual TLS, and
// mbl-cloud-client itself running as mbl-cloud. Plus a signal recorder, and
// provisionIdentity() for other tests that need a provisioned device.

#include "cloud_fixture.h"
#include "harness.h"

#include <nlohmann/json.hpp>
#include <sdbus-c++/sdbus-c++.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace mbl::test {

struct Signal {
    std::string name;
    std::vector<std::string> args;
};

// Records the cloud client's signals on a connection of its own (also
// "PropertiesChanged", with the changed property names as args).
class SignalRecorder {
public:
    SignalRecorder();
    ~SignalRecorder();
    std::vector<Signal> all();
    // Waits for the n-th (1-based) signal called `name`; nullopt on timeout.
    std::optional<Signal> waitFor(const std::string& name, std::size_t n = 1,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(20));
    std::size_t count(const std::string& name);

private:
    void add(Signal s);
    std::unique_ptr<sdbus::IConnection> conn_;
    std::unique_ptr<sdbus::IProxy> proxy_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Signal> signals_;
};

// What provisionIdentity sets up.
struct IdentitySetup {
    std::string deviceId = "dev-01"; // the controllerId and the certificate's CN
    std::string authMode = "mtls";   // mtls, target-token, gateway-token
    std::string token;               // required for the token modes
    std::string serverUrl;           // default: cloud.serverUrl()
    bool provision = true;           // false: key and certificate only (no provisioning document)
    std::vector<std::string> identityEnv; // extra KEY=VALUE for the identity service (e.g. a TPM's TCTI)
};

// Provisions the REAL identity service (services/device-identity, TestStack label
// "device-identity") on `stack` for `cloud`'s nginx + DDI test server, only through
// its D-Bus API, as a factory would:
//   starts the daemon if it is not running (it makes its key on first start),
//   CreateCertificateRequest -> signed by the fixture's test CA with CN = deviceId
//   (clientAuth) -> InstallCertificate -> Provision {server_url, tenant "DEFAULT",
//   auth_mode, token, server_ca_pem, device_id}.
// Returns the chain as the service hands it out (GetTlsCredentials: never the key)
// and, for a file key, the key read from the service's state directory (the tests
// run as root), written to <cloud.dir()>/pki/device-<deviceId>.key/.pem for tools
// such as curl; keyPem/keyPath stay empty for a TPM key.
// Call it again to re-provision (a new certificate for the same key, then Provision).
// Throws std::runtime_error with the reason and the daemon's log on failure.
// Then start "cloud-client" on the same stack: it connects as deviceId.
CloudFixture::DeviceCreds provisionIdentity(TestStack& stack, CloudFixture& cloud, const IdentitySetup& setup = {});
// The provisioning document provisionIdentity sends (no token field for mtls).
nlohmann::json identityProvisioningDoc(const CloudFixture& cloud, const IdentitySetup& setup);

struct CloudEnvOptions {
    // The controllerId and the certificate's CN. The tests use a short fixed one; a
    // product device derives 64 hex digits from its key (DeviceKey::derivedDeviceId),
    // which the benchmarks use because every poll's path carries it.
    std::string deviceId = "dev-01";
    std::string authMode = "mtls"; // mtls, target-token, gateway-token
    std::string token;
    std::string serverUrl;          // default: the fixture's mTLS URL
    bool http2 = false;             // provision the fixture's http2Url() (nginx offers h2)
    nlohmann::json config = nlohmann::json::object(); // merged into cloud.json
    bool startClient = true;
    // The identity service's /etc/mbl/identity.json, given the stack's root (unset:
    // none, the defaults), and extra environment (e.g. TPM2OPENSSL_TCTI for a key in swtpm).
    std::function<nlohmann::json(const std::string& root)> identityConfig;
    std::vector<std::string> identityEnv;
};

class CloudEnv {
public:
    explicit CloudEnv(const CloudEnvOptions& opts = {});
    ~CloudEnv();

    TestStack stack;
    CloudFixture cloud;
    const std::string deviceId; // CloudEnvOptions::deviceId
    CloudFixture::DeviceCreds creds;
    TestStack::StartOptions identityStart; // how the identity service was started

    // Re-provisions the identity service with this document (Provision); null:
    // FactoryReset and a new certificate, but no provisioning (unprovisioned).
    void writeSpec(const nlohmann::json& provisioning);
    // A provisioning document for this device (token left out when empty).
    nlohmann::json provisioning(const std::string& authMode, const std::string& token, const std::string& url);
    void startClient();

    std::string stringProp(const std::string& name);
    std::uint64_t uintProp(const std::string& name);
    sdbus::IProxy& proxy();

    // Polls `pred` every 20 ms until true or timeout; returns its last value.
    static bool waitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(20));

    // DDI requests the server saw (method, path, status).
    std::vector<nlohmann::json> requests(const std::string& pathContains = "");

    std::string clientLog() { return stack.log("cloud-client"); }

private:
    std::unique_ptr<sdbus::IProxy> proxy_;
};

// Reads everything from fd (waiting up to timeout); returns the bytes read.
std::string readFd(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(60));

} // namespace mbl::test
