// SPDX-License-Identifier: Apache-2.0
#pragma once
// OpenSSL handles owned by RAII (one wrapper per foreign handle type) and
// SHA-256 through EVP, which uses the CPU's SHA instructions (sha256sum does not).

#include "mbl/expected.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

namespace mbl::crypto {

struct PkeyFree {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
    void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
    void operator()(BIO* p) const { BIO_free_all(p); }
};
struct MdCtxFree {
    void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct X509StoreFree {
    void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
struct X509StoreCtxFree {
    void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
struct X509ReqFree {
    void operator()(X509_REQ* p) const { X509_REQ_free(p); }
};

using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using Bio = std::unique_ptr<BIO, BioFree>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using X509Store = std::unique_ptr<X509_STORE, X509StoreFree>;
using X509StoreCtx = std::unique_ptr<X509_STORE_CTX, X509StoreCtxFree>;
using X509Req = std::unique_ptr<X509_REQ, X509ReqFree>;

// The most recent OpenSSL error queue entries as one line (and clears the queue).
std::string lastOpenSslError();

// Streaming SHA-256.
class Sha256 {
public:
    Sha256();
    void update(const void* data, std::size_t len);
    std::array<unsigned char, 32> finish();
    std::string finishHex();

private:
    MdCtx ctx_;
};

std::string sha256Hex(const std::string& data);
// SHA-256 of everything readable from fd (hex), with the byte count.
Expected<std::pair<std::string, std::uint64_t>> sha256HexOfFd(int fd);

} // namespace mbl::crypto
