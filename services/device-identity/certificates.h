// SPDX-License-Identifier: Apache-2.0
#pragma once
// Certificates of the device key: the CSR a factory or fleet CA signs, and the
// checks a chain passes before it is installed (leaf matches the key, valid now,
// leads to the fleet CA when one is configured). No bus code here.

#include "device_key.h"

#include "mbl/crypto.h"
#include "mbl/expected.h"

#include <cstdint>
#include <ctime>
#include <map>
#include <string>
#include <vector>

namespace mbl::identity {

// Subject fields ("O", "OU", "C", "ST", "L") and subjectAltNames, each written
// "DNS:name", "IP:address", "URI:uri" or "email:address".
struct CsrOptions {
    std::map<std::string, std::string> subject;
    std::vector<std::string> san;
};

// Checks every option; the error names the option at fault.
Status validateCsrOptions(const CsrOptions& options);

// PEM CSR with CN = commonName and the options, signed by the key.
Expected<std::string> createCsr(const DeviceKey& key, const std::string& commonName, const CsrOptions& options);

// A CSR to renew `current` (EST simplereenroll): the same Subject and
// subjectAltName (RFC 7030 §4.2.2), the device key's public key, signed by it.
Expected<std::string> createRenewalCsr(const DeviceKey& key, X509* current);

// Every certificate of a PEM text, in order. `what` names the input in errors.
// Empty input, text without a certificate or a damaged block is InvalidArgument.
Expected<std::vector<crypto::X509Ptr>> parsePemCertificates(const std::string& pem, const std::string& what);
std::string certificatesToPem(const std::vector<crypto::X509Ptr>& certs);

// One line about a certificate for messages: subject and validity.
std::string describeCertificate(X509* cert);
// notAfter / notBefore of a certificate, seconds since the epoch.
std::uint64_t notAfterOf(X509* cert);
std::uint64_t notBeforeOf(X509* cert);

struct VerifiedChain {
    std::string pem;            // the chain as installed: the certificates re-encoded, leaf first
    std::uint64_t notAfter = 0; // the leaf's
    std::string leafSubject;
};

// Checks a chain (leaf first) for the device key at time `now`:
// - not PEM / empty / damaged                      → InvalidArgument
// - the leaf's public key is not `key`               → InvalidArgument
// - the leaf is expired or not yet valid             → InvalidArgument
// - fleetCaPath set and the chain does not lead to it → SignatureInvalid
// An unreadable fleet CA file is an Io error naming the file.
Expected<VerifiedChain> verifyDeviceChain(const std::string& chainPem, const DeviceKey& key,
                                          const std::string& fleetCaPath, std::time_t now);
// The same against CAs given as PEM text (empty: no CA check); `casWhat` names
// them in messages ("the trusted fleet CAs").
Expected<VerifiedChain> verifyDeviceChainWithCas(const std::string& chainPem, const DeviceKey& key,
                                                 const std::string& casPem, const std::string& casWhat,
                                                 std::time_t now);

} // namespace mbl::identity
