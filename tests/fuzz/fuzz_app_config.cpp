// SPDX-License-Identifier: Apache-2.0
// The container manager's JSON inputs from outside the device: InstallApp's
// options (parseSettings, then the runtime config generated from them), the
// over-the-air settings document (parseOverrides, ApplySettings) and
// containers.json as libmbl-common's Config reads it (ManagerConfig). The same
// text goes to each. Accepted documents must survive the round trips the
// daemon makes: app settings are persisted with toJson and read back with
// fromJson at start-up; overrides have one canonical form.

#include "app_config.h"
#include "app_overrides.h"
#include "fuzz_util.h"

#include "mbl/config.h"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace mbl;
using namespace mbl::containers;
using fuzz::check;

namespace {

// A policy that grants something of everything, so that the checks past the
// "not allowed" answers are reached too.
ManagerConfig permissiveConfig()
{
    ManagerConfig c;
    c.policy.allowHostPid = true;
    c.policy.allowedCapabilities = {"CAP_NET_ADMIN", "CAP_SYS_TIME"};
    c.policy.allowedMounts = {"/srv", "/etc/ssl/certs"};
    c.policy.allowedDevices = {"/dev/ttyS0"};
    c.policy.maxMemoryBytes = 1ull << 32;
    c.policy.maxCpuPercent = 400;
    c.defaults = {{"restart", "always"}, {"env", {{"FROM_DEFAULTS", "1"}}}};
    return c;
}

SpecInputs inputs()
{
    SpecInputs in;
    in.process.args = {"/bin/app", "--serve"};
    in.process.env = {"PATH=/bin", "LANG=C"};
    in.dataDir = "/var/lib/mbl/apps/fuzz/data";
    in.cgroupsPath = "/mbl/fuzz";
    return in;
}

template <typename T>
bool accepted(const Expected<T>& r)
{
    if (!r) {
        check(r.error().code == ErrorCode::InvalidArgument || r.error().code == ErrorCode::AccessDenied);
        fuzz::checkMessage(r.error());
    }
    return r.ok();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    static const ManagerConfig config = permissiveConfig();
    const std::string text(reinterpret_cast<const char*>(data), size);

    auto s = parseSettings(text, config);
    if (accepted(s)) {
        check(s->memoryBytes >= (4u << 20) && s->memoryBytes <= config.policy.memoryCeiling());
        check(s->cpuPercent >= 1 && s->cpuPercent <= config.policy.cpuCeiling());
        check(s->pidsMax >= 1 && s->pidsMax <= config.policy.maxPids);
        const nlohmann::json saved = s->toJson();
        auto again = AppSettings::fromJson(nlohmann::json::parse(saved.dump()));
        check(again.ok());
        check(again->toJson() == saved);
        (void)generateSpec(*s, inputs()).dump(2);
    }

    auto o = parseOverrides(text, config.policy);
    if (accepted(o)) {
        const nlohmann::json canonical = o->toJson();
        // GetSettings returns it as a D-Bus string.
        check(fuzz::validUtf8(canonical.dump(2)));
        auto again = parseOverrides(canonical.dump(), config.policy);
        check(again.ok());
        check(again->toJson() == canonical);
        for (const auto& [name, ov] : o->apps) {
            AppSettings base;
            base.name = name;
            const AppSettings eff = applyOverride(base, ov);
            (void)generateSpec(eff, inputs()).dump(2);
        }
    }

    auto c = Config::parse(text, "containers.json");
    if (accepted(c)) {
        if (auto mc = ManagerConfig::fromConfig(*c); accepted(mc)) {
            (void)parseSettings("{\"name\": \"fuzz\"}", *mc);
        }
    }
    return 0;
}
