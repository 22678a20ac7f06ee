// SPDX-License-Identifier: Apache-2.0
#pragma once
// App settings (contract C4: a bundle's per-app "settings", passed as the
// install options, over the defaults of containers.json), the device policy
// that bounds them, the daemon's configuration, and the generation of the
// hardened OCI runtime config.json from an image's process plus those settings.
//   app_settings.cpp   the settings schema and its checks against the policy
//   manager_config.cpp containers.json
//   app_spec.cpp       config.json and the seccomp profile

#include "network.h"
#include "oci_image.h"

#include "mbl/config.h"
#include "mbl/expected.h"
#include "mbl/paths.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mbl::containers {

// What the device maker allows apps to ask for (containers.json "policy").
struct DevicePolicy {
    bool allowHostNetwork = true;
    bool allowHostPid = false;
    bool allowSetuid = false;
    std::vector<std::string> allowedCapabilities; // beyond the default set
    std::vector<std::string> allowedMounts;       // host paths apps may bind read-only
    std::vector<std::string> allowedDevices;      // host device nodes apps may get
    std::uint64_t maxMemoryBytes = 0;             // largest memory limit an app may get (0: the RAM)
    std::int64_t maxPids = 32768;                 // largest pids limit
    std::uint32_t maxCpuPercent = 0;              // largest CPU share (0: 100 per CPU)
    bool allowNoUserns = false;                   // may an app ask "userns": false
    bool allowHostRoot = false;                   // may an app's process be uid 0 on the host (no user namespace)
    bool allowPrivateNetwork = true;              // may apps ask for "network": "private"
    // Host ports apps may publish ("ports"), as inclusive ranges. Built with
    // the (count, value) constructor: GCC 12 at -O3 (the demo's release build)
    // takes an initializer list here for "maybe-uninitialized".
    using PortRange = std::pair<std::uint16_t, std::uint16_t>;
    std::vector<PortRange> publishPorts = std::vector<PortRange>(1, PortRange{1024, 65535});
    bool allowAppApi = true;                      // may apps ask for "app_api": true

    std::uint64_t memoryCeiling() const;
    std::uint32_t cpuCeiling() const;
};

struct HealthSettings {
    std::uint32_t graceMs = 2000;      // must stay running this long after a start
    std::vector<std::string> probe;    // optional command run in the container
    std::uint32_t intervalMs = 30000;  // between probes once healthy (0: probe once)
    std::uint32_t timeoutMs = 5000;
};

struct BindMount {
    std::string source;
    std::string destination;
};

struct AppSettings {
    std::string name;
    std::string version;
    std::string imageRef;
    std::string restart = "on-failure"; // no | on-failure | always
    bool autostart = true;
    std::uint64_t memoryBytes = 256ull << 20;
    std::int64_t pidsMax = 256;
    std::uint32_t cpuPercent = 100;      // of one CPU
    std::vector<std::string> env;        // KEY=VALUE, over the image's
    std::vector<std::string> args;       // replaces the image's command when set
    std::string network = "none";        // none | host | private
    std::vector<PortMap> ports;          // published host ports ("network": "private" only)
    bool appApi = false;                 // the app-facing API: the bus socket in the container
    std::vector<BindMount> mounts;       // read-only binds from the allow-list
    std::vector<std::string> capabilities; // extra, within the policy
    std::vector<std::string> devices;    // within the policy
    bool hostPid = false;                // only if the policy allows
    bool userns = true;                  // its own user namespace (false only if the policy allows)
    HealthSettings health;

    nlohmann::json toJson() const;
    static Expected<AppSettings> fromJson(const nlohmann::json& j);
};

// The daemon's configuration (containers.json).
struct ManagerConfig {
    std::string runtime = "runc";
    std::string startMode = "run"; // "run" (run --detach) or "create-start"
    std::uint32_t stopGraceMs = 10000;
    std::uint64_t logMaxBytes = 1u << 20;
    std::uint32_t logKeep = 2;
    std::uint64_t quotaBytes = 1ull << 30;
    std::uint32_t backoffBaseMs = 1000;
    std::uint32_t backoffCapMs = 60000;
    nlohmann::json defaults = nlohmann::json::object(); // app settings defaults
    DevicePolicy policy;
    // An install whose archive brings nothing for this long ends with Timeout.
    std::uint32_t installReadTimeoutMs = 60000;
    NetworkConfig network;               // "network": the private network's bridge and subnet
    // "app_api.bus_socket": the bus socket an app with "app_api" gets at /run/dbus/system_bus_socket.
    std::string appApiSocket = "/run/dbus/system_bus_socket";
    // User namespaces (containers.json "userns"): each app gets ids_per_app host
    // ids from first_id on (userns.h).
    bool usernsEnabled = true;
    std::uint32_t usernsFirstId = 100000;
    std::uint32_t usernsIdsPerApp = 65536;
    // Each range's first id is published as user and group <user_prefix><app>
    // in <userdb_dir> ("" publishes nothing): user_records.h.
    std::string usernsUserdbDir = "/run/userdb";
    std::string usernsUserPrefix = "mbl-app-";

    static Expected<ManagerConfig> fromConfig(const Config& config);
};

// The capability set every app gets (hardened default).
const std::vector<std::string>& defaultCapabilities();

// Install options (JSON text) over the defaults; refuses privilege the policy
// does not grant with AccessDenied and malformed settings with InvalidArgument,
// each naming the setting ("setting 'health.grace_ms' ...").
Expected<AppSettings> parseSettings(const std::string& optionsJson, const ManagerConfig& config);

struct SpecInputs {
    ImageProcess process;
    std::uint32_t uid = 0; // inside the container
    std::uint32_t gid = 0;
    // The app's host ids when it runs in a user namespace (size 0: none).
    std::uint32_t idBase = 0;
    std::uint32_t idSize = 0;
    std::string dataDir;      // host path of the app's /data volume
    std::string cgroupsPath;  // "/mbl/<name>"
    // "network": "private": the app's network namespace and the files bound at
    // /etc/resolv.conf and /etc/hosts (AppNetworks paths).
    std::string netnsPath;
    std::string resolvConf;
    std::string hostsFile;
    std::string busSocket;    // "app_api": the host's bus socket
};

// The runtime config.json: hardened defaults plus the app's settings.
nlohmann::json generateSpec(const AppSettings& settings, const SpecInputs& in);

// The default seccomp profile: an allow-list, everything else fails with EPERM.
nlohmann::json defaultSeccomp();

} // namespace mbl::containers
