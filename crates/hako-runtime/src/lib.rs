//! hako-runtime: configuration, language adapters and the executor that turns a run request
//! into a jailed run.

pub mod adapter;
pub mod agent;
pub mod cgroups;
pub mod config;
pub mod egress;
pub mod executor;
pub mod host;
pub mod imports;
mod node_pool;
pub use hako_wire::language;
pub mod packages;
pub mod provision;
pub mod result;
pub mod stop;
pub mod summary;
pub mod warm;
mod warm_family;
pub mod warm_python;

pub use config::Config;
pub use executor::{ExecError, ExecOptions, Executor, JailRequest};
pub use language::Language;
pub use result::{Ending, Failure, Reason, RunReport, RunRequest, RunStatus, Usage};
