// SPDX-License-Identifier: Apache-2.0
#pragma once
// The cloud side of the integration tests: a test CA made with the openssl CLI,
// the DDI test server (ddi_server.py) and a real nginx in front of it terminating
// mutual TLS as hawkBit's reverse-proxy setup does (X-Ssl-Client-Cn,
// X-Ssl-Issuer-Hash-1). Everything lives in one temporary folder and every
// process dies with the fixture.

#include "harness.h"

#include "mbl/process.h"

#include <nlohmann/json.hpp>

#include <string>

namespace mbl::test {

struct HttpReply {
    long status = 0;
    std::string body;
};

class CloudFixture {
public:
    // Skips (exit 77) when nginx, openssl or python3 are missing.
    CloudFixture();
    ~CloudFixture();

    const std::string& dir() const { return dir_.path(); }
    // https://localhost:<port> — mTLS optional (tokens also accepted).
    std::string serverUrl() const { return "https://localhost:" + std::to_string(tlsPort_); }
    // Same nginx, a certificate for another host name.
    std::string wrongHostUrl() const { return "https://localhost:" + std::to_string(wrongHostPort_); }
    // Same nginx, a certificate from another CA.
    std::string wrongCaUrl() const { return "https://localhost:" + std::to_string(wrongCaPort_); }
    // The same server where nginx also offers HTTP/2 (ALPN "h2"), as a reverse
    // proxy in front of hawkBit may; hawkBit itself (Spring Boot,
    // server.http2.enabled=false by default) and serverUrl() speak HTTP/1.1 only.
    std::string http2Url() const { return "https://localhost:" + std::to_string(http2Port_); }
    int backendPort() const { return backendPort_; }

    std::string caPem() const;
    // A device key and certificate signed by the test CA with CN = deviceId.
    struct DeviceCreds {
        std::string keyPath;
        std::string keyPem;
        std::string chainPem;
    };
    DeviceCreds makeDevice(const std::string& deviceId);
    // Issues a client certificate (PEM) for a CSR made elsewhere (e.g. by the
    // identity service), signed by the test CA, with subject CN = deviceId.
    std::string signDeviceCsr(const std::string& csrPem, const std::string& deviceId);
    const std::string& issuerHash() const { return issuerHash_; }

    // The test server's control API (plain HTTP on loopback, never through nginx).
    nlohmann::json admin(const std::string& method, const std::string& path, const nlohmann::json& body = {});
    nlohmann::json state() { return admin("GET", "/admin/state"); }

    std::string nginxLog() const;

    // A second nginx on another host name (https://127.0.0.1:<port>, where the
    // server is https://localhost:<port>) with a certificate from a CA of its
    // own, serving <dir()>/artifacts under /cdn/ as an object store or CDN would:
    // no client authentication, but it asks for a client certificate
    // (optional_no_ca) and logs what it got, so a test sees whether the device
    // sent its certificate or an Authorization header there. Returns the base
    // URL of the artifacts ("https://127.0.0.1:<port>/cdn"). Started once.
    std::string startCdn();
    // The CA that signed the CDN's certificate (PEM file).
    std::string cdnCaFile() const { return dir() + "/pki/cdn-ca.pem"; }
    // The CDN's access log: one line per request,
    // "<status> <uri> cert=<client cert subject or -> auth=<Authorization header or ->".
    std::string cdnLog() const;
    // /cdn/loop/<x> answers 302 to itself (a redirect loop on the other host).
    std::string cdnBase() const { return cdnPort_ == 0 ? "" : "https://127.0.0.1:" + std::to_string(cdnPort_); }
    // The same CDN over plain http ("http://127.0.0.1:<port>/cdn").
    std::string cdnHttpUrl() const { return "http://127.0.0.1:" + std::to_string(cdnHttpPort_) + "/cdn"; }

private:
    void makePki();
    void startServer();
    void startNginx();

    TempDir dir_{"mbl-cloud"};
    Child server_;
    Child nginx_;
    int backendPort_ = 0;
    int tlsPort_ = 0;
    int wrongHostPort_ = 0;
    int wrongCaPort_ = 0;
    int http2Port_ = 0;
    int cdnPort_ = 0;
    int cdnHttpPort_ = 0;
    Child cdn_;
    std::string issuerHash_;
};

// A free TCP port on 127.0.0.1.
int freePort();

} // namespace mbl::test
