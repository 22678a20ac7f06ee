// SPDX-License-Identifier: Apache-2.0
#pragma once
// The HTTP exchange of EST (RFC 7030 §3.2, §4.2): one POST over TLS with libcurl,
// loaded for the request and unloaded after it (mbl/curl_loader.h: the idle
// service maps none of it), the server checked against the configured CA, the
// client authenticated by a factory certificate, an HTTP credential, or the
// device's current certificate with the device key (which stays in this
// process: the handshake signs with it here, the key is never written anywhere
// for curl). No bus code here.

#include "device_key.h"
#include "est.h"

#include "mbl/expected.h"

#include <string>

namespace mbl::identity {

struct EstClientAuth {
    // TLS client certificate from files (the factory bootstrap credential).
    std::string certFile;
    std::string keyFile;
    // TLS client certificate in memory (PEM chain, leaf first) with the device key.
    std::string chainPem;
    const DeviceKey* key = nullptr;
    // "Authorization" header value ("Basic ..." / "Bearer ..."); never logged.
    std::string authorization;
};

// POST <config.url>/<operation> with the base64 PKCS#10 body. A transport failure
// (connection refused, TLS handshake refused, timeout) is Io / Timeout naming the
// URL and curl's reason; an HTTP answer of any status is returned as it is.
Expected<EstHttpReply> estPost(const EstConfig& config, const std::string& operation, const std::string& body,
                               const EstClientAuth& auth);
// GET <config.url>/<operation> (RFC 7030 §4.1.2: /cacerts), authenticated as given.
Expected<EstHttpReply> estGet(const EstConfig& config, const std::string& operation, const EstClientAuth& auth);

} // namespace mbl::identity
