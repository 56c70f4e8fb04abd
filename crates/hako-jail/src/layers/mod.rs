//! The isolation layers, each a small interface to the kernel used by the helper (host side)
//! and by the processes inside a run.

pub mod cgroup;
pub mod cgroup_setup;
pub mod landlock;
pub mod mounts;
pub mod netns;
pub mod peak;
pub mod procmask;
