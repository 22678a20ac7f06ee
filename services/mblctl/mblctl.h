// SPDX-License-Identifier: Apache-2.0
#pragma once
// mblctl: the human CLI over the services' D-Bus API. Each group of subcommands
// lives in its own file and registers here.

#include "mbl/paths.h"

#include <sdbus-c++/sdbus-c++.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mbl::ctl {

struct Context {
    Paths paths;
    bool json = false;
    std::unique_ptr<sdbus::IConnection> connection;
    // Connects on first use.
    sdbus::IConnection& bus();
};

struct Command {
    std::string name;
    std::string usage;   // "status [--json]"
    std::string summary; // one line
    std::function<int(Context&, const std::vector<std::string>& args)> run;
};

// Each subcommand group adds its commands.
void registerStatusCommands(std::vector<Command>& out);
void registerIdentityCommands(std::vector<Command>& out);
void registerUpdateCommands(std::vector<Command>& out);
void registerAppCommands(std::vector<Command>& out);
void registerCloudCommands(std::vector<Command>& out);
void registerCoordinatorCommands(std::vector<Command>& out);

// Renders a D-Bus variant as text for tables (strings bare, containers compact).
std::string variantToText(const sdbus::Variant& v);

// Prints an error in the form "mblctl: <Name>: message" and returns the exit code 1.
int reportError(const sdbus::Error& e);

} // namespace mbl::ctl
