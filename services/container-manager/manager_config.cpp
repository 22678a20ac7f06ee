// SPDX-License-Identifier: Apache-2.0
// containers.json: every value read with a typed, ranged getter, then any key
// nobody read (a typo, at any depth) refused at start-up with the file and the
// key's path (Config::rejectUnreadKeys: the getters are the one list of keys).

#include "app_config.h"

#include "mbl/strings.h"

#include <functional>

namespace mbl::containers {

using nlohmann::json;

namespace {

Error invalid(const std::string& m)
{
    return Error{ErrorCode::InvalidArgument, m};
}

// "1024-65535" or "8080": an inclusive range of ports.
Expected<DevicePolicy::PortRange> portRange(const std::string& text, const std::string& origin)
{
    const auto dash = text.find('-');
    const std::string a = text.substr(0, dash);
    const std::string b = dash == std::string::npos ? a : text.substr(dash + 1);
    auto num = [](const std::string& s) -> long {
        if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) {
            return -1;
        }
        return std::stol(s);
    };
    const long lo = num(a);
    const long hi = num(b);
    if (lo < 1 || hi < lo || hi > 65535) {
        return unexpected(invalid(origin + ": key 'policy.publish_ports': " + str::quotable(text, 32) +
                                  " is not a port or a range \"low-high\" within 1-65535"));
    }
    return std::make_pair(static_cast<std::uint16_t>(lo), static_cast<std::uint16_t>(hi));
}

} // namespace

Expected<ManagerConfig> ManagerConfig::fromConfig(const Config& config)
{
    ManagerConfig c;
    Status failed;
    // Each getter below either fills its field or records the first error.
    auto str = [&](const char* key, std::string& field) {
        auto v = config.getString(key, field);
        if (!v) {
            failed = failed ? Status(unexpected(v.error())) : failed;
        } else {
            field = *v;
        }
    };
    auto flag = [&](const char* key, bool& field) {
        auto v = config.getBool(key, field);
        if (!v) {
            failed = failed ? Status(unexpected(v.error())) : failed;
        } else {
            field = *v;
        }
    };
    auto num = [&](const char* key, auto& field, std::int64_t min, std::int64_t max) {
        auto v = config.getInt(key, static_cast<std::int64_t>(field), min, max);
        if (!v) {
            failed = failed ? Status(unexpected(v.error())) : failed;
        } else {
            field = static_cast<std::remove_reference_t<decltype(field)>>(*v);
        }
    };
    auto list = [&](const char* key, std::vector<std::string>& field) {
        auto v = config.getStringList(key, field);
        if (!v) {
            failed = failed ? Status(unexpected(v.error())) : failed;
        } else {
            field = *v;
        }
    };
    str("runtime", c.runtime);
    str("start_mode", c.startMode);
    num("stop_grace_ms", c.stopGraceMs, 0, 600000);
    num("log_max_bytes", c.logMaxBytes, 4096, 1ll << 34);
    num("log_keep", c.logKeep, 0, 100);
    num("quota_bytes", c.quotaBytes, 1 << 20, 1ll << 50);
    num("backoff_base_ms", c.backoffBaseMs, 10, 3600000);
    num("backoff_cap_ms", c.backoffCapMs, 10, 86400000);
    num("install_read_timeout_ms", c.installReadTimeoutMs, 100, 86400000);
    flag("policy.allow_host_network", c.policy.allowHostNetwork);
    flag("policy.allow_host_pid", c.policy.allowHostPid);
    flag("policy.allow_setuid", c.policy.allowSetuid);
    list("policy.allowed_capabilities", c.policy.allowedCapabilities);
    list("policy.allowed_mounts", c.policy.allowedMounts);
    list("policy.allowed_devices", c.policy.allowedDevices);
    num("policy.max_memory_bytes", c.policy.maxMemoryBytes, 0, 1ll << 50);
    num("policy.max_pids", c.policy.maxPids, 1, 1 << 22);
    num("policy.max_cpu_percent", c.policy.maxCpuPercent, 0, 100000);
    flag("policy.allow_no_userns", c.policy.allowNoUserns);
    flag("policy.allow_host_root", c.policy.allowHostRoot);
    flag("policy.allow_private_network", c.policy.allowPrivateNetwork);
    flag("policy.allow_app_api", c.policy.allowAppApi);
    flag("userns.enabled", c.usernsEnabled);
    num("userns.first_id", c.usernsFirstId, 1, 0xFFFF0000ll);
    num("userns.ids_per_app", c.usernsIdsPerApp, 1, 1 << 24);
    str("userns.userdb_dir", c.usernsUserdbDir);
    str("userns.user_prefix", c.usernsUserPrefix);
    str("network.bridge", c.network.bridge);
    str("network.subnet", c.network.subnet);
    list("network.dns", c.network.dns);
    str("app_api.bus_socket", c.appApiSocket);
    std::vector<std::string> ports;
    list("policy.publish_ports", ports);
    auto defaults = config.getObject("defaults", nlohmann::json());
    if (!defaults) {
        failed = failed ? Status(unexpected(invalid(config.origin() + ": key 'defaults' must be an object of app settings")))
                        : failed;
    }
    if (!failed) {
        return unexpected(failed.error());
    }
    // Every key the manager knows was read above; anything else, at any depth, is a typo.
    if (auto st = config.rejectUnreadKeys(); !st) {
        return unexpected(st.error());
    }
    if (c.startMode != "run" && c.startMode != "create-start") {
        return unexpected(invalid(config.origin() + ": key 'start_mode' must be \"run\" or \"create-start\""));
    }
    if (c.usernsFirstId < c.usernsIdsPerApp) {
        return unexpected(invalid(config.origin() + ": key 'userns.first_id' must be at least 'userns.ids_per_app' "
                                                    "(an app's ids must not overlap the ids it maps)"));
    }
    if (config.json().contains("policy") && config.json()["policy"].contains("publish_ports")) {
        c.policy.publishPorts.clear();
        for (const auto& p : ports) {
            auto r = portRange(p, config.origin());
            if (!r) {
                return unexpected(r.error());
            }
            c.policy.publishPorts.push_back(*r);
        }
    }
    // The bridge: an interface name the kernel takes (IFNAMSIZ) and iptables chain names fit.
    const std::string& br = c.network.bridge;
    if (br.empty() || br.size() > 15 || !str::isSafeName(br, 15) || br.find('.') != std::string::npos) {
        return unexpected(invalid(config.origin() + ": key 'network.bridge': " + str::quotable(br, 32) +
                                  " is not an interface name (letters, digits, '-', '_', at most 15)"));
    }
    if (auto s = Subnet::parse(c.network.subnet); !s) {
        return unexpected(invalid(config.origin() + ": key 'network.subnet': " + s.error().message));
    }
    for (const auto& d : c.network.dns) {
        if (!parseIp(d)) {
            return unexpected(invalid(config.origin() + ": key 'network.dns': " + str::quotable(d, 32) +
                                      " is not an IPv4 address"));
        }
    }
    if (!c.usernsUserdbDir.empty() && c.usernsUserdbDir[0] != '/') {
        return unexpected(invalid(config.origin() + ": key 'userns.userdb_dir' must be an absolute path or \"\""));
    }
    // Names nss-systemd and every tool take: a letter first, then letters, digits, '-', '_', '.'.
    const std::string& up = c.usernsUserPrefix;
    if (up.empty() || up.size() > 32 || !((up[0] >= 'a' && up[0] <= 'z') || (up[0] >= 'A' && up[0] <= 'Z')) ||
        !str::isSafeName(up, 32)) {
        return unexpected(invalid(config.origin() + ": key 'userns.user_prefix': " + str::quotable(up, 40) +
                                  " is not a user name prefix (a letter, then letters, digits, '-', '_', '.'; "
                                  "at most 32)"));
    }
    if (c.appApiSocket.empty() || c.appApiSocket[0] != '/') {
        return unexpected(invalid(config.origin() + ": key 'app_api.bus_socket' must be an absolute path"));
    }
    if (!defaults->is_null()) {
        c.defaults = *defaults;
        auto check = AppSettings::fromJson(c.defaults);
        if (!check) {
            return unexpected(invalid(config.origin() + ": defaults: " + check.error().message));
        }
    }
    return c;
}

} // namespace mbl::containers
