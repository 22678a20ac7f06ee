// SPDX-License-Identifier: Apache-2.0
#include "network.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

namespace mbl::containers {

using nlohmann::json;

// ---------------------------------------------------------------- addresses

std::string ipText(std::uint32_t a)
{
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) +
           "." + std::to_string(a & 255);
}

Expected<std::uint32_t> parseIp(const std::string& text)
{
    auto parts = str::split(text, '.');
    if (parts.size() != 4) {
        return unexpected(ErrorCode::InvalidArgument, "'" + str::quotable(text) + "' is not an IPv4 address");
    }
    std::uint32_t a = 0;
    for (const auto& p : parts) {
        if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos) {
            return unexpected(ErrorCode::InvalidArgument, "'" + str::quotable(text) + "' is not an IPv4 address");
        }
        const unsigned long v = std::strtoul(p.c_str(), nullptr, 10);
        if (v > 255) {
            return unexpected(ErrorCode::InvalidArgument, "'" + str::quotable(text) + "' is not an IPv4 address");
        }
        a = (a << 8) | static_cast<std::uint32_t>(v);
    }
    return a;
}

Expected<Subnet> Subnet::parse(const std::string& text)
{
    const auto slash = text.find('/');
    if (slash == std::string::npos) {
        return unexpected(ErrorCode::InvalidArgument, "'" + str::quotable(text) + "' is not a subnet (a.b.c.d/n)");
    }
    auto ip = parseIp(text.substr(0, slash));
    const std::string n = text.substr(slash + 1);
    if (!ip || n.empty() || n.size() > 2 || n.find_first_not_of("0123456789") != std::string::npos) {
        return unexpected(ErrorCode::InvalidArgument, "'" + str::quotable(text) + "' is not a subnet (a.b.c.d/n)");
    }
    Subnet s;
    s.prefix = static_cast<unsigned>(std::stoul(n));
    if (s.prefix < 16 || s.prefix > 30) {
        return unexpected(ErrorCode::InvalidArgument, "subnet " + text + ": the prefix must be from /16 to /30");
    }
    s.network = *ip & (0xFFFFFFFFu << (32 - s.prefix));
    if (s.network != *ip) {
        return unexpected(ErrorCode::InvalidArgument, "subnet " + text + " has host bits set (did you mean " +
                                                          ipText(s.network) + "/" + n + "?)");
    }
    return s;
}

std::string Subnet::text() const
{
    return ipText(network) + "/" + std::to_string(prefix);
}

// ---------------------------------------------------------------- state

AppNetworks::AppNetworks(NetworkConfig config, std::string stateFile, std::string runtimeDir)
    : config_(std::move(config)), stateFile_(std::move(stateFile)), runtimeDir_(std::move(runtimeDir))
{
    auto s = Subnet::parse(config_.subnet);
    if (s) {
        subnet_ = *s;
    }
}

Status AppNetworks::load()
{
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    if (!fs::exists(stateFile_)) {
        return {};
    }
    auto text = fs::readFile(stateFile_, 1u << 20);
    if (!text) {
        return unexpected(text.error());
    }
    try {
        const json j = json::parse(*text);
        for (auto it = j.begin(); it != j.end(); ++it) {
            Entry e;
            auto a = parseIp(it.value().at("address").get<std::string>());
            if (!a || !str::isSafeName(it.key(), 48)) {
                return unexpected(ErrorCode::Io, stateFile_ + ": bad entry '" + it.key() + "'");
            }
            e.address = *a;
            for (const auto& p : it.value().at("ports")) {
                PortMap m;
                m.host = p.at("host").get<std::uint16_t>();
                m.container = p.at("container").get<std::uint16_t>();
                m.protocol = p.at("protocol").get<std::string>();
                e.ports.push_back(m);
            }
            entries_[it.key()] = e;
        }
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, stateFile_ + " is unreadable: " + e.what());
    }
    return {};
}

Status AppNetworks::saveLocked() const
{
    json j = json::object();
    for (const auto& [app, e] : entries_) {
        json ports = json::array();
        for (const auto& p : e.ports) {
            ports.push_back({{"host", p.host}, {"container", p.container}, {"protocol", p.protocol}});
        }
        j[app] = {{"address", ipText(e.address)}, {"ports", ports}};
    }
    return fs::writeFileAtomic(stateFile_, j.dump(2) + "\n", 0600);
}

Expected<std::string> AppNetworks::reserve(const std::string& app, const std::vector<PortMap>& ports)
{
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [other, e] : entries_) {
        if (other == app) {
            continue;
        }
        for (const auto& mine : ports) {
            for (const auto& theirs : e.ports) {
                if (mine.host == theirs.host && mine.protocol == theirs.protocol) {
                    return unexpected(ErrorCode::AlreadyExists, "setting 'ports': host port " +
                                                                    std::to_string(mine.host) + "/" + mine.protocol +
                                                                    " is already published by app '" + other + "'");
                }
            }
        }
    }
    auto it = entries_.find(app);
    const Entry previous = it != entries_.end() ? it->second : Entry{};
    std::uint32_t address = previous.address;
    if (address == 0) {
        for (std::uint32_t a = subnet_.gateway() + 1; a < subnet_.broadcast() && address == 0; ++a) {
            bool taken = false;
            for (const auto& [other, e] : entries_) {
                taken = taken || e.address == a;
            }
            if (!taken) {
                address = a;
            }
        }
        if (address == 0) {
            return unexpected(ErrorCode::NoSpace, "setting 'network': no address is left for app '" + app + "' in " +
                                                      subnet_.text() + " (containers.json network.subnet; " +
                                                      std::to_string(entries_.size()) + " apps hold one)");
        }
    }
    entries_[app] = Entry{address, ports};
    if (auto st = saveLocked(); !st) {
        if (it == entries_.end()) {
            entries_.erase(app);
        } else {
            entries_[app] = previous;
        }
        return unexpected(st.error());
    }
    return ipText(address);
}

Status AppNetworks::release(const std::string& app)
{
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.erase(app) == 0) {
        return {};
    }
    return saveLocked();
}

std::optional<std::string> AppNetworks::addressOf(const std::string& app) const
{
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(app);
    if (it == entries_.end()) {
        return std::nullopt;
    }
    return ipText(it->second.address);
}

bool AppNetworks::anyReserved() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return !entries_.empty();
}

// ---------------------------------------------------------------- the kernel side

namespace {

Status tool(const std::vector<std::string>& argv, const std::string& step)
{
    auto r = mbl::run(argv);
    if (!r) {
        return unexpected(ErrorCode::Failed, step + ": " + r.error().message);
    }
    if (!r->status.success()) {
        std::string cmd;
        for (const auto& a : argv) {
            cmd += (cmd.empty() ? "" : " ") + a;
        }
        return unexpected(ErrorCode::Failed,
                          step + ": `" + cmd + "` failed: " + str::quotable(str::trim(r->err + r->out), 300));
    }
    return {};
}

bool succeeds(const std::vector<std::string>& argv)
{
    auto r = mbl::run(argv);
    return r && r->status.success();
}

// A network namespace kept alive by a bind mount on `path` (as `ip netns add` does).
Status createNetns(const std::string& path)
{
    Fd f{::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600)};
    if (!f) {
        return unexpected(errnoError("create " + path, errno));
    }
    f.reset();
    const pid_t pid = ::fork();
    if (pid < 0) {
        return unexpected(errnoError("fork", errno));
    }
    if (pid == 0) {
        // Only system calls from here (the parent has threads).
        if (::unshare(CLONE_NEWNET) != 0) {
            ::_exit(1);
        }
        if (::mount("/proc/self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
            ::_exit(2);
        }
        ::_exit(0);
    }
    int ws = 0;
    while (::waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        ::unlink(path.c_str());
        return unexpected(ErrorCode::Failed, std::string("cannot make a network namespace at ") + path + " (" +
                                                 (WIFEXITED(ws) && WEXITSTATUS(ws) == 1 ? "unshare" : "bind mount") +
                                                 " failed)");
    }
    return {};
}

bool isNetns(const std::string& path)
{
    struct statfs sf {};
    return ::statfs(path.c_str(), &sf) == 0 && static_cast<unsigned long>(sf.f_type) == NSFS_MAGIC;
}

void removeNetns(const std::string& path)
{
    (void)::umount2(path.c_str(), MNT_DETACH);
    ::unlink(path.c_str());
}

std::string shortHash(const std::string& s)
{
    std::uint32_t h = 2166136261u; // FNV-1a
    for (unsigned char c : s) {
        h = (h ^ c) * 16777619u;
    }
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", h);
    return buf;
}

} // namespace

std::vector<std::string> AppNetworks::resolvers() const
{
    if (!config_.dns.empty()) {
        return config_.dns;
    }
    std::vector<std::string> out;
    if (auto text = fs::readFile("/etc/resolv.conf", 1 << 16)) {
        for (const auto& line : str::split(*text, '\n')) {
            auto f = str::split(str::trim(line), ' ');
            if (f.size() >= 2 && f[0] == "nameserver" && parseIp(f[1]) && !str::startsWith(f[1], "127.")) {
                out.push_back(f[1]);
            }
        }
    }
    return out;
}

std::string AppNetworks::hostVeth(const std::string& app) const
{
    return "mv" + shortHash(config_.bridge + "/" + app); // 10 characters: within IFNAMSIZ
}

Status AppNetworks::ensureBridge()
{
    const std::string& br = config_.bridge;
    const std::string gw = ipText(subnet_.gateway()) + "/" + std::to_string(subnet_.prefix);
    auto r = mbl::run({"ip", "-d", "-o", "link", "show", "dev", br});
    if (r && r->status.success()) {
        if (r->out.find(" bridge ") == std::string::npos) {
            return unexpected(ErrorCode::InvalidArgument,
                              "containers.json network.bridge '" + br +
                                  "' names an existing interface that is not a bridge: choose another name");
        }
        auto addr = mbl::run({"ip", "-o", "-4", "addr", "show", "dev", br});
        if (addr && addr->status.success() && addr->out.find(" " + gw + " ") == std::string::npos) {
            if (!str::trim(addr->out).empty()) {
                return unexpected(ErrorCode::InvalidArgument,
                                  "containers.json network.bridge '" + br + "' exists with another address than " + gw +
                                      " (not made by this manager): choose another name or subnet");
            }
            if (auto st = tool({"ip", "addr", "add", gw, "dev", br}, "network: address of bridge " + br); !st) {
                return st;
            }
        }
    } else {
        if (auto st = tool({"ip", "link", "add", br, "type", "bridge"}, "network: create bridge " + br); !st) {
            return st;
        }
        if (auto st = tool({"ip", "addr", "add", gw, "dev", br}, "network: address of bridge " + br); !st) {
            return st;
        }
    }
    (void)fs::writeFileAtomic("/proc/sys/net/ipv4/ip_forward", "1\n"); // outbound through NAT
    return tool({"ip", "link", "set", br, "up"}, "network: bring up bridge " + br);
}

Status AppNetworks::ensureRules()
{
    const std::string& br = config_.bridge;
    const std::string net = subnet_.text();
    struct Hook {
        const char* table;
        const char* builtin;
        std::string chain;
        std::vector<std::string> match;
    };
    const std::vector<Hook> hooks = {
        {"nat", "POSTROUTING", chain("POST"), {}},
        {"nat", "PREROUTING", chain("DNAT"), {"-m", "addrtype", "--dst-type", "LOCAL"}},
        {"nat", "OUTPUT", chain("DNAT"), {"-m", "addrtype", "--dst-type", "LOCAL"}},
        {"filter", "FORWARD", chain("FWD"), {}},
        {"filter", "OUTPUT", chain("OUT"), {}},
    };
    // A chain that exists is taken as complete (made below in one go).
    if (succeeds({"iptables", "-w", "-t", "filter", "-n", "-L", chain("OUT")})) {
        return {};
    }
    for (const auto& [table, name, rules] :
         std::vector<std::tuple<std::string, std::string, std::vector<std::vector<std::string>>>>{
             {"nat", chain("POST"), {{"-s", net, "!", "-o", br, "-j", "MASQUERADE"}}},
             {"nat", chain("DNAT"), {}},
             {"filter",
              chain("FWD"),
              {{"-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
               {"-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"},
               {"-i", br, "!", "-o", br, "-j", "ACCEPT"},
               {"-o", br, "-j", "REJECT"}}},
             {"filter",
              chain("OUT"),
              {{"-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "RETURN"},
               {"-o", br, "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT", "--reject-with",
                "tcp-reset"},
               {"-o", br, "-m", "conntrack", "--ctstate", "NEW", "-j", "REJECT"}}},
         }) {
        (void)succeeds({"iptables", "-w", "-t", table, "-N", name});
        (void)succeeds({"iptables", "-w", "-t", table, "-F", name});
        for (const auto& r : rules) {
            std::vector<std::string> argv = {"iptables", "-w", "-t", table, "-A", name};
            argv.insert(argv.end(), r.begin(), r.end());
            if (auto st = tool(argv, "network: iptables chain " + name); !st) {
                return st;
            }
        }
    }
    for (const auto& h : hooks) {
        std::vector<std::string> rule = h.match;
        rule.insert(rule.end(), {"-j", h.chain});
        std::vector<std::string> check = {"iptables", "-w", "-t", h.table, "-C", h.builtin};
        check.insert(check.end(), rule.begin(), rule.end());
        if (!succeeds(check)) {
            std::vector<std::string> add = {"iptables", "-w", "-t", h.table, "-I", h.builtin, "1"};
            add.insert(add.end(), rule.begin(), rule.end());
            if (auto st = tool(add, std::string("network: hook into ") + h.builtin); !st) {
                return st;
            }
        }
    }
    return {};
}

Status AppNetworks::portRules(const std::string& app, const std::string& address, const std::vector<PortMap>& ports,
                              bool add)
{
    for (const auto& p : ports) {
        std::vector<std::string> rule = {"-p", p.protocol, "--dport", std::to_string(p.host), "-m", "comment",
                                         "--comment", "mbl-app-" + app, "-j", "DNAT", "--to-destination",
                                         address + ":" + std::to_string(p.container)};
        std::vector<std::string> check = {"iptables", "-w", "-t", "nat", "-C", chain("DNAT")};
        check.insert(check.end(), rule.begin(), rule.end());
        const bool present = succeeds(check);
        if (add && !present) {
            std::vector<std::string> argv = {"iptables", "-w", "-t", "nat", "-A", chain("DNAT")};
            argv.insert(argv.end(), rule.begin(), rule.end());
            if (auto st = tool(argv, "network: publish port " + std::to_string(p.host) + " of " + app); !st) {
                return st;
            }
        } else if (!add && present) {
            std::vector<std::string> argv = {"iptables", "-w", "-t", "nat", "-D", chain("DNAT")};
            argv.insert(argv.end(), rule.begin(), rule.end());
            (void)succeeds(argv);
        }
    }
    return {};
}

Status AppNetworks::prepare(const std::string& app)
{
    Entry e;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = entries_.find(app);
        if (it == entries_.end()) {
            return unexpected(ErrorCode::Failed, "app '" + app + "' holds no address of the private network");
        }
        e = it->second;
    }
    if (auto st = fs::makeDirs(runtimeDir_, 0711); !st) {
        return st;
    }
    if (auto st = ensureBridge(); !st) {
        return st;
    }
    if (auto st = ensureRules(); !st) {
        return st;
    }
    const std::string ns = netnsPath(app);
    const std::string veth = hostVeth(app);
    const std::string address = ipText(e.address);
    if (!isNetns(ns)) {
        removeNetns(ns);
        (void)succeeds({"ip", "link", "del", veth}); // left by a namespace that is gone
        if (auto st = createNetns(ns); !st) {
            return st;
        }
    }
    const std::vector<std::string> in = {"nsenter", "--net=" + ns};
    auto inside = [&](std::vector<std::string> argv) {
        std::vector<std::string> a = in;
        a.insert(a.end(), argv.begin(), argv.end());
        return a;
    };
    if (!succeeds({"ip", "link", "show", "dev", veth})) {
        if (auto st = tool(inside({"ip", "link", "add", "eth0", "type", "veth", "peer", "name", veth, "netns",
                                   std::to_string(::getpid())}),
                           "network: veth pair of " + app);
            !st) {
            return st;
        }
        const std::string cidr = address + "/" + std::to_string(subnet_.prefix);
        for (const auto& [argv, step] : std::vector<std::pair<std::vector<std::string>, std::string>>{
                 {{"ip", "link", "set", veth, "master", config_.bridge}, "attach to the bridge"},
                 {{"bridge", "link", "set", "dev", veth, "isolated", "on"}, "isolate the bridge port"},
                 {{"ip", "link", "set", veth, "up"}, "bring up the host end"},
                 {inside({"ip", "addr", "add", cidr, "dev", "eth0"}), "address"},
                 {inside({"ip", "link", "set", "lo", "up"}), "loopback"},
                 {inside({"ip", "link", "set", "eth0", "up"}), "bring up eth0"},
                 {inside({"ip", "route", "add", "default", "via", ipText(subnet_.gateway())}), "default route"},
             }) {
            if (auto st = tool(argv, "network: " + step + " of " + app); !st) {
                return st;
            }
        }
    }
    if (auto st = portRules(app, address, e.ports, true); !st) {
        return st;
    }
    std::string resolv = "# written by mbl-container-manager\n";
    for (const auto& r : resolvers()) {
        resolv += "nameserver " + r + "\n";
    }
    if (auto st = fs::writeFileAtomic(resolvPath(app), resolv, 0644); !st) {
        return st;
    }
    return fs::writeFileAtomic(hostsPath(app), "127.0.0.1\tlocalhost\n::1\tlocalhost\n" + address + "\t" + app + "\n",
                               0644);
}

void AppNetworks::teardown(const std::string& app)
{
    Entry e;
    bool had = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = entries_.find(app);
        if (it != entries_.end()) {
            e = it->second;
            had = true;
        }
    }
    if (had) {
        (void)portRules(app, ipText(e.address), e.ports, false);
    }
    removeNetns(netnsPath(app));
    (void)succeeds({"ip", "link", "del", hostVeth(app)});
    ::unlink(resolvPath(app).c_str());
    ::unlink(hostsPath(app).c_str());
}

void AppNetworks::cleanupIfUnused()
{
    if (anyReserved()) {
        return;
    }
    const std::string br = config_.bridge;
    // Only what this manager makes: the hooks, its chains, and the bridge if it is one.
    for (const auto& [table, builtin, name, match] :
         std::vector<std::tuple<std::string, std::string, std::string, std::vector<std::string>>>{
             {"nat", "POSTROUTING", chain("POST"), {}},
             {"nat", "PREROUTING", chain("DNAT"), {"-m", "addrtype", "--dst-type", "LOCAL"}},
             {"nat", "OUTPUT", chain("DNAT"), {"-m", "addrtype", "--dst-type", "LOCAL"}},
             {"filter", "FORWARD", chain("FWD"), {}},
             {"filter", "OUTPUT", chain("OUT"), {}}}) {
        std::vector<std::string> del = {"iptables", "-w", "-t", table, "-D", builtin};
        del.insert(del.end(), match.begin(), match.end());
        del.insert(del.end(), {"-j", name});
        while (succeeds(del)) {
        }
    }
    for (const auto& [table, name] : std::vector<std::pair<std::string, std::string>>{
             {"nat", chain("POST")}, {"nat", chain("DNAT")}, {"filter", chain("FWD")}, {"filter", chain("OUT")}}) {
        (void)succeeds({"iptables", "-w", "-t", table, "-F", name});
        (void)succeeds({"iptables", "-w", "-t", table, "-X", name});
    }
    auto r = mbl::run({"ip", "-d", "-o", "link", "show", "dev", br});
    if (r && r->status.success() && r->out.find(" bridge ") != std::string::npos) {
        (void)succeeds({"ip", "link", "del", br});
    }
}

} // namespace mbl::containers
