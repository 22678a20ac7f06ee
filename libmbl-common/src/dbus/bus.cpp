// SPDX-License-Identifier: Apache-2.0
#include "mbl/dbus/bus.h"

#include "mbl/log.h"
#include "mbl/notify.h"
#include "mbl_version.h"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <systemd/sd-bus.h>
#include <unistd.h>

namespace mbl::dbus {

sdbus::Error toBusError(const Error& e)
{
    return sdbus::Error(e.name(), e.message);
}

Error fromBusError(const sdbus::Error& e)
{
    return Error{errorCodeFromName(e.getName()), e.getMessage()};
}

void completeOnWorker(SerialWorker& worker, EventLoop& loop, sdbus::Result<>&& result, std::function<Status()> job,
                      std::function<void()> then)
{
    auto reply = std::make_shared<sdbus::Result<>>(std::move(result));
    worker.post([&loop, reply, job = std::move(job), then = std::move(then)] {
        Status st;
        try {
            st = job();
        } catch (const std::exception& e) {
            st = unexpected(ErrorCode::Failed, std::string("internal error: ") + e.what());
        } catch (...) {
            st = unexpected(ErrorCode::Failed, "internal error");
        }
        loop.post([reply, st, then] {
            try {
                if (!st) {
                    reply->returnError(toBusError(st.error()));
                    return;
                }
                reply->returnResults();
                if (then) {
                    then();
                }
            } catch (const std::exception& e) {
                log::error(std::string("cannot send a reply: ") + e.what());
            }
        });
    });
}

void attach(EventLoop& loop, sdbus::IConnection& conn)
{
    EventLoop::Source src;
    src.prepare = [&conn](int& fd, short& events, std::uint64_t& deadline) {
        auto pd = conn.getEventLoopPollData();
        fd = pd.fd;
        events = pd.events;
        deadline = pd.timeout_usec;
    };
    src.dispatch = [&conn, &loop]() {
        try {
            while (conn.processPendingRequest()) {
            }
        } catch (const sdbus::Error& e) {
            log::error("lost the bus connection: " + e.getMessage());
            loop.fail();
        }
    };
    loop.addSource(std::move(src));
}

std::unique_ptr<sdbus::IConnection> connectSystemBus()
{
    return sdbus::createSystemBusConnection();
}

namespace {
void usage(const DaemonInfo& info)
{
    std::cout << "Usage: " << info.program << " [--root DIR]\n"
              << info.summary << "\n\n"
              << "  --root DIR   keep configuration, state, runtime and logs under DIR (also MBL_ROOT)\n"
              << "  --version    print the version\n"
              << "Bus name: " << info.busName << " (system bus; DBUS_SYSTEM_BUS_ADDRESS is honoured)\n";
}
} // namespace

int runDaemon(int argc, char** argv, const DaemonInfo& info, const SetupFn& setup)
{
    std::string root;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--root" && i + 1 < argc) {
            root = argv[++i];
        } else if (a.rfind("--root=", 0) == 0) {
            root = a.substr(7);
        } else if (a == "--help" || a == "-h") {
            usage(info);
            return 0;
        } else if (a == "--version") {
            std::cout << info.program << " " << MBL_VERSION << "\n";
            return 0;
        } else {
            std::cerr << info.program << ": unknown argument '" << a << "' (see --help)\n";
            return 2;
        }
    }

    log::init(info.program);
    // Every daemon hands out and feeds pipes (bundles, downloads, app archives):
    // a reader that goes away must be an EPIPE to handle, not a signal that kills.
    std::signal(SIGPIPE, SIG_IGN);
    auto fail = [&](const std::string& why) {
        log::error(why);
        return 1;
    };

    EventLoop loop;
    if (!loop.watchTerminationSignals()) {
        return fail("cannot watch termination signals");
    }
    Paths paths = Paths::resolve(root);
    const std::string configFile = paths.config(info.configName);
    auto config = Config::load(configFile);
    if (!config) {
        return fail("invalid configuration: " + config.error().message);
    }

    std::unique_ptr<sdbus::IConnection> conn;
    try {
        conn = connectSystemBus();
    } catch (const sdbus::Error& e) {
        return fail("cannot connect to the system bus: " + e.getMessage());
    }
    attach(loop, *conn);

    DaemonContext ctx{paths, loop, *conn, configFile, std::move(config).value(), {}};
    std::shared_ptr<void> objects;
    try {
        auto made = setup(ctx);
        if (!made) {
            return fail("cannot start: " + made.error().describe());
        }
        objects = std::move(made).value();
    } catch (const std::exception& e) {
        return fail(std::string("cannot start: ") + e.what());
    }

    try {
        conn->requestName(info.busName);
    } catch (const sdbus::Error& e) {
        std::string why = e.getName() + ": " + e.getMessage();
        if (e.getName() == "org.freedesktop.DBus.Error.FileExists" || e.getName() == "System.Error.EEXIST") {
            why = "another instance already owns the name";
        } else if (e.getName() == "org.freedesktop.DBus.Error.AccessDenied" || e.getName() == "System.Error.EACCES") {
            why = "AccessDenied: the bus policy does not let this user (uid " + std::to_string(::getuid()) +
                  ") own the name";
        }
        return fail("cannot own bus name " + info.busName + ": " + why);
    }

    notify::ready();
    log::info("ready on " + info.busName + (paths.root.empty() ? "" : " (root " + paths.root + ")"));
    int sig = loop.run();
    notify::stopping();
    log::info(sig != 0 ? std::string("stopping on ") + strsignal(sig) : std::string("stopping"));
    if (sig > 0 && !loop.failed() && ctx.beforeExit) {
        auto proceeded = std::make_shared<bool>(false);
        ctx.beforeExit([&loop, proceeded] {
            *proceeded = true;
            loop.quit();
        });
        if (!*proceeded) {
            const int again = loop.run(); // until proceed() (or a second signal, or a broken bus)
            if (!*proceeded) {
                log::warning(again > 0 && !loop.failed() ? std::string("stopping at once on a second ") + strsignal(again)
                                       : std::string("stopping before the daemon's own stop steps ended"));
            }
        }
    }
    try {
        conn->releaseName(info.busName);
    } catch (const sdbus::Error&) {
        // the bus may already be gone; exiting is what matters
    }
    objects.reset();
    return (sig >= 0 && !loop.failed()) ? 0 : 1;
}

} // namespace mbl::dbus
