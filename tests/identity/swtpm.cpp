// SPDX-License-Identifier: Apache-2.0
#include "swtpm.h"

#include "mbl/fs.h"

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace mbl::test {

namespace {
const char* const kProvider = "/usr/lib/x86_64-linux-gnu/ossl-modules/tpm2.so";

bool onPath(const std::string& tool)
{
    auto r = mbl::run({"sh", "-c", "command -v " + tool});
    return r && r->status.success();
}

// True when something accepts a TCP connection on loopback `port`.
bool accepts(int port)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// True when nothing listens on the port now (a bind would succeed).
bool freePort(int port)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}
} // namespace

std::string Swtpm::missing()
{
    if (!onPath("swtpm")) {
        return "swtpm is not installed (apt-get install swtpm swtpm-tools)";
    }
    if (!fs::exists(kProvider)) {
        return std::string("the tpm2 OpenSSL provider is not installed (") + kProvider +
               "; apt-get install tpm2-openssl)";
    }
    return "";
}

Expected<std::unique_ptr<Swtpm>> Swtpm::start(const std::string& stateDir)
{
    if (auto st = fs::makeDirs(stateDir, 0700); !st) {
        return unexpected(st.error());
    }
    std::string lastError = "no free pair of ports";
    // Ports from the pid, so parallel test processes rarely collide; a collision
    // shows as swtpm exiting, and the next pair is tried.
    for (int attempt = 0; attempt < 20; ++attempt) {
        const int port = 20000 + ((::getpid() * 7 + attempt * 131) % 20000) * 2;
        if (!freePort(port) || !freePort(port + 1)) {
            continue;
        }
        SpawnOptions opts;
        opts.dieWithParent = true;
        auto child = Child::spawn({"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + stateDir, "--server",
                                   "type=tcp,port=" + std::to_string(port) + ",bindaddr=127.0.0.1", "--ctrl",
                                   "type=tcp,port=" + std::to_string(port + 1) + ",bindaddr=127.0.0.1", "--flags",
                                   "not-need-init,startup-clear"},
                                  opts);
        if (!child) {
            return unexpected(child.error());
        }
        std::unique_ptr<Swtpm> tpm(new Swtpm());
        tpm->child_ = std::move(child).value();
        tpm->port_ = port;
        // Wait for the state "listening" (or for swtpm to exit), bounded.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (std::chrono::steady_clock::now() < deadline) {
            if (auto exited = tpm->child_.tryWait()) {
                lastError = "swtpm exited: " + exited->describe();
                break;
            }
            if (accepts(port + 1)) {
                return tpm;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (tpm->child_.running()) {
            return unexpected(ErrorCode::Timeout, "swtpm did not listen within 20 s");
        }
    }
    return unexpected(ErrorCode::Failed, "cannot start swtpm: " + lastError);
}

Swtpm::~Swtpm()
{
    if (child_.running()) {
        (void)child_.terminate(std::chrono::seconds(5));
    }
}

std::string Swtpm::tcti() const
{
    return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

} // namespace mbl::test
