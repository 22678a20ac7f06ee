// SPDX-License-Identifier: Apache-2.0
// mblctl app: list | install FILE | start | stop | restart | remove | logs —
// the container manager's D-Bus API for people.

#include "mblctl.h"

#include "mbl/fd.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <fcntl.h>
#include <iomanip>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <unistd.h>

namespace mbl::ctl {

namespace {

const char kBus[] = "org.mbl.ContainerManager1";
const char kPath[] = "/org/mbl/ContainerManager1";
const char kIface[] = "org.mbl.ContainerManager1";

const char kUsage[] =
    "usage: mblctl app list\n"
    "       mblctl app install FILE [--name NAME] [--app-version V] [--options JSON] [--no-wait]\n"
    "       mblctl app start|stop|restart NAME\n"
    "       mblctl app remove NAME [--data]\n"
    "       mblctl app logs NAME [--lines N]\n"
    "       mblctl app settings [JSON | -]   (no argument: show the over-the-air settings;\n"
    "                                         JSON or - (stdin): replace them all)\n";

int usageError(const std::string& why)
{
    std::cerr << "mblctl app: " << why << "\n" << kUsage;
    return 2;
}

int list(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    std::vector<sdbus::Struct<std::string, std::string, std::string>> apps;
    proxy->callMethod("ListApps").onInterface(kIface).storeResultsTo(apps);
    if (ctx.json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& a : apps) {
            out.push_back({{"name", a.get<0>()}, {"version", a.get<1>()}, {"state", a.get<2>()}});
        }
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    // Columns as wide as their longest entry, two spaces apart: long names never run together.
    std::size_t nameWidth = 4;
    std::size_t versionWidth = 7;
    for (const auto& a : apps) {
        nameWidth = std::max(nameWidth, a.get<0>().size());
        versionWidth = std::max(versionWidth, a.get<1>().size());
    }
    const int nw = static_cast<int>(nameWidth + 2);
    const int vw = static_cast<int>(versionWidth + 2);
    std::cout << std::left << std::setw(nw) << "NAME" << std::setw(vw) << "VERSION" << "STATE\n";
    for (const auto& a : apps) {
        std::cout << std::left << std::setw(nw) << a.get<0>() << std::setw(vw) << a.get<1>() << a.get<2>() << "\n";
    }
    return 0;
}

int install(Context& ctx, const std::vector<std::string>& args)
{
    std::string file;
    nlohmann::json options = nlohmann::json::object();
    bool wait = true;
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto next = [&]() -> std::string { return i + 1 < args.size() ? args[++i] : std::string(); };
        if (a == "--name") {
            options["name"] = next();
        } else if (a == "--app-version") {
            options["version"] = next();
        } else if (a == "--options") {
            try {
                auto extra = nlohmann::json::parse(next());
                for (auto it = extra.begin(); it != extra.end(); ++it) {
                    options[it.key()] = it.value();
                }
            } catch (const std::exception& e) {
                return usageError(std::string("--options is not a JSON object: ") + e.what());
            }
        } else if (a == "--no-wait") {
            wait = false;
        } else if (file.empty() && a.rfind("--", 0) != 0) {
            file = a;
        } else {
            return usageError("unknown argument '" + a + "'");
        }
    }
    if (file.empty()) {
        return usageError("install needs a FILE");
    }
    Fd fd{::open(file.c_str(), O_RDONLY | O_CLOEXEC)};
    if (!fd) {
        std::cerr << "mblctl: cannot open " << file << "\n";
        return 1;
    }
    auto& bus = ctx.bus();
    auto proxy = sdbus::createProxy(bus, kBus, kPath);
    std::mutex m;
    std::condition_variable cv;
    std::map<std::string, std::tuple<std::string, bool, std::string, std::string>> done;
    proxy->uponSignal("InstallCompleted")
        .onInterface(kIface)
        .call([&](const std::string& op, const std::string& name, bool ok, const std::string& err, const std::string& msg) {
            std::lock_guard<std::mutex> lock(m);
            done[op] = {name, ok, err, msg};
            cv.notify_all();
        });
    proxy->finishRegistration();
    bus.enterEventLoopAsync();
    std::string op;
    proxy->callMethod("InstallApp").onInterface(kIface).withArguments(sdbus::UnixFd{fd.get()}, options.dump()).storeResultsTo(op);
    if (!wait) {
        std::cout << op << "\n";
        bus.leaveEventLoop();
        return 0;
    }
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done.count(op) != 0; });
    auto [name, ok, err, msg] = done[op];
    lock.unlock();
    bus.leaveEventLoop();
    if (!ok) {
        return reportError(sdbus::Error(err, msg));
    }
    if (ctx.json) {
        std::cout << nlohmann::json{{"operation", op}, {"name", name}, {"success", true}}.dump() << "\n";
    } else {
        std::cout << "installed " << name << " (" << op << ")\n";
    }
    return 0;
}

int runApp(Context& ctx, const std::vector<std::string>& args)
{
    if (args.empty()) {
        return usageError("missing subcommand");
    }
    const std::string& sub = args[0];
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (sub == "list") {
        return list(ctx);
    }
    if (sub == "install") {
        return install(ctx, rest);
    }
    if (sub == "settings") {
        auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
        if (rest.empty()) {
            std::string text;
            proxy->callMethod("GetSettings").onInterface(kIface).storeResultsTo(text);
            try {
                std::cout << nlohmann::json::parse(text).dump(ctx.json ? -1 : 2) << "\n";
            } catch (const std::exception&) {
                std::cout << text << "\n";
            }
            return 0;
        }
        std::string doc = rest[0];
        if (doc == "-") {
            doc.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        }
        proxy->callMethod("ApplySettings").onInterface(kIface).withTimeout(std::chrono::minutes(1)).withArguments(doc);
        return 0;
    }
    if (rest.empty()) {
        return usageError(sub + " needs an app NAME");
    }
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    const std::string& name = rest[0];
    if (sub == "start" || sub == "stop" || sub == "restart") {
        const std::string method = sub == "start" ? "StartApp" : sub == "stop" ? "StopApp" : "RestartApp";
        proxy->callMethod(method).onInterface(kIface).withTimeout(std::chrono::minutes(5)).withArguments(name);
        return 0;
    }
    if (sub == "remove") {
        bool data = rest.size() > 1 && rest[1] == "--data";
        proxy->callMethod("RemoveApp").onInterface(kIface).withTimeout(std::chrono::minutes(5)).withArguments(name, data);
        if (ctx.json) {
            std::cout << nlohmann::json{{"removed", name}, {"data_removed", data}}.dump() << "\n";
        } else {
            std::cout << "removed " << name << (data ? " and its data\n" : " (its data is kept; --data removes it)\n");
        }
        return 0;
    }
    if (sub == "logs") {
        std::uint32_t lines = 0;
        if (rest.size() > 2 && rest[1] == "--lines") {
            lines = static_cast<std::uint32_t>(std::strtoul(rest[2].c_str(), nullptr, 10));
        }
        std::string text;
        proxy->callMethod("GetLogs").onInterface(kIface).withArguments(name, lines).storeResultsTo(text);
        std::cout << text;
        return 0;
    }
    return usageError("unknown subcommand '" + sub + "'");
}

} // namespace

void registerAppCommands(std::vector<Command>& out)
{
    out.push_back(Command{"app", "app list|install FILE|start|stop|restart|remove|logs NAME|settings [JSON]",
                          "OCI apps: install, lifecycle and logs (mblctl app --help for details)",
                          [](Context& ctx, const std::vector<std::string>& args) {
                              if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
                                  std::cout << kUsage;
                                  return 0;
                              }
                              return runApp(ctx, args);
                          }});
}

} // namespace mbl::ctl
