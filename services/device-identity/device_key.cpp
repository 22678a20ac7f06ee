// SPDX-License-Identifier: Apache-2.0
#include "device_key.h"

#include "tpm_key.h"

#include "mbl/crypto_identity.h"
#include "mbl/strings.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ui.h>

#include <cerrno>
#include <sys/stat.h>
#include <unistd.h>

namespace mbl::identity {

namespace {
std::shared_ptr<EVP_PKEY> share(EVP_PKEY* p)
{
    return std::shared_ptr<EVP_PKEY>(p, crypto::PkeyFree{});
}

std::string bioText(BIO* bio)
{
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}
} // namespace

Expected<KeyType> parseKeyType(const std::string& text)
{
    if (text == "ec-p256" || text == "ec" || text == "p256" || text == "prime256v1" || text == "P-256") {
        return KeyType::EcP256;
    }
    if (text == "ed25519" || text == "Ed25519") {
        return KeyType::Ed25519;
    }
    return unexpected(ErrorCode::InvalidArgument,
                      "key_type '" + text + "' is not supported (use \"ec-p256\" or \"ed25519\")");
}

const char* keyTypeName(KeyType type)
{
    return type == KeyType::Ed25519 ? "ed25519" : "ec-p256";
}

std::optional<std::string> filePathOfKeyUri(const std::string& uri)
{
    if (str::startsWith(uri, "file://")) {
        // file:///abs/path (empty authority) or file://localhost/abs/path
        std::string rest = uri.substr(7);
        if (str::startsWith(rest, "localhost/")) {
            rest = rest.substr(9);
        }
        return str::startsWith(rest, "/") ? std::optional<std::string>(rest) : std::nullopt;
    }
    if (str::startsWith(uri, "file:")) {
        return uri.substr(5);
    }
    // A URI scheme is letters before ':' and no '/' before it; anything else is a path.
    auto colon = uri.find(':');
    auto slash = uri.find('/');
    if (colon != std::string::npos && (slash == std::string::npos || colon < slash)) {
        return std::nullopt;
    }
    return uri;
}

Expected<DeviceKey> DeviceKey::generate(KeyType type)
{
    EVP_PKEY* raw = type == KeyType::Ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                             : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    if (raw == nullptr) {
        return unexpected(ErrorCode::Failed, std::string("cannot generate a ") + keyTypeName(type) +
                                                 " key: " + crypto::lastOpenSslError());
    }
    return DeviceKey(share(raw));
}

Expected<DeviceKey> DeviceKey::load(const std::string& uri)
{
    if (isTpmKeyUri(uri)) {
        return loadTpmKey(uri);
    }
    if (auto path = filePathOfKeyUri(uri)) {
        // Clear reasons for the common file cases before OpenSSL's generic ones.
        struct stat st {};
        if (::stat(path->c_str(), &st) != 0) {
            return unexpected(errnoError("device key " + *path, errno));
        }
        if (!S_ISREG(st.st_mode)) {
            return unexpected(ErrorCode::InvalidArgument, "device key " + *path + " is not a regular file");
        }
        if (::access(path->c_str(), R_OK) != 0) {
            return unexpected(errnoError("device key " + *path + " is not readable", errno));
        }
    }
    ERR_clear_error();
    // UI_null: never prompt for a passphrase; a daemon has no one to ask.
    crypto::StoreCtx store(OSSL_STORE_open(uri.c_str(), UI_null(), nullptr, nullptr, nullptr));
    if (!store) {
        return unexpected(ErrorCode::Io, "cannot open key URI '" + uri + "': " + crypto::lastOpenSslError());
    }
    OSSL_STORE_expect(store.get(), OSSL_STORE_INFO_PKEY);
    while (!OSSL_STORE_eof(store.get())) {
        crypto::StoreInfo info(OSSL_STORE_load(store.get()));
        if (!info) {
            if (OSSL_STORE_error(store.get()) != 0) {
                break;
            }
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info.get()) == OSSL_STORE_INFO_PKEY) {
            EVP_PKEY* pkey = OSSL_STORE_INFO_get1_PKEY(info.get());
            if (pkey != nullptr) {
                ERR_clear_error();
                return DeviceKey(share(pkey));
            }
        }
    }
    std::string why = ERR_peek_error() != 0 ? crypto::lastOpenSslError() : "no private key found";
    return unexpected(ErrorCode::InvalidArgument, "key URI '" + uri + "' holds no usable private key (" + why + ")");
}

Expected<DeviceKey> DeviceKey::fromPem(const std::string& pem)
{
    crypto::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    EVP_PKEY* p = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
    if (p == nullptr) {
        return unexpected(ErrorCode::InvalidArgument, "not a PEM private key: " + crypto::lastOpenSslError());
    }
    return DeviceKey(share(p));
}

DeviceKey DeviceKey::inHome(EVP_PKEY* owned, std::shared_ptr<KeyHome> home)
{
    return DeviceKey(share(owned), std::move(home));
}

bool DeviceKey::isEd25519() const
{
    return EVP_PKEY_is_a(pkey_.get(), "ED25519") == 1;
}

std::string DeviceKey::typeName() const
{
    if (isEd25519()) {
        return "Ed25519";
    }
    if (EVP_PKEY_is_a(pkey_.get(), "EC") == 1) {
        char group[64] = {0};
        std::size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(pkey_.get(), "group", group, sizeof group, &len) == 1) {
            const std::string g(group);
            return g == "prime256v1" ? "EC P-256" : "EC " + g;
        }
        return "EC";
    }
    const char* name = EVP_PKEY_get0_type_name(pkey_.get());
    return name != nullptr ? name : "unknown";
}

Expected<std::string> DeviceKey::privatePem() const
{
    if (external()) {
        // A provider may "encode" its key as a handle or a wrapped blob: that is not
        // the key, and nothing of it leaves the service.
        return unexpected(ErrorCode::NotSupported, "the device key is kept outside the service (" +
                                                       typeName() + " in its key store) and cannot be exported");
    }
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_PrivateKey(bio.get(), pkey_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        return unexpected(ErrorCode::NotSupported,
                          "the device key cannot be exported from its store: " + crypto::lastOpenSslError());
    }
    return bioText(bio.get());
}

std::string DeviceKey::publicPem() const
{
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PUBKEY(bio.get(), pkey_.get());
    return bioText(bio.get());
}

std::string DeviceKey::spkiDer() const
{
    unsigned char* der = nullptr;
    int len = i2d_PUBKEY(pkey_.get(), &der);
    if (len <= 0) {
        return {};
    }
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

std::string DeviceKey::derivedDeviceId() const
{
    return crypto::sha256Hex(spkiDer());
}

Expected<std::string> DeviceKey::sign(const void* data, std::size_t len) const
{
    auto use = lockUse();
    crypto::MdCtx ctx(EVP_MD_CTX_new());
    // Ed25519 signs the message itself (no digest); EC signs its SHA-256.
    const char* md = isEd25519() ? nullptr : "SHA256";
    if (!ctx || EVP_DigestSignInit_ex(ctx.get(), nullptr, md, libctx(), propq(), pkey_.get(), nullptr) != 1) {
        return unexpected(ErrorCode::Failed, "cannot start signing: " + crypto::lastOpenSslError());
    }
    std::size_t sigLen = 0;
    const auto* bytes = static_cast<const unsigned char*>(data);
    if (EVP_DigestSign(ctx.get(), nullptr, &sigLen, bytes, len) != 1) {
        return unexpected(ErrorCode::Failed, "signing failed: " + crypto::lastOpenSslError());
    }
    std::string sig(sigLen, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sigLen, bytes, len) != 1) {
        return unexpected(ErrorCode::Failed, "signing failed: " + crypto::lastOpenSslError());
    }
    sig.resize(sigLen);
    return sig;
}

bool DeviceKey::matches(EVP_PKEY* other) const
{
    return other != nullptr && EVP_PKEY_eq(pkey_.get(), other) == 1;
}

} // namespace mbl::identity
