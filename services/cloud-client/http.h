#pragma once
// HTTPS to the device-management server with libcurl: one easy handle kept for
// the life of a session, so polls reuse one keep-alive TLS connection (and the
// TLS session). Credentials come from memory only: the server CA, the device
// certificate chain and key are handed to libcurl as blobs, never written to a
// file. Redirects are followed by hand so every hop is checked (scheme, host)
// before anything is sent there; the device's certificate and token only ever
// go to the provisioned server's origin. Another host (a CDN or object store an
// artifact link or redirect points to, when allowed) is reached over TLS
// checked against that host's CA, anonymously.

#include "ddi.h"

#include "mbl/curl.h"
#include "mbl/expected.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mbl::cloud {

struct TlsSettings {
    std::string caPem;    // server CA bundle (required)
    std::string chainPem; // client certificate chain, leaf first (mTLS), or empty
    std::string keyPem;   // client key (mTLS), or empty
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

    TlsSettings settings_;
    Origin server_;
    LinkPolicy policy_;
    curl::Easy easy_;
    char errbuf_[CURL_ERROR_SIZE] = {};
    CURLcode lastCode_ = CURLE_OK;
    long connects_ = 0;
    const std::atomic<bool>* abort_ = nullptr;
};

} // namespace mbl::cloud
