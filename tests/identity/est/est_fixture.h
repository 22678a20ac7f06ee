// SPDX-License-Identifier: Apache-2.0
#pragma once
// The fleet's side of EST (RFC 7030) for the identity tests: a fleet CA, a
// factory bootstrap CA and another CA made with the openssl CLI; the EST test
// server (est_server.py, whose CA signs with `openssl ca`) behind a real nginx
// that terminates TLS and verifies client certificates; a control API to make
// the server refuse, delay or answer wrongly. Everything lives in one
// temporary folder and every process dies with the fixture.

#include "harness.h"

#include "mbl/process.h"

#include <nlohmann/json.hpp>

#include <string>

namespace mbl::test {

class EstFixture {
public:
    // Skips (exit 77) when nginx, openssl or python3 are missing.
    EstFixture();
    ~EstFixture();
    EstFixture(const EstFixture&) = delete;
    EstFixture& operator=(const EstFixture&) = delete;

    const std::string& dir() const { return dir_.path(); }
    // https://localhost:<port>/.well-known/est (RFC 7030 §3.2.2)
    std::string estUrl() const { return "https://localhost:" + std::to_string(tlsPort_) + "/.well-known/est"; }
    std::string file(const std::string& name) const { return dir() + "/pki/" + name; }
    // The CA of the nginx server certificate (what the device trusts for TLS to EST).
    std::string tlsCaFile() const { return file("tls-ca.pem"); }
    // The CA that issues device certificates (the device's fleet_ca).
    std::string fleetCaFile() const { return file("fleet-ca.pem"); }
    // The fleet's next CA (another key, CN "Test Fleet CA 2"); the server issues
    // with it after configure({{"ca", "fleet-ca-2"}}) (est_server.py).
    std::string newFleetCaFile() const { return file("fleet-ca-2.pem"); }
    // A factory bootstrap certificate and key (EST client authentication, §3.3.2).
    std::string bootstrapCertFile() const { return file("bootstrap.pem"); }
    std::string bootstrapKeyFile() const { return file("bootstrap.key"); }
    // The one-time HTTP Basic credential the server accepts ("user:password").
    std::string basicCredential() const { return "factory:s3cret"; }

    // POST /admin/config on the server (never through nginx).
    void configure(const nlohmann::json& config);
    nlohmann::json state();
    // Requests to `path` (e.g. "simplereenroll") and the status of each.
    std::vector<std::pair<std::string, int>> requests(const std::string& pathContains = "");
    std::string serverLog() const;

private:
    void makePki();
    void startServer();
    void startNginx();

    TempDir dir_{"mbl-est"};
    Child server_;
    Child nginx_;
    int backendPort_ = 0;
    int tlsPort_ = 0;
};

} // namespace mbl::test
