// SPDX-License-Identifier: Apache-2.0
#pragma once
// The provisioning document: where the device-management server is, how the
// device authenticates to it and which CA the server's certificate chains to.
// Validated field by field; every error names the field. No bus code here.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <string>

namespace mbl::identity {

inline constexpr std::size_t kMaxProvisioningDocument = 64u * 1024u;

struct Provisioning {
    std::string serverUrl;  // https://host[:port][/path]
    std::string tenant;
    std::string authMode;   // "mtls", "target-token" or "gateway-token"
    std::string token;      // secret; set for the token modes only
    std::string serverCaPem;
    std::string certificateChainPem; // optional in the document; checked against the key by the caller
    std::string deviceId;            // optional; empty: derived from the key

    // The stored/returned form. Without secrets, "token" is left out and
    // "token_set" says whether one is stored.
    nlohmann::json toJson(bool withSecrets) const;
};

// Parses and validates a provisioning document (at most 64 KiB of JSON):
// required server_url (https only), tenant, auth_mode, server_ca_pem (PEM
// certificates), token (token modes only); optional certificate_chain_pem and
// device_id (a valid hawkBit controllerId). Unknown fields are refused so a typo
// is not silently ignored.
Expected<Provisioning> parseProvisioningDocument(const std::string& text);

// Reads back what toJson(true) stored (the same rules, for a state file).
Expected<Provisioning> provisioningFromStored(const nlohmann::json& doc);

// Letters, digits, '-', '_', '.'; 1 to 64 characters; starts with a letter or digit.
bool isValidDeviceId(const std::string& id);

} // namespace mbl::identity
