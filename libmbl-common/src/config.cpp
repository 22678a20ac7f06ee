// SPDX-License-Identifier: Apache-2.0
#include "mbl/config.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <algorithm>
#include <functional>
#include <limits>

namespace mbl {

namespace {

// One step of a key path: a member name, or a list index.
struct Step {
    std::string member;
    std::size_t index = 0;
    bool isIndex = false;
};

// "slots[1].device" -> slots, [1], device. Nothing sensible (empty member,
// bad index) yields no steps: such a key is never found.
std::vector<Step> stepsOf(const std::string& key)
{
    std::vector<Step> out;
    std::string cur;
    for (std::size_t i = 0; i < key.size(); ++i) {
        const char c = key[i];
        if (c == '.' || c == '[') {
            if (!cur.empty()) {
                out.push_back(Step{cur, 0, false});
                cur.clear();
            } else if (c == '.' && (out.empty() || !out.back().isIndex)) {
                return {};
            }
            if (c == '[') {
                const auto close = key.find(']', i);
                if (close == std::string::npos || close == i + 1) {
                    return {};
                }
                const std::string digits = key.substr(i + 1, close - i - 1);
                if (!std::all_of(digits.begin(), digits.end(), [](char d) { return d >= '0' && d <= '9'; }) ||
                    digits.size() > 9) {
                    return {};
                }
                out.push_back(Step{"", static_cast<std::size_t>(std::stoul(digits)), true});
                i = close;
            }
            continue;
        }
        cur += c;
    }
    if (!cur.empty()) {
        out.push_back(Step{cur, 0, false});
    }
    return out;
}

// The path a key sits under ("slots[1]" for "slots[1].devcie", "" at the top).
std::string parentOf(const std::string& path)
{
    const auto at = path.find_last_of(".[");
    return at == std::string::npos ? std::string() : path.substr(0, at);
}

// The last step of a path as a person reads it ("devcie", "[2]").
std::string lastOf(const std::string& path)
{
    const auto at = path.find_last_of(".[");
    if (at == std::string::npos) {
        return path;
    }
    return path[at] == '.' ? path.substr(at + 1) : path.substr(at);
}

} // namespace

Expected<Config> Config::parse(const std::string& text, const std::string& origin)
{
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
        return unexpected(ErrorCode::InvalidArgument, origin + ": not valid JSON");
    }
    if (!doc.is_object()) {
        return unexpected(ErrorCode::InvalidArgument, origin + ": top level must be a JSON object");
    }
    return Config{std::move(doc), origin};
}

Expected<Config> Config::parseDocument(const std::string& text, const std::string& origin)
{
    auto c = parse(text, origin);
    if (c && c->json().empty()) {
        return unexpected(ErrorCode::InvalidArgument,
                          origin + ": the document is empty (name the settings to change; nothing was changed)");
    }
    return c;
}

Expected<Config> Config::load(const std::string& path, bool optional)
{
    if (optional && !fs::exists(path)) {
        return Config{nlohmann::json::object(), path};
    }
    auto text = fs::readFile(path, 1u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    return parse(*text, path);
}

const nlohmann::json* Config::find(const std::string& key) const
{
    const auto steps = stepsOf(key);
    if (steps.empty()) {
        return nullptr;
    }
    const nlohmann::json* cur = &doc_;
    for (const auto& s : steps) {
        if (s.isIndex) {
            if (!cur->is_array() || s.index >= cur->size()) {
                return nullptr;
            }
            cur = &(*cur)[s.index];
            continue;
        }
        if (!cur->is_object()) {
            return nullptr;
        }
        auto it = cur->find(s.member);
        if (it == cur->end()) {
            return nullptr;
        }
        cur = &*it;
    }
    return cur;
}

void Config::record(const std::string& key, bool whole) const
{
    if (whole) {
        read_.insert(key);
    }
    touched_.insert(key);
    for (std::size_t i = 0; i < key.size(); ++i) {
        if (key[i] == '.' || key[i] == '[') {
            touched_.insert(key.substr(0, i));
        }
    }
}

bool Config::has(const std::string& key) const
{
    return find(key) != nullptr;
}

Error Config::typeError(const std::string& key, const std::string& expected) const
{
    return Error{ErrorCode::InvalidArgument, origin_ + ": key '" + key + "' must be " + expected};
}

Expected<std::string> Config::getString(const std::string& key, const std::string& fallback) const
{
    record(key, true);
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_string()) {
        return unexpected(typeError(key, "a string"));
    }
    return v->get<std::string>();
}

Expected<std::string> Config::getEnum(const std::string& key, const std::string& fallback,
                                      const std::vector<std::string>& allowed) const
{
    std::string list;
    for (const auto& a : allowed) {
        list += (list.empty() ? "" : ", ") + a;
    }
    auto v = getString(key, fallback);
    if (!v) {
        return unexpected(typeError(key, "one of " + list));
    }
    if (std::find(allowed.begin(), allowed.end(), *v) == allowed.end()) {
        return unexpected(typeError(key, "one of " + list + " (not '" + str::quotable(*v) + "')"));
    }
    return v;
}

Expected<bool> Config::getBool(const std::string& key, bool fallback) const
{
    record(key, true);
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_boolean()) {
        return unexpected(typeError(key, "true or false"));
    }
    return v->get<bool>();
}

Expected<std::int64_t> Config::getInt(const std::string& key, std::int64_t fallback, std::int64_t min,
                                      std::int64_t max) const
{
    record(key, true);
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_number_integer()) {
        return unexpected(typeError(key, "an integer"));
    }
    // A number beyond int64 (nlohmann keeps it unsigned) is out of every range.
    const bool huge = v->is_number_unsigned() &&
                      v->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    const std::int64_t n = huge ? 0 : v->get<std::int64_t>();
    if (huge || n < min || n > max) {
        return unexpected(typeError(key, "between " + std::to_string(min) + " and " + std::to_string(max) +
                                             " (not " + v->dump() + ")"));
    }
    return n;
}

Expected<std::vector<std::string>> Config::getStringList(const std::string& key,
                                                         const std::vector<std::string>& fallback) const
{
    record(key, true);
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_array() || !std::all_of(v->begin(), v->end(), [](const auto& e) { return e.is_string(); })) {
        return unexpected(typeError(key, "a list of strings"));
    }
    return v->get<std::vector<std::string>>();
}

Expected<std::size_t> Config::getListSize(const std::string& key) const
{
    record(key, false);
    const auto* v = find(key);
    if (v == nullptr) {
        return std::size_t{0};
    }
    if (!v->is_array()) {
        return unexpected(typeError(key, "a list"));
    }
    for (std::size_t i = 0; i < v->size(); ++i) {
        if (!(*v)[i].is_object()) {
            return unexpected(typeError(key + "[" + std::to_string(i) + "]", "an object"));
        }
    }
    return v->size();
}

Expected<nlohmann::json> Config::getObject(const std::string& key, const nlohmann::json& fallback) const
{
    record(key, true);
    const auto* v = find(key);
    if (v == nullptr) {
        return fallback;
    }
    if (!v->is_object()) {
        return unexpected(typeError(key, "an object"));
    }
    return *v;
}

Status Config::rejectUnreadKeys() const
{
    auto unknown = [&](const std::string& path) -> Status {
        const std::string parent = parentOf(path);
        std::set<std::string> known;
        for (const auto* set : {&read_, &touched_}) {
            for (const auto& p : *set) {
                if (!p.empty() && parentOf(p) == parent && p != path && lastOf(p)[0] != '[') {
                    known.insert(lastOf(p));
                }
            }
        }
        std::string hint;
        for (const auto& k : known) {
            hint += (hint.empty() ? " (expected one of: " : ", ") + k;
        }
        if (!hint.empty()) {
            hint += ")";
        }
        return unexpected(ErrorCode::InvalidArgument, origin_ + ": unknown key '" + str::quotable(path) + "'" + hint);
    };
    // Depth first, in document order: the first key present that nobody read.
    std::function<Status(const nlohmann::json&, const std::string&)> walk;
    walk = [&](const nlohmann::json& node, const std::string& path) -> Status {
        if (!path.empty() && read_.count(path) != 0) {
            return {};
        }
        if (!path.empty() && touched_.count(path) == 0) {
            return unknown(path);
        }
        if (node.is_object()) {
            for (const auto& item : node.items()) {
                if (auto st = walk(item.value(), path.empty() ? item.key() : path + "." + item.key()); !st) {
                    return st;
                }
            }
            return {};
        }
        // Whether keys under `path` were asked for as list elements ("slots[0]...").
        auto readAsList = [&] {
            for (const auto& p : touched_) {
                if (p.size() > path.size() && p.compare(0, path.size(), path) == 0 && p[path.size()] == '[') {
                    return true;
                }
            }
            return false;
        };
        if (node.is_array() && !node.empty() && !path.empty() && !readAsList()) {
            return unexpected(typeError(path, "an object"));
        }
        if (node.is_array()) {
            for (std::size_t i = 0; i < node.size(); ++i) {
                if (auto st = walk(node[i], path + "[" + std::to_string(i) + "]"); !st) {
                    return st;
                }
            }
            return {};
        }
        // A value reached only as a prefix of keys that were asked for (a
        // section given as a number, say): not unknown, of the wrong type.
        return unexpected(typeError(path, readAsList() ? "a list of objects" : "an object"));
    };
    return walk(doc_, "");
}

Status Config::rejectUnknownKeys(const std::vector<std::string>& known) const
{
    for (const auto& item : doc_.items()) {
        if (std::find(known.begin(), known.end(), item.key()) == known.end()) {
            return unexpected(ErrorCode::InvalidArgument, origin_ + ": unknown key '" + item.key() + "'");
        }
    }
    return {};
}

} // namespace mbl
