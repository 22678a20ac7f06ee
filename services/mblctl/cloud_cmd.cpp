// mblctl cloud status | poll | attributes | settings [JSON] | confirmations | confirm|deny ACTION [DETAIL…]:
// the cloud client (org.mbl.CloudClient1).

#include "mblctl.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <iostream>

namespace mbl::ctl {

namespace {

constexpr const char* kBus = "org.mbl.CloudClient1";
constexpr const char* kPath = "/org/mbl/CloudClient1";

std::string when(std::uint64_t epoch)
{
    if (epoch == 0) {
        return "never";
    }
    std::time_t t = static_cast<std::time_t>(epoch);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
    const auto ago = static_cast<long long>(std::time(nullptr)) - static_cast<long long>(epoch);
    return std::string(buf) + " (" + std::to_string(ago) + " s ago)";
}

int cloudStatus(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::map<std::string, sdbus::Variant> props;
    proxy->callMethod("GetAll").onInterface("org.freedesktop.DBus.Properties").withArguments(std::string(kBus)).storeResultsTo(props);
    auto s = [&](const char* k) { return props.count(k) ? props[k].get<std::string>() : std::string(); };
    auto u32 = [&](const char* k) { return props.count(k) ? props[k].get<std::uint32_t>() : 0u; };
    auto u64 = [&](const char* k) { return props.count(k) ? props[k].get<std::uint64_t>() : std::uint64_t{0}; };
    if (ctx.json) {
        nlohmann::json j = {{"ConnectionState", s("ConnectionState")}, {"ServerUrl", s("ServerUrl")},
                            {"LastContact", u64("LastContact")},         {"PollInterval", u32("PollInterval")},
                            {"NextPoll", u64("NextPoll")},               {"DownloadProgress", u32("DownloadProgress")},
                            {"ActiveDownloads", u32("ActiveDownloads")}, {"LastError", s("LastError")},
                            {"Version", s("Version")}};
        std::cout << j.dump(2) << "\n";
        return 0;
    }
    const std::string state = s("ConnectionState");
    std::cout << "Connection:     " << state << "\n"
              << "Server:         " << (s("ServerUrl").empty() ? "-" : s("ServerUrl")) << "\n"
              << "Last contact:   " << when(u64("LastContact")) << "\n"
              << "Poll interval:  " << u32("PollInterval") << " s\n";
    if (u64("NextPoll") != 0) {
        const long long in = static_cast<long long>(u64("NextPoll")) - static_cast<long long>(std::time(nullptr));
        // After a failure the next contact is a retry (back-off, throttling, new credentials), not a poll.
        std::cout << (state == "connected" ? "Next poll:      " : "Next attempt:   ") << "in "
                  << std::max(0LL, in) << " s\n";
    }
    if (u32("ActiveDownloads") == 0) {
        std::cout << "Download:       none\n";
    } else {
        std::cout << "Download:       " << u32("DownloadProgress") << " % (" << u32("ActiveDownloads") << " running)\n";
    }
    if (!s("LastError").empty()) {
        std::cout << "Last error:     " << s("LastError") << "\n";
    }
    return 0;
}

int cloudPoll(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    proxy->callMethod("PollNow").onInterface(kBus);
    if (!ctx.json) {
        std::cout << "poll requested\n";
    }
    return 0;
}

int cloudAttributes(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::map<std::string, std::string> attrs;
    proxy->callMethod("GetAttributes").onInterface(kBus).storeResultsTo(attrs);
    if (ctx.json) {
        std::cout << nlohmann::json(attrs).dump(2) << "\n";
        return 0;
    }
    std::size_t w = 0;
    for (const auto& [k, v] : attrs) {
        w = std::max(w, k.size());
    }
    for (const auto& [k, v] : attrs) {
        std::cout << k << std::string(w + 2 - k.size(), ' ') << v << "\n";
    }
    return 0;
}

// Without JSON: prints the overrides in effect. With JSON: replaces them (ApplySettings),
// then prints what is in effect.
int cloudSettings(Context& ctx, const std::vector<std::string>& args)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    if (args.size() > 2) {
        std::cerr << "mblctl: cloud settings takes one JSON argument, e.g. '{\"poll_interval_sec\": 60}'\n";
        return 2;
    }
    if (args.size() == 2) {
        proxy->callMethod("ApplySettings").onInterface(kBus).withArguments(args[1]);
    }
    std::string current;
    proxy->callMethod("GetSettings").onInterface(kBus).storeResultsTo(current);
    const auto j = nlohmann::json::parse(current, nullptr, false);
    std::cout << (ctx.json || j.is_discarded() ? current : j.dump(2)) << "\n";
    return 0;
}

// Actions that wait for the device's consent (cloud.json "confirmation": "manual").
int cloudConfirmations(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::map<std::string, std::string> pending;
    proxy->callMethod("GetPendingConfirmations").onInterface(kBus).storeResultsTo(pending);
    if (ctx.json) {
        nlohmann::json j = nlohmann::json::object();
        for (const auto& [id, dep] : pending) {
            j[id] = nlohmann::json::parse(dep, nullptr, false);
        }
        std::cout << j.dump(2) << "\n";
        return 0;
    }
    if (pending.empty()) {
        std::cout << "no action waits for confirmation\n";
    }
    for (const auto& [id, dep] : pending) {
        std::cout << "action " << id << ":";
        const auto d = nlohmann::json::parse(dep, nullptr, false);
        for (const auto& c : d.is_object() ? d.value("chunks", nlohmann::json::array()) : nlohmann::json::array()) {
            std::cout << " " << c.value("name", "?") << " " << c.value("version", "?");
        }
        std::cout << "\n";
    }
    return 0;
}

// confirm|deny ACTION [DETAIL...]
int cloudConfirm(Context& ctx, const std::vector<std::string>& args)
{
    if (args.size() < 2) {
        std::cerr << "mblctl: cloud " << args[0] << " takes an action id (see mblctl cloud confirmations)\n";
        return 2;
    }
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    const bool confirmed = args[0] == "confirm";
    std::vector<std::string> details(args.begin() + 2, args.end());
    if (details.empty()) {
        details.push_back(confirmed ? "confirmed on the device with mblctl" : "denied on the device with mblctl");
    }
    proxy->callMethod("Confirm").onInterface(kBus).withArguments(args[1], confirmed, details);
    if (!ctx.json) {
        std::cout << "action " << args[1] << (confirmed ? " confirmed" : " denied") << "\n";
    }
    return 0;
}

} // namespace

void registerCloudCommands(std::vector<Command>& out)
{
    out.push_back({"cloud", "cloud status|poll|attributes|settings [JSON]|confirmations|confirm|deny ACTION [--json]",
                   "the device-management connection: state, poll now, device attributes, over-the-air settings, "
                   "actions waiting for the device's consent",
                   [](Context& ctx, const std::vector<std::string>& args) -> int {
                       const std::string sub = args.empty() ? "status" : args[0];
                       if (sub == "status") {
                           return cloudStatus(ctx);
                       }
                       if (sub == "poll") {
                           return cloudPoll(ctx);
                       }
                       if (sub == "attributes") {
                           return cloudAttributes(ctx);
                       }
                       if (sub == "settings") {
                           return cloudSettings(ctx, args);
                       }
                       if (sub == "confirmations") {
                           return cloudConfirmations(ctx);
                       }
                       if (sub == "confirm" || sub == "deny") {
                           return cloudConfirm(ctx, args);
                       }
                       std::cerr << "mblctl: unknown cloud command '" << sub
                                 << "' (status, poll, attributes, settings, confirmations, confirm, deny)\n";
                       return 2;
                   }});
}

} // namespace mbl::ctl
