// SPDX-License-Identifier: Apache-2.0
#include "test_certs.h"

#include "mbl/crypto_identity.h"

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <stdexcept>

namespace mbl::test {

namespace {
void addExt(X509* cert, X509* issuer, int nid, const char* value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    crypto::X509Extension ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
        throw std::runtime_error("cannot add extension");
    }
}

crypto::X509Ptr issue(EVP_PKEY* subjectKey, const std::string& cn, X509* issuerCert, EVP_PKEY* issuerKey,
                      long notBefore, long notAfter, bool ca)
{
    crypto::X509Ptr x(X509_new());
    X509_set_version(x.get(), 2);
    unsigned char serial[8];
    RAND_bytes(serial, sizeof serial);
    serial[0] &= 0x7f;
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get()));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x.get()), notBefore);
    X509_gmtime_adj(X509_getm_notAfter(x.get()), notAfter);
    X509_NAME* name = X509_get_subject_name(x.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                               0);
    X509_set_issuer_name(x.get(), issuerCert != nullptr ? X509_get_subject_name(issuerCert) : name);
    X509_set_pubkey(x.get(), subjectKey);
    X509* issuerForExt = issuerCert != nullptr ? issuerCert : x.get();
    addExt(x.get(), issuerForExt, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    addExt(x.get(), issuerForExt, NID_subject_key_identifier, "hash");
    if (ca) {
        addExt(x.get(), issuerForExt, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    if (X509_sign(x.get(), issuerKey, EVP_sha256()) <= 0) {
        throw std::runtime_error("cannot sign test certificate");
    }
    return x;
}
} // namespace

std::string certPem(X509* cert)
{
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(bio.get(), cert);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

std::string TestCert::pem() const
{
    return certPem(cert.get());
}

TestCert makeCa(const std::string& cn)
{
    auto key = identity::DeviceKey::generate(identity::KeyType::EcP256);
    auto cert = issue(key->get(), cn, nullptr, key->get(), -3600, 86400L * 365, true);
    return TestCert{*key, std::move(cert)};
}

TestCert makeIntermediate(const TestCert& issuer, const std::string& cn)
{
    auto key = identity::DeviceKey::generate(identity::KeyType::EcP256);
    auto cert = issue(key->get(), cn, issuer.cert.get(), issuer.key.get(), -3600, 86400L * 365, true);
    return TestCert{*key, std::move(cert)};
}

crypto::X509Ptr makeLeaf(const TestCert& issuer, EVP_PKEY* subjectKey, const std::string& cn, long notBeforeSec,
                         long notAfterSec)
{
    return issue(subjectKey, cn, issuer.cert.get(), issuer.key.get(), notBeforeSec, notAfterSec, false);
}

} // namespace mbl::test
