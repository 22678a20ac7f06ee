// SPDX-License-Identifier: Apache-2.0
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
    proxy_->uponSignal("ConfirmationRequested").onInterface(iface).call([this](const std::string& id, const std::string& j) {
        add({"ConfirmationRequested", {id, j}});
    });
    proxy_->uponSignal("DownloadFinished")
        .onInterface(iface)
        .call([this](const std::string& id, const std::string& file, const std::string& result, const std::string& msg) {
            add({"DownloadFinished", {id, file, result, msg}});
        });
    // PropertiesChanged of the cloud client, recorded with the names of the changed properties.
    proxy_->uponSignal("PropertiesChanged")
        .onInterface("org.freedesktop.DBus.Properties")
        .call([this](const std::string& ifaceName, const std::map<std::string, sdbus::Variant>& changed,
                     const std::vector<std::string>& invalidated) {
            if (ifaceName != "org.mbl.CloudClient1") {
                return;
            }
            Signal s{"PropertiesChanged", {}};
            for (const auto& [k, v] : changed) {
                s.args.push_back(k);
            }
            s.args.insert(s.args.end(), invalidated.begin(), invalidated.end());
            add(std::move(s));
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

namespace {

constexpr const char* kIdentityBus = "org.mbl.DeviceIdentity1";
constexpr const char* kIdentityPath = "/org/mbl/DeviceIdentity1";

[[noreturn]] void identityFailed(TestStack& stack, const std::string& what, const std::string& why)
{
    throw std::runtime_error("identity service: " + what + ": " + why + "\n--- identity log ---\n" +
                             stack.log("device-identity"));
}

} // namespace

json identityProvisioningDoc(const CloudFixture& cloud, const IdentitySetup& setup)
{
    json doc = {{"server_url", setup.serverUrl.empty() ? cloud.serverUrl() : setup.serverUrl},
                {"tenant", "DEFAULT"},
                {"auth_mode", setup.authMode},
                {"server_ca_pem", cloud.caPem()},
                {"device_id", setup.deviceId}};
    if (!setup.token.empty()) {
        doc["token"] = setup.token;
    }
    return doc;
}

CloudFixture::DeviceCreds provisionIdentity(TestStack& stack, CloudFixture& cloud, const IdentitySetup& setup)
{
    if (!lookupUser("mbl-identity")) {
        skip("user mbl-identity does not exist (tests/setup.sh creates it)");
    }
    if (!stack.running("device-identity")) {
        TestStack::StartOptions opts;
        opts.env = setup.identityEnv;
        if (auto st = stack.start("device-identity", opts); !st) {
            identityFailed(stack, "start", st.error().message);
        }
    }
    auto proxy = sdbus::createProxy(stack.bus(), kIdentityBus, kIdentityPath);
    const char* iface = kIdentityBus;
    std::string step;
    try {
        step = "CreateCertificateRequest";
        std::string csr;
        proxy->callMethod("CreateCertificateRequest")
            .onInterface(iface)
            .withArguments(std::map<std::string, sdbus::Variant>{{"O", sdbus::Variant(std::string("MBL test"))}})
            .storeResultsTo(csr);
        if (setup.provision) {
            // The certificate names the device id the document assigns (the identity service
            // refuses a certificate whose CN is not the device id), so both go in one Provision.
            step = "Provision";
            json doc = identityProvisioningDoc(cloud, setup);
            doc["certificate_chain_pem"] = cloud.signDeviceCsr(csr, setup.deviceId);
            proxy->callMethod("Provision").onInterface(iface).withArguments(doc.dump());
        } else {
            // Key and certificate only: the certificate names the id the device has now.
            step = "InstallCertificate";
            sdbus::Variant id = proxy->getProperty("DeviceId").onInterface(iface);
            proxy->callMethod("InstallCertificate").onInterface(iface).withArguments(
                cloud.signDeviceCsr(csr, id.get<std::string>()));
        }
        step = "GetTlsCredentials";
        std::string chainPem;
        std::string serverCaPem;
        proxy->callMethod("GetTlsCredentials").onInterface(iface).storeResultsTo(chainPem, serverCaPem);
        CloudFixture::DeviceCreds c;
        c.chainPem = chainPem;
        if (c.chainPem.find("BEGIN CERTIFICATE") == std::string::npos) {
            identityFailed(stack, step, "no certificate chain");
        }
        const std::string base = cloud.dir() + "/pki/device-" + setup.deviceId;
        // The bus never hands out the key. Tools of the tests (curl, the in-process side of
        // the benchmarks) read a file key where the service keeps it; a TPM key has none.
        const std::string keyFile = stack.root() + "/var/lib/mbl/identity/device.key";
        if (auto key = fs::readFile(keyFile); key && key->find("PRIVATE KEY") != std::string::npos) {
            c.keyPem = *key;
            c.keyPath = base + ".key";
            if (!fs::writeFileAtomic(c.keyPath, c.keyPem, 0600)) {
                identityFailed(stack, step, "cannot write " + c.keyPath);
            }
        }
        if (!fs::writeFileAtomic(base + ".pem", c.chainPem, 0644)) {
            identityFailed(stack, step, "cannot write " + base + ".pem");
        }
        return c;
    } catch (const sdbus::Error& e) {
        identityFailed(stack, step, e.getName() + ": " + e.getMessage());
    }
}

CloudEnv::CloudEnv(const CloudEnvOptions& opts) : deviceId(opts.deviceId)
{
    // Tests start one device: its first poll goes at once (a fleet spreads it, poll.first_poll_spread_sec).
    json cfg = {{"poll", {{"backoff_base_ms", 200}, {"backoff_cap_ms", 2000}, {"auth_retry_sec", 1},
                          {"unprovisioned_retry_sec", 1}, {"first_poll_spread_sec", 0}}},
                {"download", {{"retry_base_ms", 100}}},
                {"device_class", "mbl-test-board"}};
    cfg.merge_patch(opts.config);
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/cloud.json", cfg.dump(2), 0644);

    if (opts.identityConfig) {
        (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/identity.json", opts.identityConfig(stack.root()).dump(2),
                                  0644);
    }
    identityStart.env = opts.identityEnv;
    IdentitySetup id;
    id.identityEnv = opts.identityEnv;
    id.deviceId = deviceId;
    id.authMode = opts.authMode;
    id.token = opts.token;
    id.serverUrl = opts.http2 ? cloud.http2Url() : opts.serverUrl;
    creds = provisionIdentity(stack, cloud, id);
    if (opts.startClient) {
        startClient();
    }
}

CloudEnv::~CloudEnv()
{
    proxy_.reset();
    stack.stop("cloud-client");
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
    IdentitySetup id;
    id.deviceId = deviceId;
    id.authMode = authMode;
    id.token = token;
    id.serverUrl = url;
    return identityProvisioningDoc(cloud, id);
}

void CloudEnv::writeSpec(const json& prov)
{
    auto proxy = sdbus::createProxy(stack.bus(), kIdentityBus, kIdentityPath);
    try {
        if (prov.is_null()) {
            // Back to an unprovisioned device: a new key, a certificate for it, no document.
            proxy->callMethod("FactoryReset").onInterface(kIdentityBus);
            IdentitySetup id;
            id.deviceId = deviceId;
            id.provision = false;
            id.identityEnv = identityStart.env;
            creds = provisionIdentity(stack, cloud, id);
        } else {
            json doc = prov;
            if (doc.value("auth_mode", "") == "mtls" && !doc.contains("certificate_chain_pem")) {
                // A certificate for the device id of the document (the installed one may name another).
                std::string csr;
                proxy->callMethod("CreateCertificateRequest")
                    .onInterface(kIdentityBus)
                    .withArguments(std::map<std::string, sdbus::Variant>{{"O", sdbus::Variant(std::string("MBL test"))}})
                    .storeResultsTo(csr);
                doc["certificate_chain_pem"] = cloud.signDeviceCsr(csr, doc.value("device_id", deviceId));
            }
            proxy->callMethod("Provision").onInterface(kIdentityBus).withArguments(doc.dump());
        }
    } catch (const sdbus::Error& e) {
        identityFailed(stack, prov.is_null() ? "FactoryReset" : "Provision", e.getName() + ": " + e.getMessage());
    }
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
