// SPDX-License-Identifier: Apache-2.0
#include "signer.h"

#include "mbl/crypto.h"
#include "mbl/log.h"

#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cctype>
#include <cmath>

namespace mbl::identity {

namespace {
const std::vector<SignAlgorithmInfo> kAlgorithms = {
    {SignAlgorithm::EcdsaSha256, "ecdsa-sha256", "SHA256", 32, "EC", false},
    {SignAlgorithm::EcdsaSha384, "ecdsa-sha384", "SHA384", 48, "EC", false},
    {SignAlgorithm::EcdsaSha512, "ecdsa-sha512", "SHA512", 64, "EC", false},
    {SignAlgorithm::RsaPssSha256, "rsa-pss-sha256", "SHA256", 32, "RSA", true},
    {SignAlgorithm::RsaPssSha384, "rsa-pss-sha384", "SHA384", 48, "RSA", true},
    {SignAlgorithm::RsaPssSha512, "rsa-pss-sha512", "SHA512", 64, "RSA", true},
    {SignAlgorithm::RsaPkcs1Sha256, "rsa-pkcs1-sha256", "SHA256", 32, "RSA", false},
    {SignAlgorithm::RsaPkcs1Sha384, "rsa-pkcs1-sha384", "SHA384", 48, "RSA", false},
    {SignAlgorithm::RsaPkcs1Sha512, "rsa-pkcs1-sha512", "SHA512", 64, "RSA", false},
};

// Caller text goes into an error message only when it cannot be a payload.
bool plainName(const std::string& s)
{
    return !s.empty() && s.size() <= 32 &&
           std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
}

std::string familyOf(const DeviceKey& key)
{
    if (EVP_PKEY_is_a(key.get(), "EC") == 1) {
        return "EC";
    }
    if (EVP_PKEY_is_a(key.get(), "RSA") == 1 || EVP_PKEY_is_a(key.get(), "RSA-PSS") == 1) {
        return "RSA";
    }
    return key.typeName();
}

bool isRsaPssKey(const DeviceKey& key)
{
    return EVP_PKEY_is_a(key.get(), "RSA-PSS") == 1;
}

std::string joined(const std::vector<std::string>& names)
{
    std::string out;
    for (const auto& n : names) {
        out += (out.empty() ? "" : ", ") + n;
    }
    return out.empty() ? "none" : out;
}
} // namespace

const std::vector<SignAlgorithmInfo>& signAlgorithms()
{
    return kAlgorithms;
}

const SignAlgorithmInfo& infoOf(SignAlgorithm algorithm)
{
    for (const auto& info : kAlgorithms) {
        if (info.algorithm == algorithm) {
            return info;
        }
    }
    return kAlgorithms.front(); // unreachable: every enumerator is in the table
}

Expected<SignAlgorithm> parseSignAlgorithm(const std::string& name)
{
    for (const auto& info : kAlgorithms) {
        if (name == info.name) {
            return info.algorithm;
        }
    }
    std::string all;
    for (const auto& info : kAlgorithms) {
        all += (all.empty() ? "" : ", ") + std::string(info.name);
    }
    return unexpected(ErrorCode::NotSupported,
                      (plainName(name) ? "signature algorithm '" + name + "'" : std::string("the signature algorithm")) +
                          " is not supported (known: " + all + ")");
}

std::vector<std::string> algorithmsFor(const DeviceKey& key)
{
    const std::string family = familyOf(key);
    std::vector<std::string> out;
    for (const auto& info : kAlgorithms) {
        // An RSASSA-PSS key (id-RSASSA-PSS) signs PSS only.
        if (family == info.keyFamily && !(isRsaPssKey(key) && !info.pss)) {
            out.emplace_back(info.name);
        }
    }
    return out;
}

Expected<std::string> signDigest(const DeviceKey& key, SignAlgorithm algorithm, const std::string& digest)
{
    const SignAlgorithmInfo& info = infoOf(algorithm);
    if (digest.size() != info.digestLen) {
        return unexpected(ErrorCode::InvalidArgument, std::string(info.name) + " signs a " +
                                                          std::to_string(info.digestLen) + "-byte " + info.digestName +
                                                          " digest; got " + std::to_string(digest.size()) + " bytes");
    }
    const auto supported = algorithmsFor(key);
    if (std::find(supported.begin(), supported.end(), info.name) == supported.end()) {
        return unexpected(ErrorCode::NotSupported, std::string(info.name) + " is not possible with the device key (" +
                                                       key.typeName() + "; it signs " + joined(supported) + ")");
    }
    auto use = key.lockUse();
    crypto::PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(key.libctx(), key.get(), key.propq()));
    if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1) {
        return unexpected(ErrorCode::Failed, "cannot start signing with the device key: " + crypto::lastOpenSslError());
    }
    const bool ok =
        EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_get_digestbyname(info.digestName)) == 1 &&
        (info.keyFamily != std::string("RSA") ||
         (EVP_PKEY_CTX_set_rsa_padding(ctx.get(), info.pss ? RSA_PKCS1_PSS_PADDING : RSA_PKCS1_PADDING) == 1 &&
          (!info.pss || (EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), RSA_PSS_SALTLEN_DIGEST) == 1 &&
                         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_get_digestbyname(info.digestName)) == 1))));
    if (!ok) {
        return unexpected(ErrorCode::Failed, std::string("cannot set up ") + info.name +
                                                 " with the device key: " + crypto::lastOpenSslError());
    }
    const auto* in = reinterpret_cast<const unsigned char*>(digest.data());
    std::size_t len = 0;
    if (EVP_PKEY_sign(ctx.get(), nullptr, &len, in, digest.size()) != 1) {
        return unexpected(ErrorCode::Failed, std::string(info.name) + " signing failed: " + crypto::lastOpenSslError());
    }
    std::string sig(len, '\0');
    if (EVP_PKEY_sign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, digest.size()) != 1) {
        return unexpected(ErrorCode::Failed, std::string(info.name) + " signing failed: " + crypto::lastOpenSslError());
    }
    sig.resize(len);
    return sig;
}

RateLimiter::RateLimiter(double perSecond, double burst) : perSecond_(perSecond), burst_(burst), tokens_(burst) {}

bool RateLimiter::take(Clock::time_point now, std::chrono::milliseconds* retryAfter)
{
    if (last_) {
        const double elapsed = std::chrono::duration<double>(now - *last_).count();
        tokens_ = std::min(burst_, tokens_ + std::max(0.0, elapsed) * perSecond_);
    }
    last_ = now;
    if (tokens_ >= 1.0) {
        tokens_ -= 1.0;
        return true;
    }
    if (retryAfter != nullptr) {
        const double wait = (1.0 - tokens_) / perSecond_;
        *retryAfter = std::chrono::milliseconds(static_cast<long long>(std::ceil(wait * 1000.0 - 1e-6)));
    }
    return false;
}

SignAudit::SignAudit(std::chrono::milliseconds interval) : interval_(interval) {}

std::optional<std::string> SignAudit::record(uid_t uid, pid_t pid, const std::string& what, bool granted,
                                             Clock::time_point now)
{
    auto [it, fresh] = callers_.try_emplace(uid);
    PerCaller& c = it->second;
    if (!fresh && now - c.lastLine < interval_) {
        ++(granted ? c.grantedSince : c.refusedSince);
        return std::nullopt;
    }
    std::string line = std::string("Sign for uid ") + std::to_string(uid) + " (pid " + std::to_string(pid) + "): " +
                       what + (granted ? "" : " (refused)");
    if (c.grantedSince + c.refusedSince > 0) {
        line += "; since the last line " + std::to_string(c.grantedSince) + " more signed, " +
                std::to_string(c.refusedSince) + " more refused";
    }
    c = PerCaller{now, 0, 0};
    return line;
}

Signer::Signer(std::set<uid_t> allowedUids, RateLimiter limiter, SignFn sign, std::function<Clock::time_point()> now)
    : allowed_(std::move(allowedUids)), sign_(std::move(sign)), now_(std::move(now)), limiter_(limiter)
{
}

void Signer::audit(const SignRequest& request, const std::string& what, bool granted)
{
    std::optional<std::string> line;
    {
        std::lock_guard<std::mutex> lock(mu_);
        line = audit_.record(request.uid, request.pid, what, granted, now_());
    }
    if (line) {
        granted ? log::info(*line) : log::warning(*line);
    }
}

Expected<std::string> Signer::sign(const SignRequest& request)
{
    auto refuse = [&](const Error& e) -> Expected<std::string> {
        audit(request, e.describe(), false);
        return unexpected(e);
    };
    if (allowed_.count(request.uid) == 0) {
        return refuse(Error(ErrorCode::AccessDenied, "uid " + std::to_string(request.uid) +
                                                         " may not ask for handshake signatures (root and the cloud "
                                                         "client only)"));
    }
    auto algorithm = parseSignAlgorithm(request.algorithm);
    if (!algorithm) {
        return refuse(algorithm.error());
    }
    const SignAlgorithmInfo& info = infoOf(*algorithm);
    if (request.digest.size() != info.digestLen) {
        return refuse(Error(ErrorCode::InvalidArgument, std::string(info.name) + " signs a " +
                                                            std::to_string(info.digestLen) + "-byte digest; got " +
                                                            std::to_string(request.digest.size()) + " bytes"));
    }
    {
        std::chrono::milliseconds wait{0};
        std::lock_guard<std::mutex> lock(mu_);
        if (!limiter_.take(now_(), &wait)) {
            Error e(ErrorCode::Busy, "too many signature requests (at most " +
                                         std::to_string(static_cast<int>(limiter_.perSecond())) + " a second, " +
                                         std::to_string(static_cast<int>(limiter_.burst())) + " at once); retry in " +
                                         std::to_string(wait.count()) + " ms");
            if (auto line = audit_.record(request.uid, request.pid, e.describe(), false, now_())) {
                log::warning(*line);
            }
            return unexpected(e);
        }
    }
    auto sig = sign_(*algorithm, request.digest);
    if (!sig) {
        return refuse(sig.error());
    }
    audit(request, std::string(info.name) + " signed", true);
    return sig;
}

} // namespace mbl::identity
