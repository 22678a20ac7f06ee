// SPDX-License-Identifier: Apache-2.0
#include "tpm_key.h"

#include "mbl/crypto.h"
#include "mbl/crypto_identity.h"
#include "mbl/strings.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/ui.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <sys/stat.h>

namespace mbl::identity {

namespace {
const char* const kBlobScheme = "tpm2:";
const char* const kHandleScheme = "handle:";
const char* const kBlobPemHeader = "-----BEGIN TSS2 PRIVATE KEY-----";
const char* const kTpmProps = "?provider=tpm2";

// One library context with the tpm2 provider (keys, signatures) and the default
// provider (digests, encoders), so nothing else in the daemon goes to the TPM.
class TpmHome final : public KeyHome {
public:
    static Expected<std::shared_ptr<TpmHome>> open(const std::string& tcti)
    {
        std::shared_ptr<TpmHome> home(new TpmHome());
        home->tcti_ = tcti;
        home->ctx_ = OSSL_LIB_CTX_new();
        if (home->ctx_ == nullptr) {
            return unexpected(ErrorCode::Failed, "cannot make an OpenSSL library context for the TPM");
        }
        ERR_clear_error();
        home->default_ = OSSL_PROVIDER_load(home->ctx_, "default");
        home->tpm2_ = OSSL_PROVIDER_load(home->ctx_, "tpm2");
        if (home->default_ == nullptr || home->tpm2_ == nullptr) {
            return unexpected(ErrorCode::Failed,
                              std::string(home->tpm2_ == nullptr ? "the tpm2 OpenSSL provider (tpm2-openssl) did not "
                                                                   "load or found no TPM"
                                                                 : "the default OpenSSL provider did not load") +
                                  " (TCTI " + (tcti.empty() ? std::string("default: tabrmd, /dev/tpmrm0") : tcti) +
                                  "): " + crypto::lastOpenSslError());
        }
        return home;
    }
    ~TpmHome() override
    {
        if (tpm2_ != nullptr) {
            OSSL_PROVIDER_unload(tpm2_);
        }
        if (default_ != nullptr) {
            OSSL_PROVIDER_unload(default_);
        }
        OSSL_LIB_CTX_free(ctx_);
    }
    OSSL_LIB_CTX* libctx() const override { return ctx_; }
    const char* propq() const override { return kTpmProps; }
    bool slow() const override { return true; }

private:
    TpmHome() = default;
    std::string tcti_;
    OSSL_LIB_CTX* ctx_ = nullptr;
    OSSL_PROVIDER* default_ = nullptr;
    OSSL_PROVIDER* tpm2_ = nullptr;
};

// One home per TCTI while any key uses it: a TPM simulator serves one connection at
// a time, so a second context on the same TPM would wait for ever.
Expected<std::shared_ptr<TpmHome>> homeFor()
{
    static std::mutex mu;
    static std::map<std::string, std::weak_ptr<TpmHome>> homes;
    const char* env = std::getenv("TPM2OPENSSL_TCTI");
    const std::string tcti = env != nullptr ? env : "";
    std::lock_guard<std::mutex> lock(mu);
    if (auto live = homes[tcti].lock()) {
        return live;
    }
    auto home = TpmHome::open(tcti);
    if (home) {
        homes[tcti] = *home;
    }
    return home;
}
} // namespace

bool isTpmKeyUri(const std::string& uri)
{
    return str::startsWith(uri, kBlobScheme) || str::startsWith(uri, kHandleScheme);
}

std::optional<std::string> tpmBlobPath(const std::string& uri)
{
    if (!str::startsWith(uri, kBlobScheme)) {
        return std::nullopt;
    }
    return uri.substr(std::string(kBlobScheme).size());
}

Expected<NewTpmKey> generateTpmKey(KeyType type)
{
    if (type != KeyType::EcP256) {
        return unexpected(ErrorCode::NotSupported,
                          std::string("key_type ") + keyTypeName(type) + " cannot be made in a TPM 2.0 (use ec-p256)");
    }
    auto home = homeFor();
    if (!home) {
        return unexpected(home.error());
    }
    std::unique_lock<std::mutex> use((*home)->mutex());
    OSSL_LIB_CTX* ctx = (*home)->libctx();
    crypto::PkeyCtx gen(EVP_PKEY_CTX_new_from_name(ctx, "EC", kTpmProps));
    EVP_PKEY* raw = nullptr;
    if (!gen || EVP_PKEY_keygen_init(gen.get()) != 1 || EVP_PKEY_CTX_set_group_name(gen.get(), "P-256") != 1 ||
        EVP_PKEY_generate(gen.get(), &raw) != 1) {
        return unexpected(ErrorCode::Failed, "the TPM did not make an EC P-256 key: " + crypto::lastOpenSslError());
    }
    crypto::Pkey pkey(raw);
    if (std::string(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey.get()))) != "tpm2") {
        return unexpected(ErrorCode::Failed, "the key was not made by the tpm2 provider");
    }
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_PrivateKey_ex(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr, ctx, kTpmProps) != 1) {
        return unexpected(ErrorCode::Failed, "cannot encode the TPM key blob: " + crypto::lastOpenSslError());
    }
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    std::string pem = len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
    // Only ever a wrapped blob: never anything that could hold the key in clear.
    if (!str::startsWith(pem, kBlobPemHeader)) {
        return unexpected(ErrorCode::Failed, "the tpm2 provider did not encode the key as a TSS2 blob");
    }
    use.unlock();
    return NewTpmKey{DeviceKey::inHome(pkey.release(), *home), std::move(pem)};
}

Expected<DeviceKey> loadTpmKey(const std::string& uri)
{
    std::string target = uri;
    if (auto path = tpmBlobPath(uri)) {
        struct stat st {};
        if (::stat(path->c_str(), &st) != 0) {
            return unexpected(errnoError("TPM key blob " + *path, errno));
        }
        target = *path;
    }
    auto home = homeFor();
    if (!home) {
        return unexpected(home.error());
    }
    std::unique_lock<std::mutex> use((*home)->mutex());
    ERR_clear_error();
    crypto::StoreCtx store(
        OSSL_STORE_open_ex(target.c_str(), (*home)->libctx(), kTpmProps, UI_null(), nullptr, nullptr, nullptr, nullptr));
    if (!store) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the TPM cannot open key '" + uri + "': " + crypto::lastOpenSslError());
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
            if (EVP_PKEY* pkey = OSSL_STORE_INFO_get1_PKEY(info.get())) {
                ERR_clear_error();
                use.unlock();
                return DeviceKey::inHome(pkey, *home);
            }
        }
    }
    const std::string why = ERR_peek_error() != 0 ? crypto::lastOpenSslError() : "no key found";
    return unexpected(ErrorCode::InvalidArgument,
                      "the TPM does not load key '" + uri + "' (a blob made by another TPM, or damaged): " + why);
}

} // namespace mbl::identity
