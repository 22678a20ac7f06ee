#pragma once
// The OCI runtime (runc, or crun) driven through its command line with the
// manager's own --root: create, start, kill, delete, state, list, exec. Every
// call blocks for the runtime's duration, so callers run it on a worker thread.

#include "mbl/expected.h"
#include "mbl/fd.h"
#include "mbl/process.h"

#include <chrono>
#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mbl::containers {

struct ContainerState {
    std::string id;
    std::string status; // created, running, stopped, paused
    pid_t pid = 0;
    std::string bundle;
};

class Runtime {
public:
    Runtime(std::string binary, std::string root) : binary_(std::move(binary)), root_(std::move(root)) {}

    const std::string& binary() const { return binary_; }
    const std::string& root() const { return root_; }

    // `runtime create`: the container's stdout and stderr go to outFd; returns
    // the pid of its init, which waits for start().
    Expected<pid_t> create(const std::string& id, const std::string& bundle, int outFd) const;
    // `runtime run --detach`: create and start in one runtime process (half the
    // runtime start-up cost); returns the pid of the container's init.
    Expected<pid_t> runDetached(const std::string& id, const std::string& bundle, int outFd) const;
    // `runtime run --detach` under mbl-container-shim (the init's parent, which
    // records its exit status in statusFile): returns the init's and the shim's pids.
    struct ShimStart {
        pid_t init = 0;
        pid_t shim = 0;
    };
    // A shim started ahead of time (`--wait`): it reads its request on stdin.
    struct WaitingShim {
        Child child;
        Fd request; // its stdin
        Fd reply;   // its stdout
    };
    static Expected<WaitingShim> spawnShim(const std::string& shim);
    // The shim copies the container's output to logFile and rotates it past
    // logMaxBytes (logKeep copies): it is the log's only writer while the app runs.
    Expected<ShimStart> runWithShim(WaitingShim shim, const std::string& id, const std::string& bundle,
                                    const std::string& logFile, const std::string& statusFile,
                                    std::uint64_t logMaxBytes, std::uint32_t logKeep) const;
    Status start(const std::string& id) const;
    // Signals the container's init (or, with all, every process in it).
    Status kill(const std::string& id, int sig, bool all = false) const;
    // `runtime delete`; force also kills a running container first.
    Status remove(const std::string& id, bool force = false) const;
    Expected<ContainerState> state(const std::string& id) const;
    Expected<std::vector<ContainerState>> list() const;
    // Runs a command inside a running container; returns its exit code, or
    // Timeout (the command is killed) after `timeout`.
    Expected<int> exec(const std::string& id, const std::vector<std::string>& args, std::chrono::milliseconds timeout,
                       int outFd) const;

private:
    Expected<pid_t> spawnWithPid(const std::string& verb, const std::string& id, const std::string& bundle,
                                 int outFd) const;
    std::vector<std::string> runArgv(const std::string& verb, const std::string& id, const std::string& bundle) const;
    std::vector<std::string> base() const;
    std::string runtimeError(const std::string& what, const std::string& stderrText) const;

    std::string binary_;
    std::string root_;
};

} // namespace mbl::containers
