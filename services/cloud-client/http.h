// SPDX-License-Identifier: Apache-2.0
#pragma once
// HTTPS to the device-management server with libcurl: one easy handle kept for
// the life of a session, so polls reuse one keep-alive TLS connection (and the
// TLS session). Credentials come from memory only: the server CA and the device
// certificate chain are handed to libcurl as blobs, never written to a file; the
// handshake signature is made by a HandshakeSigner (the identity service, which
// keeps the private key) through the in-process key of remote_key.h. Redirects are followed by hand so every hop is checked (scheme, host)
// before anything is sent there; the device's certificate and token only ever
// go to the provisioned server's origin. Another host (a CDN or object store an
// artifact link or redirect points to, when allowed) is reached over TLS
// checked against that host's CA, anonymously.

#include "ddi.h"

#include "mbl/crypto.h"
#include "mbl/curl.h"
#include "mbl/expected.h"
#include "mbl/remote_key.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mbl::cloud {

struct TlsSettings {
    std::string caPem;    // server CA bundle (required)
    std::string chainPem; // client certificate chain, leaf first (mTLS), or empty
    // The client key's handshake signatures (mTLS): the device's cloud client signs
    // through the identity service and never holds the key.
    crypto::HandshakeSigner signer;
    // An in-process client key (PEM), for benchmarks and test tools only; used
    // where `signer` is empty.
    std::string keyPem;
    std::string authorization; // "TargetToken …" / "GatewayToken …", or empty
    // CA bundle (PEM) for other hosts (allow_other_hosts); empty: the system's trust store.
    std::string otherHostsCaPem;
    long connectTimeoutSec = 30;
    long requestTimeoutSec = 120; // control requests (not downloads)
    long lowSpeedLimit = 1;       // bytes/s …
    long lowSpeedTimeSec = 60;    // … for this long aborts a transfer
    std::int64_t maxRecvBytesPerSec = 0; // 0: unlimited
    bool verbose = false;
};

struct HttpResponse {
    long status = 0;
    std::string url; // where the answer came from (after redirects)
    std::string body;
    std::string etag;
    std::string retryAfter;
    std::string location;
    std::string contentRange;
};

// Failure of the transport (no HTTP status): DNS, connect, TLS, timeouts.
struct TransportError {
    CURLcode code = CURLE_OK;
    std::string message;
};

class HttpSession {
public:
    HttpSession(TlsSettings settings, Origin server, LinkPolicy policy = {});
    ~HttpSession();
    HttpSession(const HttpSession&) = delete;
    HttpSession& operator=(const HttpSession&) = delete;

    // A request to a DDI resource of the server, with a size-limited body; 3xx
    // are followed (at most 5 hops, each on the server's origin).
    // Errors: Io/Timeout for transport failures (message names the cause),
    // InvalidArgument for refused links and oversized bodies.
    Expected<HttpResponse> request(const std::string& method, const std::string& url, const std::string& body = "",
                                   const std::vector<std::string>& headers = {}, std::size_t maxBody = 1u << 20);

    // GET of an artifact streamed into sink (return false to abort). `rangeFrom`
    // > 0 sends a Range header. Links and redirects may lead to another host or to
    // plain http as the LinkPolicy allows (anonymously). Used by downloads, on
    // their own session.
    // The sink sees the status of the answer (200 or 206) with each piece.
    using Sink = std::function<bool(long status, const char*, std::size_t)>;
    Expected<HttpResponse> stream(const std::string& url, std::uint64_t rangeFrom, const Sink& sink);

    // A flag that, once true, aborts the running transfer within about a second
    // (shutdown, cancel). Must outlive the session.
    void setAbortFlag(const std::atomic<bool>* flag) { abort_ = flag; }

    // TCP keep-alive idle time of the kept connection (at least 60 s). The poll
    // loop sets it a minute beyond its next wait: a connection that polls keeps
    // itself alive and sends no probes in between (two probes and their ACKs were
    // 208 B of a 5-minute sleep), one that stays silent longer than planned is
    // probed. Applies to the open connection at once and to new ones.
    void setKeepAliveIdle(std::chrono::seconds idle);

    // Last transport error code (CURLE_OK if the last call reached the server).
    CURLcode lastCurlCode() const { return lastCode_; }
    // New TCP/TLS connections opened so far (for tests and the benchmark).
    long connectsMade() const { return connects_; }
    const TlsSettings& settings() const { return settings_; }

private:
    // `own`: the request goes to the provisioned server (credentials and its CA);
    // otherwise to another host (its CA, no credentials).
    Status configure(const std::string& method, const std::string& url, const std::vector<std::string>& headers,
                     bool own, curl_slist*& list);
    Expected<HttpResponse> perform(const std::string& method, const std::string& url, const std::string& body,
                                   const std::vector<std::string>& headers, std::size_t maxBody,
                                   const Sink* sink, std::uint64_t rangeFrom);
    Error transportError(CURLcode code, const Origin& to) const;
    static CURLcode onSslContext(CURL* easy, void* sslCtx, void* self);

    TlsSettings settings_;
    Origin server_;
    LinkPolicy policy_;
    curl::Easy easy_;
    char errbuf_[CURL_ERROR_SIZE] = {};
    CURLcode lastCode_ = CURLE_OK;
    long connects_ = 0;
    long keepAliveIdleSec_ = 120;
    const std::atomic<bool>* abort_ = nullptr;
    // The remote client key (settings_.signer) and why the last handshake
    // signature failed (set by the signer on this session's thread, cleared per request).
    crypto::Pkey remoteKey_;
    std::optional<Error> remoteKeyError_;
    std::shared_ptr<std::string> signFailure_ = std::make_shared<std::string>();
};

} // namespace mbl::cloud
