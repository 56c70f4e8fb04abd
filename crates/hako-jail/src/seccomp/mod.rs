//! Seccomp (being written).
