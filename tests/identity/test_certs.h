// SPDX-License-Identifier: Apache-2.0
#pragma once
// Certificates made in-process for the identity tests: CAs, intermediates and
// leaves with any validity window (expired and not-yet-valid ones too, which the
// openssl 3.0 CLI cannot make without a CA database).

#include "device_key.h"

#include "mbl/crypto.h"

#include <string>

namespace mbl::test {

struct TestCert {
    identity::DeviceKey key; // the certificate's own key pair
    crypto::X509Ptr cert;
    std::string pem() const;
};

// Self-signed CA (EC P-256) valid from an hour ago for a year.
TestCert makeCa(const std::string& cn);
// A CA certificate for a new key, issued by `issuer` (an intermediate).
TestCert makeIntermediate(const TestCert& issuer, const std::string& cn);
// A leaf for `subjectKey`, issued by `issuer`, valid from now+notBeforeSec to now+notAfterSec.
crypto::X509Ptr makeLeaf(const TestCert& issuer, EVP_PKEY* subjectKey, const std::string& cn, long notBeforeSec = -3600,
                         long notAfterSec = 86400L * 365);
std::string certPem(X509* cert);

} // namespace mbl::test
