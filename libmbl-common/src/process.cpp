// SPDX-License-Identifier: Apache-2.0
#include "mbl/process.h"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace mbl {

std::string ExitStatus::describe() const
{
    if (signaled) {
        return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
    }
    return "exited with code " + std::to_string(code);
}

ExitStatus ExitStatus::fromWaitStatus(int wstatus)
{
    ExitStatus s;
    if (WIFSIGNALED(wstatus)) {
        s.signaled = true;
        s.signal = WTERMSIG(wstatus);
        s.code = 128 + s.signal;
    } else if (WIFEXITED(wstatus)) {
        s.code = WEXITSTATUS(wstatus);
    }
    return s;
}

Child::Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}

Child& Child::operator=(Child&& o) noexcept
{
    if (this != &o) {
        if (pid_ > 0) {
            kill(SIGKILL);
            wait();
        }
        pid_ = std::exchange(o.pid_, -1);
    }
    return *this;
}

Child::~Child()
{
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        wait();
    }
}

pid_t Child::release()
{
    return std::exchange(pid_, -1);
}

void Child::kill(int sig)
{
    if (pid_ > 0) {
        ::kill(pid_, sig);
    }
}

ExitStatus Child::wait()
{
    ExitStatus s;
    if (pid_ <= 0) {
        return s;
    }
    int wstatus = 0;
    while (::waitpid(pid_, &wstatus, 0) < 0) {
        if (errno != EINTR) {
            pid_ = -1;
            return s;
        }
    }
    pid_ = -1;
    return ExitStatus::fromWaitStatus(wstatus);
}

std::optional<ExitStatus> Child::tryWait()
{
    if (pid_ <= 0) {
        return ExitStatus{};
    }
    int wstatus = 0;
    pid_t r = ::waitpid(pid_, &wstatus, WNOHANG);
    if (r == 0) {
        return std::nullopt;
    }
    pid_ = -1;
    if (r < 0) {
        return ExitStatus{};
    }
    return ExitStatus::fromWaitStatus(wstatus);
}

std::optional<ExitStatus> Child::waitFor(std::chrono::milliseconds timeout)
{
    // A pidfd would avoid the polling; it is not wrapped by glibc 2.36, and
    // this is only used for shutdown paths where 2 ms granularity is fine.
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        if (auto s = tryWait()) {
            return s;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return std::nullopt;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

ExitStatus Child::terminate(std::chrono::milliseconds grace)
{
    kill(SIGTERM);
    if (auto s = waitFor(grace)) {
        return *s;
    }
    kill(SIGKILL);
    return wait();
}

Expected<Child> Child::spawn(const std::vector<std::string>& argv, const SpawnOptions& opts)
{
    if (argv.empty()) {
        return unexpected(ErrorCode::InvalidArgument, "spawn: empty argv");
    }
    // Everything the child needs is prepared before fork: after fork only
    // async-signal-safe calls are made.
    std::vector<char*> cargv;
    for (const auto& a : argv) {
        cargv.push_back(const_cast<char*>(a.c_str()));
    }
    cargv.push_back(nullptr);

    std::vector<std::string> envStore;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        std::string entry = *e;
        auto key = entry.substr(0, entry.find('='));
        bool replaced = false;
        for (const auto& add : opts.env) {
            if (add.substr(0, add.find('=')) == key) {
                replaced = true;
                break;
            }
        }
        if (!replaced) {
            envStore.push_back(std::move(entry));
        }
    }
    for (const auto& add : opts.env) {
        envStore.push_back(add);
    }
    std::vector<char*> cenv;
    for (auto& e : envStore) {
        cenv.push_back(e.data());
    }
    cenv.push_back(nullptr);

    std::vector<gid_t> groups;
    if (opts.uid != static_cast<uid_t>(-1)) {
        struct passwd* pw = ::getpwuid(opts.uid);
        if (pw != nullptr) {
            int n = 64;
            groups.resize(static_cast<std::size_t>(n));
            gid_t base = opts.gid != static_cast<gid_t>(-1) ? opts.gid : pw->pw_gid;
            if (::getgrouplist(pw->pw_name, base, groups.data(), &n) < 0) {
                groups.resize(static_cast<std::size_t>(n));
                ::getgrouplist(pw->pw_name, base, groups.data(), &n);
            }
            groups.resize(static_cast<std::size_t>(n));
        }
    }

    int errPipe[2];
    if (::pipe2(errPipe, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
        int e = errno;
        ::close(errPipe[0]);
        ::close(errPipe[1]);
        return unexpected(errnoError("fork", e));
    }
    if (pid == 0) {
        auto die = [&](int err) {
            ssize_t ignored = ::write(errPipe[1], &err, sizeof err);
            (void)ignored;
            ::_exit(127);
        };
        ::close(errPipe[0]);
        if (opts.dieWithParent) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(127);
            }
        }
        if (opts.newProcessGroup) {
            ::setpgid(0, 0);
        }
        // Signals blocked by the parent (e.g. an event loop's signalfd) must not
        // stay blocked in the child.
        sigset_t all;
        sigemptyset(&all);
        ::sigprocmask(SIG_SETMASK, &all, nullptr);
        const int fds[3] = {opts.stdinFd, opts.stdoutFd, opts.stderrFd};
        for (int i = 0; i < 3; ++i) {
            if (fds[i] >= 0) {
                if (fds[i] == i) {
                    int fl = ::fcntl(i, F_GETFD);
                    ::fcntl(i, F_SETFD, fl & ~FD_CLOEXEC);
                } else if (::dup2(fds[i], i) < 0) {
                    die(errno);
                }
            }
        }
        if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) {
            die(errno);
        }
        if (opts.uid != static_cast<uid_t>(-1)) {
            gid_t gid = opts.gid;
            if (gid == static_cast<gid_t>(-1)) {
                gid = groups.empty() ? 65534 : groups[0];
            }
            if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(gid, gid, gid) != 0 ||
                ::setresuid(opts.uid, opts.uid, opts.uid) != 0) {
                die(errno);
            }
        } else if (opts.gid != static_cast<gid_t>(-1)) {
            if (::setresgid(opts.gid, opts.gid, opts.gid) != 0) {
                die(errno);
            }
        }
        ::execvpe(cargv[0], cargv.data(), cenv.data());
        die(errno);
    }
    ::close(errPipe[1]);
    int childErr = 0;
    ssize_t n;
    do {
        n = ::read(errPipe[0], &childErr, sizeof childErr);
    } while (n < 0 && errno == EINTR);
    ::close(errPipe[0]);
    Child child(pid);
    if (n == static_cast<ssize_t>(sizeof childErr)) {
        child.wait();
        return unexpected(errnoError("start " + argv[0], childErr));
    }
    return child;
}

Expected<RunResult> run(const std::vector<std::string>& argv, const SpawnOptions& optsIn, std::size_t maxOutput)
{
    int outPipe[2];
    int errPipe[2];
    if (::pipe2(outPipe, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    if (::pipe2(errPipe, O_CLOEXEC) != 0) {
        ::close(outPipe[0]);
        ::close(outPipe[1]);
        return unexpected(errnoError("pipe", errno));
    }
    Fd outR{outPipe[0]}, outW{outPipe[1]}, errR{errPipe[0]}, errW{errPipe[1]};
    SpawnOptions opts = optsIn;
    opts.stdoutFd = outW.get();
    opts.stderrFd = errW.get();
    Fd devnull;
    if (opts.stdinFd < 0) {
        devnull = Fd{::open("/dev/null", O_RDONLY | O_CLOEXEC)};
        opts.stdinFd = devnull.get();
    }
    auto child = Child::spawn(argv, opts);
    if (!child) {
        return unexpected(child.error());
    }
    outW.reset();
    errW.reset();
    RunResult result;
    struct pollfd pfds[2] = {{outR.get(), POLLIN, 0}, {errR.get(), POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open = 2;
    char buf[16384];
    while (open > 0) {
        if (::poll(pfds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (pfds[i].fd < 0 || pfds[i].revents == 0) {
                continue;
            }
            ssize_t n = ::read(pfds[i].fd, buf, sizeof buf);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                pfds[i].fd = -1;
                --open;
                continue;
            }
            if (sinks[i]->size() < maxOutput) {
                sinks[i]->append(buf, std::min(static_cast<std::size_t>(n), maxOutput - sinks[i]->size()));
            }
        }
    }
    result.status = child->wait();
    return result;
}

} // namespace mbl
