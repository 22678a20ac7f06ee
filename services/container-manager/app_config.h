// SPDX-License-Identifier: Apache-2.0
#pragma once
// App settings (install options JSON over the defaults of containers.json),
// the device policy that bounds them, and the generation of the hardened OCI
// runtime config.json from an image's process plus those settings.

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
    std::string network = "none";        // none | host
    std::vector<BindMount> mounts;       // read-only binds from the allow-list
    std::vector<std::string> capabilities; // extra, within the policy
    std::vector<std::string> devices;    // within the policy
    bool hostPid = false;                // only if the policy allows
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

    static Expected<ManagerConfig> fromConfig(const Config& config);
};

// The capability set every app gets (hardened default).
const std::vector<std::string>& defaultCapabilities();

// Install options (JSON text) over the defaults; refuses privilege the policy
// does not grant with AccessDenied and malformed settings with InvalidArgument.
Expected<AppSettings> parseSettings(const std::string& optionsJson, const ManagerConfig& config);

struct SpecInputs {
    ImageProcess process;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::string dataDir;      // host path of the app's /data volume
    std::string cgroupsPath;  // "/mbl/<name>"
};

// The runtime config.json: hardened defaults plus the app's settings.
nlohmann::json generateSpec(const AppSettings& settings, const SpecInputs& in);

// The default seccomp profile: an allow-list, everything else fails with EPERM.
nlohmann::json defaultSeccomp();

} // namespace mbl::containers
