//! What runs inside a run's namespaces, before the program: the jail's init and the
//! program's own confinement (`lockdown`), shared by spawn runs, the Node pool and zygote
//! children.

pub(crate) mod jail;
pub mod lockdown;
