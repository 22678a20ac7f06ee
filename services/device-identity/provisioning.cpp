// SPDX-License-Identifier: Apache-2.0
#include "provisioning.h"

#include "certificates.h"

#include "mbl/strings.h"

#include <algorithm>
#include <cctype>

namespace mbl::identity {

namespace {

Unexpected fieldError(const std::string& field, const std::string& what)
{
    return unexpected(ErrorCode::InvalidArgument, "provisioning document: field '" + field + "' " + what);
}

bool printableNoSpace(const std::string& s)
{
    return std::all_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u > 0x20 && u != 0x7f;
    });
}

Status checkServerUrl(const std::string& url)
{
    const std::string scheme = "https://";
    std::string lower = url.substr(0, std::min(url.size(), scheme.size()));
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower != scheme) {
        return fieldError("server_url", "must be an https:// URL (the device never talks to its server in clear text), not '" +
                                            url + "'");
    }
    if (url.size() > 2048 || !printableNoSpace(url)) {
        return fieldError("server_url", "must be at most 2048 characters without spaces or control characters");
    }
    const std::string rest = url.substr(scheme.size());
    const std::string host = rest.substr(0, rest.find_first_of("/?#"));
    if (host.empty() || host.front() == ':' || host.find('@') != std::string::npos) {
        return fieldError("server_url", "must name a host (https://host[:port][/path]), not '" + url + "'");
    }
    return {};
}

} // namespace

bool isValidDeviceId(const std::string& id)
{
    if (id.empty() || id.size() > 64 || !std::isalnum(static_cast<unsigned char>(id.front()))) {
        return false;
    }
    return std::all_of(id.begin(), id.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
}

nlohmann::json Provisioning::toJson(bool withSecrets) const
{
    nlohmann::json j = {{"server_url", serverUrl}, {"tenant", tenant}, {"auth_mode", authMode},
                        {"server_ca_pem", serverCaPem}};
    if (withSecrets) {
        if (!token.empty()) {
            j["token"] = token;
        }
    } else {
        j["token_set"] = !token.empty();
    }
    if (!certificateChainPem.empty()) {
        j["certificate_chain_pem"] = certificateChainPem;
    }
    if (!deviceId.empty()) {
        j["device_id"] = deviceId;
    }
    return j;
}

Expected<Provisioning> provisioningFromStored(const nlohmann::json& doc)
{
    static const std::vector<std::string> known = {"server_url",    "tenant",
                                                   "auth_mode",     "token",
                                                   "server_ca_pem", "certificate_chain_pem",
                                                   "device_id"};
    static const std::vector<std::string> required = {"server_url", "tenant", "auth_mode", "server_ca_pem"};
    if (!doc.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, "provisioning document: must be a JSON object");
    }
    for (const auto& [key, value] : doc.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            return fieldError(key, "is not known (known fields: server_url, tenant, auth_mode, token, server_ca_pem, "
                                   "certificate_chain_pem, device_id)");
        }
        if (!value.is_string()) {
            return fieldError(key, std::string("must be a string, not ") + value.type_name());
        }
    }
    for (const auto& key : required) {
        if (!doc.contains(key)) {
            return fieldError(key, "is missing");
        }
    }
    Provisioning p;
    p.serverUrl = doc["server_url"].get<std::string>();
    p.tenant = doc["tenant"].get<std::string>();
    p.authMode = doc["auth_mode"].get<std::string>();
    p.serverCaPem = doc["server_ca_pem"].get<std::string>();
    p.token = doc.value("token", std::string());
    p.certificateChainPem = doc.value("certificate_chain_pem", std::string());
    p.deviceId = doc.value("device_id", std::string());

    if (auto st = checkServerUrl(p.serverUrl); !st) {
        return unexpected(st.error());
    }
    if (!isValidDeviceId(p.tenant)) {
        return fieldError("tenant", "must be 1 to 64 letters, digits, '-', '_' or '.', not '" + p.tenant + "'");
    }
    const bool tokenMode = p.authMode == "target-token" || p.authMode == "gateway-token";
    if (!tokenMode && p.authMode != "mtls") {
        return fieldError("auth_mode", "must be \"mtls\", \"target-token\" or \"gateway-token\", not '" + p.authMode + "'");
    }
    if (tokenMode) {
        if (!doc.contains("token")) {
            return fieldError("token", "is missing (auth_mode " + p.authMode + " needs it)");
        }
        if (p.token.empty() || p.token.size() > 1024 || !printableNoSpace(p.token)) {
            return fieldError("token", "must be 1 to 1024 printable characters without spaces");
        }
    } else if (doc.contains("token")) {
        return fieldError("token", "is not used with auth_mode mtls; leave it out");
    }
    if (auto cas = parsePemCertificates(p.serverCaPem, "provisioning document: field 'server_ca_pem'"); !cas) {
        return unexpected(cas.error());
    }
    if (doc.contains("certificate_chain_pem")) {
        if (auto chain = parsePemCertificates(p.certificateChainPem,
                                              "provisioning document: field 'certificate_chain_pem'");
            !chain) {
            return unexpected(chain.error());
        }
    }
    if (doc.contains("device_id") && !isValidDeviceId(p.deviceId)) {
        return fieldError("device_id", "must be 1 to 64 letters, digits, '-', '_' or '.' starting with a letter or "
                                       "digit (a hawkBit controllerId), not '" + p.deviceId + "'");
    }
    return p;
}

Expected<Provisioning> parseProvisioningDocument(const std::string& text)
{
    if (text.size() > kMaxProvisioningDocument) {
        return unexpected(ErrorCode::InvalidArgument, "provisioning document is " + std::to_string(text.size()) +
                                                          " bytes; the limit is 64 KiB");
    }
    auto doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
        return unexpected(ErrorCode::InvalidArgument, "provisioning document is not valid JSON");
    }
    return provisioningFromStored(doc);
}

} // namespace mbl::identity
