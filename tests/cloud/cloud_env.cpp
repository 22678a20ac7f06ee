#include "cloud_env.h"

#include "mbl/dbus/bus.h"
#include "mbl/fs.h"

#include <fcntl.h>
#include <poll.h>
#include <thread>
#include <unistd.h>

namespace mbl::test {

using nlohmann::json;

SignalRecorder::SignalRecorder()
{
    conn_ = dbus::connectSystemBus();
    proxy_ = sdbus::createProxy(*conn_, "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    const char* iface = "org.mbl.CloudClient1";
    proxy_->uponSignal("DeploymentRequested").onInterface(iface).call([this](const std::string& id, const std::string& j) {
        add({"DeploymentRequested", {id, j}});
    });
    proxy_->uponSignal("CancelRequested").onInterface(iface).call([this](const std::string& id) {
        add({"CancelRequested", {id}});
    });
    proxy_->uponSignal("DownloadFinished")
        .onInterface(iface)
        .call([this](const std::string& id, const std::string& file, const std::string& result, const std::string& msg) {
            add({"DownloadFinished", {id, file, result, msg}});
        });
    proxy_->finishRegistration();
    conn_->enterEventLoopAsync();
}

SignalRecorder::~SignalRecorder()
{
    conn_->leaveEventLoop();
    proxy_.reset();
    conn_.reset();
}

void SignalRecorder::add(Signal s)
{
    {
        std::lock_guard<std::mutex> lk(mu_);
        signals_.push_back(std::move(s));
    }
    cv_.notify_all();
}

std::vector<Signal> SignalRecorder::all()
{
    std::lock_guard<std::mutex> lk(mu_);
    return signals_;
}

std::size_t SignalRecorder::count(const std::string& name)
{
    std::lock_guard<std::mutex> lk(mu_);
    std::size_t n = 0;
    for (const auto& s : signals_) {
        n += s.name == name ? 1 : 0;
    }
    return n;
}

std::optional<Signal> SignalRecorder::waitFor(const std::string& name, std::size_t n, std::chrono::milliseconds timeout)
{
    std::unique_lock<std::mutex> lk(mu_);
    std::optional<Signal> found;
    cv_.wait_for(lk, timeout, [&] {
        std::size_t seen = 0;
        for (const auto& s : signals_) {
            if (s.name == name && ++seen == n) {
                found = s;
                return true;
            }
        }
        return false;
    });
    return found;
}

CloudEnv::CloudEnv(const CloudEnvOptions& opts)
{
    creds = cloud.makeDevice(deviceId);
    auto ids = lookupUser("mbl-identity");
    if (!ids) {
        skip("user mbl-identity does not exist (tests/setup.sh creates it)");
    }
    // The key as the identity service would keep it: readable by its user only.
    const std::string idDir = cloud.dir() + "/identity";
    (void)fs::makeDirs(idDir, 0700);
    (void)fs::writeFileAtomic(idDir + "/device.key", creds.keyPem, 0600);
    ::chown(idDir.c_str(), ids->first, ids->second);
    ::chown((idDir + "/device.key").c_str(), ids->first, ids->second);
    specPath_ = cloud.dir() + "/identity-spec.json";

    json cfg = {{"poll", {{"backoff_base_ms", 200}, {"backoff_cap_ms", 2000}, {"auth_retry_sec", 1},
                          {"unprovisioned_retry_sec", 1}}},
                {"download", {{"retry_base_ms", 100}}},
                {"device_class", "mbl-test-board"}};
    cfg.merge_patch(opts.config);
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/cloud.json", cfg.dump(2), 0644);

    writeSpec(provisioning(opts.authMode, opts.token, opts.serverUrl.empty() ? cloud.serverUrl() : opts.serverUrl));

    SpawnOptions so;
    so.env = stack.clientEnv();
    so.env.push_back("MBL_TEST_IDENTITY_SPEC=" + specPath_);
    so.dieWithParent = true;
    so.uid = ids->first;
    so.gid = ids->second;
    Fd logFd{::open(stack.logPath("identity-double").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)};
    so.stdoutFd = logFd.get();
    so.stderrFd = logFd.get();
    auto c = Child::spawn({buildRoot() + "/tests/cloud/mbl-identity-double", "--root", stack.root()}, so);
    if (!c) {
        throw std::runtime_error("cannot start the identity double: " + c.error().message);
    }
    identity_ = std::move(c).value();
    if (!waitUntil([&] { return stack.nameHasOwner("org.mbl.DeviceIdentity1"); }, std::chrono::seconds(10))) {
        throw std::runtime_error("identity double did not take its name: " + stack.log("identity-double"));
    }
    if (opts.startClient) {
        startClient();
    }
}

CloudEnv::~CloudEnv()
{
    proxy_.reset();
    stack.stop("cloud-client");
    if (identity_.running()) {
        identity_.terminate(std::chrono::milliseconds(2000));
    }
}

void CloudEnv::startClient()
{
    auto st = stack.start("cloud-client");
    if (!st) {
        throw std::runtime_error("cloud client did not start: " + st.error().message);
    }
}

json CloudEnv::provisioning(const std::string& authMode, const std::string& token, const std::string& url)
{
    return {{"server_url", url},     {"tenant", "DEFAULT"},         {"auth_mode", authMode},
            {"token", token},        {"server_ca_pem", cloud.caPem()}, {"device_id", deviceId}};
}

void CloudEnv::writeSpec(const json& prov)
{
    json spec = {{"device_id", deviceId}, {"key_path", cloud.dir() + "/identity/device.key"}, {"chain_pem", creds.chainPem}};
    if (!prov.is_null()) {
        spec["provisioning"] = prov;
    }
    (void)fs::writeFileAtomic(specPath_, spec.dump(2), 0644);
}

sdbus::IProxy& CloudEnv::proxy()
{
    if (!proxy_) {
        proxy_ = sdbus::createProxy(stack.bus(), "org.mbl.CloudClient1", "/org/mbl/CloudClient1");
    }
    return *proxy_;
}

std::string CloudEnv::stringProp(const std::string& name)
{
    return proxy().getProperty(name).onInterface("org.mbl.CloudClient1").get<std::string>();
}

std::uint64_t CloudEnv::uintProp(const std::string& name)
{
    sdbus::Variant v = proxy().getProperty(name).onInterface("org.mbl.CloudClient1");
    if (v.containsValueOfType<std::uint32_t>()) {
        return v.get<std::uint32_t>();
    }
    return v.get<std::uint64_t>();
}

bool CloudEnv::waitUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout)
{
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

std::vector<json> CloudEnv::requests(const std::string& pathContains)
{
    std::vector<json> out;
    const json st = cloud.state();
    for (const auto& r : st["requests"]) {
        if (r["path"].get<std::string>().find(pathContains) != std::string::npos) {
            out.push_back(r);
        }
    }
    return out;
}

std::string readFd(int fd, std::chrono::milliseconds timeout)
{
    std::string out;
    auto end = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (std::chrono::steady_clock::now() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) {
            continue;
        }
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

} // namespace mbl::test
