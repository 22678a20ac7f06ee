// SPDX-License-Identifier: Apache-2.0
#pragma once
// A device key inside a TPM 2.0, through the tpm2-openssl provider (OpenSSL 3).
// key_uri "tpm2:/abs/path": the key is made in the TPM on first start and kept
// on disk only as a TPM-wrapped blob ("TSS2 PRIVATE KEY" PEM) under the TPM's
// storage key; it loads into that TPM only, so a copy of the disk is no key.
// key_uri "handle:0x81xxxxxx": a persistent key made by the device maker (loaded,
// never made or removed). The TPM is reached through the TCTI named by
// TPM2OPENSSL_TCTI (tpm2-openssl's own variable; unset = tpm2-abrmd, then
// /dev/tpmrm0). Every TPM command runs in one OpenSSL library context per TCTI,
// under one lock (KeyHome). No bus code here.

#include "device_key.h"

#include "mbl/expected.h"

#include <optional>
#include <string>

namespace mbl::identity {

// True for the key URIs served by the TPM ("tpm2:…", "handle:…").
bool isTpmKeyUri(const std::string& uri);
// The blob file of a "tpm2:/path" URI; nullopt for other URIs.
std::optional<std::string> tpmBlobPath(const std::string& uri);

// A new key made inside the TPM (EC P-256), and its wrapped blob (PEM) to store.
// Failed when the provider or the TPM is missing or refuses, with its reason.
struct NewTpmKey {
    DeviceKey key;
    std::string blobPem;
};
Expected<NewTpmKey> generateTpmKey(KeyType type);

// Loads a TPM key URI. A blob the TPM will not load (made by another TPM,
// damaged) is InvalidArgument; a missing blob NotFound; no TPM Failed.
Expected<DeviceKey> loadTpmKey(const std::string& uri);

} // namespace mbl::identity
