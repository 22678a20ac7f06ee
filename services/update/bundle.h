// SPDX-License-Identifier: Apache-2.0
#pragma once
// The update bundle (ARCHITECTURE §5): a tar archive whose first member is
// manifest.json, second manifest.json.sig (detached CMS, DER), then the payloads
// in manifest order. This file holds the manifest model, the CMS signature and
// trust-store check, and a streaming reader that never holds more than one
// read block in memory, whatever the bundle size. Shared by mbl-update and mbl-bundle.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mbl::bundle {

inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kSignatureName = "manifest.json.sig";
inline constexpr int kFormatVersion = 1;
inline constexpr std::uint64_t kDefaultMaxManifestBytes = 1u << 20;
inline constexpr std::uint64_t kMaxSignatureBytes = 256u << 10;
// An app payload's settings (contract C4), serialised compactly.
inline constexpr std::size_t kMaxAppSettingsBytes = 64u << 10;

// No `file` type: a manifest naming one is refused (issue 19: it used to be
// verified, staged and then ignored by everything, reporting success for nothing).
enum class PayloadType { Rootfs, App, Config };
const char* payloadTypeName(PayloadType t);

struct Payload {
    std::string name;
    PayloadType type = PayloadType::Config;
    std::uint64_t size = 0;
    std::string sha256; // lowercase hex
    std::string slotClass;  // rootfs
    std::string appName;    // app
    std::string appVersion; // app
    // app: the "settings" object signed with the manifest (contract C4), handed
    // on as it is; null when the payload has none. Only its shape and size are
    // checked here: the container manager owns its schema.
    nlohmann::json settings;
};

// InvalidArgument unless `settings` is a JSON object of at most
// kMaxAppSettingsBytes serialised; `what` starts the message.
Status checkAppSettings(const nlohmann::json& settings, const std::string& what);

struct Manifest {
    int format = kFormatVersion;
    std::string version;
    std::uint64_t securityVersion = 0;
    std::vector<std::string> compatible;
    std::string created;
    std::vector<Payload> payloads;

    nlohmann::json toJson() const;
    // Strict parse: every rule of the format, or InvalidArgument naming the field.
    static Expected<Manifest> parse(const std::string& text);
    const Payload* rootfs() const;
};

bool isSemver(const std::string& v);

// Signature check: CMS over the manifest bytes, chain to a CA of the trust
// directory (every *.pem / *.crt file in it), signer with the code-signing EKU.
// Any failure is SignatureInvalid with the reason.
struct SignerInfo {
    std::string subject;
    std::string issuer;
};
Expected<SignerInfo> verifySignature(const std::string& manifest, const std::string& signatureDer,
                                     const std::string& trustDir);

// Detached CMS (DER) over `manifest`, carrying the signer certificate and the chain,
// as `openssl cms -sign -binary -nosmimecap -outform DER` makes it.
Expected<std::string> signManifest(const std::string& manifest, const std::string& keyPem,
                                   const std::string& certPem, const std::string& chainPem);

// compatible ∋ deviceClass, else Incompatible; securityVersion ≥ floor, else Downgrade.
Status checkPolicy(const Manifest& m, const std::string& deviceClass, std::uint64_t floor);

// Streams a bundle from an fd (a pipe works): bounded head, then payloads
// chunk by chunk. Structural problems (missing, extra, reordered, duplicated or
// truncated members) are InvalidArgument.
class Reader {
public:
    struct Options {
        std::uint64_t maxManifestBytes = kDefaultMaxManifestBytes;
        // Set from another thread to abandon a read (Cancelled).
        const std::atomic<bool>* cancel = nullptr;
        // No byte for this long: Timeout.
        int idleTimeoutMs = 120000;
        std::size_t blockSize = 1u << 20;
    };
    struct Head {
        std::string manifest;
        std::string signature;
    };
    struct Chunk {
        const void* data = nullptr;
        std::size_t size = 0; // 0: end of the payload
    };

    ~Reader();
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    // Borrows fd for the Reader's lifetime.
    static Expected<std::unique_ptr<Reader>> open(int fd, const Options& options);

    Expected<Head> readHead();
    // Next member must be this payload (name, regular file, exact size).
    Status beginPayload(const Payload& p);
    // Next bytes of the current payload; size 0 once all of it was read.
    Expected<Chunk> read();
    // No member may follow the last payload.
    Status expectEnd();
    // Bytes taken from the fd so far.
    std::uint64_t consumed() const;

private:
    struct Impl;
    explicit Reader(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace mbl::bundle
