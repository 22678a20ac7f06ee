// SPDX-License-Identifier: Apache-2.0
#pragma once
// Which fleet CAs the device trusts, and how a new one from the EST server's
// /cacerts answer (RFC 7030 §4.1) becomes trusted. A pure decision on PEM texts;
// the fetch is est_http.h, the storing is identity.cpp. No bus code here.
//
// RFC 7030 §4.1.3: during a root key rollover the server sends the current root,
// "NewWithOld" (the new root's public key, signed by the old root), "OldWithNew"
// and the new root. A root the device does not trust yet is accepted only when
// the answer links it to a trusted CA: a CA certificate in the answer with the
// same subject and public key as the new root that verifies against the trusted
// set (NewWithOld). A root that only the server vouches for is refused: whoever
// could answer /cacerts could otherwise make the device trust any CA.

#include "mbl/expected.h"

#include <ctime>
#include <string>

namespace mbl::identity {

// `trustedPem`: the CAs trusted now (at least one). `cacertsPem`: the
// certificates of the /cacerts answer. Returns the new trusted set: the old one
// plus every self-signed CA of the answer it does not hold yet, each linked as
// above (the old CAs stay, so the certificate in force keeps verifying until a
// new one is installed). Errors, with nothing to store:
// - no self-signed CA certificate in the answer         → InvalidArgument
// - a self-signed CA neither trusted nor linked to one  → SignatureInvalid,
//   naming the CA
struct TrustedCas {
    std::string pem;       // every trusted CA once
    std::size_t added = 0; // how many the answer added
};
Expected<TrustedCas> acceptCaCertificates(const std::string& trustedPem, const std::string& cacertsPem,
                                           std::time_t now);

// The number of certificates in a PEM text of CAs (0 if it is not one).
std::size_t countCertificates(const std::string& pem);

} // namespace mbl::identity
