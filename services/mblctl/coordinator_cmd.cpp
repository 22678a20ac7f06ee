// SPDX-License-Identifier: Apache-2.0
// mblctl install / history / operation / cancel: the coordinator's local API
// (a bundle from USB or a field laptop takes the same path as a cloud deployment).

#include "mblctl.h"

#include "mbl/fd.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <iomanip>
#include <iostream>
#include <poll.h>
#include <unistd.h>

namespace mbl::ctl {

namespace {

constexpr const char* kBus = "org.mbl.Coordinator1";
constexpr const char* kPath = "/org/mbl/Coordinator1";
constexpr const char* kIface = "org.mbl.Coordinator1";

std::string timeText(std::int64_t epoch)
{
    if (epoch <= 0) {
        return "-";
    }
    std::time_t t = static_cast<std::time_t>(epoch);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
    return buf;
}

int install(Context& ctx, const std::vector<std::string>& args)
{
    if (args.size() != 1) {
        std::cerr << "usage: mblctl install FILE\n";
        return 2;
    }
    Fd fd(::open(args[0].c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        std::cerr << "mblctl: cannot open " << args[0] << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    auto& bus = ctx.bus();
    auto proxy = sdbus::createProxy(bus, kBus, kPath);
    std::string opId;
    struct Outcome {
        bool done = false;
        bool ok = false;
        std::string name, message;
    } outcome;
    std::uint32_t progress = 0;
    std::string step;
    bool changed = false;
    // Subscribed before the call, so a fast operation's end is not missed.
    proxy->uponSignal("OperationCompleted")
        .onInterface(kIface)
        .call([&](const std::string& id, bool ok, const std::string& name, const std::string& message) {
            if (opId.empty() || id == opId) {
                outcome = {true, ok, name, message};
            }
        });
    proxy->uponSignal("PropertiesChanged")
        .onInterface("org.freedesktop.DBus.Properties")
        .call([&](const std::string& iface, const std::map<std::string, sdbus::Variant>& props,
                  const std::vector<std::string>& invalidated) {
            (void)invalidated;
            if (iface != kIface) {
                return;
            }
            if (auto it = props.find("Progress"); it != props.end()) {
                progress = it->second.get<std::uint32_t>();
                changed = true;
            }
            if (auto it = props.find("Step"); it != props.end()) {
                step = it->second.get<std::string>();
                changed = true;
            }
        });
    proxy->finishRegistration();
    proxy->callMethod("InstallBundle").onInterface(kIface).withArguments(sdbus::UnixFd(fd.get())).storeResultsTo(opId);

    const bool tty = ::isatty(STDOUT_FILENO) != 0 && !ctx.json;
    std::string lastStep;
    while (!outcome.done) {
        auto pd = bus.getEventLoopPollData();
        struct pollfd pfd = {pd.fd, pd.events, 0};
        (void)::poll(&pfd, 1, 1000);
        while (bus.processPendingRequest()) {
        }
        if (!outcome.done && !changed) {
            // No news for a second: make sure the operation still runs (the daemon may have restarted).
            auto op = proxy->getProperty("Operation").onInterface(kIface).get<std::string>();
            if (op != opId) {
                std::string status;
                proxy->callMethod("GetHistory").onInterface(kIface).withArguments(std::uint32_t{10}).storeResultsTo(status);
                for (const auto& h : nlohmann::json::parse(status)) {
                    if (h.value("id", "") == opId && h.contains("result")) {
                        outcome = {true, h["result"].value("success", false), h["result"].value("error", ""),
                                   h["result"].value("message", "")};
                    }
                }
            }
        }
        if (changed && !ctx.json) {
            changed = false;
            if (tty) {
                const int width = 30;
                const int filled = static_cast<int>(progress) * width / 100;
                std::cout << "\r[" << std::string(static_cast<std::size_t>(filled), '#')
                          << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << std::setw(3)
                          << progress << "% " << std::left << std::setw(60) << step.substr(0, 60) << std::flush;
            } else if (step != lastStep) {
                std::cout << std::setw(3) << progress << "% " << step << "\n";
                lastStep = step;
            }
        }
    }
    if (tty) {
        std::cout << "\n";
    }
    if (ctx.json) {
        std::cout << nlohmann::json{{"operation", opId}, {"success", outcome.ok}, {"error", outcome.name},
                                    {"message", outcome.message}}
                         .dump()
                  << "\n";
        return outcome.ok ? 0 : 1;
    }
    if (!outcome.ok) {
        return reportError(sdbus::Error(outcome.name.empty() ? "org.mbl.Error.Failed" : outcome.name, outcome.message));
    }
    std::cout << "done: " << outcome.message << " (operation " << opId << ")\n";
    return 0;
}

int history(Context& ctx, const std::vector<std::string>& args)
{
    std::uint32_t count = 10;
    if (!args.empty()) {
        count = static_cast<std::uint32_t>(std::strtoul(args[0].c_str(), nullptr, 10));
    }
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::string text;
    proxy->callMethod("GetHistory").onInterface(kIface).withArguments(count).storeResultsTo(text);
    auto doc = nlohmann::json::parse(text);
    if (ctx.json) {
        std::cout << doc.dump(2) << "\n";
        return 0;
    }
    std::cout << std::left << std::setw(30) << "OPERATION" << std::setw(7) << "FROM" << std::setw(8) << "ACTION"
              << std::setw(11) << "RESULT" << std::setw(21) << "FINISHED (UTC)" << "MESSAGE\n";
    for (const auto& h : doc) {
        std::cout << std::left << std::setw(30) << h.value("id", "") << std::setw(7) << h.value("source", "")
                  << std::setw(8) << (h.value("action_id", "").empty() ? "-" : h.value("action_id", ""))
                  << std::setw(11) << h.value("state", "") << std::setw(21)
                  << timeText(h.value("finished", std::int64_t{0}))
                  << (h.contains("result") ? h["result"].value("message", "") : "") << "\n";
    }
    return 0;
}

int operation(Context& ctx, const std::vector<std::string>&)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::string text;
    proxy->callMethod("GetStatus").onInterface(kIface).storeResultsTo(text);
    auto s = nlohmann::json::parse(text);
    if (ctx.json) {
        std::cout << s.dump(2) << "\n";
        return 0;
    }
    std::cout << "state:      " << s.value("state", "") << "\n"
              << "operation:  " << (s.value("operation", "").empty() ? "-" : s.value("operation", "")) << "\n"
              << "progress:   " << s.value("progress", 0) << "%\n"
              << "step:       " << (s.value("step", "").empty() ? "-" : s.value("step", "")) << "\n"
              << "last error: " << (s.value("last_error", "").empty() ? "-" : s.value("last_error", "")) << "\n";
    return 0;
}

int cancel(Context& ctx, const std::vector<std::string>& args)
{
    if (args.size() != 1) {
        std::cerr << "usage: mblctl cancel OPERATION\n";
        return 2;
    }
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    proxy->callMethod("Cancel").onInterface(kIface).withArguments(args[0]);
    std::cout << "cancel requested for " << args[0] << "\n";
    return 0;
}

} // namespace

void registerCoordinatorCommands(std::vector<Command>& out)
{
    out.push_back({"install", "install FILE", "Install a signed bundle through the coordinator, with live progress.",
                   install});
    out.push_back({"history", "history [N]", "The last N operations (default 10) with their outcome.", history});
    out.push_back({"operation", "operation", "The coordinator's current operation and step.", operation});
    out.push_back({"cancel", "cancel OPERATION", "Cancel an operation that has not started installing.", cancel});
}

} // namespace mbl::ctl
