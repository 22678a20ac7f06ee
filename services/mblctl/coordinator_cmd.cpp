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
#include <sstream>
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

// The outcome of operation `opId` in the coordinator's history, if it is there.
bool outcomeFromHistory(sdbus::IProxy& proxy, const std::string& opId, bool& ok, std::string& name,
                        std::string& message)
{
    std::string text;
    proxy.callMethod("GetHistory").onInterface(kIface).withArguments(std::uint32_t{10}).storeResultsTo(text);
    for (const auto& h : nlohmann::json::parse(text)) {
        if (h.value("id", "") == opId && h.contains("result")) {
            ok = h["result"].value("success", false);
            name = h["result"].value("error", "");
            message = h["result"].value("message", "");
            return true;
        }
    }
    return false;
}

int install(Context& ctx, const std::vector<std::string>& args)
{
    bool replaceApps = false;
    std::string file;
    for (const auto& a : args) {
        if (a == "--replace-apps") {
            replaceApps = true;
        } else if (file.empty() && (a.empty() || a[0] != '-')) {
            file = a;
        } else {
            file.clear();
            break;
        }
    }
    if (file.empty()) {
        std::cerr << "usage: mblctl install [--replace-apps] FILE\n";
        return 2;
    }
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        std::cerr << "mblctl: cannot open " << file << ": " << std::strerror(errno) << "\n";
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
    std::string state;
    bool changed = false;
    const bool tty = ::isatty(STDOUT_FILENO) != 0 && !ctx.json;
    std::string lastLine;
    // Not a terminal (a log, a pipe, a test): one line per change, as it comes.
    auto printLine = [&] {
        if (tty || ctx.json) {
            return;
        }
        std::ostringstream line;
        line << std::setw(3) << progress << "% " << step;
        if (line.str() != lastLine) {
            std::cout << line.str() << "\n" << std::flush;
            lastLine = line.str();
        }
    };
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
            if (auto it = props.find("State"); it != props.end()) {
                state = it->second.get<std::string>();
            }
            printLine();
        });
    proxy->finishRegistration();
    // A firmware install reboots the device: the coordinator's name goes away and
    // comes back; the bus says so (in the development world mblctl survives it).
    bool saidReboot = false;
    auto busProxy = sdbus::createProxy(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    busProxy->uponSignal("NameOwnerChanged")
        .onInterface("org.freedesktop.DBus")
        .call([&](const std::string& name, const std::string& oldOwner, const std::string& newOwner) {
            if (name != kBus) {
                return;
            }
            if (!oldOwner.empty() && newOwner.empty() && state == "rebooting" && !saidReboot && !ctx.json) {
                std::cout << (tty ? "\n" : "") << "the device reboots into the new firmware; waiting for it to "
                                                  "come back (mblctl history shows the outcome)\n"
                          << std::flush;
                saidReboot = true;
            }
        });
    busProxy->finishRegistration();
    if (replaceApps) {
        std::map<std::string, sdbus::Variant> options{{"replace_apps", sdbus::Variant(true)}};
        proxy->callMethod("Install").onInterface(kIface).withArguments(sdbus::UnixFd(fd.get()), options)
            .storeResultsTo(opId);
    } else {
        proxy->callMethod("InstallBundle").onInterface(kIface).withArguments(sdbus::UnixFd(fd.get())).storeResultsTo(opId);
    }

    while (!outcome.done) {
        auto pd = bus.getEventLoopPollData();
        struct pollfd pfd = {pd.fd, pd.events, 0};
        (void)::poll(&pfd, 1, 1000);
        while (bus.processPendingRequest()) {
        }
        if (!outcome.done && !changed) {
            // No news for a second: make sure the operation still runs. A firmware
            // install reboots the device: the coordinator is gone for a while and
            // finishes the operation after the restart; its history has the outcome.
            try {
                auto op = proxy->getProperty("Operation").onInterface(kIface).get<std::string>();
                if (op != opId) {
                    outcome.done = outcomeFromHistory(*proxy, opId, outcome.ok, outcome.name, outcome.message);
                }
            } catch (const sdbus::Error&) {
                // The coordinator is not there (a reboot): NameOwnerChanged says when it is back.
            }
        }
        if (changed && tty) {
            const int width = 30;
            const int filled = static_cast<int>(progress) * width / 100;
            std::cout << "\r[" << std::string(static_cast<std::size_t>(filled), '#')
                      << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << std::setw(3) << progress
                      << "% " << std::left << std::setw(60) << step.substr(0, 60) << std::flush;
        }
        changed = false;
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
    out.push_back({"install", "install [--replace-apps] FILE",
                   "Install a signed bundle through the coordinator, with live progress (through the reboot of a "
                   "firmware update). --replace-apps: remove installed apps the bundle does not name.",
                   install});
    out.push_back({"history", "history [N]", "The last N operations (default 10) with their outcome.", history});
    out.push_back({"operation", "operation", "The coordinator's current operation and step.", operation});
    out.push_back({"cancel", "cancel OPERATION", "Cancel an operation before anything is armed or changed.", cancel});
}

} // namespace mbl::ctl
