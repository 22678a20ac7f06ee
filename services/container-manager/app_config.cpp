// SPDX-License-Identifier: Apache-2.0
#include "app_config.h"

#include "mbl/strings.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace mbl::containers {

using nlohmann::json;

namespace {

Error invalid(const std::string& m)
{
    return Error{ErrorCode::InvalidArgument, m};
}
Error denied(const std::string& m)
{
    return Error{ErrorCode::AccessDenied, m + " (not allowed by the device policy in containers.json)"};
}

bool contains(const std::vector<std::string>& v, const std::string& s)
{
    return std::find(v.begin(), v.end(), s) != v.end();
}

// A setting of type T, `fallback` when absent. The JSON type must match exactly:
// nlohmann's get<T>() would turn 1e100 into an unsigned (undefined behaviour),
// 4294967396 into 100 and -1 into 2^64-1.
template <typename T>
Expected<T> get(const json& j, const char* key, T fallback)
{
    if (!j.contains(key) || j[key].is_null()) {
        return fallback;
    }
    const json& v = j[key];
    const auto wrong = [&](const std::string& what) {
        return unexpected(invalid(std::string("setting '") + key + "' must be " + what));
    };
    if constexpr (std::is_same_v<T, std::string>) {
        if (!v.is_string()) {
            return wrong("a string");
        }
        return v.get<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
        if (!v.is_boolean()) {
            return wrong("true or false");
        }
        return v.get<bool>();
    } else {
        static_assert(std::is_integral_v<T>);
        const std::string range = "an integer from " + std::to_string(std::numeric_limits<T>::min()) + " to " +
                                  std::to_string(std::numeric_limits<T>::max());
        if (!v.is_number_integer()) {
            return wrong(range);
        }
        // Every integer type used here is at most 64 bits: checked as uint64 / int64.
        if (v.is_number_unsigned()) {
            const std::uint64_t u = v.get<std::uint64_t>();
            if constexpr (!std::is_same_v<T, std::uint64_t>) {
                if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
                    return wrong(range);
                }
            }
            return static_cast<T>(u);
        }
        const std::int64_t n = v.get<std::int64_t>();
        if constexpr (std::is_unsigned_v<T>) {
            if (n < 0 || static_cast<std::uint64_t>(n) > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) {
                return wrong(range);
            }
        } else if constexpr (sizeof(T) < sizeof(std::int64_t)) {
            if (n < std::numeric_limits<T>::min() || n > std::numeric_limits<T>::max()) {
                return wrong(range);
            }
        }
        return static_cast<T>(n);
    }
}

Expected<std::vector<std::string>> stringList(const json& j, const char* key)
{
    if (!j.contains(key) || j[key].is_null()) {
        return std::vector<std::string>{};
    }
    if (!j[key].is_array()) {
        return unexpected(invalid(std::string("setting '") + key + "' must be a list of strings"));
    }
    std::vector<std::string> out;
    for (const auto& s : j[key]) {
        if (!s.is_string()) {
            return unexpected(invalid(std::string("setting '") + key + "' must be a list of strings"));
        }
        out.push_back(s.get<std::string>());
    }
    return out;
}

bool normalPath(const std::string& p)
{
    if (p.empty() || p[0] != '/') {
        return false;
    }
    for (const auto& c : str::split(p, '/')) {
        if (c == "..") {
            return false;
        }
    }
    return true;
}

} // namespace

std::uint64_t DevicePolicy::memoryCeiling() const
{
    if (maxMemoryBytes != 0) {
        return maxMemoryBytes;
    }
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : (1ull << 40);
}

std::uint32_t DevicePolicy::cpuCeiling() const
{
    if (maxCpuPercent != 0) {
        return maxCpuPercent;
    }
    const long n = ::sysconf(_SC_NPROCESSORS_CONF);
    return static_cast<std::uint32_t>(100 * (n > 0 ? n : 1));
}

const std::vector<std::string>& defaultCapabilities()
{
    // Enough for a service to bind a low port and to drop to another user;
    // nothing that touches the host (no SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ...).
    static const std::vector<std::string> caps = {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"};
    return caps;
}

json AppSettings::toJson() const
{
    json mounts = json::array();
    for (const auto& m : this->mounts) {
        mounts.push_back({{"source", m.source}, {"destination", m.destination}});
    }
    json envObj = json::object();
    for (const auto& e : env) {
        auto eq = e.find('=');
        envObj[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
    }
    return json{{"name", name},
                {"version", version},
                {"image", imageRef},
                {"restart", restart},
                {"autostart", autostart},
                {"memory_bytes", memoryBytes},
                {"pids_max", pidsMax},
                {"cpu_percent", cpuPercent},
                {"env", envObj},
                {"args", args},
                {"network", network},
                {"mounts", mounts},
                {"capabilities", capabilities},
                {"devices", devices},
                {"host_pid", hostPid},
                {"health",
                 {{"grace_ms", health.graceMs},
                  {"probe", health.probe},
                  {"interval_ms", health.intervalMs},
                  {"timeout_ms", health.timeoutMs}}}};
}

Expected<AppSettings> AppSettings::fromJson(const json& j)
{
    static const std::vector<std::string> known = {
        "name",    "version", "image",   "restart",      "autostart", "memory_mb", "memory_bytes", "pids_max",
        "cpu_percent", "env", "args",    "network",      "mounts",    "capabilities", "devices",    "host_pid",
        "health"};
    if (!j.is_object()) {
        return unexpected(invalid("app settings must be a JSON object"));
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (!contains(known, it.key())) {
            return unexpected(invalid("unknown app setting '" + it.key() + "'"));
        }
    }
    AppSettings s;
#define MBL_GET(field, key, type)                       \
    {                                                   \
        auto v = get<type>(j, key, s.field);            \
        if (!v) {                                       \
            return unexpected(v.error());               \
        }                                               \
        s.field = *v;                                   \
    }
    MBL_GET(name, "name", std::string)
    MBL_GET(version, "version", std::string)
    MBL_GET(imageRef, "image", std::string)
    MBL_GET(restart, "restart", std::string)
    MBL_GET(autostart, "autostart", bool)
    MBL_GET(memoryBytes, "memory_bytes", std::uint64_t)
    MBL_GET(pidsMax, "pids_max", std::int64_t)
    MBL_GET(cpuPercent, "cpu_percent", std::uint32_t)
    MBL_GET(network, "network", std::string)
    MBL_GET(hostPid, "host_pid", bool)
#undef MBL_GET
    if (j.contains("memory_mb") && !j["memory_mb"].is_null()) {
        auto mb = get<std::uint64_t>(j, "memory_mb", 0);
        if (!mb) {
            return unexpected(mb.error());
        }
        if (*mb > (std::numeric_limits<std::uint64_t>::max() >> 20)) {
            return unexpected(invalid("setting 'memory_mb' is too large"));
        }
        s.memoryBytes = *mb << 20;
    }
    if (j.contains("env") && !j["env"].is_null()) {
        const auto& e = j["env"];
        if (e.is_object()) {
            for (auto it = e.begin(); it != e.end(); ++it) {
                if (!it.value().is_string() || it.key().empty() || it.key().find('=') != std::string::npos) {
                    return unexpected(invalid("setting 'env': each entry must be \"NAME\": \"value\""));
                }
                s.env.push_back(it.key() + "=" + it.value().get<std::string>());
            }
        } else {
            auto l = stringList(j, "env");
            if (!l) {
                return unexpected(l.error());
            }
            s.env = *l;
        }
    }
    for (auto [field, key] : {std::pair{&s.args, "args"}, std::pair{&s.capabilities, "capabilities"},
                              std::pair{&s.devices, "devices"}}) {
        auto l = stringList(j, key);
        if (!l) {
            return unexpected(l.error());
        }
        *field = *l;
    }
    if (j.contains("mounts") && !j["mounts"].is_null()) {
        if (!j["mounts"].is_array()) {
            return unexpected(invalid("setting 'mounts' must be a list of {\"source\", \"destination\"}"));
        }
        for (const auto& m : j["mounts"]) {
            if (!m.is_object() || !m.contains("source") || !m["source"].is_string()) {
                return unexpected(invalid("setting 'mounts' must be a list of {\"source\", \"destination\"}"));
            }
            BindMount b;
            b.source = m["source"].get<std::string>();
            b.destination = b.source;
            if (m.contains("destination") && !m["destination"].is_null()) {
                if (!m["destination"].is_string()) {
                    return unexpected(invalid("setting 'mounts': \"destination\" must be a string"));
                }
                b.destination = m["destination"].get<std::string>();
            }
            s.mounts.push_back(b);
        }
    }
    if (j.contains("health") && !j["health"].is_null()) {
        const auto& h = j["health"];
        if (!h.is_object()) {
            return unexpected(invalid("setting 'health' must be an object"));
        }
        auto g = get<std::uint32_t>(h, "grace_ms", s.health.graceMs);
        auto i = get<std::uint32_t>(h, "interval_ms", s.health.intervalMs);
        auto t = get<std::uint32_t>(h, "timeout_ms", s.health.timeoutMs);
        auto p = stringList(h, "probe");
        if (!g || !i || !t || !p) {
            return unexpected(invalid("setting 'health': grace_ms, interval_ms, timeout_ms are numbers, probe a list"));
        }
        s.health.graceMs = *g;
        s.health.intervalMs = *i;
        s.health.timeoutMs = *t;
        s.health.probe = *p;
    }
    return s;
}

Expected<ManagerConfig> ManagerConfig::fromConfig(const Config& config)
{
    ManagerConfig c;
    if (auto st = config.rejectUnknownKeys({"runtime", "start_mode", "stop_grace_ms", "log_max_bytes", "log_keep", "quota_bytes",
                                            "backoff_base_ms", "backoff_cap_ms", "defaults", "policy"});
        !st) {
        return unexpected(st.error());
    }
    auto rt = config.getString("runtime", c.runtime);
    auto mode = config.getString("start_mode", c.startMode);
    if (!mode) {
        return unexpected(mode.error());
    }
    if (*mode != "run" && *mode != "create-start") {
        return unexpected(invalid(config.origin() + ": key 'start_mode' must be \"run\" or \"create-start\""));
    }
    c.startMode = *mode;
    auto grace = config.getInt("stop_grace_ms", c.stopGraceMs, 0, 600000);
    auto logMax = config.getInt("log_max_bytes", static_cast<std::int64_t>(c.logMaxBytes), 4096, 1ll << 34);
    auto keep = config.getInt("log_keep", c.logKeep, 0, 100);
    auto quota = config.getInt("quota_bytes", static_cast<std::int64_t>(c.quotaBytes), 1 << 20, 1ll << 50);
    auto base = config.getInt("backoff_base_ms", c.backoffBaseMs, 10, 3600000);
    auto cap = config.getInt("backoff_cap_ms", c.backoffCapMs, 10, 86400000);
    auto hostNet = config.getBool("policy.allow_host_network", c.policy.allowHostNetwork);
    auto hostPid = config.getBool("policy.allow_host_pid", c.policy.allowHostPid);
    auto setuid = config.getBool("policy.allow_setuid", c.policy.allowSetuid);
    auto caps = config.getStringList("policy.allowed_capabilities", {});
    auto mounts = config.getStringList("policy.allowed_mounts", {});
    auto devices = config.getStringList("policy.allowed_devices", {});
    auto maxMem = config.getInt("policy.max_memory_bytes", 0, 0, 1ll << 50);
    auto maxPids = config.getInt("policy.max_pids", c.policy.maxPids, 1, 1 << 22);
    auto maxCpu = config.getInt("policy.max_cpu_percent", 0, 0, 100000);
    for (const Error* e : {rt ? nullptr : &rt.error(), grace ? nullptr : &grace.error(),
                           logMax ? nullptr : &logMax.error(), keep ? nullptr : &keep.error(),
                           quota ? nullptr : &quota.error(), base ? nullptr : &base.error(),
                           cap ? nullptr : &cap.error(), hostNet ? nullptr : &hostNet.error(),
                           hostPid ? nullptr : &hostPid.error(), setuid ? nullptr : &setuid.error(),
                           caps ? nullptr : &caps.error(), mounts ? nullptr : &mounts.error(),
                           devices ? nullptr : &devices.error(), maxMem ? nullptr : &maxMem.error(),
                           maxPids ? nullptr : &maxPids.error(), maxCpu ? nullptr : &maxCpu.error()}) {
        if (e != nullptr) {
            return unexpected(*e);
        }
    }
    c.runtime = *rt;
    c.stopGraceMs = static_cast<std::uint32_t>(*grace);
    c.logMaxBytes = static_cast<std::uint64_t>(*logMax);
    c.logKeep = static_cast<std::uint32_t>(*keep);
    c.quotaBytes = static_cast<std::uint64_t>(*quota);
    c.backoffBaseMs = static_cast<std::uint32_t>(*base);
    c.backoffCapMs = static_cast<std::uint32_t>(*cap);
    c.policy.allowHostNetwork = *hostNet;
    c.policy.allowHostPid = *hostPid;
    c.policy.allowSetuid = *setuid;
    c.policy.allowedCapabilities = *caps;
    c.policy.allowedMounts = *mounts;
    c.policy.allowedDevices = *devices;
    c.policy.maxMemoryBytes = static_cast<std::uint64_t>(*maxMem);
    c.policy.maxPids = *maxPids;
    c.policy.maxCpuPercent = static_cast<std::uint32_t>(*maxCpu);
    if (config.json().contains("defaults")) {
        c.defaults = config.json()["defaults"];
        if (!c.defaults.is_object()) {
            return unexpected(invalid(config.origin() + ": key 'defaults' must be an object of app settings"));
        }
        auto check = AppSettings::fromJson(c.defaults);
        if (!check) {
            return unexpected(invalid(config.origin() + ": defaults: " + check.error().message));
        }
    }
    return c;
}

Expected<AppSettings> parseSettings(const std::string& optionsJson, const ManagerConfig& config)
{
    json opts = json::object();
    if (!str::trim(optionsJson).empty()) {
        try {
            opts = json::parse(optionsJson);
        } catch (const std::exception& e) {
            return unexpected(invalid(std::string("install options are not valid JSON: ") + e.what()));
        }
    }
    if (!opts.is_object()) {
        return unexpected(invalid("install options must be a JSON object"));
    }
    json merged = config.defaults;
    for (auto it = opts.begin(); it != opts.end(); ++it) {
        merged[it.key()] = it.value();
    }
    auto s = AppSettings::fromJson(merged);
    if (!s) {
        return s;
    }
    const DevicePolicy& p = config.policy;
    if (!s->name.empty() && !str::isSafeName(s->name, 48)) {
        return unexpected(invalid("app name '" + s->name +
                                  "' is not a safe name ([A-Za-z0-9][A-Za-z0-9._-]*, at most 48 characters)"));
    }
    if (!s->version.empty() && !str::isSafeName(s->version, 64)) {
        return unexpected(invalid("app version '" + s->version + "' is not a safe name"));
    }
    if (s->restart != "no" && s->restart != "on-failure" && s->restart != "always") {
        return unexpected(invalid("restart must be \"no\", \"on-failure\" or \"always\", not '" + s->restart + "'"));
    }
    if (s->network != "none" && s->network != "host") {
        return unexpected(invalid("network must be \"none\" or \"host\", not '" + s->network + "'"));
    }
    if (s->network == "host" && !p.allowHostNetwork) {
        return unexpected(denied("network \"host\""));
    }
    if (s->hostPid && !p.allowHostPid) {
        return unexpected(denied("the host PID namespace"));
    }
    if (s->memoryBytes < (4u << 20)) {
        return unexpected(invalid("memory limit below 4 MiB"));
    }
    if (s->pidsMax < 1 || s->cpuPercent < 1 || s->cpuPercent > 100000) {
        return unexpected(invalid("pids_max and cpu_percent must be positive"));
    }
    if (s->memoryBytes > p.memoryCeiling()) {
        return unexpected(denied("a memory limit above " + std::to_string(p.memoryCeiling()) + " bytes"));
    }
    if (s->pidsMax > p.maxPids) {
        return unexpected(denied("a pids limit above " + std::to_string(p.maxPids)));
    }
    if (s->cpuPercent > p.cpuCeiling()) {
        return unexpected(denied("a CPU share above " + std::to_string(p.cpuCeiling()) + " %"));
    }
    for (const auto& c : s->capabilities) {
        if (!contains(defaultCapabilities(), c) && !contains(p.allowedCapabilities, c)) {
            return unexpected(denied("capability " + c));
        }
    }
    for (const auto& d : s->devices) {
        if (!contains(p.allowedDevices, d)) {
            return unexpected(denied("device " + d));
        }
    }
    for (const auto& m : s->mounts) {
        if (!normalPath(m.source) || !normalPath(m.destination)) {
            return unexpected(invalid("mount paths must be absolute without '..': " + m.source + " -> " + m.destination));
        }
        bool ok = false;
        for (const auto& a : p.allowedMounts) {
            ok = ok || m.source == a || str::startsWith(m.source, a + "/");
        }
        if (!ok) {
            return unexpected(denied("host mount " + m.source));
        }
        if (m.destination == "/data" || m.destination == "/" || m.destination == "/proc" || m.destination == "/dev") {
            return unexpected(invalid("mount destination " + m.destination + " is reserved"));
        }
    }
    for (const auto& e : s->env) {
        if (e.find('=') == std::string::npos || e[0] == '=') {
            return unexpected(invalid("environment entry '" + e + "' is not NAME=value"));
        }
    }
    return s;
}

json defaultSeccomp()
{
    // An allow-list in the spirit of the Moby default profile, without anything
    // that reconfigures the kernel or escapes namespaces: no mount, (u)mount2,
    // pivot_root, unshare, setns, bpf, perf_event_open, kexec_*, *_module,
    // reboot, swapon/off, keyctl/add_key/request_key, userfaultfd, ptrace,
    // process_vm_*, open_by_handle_at, iopl/ioperm, settimeofday/clock_settime,
    // acct, quotactl, syslog, lookup_dcookie, personality.
    static const char* allowed[] = {
        "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "capget", "capset", "chdir", "chmod",
        "chown", "chown32", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
        "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
        "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve", "execveat", "exit",
        "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
        "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
        "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_waitv", "futimesat",
        "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid",
        "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
        "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "getsid", "getsockname", "getsockopt",
        "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
        "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents", "io_setup", "io_submit", "ioctl", "ioprio_get",
        "ioprio_set", "kill", "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr", "lremovexattr",
        "lseek", "lsetxattr", "lstat", "madvise", "membarrier", "memfd_create", "mincore", "mkdir", "mkdirat", "mknod",
        "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
        "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
        "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "open", "openat", "openat2", "pause",
        "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2",
        "prlimit64", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat",
        "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat",
        "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo",
        "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
        "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr", "sched_setparam",
        "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
        "sendfile", "sendmmsg", "sendmsg", "sendto", "set_robust_list", "set_thread_area", "set_tid_address",
        "setfsgid", "setfsuid", "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid",
        "setresuid", "setreuid", "setrlimit", "setsid", "setsockopt", "setuid", "setxattr", "shmat", "shmctl",
        "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "socket", "socketpair", "splice",
        "stat", "statfs", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee",
        "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
        "timerfd_create", "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate", "umask", "uname",
        "unlink", "unlinkat", "utime", "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write",
        "writev", "clone",
        // 32-bit ARM and aarch64 spellings (unknown names are ignored by the runtime)
        "_llseek", "_newselect", "fstat64", "fstatat64", "fstatfs64", "ftruncate64", "getegid32", "geteuid32",
        "getgid32", "getgroups32", "getresgid32", "getresuid32", "getuid32", "lstat64", "mmap2", "sendfile64",
        "setfsgid32", "setfsuid32", "setgid32", "setgroups32", "setregid32", "setresgid32", "setresuid32",
        "setreuid32", "setuid32", "stat64", "statfs64", "truncate64", "ugetrlimit", "sigreturn", "cacheflush",
        "set_tls", "arm_fadvise64_64", "clock_gettime64", "clock_nanosleep_time64", "futex_time64", "ppoll_time64",
        "pselect6_time64", "recvmmsg_time64", "rt_sigtimedwait_time64", "semtimedop_time64", "timer_gettime64",
        "timer_settime64", "timerfd_gettime64", "timerfd_settime64", "utimensat_time64"};
    std::vector<std::string> names(std::begin(allowed), std::end(allowed));
    struct utsname u {};
    ::uname(&u);
    const std::string m = u.machine;
    std::vector<std::string> arches;
    if (m == "x86_64") {
        arches = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
    } else if (m == "aarch64") {
        arches = {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"};
    } else if (str::startsWith(m, "arm")) {
        arches = {"SCMP_ARCH_ARM"};
    }
    // clone3 cannot be filtered on its flags: make it ENOSYS so libc falls back to clone.
    return json{{"defaultAction", "SCMP_ACT_ERRNO"},
                {"defaultErrnoRet", 1},
                {"architectures", arches},
                {"syscalls",
                 json::array({json{{"names", names}, {"action", "SCMP_ACT_ALLOW"}},
                              json{{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}}})}};
}

json generateSpec(const AppSettings& s, const SpecInputs& in)
{
    std::vector<std::string> args = s.args.empty() ? in.process.args : s.args;
    // Environment: the image's, then the app's settings (which win).
    std::vector<std::string> env = in.process.env;
    bool hasPath = false;
    for (const auto& e : s.env) {
        const auto key = e.substr(0, e.find('=') + 1);
        env.erase(std::remove_if(env.begin(), env.end(), [&](const std::string& x) { return str::startsWith(x, key); }),
                  env.end());
        env.push_back(e);
    }
    for (const auto& e : env) {
        hasPath = hasPath || str::startsWith(e, "PATH=");
    }
    if (!hasPath) {
        env.insert(env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    }
    env.push_back("MBL_APP_NAME=" + s.name);
    env.push_back("MBL_APP_VERSION=" + s.version);

    std::vector<std::string> caps = defaultCapabilities();
    for (const auto& c : s.capabilities) {
        if (!contains(caps, c)) {
            caps.push_back(c);
        }
    }

    json mounts = json::array({
        {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}, {"options", {"nosuid", "noexec", "nodev"}}},
        {{"destination", "/dev"},
         {"type", "tmpfs"},
         {"source", "tmpfs"},
         {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
        {{"destination", "/dev/pts"},
         {"type", "devpts"},
         {"source", "devpts"},
         {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}}},
        {{"destination", "/dev/shm"},
         {"type", "tmpfs"},
         {"source", "shm"},
         {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
        {{"destination", "/dev/mqueue"}, {"type", "mqueue"}, {"source", "mqueue"}, {"options", {"nosuid", "noexec", "nodev"}}},
        {{"destination", "/sys"}, {"type", "sysfs"}, {"source", "sysfs"}, {"options", {"nosuid", "noexec", "nodev", "ro"}}},
        {{"destination", "/tmp"},
         {"type", "tmpfs"},
         {"source", "tmpfs"},
         {"options", {"nosuid", "nodev", "mode=1777", "size=65536k"}}},
        {{"destination", "/data"}, {"type", "bind"}, {"source", in.dataDir}, {"options", {"rbind", "rw", "nosuid", "nodev"}}},
    });
    if (s.network == "host") {
        mounts.push_back({{"destination", "/etc/resolv.conf"},
                          {"type", "bind"},
                          {"source", "/etc/resolv.conf"},
                          {"options", {"bind", "ro", "nosuid", "nodev", "noexec"}}});
    }
    for (const auto& m : s.mounts) {
        mounts.push_back({{"destination", m.destination},
                          {"type", "bind"},
                          {"source", m.source},
                          {"options", {"rbind", "ro", "nosuid", "nodev"}}});
    }

    json namespaces = json::array({{{"type", "mount"}}, {{"type", "ipc"}}, {{"type", "uts"}}});
    if (!s.hostPid) {
        namespaces.push_back({{"type", "pid"}});
    }
    if (s.network != "host") {
        namespaces.push_back({{"type", "network"}});
    }

    json deviceRules = json::array({{{"allow", false}, {"access", "rwm"}}});
    json devices = json::array();
    for (const auto& d : s.devices) {
        devices.push_back({{"path", d}, {"type", "c"}, {"fileMode", 0660}, {"uid", 0}, {"gid", 0}});
    }
    const std::uint64_t period = 100000;
    json resources = {
        {"devices", deviceRules},
        {"memory", {{"limit", s.memoryBytes}, {"swap", s.memoryBytes}}},
        {"pids", {{"limit", s.pidsMax}}},
        {"cpu", {{"period", period}, {"quota", static_cast<std::int64_t>(period * s.cpuPercent / 100)}}},
    };

    json spec = {
        {"ociVersion", "1.0.2"},
        {"process",
         {{"terminal", false},
          {"user", {{"uid", in.uid}, {"gid", in.gid}}},
          {"args", args},
          {"env", env},
          {"cwd", in.process.cwd.empty() ? std::string("/") : in.process.cwd},
          {"capabilities",
           {{"bounding", caps}, {"effective", caps}, {"permitted", caps}, {"inheritable", json::array()},
            {"ambient", json::array()}}},
          {"rlimits", json::array({{{"type", "RLIMIT_NOFILE"}, {"hard", 4096}, {"soft", 1024}}})},
          {"noNewPrivileges", true}}},
        {"root", {{"path", "rootfs"}, {"readonly", true}}},
        {"hostname", s.name},
        {"mounts", mounts},
        {"annotations", {{"org.mbl.app.name", s.name}, {"org.mbl.app.version", s.version}}},
        {"linux",
         {{"cgroupsPath", in.cgroupsPath},
          {"resources", resources},
          {"namespaces", namespaces},
          {"devices", devices},
          {"seccomp", defaultSeccomp()},
          {"maskedPaths",
           {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}},
          {"readonlyPaths",
           {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}}}},
    };
    return spec;
}

} // namespace mbl::containers
