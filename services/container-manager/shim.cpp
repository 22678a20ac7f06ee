// mbl-container-shim: the parent of one container's init, so that its exit
// status is never lost, even while the container manager is not running.
//
//   mbl-container-shim LOG STATUS -- RUNTIME-ARGV...   (RUNTIME-ARGV: "runc ... run --detach --pid-file P ID")
//   mbl-container-shim --wait                          (the same arguments, NUL-separated, on stdin)
//
// The manager keeps one shim started ahead with --wait, so an app's start does
// not wait for the shim's own exec.
//
// It becomes a child subreaper in its own session (signals to the manager's
// process group do not reach it), runs the runtime with stdio on LOG (O_APPEND),
// and when the runtime has exited — the container's init is then re-parented to
// the shim — writes one line on stdout for the manager: "ok <init pid>" or
// "error <status>". Then it waits for the init and records "<init pid> <code>"
// (exit code, or 128 + signal) in STATUS (renamed into place; not fsynced: it
// lives in /run), and exits.
// The manager learns of the exit through a pidfd on the shim and reads STATUS,
// also after it was restarted while the container ran.

#include "shim_record.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

void say(const std::string& line)
{
    const std::string l = line + "\n";
    (void)mbl::fs::writeAll(STDOUT_FILENO, l.data(), l.size());
}

void ignoreSignal(int) {}

// The request: from the command line, or (--wait, a shim started ahead of
// time) NUL-separated on stdin up to EOF, so its start-up is off the app's start.
std::vector<std::string> request(int argc, char** argv)
{
    std::vector<std::string> args;
    if (argc == 2 && std::string(argv[1]) == "--wait") {
        std::string text;
        char buf[4096];
        while (true) {
            const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            text.append(buf, static_cast<std::size_t>(n));
        }
        std::size_t pos = 0;
        while (pos < text.size()) {
            const std::size_t end = text.find('\0', pos);
            args.push_back(text.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
            pos = end == std::string::npos ? text.size() : end + 1;
        }
    } else {
        args.assign(argv + 1, argv + argc);
    }
    return args;
}

} // namespace

int main(int argc, char** argv)
{
    const std::vector<std::string> args = request(argc, argv);
    if (args.empty()) {
        return 0; // a waiting shim the manager did not need
    }
    if (args.size() < 4 || args[2] != "--") {
        std::fprintf(stderr, "usage: mbl-container-shim LOG STATUS -- RUNTIME-ARGV...\n"
                             "       mbl-container-shim --wait   (the same, NUL-separated on stdin)\n");
        return 2;
    }
    const std::string logPath = args[0];
    const std::string statusPath = args[1];
    std::vector<std::string> runtimeArgv(args.begin() + 3, args.end());
    std::string pidFile;
    for (std::size_t i = 0; i + 1 < runtimeArgv.size(); ++i) {
        if (runtimeArgv[i] == "--pid-file") {
            pidFile = runtimeArgv[i + 1];
        }
    }
    if (pidFile.empty()) {
        say("error the runtime command has no --pid-file");
        return 2;
    }
    (void)::setsid();
    // Survive stray signals; a handler (unlike SIG_IGN) is reset at exec, so the
    // runtime and the container get the default dispositions.
    struct sigaction sa {};
    sa.sa_handler = ignoreSignal;
    ::sigemptyset(&sa.sa_mask);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) {
        ::sigaction(sig, &sa, nullptr);
    }
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        say(std::string("error PR_SET_CHILD_SUBREAPER: ") + std::strerror(errno));
        return 1;
    }
    ::unlink(statusPath.c_str());
    mbl::Fd log{::open(logPath.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)};
    mbl::Fd null{::open("/dev/null", O_RDWR | O_CLOEXEC)};
    if (!log || !null) {
        say("error cannot open " + logPath + ": " + std::strerror(errno));
        return 1;
    }
    mbl::SpawnOptions so;
    so.stdinFd = null.get();
    so.stdoutFd = log.get();
    so.stderrFd = log.get();
    auto child = mbl::Child::spawn(runtimeArgv, so);
    if (!child) {
        say("error " + child.error().message);
        return 1;
    }
    const mbl::ExitStatus rs = child->wait();
    if (!rs.success()) {
        say("error " + rs.describe());
        return 1;
    }
    auto pidText = mbl::fs::readFile(pidFile, 64);
    const long pid = pidText ? std::strtol(mbl::str::trim(*pidText).c_str(), nullptr, 10) : 0;
    if (pid <= 0) {
        say("error the runtime wrote no pid file");
        return 1;
    }
    say("ok " + std::to_string(pid));
    // The manager has what it needs: nothing more on its pipe.
    (void)::dup2(null.get(), STDOUT_FILENO);
    log.reset();

    int code = -1;
    while (true) {
        int ws = 0;
        const pid_t r = ::waitpid(-1, &ws, 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            break; // ECHILD: nothing left (the init was not our child)
        }
        if (r == static_cast<pid_t>(pid)) {
            code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
            break;
        }
    }
    (void)mbl::containers::writeShimRecord(statusPath, std::to_string(pid) + " " + std::to_string(code) + "\n");
    return 0;
}
