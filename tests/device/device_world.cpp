// SPDX-License-Identifier: Apache-2.0
#include "device_world.h"

#include "../containers/image_tools.h"

#include "mbl/fs.h"
#include "mbl/strings.h"

#include <cstdio>
#include <ctime>
#include <iostream>
#include <stdexcept>
#include <thread>

namespace mbl::test::device {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string tail(const std::string& s, std::size_t lines)
{
    std::size_t pos = s.size();
    for (std::size_t n = 0; n <= lines && pos > 0; ++n) {
        pos = s.rfind('\n', pos - 1);
        if (pos == std::string::npos) {
            return s;
        }
    }
    return s.substr(pos + 1);
}

} // namespace

DeviceWorld::DeviceWorld(Bootloader b) : image(buildImage(b))
{
    // The image's build says where mbl-bundle is; umoci/skopeo/busybox make apps.
    m = std::make_unique<Machine>(image, work.path(), [&] {
        const std::string url = cloud.serverUrl();
        return std::stoi(url.substr(url.rfind(':') + 1));
    }());
    say(std::string("image: ") + image.disk + " (" + name(b) + ")");
}

DeviceWorld::~DeviceWorld()
{
    if (m) {
        m->kill();
    }
}

void DeviceWorld::say(const std::string& line) const
{
    std::cout << "[" << secondsSince(t0_) << " s] " << line << std::endl;
}

std::string DeviceWorld::diagnostics()
{
    std::string out = "--- console (tail)\n" + tail(m->console(), 60);
    if (m->running()) {
        // The whole journal's tail: the mbl units' lines alone came back empty
        // when a deployment stalled, and what stalls may be outside them.
        auto r = m->sh("journalctl -b --no-pager -n 120 -o short-monotonic; systemctl --failed --no-pager; "
                       "mblctl status; mblctl history",
                       30s);
        out += "\n--- guest journal, failed units, mblctl status and history\n" + r.out + r.err;
    }
    try {
        out += "\n--- the server's actions\n" + cloud.state()["actions"].dump(1) + "\n";
    } catch (const std::exception& e) {
        out += "\n--- the server's actions: " + std::string(e.what()) + "\n";
    }
    return out;
}

double DeviceWorld::boot(std::chrono::seconds timeout)
{
    const auto t = Clock::now();
    m->start();
    const std::string st = m->waitBooted(timeout);
    if (st.empty()) {
        throw std::runtime_error("the device did not reach multi-user in " + std::to_string(timeout.count()) +
                                 " s\n" + diagnostics());
    }
    const double s = std::chrono::duration<double>(Clock::now() - t).count();
    say("device up (" + st + ") " + secondsSince(t) + " s after power on, slot " + bootedSlot());
    return s;
}

double DeviceWorld::waitReboot(const std::string& previous, std::chrono::seconds timeout)
{
    const auto t = Clock::now();
    if (!m->waitNewBoot(previous, timeout)) {
        throw std::runtime_error("the device did not come back from the reboot\n" + diagnostics());
    }
    const std::string st = m->waitBooted(timeout);
    if (st.empty()) {
        throw std::runtime_error("the device did not reach multi-user after the reboot\n" + diagnostics());
    }
    say("device rebooted (" + st + ") in " + secondsSince(t) + " s, slot " + bootedSlot());
    return std::chrono::duration<double>(Clock::now() - t).count();
}

ExecResult DeviceWorld::guestTry(const std::string& script, std::chrono::seconds timeout)
{
    return m->sh(script, timeout);
}

std::string DeviceWorld::guest(const std::string& script, std::chrono::seconds timeout)
{
    auto r = m->sh(script, timeout);
    if (!r.ok()) {
        throw std::runtime_error("in the guest: " + script + "\n  exit " + std::to_string(r.code) + ": " + r.err +
                                 r.out);
    }
    return r.out;
}

void DeviceWorld::provision()
{
    // The guest's clock comes from the emulated RTC (whole seconds, read at
    // boot) and may trail the host by a second or more; the fleet CA's
    // certificate starts at the second it is signed. A device gets its time
    // from NTP; this one from the host, which is its only network.
    guest("date -u -s @" + std::to_string(std::time(nullptr) + 1) + " >/dev/null");
    // The key is made on the device by the identity service; only the CSR leaves it.
    const std::string csr = guest("mblctl identity csr");
    const std::string cert = cloud.signDeviceCsr(csr, deviceId);
    const json doc = {{"server_url", "https://10.0.2.100"},
                      {"tenant", "DEFAULT"},
                      {"auth_mode", "mtls"},
                      {"server_ca_pem", cloud.caPem()},
                      {"device_id", deviceId},
                      // The certificate names the id this document assigns: the
                      // identity service refuses a certificate whose CN is not the
                      // device's id, so both go in with one Provision.
                      {"certificate_chain_pem", cert}};
    auto r = m->sh("mblctl identity provision -", 60s, doc.dump());
    if (!r.ok()) {
        throw std::runtime_error("mblctl identity provision: " + r.err + r.out);
    }
    say("device provisioned as " + deviceId + " (CSR from the device, signed by the fleet CA)");
}

bool DeviceWorld::waitConnected(std::chrono::seconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        auto r = m->sh("busctl --system get-property org.mbl.CloudClient1 /org/mbl/CloudClient1 "
                       "org.mbl.CloudClient1 ConnectionState",
                       20s);
        if (r.ok() && r.out.find("\"connected\"") != std::string::npos) {
            return true;
        }
        std::this_thread::sleep_for(1s);
    }
    return false;
}

std::string DeviceWorld::appImage(const std::string& appName, const std::string& version,
                                  const std::vector<std::string>& cmd)
{
    const std::string tag = appName + "-" + version;
    const std::string layout =
        umociBusyboxImage(work.path(), "layout-" + std::to_string(++apps_), tag, cmd, version);
    const std::string out = work.path() + "/" + tag + ".oci.tar";
    layoutArchive(layout, tag, out, true);
    return out;
}

std::string DeviceWorld::bundle(const BundleParts& p, const std::string& fileName)
{
    const std::string out = work.path() + "/" + fileName;
    std::vector<std::string> argv = {image.build + "/services/mbl-bundle/mbl-bundle", "create", "--version", p.version,
                                     "--security-version", std::to_string(p.securityVersion), "--compatible",
                                     p.compatible, "--key", image.pki + "/signer.key", "--cert",
                                     image.pki + "/signer.pem", "--chain", image.pki + "/int.pem", "-o", out};
    if (!p.rootfs.empty()) {
        argv.insert(argv.end(), {"--rootfs", p.rootfs});
    }
    for (const auto& [nameVersion, file] : p.apps) {
        argv.insert(argv.end(), {"--app", nameVersion + "=" + file});
    }
    if (!p.config.empty()) {
        argv.insert(argv.end(), {"--config", p.config});
    }
    auto r = mbl::run(argv);
    if (!r || !r->status.success()) {
        throw std::runtime_error("mbl-bundle create failed: " + (r ? r->err + r->out : r.error().message));
    }
    return out;
}

std::string DeviceWorld::rootfsVariant(const std::string& variant, const std::vector<std::string>& commands)
{
    const std::string out = work.path() + "/rootfs-" + variant + ".ext4";
    auto c = mbl::run({"cp", "--sparse=always", image.rootfs, out});
    if (!c || !c->status.success()) {
        throw std::runtime_error("cannot copy the slot image");
    }
    std::string script;
    for (const auto& l : commands) {
        script += l + "\n";
    }
    const std::string cmdFile = work.path() + "/debugfs-" + variant + ".txt";
    (void)fs::writeFileAtomic(cmdFile, script, 0644);
    auto r = mbl::run({"debugfs", "-w", "-f", cmdFile, out});
    if (!r || !r->status.success()) {
        throw std::runtime_error("debugfs failed: " + (r ? r->err : r.error().message));
    }
    return out;
}

std::string DeviceWorld::deploy(const std::string& bundlePath)
{
    const std::string fileName = bundlePath.substr(bundlePath.rfind('/') + 1);
    cloud.admin("POST", "/admin/artifacts", {{"name", fileName}, {"path", bundlePath}});
    const json body = {{"target", deviceId},
                       {"chunks", {{{"part", "bundle"}, {"name", fileName}, {"version", "1"}, {"artifacts", {fileName}}}}}};
    auto r = cloud.admin("POST", "/admin/deployments", body);
    if (!r.contains("id")) {
        throw std::runtime_error("the server did not create the deployment: " + r.dump());
    }
    const std::string id = r["id"].get<std::string>();
    say("server: deployment (action " + id + ") of " + fileName + " for " + deviceId);
    return id;
}

json DeviceWorld::action(const std::string& actionId)
{
    auto st = cloud.state();
    if (st.contains("actions") && st["actions"].contains(actionId)) {
        return st["actions"][actionId];
    }
    return json::object();
}

std::string DeviceWorld::actionStatus(const std::string& actionId)
{
    return action(actionId).value("status", "");
}

std::vector<std::string> DeviceWorld::feedbackDetails(const std::string& actionId)
{
    std::vector<std::string> out;
    for (const auto& f : action(actionId).value("feedback", json::array())) {
        for (const auto& d : f.value("details", json::array())) {
            out.push_back(f.value("execution", "") + "/" + f.value("finished", "") + ": " + d.get<std::string>());
        }
    }
    return out;
}

std::string DeviceWorld::waitClosed(const std::string& actionId, std::chrono::seconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    std::string last;
    while (Clock::now() < deadline) {
        auto a = action(actionId);
        const std::string st = a.value("status", "");
        if (st != last) {
            say("server: action " + actionId + " is " + st);
            last = st;
        }
        if (st == "FINISHED" || st == "ERROR" || st == "CANCELED" || st == "DOWNLOADED") {
            return st;
        }
        std::this_thread::sleep_for(1s);
    }
    return last;
}

std::string DeviceWorld::bootedSlot()
{
    auto r = m->sh("tr ' ' '\\n' </proc/cmdline | sed -n 's/^mbl.slot=//p'", 20s);
    return r.ok() ? str::trim(r.out) : "";
}

std::map<std::string, std::string> DeviceWorld::bootEnv()
{
    const std::string cmd = image.bootloader == Bootloader::Grub ? "grub-editenv /boot/mbl/grub/grubenv list"
                                                                 : "fw_printenv -c /etc/fw_env.config";
    std::map<std::string, std::string> out;
    auto r = m->sh(cmd, 20s);
    for (const auto& line : str::split(r.out, '\n')) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) {
            out[line.substr(0, eq)] = line.substr(eq + 1);
        }
    }
    return out;
}

json DeviceWorld::updateStatus()
{
    auto r = m->sh("mblctl --json update status", 30s);
    auto j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json::object() : j;
}

} // namespace mbl::test::device
