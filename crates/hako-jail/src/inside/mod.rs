//! What runs inside a run's namespaces, before the program: the jail's init and the
//! program's own confinement (`lockdown`), shared by spawn runs, the Node pool and zygote
//! children.

pub(crate) mod jail;
pub mod lockdown;

use crate::lockdown::CgroupCoverage;
use crate::spec::JailSpec;

/// What the jail's processes are built from: the run, its seccomp filter (empty for a
/// zygote), whether the supervisor listens for denied calls, and which limits a cgroup covers.
#[derive(Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub spec: &'a JailSpec,
    pub filter: &'a [libc::sock_filter],
    pub use_listener: bool,
    pub coverage: CgroupCoverage,
}
