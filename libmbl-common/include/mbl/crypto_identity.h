// SPDX-License-Identifier: Apache-2.0
#pragma once
// More OpenSSL handles owned by RAII, the ones the identity service needs next to
// mbl/crypto.h: key stores (OSSL_STORE, for key URIs), certificate stacks,
// extensions and names.

#include <openssl/store.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace mbl::crypto {

struct StoreCtxClose {
    void operator()(OSSL_STORE_CTX* p) const { OSSL_STORE_close(p); }
};
struct StoreInfoFree {
    void operator()(OSSL_STORE_INFO* p) const { OSSL_STORE_INFO_free(p); }
};
struct X509StackFree {
    void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
struct X509ExtensionFree {
    void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct X509NameFree {
    void operator()(X509_NAME* p) const { X509_NAME_free(p); }
};

using StoreCtx = std::unique_ptr<OSSL_STORE_CTX, StoreCtxClose>;
using StoreInfo = std::unique_ptr<OSSL_STORE_INFO, StoreInfoFree>;
using X509Stack = std::unique_ptr<STACK_OF(X509), X509StackFree>;
using X509Extension = std::unique_ptr<X509_EXTENSION, X509ExtensionFree>;
using X509Name = std::unique_ptr<X509_NAME, X509NameFree>;

} // namespace mbl::crypto
