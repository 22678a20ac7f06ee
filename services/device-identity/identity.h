// SPDX-License-Identifier: Apache-2.0
#pragma once
// The device's identity: key, certificate chain, device id and provisioning
// data, kept in the identity state directory. Thread-safe: the bus thread reads
// and signs while a worker thread runs the mutating calls. No bus code here.
//
// On disk (<state_dir>, 0700, owned by the service user):
//   device.key      the private key, PKCS#8 PEM, 0600; made once, never replaced
//                   (only FactoryReset removes it)
//   identity.json   certificate chain and provisioning document, 0600, replaced
//                   whole by one atomic write, so a crash leaves old or new state
//   fleet-cas.pem   fleet CAs trusted from EST /cacerts (a CA rotation, RFC 7030
//                   §4.1.3), besides fleet_ca; 0600, replaced by one atomic write;
//                   absent until a rotation; FactoryReset removes it
//   reset-pending   present only while a FactoryReset runs; finished on next start

#include "ca_trust.h"
#include "certificates.h"
#include "device_key.h"
#include "est.h"
#include "est_http.h"
#include "provisioning.h"
#include "renewal.h"
#include "signer.h"

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/fd.h"
#include "mbl/paths.h"

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace mbl::identity {

// Test-only crash points: MBL_TEST_PAUSE=<point>[:seconds] makes the daemon log
// "test pause point '<point>' reached" and sleep there, so a test can kill -9 it.
void testPausePoint(const char* point);

struct IdentityProperties {
    std::string deviceId;
    bool provisioned = false;
    std::uint64_t certificateNotAfter = 0;
    std::string keyStorage;
    std::string state; // "ok" or "error: <reason>"
};

// Where enrolment and renewal stand (EST, RFC 7030).
struct RenewalStatus {
    std::string state;          // renewalStateName()
    std::uint64_t notAfter = 0; // of the certificate in force, 0: none
    std::uint64_t nextRenewal = 0; // when the next attempt is planned, 0: none
    std::string lastError;      // "org.mbl.Error.X: message" of the last failed attempt, "" after a success
};

// What a TLS client needs besides signatures: never the key.
struct TlsCredentials {
    std::string chainPem; // leaf first
    std::string caPem;    // the provisioned server CA, empty before provisioning
};

class Identity {
public:
    // Loads the identity, making a key on first start. Fails only for a bad
    // configuration or state directory; an unusable key or state file gives an
    // Identity in the error state (State "error: ..."), never a new key.
    static Expected<std::unique_ptr<Identity>> open(const Paths& paths, const Config& config);

    IdentityProperties properties() const;
    std::string deviceId() const;
    std::string stateDir() const { return stateDir_; }
    std::string keyPath() const; // "" when the key URI names no file

    Expected<std::string> createCertificateRequest(const CsrOptions& options) const;
    // Mutating calls; each either changes the stored state whole or not at all.
    Status installCertificate(const std::string& chainPem);
    Status provision(const std::string& documentJson);
    // Removes key, certificate and provisioning, then makes a new key at once
    // (for a file key), so the service is usable again with a new DeviceId.
    Status factoryReset();

    // EST (RFC 7030), when identity.json has an "est" section (else NotSupported).
    // Enroll: simpleenroll authenticated by the factory credential (the first
    // certificate, or again after it expired). Renew: simplereenroll authenticated
    // by the certificate in force. The CSR is made here with the device key; the
    // answer must be for the device key, name the DeviceId as CN, lead to the
    // fleet CA and be valid now, or it is refused with a named error and the
    // stored identity is unchanged; a good one is installed by one atomic write.
    Status enroll();
    Status renew();
    // What the renewal timer calls: enrols or renews when due, marks an expired
    // certificate as such; nothing when nothing is due. True when a new
    // certificate was installed (the failure is also in the renewal state).
    Expected<bool> runScheduledRenewal();
    RenewalStatus renewalStatus() const;
    // When runScheduledRenewal wants to run next (epoch seconds), 0: never.
    std::time_t renewalWakeup() const;
    // Called (from the thread that made the change) whenever the renewal state,
    // next renewal or last error changes; set once before any call.
    void setRenewalObserver(std::function<void()> observer) { renewalObserver_ = std::move(observer); }

    // The provisioning document (NotProvisioned if none); secrets only when asked.
    Expected<std::string> provisioningJson(bool withSecrets) const;
    // Signs a prehashed digest for a TLS handshake (signer.h says which algorithms);
    // who may ask and how often is the Signer's decision, not this one's.
    Expected<std::string> signDigest(SignAlgorithm algorithm, const std::string& digest) const;
    // The algorithms the current key signs with (empty while the key is unusable).
    std::vector<std::string> signingAlgorithms() const;
    // True when the key's operations are slow (a TPM): keep them off the bus thread.
    bool keyIsSlow() const;
    Expected<TlsCredentials> tlsCredentials() const;

private:
    struct Stored {
        std::string chainPem;
        std::optional<Provisioning> provisioning;
    };

    Identity() = default;
    Expected<DeviceKey> obtainKey(bool allowCreate) const;
    Status storeNewKeyFile(const std::string& path, std::string& pem) const;
    Status loadStored();
    Status writeStored(const Stored& next) const;
    Status finishReset();
    void recomputeLocked();
    Expected<DeviceKey> usableKey() const;
    Status checkMutable() const;
    Status estExchange(bool reenroll);
    // The chain from one EST exchange, checked; `retryAfter` set from a 202.
    Expected<VerifiedChain> estRequest(bool reenroll, const DeviceKey& key, const std::string& currentChain,
                                       std::optional<std::int64_t>& retryAfter, std::string& trust) const;
    // The fleet CAs a chain must lead to: fleet_ca plus those trusted from EST
    // (<state_dir>/fleet-cas.pem); "" when no fleet CA is configured.
    Expected<std::string> trustedCas() const;
    std::string trustedCasName() const;
    // GET /cacerts and the trusted set it leads to (ca_trust.h), or why it is refused.
    Expected<TrustedCas> fetchCaCertificates(const EstClientAuth& auth, const std::string& trusted) const;
    void renewalChanged() const;
    void noteCertificateLocked(std::time_t now); // tells the engine about stored_.chainPem

    std::string stateDir_;
    std::string keyUri_;
    KeyType keyType_ = KeyType::EcP256;
    std::string fleetCa_;
    std::optional<EstConfig> est_;
    std::function<void()> renewalObserver_;

    mutable std::mutex mu_;  // guards the fields below
    std::mutex mutateMu_;    // one mutating call at a time
    std::optional<DeviceKey> key_;
    std::string keyError_;   // why the key is unusable
    std::string stateError_; // why the state file is unusable
    Stored stored_;
    std::string deviceId_;
    std::uint64_t notAfter_ = 0;
    RenewalEngine renewal_;
};

} // namespace mbl::identity
