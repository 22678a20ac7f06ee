#include "runtime.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/process.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <unistd.h>

namespace mbl::containers {

namespace {
Fd devNull(int flags)
{
    return Fd{::open("/dev/null", flags | O_CLOEXEC)};
}

// The runtime's last error line: runc writes JSON log lines ({"level":"error","msg":...}).
std::string lastErrorFromLog(const std::string& logPath)
{
    auto text = fs::readFile(logPath, 1 << 20);
    if (!text) {
        return "";
    }
    std::string msg;
    for (const auto& line : str::split(*text, '\n')) {
        try {
            auto j = nlohmann::json::parse(line);
            if (j.value("level", "") == "error") {
                msg = j.value("msg", "");
            }
        } catch (const std::exception&) {
            if (!str::trim(line).empty()) {
                msg = str::trim(line);
            }
        }
    }
    return msg;
}
} // namespace

std::vector<std::string> Runtime::base() const
{
    return {binary_, "--root", root_};
}

std::string Runtime::runtimeError(const std::string& what, const std::string& stderrText) const
{
    std::string msg = str::trim(stderrText);
    // runc prints time="..." level=error msg="..." on stderr; keep the message.
    auto pos = msg.rfind("msg=\"");
    if (pos != std::string::npos) {
        msg = msg.substr(pos + 5);
        auto q = msg.rfind('"');
        if (q != std::string::npos) {
            msg = msg.substr(0, q);
        }
    }
    return binary_ + " " + what + " failed: " + (msg.empty() ? std::string("(no message)") : msg);
}

Expected<pid_t> Runtime::create(const std::string& id, const std::string& bundle, int outFd) const
{
    return spawnWithPid("create", id, bundle, outFd);
}

Expected<pid_t> Runtime::runDetached(const std::string& id, const std::string& bundle, int outFd) const
{
    return spawnWithPid("run", id, bundle, outFd);
}

std::vector<std::string> Runtime::runArgv(const std::string& verb, const std::string& id, const std::string& bundle) const
{
    const std::string pidFile = root_ + "/" + id + ".pid";
    const std::string logFile = root_ + "/" + id + ".create.log";
    ::unlink(pidFile.c_str());
    ::unlink(logFile.c_str());
    auto argv = base();
    argv.insert(argv.begin() + 1, {"--log", logFile, "--log-format", "json"});
    argv.push_back(verb);
    if (verb == "run") {
        argv.emplace_back("--detach");
    }
    argv.emplace_back("--bundle");
    argv.push_back(bundle);
    argv.emplace_back("--pid-file");
    argv.push_back(pidFile);
    argv.push_back(id);
    return argv;
}

Expected<Runtime::WaitingShim> Runtime::spawnShim(const std::string& shim)
{
    int in[2];
    int out[2];
    if (::pipe2(in, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    Fd inRead{in[0]};
    Fd inWrite{in[1]};
    if (::pipe2(out, O_CLOEXEC) != 0) {
        return unexpected(errnoError("pipe", errno));
    }
    Fd outRead{out[0]};
    Fd outWrite{out[1]};
    Fd null = devNull(O_WRONLY);
    SpawnOptions so;
    so.stdinFd = inRead.get();
    so.stdoutFd = outWrite.get();
    so.stderrFd = null.get();
    auto child = Child::spawn({shim, "--wait"}, so);
    if (!child) {
        return unexpected(child.error());
    }
    return WaitingShim{std::move(child).value(), std::move(inWrite), std::move(outRead)};
}

Expected<Runtime::ShimStart> Runtime::runWithShim(WaitingShim shim, const std::string& id, const std::string& bundle,
                                                  const std::string& logFile, const std::string& statusFile,
                                                  std::uint64_t logMaxBytes, std::uint32_t logKeep) const
{
    const std::string pidFile = root_ + "/" + id + ".pid";
    const std::string runtimeLog = root_ + "/" + id + ".create.log";
    std::string req;
    for (const auto& a : std::vector<std::string>{logFile, statusFile, "--log-max", std::to_string(logMaxBytes),
                                                  "--log-keep", std::to_string(logKeep), "--"}) {
        req += a;
        req.push_back('\0');
    }
    for (const auto& a : runArgv("run", id, bundle)) {
        req += a;
        req.push_back('\0');
    }
    if (auto st = fs::writeAll(shim.request.get(), req.data(), req.size()); !st) {
        return unexpected(st.error());
    }
    shim.request.reset(); // EOF: the request is complete
    // One line: "ok <init pid>" once the runtime has exited, or "error ...".
    std::string line;
    char c = 0;
    while (line.size() < 4096) {
        const ssize_t n = ::read(shim.reply.get(), &c, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || c == '\n') {
            break;
        }
        line += c;
    }
    ::unlink(pidFile.c_str());
    if (str::startsWith(line, "ok ")) {
        const long pid = std::strtol(line.c_str() + 3, nullptr, 10);
        ::unlink(runtimeLog.c_str());
        if (pid > 0) {
            return ShimStart{static_cast<pid_t>(pid), shim.child.release()};
        }
    }
    const ExitStatus st = shim.child.wait();
    std::string msg = lastErrorFromLog(runtimeLog);
    ::unlink(runtimeLog.c_str());
    if (msg.empty()) {
        msg = str::startsWith(line, "error ") ? line.substr(6) : "the shim " + st.describe();
    }
    return unexpected(ErrorCode::Failed, binary_ + " run failed: " + msg);
}

Expected<pid_t> Runtime::spawnWithPid(const std::string& verb, const std::string& id, const std::string& bundle,
                                      int outFd) const
{
    const std::string pidFile = root_ + "/" + id + ".pid";
    const std::string logFile = root_ + "/" + id + ".create.log";
    auto argv = runArgv(verb, id, bundle);
    Fd in = devNull(O_RDONLY);
    SpawnOptions so;
    so.stdinFd = in.get();
    so.stdoutFd = outFd;
    so.stderrFd = outFd;
    auto child = Child::spawn(argv, so);
    if (!child) {
        return unexpected(child.error());
    }
    auto st = child->wait();
    if (!st.success()) {
        std::string msg = lastErrorFromLog(logFile);
        ::unlink(logFile.c_str());
        return unexpected(ErrorCode::Failed, binary_ + " " + verb + " failed (" + st.describe() + "): " +
                                                 (msg.empty() ? std::string("see the app log") : msg));
    }
    ::unlink(logFile.c_str());
    auto pidText = fs::readFile(pidFile, 64);
    ::unlink(pidFile.c_str());
    if (!pidText) {
        return unexpected(ErrorCode::Failed, binary_ + " " + verb + " wrote no pid file");
    }
    long pid = std::strtol(str::trim(*pidText).c_str(), nullptr, 10);
    if (pid <= 0) {
        return unexpected(ErrorCode::Failed, binary_ + " " + verb + " wrote a bad pid file");
    }
    return static_cast<pid_t>(pid);
}

Status Runtime::start(const std::string& id) const
{
    auto argv = base();
    argv.insert(argv.end(), {"start", id});
    auto r = run(argv);
    if (!r) {
        return unexpected(r.error());
    }
    if (!r->status.success()) {
        return unexpected(ErrorCode::Failed, runtimeError("start", r->err));
    }
    return {};
}

Status Runtime::kill(const std::string& id, int sig, bool all) const
{
    auto argv = base();
    argv.emplace_back("kill");
    if (all) {
        argv.emplace_back("--all");
    }
    argv.push_back(id);
    argv.push_back(std::to_string(sig));
    auto r = run(argv);
    if (!r) {
        return unexpected(r.error());
    }
    if (!r->status.success()) {
        return unexpected(ErrorCode::Failed, runtimeError("kill", r->err));
    }
    return {};
}

Status Runtime::remove(const std::string& id, bool force) const
{
    auto argv = base();
    argv.emplace_back("delete");
    if (force) {
        argv.emplace_back("--force");
    }
    argv.push_back(id);
    auto r = run(argv);
    if (!r) {
        return unexpected(r.error());
    }
    if (!r->status.success()) {
        if (r->err.find("does not exist") != std::string::npos) {
            return unexpected(ErrorCode::NotFound, "container " + id + " does not exist");
        }
        return unexpected(ErrorCode::Failed, runtimeError("delete", r->err));
    }
    return {};
}

static ContainerState parseState(const nlohmann::json& j)
{
    ContainerState s;
    s.id = j.value("id", "");
    s.status = j.value("status", "");
    s.pid = j.value("pid", 0);
    s.bundle = j.value("bundle", "");
    return s;
}

Expected<ContainerState> Runtime::state(const std::string& id) const
{
    auto argv = base();
    argv.insert(argv.end(), {"state", id});
    auto r = run(argv);
    if (!r) {
        return unexpected(r.error());
    }
    if (!r->status.success()) {
        return unexpected(ErrorCode::NotFound, runtimeError("state", r->err));
    }
    try {
        return parseState(nlohmann::json::parse(r->out));
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Failed, binary_ + " state printed invalid JSON: " + e.what());
    }
}

Expected<std::vector<ContainerState>> Runtime::list() const
{
    auto argv = base();
    argv.insert(argv.end(), {"list", "--format", "json"});
    auto r = run(argv);
    if (!r) {
        return unexpected(r.error());
    }
    if (!r->status.success()) {
        return unexpected(ErrorCode::Failed, runtimeError("list", r->err));
    }
    std::vector<ContainerState> out;
    try {
        auto j = nlohmann::json::parse(str::trim(r->out).empty() ? std::string("[]") : r->out);
        if (j.is_array()) {
            for (const auto& c : j) {
                out.push_back(parseState(c));
            }
        }
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Failed, binary_ + " list printed invalid JSON: " + e.what());
    }
    return out;
}

Expected<int> Runtime::exec(const std::string& id, const std::vector<std::string>& args,
                            std::chrono::milliseconds timeout, int outFd) const
{
    const std::string pidFile = root_ + "/" + id + ".exec.pid";
    ::unlink(pidFile.c_str());
    auto argv = base();
    argv.insert(argv.end(), {"exec", "--pid-file", pidFile, id});
    argv.insert(argv.end(), args.begin(), args.end());
    Fd in = devNull(O_RDONLY);
    SpawnOptions so;
    so.stdinFd = in.get();
    so.stdoutFd = outFd;
    so.stderrFd = outFd;
    auto child = Child::spawn(argv, so);
    if (!child) {
        return unexpected(child.error());
    }
    auto st = child->waitFor(timeout);
    if (!st) {
        // Kill the command itself: runc exec then reaps it and returns, so
        // nothing is left behind.
        if (auto p = fs::readFile(pidFile, 64)) {
            long pid = std::strtol(str::trim(*p).c_str(), nullptr, 10);
            if (pid > 0) {
                ::kill(static_cast<pid_t>(pid), SIGKILL);
            }
        }
        st = child->waitFor(std::chrono::milliseconds(2000));
        if (!st) {
            child->kill(SIGKILL);
            child->wait();
        }
        ::unlink(pidFile.c_str());
        return unexpected(ErrorCode::Timeout, "the probe did not finish within " + std::to_string(timeout.count()) + " ms");
    }
    ::unlink(pidFile.c_str());
    return st->code;
}

} // namespace mbl::containers
