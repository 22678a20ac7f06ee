// SPDX-License-Identifier: Apache-2.0
#pragma once
// The device's TLS client key as the cloud client sees it: the public half of the
// certificate's key, whose handshake signatures are made elsewhere (by the
// identity service, through DeviceIdentity1.Sign). An in-process OpenSSL 3
// provider ("mbl-remote-key") holds the public key; where libssl signs the
// handshake (CertificateVerify) it hashes here and hands the digest to a
// HandshakeSigner. Logic only: the bus call is the caller's function. Users: the
// cloud client (signer: DeviceIdentity1.Sign) and the identity service's EST
// renewal with a TPM key (signer: the key itself, under its lock).

#include "mbl/crypto.h"
#include "mbl/expected.h"

#include <openssl/ssl.h>

#include <functional>
#include <memory>
#include <string>

namespace mbl::crypto {

// Signs a digest the caller hashed. `algorithm` is a DeviceIdentity1.Sign name:
// "ecdsa-sha256|384|512", "rsa-pss-sha256|384|512", "rsa-pkcs1-sha256|384|512";
// the answer is the signature as TLS carries it (DER ECDSA-Sig-Value, or the RSA
// block). Called on the thread that runs the handshake (inside
// curl_easy_perform), possibly from several such threads at once.
using HandshakeSigner = std::function<Expected<std::string>(const std::string& algorithm, const std::string& digest)>;

// An EVP_PKEY for the key of the leaf certificate of chainPem (leaf first) whose
// signatures go through `signer`; it holds no private key. EC (P-256/384/521)
// and RSA keys. Errors: InvalidArgument (no certificate, unsupported key type).
Expected<crypto::Pkey> makeRemoteKey(const std::string& chainPem, HandshakeSigner signer);

// Installs the chain (leaf first) and `key` as the client identity of ctx (from
// CURLOPT_SSL_CTX_FUNCTION). The leaf must be the key's certificate.
Status useClientIdentity(SSL_CTX* ctx, const std::string& chainPem, EVP_PKEY* key);

} // namespace mbl::crypto
