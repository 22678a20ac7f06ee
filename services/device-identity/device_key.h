// SPDX-License-Identifier: Apache-2.0
#pragma once
// The device key: made once with OpenSSL (EC P-256 or Ed25519), loaded through an
// OpenSSL key URI (OSSL_STORE: a plain path or file: URI today, a pkcs11: or TPM
// URI with the matching provider tomorrow), and used to sign. No bus code here.

#include "mbl/crypto.h"
#include "mbl/expected.h"

#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace mbl::identity {

// Where a key that is not plain memory lives (a TPM through the tpm2 provider):
// the OpenSSL library context that serves it, and the lock that serialises its
// commands (a TPM connection is not shared between threads).
class KeyHome {
public:
    virtual ~KeyHome() = default;
    virtual OSSL_LIB_CTX* libctx() const = 0;
    // Property query that picks the home's provider for the key's operations.
    virtual const char* propq() const = 0;
    // Signing there is slow enough to keep off a bus thread.
    virtual bool slow() const = 0;
    std::mutex& mutex() const { return mu_; }

private:
    mutable std::mutex mu_;
};

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
    // A key a provider holds (tpm_key.cpp); `home` outlives the key.
    static DeviceKey inHome(EVP_PKEY* owned, std::shared_ptr<KeyHome> home);

    // The library context to run this key's operations in (nullptr: the default).
    OSSL_LIB_CTX* libctx() const { return home_ ? home_->libctx() : nullptr; }
    const char* propq() const { return home_ ? home_->propq() : nullptr; }
    bool slow() const { return home_ && home_->slow(); }
    // True when the private key is kept outside this process's memory.
    bool external() const { return home_ != nullptr; }
    // Held around every use of the private key (no-op for an in-memory key).
    std::unique_lock<std::mutex> lockUse() const
    {
        return home_ ? std::unique_lock<std::mutex>(home_->mutex()) : std::unique_lock<std::mutex>();
    }

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
    explicit DeviceKey(std::shared_ptr<EVP_PKEY> p, std::shared_ptr<KeyHome> home = {})
        : home_(std::move(home)), pkey_(std::move(p))
    {
    }
    std::shared_ptr<KeyHome> home_; // first: released after the key it serves
    std::shared_ptr<EVP_PKEY> pkey_;
};

} // namespace mbl::identity
