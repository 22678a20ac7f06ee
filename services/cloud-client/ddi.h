#pragma once
// The Eclipse hawkBit DDI protocol as pure functions: parsing what the server
// sends (controller base, deploymentBase, cancelAction), building what the device
// sends (feedback, configData), link checks and the retry back-off. No I/O here,
// so all of it is unit-tested.

#include "mbl/expected.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace mbl::cloud {

// Limits a hawkBit server enforces on configData (and we enforce before sending).
inline constexpr std::size_t kMaxAttributes = 100;
inline constexpr std::size_t kMaxAttributeLength = 128;
// DDI allows at most 48 details per feedback message.
inline constexpr std::size_t kMaxFeedbackDetails = 48;

// "HH:MM:SS" or an ISO-8601 duration ("PT36H", "PT5M30S", "P1DT2H"). At least 1 s,
// at most 30 days; anything else is InvalidArgument.
Expected<std::chrono::seconds> parseSleep(const std::string& text);

// The origin a URL may be fetched from: scheme https, host and port.
struct Origin {
    std::string scheme;
    std::string host;
    int port = 443;
    bool operator==(const Origin& o) const { return scheme == o.scheme && host == o.host && port == o.port; }
};
Expected<Origin> originOf(const std::string& url);
// A link from the server is followed only if it is https and points to the
// origin of the configured server (credentials are never sent elsewhere).
Status checkLink(const std::string& href, const Origin& server, bool allowOtherHosts = false);

struct PollResult {
    std::optional<std::chrono::seconds> sleep;
    std::string deploymentBase;
    std::string cancelAction;
    std::string configData;
    std::string installedBase;
    std::string confirmationBase; // an action waiting for the device's consent (hawkBit's confirmation flow)
};
Expected<PollResult> parsePoll(const std::string& body);

// The action id in a deploymentBase / cancelAction / installedBase href
// (".../deploymentBase/17?c=-2129030598" -> "17").
std::string actionIdFromHref(const std::string& href);

// deploymentBase JSON -> the normalised deployment the coordinator reads:
// {"action_id", "download", "update", "maintenance_window", "download_only",
//  "install_allowed", "chunks": [{"part","name","version","metadata":{k:v},
//  "artifacts": [{"filename","size","sha256","sha1","md5","url"}]}]}
Expected<nlohmann::json> normaliseDeployment(const std::string& body, const Origin& server);

// confirmationBase/{id} JSON (the same shape, the deployment under "confirmation")
// -> the same normalised deployment.
Expected<nlohmann::json> normaliseConfirmation(const std::string& body, const Origin& server);
// The confirmationBase feedback body: {"confirmation": "confirmed"|"denied", "details": [...]}.
std::string confirmationBody(bool confirmed, const std::vector<std::string>& details);

// cancelAction JSON -> the stopId (the action to cancel).
Expected<std::string> parseCancelAction(const std::string& body);

struct Feedback {
    std::string execution; // closed, proceeding, canceled, scheduled, rejected, resumed, downloaded, download
    std::string result;    // success, failure, none
    std::uint32_t progressCount = 0;
    std::uint32_t progressOf = 0;
    std::vector<std::string> details;
};
Status validateFeedback(const Feedback& f);
// The DDI feedback body: {"timestamp", "status": {"execution", "result":
// {"finished", "progress": {"cnt", "of"}}, "details": [...]}}.
std::string feedbackBody(const Feedback& f, std::int64_t timestampMs);

// Checks the server's limits: at most 100 attributes, keys and values at most 128 characters.
Status validateAttributes(const std::map<std::string, std::string>& attrs);
std::string configDataBody(const std::map<std::string, std::string>& attrs);

// Exponential back-off with full jitter between base and a cap: attempt n waits a
// random time in [base*2^n / 2, min(cap, base*2^n)].
class Backoff {
public:
    Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap, std::uint32_t seed = std::random_device{}());
    std::chrono::milliseconds next();
    void reset() { attempt_ = 0; }
    std::uint32_t attempt() const { return attempt_; }

private:
    std::chrono::milliseconds base_;
    std::chrono::milliseconds cap_;
    std::uint32_t attempt_ = 0;
    std::mt19937 rng_;
};

// Retry-After: delta seconds or an HTTP date; nullopt when absent or unreadable.
std::optional<std::chrono::seconds> parseRetryAfter(const std::string& value, std::int64_t nowEpoch);

} // namespace mbl::cloud
