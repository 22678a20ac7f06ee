// SPDX-License-Identifier: Apache-2.0
#include "ca_trust.h"

#include "certificates.h"

#include "mbl/crypto.h"
#include "mbl/crypto_identity.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <vector>

namespace mbl::identity {

namespace {

bool selfSigned(X509* cert)
{
    // Subject == issuer and the signature verifies with its own key.
    if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0) {
        return false;
    }
    const int ok = X509_verify(cert, X509_get0_pubkey(cert));
    ERR_clear_error();
    return ok == 1;
}

bool heldIn(const std::vector<crypto::X509Ptr>& set, X509* cert)
{
    for (const auto& c : set) {
        if (X509_cmp(c.get(), cert) == 0) {
            return true;
        }
    }
    return false;
}

std::string subjectOf(X509* cert)
{
    char subject[512] = {0};
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    return subject;
}

// True when `link` verifies against the trusted CAs at `now`, the other
// certificates of the answer serving as intermediates.
bool verifiesAgainst(X509* link, const std::vector<crypto::X509Ptr>& trusted,
                     const std::vector<crypto::X509Ptr>& answer, std::time_t now)
{
    crypto::X509Store store(X509_STORE_new());
    for (const auto& ca : trusted) {
        X509_STORE_add_cert(store.get(), ca.get());
    }
    crypto::X509Stack untrusted(sk_X509_new_null());
    for (const auto& c : answer) {
        if (c.get() != link && !selfSigned(c.get())) {
            X509_up_ref(c.get());
            sk_X509_push(untrusted.get(), c.get());
        }
    }
    crypto::X509StoreCtx ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), link, untrusted.get()) != 1) {
        ERR_clear_error();
        return false;
    }
    X509_STORE_CTX_set_time(ctx.get(), 0, now);
    X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_PARTIAL_CHAIN); // a trusted intermediate is an anchor
    const bool ok = X509_verify_cert(ctx.get()) == 1;
    ERR_clear_error();
    return ok;
}

} // namespace

std::size_t countCertificates(const std::string& pem)
{
    auto certs = parsePemCertificates(pem, "CA certificates");
    return certs ? certs->size() : 0;
}

Expected<TrustedCas> acceptCaCertificates(const std::string& trustedPem, const std::string& cacertsPem,
                                           std::time_t now)
{
    auto trusted = parsePemCertificates(trustedPem, "the trusted fleet CAs");
    if (!trusted) {
        return unexpected(trusted.error());
    }
    auto answer = parsePemCertificates(cacertsPem, "the EST /cacerts answer");
    if (!answer) {
        return unexpected(answer.error());
    }
    std::vector<X509*> added;
    bool anyRoot = false;
    for (const auto& root : *answer) {
        if (!selfSigned(root.get()) || X509_check_ca(root.get()) == 0) {
            continue; // a link (NewWithOld, OldWithNew) or an intermediate
        }
        anyRoot = true;
        if (heldIn(*trusted, root.get())) {
            continue;
        }
        bool linked = false;
        for (const auto& link : *answer) {
            if (link.get() == root.get() || selfSigned(link.get()) || X509_check_ca(link.get()) == 0 ||
                X509_NAME_cmp(X509_get_subject_name(link.get()), X509_get_subject_name(root.get())) != 0 ||
                EVP_PKEY_eq(X509_get0_pubkey(link.get()), X509_get0_pubkey(root.get())) != 1) {
                continue;
            }
            if (verifiesAgainst(link.get(), *trusted, *answer, now)) {
                linked = true;
                break;
            }
        }
        if (!linked) {
            return unexpected(ErrorCode::SignatureInvalid,
                              "the EST server's /cacerts answer holds the CA '" + subjectOf(root.get()) +
                                  "', which is not a trusted fleet CA and is not signed by one (no NewWithOld "
                                  "certificate, RFC 7030 §4.1.3): refused, the trusted CAs are unchanged");
        }
        added.push_back(root.get());
    }
    if (!anyRoot) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the EST server's /cacerts answer holds no self-signed CA certificate (RFC 7030 §4.1.3 "
                          "asks for the current root CA)");
    }
    std::vector<crypto::X509Ptr> all;
    for (const auto& c : *trusted) {
        if (!heldIn(all, c.get())) {
            X509_up_ref(c.get());
            all.emplace_back(c.get());
        }
    }
    TrustedCas out;
    for (X509* root : added) {
        if (!heldIn(all, root)) {
            X509_up_ref(root);
            all.emplace_back(root);
            ++out.added;
        }
    }
    out.pem = certificatesToPem(all);
    return out;
}

} // namespace mbl::identity
