//! hako-jail: everything that touches namespaces, mounts, cgroups, seccomp and Landlock.
//!
//! This is the only crate of hako with meaningful `unsafe`. Its entry point for running code
//! is [`helper::main`], executed in a separate single-threaded process (`hako __jail`), never
//! inside the multi-threaded server.

pub mod cgroup;
pub mod helper;
pub mod ids;
pub mod landlock;
pub mod live;
pub mod lockdown;
pub mod mounts;
pub mod netns;
pub mod peak;
pub mod probe;
pub mod procmask;
pub mod protocol;
pub mod seccomp;
pub use hako_wire::spec;
pub mod zygote;

pub use spec::*;
