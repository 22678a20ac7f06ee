#pragma once
// When the cloud client talks to the server next, and what it tells the world
// about the connection: a typed state machine (ConnState) driven by what each
// poll ended in (PollEvent), with every transition in one table. Pure logic:
// no I/O, no threads; time comes from a Clock so a fleet benchmark can run the
// same code on a scaled clock.

#include "ddi.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

namespace mbl::cloud {

// The ConnectionState property.
enum class ConnState {
    Unprovisioned, // no provisioning (or an unusable one): nothing to talk to
    Connecting,    // provisioned, no answer yet (after start or an identity change)
    Connected,     // the last poll was answered
    Throttled,     // the server asked us to slow down (429, or 503 with Retry-After)
    BackingOff,    // the server or the link failed: exponential back-off ("disconnected")
    AuthFailed,    // the server refused the device's credentials (401/403)
};
inline constexpr std::size_t kConnStateCount = 6;
const char* connStateName(ConnState s);

// What the last attempt ended in.
enum class PollEvent {
    NotProvisioned,  // the identity service has no (usable) provisioning
    IdentityChanged, // new URL, CA, certificate or token: talk to the server again now
    Answered,        // 200 / 304
    Throttled,       // 429, or 503 with Retry-After
    ServerTrouble,   // 5xx, an unusable answer
    Unreachable,     // transport failure: DNS, connect, TLS, timeout
    AuthRefused,     // 401 / 403
};
inline constexpr std::size_t kPollEventCount = 7;
const char* pollEventName(PollEvent e);

// How long to wait after a transition.
enum class WaitRule {
    Sleep,        // the poll interval, jittered
    Backoff,      // exponential back-off with full jitter
    RetryAfter,   // the server's Retry-After (capped), at least the back-off
    AuthRetry,    // poll.auth_retry_sec, jittered
    Unprovisioned,// poll.unprovisioned_retry_sec
    Now,          // at once
};

struct Transition {
    ConnState to;
    WaitRule wait;
    bool resetBackoff;
};
// The one transition table: (from, event) -> (to, wait).
Transition transition(ConnState from, PollEvent event);

// The time the poller plans in. The real one is std::chrono::steady_clock; a
// fleet benchmark may scale it (the code under test is unchanged: it only ever
// reads now() and asks toReal() when to wake).
class Clock {
public:
    using TimePoint = std::chrono::steady_clock::time_point;
    virtual ~Clock() = default;
    virtual TimePoint now() const = 0;
    // The steady_clock time at which the clock shows `t` (to wait on a condition variable).
    virtual TimePoint toReal(TimePoint t) const = 0;
    static Clock& real();
};

struct PollerSettings {
    std::chrono::milliseconds backoffBase{2000};
    std::chrono::milliseconds backoffCap{600000};
    std::chrono::seconds authRetry{300};
    std::chrono::seconds unprovisionedRetry{60};
    unsigned jitterPercent = 10;        // every poll sleep moves by up to ± this much
    std::chrono::seconds firstPollSpread{60}; // the first poll after start waits a random time up to this
};

class Poller {
public:
    explicit Poller(PollerSettings s, std::uint32_t seed = std::random_device{}());

    // The first attempt after start: a random time in [0, firstPollSpread], so a
    // fleet that starts together (power cut, rollout) spreads out.
    std::chrono::milliseconds firstWait();

    // Applies an event; returns the wait until the next attempt. `sleep` is the
    // poll interval in effect (for Sleep); `retryAfter` the server's wish (for RetryAfter).
    std::chrono::milliseconds on(PollEvent e, std::chrono::milliseconds sleep,
                                 std::optional<std::chrono::seconds> retryAfter = std::nullopt);

    ConnState state() const { return state_; }
    // How many back-off steps in a row (0 when connected).
    std::uint32_t failures() const { return backoff_.attempt(); }

private:
    PollerSettings s_;
    ConnState state_ = ConnState::Connecting;
    Backoff backoff_;
    std::mt19937 rng_;
};

} // namespace mbl::cloud
