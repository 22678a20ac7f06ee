// SPDX-License-Identifier: Apache-2.0
#pragma once
// Child processes started with an argv (never through a shell), owned by an RAII
// handle: a Child that is destroyed while running is killed and reaped.

#include "mbl/expected.h"
#include "mbl/fd.h"

#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace mbl {

struct SpawnOptions {
    // -1: inherit; otherwise dup2'ed onto 0/1/2 in the child.
    int stdinFd = -1;
    int stdoutFd = -1;
    int stderrFd = -1;
    // Extra "KEY=VALUE" entries added to (or replacing in) the inherited environment.
    std::vector<std::string> env;
    std::string cwd;
    // Drop to this uid/gid (and its supplementary groups) before exec; -1 keeps.
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    // Kill the child if the parent dies (tests and harnesses leave nothing behind).
    bool dieWithParent = false;
    // Start the child in its own process group.
    bool newProcessGroup = false;
};

// Exit status as a shell reports it: the exit code, or 128 + signal number.
struct ExitStatus {
    int code = 0;
    bool signaled = false;
    int signal = 0;
    bool success() const { return !signaled && code == 0; }
    std::string describe() const;
    static ExitStatus fromWaitStatus(int wstatus);
};

class Child {
public:
    Child() = default;
    explicit Child(pid_t pid) : pid_(pid) {}
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    Child(Child&& o) noexcept;
    Child& operator=(Child&& o) noexcept;
    ~Child();

    static Expected<Child> spawn(const std::vector<std::string>& argv, const SpawnOptions& opts = {});

    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0; }
    // Blocks until the child exits.
    ExitStatus wait();
    // Waits at most `timeout`; nullopt if it is still running.
    std::optional<ExitStatus> waitFor(std::chrono::milliseconds timeout);
    // Non-blocking reap; nullopt if still running.
    std::optional<ExitStatus> tryWait();
    void kill(int sig);
    // SIGTERM, wait up to grace, then SIGKILL; returns the final status.
    ExitStatus terminate(std::chrono::milliseconds grace);
    // Forget the child without killing it (someone else reaps it).
    pid_t release();

private:
    pid_t pid_ = -1;
};

struct RunResult {
    ExitStatus status;
    std::string out;
    std::string err;
};

// Runs argv to completion, capturing stdout and stderr (each capped at maxOutput).
Expected<RunResult> run(const std::vector<std::string>& argv, const SpawnOptions& opts = {},
                        std::size_t maxOutput = 4u << 20);

} // namespace mbl
