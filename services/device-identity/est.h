// SPDX-License-Identifier: Apache-2.0
#pragma once
// Enrolment over Secure Transport (EST, RFC 7030) as pure functions: the
// configuration (identity.json "est"), the request body of simpleenroll /
// simplereenroll, and the reading of the server's answer. The HTTP exchange is
// est_http.h; the decision when to renew is renewal.h. No bus code here.

#include "mbl/config.h"
#include "mbl/expected.h"

#include <cstdint>
#include <optional>
#include <string>

namespace mbl::identity {

// How simpleenroll (the first certificate) authenticates (RFC 7030 §3.3.2, §3.2.3).
enum class EstCredential {
    BootstrapCertificate, // a factory client certificate and key (TLS client authentication)
    Basic,                // HTTP Basic, "user:password" read from token_file
    Bearer,               // "Authorization: Bearer <token>", token read from token_file
};
const char* estCredentialName(EstCredential c);

struct EstConfig {
    std::string url;      // base, e.g. https://est.example.com/.well-known/est[/label]
    std::string serverCa; // PEM file the EST server's TLS certificate must chain to
    EstCredential credential = EstCredential::Basic;
    std::string bootstrapCertificate; // PEM files (BootstrapCertificate)
    std::string bootstrapKey;
    std::string tokenFile;            // (Basic, Bearer)
    int renewAtPermille = 667;        // renewal starts at this fraction of the validity (2/3)
    int retryMinSeconds = 60;         // back-off after a failed renewal: doubles from min to max
    int retryMaxSeconds = 3600;
    int timeoutSeconds = 60;          // one EST exchange
    bool enrollAtStart = true;        // without a certificate, enrol on start (and retry)
};

// Reads "est.*" of identity.json; nullopt when there is no "est" section. Every
// key is read (so rejectUnreadKeys() names a misspelt one); a bad value is
// InvalidArgument naming the file and key.
Expected<std::optional<EstConfig>> readEstConfig(const Config& config);

// The body of simpleenroll/simplereenroll: the PKCS#10 CSR as base64 DER
// (RFC 7030 §4.2.1 "application/pkcs10", Content-Transfer-Encoding base64).
Expected<std::string> csrRequestBody(const std::string& csrPem);

// An HTTP answer of the EST server.
struct EstHttpReply {
    long status = 0;
    std::string contentType;
    std::string body;
    std::string retryAfter; // the Retry-After header as sent
};

// What an EST answer means (RFC 7030 §4.2.3): 200 with a certs-only PKCS#7 →
// the certificates as PEM (in the order given); 202 → Busy, "retry after N s";
// 401 → AccessDenied (credential refused); 403 → AccessDenied (refused by the
// CA's policy); anything else → Failed with the status and the start of the
// body. A 200 whose body is not base64, not PKCS#7 SignedData or holds no
// certificate → InvalidArgument naming what is wrong. `operation` names it
// ("simpleenroll") in messages.
Expected<std::string> certificatesFromReply(const EstHttpReply& reply, const std::string& operation);

// Seconds the server asked to wait in Retry-After (delta-seconds form only, RFC
// 7231 §7.1.3); nullopt if absent or an HTTP date.
std::optional<std::int64_t> retryAfterSeconds(const std::string& header);

} // namespace mbl::identity
