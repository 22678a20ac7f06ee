// SPDX-License-Identifier: Apache-2.0
#pragma once
// The device key: made once with OpenSSL (EC P-256 or Ed25519), loaded through an
// OpenSSL key URI (OSSL_STORE: a plain path or file: URI today, a pkcs11: or TPM
// URI with the matching provider tomorrow), and used to sign. No bus code here.

#include "mbl/crypto.h"
#include "mbl/expected.h"

#include <memory>
#include <optional>
#include <string>

namespace mbl::identity {

enum class KeyType { EcP256, Ed25519 };

// "ec-p256" (also "ec", "p256", "prime256v1") or "ed25519".
Expected<KeyType> parseKeyType(const std::string& text);
const char* keyTypeName(KeyType type);

// The file path behind a key URI ("/x/key.pem", "file:/x/key.pem",
// "file:///x/key.pem"); nullopt for URIs that name no file (pkcs11:, handle:, ...).
std::optional<std::string> filePathOfKeyUri(const std::string& uri);

class DeviceKey {
public:
    // A new key of the given type (in memory only).
    static Expected<DeviceKey> generate(KeyType type);
    // Loads the private key behind an OpenSSL key URI. A file that is missing gives
    // NotFound; unreadable gives AccessDenied/Io; one that holds no usable private
    // key gives InvalidArgument.
    static Expected<DeviceKey> load(const std::string& uri);
    // From PEM text (tests and in-process use).
    static Expected<DeviceKey> fromPem(const std::string& pem);

    EVP_PKEY* get() const { return pkey_.get(); }
    // "EC P-256", "Ed25519" or OpenSSL's name for anything else a URI may hold.
    std::string typeName() const;
    bool isEd25519() const;

    // Unencrypted PKCS#8 PEM; NotSupported when the key cannot leave its store.
    Expected<std::string> privatePem() const;
    std::string publicPem() const;
    // DER SubjectPublicKeyInfo.
    std::string spkiDer() const;
    // Hex SHA-256 of the SubjectPublicKeyInfo: 64 characters of [0-9a-f], a valid
    // hawkBit controllerId and certificate CN.
    std::string derivedDeviceId() const;

    // ECDSA over SHA-256 (DER) for EC keys, pure Ed25519 for Ed25519 keys.
    Expected<std::string> sign(const void* data, std::size_t len) const;

    // True when `other` is this key's public half.
    bool matches(EVP_PKEY* other) const;

private:
    explicit DeviceKey(std::shared_ptr<EVP_PKEY> p) : pkey_(std::move(p)) {}
    std::shared_ptr<EVP_PKEY> pkey_;
};

} // namespace mbl::identity
