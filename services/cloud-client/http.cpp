// SPDX-License-Identifier: Apache-2.0
#include "http.h"

#include "mbl/strings.h"

#include <openssl/crypto.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>

namespace mbl::cloud {

namespace {

struct Transfer {
    HttpResponse* resp = nullptr;
    std::size_t maxBody = 0;
    bool tooBig = false;
    bool aborted = false;
    const HttpSession::Sink* sink = nullptr;
    long status = 0;
    CURL* easy = nullptr;
};

std::size_t onData(char* p, std::size_t sz, std::size_t n, void* ud)
{
    auto* t = static_cast<Transfer*>(ud);
    const std::size_t len = sz * n;
    if (t->status == 0) {
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
    }
    // Only a successful answer's body goes to a download sink; error bodies are kept small.
    if (t->sink != nullptr && (t->status == 200 || t->status == 206)) {
        if (!(*t->sink)(t->status, p, len)) {
            t->aborted = true;
            return 0;
        }
        return len;
    }
    const std::size_t limit = t->sink != nullptr ? 64 * 1024 : t->maxBody;
    if (t->resp->body.size() + len > limit) {
        t->tooBig = true;
        return 0;
    }
    t->resp->body.append(p, len);
    return len;
}

std::size_t onHeader(char* p, std::size_t sz, std::size_t n, void* ud)
{
    auto* t = static_cast<Transfer*>(ud);
    const std::size_t len = sz * n;
    std::string line(p, len);
    if (str::startsWith(line, "HTTP/")) {
        // A new response (after 100-continue): forget the previous headers.
        t->resp->etag.clear();
        t->resp->retryAfter.clear();
        t->resp->location.clear();
        t->resp->contentRange.clear();
        t->status = 0;
        return len;
    }
    auto colon = line.find(':');
    if (colon == std::string::npos) {
        return len;
    }
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = str::trim(line.substr(colon + 1));
    if (name == "etag") {
        t->resp->etag = value;
    } else if (name == "retry-after") {
        t->resp->retryAfter = value;
    } else if (name == "location") {
        t->resp->location = value;
    } else if (name == "content-range") {
        t->resp->contentRange = value;
    }
    return len;
}

int onProgress(void* ud, curl_off_t, curl_off_t, curl_off_t, curl_off_t)
{
    const auto* flag = static_cast<const std::atomic<bool>*>(ud);
    return flag != nullptr && flag->load() ? 1 : 0;
}

// An in-process key (benchmarks, test tools) reaches libcurl here; the device's
// cloud client has none (HttpSession::onSslContext installs the remote key).
Status applyInProcessKey(CURL* c, const TlsSettings& s)
{
    if (s.signer || s.keyPem.empty()) {
        return {};
    }
    curl_blob cert{const_cast<char*>(s.chainPem.data()), s.chainPem.size(), CURL_BLOB_NOCOPY};
    curl_blob key{const_cast<char*>(s.keyPem.data()), s.keyPem.size(), CURL_BLOB_NOCOPY};
    curl_easy_setopt(c, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(c, CURLOPT_SSLKEYTYPE, "PEM");
    if (curl_easy_setopt(c, CURLOPT_SSLCERT_BLOB, &cert) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_SSLKEY_BLOB, &key) != CURLE_OK) {
        return unexpected(ErrorCode::NotSupported, "this libcurl cannot take the client key from memory");
    }
    return {};
}

} // namespace

HttpSession::HttpSession(TlsSettings settings, Origin server, LinkPolicy policy)
    : settings_(std::move(settings)), server_(std::move(server)), policy_(policy), easy_(curl_easy_init())
{
    if (settings_.signer) {
        // The signer runs inside curl_easy_perform on this session's thread; it
        // leaves why it failed where transportError() finds it.
        auto failure = signFailure_;
        auto key = crypto::makeRemoteKey(settings_.chainPem,
                                 [sign = settings_.signer, failure](const std::string& alg, const std::string& digest) {
                                     auto sig = sign(alg, digest);
                                     if (!sig) {
                                         *failure = sig.error().message;
                                     }
                                     return sig;
                                 });
        if (key) {
            remoteKey_ = std::move(key).value();
        } else {
            remoteKeyError_ = key.error();
        }
    }
}

CURLcode HttpSession::onSslContext(CURL*, void* sslCtx, void* self)
{
    auto* session = static_cast<HttpSession*>(self);
    auto st = crypto::useClientIdentity(static_cast<SSL_CTX*>(sslCtx), session->settings_.chainPem, session->remoteKey_.get());
    if (!st) {
        *session->signFailure_ = st.error().message;
        return CURLE_SSL_CERTPROBLEM;
    }
    return CURLE_OK;
}

HttpSession::~HttpSession()
{
    easy_.reset();
    // The key only ever lived in this process's memory: scrub it.
    if (!settings_.keyPem.empty()) {
        OPENSSL_cleanse(settings_.keyPem.data(), settings_.keyPem.size());
    }
    if (!settings_.authorization.empty()) {
        OPENSSL_cleanse(settings_.authorization.data(), settings_.authorization.size());
    }
}

Status HttpSession::configure(const std::string& method, const std::string& url,
                              const std::vector<std::string>& headers, bool own, curl_slist*& list)
{
    CURL* c = easy_.get();
    if (c == nullptr) {
        return unexpected(ErrorCode::Failed, "curl_easy_init failed");
    }
    // Reset per-request options but keep the connection cache and TLS session cache.
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, policy_.allowHttp && !own ? "https,http" : "https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf_);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSL_SESSIONID_CACHE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, keepAliveIdleSec_);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 60L);
    curl_easy_setopt(c, CURLOPT_MAXAGE_CONN, 24L * 3600); // keep the idle connection across long sleeps
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, settings_.connectTimeoutSec);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, settings_.lowSpeedLimit);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, settings_.lowSpeedTimeSec);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "mbl-cloud-client/1");
    curl_easy_setopt(c, CURLOPT_VERBOSE, settings_.verbose ? 1L : 0L);
    if (abort_ != nullptr) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, onProgress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, abort_);
    }
    if (own) {
        // Only the provisioned CA is trusted for the server, and only the server gets credentials.
        curl_blob ca{const_cast<char*>(settings_.caPem.data()), settings_.caPem.size(), CURL_BLOB_NOCOPY};
        if (curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca) != CURLE_OK) {
            return unexpected(ErrorCode::NotSupported, "this libcurl cannot take the CA from memory (needs 7.77)");
        }
        curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
        if (auto st = applyInProcessKey(c, settings_); !st) {
            return st;
        }
        if (settings_.signer) {
            if (remoteKeyError_) {
                return unexpected(*remoteKeyError_);
            }
            // libcurl calls this for each new TLS connection to the server (a reused
            // connection or a resumed TLS session needs no new signature).
            curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, &HttpSession::onSslContext);
            curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, this);
        }
    } else if (!settings_.otherHostsCaPem.empty()) {
        curl_blob ca{const_cast<char*>(settings_.otherHostsCaPem.data()), settings_.otherHostsCaPem.size(),
                     CURL_BLOB_NOCOPY};
        if (curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &ca) != CURLE_OK) {
            return unexpected(ErrorCode::NotSupported, "this libcurl cannot take the CA from memory (needs 7.77)");
        }
        curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
    } // else: libcurl's default trust store (the system's CA certificates)
    if (method == "GET") {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    list = curl_slist_append(list, "Accept: application/hal+json, application/json");
    if (own && !settings_.authorization.empty()) {
        list = curl_slist_append(list, ("Authorization: " + settings_.authorization).c_str());
    }
    for (const auto& h : headers) {
        list = curl_slist_append(list, h.c_str());
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    return {};
}

Error HttpSession::transportError(CURLcode code, const Origin& to) const
{
    std::string detail = errbuf_[0] != '\0' ? std::string(errbuf_) : std::string(curl_easy_strerror(code));
    const bool own = to == server_;
    if (own && !signFailure_->empty()) {
        // The reason libcurl cannot see: the identity service's answer to Sign.
        return Error{ErrorCode::Io, "TLS handshake with " + to.host + " failed: the identity service did not sign it: " +
                                        *signFailure_ + " (" + detail + ")"};
    }
    // What the peer's certificate is checked against.
    const std::string trust = own                                 ? std::string("the provisioned CA")
                              : settings_.otherHostsCaPem.empty() ? std::string("the system's trust store")
                                                                  : std::string("the CA of download.other_hosts_ca_file");
    switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
        return Error{ErrorCode::Io,
                     "the certificate of " + to.host + " is not valid for it or not signed by " + trust + ": " + detail};
    case CURLE_SSL_CACERT_BADFILE:
        // No CA to check with: typically a device without a system trust store
        // (no ca-certificates) asked to fetch from another host. Not "cannot
        // reach": the host was never asked.
        return Error{ErrorCode::Io, "cannot check the certificate of " + to.host + ": " + trust + " cannot be read: " +
                                        detail};
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
        return Error{ErrorCode::Io, "TLS handshake with " + to.host + " failed: " + detail};
    case CURLE_OPERATION_TIMEDOUT:
        return Error{ErrorCode::Timeout, "transfer from " + to.host + " timed out or was too slow: " + detail};
    default:
        return Error{ErrorCode::Io, "cannot reach " + to.host + ":" + std::to_string(to.port) + ": " + detail};
    }
}

void HttpSession::setKeepAliveIdle(std::chrono::seconds idle)
{
    keepAliveIdleSec_ = std::max<long>(60, static_cast<long>(std::min<std::chrono::seconds::rep>(idle.count(), 86400)));
    curl_socket_t fd = CURL_SOCKET_BAD;
    if (easy_.get() != nullptr && curl_easy_getinfo(easy_.get(), CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
        fd != CURL_SOCKET_BAD) {
        const int v = static_cast<int>(keepAliveIdleSec_);
        (void)::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof v);
    }
}

Expected<HttpResponse> HttpSession::perform(const std::string& method, const std::string& url, const std::string& body,
                                            const std::vector<std::string>& headers, std::size_t maxBody,
                                            const Sink* sink, std::uint64_t rangeFrom)
{
    const bool artifact = sink != nullptr;
    std::string current = url;
    std::vector<std::string> seen;
    for (int hop = 0; hop <= 5; ++hop) {
        if (std::find(seen.begin(), seen.end(), current) != seen.end()) {
            return unexpected(ErrorCode::Io, "too many redirects: a redirect loop (" + str::quotable(current, 120) +
                                                 " leads back to itself)");
        }
        seen.push_back(current);
        if (auto st = checkLink(current, server_, policy_, artifact); !st) {
            return unexpected(st.error().code,
                              (hop == 0 ? "" : "redirect from " + str::quotable(seen[seen.size() - 2], 120) + ": ") +
                                  st.error().message);
        }
        const auto to = originOf(current);
        const bool own = to && *to == server_;
        curl_slist* raw = nullptr;
        auto st = configure(method, current, headers, own, raw);
        curl::Slist list{raw};
        if (!st) {
            return unexpected(st.error());
        }
        CURL* c = easy_.get();
        // Requests to the server ask for HTTP/2 by ALPN and fall back to HTTP/1.1
        // where it is not offered (hawkBit's default): on the kept connection HPACK
        // sends a repeated poll's headers as a few bytes (issue 18, idle cost).
        // Artifacts stay on HTTP/1.1: a bulk stream gains nothing from h2 and
        // would pay its flow-control windows and framing.
        curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
                         static_cast<long>(own && !artifact ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_1_1));
        if (method != "GET") {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
            curl_easy_setopt(c, CURLOPT_TIMEOUT, settings_.requestTimeoutSec);
        } else if (sink == nullptr) {
            curl_easy_setopt(c, CURLOPT_TIMEOUT, settings_.requestTimeoutSec);
        }
        if (sink != nullptr) {
            if (rangeFrom > 0) {
                const std::string r = std::to_string(rangeFrom) + "-";
                curl_easy_setopt(c, CURLOPT_RANGE, r.c_str());
            }
            if (settings_.maxRecvBytesPerSec > 0) {
                curl_easy_setopt(c, CURLOPT_MAX_RECV_SPEED_LARGE,
                                 static_cast<curl_off_t>(settings_.maxRecvBytesPerSec));
            }
            curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024);
        }
        HttpResponse resp;
        resp.url = current;
        Transfer t;
        t.resp = &resp;
        t.maxBody = maxBody;
        t.sink = sink;
        t.easy = c;
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, onData);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, onHeader);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
        errbuf_[0] = '\0';
        signFailure_->clear();
        CURLcode rc = curl_easy_perform(c);
        long newConns = 0;
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &newConns);
        connects_ += newConns;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
        lastCode_ = rc;
        if (t.tooBig) {
            lastCode_ = CURLE_OK;
            return unexpected(ErrorCode::InvalidArgument,
                              "the server's answer to " + method + " " + current + " is larger than " +
                                  std::to_string(maxBody) + " bytes; refused");
        }
        if (t.aborted || rc == CURLE_ABORTED_BY_CALLBACK) {
            return unexpected(ErrorCode::Cancelled, "transfer aborted by the reader");
        }
        if (rc != CURLE_OK) {
            return unexpected(transportError(rc, to ? *to : server_));
        }
        if (resp.status >= 300 && resp.status < 400 && resp.status != 304) {
            if (resp.location.empty()) {
                return unexpected(ErrorCode::Io, "redirect without Location from " + current);
            }
            char* next = nullptr;
            curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &next);
            current = next != nullptr ? std::string(next) : resp.location;
            continue;
        }
        return resp;
    }
    return unexpected(ErrorCode::Io, "too many redirects (a redirect loop?) starting at " + str::quotable(url, 120));
}

Expected<HttpResponse> HttpSession::request(const std::string& method, const std::string& url,
                                            const std::string& body, const std::vector<std::string>& headers,
                                            std::size_t maxBody)
{
    return perform(method, url, body, headers, maxBody, nullptr, 0);
}

Expected<HttpResponse> HttpSession::stream(const std::string& url, std::uint64_t rangeFrom, const Sink& sink)
{
    return perform("GET", url, "", {}, 0, &sink, rangeFrom);
}

} // namespace mbl::cloud
