//! hako-elf: which shared libraries an interpreter and its modules need, read from ELF headers
//! and `/etc/ld.so.cache` the way `ld.so` resolves them. The runtime binds exactly these files
//! into the jail root. No `unsafe`, no privileges.

#![forbid(unsafe_code)]

pub mod closure;
pub mod ldcache;
