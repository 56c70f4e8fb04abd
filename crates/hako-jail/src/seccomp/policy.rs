//! The default syscall policies, as data: groups of syscall names with the reason they are
//! allowed, argument rules for a few calls, and the calls answered with `ENOSYS`.
//!
//! A policy for a language and arch is [`COMMON`] + the arch's groups + the language's
//! groups + [`CONDITIONAL`] + [`ENOSYS`]. Everything else gets the deny action. Names are
//! those of the `syscalls` crate for the arch; a test checks that each one exists.
//!
//! Found with `strace -f` of CPython 3.11 (glibc 2.36) importing ssl, sqlite3, asyncio,
//! threading, zoneinfo, ... and running threads, sockets and files, and of Node.js 20 running
//! crypto, zlib, fs, http and a worker thread.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::bpf::{self, ArgFilter, DenyAction};
use super::{Arch, SeccompError};

/// A named set of syscalls allowed without argument checks.
#[derive(Debug, Serialize)]
pub struct Group {
    pub name: &'static str,
    pub why: &'static str,
    pub syscalls: &'static [&'static str],
}

/// How a masked argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgOp {
    Eq,
    Ne,
}

/// `(args[arg] & mask) <op> value`, on the full 64-bit register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ArgCheck {
    pub arg: u8,
    pub mask: u64,
    pub op: ArgOp,
    pub value: u64,
}

impl ArgCheck {
    /// The whole 64-bit argument equals `value` (an `int` with stray high bits fails: closed).
    pub(crate) const fn eq(arg: u8, value: u64) -> ArgCheck {
        ArgCheck {
            arg,
            mask: u64::MAX,
            op: ArgOp::Eq,
            value,
        }
    }

    pub const fn masked_eq(arg: u8, mask: u64, value: u64) -> ArgCheck {
        ArgCheck {
            arg,
            mask,
            op: ArgOp::Eq,
            value,
        }
    }

    /// The low 32 bits differ from `value`; for `unsigned int` arguments the kernel
    /// truncates, so high bits must not let a caller dodge the check.
    pub(crate) const fn low32_ne(arg: u8, value: u32) -> ArgCheck {
        ArgCheck {
            arg,
            mask: 0xffff_ffff,
            op: ArgOp::Ne,
            value: value as u64,
        }
    }
}

impl fmt::Display for ArgCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            ArgOp::Eq => "==",
            ArgOp::Ne => "!=",
        };
        if self.mask == u64::MAX {
            write!(f, "arg{} {op} {:#x}", self.arg, self.value)
        } else {
            write!(
                f,
                "arg{} & {:#x} {op} {:#x}",
                self.arg, self.mask, self.value
            )
        }
    }
}

/// A syscall allowed only when one of `any_of` (each a list of checks that must all hold)
/// matches. Otherwise it gets the deny action and is named like any blocked call.
#[derive(Debug, Serialize)]
pub struct Conditional {
    pub syscall: &'static str,
    pub any_of: &'static [&'static [ArgCheck]],
    pub why: &'static str,
}

/// The descriptor the jail helper execs the interpreter from, after installing the filter:
/// `execveat(EXEC_FD, "", argv, envp, AT_EMPTY_PATH)` is the only exec the policy allows.
///
/// The helper must open the interpreter `O_CLOEXEC`, move it to this number before it lowers
/// `RLIMIT_NOFILE`, and keep the run's hard `RLIMIT_NOFILE` at or below this number. Then
/// run code can never create a descriptor with this number, and cannot exec anything.
pub const EXEC_FD: i32 = 1000;

/// Languages with a policy.
pub const LANGUAGES: &[&str] = &["python3", "nodejs"];

const CLONE_THREAD: u64 = 0x0001_0000;
/// Makes the new process a sibling of the caller: a child of the caller's parent.
const CLONE_PARENT: u64 = 0x0000_8000;
/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NEW_NAMESPACES: u64 = 0x7E02_0000;
/// seccomp(SECCOMP_SET_MODE_FILTER, flags, ...): the flag that asks for a listener fd.
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const SOCK_TYPE_MASK: u64 = 0xf;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;
const SOCK_SEQPACKET: u64 = 5;
const IPPROTO_TCP: u64 = 6;
const IPPROTO_UDP: u64 = 17;
const AT_EMPTY_PATH: u64 = 0x1000;
const TIOCSTI: u32 = 0x5412;
const TIOCLINUX: u32 = 0x541C;
const TIOCSETD: u32 = 0x5423;

/// `socket(domain, type, protocol)` with any `SOCK_NONBLOCK`/`SOCK_CLOEXEC` flags.
const fn socket(domain: u64, sock_type: u64, protocol: u64) -> [ArgCheck; 3] {
    [
        ArgCheck::eq(0, domain),
        ArgCheck::masked_eq(1, SOCK_TYPE_MASK, sock_type),
        ArgCheck::eq(2, protocol),
    ]
}

/// Groups allowed for every language on every arch.
pub static COMMON: &[Group] = &[
    Group {
        name: "process-exit",
        why: "Exit, and reap children: libraries call wait4/waitid even when there are none \
              (they get ECHILD).",
        syscalls: &["exit", "exit_group", "wait4", "waitid"],
    },
    Group {
        name: "threads",
        why: "pthreads and the CPython/V8/libuv/OpenBLAS thread pools: futex waits, robust \
              lists, rseq, TID address, affinity and scheduling queries. Thread creation is \
              the clone rule below.",
        syscalls: &[
            "futex",
            "futex_waitv",
            "set_robust_list",
            "set_tid_address",
            "rseq",
            "gettid",
            "sched_yield",
            "sched_getaffinity",
            "sched_setaffinity",
            "sched_getparam",
            "sched_getscheduler",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_rr_get_interval",
            "getcpu",
        ],
    },
    Group {
        name: "memory",
        why: "malloc, the dynamic loader, JIT code and numpy buffers. mlock/mlock2 are \
              bounded by RLIMIT_MEMLOCK and the memory cgroup (OpenSSL/libsodium secure \
              heaps); mlockall is not allowed.",
        syscalls: &[
            "brk",
            "mmap",
            "munmap",
            "mprotect",
            "mremap",
            "madvise",
            "mincore",
            "msync",
            "memfd_create",
            "mlock",
            "mlock2",
            "munlock",
        ],
    },
    Group {
        name: "numa",
        why: "NUMA placement hints for the caller's own memory: OpenBLAS (numpy, pandas, \
              scipy) calls mbind on every import and carries on when it fails. move_pages \
              and migrate_pages, which act on other processes, stay denied.",
        syscalls: &["mbind", "get_mempolicy", "set_mempolicy"],
    },
    Group {
        name: "fd-io",
        why: "I/O on open descriptors: files, pipes, sockets, stdio.",
        syscalls: &[
            "read",
            "write",
            "readv",
            "writev",
            "pread64",
            "pwrite64",
            "preadv",
            "pwritev",
            "preadv2",
            "pwritev2",
            "lseek",
            "close",
            "close_range",
            "dup",
            "dup3",
            "fcntl",
            "flock",
            "fstat",
            "fstatfs",
            "ftruncate",
            "fsync",
            "fdatasync",
            "fallocate",
            "fadvise64",
            "readahead",
            "fchmod",
            "fchdir",
            "getdents64",
            "pipe2",
            "copy_file_range",
            "sendfile",
            "splice",
            "tee",
            "fgetxattr",
            "flistxattr",
        ],
    },
    Group {
        name: "paths",
        why: "File system by path. Mounts and Landlock decide what exists and what is \
              writable (only /tmp); ownership changes and device nodes are not allowed.",
        syscalls: &[
            "openat",
            "openat2",
            "statx",
            "statfs",
            "faccessat",
            "faccessat2",
            "readlinkat",
            "mkdirat",
            "unlinkat",
            "renameat",
            "renameat2",
            "linkat",
            "symlinkat",
            "fchmodat",
            "fchmodat2",
            "utimensat",
            "truncate",
            "getcwd",
            "chdir",
            "umask",
            "getxattr",
            "lgetxattr",
            "listxattr",
            "llistxattr",
        ],
    },
    Group {
        name: "event-loops",
        why: "asyncio, selectors and libuv: epoll, poll/select, eventfd, timerfd, signalfd.",
        syscalls: &[
            "epoll_create1",
            "epoll_ctl",
            "epoll_pwait",
            "epoll_pwait2",
            "ppoll",
            "pselect6",
            "eventfd2",
            "timerfd_create",
            "timerfd_settime",
            "timerfd_gettime",
            "signalfd4",
        ],
    },
    Group {
        name: "inotify",
        why: "File watching (watchdog, fs.watch); sees only the run's own mounts.",
        syscalls: &["inotify_init1", "inotify_add_watch", "inotify_rm_watch"],
    },
    Group {
        name: "signals",
        why: "Handlers, masks, waiting and delivery. kill and friends reach only the run's \
              own pid namespace and uid.",
        syscalls: &[
            "rt_sigaction",
            "rt_sigprocmask",
            "rt_sigreturn",
            "rt_sigtimedwait",
            "rt_sigsuspend",
            "rt_sigpending",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "sigaltstack",
            "kill",
            "tgkill",
            "tkill",
        ],
    },
    Group {
        name: "time",
        why: "Clocks and sleeps (vDSO misses fall back to these), process times, interval \
              and POSIX timers (signal.setitimer; glibc alarm() on aarch64).",
        syscalls: &[
            "clock_gettime",
            "clock_getres",
            "clock_nanosleep",
            "nanosleep",
            "gettimeofday",
            "times",
            "getitimer",
            "setitimer",
            "timer_create",
            "timer_settime",
            "timer_gettime",
            "timer_getoverrun",
            "timer_delete",
        ],
    },
    Group {
        name: "process-info",
        why: "Ids, limits, priorities and system info. Raising limits or priority needs \
              capabilities the run does not have; the namespaces bound what is visible.",
        syscalls: &[
            "getpid",
            "getppid",
            "getuid",
            "geteuid",
            "getgid",
            "getegid",
            "getgroups",
            "getresuid",
            "getresgid",
            "getpgid",
            "getsid",
            "setsid",
            "setpgid",
            "getrusage",
            "getrlimit",
            "setrlimit",
            "prlimit64",
            "getpriority",
            "setpriority",
            "sysinfo",
            "uname",
            "capget",
            "ioprio_get",
        ],
    },
    Group {
        name: "sockets",
        why: "Using sockets. Creating one is the socket rule below; the network namespace \
              decides what is reachable.",
        syscalls: &[
            "socketpair",
            "bind",
            "listen",
            "accept",
            "accept4",
            "connect",
            "getsockname",
            "getpeername",
            "sendto",
            "recvfrom",
            "sendmsg",
            "recvmsg",
            "sendmmsg",
            "recvmmsg",
            "shutdown",
            "setsockopt",
            "getsockopt",
        ],
    },
    Group {
        name: "random",
        why: "getrandom: CPython hash seeds, random, secrets, ssl; V8 and OpenSSL seeding.",
        syscalls: &["getrandom"],
    },
];

/// Groups only on x86_64.
pub static X86_64_ONLY: &[Group] = &[
    Group {
        name: "x86_64-legacy",
        why: "Older entry points glibc and CPython still call on x86_64 (open, stat, access, \
              readlink, epoll_wait, ...; seen in strace). Same effect as the *at forms; \
              aarch64 has none of them.",
        syscalls: &[
            "open",
            "creat",
            "stat",
            "lstat",
            "access",
            "readlink",
            "unlink",
            "rename",
            "mkdir",
            "rmdir",
            "chmod",
            "link",
            "symlink",
            "utime",
            "utimes",
            "futimesat",
            "getdents",
            "pipe",
            "dup2",
            "poll",
            "select",
            "epoll_wait",
            "epoll_create",
            "eventfd",
            "signalfd",
            "inotify_init",
            "time",
            "alarm",
            "pause",
            "getpgrp",
        ],
    },
    Group {
        name: "x86_64-fstatat",
        why: "fstatat(2), which the kernel names newfstatat on x86_64.",
        syscalls: &["newfstatat"],
    },
    Group {
        name: "x86_64-arch",
        why: "arch_prctl: ld.so sets the TLS base (ARCH_SET_FS); AMX permission requests. \
              Affects only the caller.",
        syscalls: &["arch_prctl"],
    },
];

/// Groups only on aarch64.
pub static AARCH64_ONLY: &[Group] = &[Group {
    name: "aarch64-fstatat",
    why: "fstatat(2) (the syscalls crate names nr 79 fstatat on aarch64).",
    syscalls: &["fstatat"],
}];

/// Groups only for CPython.
pub static PYTHON3: &[Group] = &[Group {
    name: "cpython",
    why: "Nothing beyond the common groups showed up for CPython 3.11 with ssl, sqlite3, \
          asyncio, threads, sockets and files; kept as the place for Python-only additions.",
    syscalls: &[],
}];

/// Groups only for Node.js.
pub static NODEJS: &[Group] = &[Group {
    name: "v8-protection-keys",
    why: "V8 allocates a memory protection key at start (pkey_alloc in strace) to guard its \
          JIT code on CPUs with PKU. Keys only change the caller's own mappings.",
    syscalls: &["pkey_alloc", "pkey_free", "pkey_mprotect"],
}];

/// Argument rules, for every language and arch.
pub static CONDITIONAL: &[Conditional] = &[
    Conditional {
        syscall: "clone",
        any_of: &[&[
            ArgCheck::masked_eq(0, CLONE_THREAD, CLONE_THREAD),
            ArgCheck::masked_eq(0, CLONE_NEW_NAMESPACES, 0),
        ]],
        why: "Threads only: flags (arg0 on x86_64 and aarch64) must have CLONE_THREAD and no \
              CLONE_NEW* bit. fork, posix_spawn and subprocess get the deny action.",
    },
    Conditional {
        syscall: "socket",
        any_of: &[
            &socket(AF_UNIX, SOCK_STREAM, 0),
            &socket(AF_UNIX, SOCK_DGRAM, 0),
            &socket(AF_UNIX, SOCK_SEQPACKET, 0),
            &socket(AF_INET, SOCK_STREAM, 0),
            &socket(AF_INET, SOCK_STREAM, IPPROTO_TCP),
            &socket(AF_INET, SOCK_DGRAM, 0),
            &socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP),
            &socket(AF_INET6, SOCK_STREAM, 0),
            &socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP),
            &socket(AF_INET6, SOCK_DGRAM, 0),
            &socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDP),
        ],
        why: "Unix stream/datagram/seqpacket, and TCP/UDP over IPv4/IPv6, with the default \
              protocol. No AF_PACKET, AF_NETLINK or raw sockets, and no protocol numbers that \
              autoload modules (SCTP, DCCP, ...). glibc's getaddrinfo(AI_ADDRCONFIG) tries a \
              netlink socket and falls back when it is refused.",
    },
    Conditional {
        syscall: "execveat",
        any_of: &[&[
            ArgCheck::eq(0, EXEC_FD as u64),
            ArgCheck::eq(4, AT_EMPTY_PATH),
        ]],
        why: "Only the jail's own exec of the interpreter from EXEC_FD. execve is denied, so \
              os.exec* and child_process fail.",
    },
    Conditional {
        syscall: "ioctl",
        any_of: &[&[
            ArgCheck::low32_ne(1, TIOCSTI),
            ArgCheck::low32_ne(1, TIOCLINUX),
            ArgCheck::low32_ne(1, TIOCSETD),
        ]],
        why: "Any request except terminal input injection (TIOCSTI), console control \
              (TIOCLINUX) and line discipline changes (TIOCSETD). Runs have no terminal, but \
              these have a history of escapes. Libraries issue many harmless ioctls \
              (TCGETS, FIONBIO, FIONREAD), so the rest is allowed; devices are only \
              null/zero/full/random/urandom.",
    },
    Conditional {
        syscall: "prctl",
        any_of: &[
            &[ArgCheck::eq(0, 1)],           // PR_SET_PDEATHSIG
            &[ArgCheck::eq(0, 2)],           // PR_GET_PDEATHSIG
            &[ArgCheck::eq(0, 3)],           // PR_GET_DUMPABLE
            &[ArgCheck::eq(0, 7)],           // PR_GET_KEEPCAPS
            &[ArgCheck::eq(0, 15)],          // PR_SET_NAME
            &[ArgCheck::eq(0, 16)],          // PR_GET_NAME
            &[ArgCheck::eq(0, 21)],          // PR_GET_SECCOMP
            &[ArgCheck::eq(0, 22)],          // PR_SET_SECCOMP
            &[ArgCheck::eq(0, 23)],          // PR_CAPBSET_READ
            &[ArgCheck::eq(0, 27)],          // PR_GET_SECUREBITS
            &[ArgCheck::eq(0, 29)],          // PR_SET_TIMERSLACK
            &[ArgCheck::eq(0, 30)],          // PR_GET_TIMERSLACK
            &[ArgCheck::eq(0, 37)],          // PR_GET_CHILD_SUBREAPER
            &[ArgCheck::eq(0, 38)],          // PR_SET_NO_NEW_PRIVS
            &[ArgCheck::eq(0, 39)],          // PR_GET_NO_NEW_PRIVS
            &[ArgCheck::eq(0, 41)],          // PR_SET_THP_DISABLE
            &[ArgCheck::eq(0, 42)],          // PR_GET_THP_DISABLE
            &[ArgCheck::eq(0, 47)],          // PR_CAP_AMBIENT (raising needs caps we dropped)
            &[ArgCheck::eq(0, 50)],          // PR_SVE_SET_VL
            &[ArgCheck::eq(0, 51)],          // PR_SVE_GET_VL
            &[ArgCheck::eq(0, 52)],          // PR_GET_SPECULATION_CTRL
            &[ArgCheck::eq(0, 55)],          // PR_SET_TAGGED_ADDR_CTRL
            &[ArgCheck::eq(0, 56)],          // PR_GET_TAGGED_ADDR_CTRL
            &[ArgCheck::eq(0, 0x5356_4d41)], // PR_SET_VMA (anonymous mapping names)
        ],
        why: "Per option: thread names, death signal, seccomp and no_new_privs (both only \
              tighten), capability and securebit reads, THP, timer slack, mapping names, \
              arm64 SVE and tagged addresses. Options that change dumpability, the ptracer, \
              the mm layout, securebits or the child subreaper are denied.",
    },
    Conditional {
        syscall: "membarrier",
        any_of: &[
            &[ArgCheck::eq(0, 0)],   // QUERY
            &[ArgCheck::eq(0, 8)],   // PRIVATE_EXPEDITED
            &[ArgCheck::eq(0, 16)],  // REGISTER_PRIVATE_EXPEDITED
            &[ArgCheck::eq(0, 32)],  // PRIVATE_EXPEDITED_SYNC_CORE
            &[ArgCheck::eq(0, 64)],  // REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
            &[ArgCheck::eq(0, 128)], // PRIVATE_EXPEDITED_RSEQ
            &[ArgCheck::eq(0, 256)], // REGISTER_PRIVATE_EXPEDITED_RSEQ
            &[ArgCheck::eq(0, 512)], // GET_REGISTRATIONS
        ],
        why: "Private commands only: they interrupt just the caller's own threads (JITs, \
              userspace RCU). GLOBAL waits for a host-wide RCU grace period and \
              GLOBAL_EXPEDITED interrupts other processes' CPUs. Not seen in strace of Node \
              20 or CPython 3.11.",
    },
    Conditional {
        syscall: "seccomp",
        any_of: &[
            // SECCOMP_SET_MODE_FILTER without SECCOMP_FILTER_FLAG_NEW_LISTENER.
            &[
                ArgCheck::eq(0, 1),
                ArgCheck::masked_eq(1, SECCOMP_FILTER_FLAG_NEW_LISTENER, 0),
            ],
            &[ArgCheck::eq(0, 2)], // SECCOMP_GET_ACTION_AVAIL
            &[ArgCheck::eq(0, 3)], // SECCOMP_GET_NOTIF_SIZES
        ],
        why: "Adding a filter only ever restricts the caller. A filter with its own listener \
              (SECCOMP_FILTER_FLAG_NEW_LISTENER) is refused: the kernel asks the newest \
              listener first, so a run that got one could answer CONTINUE to its own denied \
              calls once the supervisor's listener is gone. The Python zygote's per-run step \
              adds its filter (and the supervisor's listener) before this policy applies. \
              Strict mode is of no use here.",
    },
];

/// Calls answered with `ENOSYS` at once: libc falls back, so they are expected and never
/// reported as blocked.
pub static ENOSYS: Group = Group {
    name: "enosys",
    why: "clone3 passes its flags in memory, where seccomp cannot check CLONE_THREAD. With \
          ENOSYS glibc (2.34+) falls back to clone, which the clone rule checks.",
    syscalls: &["clone3"],
};

/// Calls refused where the supervisor's memory guard, not a memory cgroup, limits the run
/// (see `crate::helper::memory_guard`): memory they hold is charged to no process, so the
/// guard could not see it. Under a memory cgroup the kernel charges it to the run's group and
/// they stay allowed. Not even `extra_allowed` re-allows them under the guard.
pub static MEMORY_GUARD: Group = Group {
    name: "memory-guard",
    why: "A memfd's pages stay allocated after they are written and unmapped, charged to no \
          process; only a memory cgroup counts them. Refused where the supervisor's memory \
          guard limits the run; /tmp and /dev/shm (tmpfs capped at tmp_mb) remain for files \
          in memory.",
    syscalls: &["memfd_create"],
};

/// Calls no default policy may allow (checked by a test on both arches; names missing on
/// an arch are skipped there). An operator can still allow them with `extra_allowed`.
pub static NEVER_ALLOWED: &[&str] = &[
    "fork",
    "vfork",
    "execve",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capset",
    "syslog",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "name_to_handle_at",
    "open_by_handle_at",
    "move_pages",
    "migrate_pages",
    "quotactl",
    "kcmp",
    "iopl",
    "ioperm",
    "modify_ldt",
    "fanotify_init",
    "fanotify_mark",
    "mknod",
    "mknodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "personality",
    "pidfd_getfd",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "lookup_dcookie",
    "vhangup",
    "mlockall",
    "sethostname",
    "setdomainname",
    "vmsplice",
    "sync",
    "syncfs",
    "uselib",
    "ustat",
    "sysfs",
];

fn language_groups(language: &str) -> Result<&'static [Group], SeccompError> {
    match language {
        "python3" => Ok(PYTHON3),
        "nodejs" => Ok(NODEJS),
        other => Err(SeccompError::UnknownLanguage {
            language: other.to_string(),
        }),
    }
}

fn arch_groups(arch: Arch) -> &'static [Group] {
    match arch {
        Arch::X86_64 => X86_64_ONLY,
        Arch::Aarch64 => AARCH64_ONLY,
    }
}

/// The groups allowed for `language` on `arch`: common, then arch, then language.
pub(crate) fn default_groups(
    language: &str,
    arch: &str,
) -> Result<Vec<&'static Group>, SeccompError> {
    let arch = Arch::parse(arch)?;
    let lang = language_groups(language)?;
    Ok(COMMON.iter().chain(arch_groups(arch)).chain(lang).collect())
}

fn number(arch: Arch, table: &'static str, name: &'static str) -> Result<u32, SeccompError> {
    arch.number(name).ok_or(SeccompError::NotInArch {
        table,
        syscall: name,
        arch: arch.name(),
    })
}

/// The syscall numbers answered with `ENOSYS` on `arch`.
pub(crate) fn enosys_numbers(arch: Arch) -> Result<BTreeSet<u32>, SeccompError> {
    ENOSYS
        .syscalls
        .iter()
        .map(|name| number(arch, ENOSYS.name, name))
        .collect()
}

/// A resolved policy: what `hako doctor --policy <language>` prints and what the jail
/// compiles.
#[derive(Debug, Serialize)]
pub struct EffectivePolicy {
    pub language: &'static str,
    pub arch: Arch,
    pub groups: Vec<&'static Group>,
    pub conditional: &'static [Conditional],
    pub enosys: &'static Group,
    /// Operator additions (numbers on `arch`), allowed without argument checks.
    pub extra: Vec<u32>,
    /// Every number allowed without argument checks (groups and extras).
    pub allowed: BTreeSet<u32>,
    /// The memory guard, not a cgroup, limits the run: [`MEMORY_GUARD`] is refused.
    pub memory_guarded: bool,
    #[serde(skip)]
    rules: Vec<ArgFilter>,
    #[serde(skip)]
    enosys_nrs: BTreeSet<u32>,
}

/// Resolves the policy for `language` on `arch` plus `extra` allowed syscall numbers.
pub fn effective_policy(
    language: &str,
    arch: &str,
    extra: &[u32],
) -> Result<EffectivePolicy, SeccompError> {
    let arch_id = Arch::parse(arch)?;
    let language = *LANGUAGES.iter().find(|l| **l == language).ok_or_else(|| {
        SeccompError::UnknownLanguage {
            language: language.to_string(),
        }
    })?;
    let groups = default_groups(language, arch)?;
    let mut allowed = BTreeSet::new();
    for group in &groups {
        for name in group.syscalls {
            allowed.insert(number(arch_id, group.name, name)?);
        }
    }
    let mut extra_sorted: Vec<u32> = extra.to_vec();
    extra_sorted.sort_unstable();
    extra_sorted.dedup();
    for &nr in &extra_sorted {
        if !arch_id.is_valid_number(nr) {
            return Err(SeccompError::NumberOutOfRange {
                nr,
                arch: arch_id.name(),
            });
        }
        allowed.insert(nr);
    }
    let mut rules = Vec::with_capacity(CONDITIONAL.len());
    for rule in CONDITIONAL {
        let nr = number(arch_id, "conditional", rule.syscall)?;
        let any_of = rule.any_of.iter().map(|alt| alt.to_vec()).collect();
        rules.push(ArgFilter { nr, any_of });
    }
    Ok(EffectivePolicy {
        language,
        arch: arch_id,
        groups,
        conditional: CONDITIONAL,
        enosys: &ENOSYS,
        extra: extra_sorted,
        allowed,
        memory_guarded: false,
        rules,
        enosys_nrs: enosys_numbers(arch_id)?,
    })
}

impl EffectivePolicy {
    /// This policy for a run whose memory the supervisor's guard limits (no memory cgroup):
    /// the calls of [`MEMORY_GUARD`] are refused, extras included.
    pub fn under_memory_guard(mut self) -> Result<EffectivePolicy, SeccompError> {
        for name in MEMORY_GUARD.syscalls {
            self.allowed
                .remove(&number(self.arch, MEMORY_GUARD.name, name)?);
        }
        self.memory_guarded = true;
        Ok(self)
    }

    /// The policy of a zygote's run child. Its parent is the zygote, outside the run's pid
    /// namespace, so `CLONE_PARENT` would give the zygote children that the run made (which
    /// the namespace's end waits for, and which no process tree of the run shows): `clone`
    /// refuses that flag even where the operator allowed `clone` (there, processes still
    /// fork), and `clone3`, whose flags seccomp cannot read, stays `ENOSYS` even where
    /// allowed (glibc falls back to `clone`).
    pub fn for_zygote_child(mut self) -> Result<EffectivePolicy, SeccompError> {
        let clone = number(self.arch, "conditional", "clone")?;
        let clone3 = number(self.arch, ENOSYS.name, "clone3")?;
        self.allowed.remove(&clone3);
        let no_parent = ArgCheck::masked_eq(0, CLONE_PARENT, 0);
        if self.allowed.remove(&clone) {
            self.rules.retain(|rule| rule.nr != clone);
            self.rules.push(ArgFilter {
                nr: clone,
                any_of: vec![vec![no_parent]],
            });
        } else {
            for rule in self.rules.iter_mut().filter(|rule| rule.nr == clone) {
                for alternative in &mut rule.any_of {
                    alternative.push(no_parent);
                }
            }
        }
        Ok(self)
    }

    /// The argument rules, resolved to numbers on this policy's arch.
    #[cfg(test)]
    pub(crate) fn rules(&self) -> &[ArgFilter] {
        &self.rules
    }

    /// The numbers answered with `ENOSYS`.
    #[cfg(test)]
    pub(crate) fn enosys_numbers(&self) -> &BTreeSet<u32> {
        &self.enosys_nrs
    }

    /// Compiles this policy to a filter program.
    pub(crate) fn compile(
        &self,
        on_deny: DenyAction,
    ) -> Result<Vec<libc::sock_filter>, SeccompError> {
        bpf::compile(
            self.arch.name(),
            &self.allowed,
            &self.rules,
            &self.enosys_nrs,
            on_deny,
        )
    }
}

impl fmt::Display for EffectivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arch = self.arch;
        writeln!(f, "seccomp policy for {} on {}", self.language, arch.name())?;
        writeln!(
            f,
            "anything not listed: EPERM, and the run's error names the call"
        )?;
        for group in &self.groups {
            if group.syscalls.is_empty() {
                continue;
            }
            writeln!(f, "\n[{}] {}", group.name, group.why)?;
            writeln!(f, "  {}", group.syscalls.join(" "))?;
        }
        writeln!(f, "\nallowed when the arguments match:")?;
        for rule in self.conditional {
            writeln!(f, "\n[{}] {}", rule.syscall, rule.why)?;
            for alt in rule.any_of {
                let checks: Vec<String> = alt.iter().map(ToString::to_string).collect();
                writeln!(f, "  {}", checks.join(" and "))?;
            }
        }
        writeln!(
            f,
            "\nENOSYS (expected, not reported): {}",
            self.enosys.syscalls.join(" ")
        )?;
        writeln!(f, "  {}", self.enosys.why)?;
        let state = if self.memory_guarded {
            "refused: the supervisor's memory guard limits runs here"
        } else {
            "allowed: a memory cgroup limits runs here"
        };
        writeln!(
            f,
            "\n[{}] {}: {}",
            MEMORY_GUARD.name,
            MEMORY_GUARD.syscalls.join(" "),
            state
        )?;
        writeln!(f, "  {}", MEMORY_GUARD.why)?;
        if arch == Arch::X86_64 {
            writeln!(f, "x32 syscall numbers (bit 0x40000000): denied")?;
        }
        if self.extra.is_empty() {
            writeln!(f, "extra allowed: none")?;
        } else {
            let names: Vec<String> = self
                .extra
                .iter()
                .map(|&nr| format!("{} ({nr})", arch.syscall_name(nr)))
                .collect();
            writeln!(f, "extra allowed: {}", names.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_tables() -> Vec<(&'static str, &'static [Group])> {
        vec![
            ("COMMON", COMMON),
            ("X86_64_ONLY", X86_64_ONLY),
            ("AARCH64_ONLY", AARCH64_ONLY),
            ("PYTHON3", PYTHON3),
            ("NODEJS", NODEJS),
        ]
    }

    fn arches_of(table: &str) -> Vec<Arch> {
        match table {
            "X86_64_ONLY" => vec![Arch::X86_64],
            "AARCH64_ONLY" => vec![Arch::Aarch64],
            _ => Arch::ALL.to_vec(),
        }
    }

    /// A zygote's run child may never clone with CLONE_PARENT (its parent is the zygote),
    /// whether `clone` is checked (threads only) or the operator allowed it, and `clone3`
    /// stays ENOSYS even where the operator allowed it.
    #[test]
    fn a_zygote_child_never_clones_with_clone_parent() {
        let x86 = Arch::X86_64;
        let (clone, clone3) = (56, 435);
        let no_parent = ArgCheck::masked_eq(0, CLONE_PARENT, 0);
        let clone_rule = |p: &EffectivePolicy| {
            p.rules()
                .iter()
                .filter(|r| r.nr == clone)
                .flat_map(|r| r.any_of.clone())
                .collect::<Vec<_>>()
        };
        let checked = effective_policy("python3", x86.name(), &[])
            .unwrap()
            .for_zygote_child()
            .unwrap();
        let alternatives = clone_rule(&checked);
        assert!(!alternatives.is_empty());
        assert!(alternatives.iter().all(|alt| alt.contains(&no_parent)
            && alt.contains(&ArgCheck::masked_eq(0, CLONE_THREAD, CLONE_THREAD))));
        let opened = effective_policy("python3", x86.name(), &[clone, clone3]).unwrap();
        assert!(opened.allowed.contains(&clone) && opened.allowed.contains(&clone3));
        let child = opened.for_zygote_child().unwrap();
        assert!(!child.allowed.contains(&clone) && !child.allowed.contains(&clone3));
        assert_eq!(clone_rule(&child), vec![vec![no_parent]]);
        assert!(child.enosys_numbers().contains(&clone3));
    }

    #[test]
    fn every_name_exists_on_its_arches() {
        let mut bad = Vec::new();
        for (table, groups) in all_tables() {
            for arch in arches_of(table) {
                for group in groups {
                    for name in group.syscalls {
                        if arch.number(name).is_none() {
                            bad.push(format!("{table}/{}: {name} on {}", group.name, arch.name()));
                        }
                    }
                }
                for rule in CONDITIONAL
                    .iter()
                    .map(|r| r.syscall)
                    .chain(ENOSYS.syscalls.iter().copied())
                {
                    if arch.number(rule).is_none() {
                        bad.push(format!("rules: {rule} on {}", arch.name()));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "names missing from the syscalls tables: {bad:#?}"
        );
    }

    #[test]
    fn never_allowed_names_are_real_and_not_in_any_policy() {
        for name in NEVER_ALLOWED {
            assert!(
                Arch::ALL.iter().any(|a| a.number(name).is_some()),
                "NEVER_ALLOWED entry {name} exists on no arch"
            );
        }
        for arch in Arch::ALL {
            for language in LANGUAGES {
                let policy = effective_policy(language, arch.name(), &[]).unwrap();
                for name in NEVER_ALLOWED {
                    if let Some(nr) = arch.number(name) {
                        assert!(
                            !policy.allowed.contains(&nr),
                            "{name} is allowed for {language} on {}",
                            arch.name()
                        );
                        assert!(
                            !policy.rules().iter().any(|r| r.nr == nr),
                            "{name} has a rule"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn no_name_is_listed_twice_or_both_allowed_and_checked() {
        for arch in Arch::ALL {
            for language in LANGUAGES {
                let mut seen = BTreeSet::new();
                for group in default_groups(language, arch.name()).unwrap() {
                    for name in group.syscalls {
                        assert!(
                            seen.insert(*name),
                            "{name} listed twice ({language}, {arch:?})"
                        );
                    }
                }
                for name in CONDITIONAL
                    .iter()
                    .map(|r| r.syscall)
                    .chain(ENOSYS.syscalls.iter().copied())
                {
                    assert!(
                        seen.insert(name),
                        "{name} is both allowed and ruled ({language})"
                    );
                }
            }
        }
    }

    #[test]
    fn calls_seen_in_strace_are_allowed() {
        let python = [
            "newfstatat",
            "openat",
            "epoll_wait",
            "clock_nanosleep",
            "fdatasync",
            "getrandom",
            "rseq",
            "set_robust_list",
            "access",
            "readlink",
            "sysinfo",
            "arch_prctl",
        ];
        let node = [
            "pkey_alloc",
            "capget",
            "epoll_pwait",
            "eventfd2",
            "statx",
            "sched_getaffinity",
            "prlimit64",
            "madvise",
            "writev",
            "shutdown",
        ];
        let py = effective_policy("python3", "x86_64", &[]).unwrap();
        let js = effective_policy("nodejs", "x86_64", &[]).unwrap();
        for name in python {
            assert!(
                py.allowed.contains(&Arch::X86_64.number(name).unwrap()),
                "python: {name}"
            );
        }
        for name in node {
            assert!(
                js.allowed.contains(&Arch::X86_64.number(name).unwrap()),
                "node: {name}"
            );
        }
        let pkey = Arch::X86_64.number("pkey_alloc").unwrap();
        assert!(!py.allowed.contains(&pkey), "pkeys are a Node-only group");
    }

    #[test]
    fn aarch64_has_no_legacy_calls() {
        let groups = default_groups("python3", "aarch64").unwrap();
        assert!(groups.iter().all(|g| !g.syscalls.contains(&"open")));
        let policy = effective_policy("nodejs", "aarch64", &[]).unwrap();
        assert!(policy
            .allowed
            .contains(&Arch::Aarch64.number("fstatat").unwrap()));
    }

    #[test]
    fn unknown_language_or_arch_is_an_error() {
        assert!(matches!(
            default_groups("ruby", "x86_64"),
            Err(SeccompError::UnknownLanguage { .. })
        ));
        assert!(matches!(
            default_groups("python3", "mips"),
            Err(SeccompError::UnknownArch { .. })
        ));
        assert!(matches!(
            effective_policy("python3", "x86_64", &[100_000]),
            Err(SeccompError::NumberOutOfRange { nr: 100_000, .. })
        ));
    }

    #[test]
    fn extras_are_added_and_printed() {
        let syslog = Arch::X86_64.number("syslog").unwrap();
        let policy = effective_policy("python3", "x86_64", &[syslog, syslog]).unwrap();
        assert!(policy.allowed.contains(&syslog));
        assert_eq!(policy.extra, vec![syslog]);
        let text = policy.to_string();
        assert!(text.contains("extra allowed: syslog (103)"), "{text}");
        assert!(text.contains("[threads]"), "{text}");
        assert!(text.contains("arg0 & 0x10000 == 0x10000"), "{text}");
        assert!(text.contains("arg1 & 0xffffffff != 0x5412"), "{text}");
        assert!(
            text.contains("ENOSYS (expected, not reported): clone3"),
            "{text}"
        );
        assert!(serde_json::to_string(&policy)
            .unwrap()
            .contains("\"sockets\""));
    }

    #[test]
    fn rules_have_no_impossible_checks() {
        for rule in CONDITIONAL {
            assert!(
                !rule.any_of.is_empty(),
                "{} has no alternatives",
                rule.syscall
            );
            for alt in rule.any_of {
                for check in *alt {
                    assert!(check.arg < 6, "{}: arg{}", rule.syscall, check.arg);
                    assert_eq!(check.value & !check.mask, 0, "{}: {check}", rule.syscall);
                }
            }
        }
    }
}
