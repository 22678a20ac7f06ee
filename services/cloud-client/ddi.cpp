#include "ddi.h"

#include "mbl/curl.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cctype>
#include <ctime>

namespace mbl::cloud {

using nlohmann::json;

namespace {

constexpr std::int64_t kMaxSleep = 30LL * 24 * 3600;

// hawkBit takes any artifact file name ("My App (1.2).tar"). It is only ever a
// label here (logs, signals, feedback), never a path, so what is refused is what
// could pass for a path or forge a log line: separators, "." and "..", control
// characters, over 255 bytes.
bool isArtifactFileName(const std::string& s)
{
    if (s.empty() || s.size() > 255 || s == "." || s == "..") {
        return false;
    }
    return std::none_of(s.begin(), s.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c < 0x20 || c == 0x7f || c == '/' || c == '\\';
    });
}

Error bad(const std::string& m)
{
    return Error{ErrorCode::InvalidArgument, m};
}

bool allDigits(const std::string& s)
{
    return !s.empty() && s.size() <= 9 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

Expected<std::int64_t> parseIsoDuration(const std::string& t)
{
    // P[nD][T[nH][nM][nS]] (weeks, months and years make no sense for a poll interval).
    std::size_t i = 1;
    bool inTime = false;
    bool any = false;
    std::int64_t total = 0;
    std::string num;
    for (; i < t.size(); ++i) {
        char c = t[i];
        if (c == 'T') {
            if (inTime || !num.empty()) {
                return unexpected(bad("invalid ISO-8601 duration '" + t + "'"));
            }
            inTime = true;
            continue;
        }
        if (std::isdigit(static_cast<unsigned char>(c))) {
            num += c;
            if (num.size() > 9) {
                return unexpected(bad("ISO-8601 duration '" + t + "' is too large"));
            }
            continue;
        }
        if (num.empty()) {
            return unexpected(bad("invalid ISO-8601 duration '" + t + "'"));
        }
        std::int64_t n = std::stoll(num);
        num.clear();
        if (!inTime && c == 'D') {
            total += n * 86400;
        } else if (inTime && c == 'H') {
            total += n * 3600;
        } else if (inTime && c == 'M') {
            total += n * 60;
        } else if (inTime && c == 'S') {
            total += n;
        } else {
            return unexpected(bad("invalid ISO-8601 duration '" + t + "' (unit '" + std::string(1, c) + "')"));
        }
        any = true;
        if (total > kMaxSleep) {
            return unexpected(bad("poll sleep '" + t + "' is longer than 30 days"));
        }
    }
    if (!any || !num.empty()) {
        return unexpected(bad("invalid ISO-8601 duration '" + t + "'"));
    }
    return total;
}

std::string str(const json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string href(const json& links, const char* rel)
{
    auto it = links.find(rel);
    if (it == links.end() || !it->is_object()) {
        return {};
    }
    return str(*it, "href");
}

Expected<json> parseObject(const std::string& body, const char* what)
{
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        return unexpected(bad(std::string(what) + ": malformed JSON from the server"));
    }
    if (!j.is_object()) {
        return unexpected(bad(std::string(what) + ": the server sent JSON that is not an object"));
    }
    return j;
}

Status checkHandlingMode(const std::string& v, const char* field, const char* what)
{
    if (v == "skip" || v == "attempt" || v == "forced") {
        return {};
    }
    return unexpected(bad(std::string(what) + ": '" + field + "' is '" + v + "', expected skip, attempt or forced"));
}

} // namespace

Expected<std::chrono::seconds> parseSleep(const std::string& text)
{
    const std::string t = str::trim(text);
    std::int64_t secs = 0;
    if (!t.empty() && t[0] == 'P') {
        auto v = parseIsoDuration(t);
        if (!v) {
            return unexpected(v.error());
        }
        secs = *v;
    } else {
        auto parts = str::split(t, ':');
        if (parts.size() != 3 || !allDigits(parts[0]) || !allDigits(parts[1]) || !allDigits(parts[2]) ||
            parts[1].size() != 2 || parts[2].size() != 2) {
            return unexpected(bad("poll sleep '" + text + "' is neither HH:MM:SS nor an ISO-8601 duration"));
        }
        std::int64_t h = std::stoll(parts[0]);
        std::int64_t m = std::stoll(parts[1]);
        std::int64_t s = std::stoll(parts[2]);
        if (m > 59 || s > 59) {
            return unexpected(bad("poll sleep '" + text + "' has minutes or seconds above 59"));
        }
        secs = h * 3600 + m * 60 + s;
    }
    if (secs < 1) {
        return unexpected(bad("poll sleep '" + text + "' is zero"));
    }
    if (secs > kMaxSleep) {
        return unexpected(bad("poll sleep '" + text + "' is longer than 30 days"));
    }
    return std::chrono::seconds(secs);
}

Expected<Origin> originOf(const std::string& url)
{
    curl::Url u{curl_url()};
    if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
        return unexpected(bad("'" + url + "' is not a valid URL"));
    }
    char* raw = nullptr;
    Origin o;
    if (curl_url_get(u.get(), CURLUPART_SCHEME, &raw, 0) == CURLUE_OK) {
        curl::Str s{raw};
        o.scheme = s.get();
    }
    raw = nullptr;
    if (curl_url_get(u.get(), CURLUPART_HOST, &raw, 0) == CURLUE_OK) {
        curl::Str s{raw};
        o.host = s.get();
        std::transform(o.host.begin(), o.host.end(), o.host.begin(), [](unsigned char c) { return std::tolower(c); });
    }
    raw = nullptr;
    if (curl_url_get(u.get(), CURLUPART_PORT, &raw, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        curl::Str s{raw};
        o.port = std::atoi(s.get());
    }
    if (o.host.empty()) {
        return unexpected(bad("'" + url + "' has no host"));
    }
    return o;
}

Status checkLink(const std::string& hrefText, const Origin& server, bool allowOtherHosts)
{
    auto o = originOf(hrefText);
    if (!o) {
        return unexpected(bad("the server sent an invalid link: " + o.error().message));
    }
    if (o->scheme != "https") {
        return unexpected(bad("the server sent a link that is not https (" + hrefText + "); refused"));
    }
    if (!allowOtherHosts && !(*o == server)) {
        return unexpected(bad("the server sent a link to another host (" + o->host + ":" + std::to_string(o->port) +
                              "); refused, credentials are only sent to " + server.host + ":" +
                              std::to_string(server.port)));
    }
    return {};
}

Expected<PollResult> parsePoll(const std::string& body)
{
    auto j = parseObject(body, "controller base");
    if (!j) {
        return unexpected(j.error());
    }
    PollResult r;
    auto cfg = j->find("config");
    if (cfg != j->end()) {
        if (!cfg->is_object()) {
            return unexpected(bad("controller base: 'config' is not an object"));
        }
        auto polling = cfg->find("polling");
        if (polling != cfg->end()) {
            if (!polling->is_object()) {
                return unexpected(bad("controller base: 'config.polling' is not an object"));
            }
            auto sleep = polling->find("sleep");
            if (sleep != polling->end()) {
                if (!sleep->is_string()) {
                    return unexpected(bad("controller base: 'config.polling.sleep' is not a string"));
                }
                auto s = parseSleep(sleep->get<std::string>());
                if (!s) {
                    return unexpected(s.error());
                }
                r.sleep = *s;
            }
        }
    }
    auto links = j->find("_links");
    if (links != j->end()) {
        if (!links->is_object()) {
            return unexpected(bad("controller base: '_links' is not an object"));
        }
        r.deploymentBase = href(*links, "deploymentBase");
        r.cancelAction = href(*links, "cancelAction");
        r.configData = href(*links, "configData");
        r.installedBase = href(*links, "installedBase");
        r.confirmationBase = href(*links, "confirmationBase");
    }
    return r;
}

std::string actionIdFromHref(const std::string& h)
{
    std::string path = h.substr(0, h.find_first_of("?#"));
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

namespace {

// deploymentBase, installedBase and confirmationBase share one shape; only the
// member holding the deployment is named differently.
Expected<json> normalise(const std::string& body, const Origin& server, const char* what, const char* member)
{
    auto j = parseObject(body, what);
    if (!j) {
        return unexpected(j.error());
    }
    json out;
    auto id = j->find("id");
    if (id == j->end() || !(id->is_string() || id->is_number_integer())) {
        return unexpected(bad(std::string(what) + ": 'id' is missing or not a string"));
    }
    out["action_id"] = id->is_string() ? id->get<std::string>() : std::to_string(id->get<std::int64_t>());
    auto dep = j->find(member);
    if (dep == j->end() || !dep->is_object()) {
        return unexpected(bad(std::string(what) + ": '" + member + "' is missing or not an object"));
    }
    const std::string download = str(*dep, "download").empty() ? "forced" : str(*dep, "download");
    const std::string update = str(*dep, "update").empty() ? "forced" : str(*dep, "update");
    if (auto st = checkHandlingMode(download, "download", what); !st) {
        return unexpected(st.error());
    }
    if (auto st = checkHandlingMode(update, "update", what); !st) {
        return unexpected(st.error());
    }
    out["download"] = download;
    out["update"] = update;
    out["download_only"] = update == "skip";
    auto mw = dep->find("maintenanceWindow");
    if (mw != dep->end() && !mw->is_null()) {
        if (!mw->is_string() || (*mw != "available" && *mw != "unavailable")) {
            return unexpected(bad(std::string(what) + ": 'maintenanceWindow' must be available or unavailable"));
        }
        out["maintenance_window"] = *mw;
    } else {
        out["maintenance_window"] = nullptr;
    }
    out["install_allowed"] = update != "skip" && out["maintenance_window"] != "unavailable";
    auto chunks = dep->find("chunks");
    if (chunks == dep->end() || !chunks->is_array()) {
        return unexpected(bad(std::string(what) + ": 'deployment.chunks' is missing or not an array"));
    }
    json outChunks = json::array();
    for (const auto& c : *chunks) {
        if (!c.is_object()) {
            return unexpected(bad(std::string(what) + ": a chunk is not an object"));
        }
        json oc;
        oc["part"] = str(c, "part");
        oc["name"] = str(c, "name");
        oc["version"] = str(c, "version");
        json meta = json::object();
        if (auto m = c.find("metadata"); m != c.end()) {
            if (!m->is_array()) {
                return unexpected(bad(std::string(what) + ": chunk metadata is not an array"));
            }
            for (const auto& kv : *m) {
                if (!kv.is_object() || !kv.contains("key") || !kv["key"].is_string()) {
                    return unexpected(bad(std::string(what) + ": chunk metadata entry without a string 'key'"));
                }
                meta[kv["key"].get<std::string>()] = str(kv, "value");
            }
        }
        oc["metadata"] = meta;
        json arts = json::array();
        if (auto a = c.find("artifacts"); a != c.end()) {
            if (!a->is_array()) {
                return unexpected(bad(std::string(what) + ": chunk artifacts is not an array"));
            }
            for (const auto& art : *a) {
                if (!art.is_object()) {
                    return unexpected(bad(std::string(what) + ": an artifact is not an object"));
                }
                json oa;
                oa["filename"] = str(art, "filename");
                const std::string label = str::quotable(oa["filename"]);
                if (!isArtifactFileName(oa["filename"].get<std::string>())) {
                    return unexpected(bad(std::string(what) + ": artifact filename '" + label +
                                          "' is not a safe file name"));
                }
                auto size = art.find("size");
                if (size == art.end() || !size->is_number_unsigned()) {
                    return unexpected(bad(std::string(what) + ": artifact '" + label +
                                          "' has no valid 'size'"));
                }
                oa["size"] = size->get<std::uint64_t>();
                auto hashes = art.find("hashes");
                if (hashes == art.end() || !hashes->is_object()) {
                    return unexpected(bad(std::string(what) + ": artifact '" + label + "' has no 'hashes'"));
                }
                std::string sha256 = str(*hashes, "sha256");
                if (sha256.size() != 64 || !std::all_of(sha256.begin(), sha256.end(), [](unsigned char ch) {
                        return std::isxdigit(ch);
                    })) {
                    return unexpected(bad(std::string(what) + ": artifact '" + label +
                                          "' has no valid sha256 hash"));
                }
                oa["sha256"] = sha256;
                oa["sha1"] = str(*hashes, "sha1");
                oa["md5"] = str(*hashes, "md5");
                std::string url;
                if (auto links = art.find("_links"); links != art.end() && links->is_object()) {
                    url = href(*links, "download");
                }
                if (url.empty()) {
                    return unexpected(bad(std::string(what) + ": artifact '" + label +
                                          "' has no https download link"));
                }
                if (auto st = checkLink(url, server); !st) {
                    return unexpected(st.error());
                }
                oa["url"] = url;
                arts.push_back(oa);
            }
        }
        oc["artifacts"] = arts;
        outChunks.push_back(oc);
    }
    out["chunks"] = outChunks;
    return out;
}

} // namespace

Expected<json> normaliseDeployment(const std::string& body, const Origin& server)
{
    return normalise(body, server, "deploymentBase", "deployment");
}

Expected<json> normaliseConfirmation(const std::string& body, const Origin& server)
{
    return normalise(body, server, "confirmationBase", "confirmation");
}

std::string confirmationBody(bool confirmed, const std::vector<std::string>& details)
{
    return json{{"confirmation", confirmed ? "confirmed" : "denied"}, {"details", details}}.dump();
}

Expected<std::string> parseCancelAction(const std::string& body)
{
    auto j = parseObject(body, "cancelAction");
    if (!j) {
        return unexpected(j.error());
    }
    auto ca = j->find("cancelAction");
    if (ca == j->end() || !ca->is_object()) {
        return unexpected(bad("cancelAction: 'cancelAction' is missing or not an object"));
    }
    auto stop = ca->find("stopId");
    if (stop != ca->end() && stop->is_string()) {
        return stop->get<std::string>();
    }
    if (stop != ca->end() && stop->is_number_integer()) {
        return std::to_string(stop->get<std::int64_t>());
    }
    return unexpected(bad("cancelAction: 'stopId' is missing"));
}

Status validateFeedback(const Feedback& f)
{
    static const std::vector<std::string> executions = {"closed",   "proceeding", "canceled",   "scheduled",
                                                        "rejected", "resumed",    "downloaded", "download"};
    if (std::find(executions.begin(), executions.end(), f.execution) == executions.end()) {
        return unexpected(bad("execution '" + f.execution +
                              "' is not one of closed, proceeding, canceled, scheduled, rejected, resumed, "
                              "downloaded, download"));
    }
    if (f.result != "success" && f.result != "failure" && f.result != "none") {
        return unexpected(bad("result '" + f.result + "' is not one of success, failure, none"));
    }
    if (f.details.size() > kMaxFeedbackDetails) {
        return unexpected(bad("at most 48 details per feedback message (got " + std::to_string(f.details.size()) + ")"));
    }
    if (f.progressOf != 0 && f.progressCount > f.progressOf) {
        return unexpected(bad("progress count is larger than progress of"));
    }
    for (const auto& d : f.details) {
        if (d.size() > 4096) {
            return unexpected(bad("a feedback detail is longer than 4096 characters"));
        }
    }
    return {};
}

std::string feedbackBody(const Feedback& f, std::int64_t timestampMs)
{
    json result = {{"finished", f.result}};
    if (f.progressOf != 0) {
        result["progress"] = {{"cnt", f.progressCount}, {"of", f.progressOf}};
    }
    json status = {{"execution", f.execution}, {"result", result}, {"details", f.details}};
    json body = {{"timestamp", timestampMs}, {"status", status}};
    return body.dump();
}

Status validateAttributes(const std::map<std::string, std::string>& attrs)
{
    if (attrs.size() > kMaxAttributes) {
        return unexpected(bad("the server accepts at most 100 attributes; this would make " +
                              std::to_string(attrs.size())));
    }
    for (const auto& [k, v] : attrs) {
        if (k.empty() || k.size() > kMaxAttributeLength) {
            return unexpected(bad("attribute key '" + k.substr(0, 40) + "' must have 1 to 128 characters"));
        }
        if (v.size() > kMaxAttributeLength) {
            return unexpected(bad("value of attribute '" + k + "' is longer than 128 characters"));
        }
    }
    return {};
}

std::string configDataBody(const std::map<std::string, std::string>& attrs)
{
    json data = json::object();
    for (const auto& [k, v] : attrs) {
        data[k] = v;
    }
    return json{{"mode", "merge"}, {"data", data}}.dump();
}

Backoff::Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap, std::uint32_t seed)
    : base_(base), cap_(cap), rng_(seed)
{
}

std::chrono::milliseconds Backoff::next()
{
    const std::uint32_t shift = std::min<std::uint32_t>(attempt_, 20);
    ++attempt_;
    std::int64_t upper = std::min<std::int64_t>(cap_.count(), base_.count() << shift);
    std::int64_t lower = upper / 2;
    std::uniform_int_distribution<std::int64_t> dist(lower, std::max(lower, upper));
    return std::chrono::milliseconds(dist(rng_));
}

std::optional<std::chrono::seconds> parseRetryAfter(const std::string& value, std::int64_t nowEpoch)
{
    const std::string v = str::trim(value);
    if (v.empty()) {
        return std::nullopt;
    }
    if (allDigits(v)) {
        return std::chrono::seconds(std::stoll(v));
    }
    std::tm tm{};
    if (::strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm) == nullptr) {
        return std::nullopt;
    }
    std::int64_t when = ::timegm(&tm);
    return std::chrono::seconds(std::max<std::int64_t>(0, when - nowEpoch));
}

} // namespace mbl::cloud
