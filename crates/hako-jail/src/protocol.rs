//! The byte framing between the caller and a jail or zygote helper: see [`hako_wire::frame`].

pub use hako_wire::frame::{FrameError as ProtocolError, *};
