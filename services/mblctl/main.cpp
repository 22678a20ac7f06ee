// SPDX-License-Identifier: Apache-2.0
#include "mblctl.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"
#include "mbl/strings.h"
#include "mbl_version.h"

#include <cstdlib>
#include <iostream>

namespace mbl::ctl {

sdbus::IConnection& Context::bus()
{
    if (!connection) {
        // A stack started under --root (tests, the demo) leaves its private bus address
        // in the runtime directory; an explicit DBUS_SYSTEM_BUS_ADDRESS wins.
        if (std::getenv("DBUS_SYSTEM_BUS_ADDRESS") == nullptr && !paths.root.empty()) {
            if (auto addr = fs::readFile(paths.runtime("bus-address"), 4096)) {
                ::setenv("DBUS_SYSTEM_BUS_ADDRESS", str::trim(*addr).c_str(), 1);
            }
        }
        connection = dbus::connectSystemBus();
    }
    return *connection;
}

int reportError(const sdbus::Error& e)
{
    std::string name = e.getName();
    const std::string prefix = "org.mbl.Error.";
    if (name.rfind(prefix, 0) == 0) {
        name = name.substr(prefix.size());
    }
    std::cerr << "mblctl: " << name << ": " << e.getMessage() << "\n";
    return 1;
}

} // namespace mbl::ctl

namespace {
void usage(const std::vector<mbl::ctl::Command>& cmds)
{
    std::cout << "Usage: mblctl [--root DIR] [--json] COMMAND [ARGS]\n\n"
              << "Commands:\n";
    for (const auto& c : cmds) {
        std::cout << "  " << c.usage << "\n      " << c.summary << "\n";
    }
    std::cout << "\n  --root DIR  use the stack started under DIR (also MBL_ROOT)\n"
              << "  --json      machine-readable output\n";
}
} // namespace

int main(int argc, char** argv)
{
    std::vector<mbl::ctl::Command> cmds;
    mbl::ctl::registerStatusCommands(cmds);
    mbl::ctl::registerIdentityCommands(cmds);
    mbl::ctl::registerUpdateCommands(cmds);
    mbl::ctl::registerAppCommands(cmds);
    mbl::ctl::registerCloudCommands(cmds);
    mbl::ctl::registerCoordinatorCommands(cmds);

    std::string root;
    bool json = false;
    std::vector<std::string> rest;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--root" && i + 1 < argc) {
            root = argv[++i];
        } else if (a.rfind("--root=", 0) == 0) {
            root = a.substr(7);
        } else if (a == "--json") {
            json = true;
        } else if (a == "--help" || a == "-h") {
            usage(cmds);
            return 0;
        } else if (a == "--version") {
            std::cout << "mblctl " << MBL_VERSION << "\n";
            return 0;
        } else {
            rest.push_back(a);
        }
    }
    if (rest.empty()) {
        usage(cmds);
        return 2;
    }
    mbl::ctl::Context ctx;
    ctx.paths = mbl::Paths::resolve(root);
    ctx.json = json;
    for (const auto& c : cmds) {
        if (c.name == rest[0]) {
            std::vector<std::string> args(rest.begin() + 1, rest.end());
            try {
                return c.run(ctx, args);
            } catch (const sdbus::Error& e) {
                return mbl::ctl::reportError(e);
            } catch (const std::exception& e) {
                std::cerr << "mblctl: " << e.what() << "\n";
                return 1;
            }
        }
    }
    std::cerr << "mblctl: unknown command '" << rest[0] << "' (see mblctl --help)\n";
    return 2;
}
