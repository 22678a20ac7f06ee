// SPDX-License-Identifier: Apache-2.0
// The OCI runtime config.json an app runs with: hardened defaults plus the
// app's settings (the image's own isolation settings are never used), and the
// seccomp profile.

#include "app_config.h"

#include "mbl/strings.h"

#include <sys/utsname.h>

#include <algorithm>

namespace mbl::containers {

using nlohmann::json;

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s)
{
    return std::find(v.begin(), v.end(), s) != v.end();
}

} // namespace

json defaultSeccomp()
{
    // An allow-list; anything not named fails with EPERM. It refuses everything
    // podman 4.3's default profile (containers-common 0.50) refuses, and more:
    // whatever creates, enters or reconfigures namespaces and mounts (unshare,
    // setns, clone/clone3 with namespace flags, mount and the new mount API,
    // pivot_root), the kernel keyring (keyctl, add_key, request_key), tracing
    // other processes (ptrace, process_vm_*, pidfd_getfd, kcmp), the kernel log
    // (syslog), reboot, bpf, perf_event_open, userfaultfd, io_uring, kexec_*,
    // *_module, swapon/off, acct, quotactl, clock setting, personality,
    // open_by_handle_at/name_to_handle_at, iopl/ioperm, modify_ldt, vmsplice.
    // Inside a user namespace an app is root over its own namespaces; without
    // these refusals it could make a nested user namespace and gain capabilities
    // there (the services README lists each difference with podman and why).
    static const char* allowed[] = {
        "accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk", "capget", "capset", "chdir",
        "chmod", "chown", "chown32", "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
        "close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
        "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2", "execve", "execveat", "exit",
        "exit_group", "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
        "fchmodat", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
        "fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futimesat",
        "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64",
        "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
        "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit", "getrusage", "getsid",
        "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents", "io_setup",
        "io_submit", "ioctl", "ioprio_get", "ioprio_set", "kill", "landlock_add_rule", "landlock_create_ruleset",
        "landlock_restrict_self", "lchown", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
        "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "mbind", "membarrier", "memfd_create",
        "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
        "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
        "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep",
        "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
        "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2",
        "prlimit64", "process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead",
        "readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr",
        "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
        "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_tgsigqueueinfo", "sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity",
        "sched_getattr", "sched_getparam", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
        "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "set_mempolicy",
        "set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsuid", "setgid", "setgroups",
        "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit",
        "setsid", "setsockopt", "setuid", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
        "sigaltstack", "signalfd", "signalfd4", "socketpair", "splice", "stat", "statfs", "statx", "symlink",
        "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
        "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime",
        "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
        "utimensat", "utimes", "vfork", "wait4", "waitid", "write", "writev",
        // 32-bit ARM and aarch64 spellings (unknown names are ignored by the runtime)
        "_llseek", "_newselect", "fstat64", "fstatat64", "fstatfs64", "ftruncate64", "getegid32", "geteuid32",
        "getgid32", "getgroups32", "getresgid32", "getresuid32", "getuid32", "lstat64", "mmap2", "sendfile64",
        "setfsgid32", "setfsuid32", "setgid32", "setgroups32", "setregid32", "setresgid32", "setresuid32",
        "setreuid32", "setuid32", "stat64", "statfs64", "truncate64", "ugetrlimit", "sigreturn", "cacheflush",
        "set_tls", "arm_fadvise64_64", "clock_gettime64", "clock_nanosleep_time64", "futex_time64", "ppoll_time64",
        "pselect6_time64", "recvmmsg_time64", "rt_sigtimedwait_time64", "semtimedop_time64", "timer_gettime64",
        "timer_settime64", "timerfd_gettime64", "timerfd_settime64", "utimensat_time64", "clock_adjtime64",
        "clock_getres_time64", "mq_timedreceive_time64", "mq_timedsend_time64", "sched_rr_get_interval_time64",
        "fadvise64_64", "fchown32", "lchown32", "fcntl64", "recv", "send", "sigaction", "signal", "sigpending",
        "sigprocmask", "sigsuspend", "waitpid", "readdir", "timerfd", "epoll_ctl_old", "epoll_wait_old"};
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
    // clone only without a namespace flag (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
    // = 0x7E020000; the flags are the first argument on every architecture here).
    const std::uint64_t namespaceFlags = 0x7E020000;
    json cloneRule = {{"names", {"clone"}},
                      {"action", "SCMP_ACT_ALLOW"},
                      {"args", json::array({{{"index", 0}, {"value", namespaceFlags}, {"valueTwo", 0},
                                             {"op", "SCMP_CMP_MASKED_EQ"}}})}};
    // socket, except AF_NETLINK (16) with NETLINK_AUDIT (9), as podman refuses it
    // without CAP_AUDIT_WRITE: allowed when the domain is not netlink, or the protocol not audit.
    json socketRules = json::array(
        {{{"names", {"socket"}},
          {"action", "SCMP_ACT_ALLOW"},
          {"args", json::array({{{"index", 0}, {"value", 16}, {"valueTwo", 0}, {"op", "SCMP_CMP_NE"}}})}},
         {{"names", {"socket"}},
          {"action", "SCMP_ACT_ALLOW"},
          {"args", json::array({{{"index", 2}, {"value", 9}, {"valueTwo", 0}, {"op", "SCMP_CMP_NE"}}})}}});
    json rules = json::array({json{{"names", names}, {"action", "SCMP_ACT_ALLOW"}}, cloneRule});
    for (const auto& r : socketRules) {
        rules.push_back(r);
    }
    // clone3 passes its flags in memory, where seccomp cannot read them: ENOSYS,
    // so that libc falls back to clone (filtered above).
    rules.push_back(json{{"names", {"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}});
    return json{{"defaultAction", "SCMP_ACT_ERRNO"},
                {"defaultErrnoRet", 1},
                {"architectures", arches},
                {"syscalls", rules}};
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
    if (s.appApi && !in.busSocket.empty()) {
        env.push_back("DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket");
    }

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
    if (s.network == "private") {
        // The resolvers and the app's own name, written by AppNetworks::prepare().
        for (const auto& [dst, src] : {std::pair{"/etc/resolv.conf", in.resolvConf}, std::pair{"/etc/hosts", in.hostsFile}}) {
            mounts.push_back({{"destination", dst},
                              {"type", "bind"},
                              {"source", src},
                              {"options", {"bind", "ro", "nosuid", "nodev", "noexec"}}});
        }
    }
    if (s.appApi && !in.busSocket.empty()) {
        // The app-facing API: the system bus, where the app is its own host user
        // (its user namespace's ids), which the services check (services README).
        mounts.push_back({{"destination", "/run/dbus/system_bus_socket"},
                          {"type", "bind"},
                          {"source", in.busSocket},
                          {"options", {"bind", "nosuid", "nodev", "noexec"}}});
    }
    for (const auto& m : s.mounts) {
        mounts.push_back({{"destination", m.destination},
                          {"type", "bind"},
                          {"source", m.source},
                          {"options", {"rbind", "ro", "nosuid", "nodev"}}});
    }

    json namespaces = json::array({{{"type", "mount"}}, {{"type", "ipc"}}, {{"type", "uts"}}});
    const bool userns = in.idSize > 0;
    if (userns) {
        namespaces.push_back({{"type", "user"}});
        if (s.network == "host" || s.network == "private") {
            // sysfs cannot be mounted in a user namespace that does not own the
            // network namespace (the host's, or the one the manager made): the
            // host's /sys is bound read-only instead.
            for (auto& m : mounts) {
                if (m["destination"] == "/sys") {
                    m = {{"destination", "/sys"},
                         {"type", "bind"},
                         {"source", "/sys"},
                         {"options", {"rbind", "nosuid", "noexec", "nodev", "ro"}}};
                }
            }
        }
    }
    if (!s.hostPid) {
        namespaces.push_back({{"type", "pid"}});
    }
    if (s.network == "private") {
        namespaces.push_back({{"type", "network"}, {"path", in.netnsPath}});
    } else if (s.network != "host") {
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
          {"uidMappings", userns ? json::array({{{"containerID", 0}, {"hostID", in.idBase}, {"size", in.idSize}}})
                                 : json::array()},
          {"gidMappings", userns ? json::array({{{"containerID", 0}, {"hostID", in.idBase}, {"size", in.idSize}}})
                                 : json::array()},
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
