// SPDX-License-Identifier: Apache-2.0
// "network": "private" with real runc, ip, bridge and iptables: an app reaches
// a server on the host through the manager's bridge and NAT, a connection
// from the host into the app's network is refused unless the app published
// the port, and the bridge and rules go with the last app that used them.

#include "cm_client.h"
#include "cm_fixture.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace mbl;
using namespace mbl::test::cm;
using test::CmClient;
using nlohmann::json;

namespace {

// A bridge and subnet of this test run's own (several runs may share the machine).
struct TestNet {
    int n = 20 + static_cast<int>(::getpid() % 200);
    std::string bridge = "mblt" + std::to_string(n);
    std::string gateway = "10.89." + std::to_string(n) + ".1";
    std::string subnet = "10.89." + std::to_string(n) + ".0/24";
    json config() const { return {{"network", {{"bridge", bridge}, {"subnet", subnet}, {"dns", {gateway}}}}}; }
};

// An HTTP server on the host (all addresses): answers each request with `body`.
class HostServer {
public:
    explicit HostServer(const std::string& body)
        : reply_("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\nConnection: close\r\n\r\n" + body)
    {
        fd_ = Fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        socklen_t len = sizeof a;
        REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd_.get(), 8) == 0);
        REQUIRE(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] {
            while (!stop_) {
                pollfd p{fd_.get(), POLLIN, 0};
                if (::poll(&p, 1, 100) <= 0) {
                    continue; // wakes to see stop_
                }
                Fd c{::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC)};
                if (c) {
                    // The request first (up to its blank line), so that closing
                    // after the reply never resets the connection.
                    std::string req;
                    char buf[1024];
                    pollfd q{c.get(), POLLIN, 0};
                    while (req.find("\r\n\r\n") == std::string::npos && ::poll(&q, 1, 10000) > 0) {
                        const ssize_t n = ::read(c.get(), buf, sizeof buf);
                        if (n <= 0) {
                            break;
                        }
                        req.append(buf, static_cast<std::size_t>(n));
                    }
                    (void)fs::writeAll(c.get(), reply_.data(), reply_.size());
                    ++served_;
                }
            }
        });
    }
    ~HostServer()
    {
        stop_ = true;
        thread_.join();
    }
    int port() const { return port_; }
    int served() const { return served_; }

private:
    std::string reply_;
    Fd fd_;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> served_{0};
    std::thread thread_;
};

// connect() to addr:port; 0 on success, else errno. The network answers a
// refused connection with a TCP reset at once (no timeout involved).
int connectTo(const std::string& addr, int port, std::string* received = nullptr)
{
    Fd s{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        return errno;
    }
    if (received != nullptr) {
        char buf[256];
        const ssize_t n = ::read(s.get(), buf, sizeof buf);
        if (n > 0) {
            received->assign(buf, static_cast<std::size_t>(n));
        }
    }
    return 0;
}

bool linkExists(const std::string& name)
{
    auto r = mbl::run({"ip", "link", "show", "dev", name});
    return r && r->status.success();
}

bool chainExists(const std::string& table, const std::string& chain)
{
    auto r = mbl::run({"iptables", "-w", "-t", table, "-n", "-L", chain});
    return r && r->status.success();
}

} // namespace

TEST_CASE("private network: an app reaches a server on the host through the bridge and NAT, resolv.conf names the "
          "configured resolver; connections into the app are refused unless published; the bridge and rules go "
          "with the last app")
{
    for (const char* tool : {"ip", "bridge", "iptables", "nsenter"}) {
        if (!test::haveTool(tool)) {
            test::skip(std::string(tool) + " is needed for the private network (tests/setup.sh installs iproute2, "
                                           "iptables, util-linux)");
        }
    }
    const TestNet net;
    if (linkExists(net.bridge)) {
        test::skip("an interface named " + net.bridge + " exists already (another run?)");
    }
    Fixture f(net.config());
    CmClient cm;
    HostServer server("hello-from-host\n");
    const int published = 20000 + net.n;

    // Out: the app connects to the host (the bridge's address) and prints what it got.
    const std::string outScript = "cat /etc/resolv.conf; ip -4 -o addr show dev eth0; "
                                  "echo got: $(wget -q -O - http://" + net.gateway + ":" +
                                  std::to_string(server.port()) + "/); exec sleep 1000";
    auto r = cm.install(f.image("out", outScript), R"({"name": "out", "network": "private"})");
    INFO(r.message << f.stack.log("container-manager"));
    REQUIRE(r.success);
    REQUIRE(cm.waitLog("out", "got:"));
    const std::string log = cm.logs("out");
    INFO(log);
    CHECK(contains(log, "got: hello-from-host"));
    CHECK(contains(log, "nameserver " + net.gateway));
    CHECK(contains(log, "inet 10.89." + std::to_string(net.n) + "."));
    CHECK(linkExists(net.bridge));

    // In: a listening app is reached through its published port only.
    const std::string inScript = "echo listening; while true; do echo hello-from-app | nc -l -p 8080; done";
    const json opts = {{"name", "in"},
                       {"network", "private"},
                       {"ports", json::array({{{"host", published}, {"container", 8080}}})}};
    REQUIRE(cm.install(f.image("in", inScript), opts.dump()).success);
    REQUIRE(cm.waitLog("in", "listening"));
    // Its address, from its /etc/hosts (the manager writes "<address>\t<name>").
    auto hosts = mbl::run({"runc", "--root", f.runcRoot(), "exec", "in", "cat", "/etc/hosts"});
    REQUIRE(hosts);
    std::string address;
    for (const auto& line : str::split(hosts->out, '\n')) {
        if (str::endsWith(line, "\tin")) {
            address = line.substr(0, line.find('\t'));
        }
    }
    INFO(hosts->out);
    REQUIRE(str::startsWith(address, "10.89." + std::to_string(net.n) + "."));
    std::string got;
    REQUIRE(CmClient::waitFor([&] { return connectTo(net.gateway, published, &got) == 0 && !got.empty(); }));
    CHECK(got == "hello-from-app\n");
    CHECK(connectTo(address, 8080) == ECONNREFUSED);
    // Nor from one app to another (isolated bridge ports, new connections into the subnet refused).
    auto fromOut = mbl::run({"runc", "--root", f.runcRoot(), "exec", "out", "sh", "-c",
                             "nc -w 5 " + address + " 8080 </dev/null && echo connected || echo refused"});
    REQUIRE(fromOut);
    CHECK(contains(fromOut->out, "refused"));

    // Removed: the namespace and rules of each; with the last, the bridge and chains.
    cm.remove("in", true);
    CHECK(connectTo(net.gateway, published) != 0);
    CHECK(chainExists("nat", "MBL-" + net.bridge + "-POST"));
    cm.remove("out", true);
    CHECK_FALSE(linkExists(net.bridge));
    CHECK_FALSE(chainExists("nat", "MBL-" + net.bridge + "-POST"));
    CHECK_FALSE(chainExists("filter", "MBL-" + net.bridge + "-OUT"));
}

TEST_CASE("private network: bad settings are refused naming the setting, and nothing is left of the app")
{
    const TestNet net;
    Fixture f(net.config());
    CmClient cm;
    const std::string archive = f.image("bad", "exec sleep 1000");
    struct Case {
        const char* options;
        const char* error;
        const char* names;
    };
    for (const Case& c : {
             Case{R"({"name": "b", "network": "private", "ports": [{"host": 70000, "container": 80}]})",
                  "org.mbl.Error.InvalidArgument", "ports[0].host"},
             Case{R"({"name": "b", "network": "private", "ports": [{"host": 8080, "container": 0}]})",
                  "org.mbl.Error.InvalidArgument", "ports[0].container"},
             Case{R"({"name": "b", "network": "private", "ports": [{"host": 8080, "container": 80, "protocol": "sctp"}]})",
                  "org.mbl.Error.InvalidArgument", "ports[0].protocol"},
             Case{R"({"name": "b", "network": "private", "ports": [{"host": 80, "container": 80}]})",
                  "org.mbl.Error.AccessDenied", "ports"},
             Case{R"({"name": "b", "network": "bridged"})", "org.mbl.Error.InvalidArgument", "network"},
             Case{R"({"name": "b", "network": "private", "portz": []})", "org.mbl.Error.InvalidArgument", "portz"},
         }) {
        INFO(c.options);
        std::string err;
        try {
            auto r = cm.install(archive, c.options);
            err = r.success ? std::string() : r.errorName + ": " + r.message;
        } catch (const sdbus::Error& e) {
            err = e.getName() + ": " + e.getMessage();
        }
        INFO(err);
        CHECK(str::startsWith(err, c.error));
        CHECK(contains(err, c.names));
        CHECK(cm.appCount() == 0);
    }
    CHECK_FALSE(linkExists(net.bridge));
    // A port published by one app is refused to another.
    REQUIRE(cm.install(archive, R"({"name": "p1", "network": "private", "ports": [{"host": 18080, "container": 80}]})")
                .success);
    auto clash = cm.install(archive, R"({"name": "p2", "network": "private", "ports": [{"host": 18080, "container": 80}]})");
    CHECK_FALSE(clash.success);
    CHECK(contains(clash.message, "18080"));
    CHECK(cm.appCount() == 1);
    cm.remove("p1", true);
}
