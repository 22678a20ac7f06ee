// SPDX-License-Identifier: Apache-2.0
#include "renewal.h"

#include <algorithm>
#include <iterator>

namespace mbl::identity {

namespace {

struct Transition {
    RenewalState from;
    RenewalEvent event;
    RenewalState to;
};

using S = RenewalState;
using E = RenewalEvent;

// Every allowed transition; anything else is refused (and logged by the caller).
constexpr Transition kTransitions[] = {
    {S::NoCertificate, E::CertificateInstalled, S::Valid},
    {S::NoCertificate, E::AttemptStarted, S::Renewing},
    {S::NoCertificate, E::CertificateRemoved, S::NoCertificate},
    {S::Valid, E::CertificateInstalled, S::Valid},
    {S::Valid, E::CertificateRemoved, S::NoCertificate},
    {S::Valid, E::AttemptStarted, S::Renewing},
    {S::Valid, E::ValidityEnded, S::Expired},
    {S::Renewing, E::CertificateInstalled, S::Valid},
    {S::Renewing, E::CertificateRemoved, S::NoCertificate},
    {S::Renewing, E::AttemptFailed, S::Retrying},
    {S::Renewing, E::ValidityEnded, S::Expired},
    {S::Retrying, E::CertificateInstalled, S::Valid},
    {S::Retrying, E::CertificateRemoved, S::NoCertificate},
    {S::Retrying, E::AttemptStarted, S::Renewing},
    {S::Retrying, E::ValidityEnded, S::Expired},
    {S::Expired, E::CertificateInstalled, S::Valid},
    {S::Expired, E::CertificateRemoved, S::NoCertificate},
    {S::Expired, E::AttemptStarted, S::Renewing},
};

constexpr const char* kStateNames[] = {"not-configured", "no-certificate", "valid", "renewing", "retrying", "expired"};
constexpr const char* kEventNames[] = {"certificate-installed", "certificate-removed", "attempt-started",
                                       "attempt-failed", "validity-ended"};

} // namespace

const char* renewalStateName(RenewalState s)
{
    return kStateNames[static_cast<int>(s)];
}

const char* renewalEventName(RenewalEvent e)
{
    return kEventNames[static_cast<int>(e)];
}

RenewalEngine::RenewalEngine(RenewalPolicy policy)
    : policy_(policy), state_(policy.configured ? S::NoCertificate : S::NotConfigured)
{
}

bool RenewalEngine::fire(RenewalEvent event)
{
    const auto* t = std::find_if(std::begin(kTransitions), std::end(kTransitions),
                                 [&](const Transition& x) { return x.from == state_ && x.event == event; });
    if (t == std::end(kTransitions)) {
        return false;
    }
    state_ = t->to;
    return true;
}

std::time_t RenewalEngine::renewalTime() const
{
    const std::int64_t span = static_cast<std::int64_t>(notAfter_) - static_cast<std::int64_t>(notBefore_);
    return static_cast<std::time_t>(notBefore_ + std::max<std::int64_t>(0, span) * policy_.renewAtPermille / 1000);
}

void RenewalEngine::certificateInstalled(std::time_t notBefore, std::time_t notAfter, std::time_t now)
{
    notBefore_ = notBefore;
    notAfter_ = notAfter;
    if (state_ == S::NotConfigured) {
        return; // the validity is still shown; nothing is planned
    }
    (void)fire(E::CertificateInstalled);
    failures_ = 0;
    lastError_.clear();
    nextAttempt_ = renewalTime();
    tick(now);
}

void RenewalEngine::certificateRemoved(std::time_t now)
{
    notBefore_ = notAfter_ = 0;
    failures_ = 0;
    if (state_ == S::NotConfigured) {
        return;
    }
    (void)fire(E::CertificateRemoved);
    nextAttempt_ = policy_.enrollWithoutCertificate ? now : 0;
}

Status RenewalEngine::attemptStarted(std::time_t now)
{
    (void)now;
    if (!fire(E::AttemptStarted)) {
        return unexpected(ErrorCode::Busy, std::string("an enrolment cannot start while the renewal state is ") +
                                               renewalStateName(state_));
    }
    nextAttempt_ = 0;
    return {};
}

void RenewalEngine::attemptFailed(const std::string& error, std::time_t now, std::optional<std::int64_t> retryAfter)
{
    lastError_ = error;
    ++failures_;
    if (!fire(E::AttemptFailed)) {
        return;
    }
    std::int64_t wait = policy_.retryMinSeconds;
    for (int i = 1; i < failures_ && wait < policy_.retryMaxSeconds; ++i) {
        wait *= 2;
    }
    wait = std::min(wait, policy_.retryMaxSeconds);
    if (retryAfter) {
        wait = std::clamp<std::int64_t>(*retryAfter, 1, policy_.retryMaxSeconds);
    }
    nextAttempt_ = now + static_cast<std::time_t>(wait);
    tick(now);
}

void RenewalEngine::tick(std::time_t now)
{
    if (notAfter_ != 0 && now >= notAfter_ && fire(E::ValidityEnded)) {
        nextAttempt_ = 0; // the expired certificate cannot authenticate a simplereenroll
    }
}

RenewalAction RenewalEngine::due(std::time_t now) const
{
    if (nextAttempt_ == 0 || now < nextAttempt_) {
        return RenewalAction::None;
    }
    switch (state_) {
    case S::NoCertificate:
        return RenewalAction::Enroll;
    case S::Valid:
        return RenewalAction::Reenroll;
    case S::Retrying:
        return notAfter_ != 0 ? RenewalAction::Reenroll : RenewalAction::Enroll;
    default:
        return RenewalAction::None;
    }
}

std::time_t RenewalEngine::nextWakeup() const
{
    std::time_t next = nextAttempt_;
    if (notAfter_ != 0 && (state_ == S::Valid || state_ == S::Retrying) && (next == 0 || notAfter_ < next)) {
        next = notAfter_;
    }
    return next;
}

} // namespace mbl::identity
