// SPDX-License-Identifier: Apache-2.0
#pragma once
// Handshake signatures for the cloud client's TLS: the algorithms the device key
// signs a prehashed digest with (one table), who may ask (root and the cloud
// client's uid, decided here, again after the bus policy), how often (a token
// bucket), and the audit log of what was signed. No bus code here.

#include "device_key.h"

#include "mbl/expected.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mbl::identity {

// A TLS SignatureScheme at the level OpenSSL hands a key provider: a hash the
// caller already computed, a padding, and the key family it needs. RSA-PSS uses
// MGF1 with the same hash and a salt as long as the hash (RFC 8446 §4.2.3).
enum class SignAlgorithm {
    EcdsaSha256,   // "ecdsa-sha256"     TLS 1.3 ecdsa_secp256r1_sha256 (0x0403); TLS 1.2 ECDSA+SHA256
    EcdsaSha384,   // "ecdsa-sha384"     TLS 1.2 ECDSA+SHA384 (0x0503)
    EcdsaSha512,   // "ecdsa-sha512"     TLS 1.2 ECDSA+SHA512 (0x0603)
    RsaPssSha256,  // "rsa-pss-sha256"   rsa_pss_rsae_sha256 (0x0804) / rsa_pss_pss_sha256 (0x0809)
    RsaPssSha384,  // "rsa-pss-sha384"   0x0805 / 0x080a
    RsaPssSha512,  // "rsa-pss-sha512"   0x0806 / 0x080b
    RsaPkcs1Sha256, // "rsa-pkcs1-sha256" TLS 1.2 only: rsa_pkcs1_sha256 (0x0401)
    RsaPkcs1Sha384, // "rsa-pkcs1-sha384" 0x0501
    RsaPkcs1Sha512, // "rsa-pkcs1-sha512" 0x0601
};

struct SignAlgorithmInfo {
    SignAlgorithm algorithm;
    const char* name;       // the bus spelling
    const char* digestName; // OpenSSL digest name
    std::size_t digestLen;  // bytes the caller must send
    const char* keyFamily;  // "EC" or "RSA" (an RSA-PSS key counts as RSA)
    bool pss;               // RSA: PSS padding, else PKCS#1 v1.5
};

// The one table of algorithms.
const std::vector<SignAlgorithmInfo>& signAlgorithms();
const SignAlgorithmInfo& infoOf(SignAlgorithm algorithm);
// NotSupported for a name outside the table (quoted only when it is short and plain).
Expected<SignAlgorithm> parseSignAlgorithm(const std::string& name);
// The names this key can sign with, in table order (empty for Ed25519: pure
// Ed25519 signs the message, not a digest, so it has no place in this method).
std::vector<std::string> algorithmsFor(const DeviceKey& key);

// Checks `digest` against the algorithm and the key: InvalidArgument for a wrong
// size (the error gives sizes, never the bytes), NotSupported for an algorithm
// the key cannot do. Then signs the digest as it is (no second hash).
Expected<std::string> signDigest(const DeviceKey& key, SignAlgorithm algorithm, const std::string& digest);

using Clock = std::chrono::steady_clock;

// Token bucket: `burst` signatures at once, refilled at `perSecond`.
class RateLimiter {
public:
    RateLimiter(double perSecond, double burst);
    // True and one token spent, or false with how long until the next token.
    bool take(Clock::time_point now, std::chrono::milliseconds* retryAfter = nullptr);
    double perSecond() const { return perSecond_; }
    double burst() const { return burst_; }

private:
    double perSecond_;
    double burst_;
    double tokens_;
    std::optional<Clock::time_point> last_;
};

// Signature requests, granted and refused, summarised into at most one log line
// per `interval` and caller, so a flood cannot flood the journal: the first event
// after a quiet interval is logged at once, the ones after it are counted into
// the next line.
class SignAudit {
public:
    explicit SignAudit(std::chrono::milliseconds interval = std::chrono::seconds(1));
    // The line to log now, if any.
    std::optional<std::string> record(uid_t uid, pid_t pid, const std::string& what, bool granted,
                                      Clock::time_point now);

private:
    struct PerCaller {
        Clock::time_point lastLine;
        std::uint64_t grantedSince = 0;
        std::uint64_t refusedSince = 0;
    };
    std::chrono::milliseconds interval_;
    std::map<uid_t, PerCaller> callers_;
};

struct SignRequest {
    uid_t uid = 0;   // of the caller, from the bus daemon
    pid_t pid = 0;   // for the log only
    std::string algorithm;
    std::string digest;
};

inline constexpr double kSignRatePerSecond = 50;
inline constexpr double kSignBurst = 50;
// Larger than any digest; refused before any other look at the bytes.
inline constexpr std::size_t kMaxDigestLen = 64;

// Decides whether a request is served: caller, algorithm, digest, rate; then signs
// through `sign` and logs through the audit. Thread-safe.
class Signer {
public:
    using SignFn = std::function<Expected<std::string>(SignAlgorithm, const std::string& digest)>;
    Signer(std::set<uid_t> allowedUids, RateLimiter limiter, SignFn sign,
           std::function<Clock::time_point()> now = [] { return Clock::now(); });

    // AccessDenied (a uid outside the set), NotSupported, InvalidArgument, Busy
    // (rate limit, with the wait), or what the key says.
    Expected<std::string> sign(const SignRequest& request);

private:
    void audit(const SignRequest& request, const std::string& what, bool granted);

    std::set<uid_t> allowed_;
    SignFn sign_;
    std::function<Clock::time_point()> now_;
    std::mutex mu_; // guards the two below
    RateLimiter limiter_;
    SignAudit audit_;
};

} // namespace mbl::identity
