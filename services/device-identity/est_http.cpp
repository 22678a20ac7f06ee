// SPDX-License-Identifier: Apache-2.0
#include "est_http.h"

#include "certificates.h"
#include "mbl/remote_key.h"
#include "signer.h"

#include "mbl/crypto.h"
#include "mbl/curl_loader.h"
#include "mbl/strings.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <cctype>

namespace mbl::identity {

namespace {

size_t collectBody(char* p, size_t sz, size_t n, void* ud)
{
    auto* out = static_cast<std::string*>(ud);
    if (out->size() + sz * n > (1u << 20)) {
        return 0; // an EST answer is a few KiB: stop a server that sends more
    }
    out->append(p, sz * n);
    return sz * n;
}

size_t collectHeader(char* p, size_t sz, size_t n, void* ud)
{
    auto* reply = static_cast<EstHttpReply*>(ud);
    const std::string line(p, sz * n);
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        const std::string value = str::trim(line.substr(colon + 1));
        if (name == "retry-after") {
            reply->retryAfter = value;
        }
    }
    return sz * n;
}

// What curl's SSL_CTX gets for a renewal: the certificate in force and a key
// object to sign the handshake with.
struct ClientIdentity {
    std::string chainPem;
    EVP_PKEY* key = nullptr;
};

// Puts the current certificate and the device key into curl's SSL_CTX: the TLS
// client signature is made with the key this service holds.
CURLcode useDeviceKey(CURL*, void* sslctx, void* userptr)
{
    const auto* id = static_cast<const ClientIdentity*>(userptr);
    auto st = crypto::useClientIdentity(static_cast<SSL_CTX*>(sslctx), id->chainPem, id->key);
    return st ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

} // namespace

namespace {

// One EST request: POST with `body` when given, else GET (RFC 7030 §4.1.2 /cacerts).
Expected<EstHttpReply> estRequest(const EstConfig& config, const std::string& operation, const std::string* body,
                                  const EstClientAuth& auth)
{
    const std::string url = config.url + "/" + operation;
    // libcurl is loaded for the exchange and unloaded after it: EST runs at
    // enrolment and renewal only, and the idle service carries none of it.
    auto lib = curl::loadLibrary();
    if (!lib) {
        return unexpected(lib.error().code, "EST " + operation + " at " + url + ": " + lib.error().message);
    }
    const curl::Api& api = **lib;
    curl::LoadedEasy c(api.easyInit(), {*lib});
    if (!c) {
        return unexpected(ErrorCode::Failed, "curl_easy_init failed");
    }
    EstHttpReply reply;
    char errbuf[CURL_ERROR_SIZE] = {};
    curl::LoadedSlist headers(api.slistAppend(nullptr, "Accept: application/pkcs7-mime"), {*lib});
    if (body != nullptr) {
        api.slistAppend(headers.get(), "Content-Type: application/pkcs10");
        api.slistAppend(headers.get(), "Content-Transfer-Encoding: base64");
    }
    api.slistAppend(headers.get(), "Expect:");
    std::string authHeader;
    if (!auth.authorization.empty()) {
        authHeader = "Authorization: " + auth.authorization;
        api.slistAppend(headers.get(), authHeader.c_str());
    }
    api.easySetopt(c.get(), CURLOPT_URL, url.c_str());
    api.easySetopt(c.get(), CURLOPT_PROTOCOLS_STR, "https");
    api.easySetopt(c.get(), CURLOPT_HTTPHEADER, headers.get());
    if (body != nullptr) {
        api.easySetopt(c.get(), CURLOPT_POST, 1L);
        api.easySetopt(c.get(), CURLOPT_POSTFIELDS, body->data());
        api.easySetopt(c.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
    } else {
        api.easySetopt(c.get(), CURLOPT_HTTPGET, 1L);
    }
    api.easySetopt(c.get(), CURLOPT_WRITEFUNCTION, collectBody);
    api.easySetopt(c.get(), CURLOPT_WRITEDATA, &reply.body);
    api.easySetopt(c.get(), CURLOPT_HEADERFUNCTION, collectHeader);
    api.easySetopt(c.get(), CURLOPT_HEADERDATA, &reply);
    api.easySetopt(c.get(), CURLOPT_ERRORBUFFER, errbuf);
    api.easySetopt(c.get(), CURLOPT_NOSIGNAL, 1L);
    api.easySetopt(c.get(), CURLOPT_TIMEOUT, static_cast<long>(config.timeoutSeconds));
    api.easySetopt(c.get(), CURLOPT_SSL_VERIFYPEER, 1L);
    api.easySetopt(c.get(), CURLOPT_SSL_VERIFYHOST, 2L);
    api.easySetopt(c.get(), CURLOPT_SSL_SESSIONID_CACHE, 0L);
    if (!config.serverCa.empty()) {
        api.easySetopt(c.get(), CURLOPT_CAINFO, config.serverCa.c_str());
        api.easySetopt(c.get(), CURLOPT_CAPATH, nullptr);
    }
    if (!auth.certFile.empty()) {
        api.easySetopt(c.get(), CURLOPT_SSLCERT, auth.certFile.c_str());
        api.easySetopt(c.get(), CURLOPT_SSLKEY, auth.keyFile.c_str());
    }
    ClientIdentity identity;
    crypto::Pkey remote;
    if (auth.certFile.empty() && auth.key != nullptr) {
        identity.chainPem = auth.chainPem;
        identity.key = auth.key->get();
        if (auth.key->external()) {
            // A key in a TPM (or token) lives in a library context of its own, which
            // libssl (curl's SSL_CTX is in the default one) cannot sign with: the
            // handshake's digest goes to the key through the remote-key provider
            // the cloud client uses, here calling the key directly, in-process.
            const DeviceKey* key = auth.key;
            auto made = crypto::makeRemoteKey(auth.chainPem, [key](const std::string& name, const std::string& digest)
                                                                -> Expected<std::string> {
                auto alg = parseSignAlgorithm(name);
                if (!alg) {
                    return unexpected(alg.error());
                }
                return signDigest(*key, *alg, digest); // takes the key's lock
            });
            if (!made) {
                return unexpected(made.error());
            }
            remote = std::move(made).value();
            identity.key = remote.get();
        }
        api.easySetopt(c.get(), CURLOPT_SSL_CTX_FUNCTION, useDeviceKey);
        api.easySetopt(c.get(), CURLOPT_SSL_CTX_DATA, &identity);
    }
    const CURLcode rc = api.easyPerform(c.get());
    if (!authHeader.empty()) {
        OPENSSL_cleanse(authHeader.data(), authHeader.size());
    }
    if (rc != CURLE_OK) {
        const std::string why = errbuf[0] != '\0' ? std::string(errbuf) : std::string(api.easyStrerror(rc));
        return unexpected(rc == CURLE_OPERATION_TIMEDOUT ? ErrorCode::Timeout : ErrorCode::Io,
                          "EST " + operation + " at " + url + " failed: " + why);
    }
    char* ctype = nullptr;
    api.easyGetinfo(c.get(), CURLINFO_CONTENT_TYPE, &ctype);
    reply.contentType = ctype != nullptr ? ctype : "";
    api.easyGetinfo(c.get(), CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
}

} // namespace

Expected<EstHttpReply> estPost(const EstConfig& config, const std::string& operation, const std::string& body,
                               const EstClientAuth& auth)
{
    return estRequest(config, operation, &body, auth);
}

Expected<EstHttpReply> estGet(const EstConfig& config, const std::string& operation, const EstClientAuth& auth)
{
    return estRequest(config, operation, nullptr, auth);
}

} // namespace mbl::identity
