#include "ddi.h"

#include "mbl/curl.h"
#include "mbl/strings.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <set>

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
                return unexpected(bad("invalid ISO-8601 duration '" + str::quotable(t, 40) + "'"));
            }
            inTime = true;
            continue;
        }
        if (std::isdigit(static_cast<unsigned char>(c))) {
            num += c;
            if (num.size() > 9) {
                return unexpected(bad("ISO-8601 duration '" + str::quotable(t, 40) + "' is too large"));
            }
            continue;
        }
        if (num.empty()) {
            return unexpected(bad("invalid ISO-8601 duration '" + str::quotable(t, 40) + "'"));
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
            return unexpected(bad("invalid ISO-8601 duration '" + str::quotable(t, 40) + "' (unit '" +
                                  str::quotable(std::string(1, c), 8) + "')"));
        }
        any = true;
        if (total > kMaxSleep) {
            return unexpected(bad("poll sleep '" + str::quotable(t, 40) + "' is longer than 30 days"));
        }
    }
    if (!any || !num.empty()) {
        return unexpected(bad("invalid ISO-8601 duration '" + str::quotable(t, 40) + "'"));
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

// Nesting depth of a JSON text, counted outside strings (a linear scan before the parse).
int jsonDepth(const std::string& body)
{
    int depth = 0;
    int deepest = 0;
    bool inString = false;
    for (std::size_t i = 0; i < body.size(); ++i) {
        const char c = body[i];
        if (inString) {
            if (c == '\\') {
                ++i;
            } else if (c == '"') {
                inString = false;
            }
        } else if (c == '"') {
            inString = true;
        } else if (c == '{' || c == '[') {
            deepest = std::max(deepest, ++depth);
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    return deepest;
}

Expected<json> parseObject(const std::string& body, const char* what)
{
    if (jsonDepth(body) > kMaxJsonDepth) {
        return unexpected(bad(std::string(what) + ": the server sent JSON nested deeper than " +
                              std::to_string(kMaxJsonDepth) + " levels; refused"));
    }
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        const std::string head = str::trim(body.substr(0, 64));
        if (!head.empty() && head[0] == '<') {
            return unexpected(bad(std::string(what) + ": the server sent HTML, not JSON (\"" + str::quotable(head, 40) +
                                  "\"): a proxy's error page?"));
        }
        return unexpected(bad(std::string(what) + ": malformed JSON from the server"));
    }
    if (!j.is_object()) {
        return unexpected(bad(std::string(what) + ": the server sent JSON that is not an object"));
    }
    return j;
}

// DdiDeployment.HandlingType (hawkbit-ddi-api .../json/model/DdiDeployment.java).
Expected<std::string> handlingMode(const json& dep, const char* field, const char* what)
{
    auto it = dep.find(field);
    if (it == dep.end() || it->is_null()) {
        return unexpected(bad(std::string(what) + ": 'deployment." + field + "' is missing"));
    }
    if (!it->is_string()) {
        return unexpected(bad(std::string(what) + ": 'deployment." + field + "' is not a string"));
    }
    const std::string v = it->get<std::string>();
    if (v == "skip" || v == "attempt" || v == "forced") {
        return v;
    }
    return unexpected(bad(std::string(what) + ": 'deployment." + field + "' is '" + str::quotable(v, 40) +
                          "', expected skip, attempt or forced"));
}

bool isHex(const std::string& s, std::size_t len)
{
    return s.size() == len && std::all_of(s.begin(), s.end(), [](unsigned char ch) { return std::isxdigit(ch); });
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
            return unexpected(
                bad("poll sleep '" + str::quotable(text, 40) + "' is neither HH:MM:SS nor an ISO-8601 duration"));
        }
        std::int64_t h = std::stoll(parts[0]);
        std::int64_t m = std::stoll(parts[1]);
        std::int64_t s = std::stoll(parts[2]);
        if (m > 59 || s > 59) {
            return unexpected(bad("poll sleep '" + str::quotable(text, 40) + "' has minutes or seconds above 59"));
        }
        secs = h * 3600 + m * 60 + s;
    }
    if (secs < 1) {
        return unexpected(bad("poll sleep '" + str::quotable(text, 40) + "' is zero"));
    }
    if (secs > kMaxSleep) {
        return unexpected(bad("poll sleep '" + str::quotable(text, 40) + "' is longer than 30 days"));
    }
    return std::chrono::seconds(secs);
}

Expected<Origin> originOf(const std::string& url)
{
    curl::Url u{curl_url()};
    if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
        return unexpected(bad("'" + str::quotable(url, 120) + "' is not a valid URL"));
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
        return unexpected(bad("'" + str::quotable(url, 120) + "' has no host"));
    }
    return o;
}

Status checkLink(const std::string& hrefText, const Origin& server, const LinkPolicy& policy, bool artifact)
{
    auto o = originOf(hrefText);
    if (!o) {
        return unexpected(bad("the server sent an invalid link: " + o.error().message));
    }
    const std::string shown = str::quotable(hrefText, 120);
    if (o->scheme == "http") {
        if (!artifact || !policy.allowHttp) {
            return unexpected(bad("the server sent a link that is not https (" + shown + "); refused" +
                                  (artifact ? " (cloud.json allow_http lets artifacts come over plain http)" : "")));
        }
    } else if (o->scheme != "https") {
        return unexpected(bad("the server sent a link with the scheme '" + str::quotable(o->scheme, 20) + "' (" +
                              shown + "); only https is followed"));
    }
    if (*o != server && !(o->scheme == "http" && o->host == server.host && policy.allowHttp && artifact)) {
        if (!artifact || !policy.allowOtherHosts) {
            return unexpected(bad("the server sent a link to another host (" + str::quotable(o->host, 80) + ":" +
                                  std::to_string(o->port) +
                                  "); refused, the device only talks to " + server.host + ":" +
                                  std::to_string(server.port) +
                                  (artifact ? " (cloud.json allow_other_hosts lets artifacts come from another host)"
                                            : "")));
        }
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

Expected<std::string> chooseArtifactLink(const json& links)
{
    if (!links.is_object()) {
        return unexpected(Error{ErrorCode::NotFound, "no 'download' or 'download-http' link (no _links)"});
    }
    // "download" (an operator's https rel) first, then a default hawkBit's "download-http".
    for (const char* rel : {"download", "download-http"}) {
        const std::string h = href(links, rel);
        if (!h.empty()) {
            return h;
        }
    }
    return unexpected(Error{ErrorCode::NotFound, "no 'download' or 'download-http' link"});
}

std::string busJson(const json& j)
{
    return j.dump(-1, ' ', true, json::error_handler_t::replace);
}

namespace {

// A required string member of a chunk (DdiChunk: part, version and name are @NotNull).
Expected<std::string> chunkString(const json& c, const char* key, const std::string& where)
{
    auto it = c.find(key);
    if (it == c.end() || !it->is_string()) {
        return unexpected(bad(where + ": '" + key + "' is missing or not a string"));
    }
    return it->get<std::string>();
}

Expected<json> normaliseArtifact(const json& art, const std::string& where, const Origin& server,
                                 const LinkPolicy& policy)
{
    if (!art.is_object()) {
        return unexpected(bad(where + ": an artifact is not an object"));
    }
    json oa;
    const std::string filename = str(art, "filename");
    const std::string label = str::quotable(filename);
    // The name travels as a D-Bus string of its own (DownloadFinished): text D-Bus carries, and no path.
    if (!isArtifactFileName(filename) || str::sanitizeUtf8(filename) != filename) {
        return unexpected(bad(where + ": artifact filename '" + label + "' is not a safe file name"));
    }
    oa["filename"] = filename;
    const std::string at = where + ", artifact '" + label + "'";
    auto size = art.find("size");
    if (size == art.end() || !size->is_number_unsigned()) {
        return unexpected(bad(at + ": no valid 'size'"));
    }
    oa["size"] = size->get<std::uint64_t>();
    auto hashes = art.find("hashes");
    if (hashes == art.end() || !hashes->is_object()) {
        return unexpected(bad(at + ": no 'hashes'"));
    }
    // DdiArtifactHash: sha1 and md5 always, sha256 for artifacts uploaded since hawkBit 0.3.
    const std::string sha256 = str(*hashes, "sha256");
    if (!isHex(sha256, 64)) {
        return unexpected(bad(at + ": " +
                              (sha256.empty() ? std::string("no sha256 hash (upload the artifact again: hawkBit "
                                                            "computes SHA-256 for new uploads)")
                                              : "sha256 '" + str::quotable(sha256, 70) +
                                                    "' is not 64 hexadecimal digits")));
    }
    const std::string sha1 = str(*hashes, "sha1");
    const std::string md5 = str(*hashes, "md5");
    if (!sha1.empty() && !isHex(sha1, 40)) {
        return unexpected(bad(at + ": sha1 '" + str::quotable(sha1, 50) + "' is not 40 hexadecimal digits"));
    }
    if (!md5.empty() && !isHex(md5, 32)) {
        return unexpected(bad(at + ": md5 '" + str::quotable(md5, 40) + "' is not 32 hexadecimal digits"));
    }
    std::string lower = sha256;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    oa["sha256"] = lower;
    oa["sha1"] = sha1;
    oa["md5"] = md5;
    auto links = art.find("_links");
    auto url = chooseArtifactLink(links == art.end() ? json() : *links);
    if (!url) {
        return unexpected(bad(at + ": " + url.error().message + " to download it from"));
    }
    if (auto st = checkLink(*url, server, policy, true); !st) {
        return unexpected(bad(at + ": " + st.error().message));
    }
    oa["url"] = *url;
    return oa;
}

// deploymentBase, installedBase and confirmationBase share one shape; only the
// member holding the deployment is named differently.
Expected<json> normalise(const std::string& body, const Origin& server, const LinkPolicy& policy, const char* what,
                         const char* member)
{
    auto j = parseObject(body, what);
    if (!j) {
        return unexpected(j.error());
    }
    json out;
    auto id = j->find("id");
    if (id == j->end() || !(id->is_string() || id->is_number_unsigned())) {
        return unexpected(bad(std::string(what) + ": 'id' is missing or not a string"));
    }
    const std::string actionId = id->is_string() ? id->get<std::string>() : std::to_string(id->get<std::uint64_t>());
    if (!str::isSafeName(actionId, 64)) {
        return unexpected(bad(std::string(what) + ": action id '" + str::quotable(actionId, 40) + "' is not valid"));
    }
    out["action_id"] = actionId;
    auto dep = j->find(member);
    if (dep == j->end() || !dep->is_object()) {
        return unexpected(bad(std::string(what) + ": '" + member + "' is missing or not an object"));
    }
    auto download = handlingMode(*dep, "download", what);
    if (!download) {
        return unexpected(download.error());
    }
    auto update = handlingMode(*dep, "update", what);
    if (!update) {
        return unexpected(update.error());
    }
    out["download"] = *download;
    out["update"] = *update;
    // DdiDeployment.DdiMaintenanceWindowStatus: absent when the action has no maintenance schedule.
    auto mw = dep->find("maintenanceWindow");
    if (mw != dep->end() && !mw->is_null()) {
        if (!mw->is_string() || (*mw != "available" && *mw != "unavailable")) {
            return unexpected(bad(std::string(what) + ": 'maintenanceWindow' must be available or unavailable"));
        }
        out["maintenance_window"] = *mw;
    } else {
        out["maintenance_window"] = nullptr;
    }
    // DdiRootController calculateUpdateType: a closed window is update "skip" WITH
    // maintenanceWindow "unavailable"; only "skip" without a window is a
    // download-only action.
    out["download_only"] = *update == "skip" && out["maintenance_window"].is_null();
    out["download_allowed"] = *download != "skip";
    out["install_allowed"] = *update != "skip" && out["maintenance_window"] != "unavailable";
    auto chunks = dep->find("chunks");
    if (chunks == dep->end() || !chunks->is_array()) {
        return unexpected(bad(std::string(what) + ": 'deployment.chunks' is missing or not an array"));
    }
    json outChunks = json::array();
    bool completeAppSet = false;
    std::set<std::string> seenChunks;
    std::size_t index = 0;
    for (const auto& c : *chunks) {
        const std::string where = std::string(what) + ": chunk " + std::to_string(index++);
        if (!c.is_object()) {
            return unexpected(bad(where + " is not an object"));
        }
        json oc;
        for (const char* key : {"part", "name", "version"}) {
            auto v = chunkString(c, key, where);
            if (!v) {
                return unexpected(v.error());
            }
            oc[key] = *v;
        }
        if (oc["part"].get<std::string>().empty()) {
            return unexpected(bad(where + ": 'part' is empty"));
        }
        const std::string chunkKey = oc["part"].get<std::string>() + "\n" + oc["name"].get<std::string>() + "\n" +
                                     oc["version"].get<std::string>();
        if (!seenChunks.insert(chunkKey).second) {
            return unexpected(bad(where + ": the chunk " + str::quotable(oc["part"].get<std::string>(), 40) + " " +
                                  str::quotable(oc["name"].get<std::string>(), 40) + " " +
                                  str::quotable(oc["version"].get<std::string>(), 40) + " appears twice"));
        }
        json meta = json::object();
        if (auto m = c.find("metadata"); m != c.end() && !m->is_null()) {
            if (!m->is_array()) {
                return unexpected(bad(where + ": metadata is not an array"));
            }
            for (const auto& kv : *m) {
                if (!kv.is_object() || !kv.contains("key") || !kv["key"].is_string()) {
                    return unexpected(bad(where + ": metadata entry without a string 'key'"));
                }
                meta[kv["key"].get<std::string>()] = str(kv, "value");
            }
        }
        // Contract C1: the server says the deployment names every app the device should run.
        if (meta.value("mbl.complete-app-set", "") == "true") {
            completeAppSet = true;
        }
        oc["metadata"] = meta;
        json arts = json::array();
        std::set<std::string> names;
        if (auto a = c.find("artifacts"); a != c.end() && !a->is_null()) {
            if (!a->is_array()) {
                return unexpected(bad(where + ": artifacts is not an array"));
            }
            for (const auto& art : *a) {
                auto oa = normaliseArtifact(art, where, server, policy);
                if (!oa) {
                    return unexpected(oa.error());
                }
                if (!names.insert((*oa)["filename"].get<std::string>()).second) {
                    return unexpected(bad(where + ": the artifact '" +
                                          str::quotable((*oa)["filename"].get<std::string>()) + "' appears twice"));
                }
                arts.push_back(std::move(oa).value());
            }
        }
        oc["artifacts"] = arts;
        outChunks.push_back(oc);
    }
    out["complete_app_set"] = completeAppSet;
    out["chunks"] = outChunks;
    return out;
}

} // namespace

Expected<json> normaliseDeployment(const std::string& body, const Origin& server, const LinkPolicy& policy)
{
    return normalise(body, server, policy, "deploymentBase", "deployment");
}

Expected<json> normaliseConfirmation(const std::string& body, const Origin& server, const LinkPolicy& policy)
{
    return normalise(body, server, policy, "confirmationBase", "confirmation");
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

Feedback cancelAnswer(Feedback f)
{
    if (f.execution == "canceled" && f.result != "failure") {
        f.execution = "closed";
        f.result = "success";
    }
    return f;
}

namespace {

// JpaControllerManagement PATTERN: [a-zA-Z0-9_\\-!@#$%^&*()+=\\[\\]{}|;:'\",.<>/\\\\?\\s]*
bool attributeChar(unsigned char c)
{
    if (std::isalnum(c)) {
        return true;
    }
    static const std::string allowed = "_-!@#$%^&*()+=[]{}|;:'\",.<>/\\? \t\n\v\f\r";
    return c != 0 && allowed.find(static_cast<char>(c)) != std::string::npos;
}

Status attributeText(const std::string& what, const std::string& text, const std::string& key)
{
    for (unsigned char c : text) {
        if (!attributeChar(c)) {
            return unexpected(bad(what + " of attribute '" + str::quotable(key, 40) + "' has a character the server "
                                  "refuses ('" + str::quotable(std::string(1, static_cast<char>(c)), 8) +
                                  "'): hawkBit takes letters, digits, white space and _-!@#$%^&*()+=[]{}|;:'\",.<>/\\?"));
        }
    }
    return {};
}

} // namespace

Status validateAttribute(const std::string& k, const std::string& v)
{
    if (k.empty() || k.size() > kMaxAttributeLength) {
        return unexpected(bad("attribute key '" + str::quotable(k, 40) + "' must have 1 to 128 characters"));
    }
    if (v.size() > kMaxAttributeLength) {
        return unexpected(bad("value of attribute '" + str::quotable(k, 40) + "' is longer than 128 characters"));
    }
    if (auto st = attributeText("the key", k, k); !st) {
        return st;
    }
    return attributeText("the value", v, k);
}

Status validateAttributes(const std::map<std::string, std::string>& attrs)
{
    if (attrs.size() > kMaxAttributes) {
        return unexpected(bad("the server accepts at most 100 attributes; this would make " +
                              std::to_string(attrs.size())));
    }
    for (const auto& [k, v] : attrs) {
        if (auto st = validateAttribute(k, v); !st) {
            return st;
        }
    }
    return {};
}

std::string configDataBody(const std::map<std::string, std::string>& attrs, const std::string& mode)
{
    json data = json::object();
    for (const auto& [k, v] : attrs) {
        data[k] = v;
    }
    return json{{"mode", mode}, {"data", data}}.dump();
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

std::chrono::milliseconds jittered(std::chrono::milliseconds base, unsigned percent, std::mt19937& rng)
{
    if (percent == 0 || base.count() <= 0) {
        return base;
    }
    const std::int64_t span = base.count() * static_cast<std::int64_t>(std::min(percent, 100u)) / 100;
    std::uniform_int_distribution<std::int64_t> dist(-span, span);
    return std::chrono::milliseconds(std::max<std::int64_t>(0, base.count() + dist(rng)));
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
