// SPDX-License-Identifier: Apache-2.0
// Helpers every concern of the container manager uses (manager_internal.h).

#include "manager_internal.h"

#include "user_records.h"

#include "mbl/fs.h"
#include "mbl/log.h"
#include "mbl/strings.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace mbl::containers {

using nlohmann::json;

void appendLine(const std::string& path, const std::string& line)
{
    Fd f{::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640)};
    if (f) {
        const std::string l = line + "\n";
        (void)fs::writeAll(f.get(), l.data(), l.size());
    }
}

std::string nowStamp()
{
    char buf[64];
    std::time_t t = std::time(nullptr);
    struct tm tm {};
    ::gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::vector<std::string> listDir(const std::string& dir)
{
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
        return out;
    }
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") {
            out.push_back(n);
        }
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

std::uint64_t readCounter(const std::string& path, const std::string& key)
{
    auto text = fs::readFile(path, 1 << 16);
    if (!text) {
        return 0;
    }
    for (const auto& line : str::split(*text, '\n')) {
        auto f = str::split(line, ' ');
        if (f.size() == 2 && f[0] == key) {
            return std::strtoull(f[1].c_str(), nullptr, 10);
        }
    }
    return 0;
}

// "<a> <b>\n" records of the shim directory.
std::pair<long, long> readPair(const std::string& path)
{
    auto text = fs::readFile(path, 256);
    if (!text) {
        return {0, 0};
    }
    auto f = str::split(str::trim(*text), ' ');
    if (f.size() != 2) {
        return {0, 0};
    }
    return {std::strtol(f[0].c_str(), nullptr, 10), std::strtol(f[1].c_str(), nullptr, 10)};
}

// Is pid (still) a shim? Guards against a reused pid after a reboot-less restart.
bool isShim(pid_t pid, const std::string& shimPath)
{
    auto cmd = fs::readFile("/proc/" + std::to_string(pid) + "/cmdline", 4096);
    return cmd && !shimPath.empty() && str::startsWith(*cmd, shimPath + std::string(1, '\0'));
}

std::string shimBinary()
{
    char buf[4096];
    const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) {
        return "";
    }
    std::string self(buf, static_cast<std::size_t>(n));
    const std::string path = self.substr(0, self.rfind('/')) + "/mbl-container-shim";
    return ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

std::string joined(const std::vector<std::string>& v)
{
    std::string out;
    for (const auto& x : v) {
        out += (out.empty() ? "" : ", ") + x;
    }
    return out;
}

int pidfdOpen(pid_t pid)
{
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

json processJson(const ImageProcess& p)
{
    return json{{"args", p.args}, {"env", p.env}, {"cwd", p.cwd}, {"user", p.user}};
}

// Regenerates the bundle's config.json from the image's process (kept in
// mbl-app.json at install) and the app's effective settings; rewrites it only
// when it differs. Runs on the runtime worker, before the runtime reads it.
// The bundle's config.json for these settings, from the image's process kept in
// mbl-app.json; "" for a version installed before that was kept.
Expected<std::string> specText(const std::string& bundle, const AppSettings& settings, SpecInputs in)
{
    auto meta = fs::readFile(bundle + "/" + kVersionMeta);
    if (!meta) {
        return unexpected(meta.error());
    }
    try {
        const json m = json::parse(*meta);
        if (!m.contains("process")) {
            return std::string();
        }
        const json& p = m.at("process");
        in.process.args = p.at("args").get<std::vector<std::string>>();
        in.process.env = p.at("env").get<std::vector<std::string>>();
        in.process.cwd = p.at("cwd").get<std::string>();
        in.process.user = p.at("user").get<std::string>();
        in.uid = m.at("uid").get<std::uint32_t>();
        in.gid = m.at("gid").get<std::uint32_t>();
        if (m.contains("userns") && m["userns"].is_object()) {
            in.idBase = m["userns"].at("base").get<std::uint32_t>();
            in.idSize = m["userns"].at("size").get<std::uint32_t>();
        }
    } catch (const std::exception& e) {
        return unexpected(ErrorCode::Io, bundle + "/" + kVersionMeta + " is unreadable: " + e.what());
    }
    return generateSpec(settings, in).dump(2) + "\n";
}

// Regenerates the bundle's config.json from the image's process and the app's
// effective settings; rewrites it only when it differs. Runs on the runtime
// worker, before the runtime reads it.
Status ensureSpec(const std::string& bundle, const AppSettings& settings, const SpecInputs& host)
{
    auto text = specText(bundle, settings, host);
    if (!text) {
        return unexpected(text.error());
    }
    if (text->empty()) {
        // Installed before settings could be layered: its config.json stays as generated then.
        log::warning(bundle + ": no image process recorded; settings overrides do not apply to this version");
        return {};
    }
    auto current = fs::readFile(bundle + "/config.json", 16u << 20);
    if (current && *current == *text) {
        return {};
    }
    return fs::writeFileAtomic(bundle + "/config.json", *text, 0600);
}

// Test-only crash point: MBL_CM_TEST_PAUSE=<point>[:seconds] makes the install
// worker write <apps>/.paused and wait there (for ever without seconds) so a test
// can kill -9 the manager mid-install. Without the variable it is one getenv.
std::vector<std::string> bundleWithheld(const std::string& bundle)
{
    auto meta = fs::readFile(bundle + "/" + kVersionMeta);
    try {
        if (meta) {
            const json m = json::parse(*meta);
            if (m.contains("withheld") && m["withheld"].is_array()) {
                return m["withheld"].get<std::vector<std::string>>();
            }
        }
    } catch (const std::exception&) {
    }
    return {};
}

std::string bundleIdentity(const std::string& bundle)
{
    auto meta = fs::readFile(bundle + "/" + kVersionMeta);
    try {
        if (meta) {
            const json m = json::parse(*meta);
            const std::string title = m.value("title", "");
            return title.empty() ? m.value("ref_name", "") : title;
        }
    } catch (const std::exception&) {
    }
    return "";
}

bool looksLikeVersion(const std::string& s)
{
    std::size_t i = (s.size() > 1 && (s[0] == 'v' || s[0] == 'V')) ? 1 : 0;
    if (i >= s.size() || s[i] < '0' || s[i] > '9') {
        return s == "latest"; // a tag, never an app's name
    }
    // Digits and dots first, then anything (-rc1, +build, _x).
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) {
        ++i;
    }
    return i == s.size() || s[i] == '-' || s[i] == '+' || s[i] == '_';
}

IdRange bundleIds(const std::string& bundle)
{
    auto meta = fs::readFile(bundle + "/" + kVersionMeta);
    if (!meta) {
        return {};
    }
    try {
        const json m = json::parse(*meta);
        if (m.contains("userns") && m["userns"].is_object()) {
            return IdRange{m["userns"].at("base").get<std::uint32_t>(), m["userns"].at("size").get<std::uint32_t>()};
        }
    } catch (const std::exception&) {
    }
    return {};
}

std::optional<std::uint32_t> bundleHostUid(const std::string& bundle)
{
    auto text = fs::readFile(bundle + "/config.json", 16u << 20);
    if (!text) {
        return std::nullopt;
    }
    try {
        const json spec = json::parse(*text);
        const auto uid = spec.at("process").at("user").value("uid", std::uint64_t{0});
        const json maps = spec.value("linux", json::object()).value("uidMappings", json::array());
        if (maps.empty()) {
            return static_cast<std::uint32_t>(uid);
        }
        for (const auto& m : maps) {
            const auto inside = m.at("containerID").get<std::uint64_t>();
            const auto host = m.at("hostID").get<std::uint64_t>();
            const auto size = m.at("size").get<std::uint64_t>();
            if (uid >= inside && uid - inside < size) {
                return static_cast<std::uint32_t>(host + (uid - inside));
            }
        }
    } catch (const std::exception&) {
    }
    return std::nullopt;
}

Status checkBusIdentity(const std::string& bundle)
{
    const auto uid = bundleHostUid(bundle);
    if (!uid) {
        return unexpected(ErrorCode::Failed, "app_api: cannot tell the app's host uid from " + bundle + "/config.json");
    }
    if (!lookUpUserName(*uid).empty()) {
        return {};
    }
    return unexpected(ErrorCode::NotFound,
                      "app_api: the app's host uid " + std::to_string(*uid) +
                          " has no user name, and the bus refuses uids it cannot look up (the manager publishes "
                          "one in userns.userdb_dir, read by nss-systemd from /run/userdb: list 'systemd' for "
                          "passwd and group in /etc/nsswitch.conf, package libnss-systemd)");
}

Status prepareData(const std::string& bundle, const std::string& dataDir)
{
    const IdRange ids = bundleIds(bundle);
    struct stat st {};
    if (ids.size == 0 || ::stat(dataDir.c_str(), &st) != 0 ||
        (st.st_uid >= ids.base && st.st_uid - ids.base < ids.size)) {
        return {};
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto shifted = shiftOwnership(dataDir, ids, true);
    if (!shifted) {
        return unexpected(shifted.error().code, "/data of this app cannot be given to its user namespace: " +
                                                    shifted.error().message);
    }
    log::notice(dataDir + " given to host ids " + std::to_string(ids.base) + "+ (" +
                std::to_string(shifted->changed) + " of " + std::to_string(shifted->entries) + " entries, " +
                std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now() - t0)
                                   .count()) +
                " ms)");
    return {};
}

void traversable(const std::string& dir)
{
    (void)::chmod(dir.c_str(), 0711);
}

void testPause(const std::string& point, const std::string& appsDir)
{
    const char* env = std::getenv("MBL_CM_TEST_PAUSE");
    if (env == nullptr) {
        return;
    }
    const std::string spec = env;
    const auto colon = spec.find(':');
    if (spec.substr(0, colon) != point) {
        return;
    }
    (void)fs::writeFileAtomic(appsDir + "/.paused", point + "\n", 0644);
    if (colon == std::string::npos) {
        for (;;) {
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
    }
    std::this_thread::sleep_for(std::chrono::seconds(std::atoi(spec.c_str() + colon + 1)));
}

} // namespace mbl::containers
