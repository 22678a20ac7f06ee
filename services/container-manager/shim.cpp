// mbl-container-shim: the parent of one container's init, so that its exit
// status is never lost, even while the container manager is not running.
//
//   mbl-container-shim LOG STATUS [--log-max BYTES] [--log-keep N] -- RUNTIME-ARGV...
//                      (RUNTIME-ARGV: "runc ... run --detach --pid-file P ID")
//   mbl-container-shim --wait   (the same arguments, NUL-separated, on stdin)
//
// The manager keeps one shim started ahead with --wait, so an app's start does
// not wait for the shim's own exec.
//
// It becomes a child subreaper in its own session (signals to the manager's
// process group do not reach it), runs the runtime with stdout and stderr on a
// pipe it reads, and when the runtime has exited — the container's init is then
// re-parented to the shim — writes one line on stdout for the manager: "ok <init
// pid>" or "error <status>". Then it copies the container's output from the pipe
// to LOG (O_APPEND) until the init ends, rotating LOG when it grows past
// --log-max (LOG.1 … LOG.<keep>, by rename: the shim is the container's only
// writer, so a rotation never loses a line, as conmon does it), drains what is
// left in the pipe, records "<init pid> <code>" (exit code, or 128 + signal) in
// STATUS (renamed into place; not fsynced: it lives in /run), and exits. The
// exit record comes after the last line of output is in LOG.
// The manager learns of the exit through a pidfd on the shim and reads STATUS,
// also after it was restarted while the container ran.

#include "shim_record.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <cerrno>
#include <cstdint>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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


// LOG and its rotated copies, written by the shim alone while the container runs.
class LogWriter {
public:
    LogWriter(std::string path, std::uint64_t maxBytes, unsigned keep)
        : path_(std::move(path)), maxBytes_(maxBytes), keep_(keep)
    {
    }
    bool open()
    {
        fd_ = mbl::Fd{::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)};
        struct stat st {};
        size_ = fd_ && ::fstat(fd_.get(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
        return static_cast<bool>(fd_);
    }
    // No file grows past maxBytes: a rotation comes before the write that
    // would cross it, at a line boundary when there is one.
    void write(const char* data, std::size_t len)
    {
        while (len > 0 && fd_) {
            if (maxBytes_ > 0 && size_ + len > maxBytes_) {
                refreshSize(); // the manager's own lines go to the same file
            }
            if (maxBytes_ == 0 || size_ + len <= maxBytes_) {
                (void)mbl::fs::writeAll(fd_.get(), data, len);
                size_ += len;
                return;
            }
            std::size_t room = size_ < maxBytes_ ? static_cast<std::size_t>(maxBytes_ - size_) : 0;
            std::size_t cut = room;
            while (cut > 0 && data[cut - 1] != '\n') {
                --cut;
            }
            if (cut == 0 && size_ == 0) {
                cut = room; // a line longer than a whole file: split it
            }
            if (cut > 0) {
                (void)mbl::fs::writeAll(fd_.get(), data, cut);
                size_ += cut;
                data += cut;
                len -= cut;
            }
            if (len > 0) {
                rotate();
            }
        }
    }

private:
    void rotate()
    {
        if (keep_ == 0) {
            (void)::ftruncate(fd_.get(), 0);
            size_ = 0;
            return;
        }
        for (unsigned i = keep_; i > 1; --i) {
            (void)::rename((path_ + "." + std::to_string(i - 1)).c_str(), (path_ + "." + std::to_string(i)).c_str());
        }
        if (::rename(path_.c_str(), (path_ + ".1").c_str()) != 0) {
            (void)::ftruncate(fd_.get(), 0); // cannot keep a copy: at least stay bounded
            size_ = 0;
            return;
        }
        open();
    }
    void refreshSize()
    {
        struct stat st {};
        if (::fstat(fd_.get(), &st) == 0) {
            size_ = static_cast<std::uint64_t>(st.st_size);
        }
    }

    std::string path_;
    std::uint64_t maxBytes_;
    unsigned keep_;
    mbl::Fd fd_;
    std::uint64_t size_ = 0;
};

// Copies what is readable now from the pipe to the log; false at EOF (every
// writer gone) or on an error.
bool pump(int from, LogWriter& log)
{
    char buf[16384];
    while (true) {
        const ssize_t n = ::read(from, buf, sizeof buf);
        if (n > 0) {
            log.write(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n < 0 && errno == EAGAIN;
    }
}

int pidfdOpen(pid_t pid)
{
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

} // namespace

int main(int argc, char** argv)
{
    const std::vector<std::string> args = request(argc, argv);
    if (args.empty()) {
        return 0; // a waiting shim the manager did not need
    }
    std::size_t sep = 2;
    std::uint64_t logMax = 0;
    unsigned logKeep = 2;
    while (sep + 1 < args.size() && args[sep] != "--") {
        if (args[sep] == "--log-max") {
            logMax = std::strtoull(args[sep + 1].c_str(), nullptr, 10);
        } else if (args[sep] == "--log-keep") {
            logKeep = static_cast<unsigned>(std::strtoul(args[sep + 1].c_str(), nullptr, 10));
        } else {
            break;
        }
        sep += 2;
    }
    if (args.size() < sep + 2 || args[sep] != "--") {
        std::fprintf(stderr, "usage: mbl-container-shim LOG STATUS [--log-max BYTES] [--log-keep N] -- RUNTIME-ARGV...\n"
                             "       mbl-container-shim --wait   (the same, NUL-separated on stdin)\n");
        return 2;
    }
    const std::string logPath = args[0];
    const std::string statusPath = args[1];
    std::vector<std::string> runtimeArgv(args.begin() + static_cast<std::ptrdiff_t>(sep) + 1, args.end());
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
    LogWriter log(logPath, logMax, logKeep);
    mbl::Fd null{::open("/dev/null", O_RDWR | O_CLOEXEC)};
    int p[2];
    if (!log.open() || !null || ::pipe2(p, O_CLOEXEC) != 0) {
        say("error cannot open " + logPath + ": " + std::strerror(errno));
        return 1;
    }
    mbl::Fd outRead{p[0]};
    mbl::Fd outWrite{p[1]};
    mbl::SpawnOptions so;
    so.stdinFd = null.get();
    so.stdoutFd = outWrite.get();
    so.stderrFd = outWrite.get();
    auto child = mbl::Child::spawn(runtimeArgv, so);
    outWrite.reset(); // the container and the runtime hold the write end: EOF when they are all gone
    if (!child) {
        say("error " + child.error().message);
        return 1;
    }
    (void)::fcntl(outRead.get(), F_SETFL, O_NONBLOCK);
    // The runtime's own output (its errors) and the container's first lines
    // while the runtime runs; the pipe must not fill up meanwhile.
    int ws = 0;
    {
        mbl::Fd runtimeFd{pidfdOpen(child->pid())};
        while (true) {
            const pid_t r = ::waitpid(child->pid(), &ws, WNOHANG);
            if (r == child->pid() || (r < 0 && errno != EINTR)) {
                (void)child->release();
                break;
            }
            struct pollfd pfds[2] = {{runtimeFd.get(), POLLIN, 0}, {outRead.get(), POLLIN, 0}};
            (void)::poll(pfds, 2, runtimeFd ? -1 : 10);
            if ((pfds[1].revents & POLLIN) != 0) {
                (void)pump(outRead.get(), log);
            }
        }
    }
    const mbl::ExitStatus rs = mbl::ExitStatus::fromWaitStatus(ws);
    if (!rs.success()) {
        (void)pump(outRead.get(), log);
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

    // Copy the output until the init ends (a zombie, our child since the runtime
    // exited: the pidfd is readable then).
    mbl::Fd initFd{pidfdOpen(static_cast<pid_t>(pid))};
    bool open = true;
    int code = -1;
    while (true) {
        struct pollfd pfds[2] = {{initFd.get(), POLLIN, 0}, {open ? outRead.get() : -1, POLLIN, 0}};
        const int n = ::poll(pfds, 2, initFd ? -1 : 1000);
        if (n < 0 && errno != EINTR) {
            break;
        }
        if (open && (pfds[1].revents & (POLLIN | POLLHUP)) != 0) {
            open = pump(outRead.get(), log);
        }
        // Reap whatever ended (the init, or processes re-parented to us).
        bool initDone = false;
        while (true) {
            const pid_t r = ::waitpid(-1, &ws, WNOHANG);
            if (r <= 0) {
                initDone = initDone || (r < 0 && errno == ECHILD);
                break;
            }
            if (r == static_cast<pid_t>(pid)) {
                code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
                initDone = true;
            }
        }
        if (initDone) {
            break;
        }
    }
    // What the container wrote before it ended goes into the log before the exit record.
    if (open) {
        (void)pump(outRead.get(), log);
    }
    (void)mbl::containers::writeShimRecord(statusPath, std::to_string(pid) + " " + std::to_string(code) + "\n");
    return 0;
}
