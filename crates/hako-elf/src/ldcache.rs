//! Reader for glibc's `/etc/ld.so.cache`, so library lookup matches `ld.so` without running it.
//!
//! Two layouts exist: the new one (`glibc-ld.so.cache` + `1.1`) and the old one (`ld.so-1.7.0`),
//! which may carry a new-format cache right after its own entries. The new part is preferred.
//! Only native-endian caches are read; glibc writes them that way.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// `FLAG_ELF_LIBC6`: a glibc ELF library.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
/// Arch bits of an x86-64 library.
pub const FLAG_X8664_LIB64: i32 = 0x0300;
/// Arch bits of an AArch64 library.
pub const FLAG_AARCH64_LIB64: i32 = 0x0a00;
/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;
/// `e_machine` of i386.
pub const EM_386: u16 = 3;

const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache";
const VERSION_NEW: &[u8] = b"1.1";
/// Old header: magic (11) padded to 12, then `nlibs: u32`.
const OLD_HEADER: usize = 16;
/// Old entry: `flags: i32, key: u32, value: u32`.
const OLD_ENTRY: usize = 12;
/// New header: magic+version (20), nlibs, len_strings, flags+pad, extension offset, 3 unused.
const NEW_HEADER: usize = 48;
/// New entry: `flags: i32, key: u32, value: u32, osversion: u32, hwcap: u64`.
const NEW_ENTRY: usize = 24;
/// The new cache embedded in an old one starts at this alignment.
const NEW_ALIGN: usize = 8;
/// Endianness bits of the new header's flags byte.
const ENDIAN_MASK: u8 = 3;
const ENDIAN_UNSET: u8 = 0;
const ENDIAN_LITTLE: u8 = 2;
const ENDIAN_BIG: u8 = 3;

/// ELF class and machine of the object asking for a library; only matching entries are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElfClassMachine {
    /// ELFCLASS64 (true) or ELFCLASS32.
    pub is_64: bool,
    /// `e_machine`.
    pub machine: u16,
}

impl ElfClassMachine {
    /// The cache flags an entry must carry to suit this class and machine, if known.
    pub(crate) fn cache_flags(&self) -> Option<i32> {
        match (self.is_64, self.machine) {
            (true, EM_X86_64) => Some(FLAG_ELF_LIBC6 | FLAG_X8664_LIB64),
            (true, EM_AARCH64) => Some(FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64),
            (false, EM_386) => Some(FLAG_ELF_LIBC6),
            _ => None,
        }
    }
}

/// Errors reading or parsing an ld.so cache.
#[derive(Debug, thiserror::Error)]
pub enum LdCacheError {
    #[error("cannot read the library cache {path}: {source}; run `ldconfig` or check permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("library cache is {len} bytes, shorter than its {need}-byte header; run `ldconfig`")]
    TooShort { len: usize, need: usize },
    #[error("library cache has an unknown magic; expected `ld.so-1.7.0` or `glibc-ld.so.cache`")]
    BadMagic,
    #[error("library cache version {found:?} is not supported; only `1.1` is")]
    UnsupportedVersion { found: String },
    #[error("library cache was written for the other byte order; run `ldconfig` on this host")]
    ForeignEndian,
    #[error("library cache declares {nlibs} entries but holds only {len} bytes; run `ldconfig`")]
    EntriesOutOfBounds { nlibs: u32, len: usize },
    #[error("library cache entry {index} points at string offset {offset} outside the file")]
    StringOutOfBounds { index: usize, offset: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    flags: i32,
    hwcap: u64,
    value: PathBuf,
}

/// A parsed ld.so cache: soname → candidate paths, in cache order.
#[derive(Debug, Clone, Default)]
pub struct LdCache {
    entries: HashMap<Vec<u8>, Vec<Entry>>,
    len: usize,
}

impl LdCache {
    /// A cache with no entries (for hosts without `/etc/ld.so.cache`).
    pub fn empty() -> LdCache {
        LdCache::default()
    }

    /// Reads and parses the cache file at `path`.
    pub fn load(path: &Path) -> Result<LdCache, LdCacheError> {
        let bytes = std::fs::read(path).map_err(|source| LdCacheError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        LdCache::parse(&bytes)
    }

    /// Parses cache bytes in either format.
    pub fn parse(bytes: &[u8]) -> Result<LdCache, LdCacheError> {
        if bytes.starts_with(MAGIC_NEW) {
            return parse_new(bytes);
        }
        if !bytes.starts_with(MAGIC_OLD) {
            if bytes.len() < MAGIC_OLD.len() {
                return Err(LdCacheError::TooShort {
                    len: bytes.len(),
                    need: OLD_HEADER,
                });
            }
            return Err(LdCacheError::BadMagic);
        }
        if bytes.len() < OLD_HEADER {
            return Err(LdCacheError::TooShort {
                len: bytes.len(),
                need: OLD_HEADER,
            });
        }
        let nlibs = read_u32(bytes, 12).unwrap_or(0);
        let entries_end = (nlibs as usize)
            .checked_mul(OLD_ENTRY)
            .and_then(|n| n.checked_add(OLD_HEADER))
            .filter(|&end| end <= bytes.len())
            .ok_or(LdCacheError::EntriesOutOfBounds {
                nlibs,
                len: bytes.len(),
            })?;
        // A new-format cache may follow the old entries; glibc prefers it.
        let new_start = entries_end.div_ceil(NEW_ALIGN) * NEW_ALIGN;
        if let Some(tail) = bytes.get(new_start..) {
            if tail.starts_with(MAGIC_NEW) {
                return parse_new(tail);
            }
        }
        // Old format: string offsets count from the end of the entries.
        let strings = &bytes[entries_end..];
        let mut cache = LdCache::empty();
        for index in 0..nlibs as usize {
            let at = OLD_HEADER + index * OLD_ENTRY;
            let field = |n: usize| read_u32(bytes, at + 4 * n).unwrap_or(0);
            let flags = field(0) as i32;
            let key = c_str(strings, field(1) as usize).ok_or(LdCacheError::StringOutOfBounds {
                index,
                offset: field(1) as u64,
            })?;
            let value =
                c_str(strings, field(2) as usize).ok_or(LdCacheError::StringOutOfBounds {
                    index,
                    offset: field(2) as u64,
                })?;
            cache.push(key, flags, 0, value);
        }
        Ok(cache)
    }

    /// Number of entries read.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the cache has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first cache path for `soname` that suits `class`, preferring entries without hwcap
    /// bits (legacy hwcap subdirectories are only used by ld.so on matching CPUs).
    pub fn lookup(&self, soname: &str, class: ElfClassMachine) -> Option<PathBuf> {
        self.candidates(soname, class).into_iter().next()
    }

    /// Every cache path for `soname` that suits `class`, best first.
    pub(crate) fn candidates(&self, soname: &str, class: ElfClassMachine) -> Vec<PathBuf> {
        let Some(want) = class.cache_flags() else {
            return Vec::new();
        };
        let Some(list) = self.entries.get(soname.as_bytes()) else {
            return Vec::new();
        };
        let matching = list.iter().filter(|e| e.flags == want);
        let (plain, hwcap): (Vec<&Entry>, Vec<&Entry>) = matching.partition(|e| e.hwcap == 0);
        plain
            .into_iter()
            .chain(hwcap)
            .map(|e| e.value.clone())
            .collect()
    }

    fn push(&mut self, key: &[u8], flags: i32, hwcap: u64, value: &[u8]) {
        let value = PathBuf::from(OsString::from_vec(value.to_vec()));
        self.entries.entry(key.to_vec()).or_default().push(Entry {
            flags,
            hwcap,
            value,
        });
        self.len += 1;
    }
}

/// Parses a new-format cache; `bytes` starts at its header and string offsets count from there.
fn parse_new(bytes: &[u8]) -> Result<LdCache, LdCacheError> {
    if bytes.len() < NEW_HEADER {
        return Err(LdCacheError::TooShort {
            len: bytes.len(),
            need: NEW_HEADER,
        });
    }
    let version = &bytes[MAGIC_NEW.len()..MAGIC_NEW.len() + VERSION_NEW.len()];
    if version != VERSION_NEW {
        return Err(LdCacheError::UnsupportedVersion {
            found: String::from_utf8_lossy(version).into_owned(),
        });
    }
    let native = if cfg!(target_endian = "little") {
        ENDIAN_LITTLE
    } else {
        ENDIAN_BIG
    };
    let endian = bytes[28] & ENDIAN_MASK;
    if endian != ENDIAN_UNSET && endian != native {
        return Err(LdCacheError::ForeignEndian);
    }
    let nlibs = read_u32(bytes, 20).unwrap_or(0);
    (nlibs as usize)
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(NEW_HEADER))
        .filter(|&end| end <= bytes.len())
        .ok_or(LdCacheError::EntriesOutOfBounds {
            nlibs,
            len: bytes.len(),
        })?;
    let mut cache = LdCache::empty();
    for index in 0..nlibs as usize {
        let at = NEW_HEADER + index * NEW_ENTRY;
        let field = |n: usize| read_u32(bytes, at + 4 * n).unwrap_or(0);
        let flags = field(0) as i32;
        let hwcap = read_u64(bytes, at + 16).unwrap_or(0);
        let key = c_str(bytes, field(1) as usize).ok_or(LdCacheError::StringOutOfBounds {
            index,
            offset: field(1) as u64,
        })?;
        let value = c_str(bytes, field(2) as usize).ok_or(LdCacheError::StringOutOfBounds {
            index,
            offset: field(2) as u64,
        })?;
        cache.push(key, flags, hwcap, value);
    }
    Ok(cache)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(raw.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(raw.try_into().ok()?))
}

/// The NUL-terminated string at `offset`; None when it runs off the end.
fn c_str(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = bytes.get(offset..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_64: ElfClassMachine = ElfClassMachine {
        is_64: true,
        machine: EM_X86_64,
    };
    const AARCH64: ElfClassMachine = ElfClassMachine {
        is_64: true,
        machine: EM_AARCH64,
    };

    /// Builds a new-format cache; string offsets are relative to its start.
    fn new_cache(entries: &[(i32, &str, &str, u64)]) -> Vec<u8> {
        let strings_at = NEW_HEADER + entries.len() * NEW_ENTRY;
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for &(flags, key, value, hwcap) in entries {
            let key_off = (strings_at + strings.len()) as u32;
            strings.extend_from_slice(key.as_bytes());
            strings.push(0);
            let value_off = (strings_at + strings.len()) as u32;
            strings.extend_from_slice(value.as_bytes());
            strings.push(0);
            table.extend_from_slice(&flags.to_ne_bytes());
            table.extend_from_slice(&key_off.to_ne_bytes());
            table.extend_from_slice(&value_off.to_ne_bytes());
            table.extend_from_slice(&0u32.to_ne_bytes());
            table.extend_from_slice(&hwcap.to_ne_bytes());
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC_NEW);
        out.extend_from_slice(VERSION_NEW);
        out.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        out.push(if cfg!(target_endian = "little") { 2 } else { 3 });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[0; 12]);
        assert_eq!(out.len(), NEW_HEADER);
        out.extend_from_slice(&table);
        out.extend_from_slice(&strings);
        out
    }

    /// Builds an old-format cache, optionally followed by an embedded new one.
    fn old_cache(entries: &[(i32, &str, &str)], embedded: Option<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC_OLD);
        out.push(0);
        out.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        let mut strings = Vec::new();
        for &(flags, key, value) in entries {
            let key_off = strings.len() as u32;
            strings.extend_from_slice(key.as_bytes());
            strings.push(0);
            let value_off = strings.len() as u32;
            strings.extend_from_slice(value.as_bytes());
            strings.push(0);
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&key_off.to_ne_bytes());
            out.extend_from_slice(&value_off.to_ne_bytes());
        }
        match embedded {
            Some(new) => {
                while out.len() % NEW_ALIGN != 0 {
                    out.push(0);
                }
                out.extend_from_slice(&new);
            }
            None => out.extend_from_slice(&strings),
        }
        out
    }

    const X86_FLAGS: i32 = FLAG_ELF_LIBC6 | FLAG_X8664_LIB64;
    const ARM_FLAGS: i32 = FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64;

    #[test]
    fn new_format_matches_class_and_prefers_plain_entries() {
        let bytes = new_cache(&[
            (X86_FLAGS, "libz.so.1", "/hw/libz.so.1", 1 << 40),
            (ARM_FLAGS, "libz.so.1", "/arm/libz.so.1", 0),
            (X86_FLAGS, "libz.so.1", "/x86/libz.so.1", 0),
            (FLAG_ELF_LIBC6, "libc.so.6", "/i386/libc.so.6", 0),
        ]);
        let cache = LdCache::parse(&bytes).unwrap();
        assert_eq!(cache.len(), 4);
        assert_eq!(
            cache.lookup("libz.so.1", X86_64),
            Some(PathBuf::from("/x86/libz.so.1"))
        );
        assert_eq!(
            cache.candidates("libz.so.1", X86_64),
            vec![
                PathBuf::from("/x86/libz.so.1"),
                PathBuf::from("/hw/libz.so.1")
            ]
        );
        assert_eq!(
            cache.lookup("libz.so.1", AARCH64),
            Some(PathBuf::from("/arm/libz.so.1"))
        );
        // A 32-bit entry never satisfies a 64-bit object.
        assert_eq!(cache.lookup("libc.so.6", X86_64), None);
        assert_eq!(
            cache.lookup(
                "libc.so.6",
                ElfClassMachine {
                    is_64: false,
                    machine: EM_386
                }
            ),
            Some(PathBuf::from("/i386/libc.so.6"))
        );
        assert_eq!(cache.lookup("libnope.so", X86_64), None);
    }

    #[test]
    fn old_format_alone_and_with_embedded_new() {
        let old = old_cache(&[(X86_FLAGS, "libold.so.1", "/old/libold.so.1")], None);
        let cache = LdCache::parse(&old).unwrap();
        assert_eq!(
            cache.lookup("libold.so.1", X86_64),
            Some(PathBuf::from("/old/libold.so.1"))
        );

        let new = new_cache(&[(X86_FLAGS, "libnew.so.2", "/new/libnew.so.2", 0)]);
        let both = old_cache(&[(X86_FLAGS, "libold.so.1", "/old/libold.so.1")], Some(new));
        let cache = LdCache::parse(&both).unwrap();
        assert_eq!(
            cache.lookup("libnew.so.2", X86_64),
            Some(PathBuf::from("/new/libnew.so.2"))
        );
        assert_eq!(
            cache.len(),
            1,
            "the embedded new cache replaces the old entries"
        );
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        let good = new_cache(&[(X86_FLAGS, "libz.so.1", "/x86/libz.so.1", 0)]);
        for cut in 0..good.len() {
            // Cutting inside the table or strings must error, never panic.
            let result = LdCache::parse(&good[..cut]);
            assert!(result.is_err(), "prefix of {cut} bytes parsed");
        }
        assert!(matches!(
            LdCache::parse(b"this is not a cache at all"),
            Err(LdCacheError::BadMagic)
        ));
        assert!(matches!(
            LdCache::parse(b"ld.so"),
            Err(LdCacheError::TooShort { .. })
        ));
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            LdCache::parse(&huge),
            Err(LdCacheError::EntriesOutOfBounds { .. })
        ));
        let mut bad_offset = good.clone();
        bad_offset[NEW_HEADER + 4..NEW_HEADER + 8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            LdCache::parse(&bad_offset),
            Err(LdCacheError::StringOutOfBounds { index: 0, .. })
        ));
        let mut version = good.clone();
        version[17..20].copy_from_slice(b"9.9");
        assert!(matches!(
            LdCache::parse(&version),
            Err(LdCacheError::UnsupportedVersion { .. })
        ));
        let mut endian = good;
        endian[28] = if cfg!(target_endian = "little") { 3 } else { 2 };
        assert!(matches!(
            LdCache::parse(&endian),
            Err(LdCacheError::ForeignEndian)
        ));
        // Arbitrary bytes after a valid old magic.
        let mut noise = MAGIC_OLD.to_vec();
        noise.extend((0u8..200).map(|i| i.wrapping_mul(37)));
        let _ = LdCache::parse(&noise);
    }

    #[test]
    fn load_reports_the_path() {
        let err = LdCache::load(Path::new("/nonexistent/ld.so.cache")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/ld.so.cache"),
            "{err}"
        );
    }

    #[test]
    fn host_cache_resolves_libc() {
        let path = Path::new("/etc/ld.so.cache");
        if !path.exists() {
            eprintln!("skipped: {} does not exist on this host", path.display());
            return;
        }
        let class = if cfg!(target_arch = "aarch64") {
            AARCH64
        } else {
            X86_64
        };
        let cache = LdCache::load(path).unwrap();
        assert!(!cache.is_empty());
        let libc = cache
            .lookup("libc.so.6", class)
            .expect("libc.so.6 in cache");
        assert!(libc.exists(), "{} does not exist", libc.display());
    }
}
