// SPDX-License-Identifier: Apache-2.0
#include "est.h"

#include "mbl/crypto.h"
#include "mbl/strings.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <cctype>
#include <memory>

namespace mbl::identity {

namespace {

struct Pkcs7Free {
    void operator()(PKCS7* p) const { PKCS7_free(p); }
};

// Base64 without line breaks or with them (RFC 2045 allows both; §4 of RFC 7030
// says "base64"): whitespace is skipped, anything else outside the alphabet is refused.
std::optional<std::string> decodeBase64(const std::string& text)
{
    std::string clean;
    clean.reserve(text.size());
    for (char c : text) {
        if (std::isspace(static_cast<unsigned char>(c)) != 0) {
            continue;
        }
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '+' && c != '/' && c != '=') {
            return std::nullopt;
        }
        clean.push_back(c);
    }
    if (clean.empty() || clean.size() % 4 != 0) {
        return std::nullopt;
    }
    std::string out(clean.size() / 4 * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(clean.data()), static_cast<int>(clean.size()));
    if (n < 0) {
        return std::nullopt;
    }
    std::size_t pad = 0;
    for (std::size_t i = clean.size(); i > 0 && clean[i - 1] == '='; --i) {
        ++pad;
    }
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
}

std::string encodeBase64(const std::string& der)
{
    std::string out(4 * ((der.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(der.data()), static_cast<int>(der.size()));
    out.resize(static_cast<std::size_t>(n));
    // 64-character lines, as RFC 2045 writes base64.
    std::string wrapped;
    for (std::size_t i = 0; i < out.size(); i += 64) {
        wrapped += out.substr(i, 64) + "\r\n";
    }
    return wrapped;
}

std::string lower(std::string s)
{
    for (char& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

std::string bodyStart(const std::string& body)
{
    return "'" + str::quotable(str::trim(body), 120) + "'";
}

} // namespace

const char* estCredentialName(EstCredential c)
{
    switch (c) {
    case EstCredential::BootstrapCertificate:
        return "bootstrap-certificate";
    case EstCredential::Basic:
        return "basic";
    case EstCredential::Bearer:
        return "bearer";
    }
    return "?";
}

Expected<std::optional<EstConfig>> readEstConfig(const Config& config)
{
    EstConfig c;
    auto url = config.getString("est.url", "");
    auto ca = config.getString("est.server_ca", "");
    auto cred = config.getEnum("est.credential", "basic", {"bootstrap-certificate", "basic", "bearer"});
    auto cert = config.getString("est.bootstrap_certificate", "");
    auto key = config.getString("est.bootstrap_key", "");
    auto token = config.getString("est.token_file", "");
    auto renew = config.getInt("est.renew_at_permille", 667, 1, 999);
    auto rmin = config.getInt("est.retry_min_seconds", 60, 1, 86400);
    auto rmax = config.getInt("est.retry_max_seconds", 3600, 1, 7 * 86400);
    auto timeout = config.getInt("est.timeout_seconds", 60, 1, 3600);
    auto atStart = config.getBool("est.enroll_at_start", true);
    for (const Error* e : {url ? nullptr : &url.error(), ca ? nullptr : &ca.error(), cred ? nullptr : &cred.error(),
                           cert ? nullptr : &cert.error(), key ? nullptr : &key.error(),
                           token ? nullptr : &token.error(), renew ? nullptr : &renew.error(),
                           rmin ? nullptr : &rmin.error(), rmax ? nullptr : &rmax.error(),
                           timeout ? nullptr : &timeout.error(), atStart ? nullptr : &atStart.error()}) {
        if (e != nullptr) {
            return unexpected(*e);
        }
    }
    if (!config.has("est")) {
        return std::optional<EstConfig>();
    }
    const std::string where = config.origin() + ": key 'est.";
    if (!str::startsWith(*url, "https://")) {
        return unexpected(ErrorCode::InvalidArgument, where + "url' must be an https:// URL (RFC 7030 §3.3)");
    }
    c.url = *url;
    while (!c.url.empty() && c.url.back() == '/') {
        c.url.pop_back();
    }
    c.serverCa = *ca;
    c.credential = *cred == "bootstrap-certificate" ? EstCredential::BootstrapCertificate
                   : *cred == "bearer"            ? EstCredential::Bearer
                                                  : EstCredential::Basic;
    c.bootstrapCertificate = *cert;
    c.bootstrapKey = *key;
    c.tokenFile = *token;
    if (c.credential == EstCredential::BootstrapCertificate && (c.bootstrapCertificate.empty() || c.bootstrapKey.empty())) {
        return unexpected(ErrorCode::InvalidArgument,
                          where + "credential' bootstrap-certificate needs 'est.bootstrap_certificate' and "
                                  "'est.bootstrap_key'");
    }
    if (c.credential != EstCredential::BootstrapCertificate && c.tokenFile.empty()) {
        return unexpected(ErrorCode::InvalidArgument,
                          where + "credential' " + *cred + " needs 'est.token_file'");
    }
    c.renewAtPermille = static_cast<int>(*renew);
    c.retryMinSeconds = static_cast<int>(*rmin);
    c.retryMaxSeconds = static_cast<int>(*rmax);
    if (c.retryMaxSeconds < c.retryMinSeconds) {
        return unexpected(ErrorCode::InvalidArgument, where + "retry_max_seconds' is below 'est.retry_min_seconds'");
    }
    c.timeoutSeconds = static_cast<int>(*timeout);
    c.enrollAtStart = *atStart;
    return std::optional<EstConfig>(std::move(c));
}

Expected<std::string> csrRequestBody(const std::string& csrPem)
{
    crypto::Bio bio(BIO_new_mem_buf(csrPem.data(), static_cast<int>(csrPem.size())));
    crypto::X509Req req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
    if (!req) {
        return unexpected(ErrorCode::InvalidArgument, "not a PEM certificate request: " + crypto::lastOpenSslError());
    }
    unsigned char* der = nullptr;
    const int n = i2d_X509_REQ(req.get(), &der);
    if (n <= 0) {
        return unexpected(ErrorCode::Failed, "cannot encode the certificate request: " + crypto::lastOpenSslError());
    }
    std::string out(reinterpret_cast<char*>(der), static_cast<std::size_t>(n));
    OPENSSL_free(der);
    return encodeBase64(out);
}

Expected<std::string> certificatesFromReply(const EstHttpReply& reply, const std::string& operation)
{
    const std::string what = "the EST server's answer to " + operation;
    switch (reply.status) {
    case 200:
        break;
    case 202: {
        const auto secs = retryAfterSeconds(reply.retryAfter);
        return unexpected(ErrorCode::Busy, what + " is 202 (request accepted, certificate not issued yet): retry after " +
                                               (secs ? std::to_string(*secs) + " s" : "a while") + " (RFC 7030 §4.2.3)");
    }
    case 401:
        return unexpected(ErrorCode::AccessDenied,
                          what + " is 401: the server did not accept the client's credential " + bodyStart(reply.body));
    case 403:
        return unexpected(ErrorCode::AccessDenied, what + " is 403: the CA refused the request " + bodyStart(reply.body));
    default:
        return unexpected(ErrorCode::Failed,
                          what + " is HTTP " + std::to_string(reply.status) + " " + bodyStart(reply.body));
    }
    // RFC 7030 §4.2.3: "application/pkcs7-mime" with smime-type=certs-only.
    if (!str::startsWith(lower(reply.contentType), "application/pkcs7-mime")) {
        return unexpected(ErrorCode::InvalidArgument,
                          what + " has Content-Type '" + str::quotable(reply.contentType) +
                              "', not application/pkcs7-mime (RFC 7030 §4.2.3)");
    }
    auto der = decodeBase64(reply.body);
    if (!der) {
        return unexpected(ErrorCode::InvalidArgument, what + " is not base64 (RFC 7030 §4.2.3) " + bodyStart(reply.body));
    }
    const auto* p = reinterpret_cast<const unsigned char*>(der->data());
    std::unique_ptr<PKCS7, Pkcs7Free> p7(d2i_PKCS7(nullptr, &p, static_cast<long>(der->size())));
    if (!p7 || p != reinterpret_cast<const unsigned char*>(der->data()) + der->size()) {
        ERR_clear_error();
        return unexpected(ErrorCode::InvalidArgument, what + " is not a PKCS#7 structure (garbage after base64 decoding)");
    }
    if (!PKCS7_type_is_signed(p7.get()) || p7->d.sign == nullptr || p7->d.sign->cert == nullptr ||
        sk_X509_num(p7->d.sign->cert) == 0) {
        return unexpected(ErrorCode::InvalidArgument, what + " is PKCS#7 but holds no certificate (a certs-only "
                                                             "SignedData is expected, RFC 7030 §4.2.3)");
    }
    std::string pem;
    for (int i = 0; i < sk_X509_num(p7->d.sign->cert); ++i) {
        crypto::Bio out(BIO_new(BIO_s_mem()));
        PEM_write_bio_X509(out.get(), sk_X509_value(p7->d.sign->cert, i));
        char* data = nullptr;
        const long n = BIO_get_mem_data(out.get(), &data);
        pem.append(data, static_cast<std::size_t>(n));
    }
    return pem;
}

std::optional<std::int64_t> retryAfterSeconds(const std::string& header)
{
    const std::string t = str::trim(header);
    if (t.empty() || t.size() > 9) {
        return std::nullopt;
    }
    for (char c : t) {
        if (std::isdigit(static_cast<unsigned char>(c)) == 0) {
            return std::nullopt;
        }
    }
    return std::stoll(t);
}

} // namespace mbl::identity
