// SPDX-License-Identifier: Apache-2.0
#include "certificates.h"

#include "mbl/crypto_identity.h"
#include "mbl/fs.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cctype>

namespace mbl::identity {

namespace {

std::string bioText(BIO* bio)
{
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

std::string asn1TimeText(const ASN1_TIME* t)
{
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    ASN1_TIME_print(bio.get(), t);
    return bioText(bio.get());
}

bool hasControlChars(const std::string& s)
{
    return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

const std::vector<std::string>& subjectOrder()
{
    static const std::vector<std::string> order = {"C", "ST", "L", "O", "OU"};
    return order;
}

} // namespace

Status validateCsrOptions(const CsrOptions& options)
{
    for (const auto& [key, value] : options.subject) {
        const auto& order = subjectOrder();
        if (std::find(order.begin(), order.end(), key) == order.end()) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option '" + key + "' is not known (use O, OU, C, ST, L and SAN)");
        }
        if (value.empty() || value.size() > 64 || hasControlChars(value)) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option '" + key + "' must be 1 to 64 printable characters");
        }
        if (key == "C" && (value.size() != 2 || !std::isalpha(static_cast<unsigned char>(value[0])) ||
                           !std::isalpha(static_cast<unsigned char>(value[1])))) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option 'C' must be a two-letter country code (ISO 3166), not '" + value + "'");
        }
    }
    if (options.san.size() > 32) {
        return unexpected(ErrorCode::InvalidArgument, "option 'SAN' has more than 32 names");
    }
    for (const auto& name : options.san) {
        auto colon = name.find(':');
        const std::string kind = colon == std::string::npos ? "" : name.substr(0, colon);
        if (kind != "DNS" && kind != "IP" && kind != "URI" && kind != "email") {
            return unexpected(ErrorCode::InvalidArgument,
                              "option 'SAN': '" + name + "' must start with DNS:, IP:, URI: or email:");
        }
        const std::string value = name.substr(colon + 1);
        if (value.empty() || value.size() > 255 || hasControlChars(value) || value.find(',') != std::string::npos) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option 'SAN': '" + name + "' must have a value of 1 to 255 printable characters without ','");
        }
    }
    return {};
}

namespace {
Expected<std::string> signRequest(X509_REQ* req, const DeviceKey& key);
} // namespace

Expected<std::string> createCsr(const DeviceKey& key, const std::string& commonName, const CsrOptions& options)
{
    if (auto st = validateCsrOptions(options); !st) {
        return unexpected(st.error());
    }
    crypto::X509Req req(X509_REQ_new());
    if (!req || X509_REQ_set_version(req.get(), 0) != 1) {
        return unexpected(ErrorCode::Failed, "cannot make a CSR: " + crypto::lastOpenSslError());
    }
    X509_NAME* name = X509_REQ_get_subject_name(req.get());
    auto addField = [&](const std::string& field, const std::string& value) {
        return X509_NAME_add_entry_by_txt(name, field.c_str(), MBSTRING_UTF8,
                                          reinterpret_cast<const unsigned char*>(value.c_str()),
                                          static_cast<int>(value.size()), -1, 0) == 1;
    };
    for (const auto& field : subjectOrder()) {
        auto it = options.subject.find(field);
        if (it != options.subject.end() && !addField(field, it->second)) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option '" + field + "': " + crypto::lastOpenSslError());
        }
    }
    if (!addField("CN", commonName)) {
        return unexpected(ErrorCode::Failed, "cannot set the CN: " + crypto::lastOpenSslError());
    }
    if (X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
        return unexpected(ErrorCode::Failed, "cannot set the CSR's key: " + crypto::lastOpenSslError());
    }
    if (!options.san.empty()) {
        std::string joined;
        for (const auto& s : options.san) {
            joined += (joined.empty() ? "" : ",") + s;
        }
        crypto::X509Extension ext(X509V3_EXT_nconf_nid(nullptr, nullptr, NID_subject_alt_name, joined.c_str()));
        if (!ext) {
            return unexpected(ErrorCode::InvalidArgument,
                              "option 'SAN': '" + joined + "' is not valid: " + crypto::lastOpenSslError());
        }
        STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
        sk_X509_EXTENSION_push(exts, ext.get());
        int ok = X509_REQ_add_extensions(req.get(), exts);
        sk_X509_EXTENSION_free(exts); // the extension itself stays owned by `ext`
        if (ok != 1) {
            return unexpected(ErrorCode::Failed, "cannot add the SAN: " + crypto::lastOpenSslError());
        }
    }
    return signRequest(req.get(), key);
}

Expected<std::string> createRenewalCsr(const DeviceKey& key, X509* current)
{
    crypto::X509Req req(X509_REQ_new());
    if (!req || X509_REQ_set_version(req.get(), 0) != 1 ||
        X509_REQ_set_subject_name(req.get(), X509_get_subject_name(current)) != 1 ||
        X509_REQ_set_pubkey(req.get(), key.get()) != 1) {
        return unexpected(ErrorCode::Failed, "cannot make a renewal CSR: " + crypto::lastOpenSslError());
    }
    // RFC 7030 §4.2.2: Subject and SubjectAltName identical to the certificate being renewed.
    const int at = X509_get_ext_by_NID(current, NID_subject_alt_name, -1);
    if (at >= 0) {
        STACK_OF(X509_EXTENSION)* exts = sk_X509_EXTENSION_new_null();
        sk_X509_EXTENSION_push(exts, X509_get_ext(current, at));
        const int ok = X509_REQ_add_extensions(req.get(), exts);
        sk_X509_EXTENSION_free(exts); // the extension stays owned by the certificate
        if (ok != 1) {
            return unexpected(ErrorCode::Failed, "cannot copy the SAN: " + crypto::lastOpenSslError());
        }
    }
    return signRequest(req.get(), key);
}

namespace {
Expected<std::string> signRequest(X509_REQ* req, const DeviceKey& key)
{
    // In the key's own library context: a TPM key's signature must be the tpm2
    // provider's (OpenSSL 3.0 would otherwise export the public half to the
    // default provider and fail for want of the private key).
    crypto::MdCtx mctx(EVP_MD_CTX_new());
    if (!mctx ||
        EVP_DigestSignInit_ex(mctx.get(), nullptr, key.isEd25519() ? nullptr : "SHA256", key.libctx(), key.propq(),
                              key.get(), nullptr) != 1 ||
        X509_REQ_sign_ctx(req, mctx.get()) <= 0) {
        return unexpected(ErrorCode::Failed, "cannot sign the CSR with the device key: " + crypto::lastOpenSslError());
    }
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509_REQ(bio.get(), req);
    return bioText(bio.get());
}
} // namespace

Expected<std::vector<crypto::X509Ptr>> parsePemCertificates(const std::string& pem, const std::string& what)
{
    if (pem.find_first_not_of(" \t\r\n") == std::string::npos) {
        return unexpected(ErrorCode::InvalidArgument, what + " is empty");
    }
    if (pem.size() > (1u << 20)) {
        return unexpected(ErrorCode::InvalidArgument, what + " is larger than 1 MiB");
    }
    crypto::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    std::vector<crypto::X509Ptr> certs;
    ERR_clear_error();
    while (true) {
        X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
        if (x == nullptr) {
            unsigned long err = ERR_peek_last_error();
            if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) {
                ERR_clear_error();
                break; // end of input
            }
            return unexpected(ErrorCode::InvalidArgument, what + ": certificate " + std::to_string(certs.size() + 1) +
                                                              " is damaged: " + crypto::lastOpenSslError());
        }
        certs.emplace_back(x);
        if (certs.size() > 16) {
            return unexpected(ErrorCode::InvalidArgument, what + " has more than 16 certificates");
        }
    }
    if (certs.empty()) {
        return unexpected(ErrorCode::InvalidArgument,
                          what + " holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)");
    }
    return certs;
}

std::string certificatesToPem(const std::vector<crypto::X509Ptr>& certs)
{
    crypto::Bio bio(BIO_new(BIO_s_mem()));
    for (const auto& c : certs) {
        PEM_write_bio_X509(bio.get(), c.get());
    }
    return bioText(bio.get());
}

std::string describeCertificate(X509* cert)
{
    char subject[512] = {0};
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    return std::string(subject) + " (valid " + asn1TimeText(X509_get0_notBefore(cert)) + " to " +
           asn1TimeText(X509_get0_notAfter(cert)) + ")";
}

std::uint64_t notAfterOf(X509* cert)
{
    struct tm tm {};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
        return 0;
    }
    time_t t = timegm(&tm);
    return t < 0 ? 0 : static_cast<std::uint64_t>(t);
}

std::uint64_t notBeforeOf(X509* cert)
{
    struct tm tm {};
    if (ASN1_TIME_to_tm(X509_get0_notBefore(cert), &tm) != 1) {
        return 0;
    }
    time_t t = timegm(&tm);
    return t < 0 ? 0 : static_cast<std::uint64_t>(t);
}

Expected<VerifiedChain> verifyDeviceChain(const std::string& chainPem, const DeviceKey& key,
                                          const std::string& fleetCaPath, std::time_t now)
{
    if (fleetCaPath.empty()) {
        return verifyDeviceChainWithCas(chainPem, key, "", "", now);
    }
    auto caText = fs::readFile(fleetCaPath, 1u << 20);
    if (!caText) {
        return unexpected(ErrorCode::Io, "cannot read the fleet CA (config key fleet_ca): " + caText.error().message);
    }
    return verifyDeviceChainWithCas(chainPem, key, *caText, "fleet CA " + fleetCaPath, now);
}

Expected<VerifiedChain> verifyDeviceChainWithCas(const std::string& chainPem, const DeviceKey& key,
                                                 const std::string& casPem, const std::string& casWhat,
                                                 std::time_t now)
{
    auto certs = parsePemCertificates(chainPem, "certificate chain");
    if (!certs) {
        return unexpected(certs.error());
    }
    X509* leaf = certs->front().get();
    if (!key.matches(X509_get0_pubkey(leaf))) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the certificate " + describeCertificate(leaf) +
                              " is for another key, not this device's key (its first certificate must be the device's)");
    }
    if (X509_cmp_time(X509_get0_notBefore(leaf), &now) > 0) {
        return unexpected(ErrorCode::InvalidArgument, "the certificate is not valid yet: it starts on " +
                                                          asn1TimeText(X509_get0_notBefore(leaf)) +
                                                          " (check the device clock or the CA's)");
    }
    if (X509_cmp_time(X509_get0_notAfter(leaf), &now) < 0) {
        return unexpected(ErrorCode::InvalidArgument,
                          "the certificate expired on " + asn1TimeText(X509_get0_notAfter(leaf)));
    }
    if (!casPem.empty()) {
        auto cas = parsePemCertificates(casPem, casWhat);
        if (!cas) {
            return unexpected(ErrorCode::Io, cas.error().message);
        }
        crypto::X509Store store(X509_STORE_new());
        for (const auto& ca : *cas) {
            X509_STORE_add_cert(store.get(), ca.get());
        }
        crypto::X509Stack untrusted(sk_X509_new_null());
        for (std::size_t i = 1; i < certs->size(); ++i) {
            X509_up_ref((*certs)[i].get());
            sk_X509_push(untrusted.get(), (*certs)[i].get());
        }
        crypto::X509StoreCtx ctx(X509_STORE_CTX_new());
        if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf, untrusted.get()) != 1) {
            return unexpected(ErrorCode::Failed, "cannot set up chain verification: " + crypto::lastOpenSslError());
        }
        X509_STORE_CTX_set_time(ctx.get(), 0, now);
        // The fleet CA may be an intermediate: trust it as an anchor as configured.
        X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_PARTIAL_CHAIN);
        if (X509_verify_cert(ctx.get()) != 1) {
            int err = X509_STORE_CTX_get_error(ctx.get());
            ERR_clear_error();
            return unexpected(ErrorCode::SignatureInvalid, "the certificate chain does not lead to the " +
                                                               casWhat + ": " + X509_verify_cert_error_string(err));
        }
    }
    VerifiedChain out;
    out.pem = certificatesToPem(*certs);
    out.notAfter = notAfterOf(leaf);
    char subject[512] = {0};
    X509_NAME_oneline(X509_get_subject_name(leaf), subject, sizeof subject);
    out.leafSubject = subject;
    return out;
}

} // namespace mbl::identity
