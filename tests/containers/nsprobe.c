// SPDX-License-Identifier: Apache-2.0
/* Run inside a container by the container tests (built static, no libc
 * wrappers in the way): tries each system call an app must not make and prints
 * "<name>=<errno name or ok>", one per line, then "probe-done".
 * A call refused by the seccomp profile (or by a missing capability) gives
 * EPERM; clone3 gives ENOSYS (libc then falls back to clone, which is filtered
 * on its flags); a plain fork must still work. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char* errname(int e)
{
    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case ENOMEM: return "ENOMEM";
    case ESRCH: return "ESRCH";
    default: return "other";
    }
}

static void report(const char* name, long r)
{
    printf("%s=%s\n", name, r < 0 ? errname(errno) : "ok");
    fflush(stdout);
}

/* clone with flags: the child exits at once, the parent reaps it. */
static void tryClone(const char* name, unsigned long flags)
{
    long r = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) {
        _exit(0);
    }
    int saved = errno;
    if (r > 0) {
        waitpid((pid_t)r, NULL, 0);
    }
    errno = saved;
    report(name, r);
}

int main(void)
{
    tryClone("clone_plain", 0);
    tryClone("clone_newuser", CLONE_NEWUSER);
    tryClone("clone_newnet", CLONE_NEWNET);
    tryClone("clone_newns", CLONE_NEWNS);
    tryClone("clone_newpid", CLONE_NEWPID);
#ifdef SYS_clone3
    {
        unsigned long args[11];
        memset(args, 0, sizeof args);
        args[0] = CLONE_NEWUSER;
        args[4] = SIGCHLD;
        long r = syscall(SYS_clone3, args, sizeof args);
        if (r == 0) {
            _exit(0);
        }
        report("clone3", r);
    }
#endif
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("unshare_ns", syscall(SYS_unshare, CLONE_NEWNS));
    report("unshare_net", syscall(SYS_unshare, CLONE_NEWNET));
    report("setns", syscall(SYS_setns, 0, 0));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    report("umount2", syscall(SYS_umount2, "/tmp", 0));
    report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
#ifdef SYS_open_tree
    report("open_tree", syscall(SYS_open_tree, -1, "/", 0));
    report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
#endif
    report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    report("add_key", syscall(SYS_add_key, "user", "k", "v", 1, 0));
    report("request_key", syscall(SYS_request_key, "user", "k", 0, 0));
    report("ptrace", syscall(SYS_ptrace, 0 /* TRACEME */, 0, 0, 0));
    report("process_vm_readv", syscall(SYS_process_vm_readv, 1, 0, 0, 0, 0, 0));
    report("bpf", syscall(SYS_bpf, 0, 0, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
#ifdef SYS_io_uring_setup
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, 0));
#endif
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
    report("init_module", syscall(SYS_init_module, 0, 0, ""));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, 0));
    report("swapon", syscall(SYS_swapon, "/x", 0));
    report("acct", syscall(SYS_acct, 0));
    report("syslog", syscall(SYS_syslog, 3, 0, 0));
    report("personality", syscall(SYS_personality, 0xffffffffUL));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, 0, 0));
    report("settimeofday", syscall(SYS_settimeofday, 0, 0));
    report("chroot", syscall(SYS_chroot, "/"));
    report("sethostname", syscall(SYS_sethostname, "x", 1));
    report("quotactl", syscall(SYS_quotactl, 0, 0, 0, 0));
    report("vmsplice", syscall(SYS_vmsplice, 1, 0, 0, 0));
#ifdef SYS_iopl
    report("iopl", syscall(SYS_iopl, 3));
#endif
#ifdef SYS_modify_ldt
    report("modify_ldt", syscall(SYS_modify_ldt, 0, 0, 0));
#endif
    report("socket_netlink_audit", syscall(SYS_socket, 16 /* AF_NETLINK */, 3 /* SOCK_RAW */, 9 /* NETLINK_AUDIT */));
    report("socket_inet", syscall(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */, 0));
    printf("probe-done\n");
    return 0;
}
