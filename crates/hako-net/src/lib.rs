//! hako-net: the egress guard of proxy-mode runs.
//!
//! A run with network has its own network namespace whose only way out is a listener on
//! `127.0.0.1:3128` that the guard serves. The guard speaks the HTTP proxy protocol
//! (absolute-form `http://` requests and `CONNECT` tunnels, TLS is never terminated),
//! resolves names itself, refuses internal addresses before any packet leaves, records each
//! destination per run, and enforces per-run connection and byte limits. See docs/network.md.

pub mod guard;
pub mod http;
pub mod local;
pub mod policy;
pub mod upstream;

pub use guard::{Guard, GuardConfig, GuardError, NetLimits};
pub use policy::{Policy, PolicyError};
pub use upstream::{UpstreamError, Upstreams};
