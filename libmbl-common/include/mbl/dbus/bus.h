// SPDX-License-Identifier: Apache-2.0
#pragma once
// The bus side of libmbl-common: converting errors at the adaptor boundary,
// running sdbus-c++ inside an mbl::EventLoop, and the standard daemon main.
// Only *_dbus.cpp files, main.cpp files and clients include this header.

#include "mbl/config.h"
#include "mbl/event_loop.h"
#include "mbl/expected.h"
#include "mbl/paths.h"
#include "mbl/serial_worker.h"

#include <sdbus-c++/sdbus-c++.h>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>

namespace mbl::dbus {

sdbus::Error toBusError(const Error& e);
// The bus error name, as an mbl::Error (for clients).
Error fromBusError(const sdbus::Error& e);

// Runs fn and turns anything thrown into an sdbus::Error: in sdbus-c++ 1.2 any
// other exception escaping a handler aborts the daemon.
template <typename F>
auto guard(F&& fn) -> decltype(fn())
{
    try {
        return fn();
    } catch (const sdbus::Error&) {
        throw;
    } catch (const std::exception& e) {
        throw sdbus::Error("org.mbl.Error.Failed", std::string("internal error: ") + e.what());
    } catch (...) {
        throw sdbus::Error("org.mbl.Error.Failed", "internal error");
    }
}

// Value of an Expected, or throws its error as an sdbus::Error.
template <typename T>
T unwrap(Expected<T>&& e)
{
    if (!e) {
        throw toBusError(e.error());
    }
    if constexpr (!std::is_void_v<T>) {
        return std::move(e).value();
    }
}

inline void unwrap(Status&& e)
{
    if (!e) {
        throw toBusError(e.error());
    }
}

// For a method annotated org.freedesktop.DBus.Method.Async=server: runs `job` on
// `worker` (off the bus thread, in order with the worker's other jobs), then
// replies from the loop thread with the job's error, or with success after
// running `then` (e.g. to announce a property change).
void completeOnWorker(SerialWorker& worker, EventLoop& loop, sdbus::Result<>&& result, std::function<Status()> job,
                      std::function<void()> then = {});

// Lets `loop` drive `conn` (its fd and timeouts); the connection must outlive the loop's run().
void attach(EventLoop& loop, sdbus::IConnection& conn);

// Connects to the system bus (honouring DBUS_SYSTEM_BUS_ADDRESS).
std::unique_ptr<sdbus::IConnection> connectSystemBus();

struct DaemonContext {
    Paths paths;
    EventLoop& loop;
    sdbus::IConnection& connection;
    std::string configFile; // <configDir>/<daemon config name>
    Config config;          // its content ({} when the file does not exist)
    // Optional, set by `setup`: runs on the loop thread when SIGTERM/SIGINT
    // arrives, before the daemon gives up its name and exits. The loop (and so
    // the bus) keeps running until the handler calls `proceed`; a second
    // signal meanwhile ends the daemon at once.
    std::function<void(std::function<void()> proceed)> beforeExit;
};

struct DaemonInfo {
    std::string program;    // "mbl-update"
    std::string busName;    // "org.mbl.Update1"
    std::string configName; // "update.json" under the configuration directory
    std::string summary;    // one line for --help
};

// The standard daemon main: parses --root/--help/--version, sets up logging and the
// event loop, connects to the bus, lets `setup` register its objects (and return
// whatever must stay alive), requests the name last, signals READY=1 and runs until
// SIGTERM/SIGINT (then until ctx.beforeExit lets it go). Any failure before READY stops the daemon with a one-line reason
// and a non-zero exit.
using SetupFn = std::function<Expected<std::shared_ptr<void>>(DaemonContext&)>;
int runDaemon(int argc, char** argv, const DaemonInfo& info, const SetupFn& setup);

} // namespace mbl::dbus
