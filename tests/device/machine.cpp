// SPDX-License-Identifier: Apache-2.0
#include "machine.h"

#include "commands.h"

#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace mbl::test::device {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const char* name(Bootloader b)
{
    return b == Bootloader::Grub ? "grub" : "uboot";
}

std::string secondsSince(Clock::time_point t0)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f",
                  std::chrono::duration<double>(Clock::now() - t0).count());
    return buf;
}

namespace {

std::string base64(const std::string& in)
{
    std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string unbase64(const std::string& in)
{
    if (in.empty()) {
        return "";
    }
    std::string out(3 * (in.size() / 4) + 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
    if (n < 0) {
        return "";
    }
    std::size_t len = static_cast<std::size_t>(n);
    // EVP_DecodeBlock counts the padding as zero bytes.
    for (std::size_t i = in.size(); i > 0 && in[i - 1] == '='; --i) {
        --len;
    }
    out.resize(len);
    return out;
}

bool haveFile(const std::string& p)
{
    return ::access(p.c_str(), F_OK) == 0;
}

// Reads until `delim` (not included) or timeout; false on timeout or EOF.
bool readUntil(int fd, char delim, std::string& out, Clock::time_point deadline)
{
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            return false;
        }
        pollfd p{fd, POLLIN, 0};
        const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
        if (rc < 0 && errno != EINTR) {
            return false;
        }
        if (rc <= 0) {
            continue;
        }
        char c;
        const ssize_t n = ::read(fd, &c, 1);
        if (n == 0) {
            return false;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return false;
        }
        if (c == delim) {
            return true;
        }
        out.push_back(c);
    }
}

} // namespace

Image buildImage(Bootloader b)
{
    const std::string script = sourceRoot() + "/tests/device/build-image.sh";
    SpawnOptions so;
    so.stderrFd = STDERR_FILENO; // the builder's progress goes to the test log
    auto r = mbl::run({"bash", script, name(b)}, so);
    if (!r) {
        throw std::runtime_error("cannot run build-image.sh: " + r.error().message);
    }
    if (r->status.code == 77) {
        skip("the device image cannot be built here (build-image.sh said why above)");
    }
    if (!r->status.success()) {
        throw std::runtime_error("build-image.sh " + std::string(name(b)) + " failed: " + r->status.describe());
    }
    Image img;
    img.bootloader = b;
    for (const auto& line : str::split(r->out, '\n')) {
        const auto eq = line.find('=');
        if (eq == std::string::npos) {
            continue;
        }
        const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
        if (k == "DISK") {
            img.disk = v;
        } else if (k == "ROOTFS") {
            img.rootfs = v;
        } else if (k == "PKI") {
            img.pki = v;
        } else if (k == "BUILD") {
            img.build = v;
        }
    }
    if (img.disk.empty() || img.rootfs.empty()) {
        throw std::runtime_error("build-image.sh printed no DISK/ROOTFS: " + r->out);
    }
    return img;
}

Machine::Machine(const Image& image, const std::string& dir, int cloudPort)
    : image_(image), dir_(dir), cloudPort_(cloudPort)
{
    for (const char* tool : {"qemu-system-x86_64", "qemu-img", "swtpm", "socat"}) {
        auto r = mbl::run({"sh", "-c", std::string("command -v ") + tool});
        if (!r || !r->status.success()) {
            skip(std::string(tool) + " is not installed (tests/setup.sh installs it)");
        }
    }
    if (image_.bootloader == Bootloader::Uboot && !haveFile("/usr/lib/u-boot/qemu-x86/u-boot.rom")) {
        skip("Debian's U-Boot for QEMU is not installed (apt-get install u-boot-qemu)");
    }
    overlay_ = dir_ + "/disk.qcow2";
    consolePath_ = dir_ + "/console.log";
    qgaPath_ = dir_ + "/qga.sock";
    qmpPath_ = dir_ + "/qmp.sock";
    tpmDir_ = dir_ + "/tpm";
    (void)fs::makeDirs(tpmDir_, 0700);
    test::mustRun({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image_.disk, overlay_});
}

Machine::~Machine()
{
    stopEcho_ = true;
    if (echo_.joinable()) {
        echo_.join();
    }
    kill();
}

void Machine::hostLog(const std::string& line)
{
    Fd log{::open((dir_ + "/host.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    const std::string l = "machine: " + line + "\n";
    (void)!::write(log.get(), l.data(), l.size());
}

bool Machine::running()
{
    std::lock_guard<std::mutex> lock(mu_);
    return powered_;
}

int Machine::resets() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return resets_;
}

int Machine::watchdogResets() const
{
    std::lock_guard<std::mutex> lock(mu_);
    return watchdogResets_;
}

namespace {

// Sends one QMP command and reads lines until its answer (events on the way
// are kept in `events`). QMP: docs/interop/qmp-spec.txt of QEMU.
bool qmpCommand(int fd, const std::string& command, std::vector<json>& events, Clock::time_point deadline)
{
    const std::string req = json{{"execute", command}}.dump() + "\n";
    if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
        return false;
    }
    for (;;) {
        std::string line;
        if (!readUntil(fd, '\n', line, deadline)) {
            return false;
        }
        auto j = json::parse(line, nullptr, false);
        if (j.is_discarded()) {
            continue;
        }
        if (j.contains("return")) {
            return true;
        }
        if (j.contains("error")) {
            return false;
        }
        if (j.contains("event")) {
            events.push_back(std::move(j));
        }
    }
}

} // namespace

int Machine::powerOnLocked()
{
    if (swtpm_.running() && !swtpm_.waitFor(5000ms)) {
        swtpm_.terminate(2000ms);
    }
    const std::string tpmSock = tpmDir_ + "/sock";
    ::unlink(tpmSock.c_str());
    ::unlink(qgaPath_.c_str());
    ::unlink(qmpPath_.c_str());
    Fd log{::open((dir_ + "/host.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    SpawnOptions so;
    so.dieWithParent = true;
    so.stdinFd = -1;
    so.stdoutFd = log.get();
    so.stderrFd = log.get();
    // --terminate: swtpm ends when QEMU closes the control channel (or dies).
    auto t = Child::spawn({"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + tpmDir_, "--ctrl",
                           "type=unixio,path=" + tpmSock, "--flags", "startup-clear", "--terminate"},
                          so);
    if (!t) {
        throw std::runtime_error("cannot start swtpm: " + t.error().message);
    }
    swtpm_ = std::move(t).value();
    for (int i = 0; i < 500 && !haveFile(tpmSock); ++i) {
        std::this_thread::sleep_for(10ms);
    }
    // -S and QMP with wait=on: the guest runs only once the supervisor listens
    // to QMP, so no SHUTDOWN event can be missed.
    std::vector<std::string> argv = {
        "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-smp", "2", "-m", "1024", "-nodefaults",
        "-no-user-config", "-display", "none", "-name", "mbl-device", "-S",
        "-qmp", "unix:" + qmpPath_ + ",server=on,wait=on",
        "-chardev", "file,id=ser0,path=" + consolePath_ + ",append=on", "-serial", "chardev:ser0",
        "-drive", "file=" + overlay_ + ",if=virtio,format=qcow2,cache=writeback,discard=unmap",
        "-device", "virtio-serial-pci",
        "-chardev", "socket,id=qga0,path=" + qgaPath_ + ",server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-device", "i6300esb", "-action", "watchdog=reset",
        // A guest reset ends this QEMU (the supervisor starts the next).
        "-action", "reboot=shutdown",
        "-chardev", "socket,id=chrtpm,path=" + tpmSock, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-tis,tpmdev=tpm0",
        "-rtc", "base=utc,clock=host"};
    std::string net = "user,id=n0,restrict=on";
    if (cloudPort_ > 0) {
        // One socat per guest connection; nothing else leaves the guest.
        net += ",guestfwd=tcp:10.0.2.100:443-cmd:socat STDIO TCP:127.0.0.1:" + std::to_string(cloudPort_);
    }
    argv.insert(argv.end(), {"-netdev", net, "-device", "virtio-net-pci,netdev=n0"});
    if (!stick_.empty()) {
        argv.insert(argv.end(), {"-drive", "file=" + stick_ + ",if=virtio,format=raw,readonly=on"});
    }
    if (image_.bootloader == Bootloader::Uboot) {
        argv.insert(argv.end(), {"-bios", "/usr/lib/u-boot/qemu-x86/u-boot.rom"});
    }
    auto q = Child::spawn(argv, so);
    if (!q) {
        throw std::runtime_error("cannot start qemu: " + q.error().message);
    }
    qemu_ = std::move(q).value();

    const auto deadline = Clock::now() + 60s;
    Fd qmp;
    while (!qmp) {
        if (qemu_.tryWait()) {
            killLocked();
            throw std::runtime_error("qemu ended before QMP answered (see " + dir_ + "/host.log)");
        }
        if (Clock::now() > deadline) {
            killLocked();
            throw std::runtime_error("qemu's QMP socket did not answer in 60 s");
        }
        Fd s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", qmpPath_.c_str());
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            qmp = std::move(s);
        } else {
            std::this_thread::sleep_for(20ms);
        }
    }
    std::string greeting;
    std::vector<json> events;
    if (!readUntil(qmp.get(), '\n', greeting, deadline) || !qmpCommand(qmp.get(), "qmp_capabilities", events, deadline) ||
        !qmpCommand(qmp.get(), "cont", events, deadline)) {
        killLocked();
        throw std::runtime_error("qemu's QMP did not negotiate (greeting: " + greeting + ")");
    }
    return qmp.release();
}

void Machine::killLocked()
{
    if (qemu_.running()) {
        qemu_.kill(SIGKILL);
        (void)qemu_.wait();
    }
    if (swtpm_.running() && !swtpm_.waitFor(5000ms)) {
        swtpm_.terminate(1000ms);
    }
}

void Machine::supervise(int fd)
{
    for (;;) {
        Fd qmp{fd};
        std::string reason;
        bool watchdog = false;
        // Until QEMU closes QMP (it ended, or was killed).
        for (;;) {
            std::string line;
            if (!readUntil(qmp.get(), '\n', line, Clock::now() + std::chrono::hours(24 * 365))) {
                break;
            }
            auto j = json::parse(line, nullptr, false);
            if (j.is_discarded() || !j.contains("event")) {
                continue;
            }
            const std::string ev = j.value("event", "");
            if (ev == "SHUTDOWN" && j.contains("data")) {
                reason = j["data"].value("reason", "");
            } else if (ev == "WATCHDOG") {
                watchdog = true;
            }
        }
        std::lock_guard<std::mutex> lock(mu_);
        if (!powered_) {
            return; // kill(): the power was cut on purpose
        }
        if (!qemu_.waitFor(30000ms)) {
            hostLog("qemu closed QMP but did not exit in 30 s: killed");
        }
        killLocked();
        if (reason != "guest-reset") {
            // "guest-shutdown" is a poweroff; no event at all means QEMU
            // itself failed: the machine is off either way.
            hostLog("qemu ended (" + (reason.empty() ? std::string("no SHUTDOWN event") : reason) + "): powered off");
            powered_ = false;
            return;
        }
        ++resets_;
        if (watchdog) {
            ++watchdogResets_;
        }
        hostLog(std::string("guest reset") + (watchdog ? " by the watchdog" : "") + " #" +
                std::to_string(resets_) + ": a new QEMU on the same disk");
        try {
            fd = powerOnLocked();
        } catch (const std::exception& e) {
            hostLog(std::string("cannot power on again after a reset: ") + e.what());
            powered_ = false;
            return;
        }
    }
}

void Machine::start()
{
    if (supervisor_.joinable()) {
        supervisor_.join(); // the last power cycle's, already ended
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (powered_) {
        throw std::runtime_error("the machine is already running");
    }
    const int fd = powerOnLocked();
    powered_ = true;
    supervisor_ = std::thread([this, fd] { supervise(fd); });
}

void Machine::kill()
{
    {
        std::lock_guard<std::mutex> lock(mu_);
        powered_ = false;
        killLocked();
    }
    if (supervisor_.joinable()) {
        supervisor_.join();
    }
}

void Machine::powerOff(std::chrono::seconds timeout)
{
    if (!running()) {
        kill();
        return;
    }
    (void)sh("systemctl --no-block poweroff", 20s);
    const auto deadline = Clock::now() + timeout;
    while (running() && Clock::now() < deadline) {
        std::this_thread::sleep_for(200ms);
    }
    kill(); // the supervisor saw the poweroff (or the timeout cuts the power); reaps
}

std::optional<std::string> Machine::agent(const std::string& request, std::chrono::milliseconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    Fd s{::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", qgaPath_.c_str());
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        return std::nullopt;
    }
    // guest-sync-delimited: the agent answers with 0xFF then the id, which
    // skips whatever an earlier, abandoned exchange left in the channel.
    const unsigned id = static_cast<unsigned>(Clock::now().time_since_epoch().count() & 0x7fffffff);
    const std::string sync = json{{"execute", "guest-sync-delimited"}, {"arguments", {{"id", id}}}}.dump();
    const std::string out = "\xff" + sync + "\n";
    if (::write(s.get(), out.data(), out.size()) != static_cast<ssize_t>(out.size())) {
        return std::nullopt;
    }
    for (;;) {
        std::string skipped;
        if (!readUntil(s.get(), '\xff', skipped, deadline)) {
            return std::nullopt;
        }
        std::string line;
        if (!readUntil(s.get(), '\n', line, deadline)) {
            return std::nullopt;
        }
        auto j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.contains("return") && j["return"] == id) {
            break;
        }
    }
    const std::string req = request + "\n";
    if (::write(s.get(), req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
        return std::nullopt;
    }
    std::string line;
    if (!readUntil(s.get(), '\n', line, deadline)) {
        return std::nullopt;
    }
    return line;
}

bool Machine::waitAgent(std::chrono::seconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        if (!running()) {
            return false;
        }
        auto r = agent(json{{"execute", "guest-ping"}}.dump(), 3000ms);
        if (r && r->find("\"return\"") != std::string::npos) {
            return true;
        }
        std::this_thread::sleep_for(500ms);
    }
    return false;
}

ExecResult Machine::sh(const std::string& script, std::chrono::seconds timeout, const std::string& input)
{
    ExecResult res;
    json args = {{"path", "/bin/sh"}, {"arg", {"-c", script}}, {"capture-output", true}};
    if (!input.empty()) {
        args["input-data"] = base64(input);
    }
    auto started = agent(json{{"execute", "guest-exec"}, {"arguments", args}}.dump(), 20000ms);
    if (!started) {
        res.err = "the guest agent did not answer";
        return res;
    }
    auto j = json::parse(*started, nullptr, false);
    if (j.is_discarded() || !j.contains("return")) {
        res.err = "guest-exec failed: " + *started;
        return res;
    }
    const int pid = j["return"].value("pid", -1);
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        auto st = agent(json{{"execute", "guest-exec-status"}, {"arguments", {{"pid", pid}}}}.dump(), 10000ms);
        if (!st) {
            res.err = "the guest agent stopped answering";
            return res;
        }
        auto s = json::parse(*st, nullptr, false);
        if (!s.is_discarded() && s.contains("return") && s["return"].value("exited", false)) {
            const auto& r = s["return"];
            res.code = r.contains("exitcode") ? r["exitcode"].get<int>() : 128 + r.value("signal", 0);
            res.out = unbase64(r.value("out-data", ""));
            res.err = unbase64(r.value("err-data", ""));
            return res;
        }
        std::this_thread::sleep_for(100ms);
    }
    res.err = "timed out after " + std::to_string(timeout.count()) + " s";
    return res;
}

bool Machine::push(const std::string& hostPath, const std::string& guestPath)
{
    auto data = fs::readFile(hostPath, 64u << 20);
    if (!data) {
        return false;
    }
    auto r = sh("cat > '" + guestPath + "'", 120s, *data);
    return r.ok();
}

std::string Machine::bootId()
{
    auto r = sh("cat /proc/sys/kernel/random/boot_id", 10s);
    return r.ok() ? str::trim(r.out) : "";
}

std::string Machine::waitBooted(std::chrono::seconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    if (!waitAgent(timeout)) {
        return "";
    }
    while (Clock::now() < deadline && running()) {
        const auto left = std::chrono::duration_cast<std::chrono::seconds>(deadline - Clock::now());
        auto r = sh("systemctl is-system-running --wait", std::max(left, std::chrono::seconds(1)));
        const std::string st = str::trim(r.out);
        if (st == "running" || st == "degraded") {
            return st;
        }
        if (r.code < 0) {
            std::this_thread::sleep_for(500ms); // rebooting, or the agent restarted
        }
    }
    return "";
}

bool Machine::waitNewBoot(const std::string& previous, std::chrono::seconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && running()) {
        const std::string id = bootId();
        if (!id.empty() && id != previous) {
            return true;
        }
        std::this_thread::sleep_for(1s);
    }
    return false;
}

std::string Machine::console() const
{
    auto t = fs::readFile(consolePath_, 256u << 20);
    return t ? *t : "";
}

std::size_t Machine::consoleSize() const
{
    struct stat st{};
    return ::stat(consolePath_.c_str(), &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
}

void Machine::echoConsole()
{
    if (echo_.joinable()) {
        return;
    }
    echo_ = std::thread([this] {
        std::size_t done = consoleSize();
        std::string partial;
        while (!stopEcho_) {
            const std::size_t size = consoleSize();
            if (size > done) {
                Fd f{::open(consolePath_.c_str(), O_RDONLY | O_CLOEXEC)};
                std::string chunk(size - done, '\0');
                const ssize_t n = ::pread(f.get(), chunk.data(), chunk.size(), static_cast<off_t>(done));
                if (n > 0) {
                    chunk.resize(static_cast<std::size_t>(n));
                    done += chunk.size();
                    partial += chunk;
                    std::size_t nl;
                    while ((nl = partial.find('\n')) != std::string::npos) {
                        std::string line = partial.substr(0, nl);
                        partial.erase(0, nl + 1);
                        // Terminal control sequences of the firmware and systemd's colours.
                        std::string clean;
                        for (std::size_t i = 0; i < line.size(); ++i) {
                            if (line[i] == '\x1b') {
                                while (i < line.size() && !std::isalpha(static_cast<unsigned char>(line[i]))) {
                                    ++i;
                                }
                                continue;
                            }
                            if (line[i] != '\r') {
                                clean += line[i];
                            }
                        }
                        std::printf("console| %s\n", clean.c_str());
                    }
                    std::fflush(stdout);
                }
            }
            std::this_thread::sleep_for(200ms);
        }
    });
}

std::vector<std::string> Machine::bootChoices() const
{
    // Both boot scripts print one line per boot:
    //   GRUB:   mbl: BOOT_ORDER 'B A', booting slot 'B'
    //   U-Boot: mbl: booting slot B (BOOT_ORDER=B A)  /  mbl: no slot of BOOT_ORDER ...
    std::vector<std::string> out;
    for (const auto& line : str::split(console(), '\n')) {
        auto p = line.find("booting slot ");
        if (line.find("mbl: ") == std::string::npos || p == std::string::npos) {
            if (line.find("mbl: no slot") != std::string::npos) {
                out.push_back("");
            }
            continue;
        }
        std::string rest = line.substr(p + 13);
        if (!rest.empty() && rest[0] == '\'') {
            rest = rest.substr(1, rest.find('\'', 1) == std::string::npos ? 0 : rest.find('\'', 1) - 1);
        } else {
            rest = rest.substr(0, rest.find(' '));
        }
        out.push_back(str::trim(rest));
    }
    return out;
}

bool Machine::waitConsole(const std::string& text, std::size_t from, std::chrono::seconds timeout) const
{
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        const std::string c = console();
        if (c.size() > from && c.find(text, from) != std::string::npos) {
            return true;
        }
        std::this_thread::sleep_for(200ms);
    }
    return false;
}

} // namespace mbl::test::device
