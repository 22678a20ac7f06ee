#include "poller.h"

#include <algorithm>
#include <array>

namespace mbl::cloud {

using std::chrono::milliseconds;

namespace {

constexpr std::array<const char*, kConnStateCount> kStateNames = {
    "unprovisioned", "connecting", "connected", "throttled", "disconnected", "auth-failed",
};
constexpr std::array<const char*, kPollEventCount> kEventNames = {
    "not-provisioned", "identity-changed", "answered", "throttled", "server-trouble", "unreachable", "auth-refused",
};

// Every transition. Most events lead to the same state whatever the state was;
// the rows that depend on where we come from are listed first and win.
struct Row {
    std::optional<ConnState> from; // nullopt: from any state
    PollEvent event;
    Transition t;
};
const Row kTable[] = {
    // A Retry-After while already throttled keeps growing the back-off under it.
    {ConnState::Throttled, PollEvent::Throttled, {ConnState::Throttled, WaitRule::RetryAfter, false}},
    {std::nullopt, PollEvent::NotProvisioned, {ConnState::Unprovisioned, WaitRule::Unprovisioned, true}},
    {std::nullopt, PollEvent::IdentityChanged, {ConnState::Connecting, WaitRule::Now, true}},
    {std::nullopt, PollEvent::Answered, {ConnState::Connected, WaitRule::Sleep, true}},
    {std::nullopt, PollEvent::Throttled, {ConnState::Throttled, WaitRule::RetryAfter, false}},
    {std::nullopt, PollEvent::ServerTrouble, {ConnState::BackingOff, WaitRule::Backoff, false}},
    {std::nullopt, PollEvent::Unreachable, {ConnState::BackingOff, WaitRule::Backoff, false}},
    {std::nullopt, PollEvent::AuthRefused, {ConnState::AuthFailed, WaitRule::AuthRetry, true}},
};

class RealClock final : public Clock {
public:
    TimePoint now() const override { return std::chrono::steady_clock::now(); }
    TimePoint toReal(TimePoint t) const override { return t; }
};

} // namespace

const char* connStateName(ConnState s)
{
    return kStateNames.at(static_cast<std::size_t>(s));
}

const char* pollEventName(PollEvent e)
{
    return kEventNames.at(static_cast<std::size_t>(e));
}

Transition transition(ConnState from, PollEvent event)
{
    for (const auto& r : kTable) {
        if (r.event == event && (!r.from || *r.from == from)) {
            return r.t;
        }
    }
    return {from, WaitRule::Backoff, false}; // unreachable: every event has an "any" row
}

Clock& Clock::real()
{
    static RealClock clock;
    return clock;
}

Poller::Poller(PollerSettings s, std::uint32_t seed)
    : s_(s), backoff_(s.backoffBase, s.backoffCap, seed), rng_(seed ^ 0x9e3779b9u)
{
}

milliseconds Poller::firstWait()
{
    const auto spread = std::chrono::duration_cast<milliseconds>(s_.firstPollSpread).count();
    if (spread <= 0) {
        return milliseconds(0);
    }
    std::uniform_int_distribution<std::int64_t> dist(0, spread);
    return milliseconds(dist(rng_));
}

milliseconds Poller::on(PollEvent e, milliseconds sleep, std::optional<std::chrono::seconds> retryAfter)
{
    const Transition t = transition(state_, e);
    state_ = t.to;
    if (t.resetBackoff) {
        backoff_.reset();
    }
    switch (t.wait) {
    case WaitRule::Sleep:
        return jittered(sleep, s_.jitterPercent, rng_);
    case WaitRule::Backoff:
        return backoff_.next();
    case WaitRule::RetryAfter: {
        milliseconds d = backoff_.next();
        if (retryAfter) {
            // Honour the server's wish, but never beyond the cap (a broken header must not park us for days).
            d = std::max(d, std::min<milliseconds>(s_.backoffCap, *retryAfter));
        }
        return d;
    }
    case WaitRule::AuthRetry:
        return jittered(s_.authRetry, s_.jitterPercent, rng_);
    case WaitRule::Unprovisioned:
        return s_.unprovisionedRetry;
    case WaitRule::Now:
        return milliseconds(0);
    }
    return sleep;
}

} // namespace mbl::cloud
