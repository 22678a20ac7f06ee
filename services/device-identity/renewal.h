// SPDX-License-Identifier: Apache-2.0
#pragma once
// When the device certificate is enrolled and renewed (EST, RFC 7030): a typed
// state machine whose transitions are one table. It decides nothing about HTTP
// or files; it is told what happened (a certificate installed or removed, an
// attempt started, failed) at a time it is given, and answers what to do next
// and when. Time is a parameter everywhere, so tests drive it with any clock.
// No bus code here.

#include "mbl/expected.h"

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

namespace mbl::identity {

enum class RenewalState {
    NotConfigured, // no "est" section: certificates come by InstallCertificate only
    NoCertificate, // waiting for the first enrolment (simpleenroll)
    Valid,         // a certificate in force; renewal planned at the configured fraction
    Renewing,      // an EST exchange is running
    Retrying,      // the last attempt failed; the next one is planned with back-off
    Expired,       // the certificate is past notAfter: only simpleenroll (factory credential) helps
};
const char* renewalStateName(RenewalState s);

enum class RenewalEvent {
    CertificateInstalled,
    CertificateRemoved,
    AttemptStarted,
    AttemptFailed,
    ValidityEnded, // the clock passed notAfter
};
const char* renewalEventName(RenewalEvent e);

// What the next attempt is, when one is due.
enum class RenewalAction { None, Enroll, Reenroll };

struct RenewalPolicy {
    bool configured = false;
    int renewAtPermille = 667;
    std::int64_t retryMinSeconds = 60;
    std::int64_t retryMaxSeconds = 3600;
    bool enrollWithoutCertificate = true; // NoCertificate plans an enrolment
};

class RenewalEngine {
public:
    explicit RenewalEngine(RenewalPolicy policy = {});

    // A certificate with this validity is now in force (start-up, InstallCertificate,
    // an enrolment or a renewal that succeeded). Clears the last error.
    void certificateInstalled(std::time_t notBefore, std::time_t notAfter, std::time_t now);
    void certificateRemoved(std::time_t now);
    // An attempt is starting now; InvalidArgument (nothing changed) if the state
    // does not allow one (e.g. already Renewing).
    Status attemptStarted(std::time_t now);
    // The attempt failed: Retrying at now + back-off (or the server's Retry-After),
    // or Expired when the certificate's validity has ended meanwhile.
    void attemptFailed(const std::string& error, std::time_t now, std::optional<std::int64_t> retryAfter = {});
    // Moves to Expired once the clock has passed notAfter.
    void tick(std::time_t now);

    // What is due at `now` (after tick): None, Enroll or Reenroll.
    RenewalAction due(std::time_t now) const;
    // When the engine wants to be asked again (next attempt or end of validity); 0: never.
    std::time_t nextWakeup() const;

    RenewalState state() const { return state_; }
    std::time_t nextAttempt() const { return nextAttempt_; } // 0: none planned
    std::time_t notAfter() const { return notAfter_; }
    const std::string& lastError() const { return lastError_; }
    int failures() const { return failures_; }

private:
    // The one place a state changes: refused (false) when the table has no such transition.
    bool fire(RenewalEvent event);
    std::time_t renewalTime() const;

    RenewalPolicy policy_;
    RenewalState state_;
    std::time_t notBefore_ = 0;
    std::time_t notAfter_ = 0; // 0: no certificate
    std::time_t nextAttempt_ = 0;
    std::string lastError_;
    int failures_ = 0;
};

} // namespace mbl::identity
