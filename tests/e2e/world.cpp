// SPDX-License-Identifier: Apache-2.0
#include "world.h"

#include "../containers/image_tools.h"
#include "cloud_env.h"

#include "mbl/dbus/bus.h"
#include "mbl/fd.h"
#include "mbl/fs.h"
#include "mbl/strings.h"

#include <sdbus-c++/sdbus-c++.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace mbl::test::e2e {

using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// The coordinator first (it reacts to the others going away), identity last.
const char* const kShutdownOrder[] = {"coordinator", "cloud-client", "container-manager", "update", "device-identity"};

std::string kib(const std::string& path)
{
    struct stat st{};
    return ::stat(path.c_str(), &st) == 0 ? std::to_string(st.st_size >> 10) + " KiB" : "?";
}

constexpr const char* kCoordinator = "org.mbl.Coordinator1";
constexpr const char* kCoordinatorPath = "/org/mbl/Coordinator1";

std::unique_ptr<sdbus::IProxy> proxyFor(TestStack& stack, const std::string& label)
{
    const auto& spec = service(label);
    return sdbus::createProxy(stack.bus(), spec.busName, spec.objectPath);
}

void merge(json& into, const json& patch)
{
    if (patch.is_object()) {
        into.merge_patch(patch);
    }
}

// The first bytes of a rootfs image stand for its /etc/os-release.
void writeImageHead(const std::string& image, const std::string& line)
{
    Fd f{::open(image.c_str(), O_WRONLY | O_CLOEXEC)};
    const std::string head = line + "\n";
    if (!f || ::pwrite(f.get(), head.data(), head.size(), 0) != static_cast<ssize_t>(head.size())) {
        throw std::runtime_error("cannot write the head of " + image);
    }
}

} // namespace

World::World(WorldOptions options)
    : pki(work.path() + "/pki"), options_(std::move(options))
{
    if (!haveTool("runc")) {
        skip("runc is not installed (tests/setup.sh installs it)");
    }
    device = std::make_unique<update::Device>(stack.root(), pki, "file", options_.slotSize);
    // The factory image in slot a, and what the booted rootfs says of itself.
    writeImageHead(device->slotA, "VERSION_ID=" + device->config.value("factoryVersion", std::string("1.0.0")));
    (void)fs::writeFileAtomic(stack.root() + "/etc/os-release", osReleaseOf(device->slotA) + "\n", 0644);
    writeConfigs(options_);
}

World::~World()
{
    // Containers are children of nobody we own once the manager is gone: remove them.
    for (const char* label : kShutdownOrder) {
        if (stack.running(label)) {
            stack.stop(label);
        }
    }
    for (const auto& id : runcContainers()) {
        (void)mbl::run({"runc", "--root", runcRoot(), "delete", "--force", id});
    }
    // Belt and braces: no process whose root is an app of this world outlives it
    // (a leaked container loops once its rootfs is deleted).
    if (std::unique_ptr<DIR, int (*)(DIR*)> proc{::opendir("/proc"), ::closedir}) {
        while (struct dirent* e = ::readdir(proc.get())) {
            const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
            if (pid <= 1) {
                continue;
            }
            char buf[4096];
            const std::string link = "/proc/" + std::string(e->d_name) + "/root";
            const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
            if (n > 0 && std::string(buf, static_cast<std::size_t>(n)).rfind(stack.root() + "/", 0) == 0) {
                ::kill(pid, SIGKILL);
            }
        }
    }
}

void World::say(const std::string& line) const
{
    if (options_.narrate) {
        options_.narrate(line);
    }
}

void World::writeConfigs(const WorldOptions& o)
{
    // No user records in the host's /run/userdb (worlds run side by side and are
    // killed without removing their apps): the e2e apps do not use app_api.
    json containers = {{"stop_grace_ms", 1500}, {"backoff_base_ms", 200}, {"backoff_cap_ms", 800},
                       {"userns", {{"userdb_dir", ""}}}};
    merge(containers, o.containers);
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/containers.json", containers.dump(2), 0644);

    json cloudCfg = {{"poll", {{"backoff_base_ms", 200}, {"backoff_cap_ms", 2000}, {"auth_retry_sec", 1},
                               {"unprovisioned_retry_sec", 1}}},
                     {"download", {{"retry_base_ms", 100}}},
                     {"device_class", "mbl-test-board"}};
    merge(cloudCfg, o.cloud);
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/cloud.json", cloudCfg.dump(2), 0644);

    json coord = {{"health_grace_ms", 1500},
                  {"health_timeout_ms", 60000},
                  {"boot_id_path", device->bootId},
                  {"download_retry_base_ms", 500},
                  {"download_retry_max_ms", 2000}};
    merge(coord, o.coordinator);
    (void)fs::writeFileAtomic(stack.root() + "/etc/mbl/coordinator.json", coord.dump(2), 0644);
}

void World::start(const std::string& label, const TestStack::StartOptions& opts)
{
    auto st = stack.start(label, opts);
    if (!st) {
        throw std::runtime_error(label + " did not start: " + st.error().describe());
    }
}

void World::startAll(const std::map<std::string, TestStack::StartOptions>& extra)
{
    startExtra_ = extra;
    auto optsFor = [&](const std::string& label) {
        auto it = startExtra_.find(label);
        auto o = it == startExtra_.end() ? TestStack::StartOptions{} : it->second;
        if (const char* lvl = std::getenv("MBL_E2E_LOG_LEVEL")) { // e.g. debug, when chasing a failure
            o.env.push_back(std::string("MBL_LOG_LEVEL=") + lvl);
        }
        return o;
    };
    start("device-identity", optsFor("device-identity"));
    if (!provisioned_) {
        provision();
    }
    for (const char* label : {"update", "container-manager", "cloud-client", "coordinator"}) {
        start(label, optsFor(label));
    }
}

void World::provision()
{
    // As a factory station would: the key is made on the device, the fleet CA (the
    // test CA) signs the device's CSR, and the provisioning document names the server.
    IdentitySetup setup;
    setup.deviceId = "mbl-device-0001";
    provisionIdentity(stack, cloud, setup);
    deviceId = setup.deviceId;
    provisioned_ = true;
    say("device identity: key made on the device, CSR signed by the fleet CA (CN " + deviceId +
        "), provisioned for " + cloud.serverUrl() + " (mutual TLS through nginx)");
}

std::string World::appImage(const std::string& name, const std::string& version, const std::vector<std::string>& cmd)
{
    const std::string tag = name + "-" + version;
    const std::string layout = umociBusyboxImage(work.path(), "layout-" + std::to_string(++appImages_), tag, cmd, version);
    const std::string out = work.path() + "/" + tag + ".oci.tar";
    layoutArchive(layout, tag, out, true);
    say("app image " + name + " " + version + ": OCI image made with umoci, archived with skopeo (" +
        kib(out) + ")");
    return out;
}

std::string World::rootfsImage(const std::string& version, std::size_t size)
{
    const std::string out = work.path() + "/rootfs-" + version + ".img";
    update::makeImage(out, size ? size : options_.slotSize / 2, 7);
    writeImageHead(out, "VERSION_ID=" + version);
    return out;
}

std::string World::bundle(const BundleParts& p, const std::string& fileName)
{
    update::BundleSpec s;
    s.version = p.version;
    s.securityVersion = p.securityVersion;
    s.rootfs = p.rootfs;
    s.apps = p.apps;
    s.config = p.config;
    s.key = pki.signKey;
    s.cert = pki.signPem;
    s.chain = pki.intPem;
    const std::string out = work.path() + "/" + fileName;
    update::createBundle(s, out);
    say("bundle " + fileName + ": version " + p.version + (p.rootfs.empty() ? "" : ", rootfs") + ", " +
        std::to_string(p.apps.size()) + " app(s), signed (CMS) by the test firmware CA (" +
        kib(out) + ")");
    return out;
}

std::string World::osReleaseOf(const std::string& image)
{
    Fd f{::open(image.c_str(), O_RDONLY | O_CLOEXEC)};
    char buf[128] = {};
    const ssize_t n = f ? ::pread(f.get(), buf, sizeof buf - 1, 0) : -1;
    const std::string head(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    const auto nl = head.find('\n');
    return nl == std::string::npos || head.rfind("VERSION_ID=", 0) != 0 ? std::string() : head.substr(0, nl);
}

std::string World::osRelease() const
{
    auto t = fs::readFile(stack.root() + "/etc/os-release");
    return t ? str::trim(*t) : std::string();
}

std::string World::deploy(const std::string& bundlePath, const json& extra)
{
    return deploy(std::vector<std::string>{bundlePath}, extra);
}

std::string World::deploy(const std::vector<std::string>& bundlePaths, const json& extra)
{
    json chunks = json::array();
    std::string names;
    for (const auto& bundlePath : bundlePaths) {
        const std::string name = bundlePath.substr(bundlePath.rfind('/') + 1);
        cloud.admin("POST", "/admin/artifacts", {{"name", name}, {"path", bundlePath}});
        chunks.push_back({{"part", "bundle"}, {"name", name}, {"version", "1"}, {"artifacts", {name}}});
        names += (names.empty() ? "" : ", ") + name;
    }
    json body = {{"target", deviceId}, {"chunks", chunks}};
    const std::string name = names;
    merge(body, extra);
    auto r = cloud.admin("POST", "/admin/deployments", body);
    if (!r.contains("id")) {
        throw std::runtime_error("the server did not create the deployment: " + r.dump());
    }
    const std::string id = r["id"].get<std::string>();
    say("server: deployment (action " + id + ") of " + name + " created for the device");
    return id;
}

json World::action(const std::string& actionId)
{
    auto st = cloud.state();
    if (st.contains("actions") && st["actions"].contains(actionId)) {
        return st["actions"][actionId];
    }
    return json::object();
}

std::string World::actionStatus(const std::string& actionId)
{
    return action(actionId).value("status", "");
}

std::vector<std::string> World::feedbackDetails(const std::string& actionId)
{
    std::vector<std::string> out;
    for (const auto& f : action(actionId).value("feedback", json::array())) {
        for (const auto& d : f.value("details", json::array())) {
            out.push_back(f.value("execution", "") + "/" + f.value("finished", "") + ": " + d.get<std::string>());
        }
    }
    return out;
}

bool World::rebootRequested() const
{
    return fs::exists(stack.root() + "/run/mbl/coordinator/reboot-request");
}

std::string World::simulateReboot()
{
    say("device: reboot requested — simulated power cycle (daemons and containers killed)");
    for (const char* label : kShutdownOrder) {
        stack.kill(label);
    }
    for (const auto& id : runcContainers()) {
        (void)mbl::run({"runc", "--root", runcRoot(), "kill", id, "KILL"});
        (void)mbl::run({"runc", "--root", runcRoot(), "delete", "--force", id});
    }
    // /run is a tmpfs: the request does not survive a reboot.
    (void)fs::removeTree(stack.root() + "/run/mbl/coordinator/reboot-request");
    const std::string slot = device->reboot();
    // What the booted rootfs says of itself, for the apps that look.
    const std::string release = osReleaseOf(slot == "b" ? device->slotB : device->slotA);
    (void)fs::writeFileAtomic(stack.root() + "/etc/os-release", release + "\n", 0644);
    say("bootloader (simulated, reads the environment like the U-Boot/GRUB script): booted slot " + slot + " (" +
        release + ")");
    startAll(std::map<std::string, TestStack::StartOptions>(startExtra_));
    return slot;
}

bool World::runUntil(const std::function<bool()>& pred, std::chrono::milliseconds timeout)
{
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) {
            return true;
        }
        if (rebootRequested()) {
            simulateReboot();
            continue;
        }
        std::this_thread::sleep_for(100ms);
    }
    return pred();
}

void World::installAppByHand(const std::string& image, const json& options)
{
    auto p = proxyFor(stack, "container-manager");
    Fd fd{::open(image.c_str(), O_RDONLY | O_CLOEXEC)};
    std::string op;
    p->callMethod("InstallApp").onInterface("org.mbl.ContainerManager1")
        .withArguments(sdbus::UnixFd(fd.get()), options.dump()).storeResultsTo(op);
    const std::string name = options.value("name", "");
    const std::string version = options.value("version", "");
    const bool up = runUntil(
        [&] {
            for (const auto& a : apps()) {
                if (a.name == name && a.version == version && a.state == "running") {
                    return true;
                }
            }
            return false;
        },
        std::chrono::seconds(60));
    if (!up) {
        throw std::runtime_error("app " + name + " installed by hand does not run:\n" + stack.log("container-manager"));
    }
    say("app " + name + " " + version + " installed by hand (ContainerManager1.InstallApp)");
}

void World::pollNow()
{
    auto p = proxyFor(stack, "cloud-client");
    p->callMethod("PollNow").onInterface("org.mbl.CloudClient1");
}

std::string World::coordinatorString(const std::string& property)
{
    try {
        auto p = sdbus::createProxy(stack.bus(), kCoordinator, kCoordinatorPath);
        return p->getProperty(property).onInterface(kCoordinator).get<std::string>();
    } catch (const sdbus::Error&) {
        return "";
    }
}

json World::coordinatorStatus()
{
    auto p = sdbus::createProxy(stack.bus(), kCoordinator, kCoordinatorPath);
    std::string out;
    p->callMethod("GetStatus").onInterface(kCoordinator).storeResultsTo(out);
    return json::parse(out);
}

json World::coordinatorHistory(unsigned count)
{
    auto p = sdbus::createProxy(stack.bus(), kCoordinator, kCoordinatorPath);
    std::string out;
    p->callMethod("GetHistory").onInterface(kCoordinator).withArguments(count).storeResultsTo(out);
    return json::parse(out);
}

std::vector<AppRow> World::apps()
{
    std::vector<AppRow> out;
    try {
        auto p = proxyFor(stack, "container-manager");
        std::vector<sdbus::Struct<std::string, std::string, std::string>> rows;
        p->callMethod("ListApps").onInterface("org.mbl.ContainerManager1").storeResultsTo(rows);
        for (const auto& r : rows) {
            out.push_back({std::get<0>(r), std::get<1>(r), std::get<2>(r)});
        }
    } catch (const sdbus::Error&) {
    }
    return out;
}

std::vector<std::string> World::runcContainers()
{
    std::vector<std::string> out;
    // runc list can fail while another runc writes a container's state: ask again.
    auto r = mbl::run({"runc", "--root", runcRoot(), "list", "-q"});
    for (int i = 0; i < 5 && !(r && r->status.success()); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        r = mbl::run({"runc", "--root", runcRoot(), "list", "-q"});
    }
    if (r && r->status.success()) {
        for (const auto& l : str::split(r->out, '\n')) {
            if (!str::trim(l).empty()) {
                out.push_back(str::trim(l));
            }
        }
    }
    return out;
}

} // namespace mbl::test::e2e
