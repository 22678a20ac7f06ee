// mblctl update: install a bundle (with a progress bar), show the A/B status,
// commit or abandon a trial, over org.mbl.Update1.

#include "mblctl.h"

#include "mbl/fd.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fcntl.h>
#include <iostream>
#include <poll.h>
#include <unistd.h>

namespace mbl::ctl {

namespace {

constexpr const char* kBus = "org.mbl.Update1";
constexpr const char* kPath = "/org/mbl/Update1";
constexpr const char* kIface = "org.mbl.Update1";

using SlotStates = std::vector<sdbus::Struct<std::string, std::string, std::string, std::uint64_t>>;

template <typename T>
T prop(sdbus::IProxy& p, const char* name)
{
    return p.getProperty(name).onInterface(kIface).get<T>();
}

void drawBar(unsigned pct)
{
    const int width = 40;
    const int filled = static_cast<int>(pct) * width / 100;
    std::cerr << "\r[" << std::string(static_cast<std::size_t>(filled), '#')
              << std::string(static_cast<std::size_t>(width - filled), ' ') << "] " << pct << "%" << std::flush;
}

int install(Context& ctx, const std::vector<std::string>& args)
{
    const bool noArm = args.size() == 3 && args[1] == "--no-arm";
    if (args.size() != 2 && !noArm) {
        std::cerr << "usage: mblctl update install [--no-arm] FILE\n";
        return 2;
    }
    const std::string file = args.back();
    Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        std::cerr << "mblctl: cannot open " << file << "\n";
        return 1;
    }
    std::map<std::string, sdbus::Variant> options;
    if (noArm) {
        options["arm"] = sdbus::Variant(false);
    }
    auto& bus = ctx.bus();
    auto proxy = sdbus::createProxy(bus, kBus, kPath);
    std::string opId;
    bool done = false;
    bool ok = false;
    std::string errName;
    std::string errMsg;
    proxy->uponSignal("Completed")
        .onInterface(kIface)
        .call([&](const std::string& id, bool success, const std::string& name, const std::string& message) {
            if (id == opId || opId.empty()) {
                done = true;
                ok = success;
                errName = name;
                errMsg = message;
            }
        });
    proxy->finishRegistration();
    proxy->callMethod("Install")
        .onInterface(kIface)
        .withArguments(sdbus::UnixFd(fd.get()), options)
        .storeResultsTo(opId);
    const bool tty = ::isatty(STDERR_FILENO) != 0 && !ctx.json;
    unsigned last = 101;
    while (!done) {
        while (bus.processPendingRequest()) {
        }
        if (done) {
            break;
        }
        auto pd = bus.getEventLoopPollData();
        struct pollfd pfd{pd.fd, pd.events, 0};
        (void)::poll(&pfd, 1, 200);
        while (bus.processPendingRequest()) {
        }
        if (done) {
            break;
        }
        // Also notice the end if the signal was missed (e.g. the daemon restarted).
        const auto op = prop<std::string>(*proxy, "Operation");
        const auto pct = prop<std::uint32_t>(*proxy, "Progress");
        if (tty && pct != last) {
            drawBar(pct);
            last = pct;
        }
        if (op != opId) {
            while (bus.processPendingRequest()) {
            }
            if (!done) {
                const auto err = prop<std::string>(*proxy, "LastError");
                done = true;
                ok = err.empty();
                errName = err.substr(0, err.find(':'));
                errMsg = err.find(": ") != std::string::npos ? err.substr(err.find(": ") + 2) : err;
            }
        }
    }
    if (tty) {
        drawBar(ok ? 100 : last > 100 ? 0 : last);
        std::cerr << "\n";
    }
    if (ctx.json) {
        std::cout << nlohmann::json{{"operation", opId}, {"success", ok}, {"error", errName}, {"message", errMsg}}.dump()
                  << "\n";
    } else if (ok && noArm) {
        std::cout << "installed, not armed (operation " << opId << "): mblctl update arm " << opId
                  << " to try it, mblctl update release " << opId << " to drop it\n";
    } else if (ok) {
        std::cout << "installed (operation " << opId << "); active slot "
                  << prop<std::string>(*proxy, "ActiveSlot") << "\n";
    }
    if (!ok) {
        return reportError(sdbus::Error(errName, errMsg));
    }
    return 0;
}

int status(Context& ctx)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    const auto slots = prop<SlotStates>(*proxy, "SlotStates");
    nlohmann::json j = {{"booted_slot", prop<std::string>(*proxy, "BootedSlot")},
                        {"active_slot", prop<std::string>(*proxy, "ActiveSlot")},
                        {"firmware_version", prop<std::string>(*proxy, "FirmwareVersion")},
                        {"security_version_floor", prop<std::uint64_t>(*proxy, "SecurityVersionFloor")},
                        {"compatible", prop<std::string>(*proxy, "Compatible")},
                        {"operation", prop<std::string>(*proxy, "Operation")},
                        {"progress", prop<std::uint32_t>(*proxy, "Progress")},
                        {"last_error", prop<std::string>(*proxy, "LastError")}};
    j["slots"] = nlohmann::json::array();
    for (const auto& s : slots) {
        j["slots"].push_back({{"slot", s.get<0>()}, {"state", s.get<1>()}, {"version", s.get<2>()},
                              {"installed", s.get<3>()}});
    }
    if (ctx.json) {
        std::cout << j.dump(2) << "\n";
        return 0;
    }
    std::cout << "firmware:     " << j["firmware_version"].get<std::string>() << " (device class "
              << j["compatible"].get<std::string>() << ")\n"
              << "booted slot:  " << j["booted_slot"].get<std::string>() << "\n"
              << "next boot:    " << j["active_slot"].get<std::string>() << "\n"
              << "floor:        security_version " << j["security_version_floor"].get<std::uint64_t>() << "\n";
    for (const auto& s : slots) {
        std::cout << "slot " << s.get<0>() << ":       " << s.get<1>() << (s.get<2>().empty() ? "" : " " + s.get<2>())
                  << "\n";
    }
    if (!j["operation"].get<std::string>().empty()) {
        std::cout << "operation:    " << j["operation"].get<std::string>() << " " << j["progress"].get<std::uint32_t>()
                  << "%\n";
    }
    if (!j["last_error"].get<std::string>().empty()) {
        std::cout << "last error:   " << j["last_error"].get<std::string>() << "\n";
    }
    return 0;
}

int simple(Context& ctx, const char* method, const char* done)
{
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    proxy->callMethod(method).onInterface(kIface);
    std::cout << done << "\n";
    return 0;
}

int withOperation(Context& ctx, const std::vector<std::string>& args, const char* method, const std::string& done)
{
    if (args.size() != 2) {
        std::cerr << "usage: mblctl update " << args[0] << " OPERATION_ID\n";
        return 2;
    }
    auto proxy = sdbus::createProxy(ctx.bus(), kBus, kPath);
    proxy->callMethod(method).onInterface(kIface).withArguments(args[1]);
    std::cout << done << "\n";
    return 0;
}

int run(Context& ctx, const std::vector<std::string>& args)
{
    const std::string sub = args.empty() ? "status" : args[0];
    if (sub == "install") {
        return install(ctx, args);
    }
    if (sub == "status") {
        return status(ctx);
    }
    if (sub == "commit") {
        return simple(ctx, "Commit", "committed: the booted slot is permanent and the anti-rollback floor raised");
    }
    if (sub == "mark-bad") {
        return simple(ctx, "MarkBad", "trial abandoned: the bootloader falls back on the next boot");
    }
    if (sub == "arm") {
        return withOperation(ctx, args, "Arm", "armed: the next boot tries the new firmware");
    }
    if (sub == "release") {
        return withOperation(ctx, args, "Release", "released: the operation's staging is dropped");
    }
    std::cerr << "usage: mblctl update install [--no-arm] FILE | status | commit | mark-bad | arm OP | release OP\n";
    return 2;
}

} // namespace

void registerUpdateCommands(std::vector<Command>& out)
{
    out.push_back({"update", "update install [--no-arm] FILE | status | commit | mark-bad | arm OP | release OP [--json]",
                   "Install a signed bundle (with progress), show A/B slots, commit or abandon a trial, arm or "
                   "release an operation installed with --no-arm.",
                   run});
}

} // namespace mbl::ctl
