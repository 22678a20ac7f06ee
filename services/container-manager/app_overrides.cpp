// SPDX-License-Identifier: Apache-2.0
#include "app_overrides.h"

#include "mbl/log.h"
#include "mbl/strings.h"

#include <algorithm>

namespace mbl::containers {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxDocument = 256u << 10;
constexpr std::size_t kMaxEnv = 256;
constexpr std::size_t kMaxEnvBytes = 32u << 10;

Error invalid(const std::string& m)
{
    return Error{ErrorCode::InvalidArgument, "settings: " + m};
}

Status onlyKeys(const json& j, const std::string& where, std::initializer_list<const char*> keys)
{
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return it.key() == k; })) {
            return unexpected(invalid("unknown key '" + it.key() + "' in " + where));
        }
    }
    return {};
}

// A JSON integer in [min, max] (no fractions, no strings, no negatives where min >= 0).
template <typename T>
Expected<T> integer(const json& v, const std::string& what, std::uint64_t min, std::uint64_t max,
                    const std::string& maxWhy)
{
    if (!v.is_number_integer()) {
        return unexpected(invalid(what + " must be an integer"));
    }
    if (v.is_number_unsigned() ? false : v.get<std::int64_t>() < 0) {
        return unexpected(invalid(what + " must not be negative"));
    }
    const std::uint64_t n = v.get<std::uint64_t>();
    if (n < min) {
        return unexpected(invalid(what + " must be at least " + std::to_string(min)));
    }
    if (n > max) {
        return unexpected(invalid(what + " " + std::to_string(n) + " is above " + std::to_string(max) + maxWhy));
    }
    return static_cast<T>(n);
}

// No NUL, and nothing sd-bus refuses (a noncharacter such as U+FFFE that a JSON
// escape can carry): GetSettings returns the document as a D-Bus string, and one
// such value made every later GetSettings fail. Found by tests/fuzz/fuzz_app_config.
bool cleanText(const std::string& s)
{
    return s.find('\0') == std::string::npos && str::sanitizeUtf8(s) == s;
}

} // namespace

json Overrides::toJson() const
{
    json doc = json::object();
    if (logLevel) {
        doc["log_level"] = *logLevel;
    }
    if (!apps.empty()) {
        json a = json::object();
        for (const auto& [name, o] : apps) {
            json e = json::object();
            if (o.env) {
                e["env"] = json::object();
                for (const auto& [k, v] : *o.env) {
                    e["env"][k] = v;
                }
            }
            if (o.memoryLimit) {
                e["memory_limit"] = *o.memoryLimit;
            }
            if (o.pidsLimit) {
                e["pids_limit"] = *o.pidsLimit;
            }
            if (o.cpuPercent) {
                e["cpu_percent"] = *o.cpuPercent;
            }
            a[name] = e;
        }
        doc["apps"] = a;
    }
    return doc;
}

AppOverride Overrides::forApp(const std::string& name) const
{
    auto it = apps.find(name);
    return it == apps.end() ? AppOverride{} : it->second;
}

Expected<Overrides> parseOverrides(const std::string& text, const DevicePolicy& policy)
{
    if (text.size() > kMaxDocument) {
        return unexpected(invalid("the document is larger than " + std::to_string(kMaxDocument) + " bytes"));
    }
    json doc;
    try {
        doc = str::trim(text).empty() ? json::object() : json::parse(text);
    } catch (const std::exception& e) {
        return unexpected(invalid(std::string("not valid JSON: ") + e.what()));
    }
    if (!doc.is_object()) {
        return unexpected(invalid("the document must be a JSON object"));
    }
    if (auto st = onlyKeys(doc, "the document (known: log_level, apps)", {"log_level", "apps"}); !st) {
        return unexpected(st.error());
    }
    Overrides out;
    if (doc.contains("log_level")) {
        const auto& l = doc["log_level"];
        log::Level parsed;
        if (!l.is_string() || !log::parseLevel(l.get<std::string>(), parsed)) {
            return unexpected(invalid("log_level must be one of \"debug\", \"info\", \"notice\", \"warning\", \"error\""));
        }
        out.logLevel = l.get<std::string>();
    }
    if (doc.contains("apps")) {
        const auto& apps = doc["apps"];
        if (!apps.is_object()) {
            return unexpected(invalid("apps must be an object {\"<app name>\": {...}}"));
        }
        for (auto it = apps.begin(); it != apps.end(); ++it) {
            const std::string& name = it.key();
            if (!str::isSafeName(name, 48)) {
                return unexpected(invalid("app name '" + name +
                                          "' is not a safe name ([A-Za-z0-9][A-Za-z0-9._-]*, at most 48 characters)"));
            }
            const json& a = it.value();
            const std::string where = "apps." + name;
            if (!a.is_object()) {
                return unexpected(invalid(where + " must be an object"));
            }
            if (auto st = onlyKeys(a, where + " (known: env, memory_limit, pids_limit, cpu_percent)",
                                   {"env", "memory_limit", "pids_limit", "cpu_percent"});
                !st) {
                return unexpected(st.error());
            }
            AppOverride o;
            if (a.contains("env")) {
                const json& e = a["env"];
                if (!e.is_object()) {
                    return unexpected(invalid(where + ".env must be an object {\"NAME\": \"value\"}"));
                }
                if (e.size() > kMaxEnv) {
                    return unexpected(invalid(where + ".env has more than " + std::to_string(kMaxEnv) + " entries"));
                }
                std::map<std::string, std::string> env;
                std::size_t bytes = 0;
                for (auto v = e.begin(); v != e.end(); ++v) {
                    const std::string& k = v.key();
                    if (k.empty() || k.find('=') != std::string::npos || !cleanText(k)) {
                        return unexpected(invalid(where + ".env: '" + k + "' is not a variable name"));
                    }
                    if (str::startsWith(k, "MBL_APP_")) {
                        return unexpected(invalid(where + ".env: " + k + " is set by the manager"));
                    }
                    if (!v.value().is_string()) {
                        return unexpected(invalid(where + ".env." + k + " must be a string"));
                    }
                    const std::string val = v.value().get<std::string>();
                    if (!cleanText(val)) {
                        return unexpected(invalid(where + ".env." + k +
                                                  " contains a NUL character or a code point D-Bus cannot carry"));
                    }
                    bytes += k.size() + val.size() + 2;
                    env[k] = val;
                }
                if (bytes > kMaxEnvBytes) {
                    return unexpected(invalid(where + ".env is larger than " + std::to_string(kMaxEnvBytes) + " bytes"));
                }
                o.env = std::move(env);
            }
            const std::string byPolicy = " (the device policy's limit in containers.json)";
            if (a.contains("memory_limit")) {
                auto v = integer<std::uint64_t>(a["memory_limit"], where + ".memory_limit", 4u << 20,
                                                policy.memoryCeiling(), byPolicy);
                if (!v) {
                    return unexpected(v.error());
                }
                o.memoryLimit = *v;
            }
            if (a.contains("pids_limit")) {
                auto v = integer<std::int64_t>(a["pids_limit"], where + ".pids_limit", 1,
                                               static_cast<std::uint64_t>(policy.maxPids), byPolicy);
                if (!v) {
                    return unexpected(v.error());
                }
                o.pidsLimit = *v;
            }
            if (a.contains("cpu_percent")) {
                auto v = integer<std::uint32_t>(a["cpu_percent"], where + ".cpu_percent", 1, policy.cpuCeiling(),
                                                byPolicy);
                if (!v) {
                    return unexpected(v.error());
                }
                o.cpuPercent = *v;
            }
            out.apps[name] = std::move(o);
        }
    }
    return out;
}

AppSettings applyOverride(AppSettings s, const AppOverride& o)
{
    if (o.env) {
        for (const auto& [k, v] : *o.env) {
            const std::string prefix = k + "=";
            s.env.erase(std::remove_if(s.env.begin(), s.env.end(),
                                       [&](const std::string& e) { return str::startsWith(e, prefix); }),
                        s.env.end());
            s.env.push_back(prefix + v);
        }
    }
    if (o.memoryLimit) {
        s.memoryBytes = *o.memoryLimit;
    }
    if (o.pidsLimit) {
        s.pidsMax = *o.pidsLimit;
    }
    if (o.cpuPercent) {
        s.cpuPercent = *o.cpuPercent;
    }
    return s;
}

} // namespace mbl::containers
