#pragma once
// The Eclipse hawkBit DDI protocol as pure functions: parsing what the server
// sends (controller base, deploymentBase, cancelAction), building what the device
// sends (feedback, configData), link choice and checks, the retry back-off and
// the poll jitter. No I/O here, so all of it is unit-tested and fuzzed.
//
// Where a rule comes from hawkBit, the comment names the file of
// eclipse-hawkbit/hawkbit that defines it (see /work/shared/HAWKBIT-DDI.md).

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

// hawkBit's limits on configData (hawkbit-repository-api .../model/Target.java
// CONTROLLER_ATTRIBUTE_MAX_KEY_SIZE / _MAX_VALUE_SIZE; hawkbit-core
// HawkbitSecurityProperties maxAttributeEntriesPerTarget), checked before anything is sent.
inline constexpr std::size_t kMaxAttributes = 100;
inline constexpr std::size_t kMaxAttributeLength = 128;
// hawkBit refuses more than 50 messages per status (HawkbitSecurityProperties
// maxMessagesPerActionStatus); two are kept for the server's own.
inline constexpr std::size_t kMaxFeedbackDetails = 48;
// Nesting deeper than this in a server document is refused (nothing hawkBit sends is deeper than 6).
inline constexpr int kMaxJsonDepth = 32;

// "HH:MM:SS" or an ISO-8601 duration ("PT36H", "PT5M30S", "P1DT2H"). At least 1 s,
// at most 30 days; anything else is InvalidArgument.
Expected<std::chrono::seconds> parseSleep(const std::string& text);

// The origin a URL may be fetched from: scheme, host and port.
struct Origin {
    std::string scheme;
    std::string host;
    int port = 443;
    bool operator==(const Origin& o) const { return scheme == o.scheme && host == o.host && port == o.port; }
    bool operator!=(const Origin& o) const { return !(*this == o); }
    std::string text() const { return scheme + "://" + host + ":" + std::to_string(port); }
};
Expected<Origin> originOf(const std::string& url);

// Which links the device follows (cloud.json allow_other_hosts, allow_http).
struct LinkPolicy {
    // Artifact links and redirects to another host (a CDN, an object store):
    // fetched over TLS checked against that host's CA, never with the device's
    // certificate or token.
    bool allowOtherHosts = false;
    // Plain http:// for artifacts (never with credentials). The artifact is
    // still checked against the SHA-256 of the deployment (which came over TLS).
    bool allowHttp = false;
};
// A link from the server is followed only if it is https (or http with
// allowHttp, never for the server's own resources) and points to the origin of
// the configured server, or to another host with allowOtherHosts.
// `artifact`: a download link (http and other hosts may be allowed there);
// otherwise a DDI resource (always https on the server's origin).
Status checkLink(const std::string& href, const Origin& server, const LinkPolicy& policy = {}, bool artifact = false);

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

// The artifact link the device follows, from an artifact's _links: "download"
// when the server offers it (an operator configured https downloads), else
// "download-http" (the only download rel of a default hawkBit:
// hawkbit-autoconfigure/.../hawkbit-artifactdl-defaults.properties; its scheme is
// the request's, so behind a TLS proxy it is https too). NotFound when neither.
Expected<std::string> chooseArtifactLink(const nlohmann::json& links);

// deploymentBase JSON -> the normalised deployment the coordinator reads (contract C1):
// {"action_id", "download", "update", "maintenance_window", "download_only",
//  "download_allowed", "install_allowed", "complete_app_set",
//  "chunks": [{"part","name","version","metadata":{k:v},
//  "artifacts": [{"filename","size","sha256","sha1","md5","url"}]}]}
// Refused (InvalidArgument naming the field): not JSON or not an object, nested
// deeper than kMaxJsonDepth, unknown handling types or window states, chunks
// that appear twice, artifacts named twice in a chunk, hashes of the wrong
// length, artifacts without a usable link or with a link the policy refuses.
Expected<nlohmann::json> normaliseDeployment(const std::string& body, const Origin& server,
                                             const LinkPolicy& policy = {});

// confirmationBase/{id} JSON (the same shape, the deployment under "confirmation")
// -> the same normalised deployment.
Expected<nlohmann::json> normaliseConfirmation(const std::string& body, const Origin& server,
                                               const LinkPolicy& policy = {});
// The confirmationBase feedback body: {"confirmation": "confirmed"|"denied", "details": [...]}.
std::string confirmationBody(bool confirmed, const std::vector<std::string>& details);

// JSON text for the bus: ASCII only (\uXXXX escapes), so any string the server
// sent (even U+FFFE) can travel in a D-Bus string.
std::string busJson(const nlohmann::json& j);

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
// The answer to a cancel request as hawkBit reads it (DdiRootController
// generateActionCancelStatus): only "closed" accepts or refuses a cancellation;
// "canceled" is logged by the server as "not supported" and leaves the action
// cancelling. So an acceptance given as canceled/success goes out as closed/success.
Feedback cancelAnswer(Feedback f);

// hawkBit's attribute rules (JpaControllerManagement.updateControllerAttributes,
// PATTERN): at most 100 attributes; keys 1..128 and values 0..128 characters of
// [a-zA-Z0-9_-!@#$%^&*()+=[]{}|;:'",.<>/\?] and white space. Anything else is
// refused by the server with 400.
Status validateAttribute(const std::string& key, const std::string& value);
Status validateAttributes(const std::map<std::string, std::string>& attrs);
// {"mode": "replace", "data": {...}}: the server's view becomes exactly the
// device's (removed attributes disappear). hawkBit refuses an empty data map
// (DdiConfigData @NotEmpty); the device always has some (device_id).
std::string configDataBody(const std::map<std::string, std::string>& attrs, const std::string& mode = "replace");

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

// `base` moved by a uniformly random fraction in [-percent, +percent] %.
std::chrono::milliseconds jittered(std::chrono::milliseconds base, unsigned percent, std::mt19937& rng);

// Retry-After: delta seconds or an HTTP date; nullopt when absent or unreadable.
std::optional<std::chrono::seconds> parseRetryAfter(const std::string& value, std::int64_t nowEpoch);

} // namespace mbl::cloud
