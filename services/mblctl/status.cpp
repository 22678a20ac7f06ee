// SPDX-License-Identifier: Apache-2.0
// mblctl status: one line per service — reachable or not, version, key properties.

#include "mblctl.h"

#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <unistd.h>

namespace mbl::ctl {

namespace {

struct ServiceInfo {
    const char* label;
    const char* busName;
    const char* path;
    const char* interface;
    std::vector<const char*> keyProperties;
};

const std::vector<ServiceInfo>& services()
{
    static const std::vector<ServiceInfo> list = {
        {"device-identity", "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1", "org.mbl.DeviceIdentity1",
         {"DeviceId", "Provisioned", "State"}},
        {"update", "org.mbl.Update1", "/org/mbl/Update1", "org.mbl.Update1",
         {"FirmwareVersion", "BootedSlot", "SecurityVersionFloor", "Operation"}},
        {"container-manager", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1", "org.mbl.ContainerManager1",
         {"AppCount", "Operation"}},
        {"cloud-client", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "org.mbl.CloudClient1",
         {"ConnectionState", "ServerUrl"}},
        {"coordinator", "org.mbl.Coordinator1", "/org/mbl/Coordinator1", "org.mbl.Coordinator1",
         {"State", "Operation"}},
    };
    return list;
}

nlohmann::json variantToJson(const sdbus::Variant& v)
{
    const std::string sig = v.peekValueType();
    if (sig == "s" || sig == "o" || sig == "g") {
        return v.get<std::string>();
    }
    if (sig == "b") {
        return v.get<bool>();
    }
    if (sig == "y") {
        return v.get<uint8_t>();
    }
    if (sig == "n") {
        return v.get<int16_t>();
    }
    if (sig == "q") {
        return v.get<uint16_t>();
    }
    if (sig == "i") {
        return v.get<int32_t>();
    }
    if (sig == "u") {
        return v.get<uint32_t>();
    }
    if (sig == "x") {
        return v.get<int64_t>();
    }
    if (sig == "t") {
        return v.get<uint64_t>();
    }
    if (sig == "d") {
        return v.get<double>();
    }
    if (sig == "as") {
        return v.get<std::vector<std::string>>();
    }
    if (sig == "a{ss}") {
        return v.get<std::map<std::string, std::string>>();
    }
    if (sig == "a(ssst)") {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& s : v.get<std::vector<sdbus::Struct<std::string, std::string, std::string, uint64_t>>>()) {
            arr.push_back({std::get<0>(s), std::get<1>(s), std::get<2>(s), std::get<3>(s)});
        }
        return arr;
    }
    return "<" + sig + ">";
}

// A service can be reachable and still failed: these property values mean it
// cannot do its job until someone acts (the table is the one place that says so).
struct FailedWhen {
    const char* service;
    const char* property;
    bool (*failed)(const std::string& value);
};
const FailedWhen kFailedWhen[] = {
    {"device-identity", "State", [](const std::string& v) { return v.rfind("error", 0) == 0; }},
    {"cloud-client", "ConnectionState", [](const std::string& v) { return v == "auth-failed"; }},
};

// "" when healthy, else why not (e.g. "ConnectionState=auth-failed").
std::string problemOf(const std::string& service, const nlohmann::json& props)
{
    for (const auto& f : kFailedWhen) {
        if (service != f.service || !props.contains(f.property) || !props[f.property].is_string()) {
            continue;
        }
        const std::string v = props[f.property].get<std::string>();
        if (f.failed(v)) {
            std::string why = std::string(f.property) + "=" + v;
            if (props.contains("LastError") && props["LastError"].is_string() &&
                !props["LastError"].get<std::string>().empty()) {
                why += ": " + props["LastError"].get<std::string>();
            }
            return why;
        }
    }
    return "";
}

// Apps the container manager lists as "failed" (exited in error and not
// restarted, or restarts given up): the manager works, but the device does not
// do what it was told until someone acts. "" when none.
std::string failedAppsProblem(sdbus::IProxy& proxy)
{
    std::vector<sdbus::Struct<std::string, std::string, std::string>> apps;
    proxy.callMethod("ListApps")
        .onInterface("org.mbl.ContainerManager1")
        .withTimeout(std::chrono::seconds(3))
        .storeResultsTo(apps);
    std::vector<std::string> failed;
    for (const auto& a : apps) {
        if (std::get<2>(a) == "failed") {
            failed.push_back(std::get<0>(a));
        }
    }
    if (failed.empty()) {
        return "";
    }
    return (failed.size() == 1 ? "app " : "apps ") + str::join(failed, ", ") + " failed";
}

} // namespace

std::string variantToText(const sdbus::Variant& v)
{
    auto j = variantToJson(v);
    if (j.is_string()) {
        return j.get<std::string>();
    }
    return j.dump();
}

namespace {

int runStatus(Context& ctx, const std::vector<std::string>& args)
{
    for (const auto& a : args) {
        if (a == "--json") {
            ctx.json = true;
        } else {
            std::cerr << "mblctl status: unknown argument '" << a << "'\n";
            return 2;
        }
    }
    auto& bus = ctx.bus();
    nlohmann::json out = nlohmann::json::array();
    int unhealthy = 0;
    for (const auto& s : services()) {
        nlohmann::json entry = {{"service", s.label}, {"bus_name", s.busName}};
        try {
            auto proxy = sdbus::createProxy(bus, s.busName, s.path);
            std::map<std::string, sdbus::Variant> props;
            proxy->callMethod("GetAll")
                .onInterface("org.freedesktop.DBus.Properties")
                .withTimeout(std::chrono::seconds(3))
                .withArguments(std::string(s.interface))
                .storeResultsTo(props);
            entry["reachable"] = true;
            nlohmann::json p = nlohmann::json::object();
            for (const auto& [k, v] : props) {
                p[k] = variantToJson(v);
            }
            entry["properties"] = p;
            std::string problem = problemOf(s.label, p);
            if (problem.empty() && std::string(s.label) == "container-manager") {
                problem = failedAppsProblem(*proxy);
            }
            entry["healthy"] = problem.empty();
            if (!problem.empty()) {
                entry["problem"] = problem;
                ++unhealthy;
            }
        } catch (const sdbus::Error& e) {
            entry["reachable"] = false;
            entry["healthy"] = false;
            entry["error"] = e.getName() + ": " + e.getMessage();
            ++unhealthy;
        }
        out.push_back(entry);
    }

    if (ctx.json) {
        std::cout << out.dump(2) << "\n";
        return unhealthy == 0 ? 0 : 1;
    }
    const bool colour = ::isatty(STDOUT_FILENO) != 0;
    auto red = [&](const std::string& t) { return colour ? "\033[1;31m" + t + "\033[0m" : t; };
    std::cout << std::left << std::setw(19) << "SERVICE" << std::setw(12) << "STATE" << std::setw(10) << "VERSION"
              << "DETAILS\n";
    for (std::size_t i = 0; i < out.size(); ++i) {
        const auto& e = out[i];
        std::ostringstream details;
        std::string version = "-";
        if (e["reachable"].get<bool>()) {
            const auto& p = e["properties"];
            if (p.contains("Version")) {
                version = p["Version"].get<std::string>();
            }
            bool first = true;
            for (const char* key : services()[i].keyProperties) {
                if (!p.contains(key)) {
                    continue;
                }
                std::string val = p[key].is_string() ? p[key].get<std::string>() : p[key].dump();
                details << (first ? "" : "  ") << key << "=" << (val.empty() ? "-" : val);
                first = false;
            }
            if (e.contains("problem")) {
                details << "  (" << e["problem"].get<std::string>() << ")";
            }
        } else {
            details << e["error"].get<std::string>();
        }
        std::string state =
            !e["reachable"].get<bool>() ? "UNREACHABLE" : e["healthy"].get<bool>() ? "reachable" : "FAILED";
        std::ostringstream padded;
        padded << std::left << std::setw(12) << state;
        std::cout << std::left << std::setw(19) << e["service"].get<std::string>()
                  << (state == "reachable" ? padded.str() : red(padded.str())) << std::setw(10) << version << details.str()
                  << "\n";
    }
    return unhealthy == 0 ? 0 : 1;
}

} // namespace

void registerStatusCommands(std::vector<Command>& out)
{
    out.push_back({"status", "status [--json]",
                   "Show each MBL service: reachable, FAILED (reachable but unable to work, e.g. the cloud client's "
                   "credentials refused, an app failed) or UNREACHABLE, version, key properties; exits 1 unless all are reachable and none failed.",
                   runStatus});
}

} // namespace mbl::ctl
