// mbl-dev-stack: starts the whole stack on a private bus in a temporary folder
// (the harness the integration tests use) for the demo and for poking at it by
// hand. Runs a command against it, or waits for Ctrl-C with --keep.

#include "harness.h"

#include <csignal>
#include <iostream>
#include <unistd.h>

int main(int argc, char** argv)
{
    bool keep = false;
    std::vector<std::string> command;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--keep") {
            keep = true;
        } else if (a == "--") {
            command.assign(argv + i + 1, argv + argc);
            break;
        } else {
            std::cerr << "usage: mbl-dev-stack [--keep] [-- COMMAND ARGS...]\n";
            return 2;
        }
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, nullptr);

    mbl::test::TestStack stack;
    if (auto st = stack.startAll(); !st) {
        std::cerr << "mbl-dev-stack: " << st.error().describe() << "\n";
        return 1;
    }
    std::cout << "stack up: MBL_ROOT=" << stack.root() << "\n"
              << "          DBUS_SYSTEM_BUS_ADDRESS=" << stack.address() << "\n";
    int rc = 0;
    if (!command.empty()) {
        auto r = stack.runTool(command);
        std::cout << r.out;
        std::cerr << r.err;
        rc = r.status.code;
    }
    if (keep) {
        std::cout << "\nThe stack keeps running. In another shell:\n"
                  << "  export DBUS_SYSTEM_BUS_ADDRESS=" << stack.address() << "\n"
                  << "  busctl --address=$DBUS_SYSTEM_BUS_ADDRESS tree org.mbl.Update1\n"
                  << "  " << mbl::test::buildRoot() << "/services/mblctl/mblctl --root " << stack.root()
                  << " status\n"
                  << "Press Ctrl-C to stop it and remove everything.\n"
                  << std::flush;
        int sig = 0;
        sigwait(&mask, &sig);
    }
    return rc;
}
