// SPDX-License-Identifier: Apache-2.0
#include "harness.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <poll.h>
#include <pwd.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace mbl::test {

namespace {
std::string envOr(const char* name, const std::string& fallback)
{
    const char* v = std::getenv(name);
    return v != nullptr ? v : fallback;
}
} // namespace

std::string buildRoot()
{
    return envOr("MBL_BUILD_ROOT", ".");
}

std::string sourceRoot()
{
    return envOr("MBL_SOURCE_ROOT", "..");
}

std::string policyDir()
{
    return envOr("MBL_POLICY_DIR", buildRoot() + "/dbus-policy");
}

void skip(const std::string& reason)
{
    std::cerr << "SKIP: " << reason << "\n";
    std::exit(77);
}

TempDir::TempDir(const std::string& prefix)
{
    std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    if (made == nullptr) {
        throw std::runtime_error("mkdtemp failed: " + std::string(std::strerror(errno)));
    }
    path_ = made;
    // Daemons running as their own users must be able to traverse it.
    ::chmod(path_.c_str(), 0755);
}

TempDir::~TempDir()
{
    (void)fs::removeTree(path_);
}

const std::vector<ServiceSpec>& allServices()
{
    static const std::vector<ServiceSpec> specs = {
        {"device-identity", "org.mbl.DeviceIdentity1", "/org/mbl/DeviceIdentity1",
         "services/device-identity/mbl-device-identity", envOr("MBL_TEST_IDENTITY_USER", "mbl-identity"), "identity"},
        {"update", "org.mbl.Update1", "/org/mbl/Update1", "services/update/mbl-update", "root", "update"},
        {"container-manager", "org.mbl.ContainerManager1", "/org/mbl/ContainerManager1",
         "services/container-manager/mbl-container-manager", "root", "apps"},
        {"cloud-client", "org.mbl.CloudClient1", "/org/mbl/CloudClient1", "services/cloud-client/mbl-cloud-client",
         envOr("MBL_TEST_CLOUD_USER", "mbl-cloud"), "cloud"},
        {"coordinator", "org.mbl.Coordinator1", "/org/mbl/Coordinator1", "services/coordinator/mbl-coordinator",
         envOr("MBL_TEST_COORDINATOR_USER", "mbl-coordinator"), "coordinator"},
    };
    return specs;
}

const ServiceSpec& service(const std::string& label)
{
    for (const auto& s : allServices()) {
        if (s.label == label) {
            return s;
        }
    }
    throw std::runtime_error("no service " + label);
}

std::optional<std::pair<uid_t, gid_t>> lookupUser(const std::string& name)
{
    struct passwd* pw = ::getpwnam(name.c_str());
    if (pw == nullptr) {
        return std::nullopt;
    }
    return std::make_pair(pw->pw_uid, pw->pw_gid);
}

TestStack::TestStack() : TestStack(Options{}) {}

TestStack::TestStack(const Options& options)
{
    if (::geteuid() != 0) {
        skip("the integration harness runs daemons as their service users and needs root");
    }
    std::string tmpl = "/tmp/mbl-stack.XXXXXX";
    char* made = ::mkdtemp(tmpl.data());
    if (made == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    dir_ = made;
    ::chmod(dir_.c_str(), 0755);
    root_ = dir_ + "/root";

    // The bus: deny by default like Debian's system.conf, plus our policy files.
    const std::string policyCopy = dir_ + "/policy";
    (void)fs::makeDirs(policyCopy, 0755);
    for (const auto& s : allServices()) {
        const std::string src = policyDir() + "/" + s.busName + ".conf";
        bool excluded = false;
        for (const auto& w : options.withoutPolicies) {
            excluded = excluded || w == s.busName;
        }
        if (excluded) {
            continue;
        }
        auto text = fs::readFile(src);
        if (!text) {
            throw std::runtime_error("missing policy file " + src);
        }
        (void)fs::writeFileAtomic(policyCopy + "/" + s.busName + ".conf", *text, 0644);
    }
    for (const auto& src : options.extraPolicies) {
        auto text = fs::readFile(src);
        if (!text) {
            throw std::runtime_error("missing policy file " + src);
        }
        (void)fs::writeFileAtomic(policyCopy + "/" + src.substr(src.rfind('/') + 1), *text, 0644);
    }
    const std::string socket = dir_ + "/system_bus_socket";
    const std::string conf = "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                             " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                             "<busconfig>\n"
                             "  <type>system</type>\n"
                             "  <listen>unix:path=" + socket + "</listen>\n"
                             "  <auth>EXTERNAL</auth>\n"
                             "  <policy context=\"default\">\n"
                             "    <allow user=\"*\"/>\n"
                             "    <deny own=\"*\"/>\n"
                             "    <deny send_type=\"method_call\"/>\n"
                             "    <allow send_type=\"signal\"/>\n"
                             "    <allow send_requested_reply=\"true\" send_type=\"method_return\"/>\n"
                             "    <allow send_requested_reply=\"true\" send_type=\"error\"/>\n"
                             "    <allow receive_type=\"method_call\"/>\n"
                             "    <allow receive_type=\"method_return\"/>\n"
                             "    <allow receive_type=\"error\"/>\n"
                             "    <allow receive_type=\"signal\"/>\n"
                             "    <allow send_destination=\"org.freedesktop.DBus\" send_interface=\"org.freedesktop.DBus\"/>\n"
                             "    <allow send_destination=\"org.freedesktop.DBus\" "
                             "send_interface=\"org.freedesktop.DBus.Introspectable\"/>\n"
                             "    <allow send_destination=\"org.freedesktop.DBus\" "
                             "send_interface=\"org.freedesktop.DBus.Properties\"/>\n"
                             "  </policy>\n"
                             "  <includedir>" + policyCopy + "</includedir>\n"
                             "</busconfig>\n";
    (void)fs::writeFileAtomic(dir_ + "/bus.conf", conf, 0644);

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe failed");
    }
    Fd readEnd{pipefd[0]};
    Fd writeEnd{pipefd[1]};
    Fd devnull{::open("/dev/null", O_WRONLY | O_CLOEXEC)};
    SpawnOptions so;
    so.stdoutFd = writeEnd.get();
    so.stderrFd = devnull.get(); // "Failed to set fd limit" noise when not the real messagebus
    so.dieWithParent = true;
    auto bus = Child::spawn({"dbus-daemon", "--config-file=" + dir_ + "/bus.conf", "--nofork", "--print-address=1"}, so);
    if (!bus) {
        throw std::runtime_error("cannot start dbus-daemon: " + bus.error().message);
    }
    busDaemon_ = std::move(bus).value();
    writeEnd.reset();
    std::string addr;
    struct pollfd pfd = {readEnd.get(), POLLIN, 0};
    while (addr.find('\n') == std::string::npos) {
        if (::poll(&pfd, 1, 10000) <= 0) {
            throw std::runtime_error("dbus-daemon did not print its address");
        }
        char buf[512];
        ssize_t n = ::read(readEnd.get(), buf, sizeof buf);
        if (n <= 0) {
            throw std::runtime_error("dbus-daemon exited before printing its address");
        }
        addr.append(buf, static_cast<std::size_t>(n));
    }
    address_ = str::trim(addr);
    ::setenv("DBUS_SYSTEM_BUS_ADDRESS", address_.c_str(), 1);
    prepareTree();
}

void TestStack::prepareTree()
{
    // What systemd's StateDirectory=/RuntimeDirectory= would make on a device.
    for (const char* d : {"/etc/mbl", "/var/lib/mbl", "/run/mbl", "/var/log/mbl"}) {
        (void)fs::makeDirs(root_ + d, 0755);
    }
    (void)fs::makeDirs(dir_ + "/logs", 0755);
    for (const auto& s : allServices()) {
        for (const char* base : {"/var/lib/mbl/", "/run/mbl/"}) {
            const std::string p = root_ + base + s.stateName;
            (void)fs::makeDirs(p, 0700);
            if (auto ids = lookupUser(s.user)) {
                if (::chown(p.c_str(), ids->first, ids->second) != 0) {
                    throw std::runtime_error("chown " + p + " failed");
                }
            }
        }
    }
    (void)fs::writeFileAtomic(root_ + "/run/mbl/bus-address", address_ + "\n", 0644);
}

TestStack::~TestStack()
{
    bus_.reset();
    for (auto& [label, child] : daemons_) {
        if (child.running()) {
            child.terminate(std::chrono::milliseconds(2000));
        }
    }
    daemons_.clear();
    if (busDaemon_.running()) {
        busDaemon_.terminate(std::chrono::milliseconds(2000));
    }
    if (!dir_.empty()) {
        (void)fs::removeTree(dir_);
    }
}

std::string TestStack::logPath(const std::string& label) const
{
    return dir_ + "/logs/" + label + ".log";
}

std::string TestStack::log(const std::string& label) const
{
    auto text = fs::readFile(logPath(label));
    return text ? *text : std::string();
}

std::vector<std::string> TestStack::clientEnv() const
{
    return {"DBUS_SYSTEM_BUS_ADDRESS=" + address_, "MBL_ROOT=" + root_};
}

Expected<Child> TestStack::spawn(const std::string& label, const StartOptions& opts)
{
    const auto& spec = service(label);
    const std::string user = opts.user.value_or(spec.user);
    auto ids = lookupUser(user);
    if (!ids) {
        skip("user '" + user + "' does not exist (the README's test command creates the test users)");
    }
    Fd logFd{::open(logPath(label).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    SpawnOptions so;
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    so.env = clientEnv();
    for (const auto& e : opts.env) {
        so.env.push_back(e);
    }
    so.dieWithParent = true;
    if (ids->first != 0) {
        so.uid = ids->first;
        so.gid = ids->second;
    }
    std::vector<std::string> argv = {buildRoot() + "/" + spec.binary};
    argv.insert(argv.end(), opts.args.begin(), opts.args.end());
    return Child::spawn(argv, so);
}

Status TestStack::start(const std::string& label)
{
    return start(label, StartOptions{});
}

Status TestStack::start(const std::string& label, const StartOptions& opts)
{
    const auto& spec = service(label);
    auto child = spawn(label, opts);
    if (!child) {
        return unexpected(child.error());
    }
    auto deadline = std::chrono::steady_clock::now() + opts.timeout;
    while (true) {
        if (auto st = child->tryWait()) {
            std::string tail = log(label);
            if (tail.size() > 2000) {
                tail = tail.substr(tail.size() - 2000);
            }
            return unexpected(ErrorCode::Failed, label + " " + st->describe() + ": " + tail);
        }
        if (nameHasOwner(spec.busName)) {
            break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            return unexpected(ErrorCode::Timeout, label + " did not take " + spec.busName + ": " + log(label));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    daemons_[label] = std::move(child).value();
    return {};
}

Status TestStack::startAll()
{
    for (const auto& s : allServices()) {
        if (auto st = start(s.label); !st) {
            return st;
        }
    }
    return {};
}

std::pair<ExitStatus, std::chrono::milliseconds> TestStack::stop(const std::string& label)
{
    auto it = daemons_.find(label);
    if (it == daemons_.end()) {
        return {ExitStatus{}, std::chrono::milliseconds(0)};
    }
    auto t0 = std::chrono::steady_clock::now();
    it->second.kill(SIGTERM);
    auto st = it->second.waitFor(std::chrono::milliseconds(5000));
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    if (!st) {
        it->second.kill(SIGKILL);
        st = it->second.wait();
    }
    daemons_.erase(it);
    return {*st, took};
}

void TestStack::kill(const std::string& label)
{
    auto it = daemons_.find(label);
    if (it != daemons_.end()) {
        it->second.kill(SIGKILL);
        it->second.wait();
        daemons_.erase(it);
    }
}

bool TestStack::running(const std::string& label)
{
    auto it = daemons_.find(label);
    if (it == daemons_.end()) {
        return false;
    }
    if (it->second.tryWait()) {
        daemons_.erase(it);
        return false;
    }
    return true;
}

pid_t TestStack::pid(const std::string& label) const
{
    auto it = daemons_.find(label);
    return it == daemons_.end() ? -1 : it->second.pid();
}

sdbus::IConnection& TestStack::bus()
{
    if (!bus_) {
        bus_ = dbus::connectSystemBus();
    }
    return *bus_;
}

bool TestStack::nameHasOwner(const std::string& busName)
{
    auto proxy = sdbus::createProxy(bus(), "org.freedesktop.DBus", "/org/freedesktop/DBus");
    bool has = false;
    proxy->callMethod("NameHasOwner").onInterface("org.freedesktop.DBus").withArguments(busName).storeResultsTo(has);
    return has;
}

RunResult TestStack::runTool(const std::vector<std::string>& argv, const std::optional<std::string>& asUser)
{
    std::vector<std::string> full;
    if (asUser) {
        auto ids = lookupUser(*asUser);
        if (!ids) {
            skip("user '" + *asUser + "' does not exist (the README's test command creates the test users)");
        }
        full = {"setpriv", "--reuid=" + std::to_string(ids->first), "--regid=" + std::to_string(ids->second),
                "--init-groups", "--"};
    }
    full.insert(full.end(), argv.begin(), argv.end());
    SpawnOptions so;
    so.env = clientEnv();
    so.dieWithParent = true;
    auto r = mbl::run(full, so);
    if (!r) {
        RunResult failed;
        failed.status.code = 127;
        failed.err = r.error().message;
        return failed;
    }
    return *r;
}

RunResult TestStack::busctl(const std::vector<std::string>& args, const std::optional<std::string>& asUser)
{
    std::vector<std::string> argv = {"busctl", "--address=" + address_};
    argv.insert(argv.end(), args.begin(), args.end());
    return runTool(argv, asUser);
}

} // namespace mbl::test
