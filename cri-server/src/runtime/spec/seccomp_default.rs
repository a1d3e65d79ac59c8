//! berth's RuntimeDefault seccomp profile.
//!
//! An allowlist in the spirit of Docker's and containerd's defaults: anything not listed
//! fails with EPERM. Allowed: what ordinary programs use (files, memory, signals, time,
//! sockets, IPC, scheduling, process creation without new namespaces). Syscalls whose
//! only safe use needs a capability are allowed when the container has that capability
//! (mount with CAP_SYS_ADMIN, chroot with CAP_SYS_CHROOT, ...). Never allowed: kernel
//! keyrings, kexec, swap, userfaultfd, io_uring, BPF without CAP_BPF/CAP_SYS_ADMIN,
//! namespace creation without CAP_SYS_ADMIN, ...
//!
//! The kernel still checks capabilities for everything allowed here; the filter shrinks
//! the kernel surface a container can reach.
//!
//! The rules cover x86_64 (with the x86 and x32 compat ABIs) and aarch64 (with arm): a
//! name that does not exist on one of those ABIs is skipped by the filter compiler for it.

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompOperator};

use super::seccomp::{Filter, HostPlatform, Profile, Rule};
use super::security::CapabilitySet;

/// EPERM: what a denied syscall returns, as with Docker.
pub const DENY_ERRNO: u32 = libc::EPERM as u32;

/// The namespace flags of clone(2): CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    // files and directories
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range", "creat", "dup", "dup2",
    "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fchdir", "fchmod", "fchmodat",
    "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
    "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr", "inotify_add_watch", "inotify_init",
    "inotify_init1", "inotify_rm_watch", "lchown", "lchown32", "lgetxattr", "link", "linkat", "listxattr", "llistxattr",
    "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat", "mknod", "mknodat",
    "name_to_handle_at", "newfstatat", "open", "openat", "openat2", "pread64", "preadv", "preadv2", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "removexattr", "rename", "renameat",
    "renameat2", "rmdir", "sendfile", "sendfile64", "setxattr", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "tee", "truncate", "truncate64", "umask", "unlink",
    "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes", "vmsplice", "write", "writev", "fanotify_mark",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
    // async and polled I/O
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
    "epoll_wait_old", "eventfd", "eventfd2", "io_cancel", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "io_setup", "io_submit", "ioctl", "poll", "ppoll", "ppoll_time64", "pselect6",
    "pselect6_time64", "select", "_newselect", "signalfd", "signalfd4", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "pipe", "pipe2",
    // memory
    "brk", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap",
    "mmap2", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "remap_file_pages",
    // processes, threads, credentials
    "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork", "get_robust_list",
    "set_robust_list", "get_thread_area", "set_thread_area", "set_tid_address", "getcpu", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage", "getsid", "gettid",
    "getuid", "getuid32", "ioprio_get", "ioprio_set", "prctl", "prlimit64", "rseq", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setpgid", "setpriority", "setregid",
    "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid",
    "setuid", "setuid32", "ugetrlimit", "wait4", "waitid", "waitpid", "seccomp", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
    "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
    "sched_yield", "pidfd_open", "pidfd_send_signal", "process_mrelease", "ptrace", "futex", "futex_time64",
    "futex_waitv", "restart_syscall",
    // signals
    "alarm", "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask",
    "sigreturn", "tgkill", "tkill",
    // time
    "clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep", "setitimer", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "times", "adjtimex",
    // sockets (socket itself has its own rule)
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown",
    "socketcall", "socketpair",
    // System V and POSIX IPC (namespaced)
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
    "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
    // system information
    "getrandom", "sysinfo", "uname",
];

/// Syscalls allowed only with a capability: (capability, syscalls).
const CAP_GATED: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick", "lookup_dcookie", "mount",
            "mount_setattr", "move_mount", "open_tree", "perf_event_open", "pivot_root", "quotactl", "quotactl_fd",
            "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Syscalls of one architecture family: (Go-style arch names, syscalls).
const ARCH_SPECIFIC: &[(&[&str], &[&str])] = &[
    (&["amd64", "x32", "386"], &["arch_prctl", "modify_ldt"]),
    (&["arm64", "arm"], &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"]),
];

/// personality(2) values programs use: Linux, UNAME26, ADDR_NO_RANDOMIZE combos, query.
const PERSONALITY_VALUES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;

fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(v2) = value_two {
        b = b.value_two(v2);
    }
    // Every field is set: building cannot fail.
    b.build().unwrap_or_default()
}

fn allow(names: &[&str]) -> Rule {
    Rule { names: names.iter().map(|s| s.to_string()).collect(), action: LinuxSeccompAction::ScmpActAllow, ..Default::default() }
}

fn with_caps(mut rule: Rule, caps: &[&str]) -> Rule {
    rule.includes.caps = caps.iter().map(|s| s.to_string()).collect();
    rule
}

fn without_caps(mut rule: Rule, caps: &[&str]) -> Rule {
    rule.excludes.caps = caps.iter().map(|s| s.to_string()).collect();
    rule
}

/// The profile as rules with capability conditions, before resolution.
pub fn default_rules() -> Profile {
    let mut rules = vec![allow(ALLOWED)];
    for value in PERSONALITY_VALUES {
        let mut r = allow(&["personality"]);
        r.args = Some(vec![arg(0, value, None, LinuxSeccompOperator::ScmpCmpEq)]);
        rules.push(r);
    }
    // Every socket family except vsock (host/VM channels).
    let mut socket = allow(&["socket"]);
    socket.args = Some(vec![arg(0, AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpNe)]);
    rules.push(socket);
    // clone: threads and processes, but new namespaces only with CAP_SYS_ADMIN (flags are
    // argument 0 on x86 and arm).
    let mut clone = without_caps(allow(&["clone"]), &["CAP_SYS_ADMIN"]);
    clone.args = Some(vec![arg(0, CLONE_NAMESPACE_FLAGS, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq)]);
    rules.push(clone);
    // clone3 passes flags in memory a filter cannot read: ENOSYS makes libc fall back to clone.
    rules.push(without_caps(
        Rule { names: vec!["clone3".into()], action: LinuxSeccompAction::ScmpActErrno, errno_ret: Some(libc::ENOSYS as u32), ..Default::default() },
        &["CAP_SYS_ADMIN"],
    ));
    for (cap, names) in CAP_GATED {
        rules.push(with_caps(allow(names), &[cap]));
    }
    for (arches, names) in ARCH_SPECIFIC {
        let mut r = allow(names);
        r.includes = Filter { arches: arches.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        rules.push(r);
    }
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(DENY_ERRNO),
        syscalls: rules,
        ..Default::default()
    }
}

/// The RuntimeDefault filter for a container with these capabilities on this host.
pub fn default_profile(caps: &CapabilitySet) -> LinuxSeccomp {
    default_profile_for(caps, &HostPlatform::current())
}

pub fn default_profile_for(caps: &CapabilitySet, host: &HostPlatform) -> LinuxSeccomp {
    let mut profile = default_rules();
    profile.architectures = host.all_arches();
    // The built-in rules name only known capabilities and have no minKernel: cannot fail.
    profile.resolve(caps, host).unwrap_or_else(|reason| {
        tracing::error!(%reason, "built-in seccomp profile failed to resolve; using deny-by-default without rules");
        let mut s = LinuxSeccomp::default();
        s.set_default_action(LinuxSeccompAction::ScmpActErrno).set_default_errno_ret(Some(DENY_ERRNO));
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Arch;
    use std::collections::BTreeSet;

    fn caps(names: &[&str]) -> CapabilitySet {
        CapabilitySet { granted: names.iter().map(|s| s.to_string()).collect(), ambient: Default::default() }
    }

    fn allowed_unconditionally(p: &LinuxSeccomp) -> BTreeSet<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    const X86: fn() -> HostPlatform = || HostPlatform { arch: "x86_64".into(), kernel: (6, 1) };

    #[test]
    fn deny_by_default_with_eperm_on_all_abis() {
        let p = default_profile_for(&caps(&[]), &X86());
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(libc::EPERM as u32));
        assert_eq!(p.architectures().as_ref().unwrap(), &vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]);
        let arm = default_profile_for(&caps(&[]), &HostPlatform { arch: "aarch64".into(), kernel: (6, 1) });
        assert_eq!(arm.architectures().as_ref().unwrap(), &vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]);
        let arm_allowed = allowed_unconditionally(&arm);
        assert!(arm_allowed.contains("set_tls") && !arm_allowed.contains("arch_prctl"));
    }

    #[test]
    fn common_syscalls_allowed_dangerous_ones_not() {
        let allowed = allowed_unconditionally(&default_profile_for(&caps(&[]), &X86()));
        for name in ["read", "write", "openat", "execve", "mmap", "futex", "epoll_wait", "accept4", "exit_group", "arch_prctl", "statx", "rseq"] {
            assert!(allowed.contains(name), "{name} must be allowed");
        }
        for name in [
            "mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "reboot", "init_module", "kexec_load", "bpf",
            "keyctl", "add_key", "request_key", "swapon", "userfaultfd", "io_uring_setup", "open_by_handle_at", "clone",
            "clone3", "socket", "personality", "settimeofday", "perf_event_open", "syslog",
        ] {
            assert!(!allowed.contains(name), "{name} must not be allowed unconditionally");
        }
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let cases: &[(&str, &[&str])] = &[
            ("CAP_SYS_ADMIN", &["mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf", "sethostname"]),
            ("CAP_SYS_CHROOT", &["chroot"]),
            ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
            ("CAP_SYS_PTRACE", &["process_vm_readv", "kcmp"]),
            ("CAP_SYS_MODULE", &["init_module", "finit_module"]),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_SYS_BOOT", &["reboot"]),
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ];
        for (cap, names) in cases {
            let allowed = allowed_unconditionally(&default_profile_for(&caps(&[cap]), &X86()));
            for name in *names {
                assert!(allowed.contains(*name), "{name} with {cap}");
            }
        }
    }

    #[test]
    fn clone_without_sys_admin_cannot_make_namespaces() {
        let p = default_profile_for(&caps(&[]), &X86());
        let rules = p.syscalls().as_ref().unwrap();
        let clone = rules.iter().find(|s| s.names() == &vec!["clone".to_string()]).unwrap();
        let a = clone.args().as_ref().unwrap()[0];
        assert_eq!((a.index(), a.value(), a.value_two(), a.op()), (0, CLONE_NAMESPACE_FLAGS, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq));
        let clone3 = rules.iter().find(|s| s.names() == &vec!["clone3".to_string()]).unwrap();
        assert_eq!((clone3.action(), clone3.errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(libc::ENOSYS as u32)));
        let personality: Vec<u64> =
            rules.iter().filter(|s| s.names() == &vec!["personality".to_string()]).map(|s| s.args().as_ref().unwrap()[0].value()).collect();
        assert_eq!(personality, PERSONALITY_VALUES.to_vec());

        let admin = default_profile_for(&caps(&["CAP_SYS_ADMIN"]), &X86());
        let rules = admin.syscalls().as_ref().unwrap();
        assert!(!rules.iter().any(|s| s.names() == &vec!["clone3".to_string()] && s.action() == LinuxSeccompAction::ScmpActErrno));
    }

    #[test]
    fn serializes_as_oci_json() {
        let p = default_profile_for(&caps(&[]), &X86());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        assert_eq!(json["architectures"][0], "SCMP_ARCH_X86_64");
        let back: LinuxSeccomp = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }
}
