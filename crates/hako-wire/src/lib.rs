//! hako-wire: everything that crosses a process boundary in hako, in one place.
//!
//! - [`spec`]: the run spec the caller sends a jail helper and the outcome it reports.
//! - [`frame`]: the byte framing of those pipes (length-prefixed JSON and byte strings).
//! - [`zygote`]: the orders a zygote helper takes and the reports it gives.
//! - [`egress`]: how a jail helper registers a proxy-mode run with the egress guard.
//! - [`control`]: the ONE control-message enum spoken on the control sockets between a
//!   helper, the jail's init, a zygote and its run children, with one send and one receive
//!   function, and the receivers' state machines: a message is accepted only in the state
//!   that expects it; anything else is tampering.
//!
//! The Python side of the zygote (`zygote.py` in hako-jail) speaks [`control`] too and cites
//! it as its only specification. No `unsafe`, no privileges.
#![forbid(unsafe_code)]

pub mod control;
pub mod egress;
pub mod frame;
pub mod language;
pub mod spec;
pub mod zygote;

pub use language::{Language, UnsupportedLanguage};
