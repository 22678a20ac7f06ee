// SPDX-License-Identifier: Apache-2.0
// The app settings schema (contract C4) and its checks against the device
// policy. Every key at every depth is known (an unknown or misspelt one is
// refused), every value has one type and a range, and every error names the
// setting by its path ("setting 'ports[1].host' ..."), quoting at most a few
// dozen characters of what it was given.

#include "app_config.h"

#include "mbl/strings.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <set>
#include <type_traits>

namespace mbl::containers {

using nlohmann::json;

namespace {

Error invalid(const std::string& m)
{
    return Error{ErrorCode::InvalidArgument, m};
}
Error denied(const std::string& m)
{
    return Error{ErrorCode::AccessDenied, m + " (not allowed by the device policy in containers.json)"};
}

bool contains(const std::vector<std::string>& v, const std::string& s)
{
    return std::find(v.begin(), v.end(), s) != v.end();
}

std::string q(const std::string& s)
{
    return str::quotable(s, 64);
}

// The closest known key, for "did you mean": at most two edits away.
std::string suggestion(const std::string& key, const std::set<std::string>& known)
{
    std::string best;
    std::size_t bestDist = 3;
    for (const auto& k : known) {
        const std::size_t n = key.size(), m = k.size();
        if (n > 64 || (n > m ? n - m : m - n) >= bestDist) {
            continue;
        }
        std::vector<std::size_t> prev(m + 1), cur(m + 1);
        for (std::size_t j = 0; j <= m; ++j) {
            prev[j] = j;
        }
        for (std::size_t i = 1; i <= n; ++i) {
            cur[0] = i;
            for (std::size_t j = 1; j <= m; ++j) {
                cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (key[i - 1] == k[j - 1] ? 0 : 1)});
            }
            std::swap(prev, cur);
        }
        if (prev[m] < bestDist) {
            bestDist = prev[m];
            best = k;
        }
    }
    return best.empty() ? std::string() : " (did you mean '" + best + "'?)";
}

Status onlyKnown(const json& obj, const std::string& path, const std::set<std::string>& known)
{
    for (auto it = obj.begin(); it != obj.end(); ++it) {
        if (known.count(it.key()) == 0) {
            return unexpected(invalid("unknown setting '" + (path.empty() ? "" : path + ".") + q(it.key()) + "'" +
                                      suggestion(it.key(), known)));
        }
    }
    return {};
}

std::string at(const std::string& path, const std::string& key)
{
    return path.empty() ? key : path + "." + key;
}

// A setting of type T at obj[key], `fallback` when absent or null. The JSON type
// must match exactly: nlohmann's get<T>() would turn 1e100 into an unsigned
// (undefined behaviour), 4294967396 into 100 and -1 into 2^64-1.
template <typename T>
Expected<T> get(const json& obj, const std::string& path, const char* key, T fallback)
{
    if (!obj.contains(key) || obj[key].is_null()) {
        return fallback;
    }
    const json& v = obj[key];
    const auto wrong = [&](const std::string& what) {
        return unexpected(invalid("setting '" + at(path, key) + "' must be " + what));
    };
    if constexpr (std::is_same_v<T, std::string>) {
        if (!v.is_string()) {
            return wrong("a string");
        }
        return v.get<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
        if (!v.is_boolean()) {
            return wrong("true or false");
        }
        return v.get<bool>();
    } else {
        static_assert(std::is_integral_v<T>);
        const std::string range = "an integer from " + std::to_string(std::numeric_limits<T>::min()) + " to " +
                                  std::to_string(std::numeric_limits<T>::max());
        if (!v.is_number_integer()) {
            return wrong(range);
        }
        if (v.is_number_unsigned()) {
            const std::uint64_t u = v.get<std::uint64_t>();
            if constexpr (!std::is_same_v<T, std::uint64_t>) {
                if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
                    return wrong(range);
                }
            }
            return static_cast<T>(u);
        }
        const std::int64_t n = v.get<std::int64_t>();
        if constexpr (std::is_unsigned_v<T>) {
            if (n < 0 || static_cast<std::uint64_t>(n) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
                return wrong(range);
            }
        } else if constexpr (sizeof(T) < sizeof(std::int64_t)) {
            if (n < std::numeric_limits<T>::min() || n > std::numeric_limits<T>::max()) {
                return wrong(range);
            }
        }
        return static_cast<T>(n);
    }
}

Expected<std::vector<std::string>> stringList(const json& obj, const std::string& path, const char* key,
                                              std::size_t maxItems = 256)
{
    if (!obj.contains(key) || obj[key].is_null()) {
        return std::vector<std::string>{};
    }
    const json& l = obj[key];
    if (!l.is_array() || l.size() > maxItems) {
        return unexpected(invalid("setting '" + at(path, key) + "' must be a list of at most " +
                                  std::to_string(maxItems) + " strings"));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < l.size(); ++i) {
        if (!l[i].is_string()) {
            return unexpected(invalid("setting '" + at(path, key) + "[" + std::to_string(i) + "]' must be a string"));
        }
        out.push_back(l[i].get<std::string>());
    }
    return out;
}

bool normalPath(const std::string& p)
{
    if (p.empty() || p[0] != '/' || p.find('\0') != std::string::npos) {
        return false;
    }
    for (const auto& c : str::split(p, '/')) {
        if (c == "..") {
            return false;
        }
    }
    return true;
}

bool envName(const std::string& n)
{
    return !n.empty() && n.size() <= 256 && n.find('=') == std::string::npos && n.find('\0') == std::string::npos;
}

} // namespace

std::uint64_t DevicePolicy::memoryCeiling() const
{
    if (maxMemoryBytes != 0) {
        return maxMemoryBytes;
    }
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : (1ull << 40);
}

std::uint32_t DevicePolicy::cpuCeiling() const
{
    if (maxCpuPercent != 0) {
        return maxCpuPercent;
    }
    const long n = ::sysconf(_SC_NPROCESSORS_CONF);
    return static_cast<std::uint32_t>(100 * (n > 0 ? n : 1));
}

const std::vector<std::string>& defaultCapabilities()
{
    // Enough for a service to bind a low port and to drop to another user;
    // nothing that touches the host (no SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ...).
    static const std::vector<std::string> caps = {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"};
    return caps;
}

json AppSettings::toJson() const
{
    json mounts = json::array();
    for (const auto& m : this->mounts) {
        mounts.push_back({{"source", m.source}, {"destination", m.destination}});
    }
    json ports = json::array();
    for (const auto& p : this->ports) {
        ports.push_back({{"host", p.host}, {"container", p.container}, {"protocol", p.protocol}});
    }
    json envObj = json::object();
    for (const auto& e : env) {
        auto eq = e.find('=');
        envObj[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
    }
    return json{{"name", name},
                {"version", version},
                {"image", imageRef},
                {"restart", restart},
                {"autostart", autostart},
                {"memory_bytes", memoryBytes},
                {"pids_max", pidsMax},
                {"cpu_percent", cpuPercent},
                {"env", envObj},
                {"args", args},
                {"network", network},
                {"ports", ports},
                {"mounts", mounts},
                {"capabilities", capabilities},
                {"devices", devices},
                {"host_pid", hostPid},
                {"userns", userns},
                {"app_api", appApi},
                {"health",
                 {{"grace_ms", health.graceMs},
                  {"probe", health.probe},
                  {"interval_ms", health.intervalMs},
                  {"timeout_ms", health.timeoutMs}}}};
}

Expected<AppSettings> AppSettings::fromJson(const json& j)
{
    static const std::set<std::string> known = {
        "name",    "version", "image",   "restart", "autostart", "memory_mb", "memory_bytes", "pids_max",
        "cpu_percent", "env",  "args",    "network", "ports",     "mounts",    "capabilities", "devices",
        "host_pid", "health", "userns",  "app_api"};
    if (!j.is_object()) {
        return unexpected(invalid("app settings must be a JSON object"));
    }
    if (auto st = onlyKnown(j, "", known); !st) {
        return unexpected(st.error());
    }
    AppSettings s;
#define MBL_GET(field, key, type)                         \
    {                                                     \
        auto v = get<type>(j, "", key, s.field);          \
        if (!v) {                                         \
            return unexpected(v.error());                 \
        }                                                 \
        s.field = *v;                                     \
    }
    MBL_GET(name, "name", std::string)
    MBL_GET(version, "version", std::string)
    MBL_GET(imageRef, "image", std::string)
    MBL_GET(restart, "restart", std::string)
    MBL_GET(autostart, "autostart", bool)
    MBL_GET(memoryBytes, "memory_bytes", std::uint64_t)
    MBL_GET(pidsMax, "pids_max", std::int64_t)
    MBL_GET(cpuPercent, "cpu_percent", std::uint32_t)
    MBL_GET(network, "network", std::string)
    MBL_GET(hostPid, "host_pid", bool)
    MBL_GET(userns, "userns", bool)
    MBL_GET(appApi, "app_api", bool)
#undef MBL_GET
    if (j.contains("memory_mb") && !j["memory_mb"].is_null()) {
        auto mb = get<std::uint64_t>(j, "", "memory_mb", 0);
        if (!mb) {
            return unexpected(mb.error());
        }
        if (*mb > (std::numeric_limits<std::uint64_t>::max() >> 20)) {
            return unexpected(invalid("setting 'memory_mb' is too large"));
        }
        s.memoryBytes = *mb << 20;
    }
    if (j.contains("env") && !j["env"].is_null()) {
        const auto& e = j["env"];
        if (e.is_object()) {
            if (e.size() > 256) {
                return unexpected(invalid("setting 'env' has more than 256 entries"));
            }
            for (auto it = e.begin(); it != e.end(); ++it) {
                if (!envName(it.key())) {
                    return unexpected(invalid("setting 'env': " + q(it.key()) +
                                              " is not a variable name (empty, '=' or NUL in it, or too long)"));
                }
                if (!it.value().is_string() || it.value().get<std::string>().find('\0') != std::string::npos) {
                    return unexpected(invalid("setting 'env." + q(it.key()) + "' must be a string without NUL"));
                }
                s.env.push_back(it.key() + "=" + it.value().get<std::string>());
            }
        } else {
            auto l = stringList(j, "", "env");
            if (!l) {
                return unexpected(invalid("setting 'env' must be an object {\"NAME\": \"value\"} or a list of "
                                          "\"NAME=value\""));
            }
            s.env = *l;
        }
    }
    for (auto [field, key] : {std::pair{&s.args, "args"}, std::pair{&s.capabilities, "capabilities"},
                              std::pair{&s.devices, "devices"}}) {
        auto l = stringList(j, "", key);
        if (!l) {
            return unexpected(l.error());
        }
        *field = *l;
    }
    if (j.contains("mounts") && !j["mounts"].is_null()) {
        const json& ms = j["mounts"];
        if (!ms.is_array() || ms.size() > 64) {
            return unexpected(invalid("setting 'mounts' must be a list of at most 64 {\"source\", \"destination\"}"));
        }
        for (std::size_t i = 0; i < ms.size(); ++i) {
            const std::string path = "mounts[" + std::to_string(i) + "]";
            if (!ms[i].is_object()) {
                return unexpected(invalid("setting '" + path + "' must be {\"source\", \"destination\"}"));
            }
            if (auto st = onlyKnown(ms[i], path, {"source", "destination"}); !st) {
                return unexpected(st.error());
            }
            auto src = get<std::string>(ms[i], path, "source", "");
            auto dst = get<std::string>(ms[i], path, "destination", "");
            if (!src) {
                return unexpected(src.error());
            }
            if (!dst) {
                return unexpected(dst.error());
            }
            if (src->empty()) {
                return unexpected(invalid("setting '" + path + ".source' is missing"));
            }
            s.mounts.push_back(BindMount{*src, dst->empty() ? *src : *dst});
        }
    }
    if (j.contains("ports") && !j["ports"].is_null()) {
        const json& ps = j["ports"];
        if (!ps.is_array() || ps.size() > 64) {
            return unexpected(invalid("setting 'ports' must be a list of at most 64 {\"host\", \"container\", "
                                      "\"protocol\"}"));
        }
        for (std::size_t i = 0; i < ps.size(); ++i) {
            const std::string path = "ports[" + std::to_string(i) + "]";
            if (!ps[i].is_object()) {
                return unexpected(invalid("setting '" + path + "' must be {\"host\", \"container\", \"protocol\"}"));
            }
            if (auto st = onlyKnown(ps[i], path, {"host", "container", "protocol"}); !st) {
                return unexpected(st.error());
            }
            PortMap m;
            for (auto [field, key] : {std::pair{&m.host, "host"}, std::pair{&m.container, "container"}}) {
                auto v = get<std::int64_t>(ps[i], path, key, 0);
                if (!v) {
                    return unexpected(v.error());
                }
                if (*v < 1 || *v > 65535) {
                    return unexpected(invalid("setting '" + path + "." + key + "' must be a port from 1 to 65535"));
                }
                *field = static_cast<std::uint16_t>(*v);
            }
            auto proto = get<std::string>(ps[i], path, "protocol", "tcp");
            if (!proto) {
                return unexpected(proto.error());
            }
            if (*proto != "tcp" && *proto != "udp") {
                return unexpected(invalid("setting '" + path + ".protocol' must be \"tcp\" or \"udp\", not " + q(*proto)));
            }
            m.protocol = *proto;
            for (const auto& other : s.ports) {
                if (other.host == m.host && other.protocol == m.protocol) {
                    return unexpected(invalid("setting '" + path + ".host': port " + std::to_string(m.host) + "/" +
                                              m.protocol + " is published twice"));
                }
            }
            s.ports.push_back(m);
        }
    }
    if (j.contains("health") && !j["health"].is_null()) {
        const auto& h = j["health"];
        if (!h.is_object()) {
            return unexpected(invalid("setting 'health' must be an object"));
        }
        if (auto st = onlyKnown(h, "health", {"grace_ms", "probe", "interval_ms", "timeout_ms"}); !st) {
            return unexpected(st.error());
        }
        auto g = get<std::uint32_t>(h, "health", "grace_ms", s.health.graceMs);
        auto i = get<std::uint32_t>(h, "health", "interval_ms", s.health.intervalMs);
        auto t = get<std::uint32_t>(h, "health", "timeout_ms", s.health.timeoutMs);
        auto p = stringList(h, "health", "probe", 64);
        for (const Error* e : {g ? nullptr : &g.error(), i ? nullptr : &i.error(), t ? nullptr : &t.error(),
                               p ? nullptr : &p.error()}) {
            if (e != nullptr) {
                return unexpected(*e);
            }
        }
        s.health.graceMs = *g;
        s.health.intervalMs = *i;
        s.health.timeoutMs = *t;
        s.health.probe = *p;
    }
    return s;
}

Expected<AppSettings> parseSettings(const std::string& optionsJson, const ManagerConfig& config)
{
    json opts = json::object();
    if (!str::trim(optionsJson).empty()) {
        try {
            opts = json::parse(optionsJson);
        } catch (const std::exception& e) {
            return unexpected(invalid(std::string("install options are not valid JSON: ") +
                                      str::quotable(e.what(), 160)));
        }
    }
    if (!opts.is_object()) {
        return unexpected(invalid("install options must be a JSON object"));
    }
    json merged = config.defaults;
    for (auto it = opts.begin(); it != opts.end(); ++it) {
        merged[it.key()] = it.value();
    }
    auto s = AppSettings::fromJson(merged);
    if (!s) {
        return s;
    }
    const DevicePolicy& p = config.policy;
    if (!s->name.empty() && !str::isSafeName(s->name, 48)) {
        return unexpected(invalid("setting 'name': " + q(s->name) +
                                  " is not a safe name ([A-Za-z0-9][A-Za-z0-9._-]*, at most 48 characters)"));
    }
    if (!s->version.empty() && !str::isSafeName(s->version, 64)) {
        return unexpected(invalid("setting 'version': " + q(s->version) + " is not a safe name"));
    }
    if (s->restart != "no" && s->restart != "on-failure" && s->restart != "always") {
        return unexpected(invalid("setting 'restart' must be \"no\", \"on-failure\" or \"always\", not " + q(s->restart)));
    }
    if (s->network != "none" && s->network != "host" && s->network != "private") {
        return unexpected(invalid("setting 'network' must be \"none\", \"host\" or \"private\", not " + q(s->network)));
    }
    if (s->network == "host" && !p.allowHostNetwork) {
        return unexpected(denied("setting 'network': \"host\""));
    }
    if (s->network == "private" && !p.allowPrivateNetwork) {
        return unexpected(denied("setting 'network': \"private\""));
    }
    if (!s->ports.empty() && s->network != "private") {
        return unexpected(invalid("setting 'ports' needs \"network\": \"private\" (it is " + q(s->network) + ")"));
    }
    for (std::size_t i = 0; i < s->ports.size(); ++i) {
        bool ok = false;
        for (const auto& [lo, hi] : p.publishPorts) {
            ok = ok || (s->ports[i].host >= lo && s->ports[i].host <= hi);
        }
        if (!ok) {
            return unexpected(denied("setting 'ports[" + std::to_string(i) + "].host': host port " +
                                     std::to_string(s->ports[i].host) + " (policy.publish_ports)"));
        }
    }
    if (s->appApi && !p.allowAppApi) {
        return unexpected(denied("setting 'app_api': true"));
    }
    if (s->hostPid && !p.allowHostPid) {
        return unexpected(denied("setting 'host_pid': the host PID namespace"));
    }
    if (!s->userns && !p.allowNoUserns) {
        return unexpected(denied("setting 'userns': false (running without a user namespace, with host ids)"));
    }
    if (s->memoryBytes < (4u << 20)) {
        return unexpected(invalid("setting 'memory_bytes': a memory limit below 4 MiB"));
    }
    if (s->pidsMax < 1) {
        return unexpected(invalid("setting 'pids_max' must be positive"));
    }
    if (s->cpuPercent < 1 || s->cpuPercent > 100000) {
        return unexpected(invalid("setting 'cpu_percent' must be from 1 to 100000"));
    }
    if (s->memoryBytes > p.memoryCeiling()) {
        return unexpected(denied("setting 'memory_bytes': a memory limit above " + std::to_string(p.memoryCeiling()) +
                                 " bytes"));
    }
    if (s->pidsMax > p.maxPids) {
        return unexpected(denied("setting 'pids_max': a pids limit above " + std::to_string(p.maxPids)));
    }
    if (s->cpuPercent > p.cpuCeiling()) {
        return unexpected(denied("setting 'cpu_percent': a CPU share above " + std::to_string(p.cpuCeiling()) + " %"));
    }
    for (const auto& c : s->capabilities) {
        if (!contains(defaultCapabilities(), c) && !contains(p.allowedCapabilities, c)) {
            return unexpected(denied("setting 'capabilities': " + q(c)));
        }
    }
    for (const auto& d : s->devices) {
        if (!contains(p.allowedDevices, d)) {
            return unexpected(denied("setting 'devices': " + q(d)));
        }
    }
    for (std::size_t i = 0; i < s->mounts.size(); ++i) {
        const auto& m = s->mounts[i];
        const std::string path = "setting 'mounts[" + std::to_string(i) + "]'";
        if (!normalPath(m.source) || !normalPath(m.destination)) {
            return unexpected(invalid(path + ": mount paths must be absolute without '..': " + q(m.source) + " -> " +
                                      q(m.destination)));
        }
        bool ok = false;
        for (const auto& a : p.allowedMounts) {
            ok = ok || m.source == a || str::startsWith(m.source, a + "/");
        }
        if (!ok) {
            return unexpected(denied(path + ": host path " + q(m.source)));
        }
        for (const char* reserved : {"/data", "/", "/proc", "/dev", "/sys", "/run/dbus", "/etc/resolv.conf"}) {
            if (m.destination == reserved) {
                return unexpected(invalid(path + ": the destination " + m.destination + " is reserved"));
            }
        }
    }
    for (const auto& e : s->env) {
        const auto eq = e.find('=');
        if (eq == std::string::npos || !envName(e.substr(0, eq))) {
            return unexpected(invalid("setting 'env': " + q(e) + " is not NAME=value"));
        }
        if (str::startsWith(e, "MBL_APP_")) {
            return unexpected(invalid("setting 'env': " + q(e.substr(0, eq)) + " (MBL_APP_* names are the manager's)"));
        }
    }
    return s;
}

} // namespace mbl::containers
