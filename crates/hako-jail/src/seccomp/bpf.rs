//! A small compiler from a policy to a classic BPF seccomp program.
//!
//! Layout:
//! 1. `seccomp_data.arch` must be the policy's audit arch, else `KILL_PROCESS`.
//! 2. Load the syscall number; on x86_64, numbers with the x32 bit get the deny action.
//! 3. A binary search (`jge` only) over the number line, cut into runs of equal action:
//!    allow, `ENOSYS`, an argument rule, or deny. Cost per syscall is about log2(runs)
//!    jumps; allowed calls return at once, with no notification.
//! 4. Argument rules compare both 32-bit halves of the 64-bit argument.
//!
//! The program is built back to front, so every jump is forward and its distance known.
//! Conditional jumps reach at most 255 instructions; farther targets get a `ja` trampoline
//! (or a copy of the `ret`, which costs the same).

use std::collections::{BTreeMap, BTreeSet};

use super::policy::{ArgCheck, ArgOp};
use super::{Arch, SeccompError};

pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// Largest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// x32 syscalls on x86_64 are the native numbers with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

// Offsets in struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// What a call outside the policy gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// Fail with this errno straight from the filter.
    Errno(u32),
    /// Stop the call and notify the listener, which answers it.
    UserNotif,
}

impl DenyAction {
    fn ret_value(self) -> Result<u32, SeccompError> {
        match self {
            DenyAction::Errno(errno) => errno_ret(errno),
            DenyAction::UserNotif => Ok(SECCOMP_RET_USER_NOTIF),
        }
    }
}

fn errno_ret(errno: u32) -> Result<u32, SeccompError> {
    if (1..=4095).contains(&errno) {
        Ok(SECCOMP_RET_ERRNO | errno)
    } else {
        Err(SeccompError::InvalidErrno { errno })
    }
}

/// A syscall allowed when any alternative of `any_of` holds (all of its checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgFilter {
    pub nr: u32,
    pub any_of: Vec<Vec<ArgCheck>>,
}

/// Compiles a policy. Precedence for a number: `allowed`, then `conditional`, then
/// `enosys`; anything else gets `on_deny`. Several rules for one number are merged (any
/// alternative allows).
pub(crate) fn compile(
    arch: &str,
    allowed: &BTreeSet<u32>,
    conditional: &[ArgFilter],
    enosys: &BTreeSet<u32>,
    on_deny: DenyAction,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let arch = Arch::parse(arch)?;
    let deny_k = on_deny.ret_value()?;
    let all_numbers = allowed
        .iter()
        .chain(enosys)
        .chain(conditional.iter().map(|r| &r.nr));
    for &nr in all_numbers {
        if arch == Arch::X86_64 && nr >= X32_SYSCALL_BIT {
            return Err(SeccompError::NumberOutOfRange {
                nr,
                arch: arch.name(),
            });
        }
    }
    for rule in conditional {
        for check in rule.any_of.iter().flatten() {
            validate_check(rule.nr, check)?;
        }
    }

    let mut b = Builder::default();
    // The last instruction must be a `ret`.
    let deny = b.ret(deny_k);
    let allow = b.ret(SECCOMP_RET_ALLOW);

    // Action per listed number.
    let mut actions: BTreeMap<u32, Node> = BTreeMap::new();
    let mut merged: BTreeMap<u32, Vec<&Vec<ArgCheck>>> = BTreeMap::new();
    for rule in conditional.iter().filter(|r| !allowed.contains(&r.nr)) {
        merged
            .entry(rule.nr)
            .or_default()
            .extend(rule.any_of.iter());
    }
    for (&nr, alternatives) in merged.iter().rev() {
        let node = b.rule(alternatives, allow, deny);
        actions.insert(nr, node);
    }
    let enosys_only: Vec<u32> = enosys
        .iter()
        .copied()
        .filter(|nr| !allowed.contains(nr) && !merged.contains_key(nr))
        .collect();
    if !enosys_only.is_empty() {
        let node = b.ret(errno_ret(libc::ENOSYS as u32)?);
        actions.extend(enosys_only.iter().map(|&nr| (nr, node)));
    }
    actions.extend(allowed.iter().map(|&nr| (nr, allow)));

    let segments = segments(&actions, deny);
    let mut tree = b.tree(&segments, deny);
    if arch == Arch::X86_64 {
        tree = b.jump(JMP_JGE_K, X32_SYSCALL_BIT, deny, tree);
    }
    let load_nr = b.stmt(LD_W_ABS, OFF_NR, tree);
    let kill = b.ret(SECCOMP_RET_KILL_PROCESS);
    let check_arch = b.jump(JMP_JEQ_K, arch.audit_arch(), load_nr, kill);
    b.stmt(LD_W_ABS, OFF_ARCH, check_arch);

    let program = b.finish();
    if program.len() > MAX_INSNS {
        return Err(SeccompError::ProgramTooLong {
            len: program.len(),
            max: MAX_INSNS,
        });
    }
    Ok(program)
}

fn validate_check(nr: u32, check: &ArgCheck) -> Result<(), SeccompError> {
    if check.arg >= 6 {
        return Err(SeccompError::InvalidRule {
            nr,
            reason: "argument index must be 0..=5",
        });
    }
    if check.value & !check.mask != 0 {
        return Err(SeccompError::InvalidRule {
            nr,
            reason: "value has bits outside the mask",
        });
    }
    Ok(())
}

/// Cuts the number line into runs of equal action: `(first number, action)`, starting at 0.
fn segments(actions: &BTreeMap<u32, Node>, deny: Node) -> Vec<(u32, Node)> {
    let mut raw = vec![(0, deny)];
    for (&nr, &node) in actions {
        raw.push((nr, node));
        if let Some(next) = nr.checked_add(1) {
            raw.push((next, deny));
        }
    }
    let mut out: Vec<(u32, Node)> = Vec::with_capacity(raw.len());
    for (start, node) in raw {
        match out.last_mut() {
            // A later entry for the same start wins (nr+1 deny, then nr+1's own action).
            Some(last) if last.0 == start => last.1 = node,
            _ => out.push((start, node)),
        }
    }
    out.dedup_by(|later, earlier| later.1 == earlier.1);
    out
}

/// Index of an instruction in the reversed program (0 = last instruction).
type Node = usize;

#[derive(Default)]
struct Builder {
    rev: Vec<libc::sock_filter>,
}

impl Builder {
    fn push(&mut self, code: u16, k: u32, jt: u8, jf: u8) -> Node {
        self.rev.push(libc::sock_filter { code, jt, jf, k });
        self.rev.len() - 1
    }

    /// Jump distance from an instruction pushed next to `target`.
    fn distance(&self, target: Node) -> usize {
        self.rev.len() - target - 1
    }

    fn ret(&mut self, k: u32) -> Node {
        self.push(RET_K, k, 0, 0)
    }

    /// A node that reaches `target` within `limit` instructions of the next push: `target`
    /// itself, a copy of it when it is a `ret`, or a `ja` to it.
    fn near(&mut self, target: Node, limit: usize) -> Node {
        if self.distance(target) <= limit {
            return target;
        }
        let ins = self.rev[target];
        if ins.code == RET_K {
            return self.ret(ins.k);
        }
        let k = self.distance(target) as u32;
        self.push(JMP_JA, k, 0, 0)
    }

    /// A non-jump instruction that falls through to `next`.
    fn stmt(&mut self, code: u16, k: u32, next: Node) -> Node {
        self.near(next, 0);
        self.push(code, k, 0, 0)
    }

    fn jump(&mut self, code: u16, k: u32, mut jt: Node, mut jf: Node) -> Node {
        loop {
            if self.distance(jt) > 255 {
                jt = self.near(jt, 255);
                continue;
            }
            if self.distance(jf) > 255 {
                jf = self.near(jf, 255);
                continue;
            }
            let (dt, df) = (self.distance(jt) as u8, self.distance(jf) as u8);
            return self.push(code, k, dt, df);
        }
    }

    /// Binary search over `segments` (sorted, first starts at 0), A = syscall number.
    fn tree(&mut self, segments: &[(u32, Node)], deny: Node) -> Node {
        match segments {
            [] => deny,
            [(_, node)] => *node,
            _ => {
                let mid = segments.len() / 2;
                let right = self.tree(&segments[mid..], deny);
                let left = self.tree(&segments[..mid], deny);
                self.jump(JMP_JGE_K, segments[mid].0, right, left)
            }
        }
    }

    /// Code for one argument rule: allow if any alternative holds, else deny.
    fn rule(&mut self, alternatives: &[&Vec<ArgCheck>], allow: Node, deny: Node) -> Node {
        let mut next_alt = deny;
        for alt in alternatives.iter().rev() {
            let mut node = allow;
            for check in alt.iter().rev() {
                node = self.check(check, node, next_alt);
            }
            next_alt = node;
        }
        next_alt
    }

    /// Code for one check; continues at `ok` or `fail`.
    fn check(&mut self, check: &ArgCheck, ok: Node, fail: Node) -> Node {
        let lo_off = OFF_ARGS + 8 * u32::from(check.arg);
        let hi_off = lo_off + 4;
        let halves = [
            (lo_off, check.mask as u32, check.value as u32),
            (
                hi_off,
                (check.mask >> 32) as u32,
                (check.value >> 32) as u32,
            ),
        ];
        // Low half is compared last, so it is built first.
        let mut node = match check.op {
            ArgOp::Eq => ok,
            ArgOp::Ne => fail,
        };
        for (off, mask, value) in halves {
            if mask == 0 {
                continue;
            }
            node = match check.op {
                ArgOp::Eq => self.compare_half(off, mask, value, node, fail),
                ArgOp::Ne => self.compare_half(off, mask, value, node, ok),
            };
        }
        node
    }

    /// `ld [off]; and mask; jeq value ? on_eq : on_ne`.
    fn compare_half(&mut self, off: u32, mask: u32, value: u32, on_eq: Node, on_ne: Node) -> Node {
        let mut node = self.jump(JMP_JEQ_K, value, on_eq, on_ne);
        if mask != u32::MAX {
            node = self.stmt(ALU_AND_K, mask, node);
        }
        self.stmt(LD_W_ABS, off, node)
    }

    fn finish(mut self) -> Vec<libc::sock_filter> {
        self.rev.reverse();
        self.rev
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::seccomp::policy;

    /// What the kernel passes to the filter.
    #[derive(Clone, Copy)]
    pub(crate) struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        fn word(&self, off: u32) -> u32 {
            match off {
                OFF_NR => self.nr,
                OFF_ARCH => self.arch,
                8 | 12 => 0,
                _ => {
                    let i = ((off - OFF_ARGS) / 8) as usize;
                    let v = self.args[i];
                    if (off - OFF_ARGS) & 7 == 0 {
                        v as u32
                    } else {
                        (v >> 32) as u32
                    }
                }
            }
        }
    }

    /// Runs `program` on `data`, checking what the kernel's loader checks for our opcodes.
    pub(crate) fn run(program: &[libc::sock_filter], data: Data) -> u32 {
        run_counted(program, data).0
    }

    /// Like [`run`], also returning how many instructions ran.
    fn run_counted(program: &[libc::sock_filter], data: Data) -> (u32, usize) {
        let mut steps = 0;
        assert!(!program.is_empty() && program.len() <= MAX_INSNS);
        assert_eq!(
            program.last().unwrap().code,
            RET_K,
            "last instruction must be ret"
        );
        let mut a: u32 = 0;
        let mut pc = 0usize;
        loop {
            let ins = program[pc];
            steps += 1;
            let next = |off: usize| {
                let to = pc + 1 + off;
                assert!(to < program.len(), "jump out of program at {pc}");
                to
            };
            match ins.code {
                LD_W_ABS => {
                    assert!(ins.k & 3 == 0 && ins.k < 64, "bad load offset {}", ins.k);
                    a = data.word(ins.k);
                    pc = next(0);
                }
                ALU_AND_K => {
                    a &= ins.k;
                    pc = next(0);
                }
                JMP_JA => pc = next(ins.k as usize),
                JMP_JEQ_K => pc = next(usize::from(if a == ins.k { ins.jt } else { ins.jf })),
                JMP_JGE_K => pc = next(usize::from(if a >= ins.k { ins.jt } else { ins.jf })),
                RET_K => return (ins.k, steps),
                other => panic!("unexpected opcode {other:#x} at {pc}"),
            }
        }
    }

    const X86: u32 = 0xC000_003E;

    fn call(nr: u32, args: [u64; 6]) -> Data {
        Data {
            nr,
            arch: X86,
            args,
        }
    }

    fn x86(name: &str) -> u32 {
        Arch::X86_64.number(name).unwrap()
    }

    fn python_x86(on_deny: DenyAction) -> Vec<libc::sock_filter> {
        policy::effective_policy("python3", "x86_64", &[])
            .unwrap()
            .compile(on_deny)
            .unwrap()
    }

    const EPERM: u32 = SECCOMP_RET_ERRNO | 1;

    #[test]
    fn allowed_unknown_and_x32_numbers() {
        let p = python_x86(DenyAction::Errno(1));
        assert_eq!(run(&p, call(x86("read"), [0; 6])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(x86("openat"), [0; 6])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(x86("mount"), [0; 6])), EPERM);
        assert_eq!(run(&p, call(x86("ptrace"), [0; 6])), EPERM);
        assert_eq!(run(&p, call(99_999, [0; 6])), EPERM);
        assert_eq!(run(&p, call(u32::MAX, [0; 6])), EPERM);
        // x32 read: native number 0 with the x32 bit.
        assert_eq!(run(&p, call(X32_SYSCALL_BIT, [0; 6])), EPERM);
        assert_eq!(run(&p, call(X32_SYSCALL_BIT | x86("write"), [0; 6])), EPERM);
    }

    /// Where the memory guard limits the run, memfd_create is refused (its pages would be
    /// nobody's), even when the operator listed it; everything else is unchanged.
    #[test]
    fn memfd_create_is_refused_only_under_the_memory_guard() {
        let memfd = x86("memfd_create");
        let cgroup = python_x86(DenyAction::Errno(1));
        assert_eq!(run(&cgroup, call(memfd, [0; 6])), SECCOMP_RET_ALLOW);
        for extra in [vec![], vec![memfd]] {
            let guarded = policy::effective_policy("python3", "x86_64", &extra)
                .unwrap()
                .under_memory_guard()
                .unwrap()
                .compile(DenyAction::Errno(1))
                .unwrap();
            assert_eq!(
                run(&guarded, call(memfd, [0; 6])),
                EPERM,
                "extras {extra:?}"
            );
            assert_eq!(run(&guarded, call(x86("mmap"), [0; 6])), SECCOMP_RET_ALLOW);
            assert_eq!(run(&guarded, call(x86("read"), [0; 6])), SECCOMP_RET_ALLOW);
        }
    }

    #[test]
    fn wrong_arch_is_killed() {
        let p = python_x86(DenyAction::UserNotif);
        let i386 = Data {
            nr: 3,
            arch: 0x4000_0003,
            args: [0; 6],
        };
        assert_eq!(run(&p, i386), SECCOMP_RET_KILL_PROCESS);
        let arm = Data {
            nr: 63,
            arch: 0xC000_00B7,
            args: [0; 6],
        };
        assert_eq!(run(&p, arm), SECCOMP_RET_KILL_PROCESS);
    }

    #[test]
    fn clone_needs_clone_thread_and_no_namespaces() {
        let p = python_x86(DenyAction::UserNotif);
        let clone = x86("clone");
        // glibc pthread_create flags.
        let thread = 0x3d0f00u64;
        assert_eq!(
            run(&p, call(clone, [thread, 0, 0, 0, 0, 0])),
            SECCOMP_RET_ALLOW
        );
        // fork: SIGCHLD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID.
        assert_eq!(
            run(&p, call(clone, [0x1200011, 0, 0, 0, 0, 0])),
            SECCOMP_RET_USER_NOTIF
        );
        let with_newuser = thread | 0x1000_0000;
        assert_eq!(
            run(&p, call(clone, [with_newuser, 0, 0, 0, 0, 0])),
            SECCOMP_RET_USER_NOTIF
        );
        // High bits do not matter for the CLONE_THREAD test itself.
        assert_eq!(
            run(&p, call(clone, [thread | 1 << 40, 0, 0, 0, 0, 0])),
            SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn clone3_is_enosys_even_when_notifying() {
        let p = python_x86(DenyAction::UserNotif);
        let r = run(&p, call(x86("clone3"), [0; 6]));
        assert_eq!(r, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }

    #[test]
    fn socket_domains_types_and_protocols() {
        let p = python_x86(DenyAction::Errno(1));
        let s = x86("socket");
        let sock = |d: u64, t: u64, proto: u64| run(&p, call(s, [d, t, proto, 0, 0, 0]));
        let cloexec_nonblock = 0o2000000 | 0o4000;
        assert_eq!(sock(2, 1 | cloexec_nonblock, 0), SECCOMP_RET_ALLOW); // AF_INET stream
        assert_eq!(sock(10, 2, 17), SECCOMP_RET_ALLOW); // AF_INET6 udp
        assert_eq!(sock(1, 5 | 0o2000000, 0), SECCOMP_RET_ALLOW); // unix seqpacket
        assert_eq!(sock(2, 5, 0), EPERM); // inet seqpacket (SCTP)
        assert_eq!(sock(2, 1, 132), EPERM); // IPPROTO_SCTP
        assert_eq!(sock(2, 3, 1), EPERM); // SOCK_RAW icmp
        assert_eq!(sock(17, 3, 0x300), EPERM); // AF_PACKET
        assert_eq!(sock(16, 3 | 0o2000000, 0), EPERM); // AF_NETLINK (getaddrinfo)
        assert_eq!(sock(2 | 1 << 32, 1, 0), EPERM); // stray high bits fail closed
    }

    #[test]
    fn execveat_only_from_exec_fd_with_empty_path() {
        let p = python_x86(DenyAction::Errno(1));
        let e = x86("execveat");
        let fd = policy::EXEC_FD as u64;
        assert_eq!(
            run(&p, call(e, [fd, 0, 0, 0, 0x1000, 0])),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(run(&p, call(e, [3, 0, 0, 0, 0x1000, 0])), EPERM);
        assert_eq!(run(&p, call(e, [fd, 0, 0, 0, 0, 0])), EPERM);
        assert_eq!(run(&p, call(e, [fd, 0, 0, 0, 0x1100, 0])), EPERM);
        assert_eq!(run(&p, call(x86("execve"), [0; 6])), EPERM);
    }

    #[test]
    fn ioctl_denies_tiocsti_even_with_high_bits() {
        let p = python_x86(DenyAction::Errno(1));
        let io = x86("ioctl");
        assert_eq!(
            run(&p, call(io, [1, 0x5401, 0, 0, 0, 0])),
            SECCOMP_RET_ALLOW
        ); // TCGETS
        assert_eq!(run(&p, call(io, [0, 0x5412, 0, 0, 0, 0])), EPERM);
        assert_eq!(run(&p, call(io, [0, 0x5412 | 1 << 32, 0, 0, 0, 0])), EPERM);
        assert_eq!(run(&p, call(io, [0, 0x541C, 0, 0, 0, 0])), EPERM);
    }

    #[test]
    fn prctl_membarrier_and_seccomp_by_option() {
        let p = python_x86(DenyAction::Errno(1));
        let pr = x86("prctl");
        assert_eq!(run(&p, call(pr, [15, 0, 0, 0, 0, 0])), SECCOMP_RET_ALLOW); // SET_NAME
        assert_eq!(run(&p, call(pr, [4, 1, 0, 0, 0, 0])), EPERM); // SET_DUMPABLE
        assert_eq!(run(&p, call(pr, [35, 0, 0, 0, 0, 0])), EPERM); // SET_MM
        let mb = x86("membarrier");
        assert_eq!(run(&p, call(mb, [16, 0, 0, 0, 0, 0])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(mb, [1, 0, 0, 0, 0, 0])), EPERM); // GLOBAL
        let sc = x86("seccomp");
        assert_eq!(run(&p, call(sc, [1, 0, 0, 0, 0, 0])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(sc, [1, 1, 0, 0, 0, 0])), SECCOMP_RET_ALLOW); // TSYNC
                                                                              // A filter with its own listener could answer the run's denied calls.
        assert_eq!(run(&p, call(sc, [1, 8, 0, 0, 0, 0])), EPERM); // NEW_LISTENER
        assert_eq!(run(&p, call(sc, [1, 9 | 1 << 32, 0, 0, 0, 0])), EPERM);
        assert_eq!(run(&p, call(sc, [0, 0, 0, 0, 0, 0])), EPERM); // strict mode
    }

    #[test]
    fn extras_override_rules_and_enosys() {
        let extra = [x86("clone"), x86("clone3")];
        let pol = policy::effective_policy("python3", "x86_64", &extra).unwrap();
        let p = pol.compile(DenyAction::Errno(1)).unwrap();
        assert_eq!(
            run(&p, call(x86("clone"), [0x1200011, 0, 0, 0, 0, 0])),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(run(&p, call(x86("clone3"), [0; 6])), SECCOMP_RET_ALLOW);
    }

    #[test]
    fn every_number_matches_the_policy_on_both_arches() {
        for arch in Arch::ALL {
            for language in policy::LANGUAGES {
                let pol = policy::effective_policy(language, arch.name(), &[]).unwrap();
                let p = pol.compile(DenyAction::UserNotif).unwrap();
                let ruled: BTreeSet<u32> = pol.rules().iter().map(|r| r.nr).collect();
                for nr in 0..500u32 {
                    let got = run(
                        &p,
                        Data {
                            nr,
                            arch: arch.audit_arch(),
                            args: [0; 6],
                        },
                    );
                    let want = if pol.allowed.contains(&nr) {
                        SECCOMP_RET_ALLOW
                    } else if pol.enosys_numbers().contains(&nr) {
                        SECCOMP_RET_ERRNO | libc::ENOSYS as u32
                    } else if ruled.contains(&nr) {
                        continue;
                    } else {
                        SECCOMP_RET_USER_NOTIF
                    };
                    assert_eq!(
                        got,
                        want,
                        "{language} {arch:?} nr {nr} ({})",
                        arch.syscall_name(nr)
                    );
                }
            }
        }
    }

    #[test]
    fn allowed_calls_are_cheap_and_programs_small() {
        for arch in Arch::ALL {
            for language in policy::LANGUAGES {
                let pol = policy::effective_policy(language, arch.name(), &[]).unwrap();
                let p = pol.compile(DenyAction::UserNotif).unwrap();
                let data = |nr| Data {
                    nr,
                    arch: arch.audit_arch(),
                    args: [0; 6],
                };
                let worst = pol
                    .allowed
                    .iter()
                    .map(|&nr| run_counted(&p, data(nr)).1)
                    .max();
                // arch check (3) + load + x32 check + ~log2(runs) jumps + ret.
                assert!(
                    worst.unwrap() <= 14,
                    "{language} {arch:?}: {worst:?} instructions"
                );
                assert!(
                    p.len() < 600,
                    "{language} {arch:?}: {} instructions",
                    p.len()
                );
                eprintln!(
                    "{language} {arch:?}: {} insns, worst allowed path {worst:?}",
                    p.len()
                );
            }
        }
    }

    #[test]
    fn large_sets_need_long_jumps_and_still_work() {
        // Every other number allowed: ~450 runs, deep tree, far `ret`s and rules.
        let allowed: BTreeSet<u32> = (0..900).filter(|n| n % 2 == 0).collect();
        let rules: Vec<ArgFilter> = (1..400)
            .step_by(10)
            .map(|nr| ArgFilter {
                nr,
                any_of: vec![vec![ArgCheck::eq(0, u64::from(nr))]],
            })
            .collect();
        let enosys: BTreeSet<u32> = [3, 5, 899].into();
        let p = compile("x86_64", &allowed, &rules, &enosys, DenyAction::Errno(38)).unwrap();
        assert!(
            p.iter().any(|i| i.code == JMP_JA),
            "expected a ja trampoline"
        );
        for nr in 0..1000u32 {
            let args = [u64::from(nr), 0, 0, 0, 0, 0];
            let got = run(&p, call(nr, args));
            let ruled = nr % 10 == 1 && nr < 400;
            let want = if allowed.contains(&nr) || ruled {
                SECCOMP_RET_ALLOW
            } else {
                SECCOMP_RET_ERRNO | 38
            };
            assert_eq!(got, want, "nr {nr}");
            if ruled {
                assert_eq!(
                    run(&p, call(nr, [7, 0, 0, 0, 0, 0])),
                    SECCOMP_RET_ERRNO | 38
                );
            }
        }
        // All of 0..450 allowed collapses to one run.
        let dense: BTreeSet<u32> = (0..450).collect();
        let p = compile(
            "aarch64",
            &dense,
            &[],
            &BTreeSet::new(),
            DenyAction::UserNotif,
        )
        .unwrap();
        let arm = |nr| Data {
            nr,
            arch: 0xC000_00B7,
            args: [0; 6],
        };
        assert!(p.len() < 12, "{} instructions", p.len());
        assert_eq!(run(&p, arm(449)), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, arm(450)), SECCOMP_RET_USER_NOTIF);
    }

    #[test]
    fn long_rule_chains_reach_far_targets() {
        // 200 alternatives of 2 checks each put the allow target far away.
        let any_of: Vec<Vec<ArgCheck>> = (0..200)
            .map(|i| vec![ArgCheck::eq(0, i), ArgCheck::eq(1, i + 1)])
            .collect();
        let rules = [ArgFilter { nr: 7, any_of }];
        let allowed: BTreeSet<u32> = [1, 2, 500].into();
        let p = compile(
            "x86_64",
            &allowed,
            &rules,
            &BTreeSet::new(),
            DenyAction::Errno(1),
        )
        .unwrap();
        assert!(p.len() > 800, "{} instructions", p.len());
        assert_eq!(run(&p, call(7, [0, 1, 0, 0, 0, 0])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(7, [199, 200, 0, 0, 0, 0])), SECCOMP_RET_ALLOW);
        assert_eq!(run(&p, call(7, [199, 199, 0, 0, 0, 0])), EPERM);
        assert_eq!(run(&p, call(500, [0; 6])), SECCOMP_RET_ALLOW);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let none = BTreeSet::new();
        let x32: BTreeSet<u32> = [X32_SYSCALL_BIT].into();
        assert!(matches!(
            compile("x86_64", &x32, &[], &none, DenyAction::UserNotif),
            Err(SeccompError::NumberOutOfRange { .. })
        ));
        assert!(matches!(
            compile("x86_64", &none, &[], &none, DenyAction::Errno(0)),
            Err(SeccompError::InvalidErrno { errno: 0 })
        ));
        let bad = [ArgFilter {
            nr: 1,
            any_of: vec![vec![ArgCheck::masked_eq(0, 1, 2)]],
        }];
        assert!(matches!(
            compile("x86_64", &none, &bad, &none, DenyAction::UserNotif),
            Err(SeccompError::InvalidRule { nr: 1, .. })
        ));
        assert!(compile("sparc", &none, &[], &none, DenyAction::UserNotif).is_err());
        let huge: Vec<ArgFilter> = (0..2000)
            .map(|nr| ArgFilter {
                nr,
                any_of: vec![vec![ArgCheck::eq(0, 1)]],
            })
            .collect();
        assert!(matches!(
            compile("aarch64", &none, &huge, &none, DenyAction::UserNotif),
            Err(SeccompError::ProgramTooLong { .. })
        ));
    }

    #[test]
    fn empty_policy_denies_everything() {
        let none = BTreeSet::new();
        let p = compile("aarch64", &none, &[], &none, DenyAction::Errno(1)).unwrap();
        for nr in [0, 63, 1000, u32::MAX] {
            let d = Data {
                nr,
                arch: 0xC000_00B7,
                args: [0; 6],
            };
            assert_eq!(run(&p, d), EPERM);
        }
    }
}
