// SPDX-License-Identifier: Apache-2.0
#pragma once
// Private networking for apps ("network": "private"): one Linux bridge made
// and removed by the manager, a network namespace per app (bind-mounted under
// <runtime>/apps/net/ so it outlives a container restart) joined to the bridge
// by a veth pair, NAT for outbound traffic, iptables DNAT for the ports an app
// publishes, and nothing else inbound. No CNI, no daemon: the `ip`, `bridge`,
// `nsenter` and `iptables` tools, run on the manager's runtime worker.
//
//   bridge <bridge> with the gateway address (first host of the subnet)
//   each app: an address of the subnet (allocated at install, kept across
//   updates and restarts, freed at removal), eth0 in its namespace, default
//   route through the gateway, the bridge port isolated (apps do not see each
//   other), resolv.conf naming the configured resolvers.
//   iptables chains MBL-<bridge>-{POST,DNAT,FWD,OUT} hooked into POSTROUTING,
//   PREROUTING/OUTPUT, FORWARD and OUTPUT: masquerade what leaves the subnet;
//   published ports DNATed from the host's addresses (not loopback) to the app;
//   new connections into the subnet refused unless DNATed.
//
// On disk: <state>/apps/.network.json {"<app>": {"address": "10.89.0.2",
// "ports": [{"host": 8080, "container": 80, "protocol": "tcp"}]}}.

#include "mbl/expected.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace mbl::containers {

struct PortMap {
    std::uint16_t host = 0;
    std::uint16_t container = 0;
    std::string protocol = "tcp"; // tcp | udp
    bool operator==(const PortMap& o) const
    {
        return host == o.host && container == o.container && protocol == o.protocol;
    }
};

struct NetworkConfig {
    std::string bridge = "mbl0";
    std::string subnet = "10.89.0.0/24";
    // Resolvers written into the apps' resolv.conf; empty: the host's
    // /etc/resolv.conf nameservers that are not loopback addresses.
    std::vector<std::string> dns;
};

// An IPv4 subnet "a.b.c.d/n" with n from 16 to 30.
struct Subnet {
    std::uint32_t network = 0;
    unsigned prefix = 0;
    static Expected<Subnet> parse(const std::string& text);
    std::uint32_t gateway() const { return network + 1; }
    std::uint32_t broadcast() const { return network | (0xFFFFFFFFu >> prefix); }
    std::string text() const;
};
std::string ipText(std::uint32_t addr);
Expected<std::uint32_t> parseIp(const std::string& text);

class AppNetworks {
public:
    AppNetworks(NetworkConfig config, std::string stateFile, std::string runtimeDir);
    Status load();
    const NetworkConfig& config() const { return config_; }

    // The app's address (kept if it has one) and its published ports, recorded
    // durably. AlreadyExists when another app publishes one of the host ports,
    // NoSpace when the subnet has no free address. Thread-safe.
    Expected<std::string> reserve(const std::string& app, const std::vector<PortMap>& ports);
    Status release(const std::string& app);
    std::optional<std::string> addressOf(const std::string& app) const;
    bool anyReserved() const;

    // Paths the runtime config names (deterministic: known at install).
    std::string netnsPath(const std::string& app) const { return runtimeDir_ + "/" + app + ".ns"; }
    std::string resolvPath(const std::string& app) const { return runtimeDir_ + "/" + app + ".resolv.conf"; }
    std::string hostsPath(const std::string& app) const { return runtimeDir_ + "/" + app + ".hosts"; }

    // Before a start (runtime worker): the bridge, the NAT rules, the app's
    // namespace, veth pair, address, routes, DNAT rules and resolv.conf, each
    // made if missing. Failed names the step and the tool's message.
    Status prepare(const std::string& app);
    // At removal: the app's namespace (its veth pair goes with it), its DNAT
    // rules and files. When no app holds an address any more, the bridge and
    // the chains go too.
    void teardown(const std::string& app);
    // Removes the bridge and chains when no app holds an address (at start-up).
    void cleanupIfUnused();

private:
    Status ensureBridge();
    Status ensureRules();
    Status portRules(const std::string& app, const std::string& address, const std::vector<PortMap>& ports, bool add);
    std::string hostVeth(const std::string& app) const;
    std::string chain(const char* suffix) const { return "MBL-" + config_.bridge + "-" + suffix; }
    Status saveLocked() const;
    std::vector<std::string> resolvers() const;

    struct Entry {
        std::uint32_t address = 0;
        std::vector<PortMap> ports;
    };
    NetworkConfig config_;
    Subnet subnet_;
    std::string stateFile_;
    std::string runtimeDir_;
    mutable std::mutex mu_;
    std::map<std::string, Entry> entries_;
};

} // namespace mbl::containers
