// SPDX-License-Identifier: Apache-2.0
#include "mbl/remote_key.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include <cstring>
#include <mutex>
#include <new>
#include <vector>

// Why a provider: OpenSSL 3 deprecates every other way to put a foreign signing
// operation under an EVP_PKEY (EVP_PKEY_meth_*, EC_KEY_METHOD, RSA_METHOD,
// ENGINE), and warnings are errors here. A built-in provider added with
// OSSL_PROVIDER_add_builtin lives in this process, needs no module file, and
// libssl uses its key like any other: it asks the key's keymgmt for size, curve
// and the like (answered from the public key) and signs through the key's own
// provider.

namespace mbl::crypto {

namespace {

constexpr const char* kProviderName = "mbl-remote-key";
constexpr const char* kProps = "provider=mbl-remote-key";
// Import parameters of our own: the certificate's SubjectPublicKeyInfo (DER) and
// the address of a std::shared_ptr<const HandshakeSigner>.
constexpr const char* kParamSpki = "mbl-spki";
constexpr const char* kParamSigner = "mbl-signer";

enum class Kind { Ec, Rsa };

const char* typeName(Kind k)
{
    return k == Kind::Ec ? "EC" : "RSA";
}

using SignerRef = std::shared_ptr<const HandshakeSigner>;

// What a key of this provider holds: the public key (a default-provider key, which
// answers the parameter queries) and, for the device key, the signer.
struct KeyData {
    Kind kind;
    crypto::Pkey pub;
    SignerRef signer;
};

void raise(const std::string& why)
{
    ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "%s", why.c_str());
}

template <typename F>
void (*fn(F* f))(void)
{
    return reinterpret_cast<void (*)(void)>(f);
}

// ---- key management ------------------------------------------------------

template <Kind K>
void* kmNew(void*)
{
    return new (std::nothrow) KeyData{K, nullptr, nullptr};
}

void kmFree(void* kd)
{
    delete static_cast<KeyData*>(kd);
}

int kmHas(const void* kd, int selection)
{
    const auto* k = static_cast<const KeyData*>(kd);
    if (k == nullptr || !k->pub) {
        return 0;
    }
    // The private half exists (in the identity service) only where there is a signer.
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0 && !k->signer) {
        return 0;
    }
    return 1;
}

int kmMatch(const void* a, const void* b, int selection)
{
    const auto* x = static_cast<const KeyData*>(a);
    const auto* y = static_cast<const KeyData*>(b);
    if (x == nullptr || y == nullptr || !x->pub || !y->pub) {
        return 0;
    }
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) {
        return EVP_PKEY_eq(x->pub.get(), y->pub.get()) == 1 ? 1 : 0;
    }
    const int r = EVP_PKEY_parameters_eq(x->pub.get(), y->pub.get());
    return r == 1 || r == -2 ? 1 : 0; // -2: the type has no parameters (RSA)
}

template <Kind K>
int kmImport(void* kd, int selection, const OSSL_PARAM params[])
{
    auto* k = static_cast<KeyData*>(kd);
    if (k == nullptr) {
        return 0;
    }
    if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kParamSpki); p != nullptr) {
        const void* der = nullptr;
        std::size_t len = 0;
        if (OSSL_PARAM_get_octet_string_ptr(p, &der, &len) != 1) {
            return 0;
        }
        const auto* q = static_cast<const unsigned char*>(der);
        crypto::Pkey pub(d2i_PUBKEY_ex(nullptr, &q, static_cast<long>(len), nullptr, "provider=default"));
        if (!pub || EVP_PKEY_is_a(pub.get(), typeName(K)) != 1) {
            return 0;
        }
        if (const OSSL_PARAM* s = OSSL_PARAM_locate_const(params, kParamSigner); s != nullptr) {
            const void* ref = nullptr;
            std::size_t n = 0;
            if (OSSL_PARAM_get_octet_ptr(s, &ref, &n) != 1 || ref == nullptr || n != sizeof(SignerRef)) {
                return 0;
            }
            k->signer = *static_cast<const SignerRef*>(ref);
        }
        k->pub = std::move(pub);
        return 1;
    }
    // Standard parameters: another provider's key (the certificate's) brought here
    // to be compared with ours. Public parts only.
    crypto::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, typeName(K), "provider=default"));
    const int sel = (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 ? EVP_PKEY_PUBLIC_KEY : EVP_PKEY_KEY_PARAMETERS;
    EVP_PKEY* raw = nullptr;
    if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, sel, const_cast<OSSL_PARAM*>(params)) <= 0) {
        return 0;
    }
    k->pub.reset(raw);
    return 1;
}

int kmExport(void* kd, int selection, OSSL_CALLBACK* cb, void* cbarg)
{
    const auto* k = static_cast<const KeyData*>(kd);
    if (k == nullptr || !k->pub) {
        return 0;
    }
    // The private half is not here. Refusing a request for it is what makes
    // OpenSSL sign through this provider: it first tries to move the key to the
    // default provider, and a public-only copy there fails with "missing private key".
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
        return 0;
    }
    return EVP_PKEY_export(k->pub.get(), selection, cb, cbarg);
}

const OSSL_PARAM* kmTypes(int)
{
    static const OSSL_PARAM types[] = {
        OSSL_PARAM_octet_string(kParamSpki, nullptr, 0),
        OSSL_PARAM_octet_ptr(kParamSigner, nullptr, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
        OSSL_PARAM_END,
    };
    return types;
}

int kmGetParams(void* kd, OSSL_PARAM params[])
{
    const auto* k = static_cast<const KeyData*>(kd);
    if (k == nullptr || !k->pub) {
        return 0;
    }
    return EVP_PKEY_get_params(k->pub.get(), params);
}

const OSSL_PARAM* kmGettableParams(void*)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
        OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
        OSSL_PARAM_END,
    };
    return gettable;
}

template <Kind K>
const char* kmOperationName(int op)
{
    if (op != OSSL_OP_SIGNATURE) {
        return nullptr;
    }
    return K == Kind::Ec ? "ECDSA" : "RSA";
}

void* kmDup(const void* kd, int)
{
    const auto* k = static_cast<const KeyData*>(kd);
    if (k == nullptr) {
        return nullptr;
    }
    auto* copy = new (std::nothrow) KeyData{k->kind, nullptr, k->signer};
    if (copy != nullptr && k->pub) {
        EVP_PKEY_up_ref(k->pub.get());
        copy->pub.reset(k->pub.get());
    }
    return copy;
}

template <Kind K>
const OSSL_DISPATCH* keymgmtFunctions()
{
    static const OSSL_DISPATCH fns[] = {
        {OSSL_FUNC_KEYMGMT_NEW, fn(kmNew<K>)},
        {OSSL_FUNC_KEYMGMT_FREE, fn(kmFree)},
        {OSSL_FUNC_KEYMGMT_HAS, fn(kmHas)},
        {OSSL_FUNC_KEYMGMT_MATCH, fn(kmMatch)},
        {OSSL_FUNC_KEYMGMT_IMPORT, fn(kmImport<K>)},
        {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, fn(kmTypes)},
        {OSSL_FUNC_KEYMGMT_EXPORT, fn(kmExport)},
        {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, fn(kmTypes)},
        {OSSL_FUNC_KEYMGMT_GET_PARAMS, fn(kmGetParams)},
        {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, fn(kmGettableParams)},
        {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, fn(kmOperationName<K>)},
        {OSSL_FUNC_KEYMGMT_DUP, fn(kmDup)},
        {0, nullptr},
    };
    return fns;
}

// ---- signature -----------------------------------------------------------

struct MdFree {
    void operator()(EVP_MD* m) const { EVP_MD_free(m); }
};
using MdPtr = std::unique_ptr<EVP_MD, MdFree>;

struct SigCtx {
    KeyData* key = nullptr; // the EVP_PKEY_CTX holds the key while this exists
    MdPtr mdType;
    crypto::MdCtx md;
    int padding = RSA_PKCS1_PADDING;
    bool saltIsHashLength = true;
};

void* sigNewCtx(void*, const char*)
{
    return new (std::nothrow) SigCtx;
}

void sigFreeCtx(void* c)
{
    delete static_cast<SigCtx*>(c);
}

void* sigDupCtx(void* c)
{
    const auto* src = static_cast<const SigCtx*>(c);
    auto* dst = new (std::nothrow) SigCtx;
    if (dst == nullptr) {
        return nullptr;
    }
    dst->key = src->key;
    dst->padding = src->padding;
    dst->saltIsHashLength = src->saltIsHashLength;
    if (src->mdType) {
        EVP_MD_up_ref(src->mdType.get());
        dst->mdType.reset(src->mdType.get());
    }
    if (src->md) {
        dst->md.reset(EVP_MD_CTX_new());
        if (!dst->md || EVP_MD_CTX_copy_ex(dst->md.get(), src->md.get()) != 1) {
            delete dst;
            return nullptr;
        }
    }
    return dst;
}

// "sha256" for the hashes DeviceIdentity1.Sign knows; nullptr otherwise.
const char* hashName(const EVP_MD* md)
{
    switch (EVP_MD_get_type(md)) {
    case NID_sha256:
        return "sha256";
    case NID_sha384:
        return "sha384";
    case NID_sha512:
        return "sha512";
    default:
        return nullptr;
    }
}

int sigSetCtxParams(void* c, const OSSL_PARAM params[])
{
    auto* ctx = static_cast<SigCtx*>(c);
    if (ctx == nullptr) {
        return 0;
    }
    if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE); p != nullptr) {
        int mode = 0;
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            const char* s = nullptr;
            if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1) {
                return 0;
            }
            mode = std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0     ? RSA_PKCS1_PSS_PADDING
                   : std::strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0 ? RSA_PKCS1_PADDING
                                                                         : 0;
        } else if (OSSL_PARAM_get_int(p, &mode) != 1) {
            return 0;
        }
        if (mode != RSA_PKCS1_PADDING && mode != RSA_PKCS1_PSS_PADDING) {
            raise("the identity service signs with PKCS#1 v1.5 or PSS padding only");
            return 0;
        }
        ctx->padding = mode;
    }
    if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN); p != nullptr) {
        // The identity service's PSS salt is the hash's length (what TLS 1.3 requires).
        bool ok = false;
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            const char* s = nullptr;
            ok = OSSL_PARAM_get_utf8_string_ptr(p, &s) == 1 && std::strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0;
        } else {
            int len = 0;
            ok = OSSL_PARAM_get_int(p, &len) == 1 &&
                 (len == RSA_PSS_SALTLEN_DIGEST || (ctx->mdType && len == EVP_MD_get_size(ctx->mdType.get())));
        }
        if (!ok) {
            raise("the identity service signs PSS with a salt as long as the hash only");
            return 0;
        }
    }
    if (const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST); p != nullptr) {
        const char* s = nullptr;
        if (OSSL_PARAM_get_utf8_string_ptr(p, &s) != 1 || !ctx->mdType || EVP_MD_is_a(ctx->mdType.get(), s) != 1) {
            raise("the identity service uses MGF1 with the signature's hash only");
            return 0;
        }
    }
    return 1;
}

const OSSL_PARAM* sigSettableCtxParams(void*, void*)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
        OSSL_PARAM_END,
    };
    return settable;
}

int sigDigestSignInit(void* c, const char* mdname, void* provkey, const OSSL_PARAM params[])
{
    auto* ctx = static_cast<SigCtx*>(c);
    auto* key = static_cast<KeyData*>(provkey);
    if (ctx == nullptr || key == nullptr || !key->pub || !key->signer) {
        raise("this key has no signer (a public key only)");
        return 0;
    }
    ctx->key = key;
    ctx->mdType.reset(EVP_MD_fetch(nullptr, mdname != nullptr ? mdname : "SHA256", "provider=default"));
    if (!ctx->mdType || hashName(ctx->mdType.get()) == nullptr) {
        raise(std::string("the identity service does not sign with the hash ") + (mdname != nullptr ? mdname : "?"));
        return 0;
    }
    ctx->md.reset(EVP_MD_CTX_new());
    if (!ctx->md || EVP_DigestInit_ex(ctx->md.get(), ctx->mdType.get(), nullptr) != 1) {
        return 0;
    }
    return sigSetCtxParams(c, params);
}

int sigDigestSignUpdate(void* c, const unsigned char* data, std::size_t len)
{
    auto* ctx = static_cast<SigCtx*>(c);
    return ctx != nullptr && ctx->md && EVP_DigestUpdate(ctx->md.get(), data, len) == 1 ? 1 : 0;
}

int sigDigestSignFinal(void* c, unsigned char* sig, std::size_t* siglen, std::size_t sigsize)
{
    auto* ctx = static_cast<SigCtx*>(c);
    if (ctx == nullptr || ctx->key == nullptr || !ctx->md) {
        return 0;
    }
    if (sig == nullptr) {
        *siglen = static_cast<std::size_t>(EVP_PKEY_get_size(ctx->key->pub.get()));
        return 1;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digestLen = 0;
    if (EVP_DigestFinal_ex(ctx->md.get(), digest, &digestLen) != 1) {
        return 0;
    }
    const std::string hash = hashName(ctx->mdType.get());
    std::string algorithm;
    if (ctx->key->kind == Kind::Ec) {
        algorithm = "ecdsa-" + hash;
    } else {
        algorithm = (ctx->padding == RSA_PKCS1_PSS_PADDING ? "rsa-pss-" : "rsa-pkcs1-") + hash;
    }
    auto signature = (*ctx->key->signer)(algorithm, std::string(reinterpret_cast<const char*>(digest), digestLen));
    if (!signature) {
        raise("the identity service did not sign the handshake: " + signature.error().message);
        return 0;
    }
    if (signature->size() > sigsize) {
        raise("the identity service's signature is longer than the key allows");
        return 0;
    }
    std::memcpy(sig, signature->data(), signature->size());
    *siglen = signature->size();
    return 1;
}

int sigDigestSign(void* c, unsigned char* sig, std::size_t* siglen, std::size_t sigsize, const unsigned char* tbs,
                  std::size_t tbslen)
{
    if (sig == nullptr) {
        return sigDigestSignFinal(c, nullptr, siglen, 0);
    }
    return sigDigestSignUpdate(c, tbs, tbslen) == 1 ? sigDigestSignFinal(c, sig, siglen, sigsize) : 0;
}

const OSSL_DISPATCH* signatureFunctions()
{
    static const OSSL_DISPATCH fns[] = {
        {OSSL_FUNC_SIGNATURE_NEWCTX, fn(sigNewCtx)},
        {OSSL_FUNC_SIGNATURE_FREECTX, fn(sigFreeCtx)},
        {OSSL_FUNC_SIGNATURE_DUPCTX, fn(sigDupCtx)},
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, fn(sigDigestSignInit)},
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, fn(sigDigestSignUpdate)},
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, fn(sigDigestSignFinal)},
        {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, fn(sigDigestSign)},
        {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, fn(sigSetCtxParams)},
        {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, fn(sigSettableCtxParams)},
        {0, nullptr},
    };
    return fns;
}

// ---- the provider --------------------------------------------------------

const OSSL_ALGORITHM* queryOperation(void*, int op, int* noCache)
{
    static const OSSL_ALGORITHM keymgmt[] = {
        {"EC:id-ecPublicKey:1.2.840.10045.2.1", kProps, keymgmtFunctions<Kind::Ec>(), "device EC key held by the identity service"},
        {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProps, keymgmtFunctions<Kind::Rsa>(), "device RSA key held by the identity service"},
        {nullptr, nullptr, nullptr, nullptr},
    };
    static const OSSL_ALGORITHM signature[] = {
        {"ECDSA", kProps, signatureFunctions(), "signs through the identity service"},
        {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProps, signatureFunctions(), "signs through the identity service"},
        {nullptr, nullptr, nullptr, nullptr},
    };
    *noCache = 0;
    switch (op) {
    case OSSL_OP_KEYMGMT:
        return keymgmt;
    case OSSL_OP_SIGNATURE:
        return signature;
    default:
        return nullptr;
    }
}

int providerInit(const OSSL_CORE_HANDLE* handle, const OSSL_DISPATCH*, const OSSL_DISPATCH** out, void** provctx)
{
    static const OSSL_DISPATCH fns[] = {
        {OSSL_FUNC_PROVIDER_QUERY_OPERATION, fn(queryOperation)},
        {0, nullptr},
    };
    *out = fns;
    *provctx = const_cast<OSSL_CORE_HANDLE*>(handle);
    return 1;
}

Status ensureProvider()
{
    // Loaded for the life of the process; unloaded when static objects are destroyed
    // (after the threads that use them stopped, before OpenSSL's own cleanup, which
    // was registered earlier).
    struct Loaded {
        OSSL_PROVIDER* defaults = nullptr;
        OSSL_PROVIDER* remote = nullptr;
        ~Loaded()
        {
            if (remote != nullptr) {
                OSSL_PROVIDER_unload(remote);
            }
            if (defaults != nullptr) {
                OSSL_PROVIDER_unload(defaults);
            }
        }
    };
    static std::once_flag once;
    static std::string failure;
    static Loaded loaded;
    std::call_once(once, [] {
        // Loading a provider by hand stops OpenSSL from loading the default one on
        // its own: load both, default first.
        if (OSSL_PROVIDER_add_builtin(nullptr, kProviderName, providerInit) != 1 ||
            (loaded.defaults = OSSL_PROVIDER_try_load(nullptr, "default", 1)) == nullptr ||
            (loaded.remote = OSSL_PROVIDER_try_load(nullptr, kProviderName, 1)) == nullptr) {
            failure = "cannot load the in-process key provider: " + crypto::lastOpenSslError();
            return;
        }
        // Every other fetch (the server's key, key shares, digests) prefers the
        // default provider: ours holds public keys that cannot verify or derive.
        if (EVP_set_default_properties(nullptr, "?provider=default") != 1) {
            failure = "cannot prefer the default provider: " + crypto::lastOpenSslError();
        }
    });
    if (!failure.empty()) {
        return unexpected(ErrorCode::Failed, failure);
    }
    return {};
}

struct OpenSslFree {
    void operator()(unsigned char* p) const { OPENSSL_free(p); }
};

std::vector<crypto::X509Ptr> readChain(const std::string& chainPem)
{
    std::vector<crypto::X509Ptr> out;
    crypto::Bio bio(BIO_new_mem_buf(chainPem.data(), static_cast<int>(chainPem.size())));
    while (bio) {
        crypto::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
        if (!cert) {
            break;
        }
        out.push_back(std::move(cert));
    }
    ERR_clear_error(); // the end of the PEM text is reported as an error
    return out;
}

} // namespace

Expected<crypto::Pkey> makeRemoteKey(const std::string& chainPem, HandshakeSigner signer)
{
    if (auto st = ensureProvider(); !st) {
        return unexpected(st.error());
    }
    auto chain = readChain(chainPem);
    if (chain.empty()) {
        return unexpected(ErrorCode::InvalidArgument, "the device certificate chain holds no PEM certificate");
    }
    EVP_PKEY* pub = X509_get0_pubkey(chain.front().get());
    const char* type = pub == nullptr                     ? nullptr
                       : EVP_PKEY_is_a(pub, "EC") == 1  ? "EC"
                       : EVP_PKEY_is_a(pub, "RSA") == 1 ? "RSA"
                                                        : nullptr;
    if (type == nullptr) {
        return unexpected(ErrorCode::NotSupported,
                          "the device certificate's key is neither EC nor RSA; the cloud client cannot sign with it");
    }
    unsigned char* raw = nullptr;
    const int len = i2d_PUBKEY(pub, &raw);
    std::unique_ptr<unsigned char, OpenSslFree> der(raw);
    if (len <= 0) {
        return unexpected(ErrorCode::Failed, "cannot encode the certificate's public key: " + crypto::lastOpenSslError());
    }
    SignerRef ref = std::make_shared<const HandshakeSigner>(std::move(signer));
    void* refAddress = &ref;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(kParamSpki, der.get(), static_cast<std::size_t>(len)),
        OSSL_PARAM_construct_octet_ptr(kParamSigner, &refAddress, sizeof(SignerRef)),
        OSSL_PARAM_construct_end(),
    };
    crypto::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, kProps));
    EVP_PKEY* key = nullptr;
    if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) <= 0 ||
        EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        return unexpected(ErrorCode::Failed, "cannot make the remote key: " + crypto::lastOpenSslError());
    }
    return crypto::Pkey(key);
}

Status useClientIdentity(SSL_CTX* ctx, const std::string& chainPem, EVP_PKEY* key)
{
    auto chain = readChain(chainPem);
    if (chain.empty()) {
        return unexpected(ErrorCode::InvalidArgument, "the device certificate chain holds no PEM certificate");
    }
    if (SSL_CTX_use_certificate(ctx, chain.front().get()) != 1) {
        return unexpected(ErrorCode::InvalidArgument, "the device certificate is unusable: " + crypto::lastOpenSslError());
    }
    for (std::size_t i = 1; i < chain.size(); ++i) {
        if (SSL_CTX_add1_chain_cert(ctx, chain[i].get()) != 1) {
            return unexpected(ErrorCode::InvalidArgument,
                              "an intermediate certificate is unusable: " + crypto::lastOpenSslError());
        }
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the device certificate does not match the identity service's key: " + crypto::lastOpenSslError());
    }
    return {};
}

} // namespace mbl::crypto
