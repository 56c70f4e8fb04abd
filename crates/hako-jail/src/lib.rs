//! hako-jail: everything that touches namespaces, mounts, cgroups, seccomp and Landlock.
//!
//! This is the only crate of hako with meaningful `unsafe`. Its entry point for running code
//! is [`helper::main`], executed in a separate single-threaded process (`hako __jail`), never
//! inside the multi-threaded server. The folders follow the processes:
//!
//! - `helper/`: the host side of a run (the `__jail` and `__live` helpers, supervision, host
//!   id leases);
//! - `inside/`: what runs inside the run's namespaces before the program (the jail's init,
//!   the program's lock-down);
//! - `zygote/`: the warm Python interpreter, its host side (`mod.rs`) and its run children's
//!   side (`child.rs`);
//! - `layers/`: cgroups, mounts, network namespaces, Landlock, `/proc` masks;
//! - `seccomp/`: the policy tables, the BPF compiler and the notification listener;
//! - `sys/`: the syscall seam ([`sys::Kernel`]): every privileged call of the set-up, made by
//!   [`sys::Real`] or written down by the unit tests' recording double.

pub mod helper;
pub mod inside;
pub mod layers;
pub mod probe;
pub mod protocol;
pub mod seccomp;
pub mod sys;
#[cfg(test)]
mod testing;
pub mod zygote;

pub use hako_wire::spec;
pub use helper::{ids, live};
pub use inside::lockdown;
pub use layers::{cgroup, cgroup_setup, landlock, mounts, netns, peak, procmask};
pub use spec::*;
