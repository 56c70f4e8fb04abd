//! Shared-library closure of executables and modules, computed from ELF headers the way
//! `ld.so` resolves them (never by running `ldd`, which may execute the target).
//!
//! The mount code bind-mounts exactly these files into the jail root.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use goblin::elf::Elf;

use crate::ldcache::{ElfClassMachine, LdCache, EM_AARCH64, EM_X86_64};

/// Deepest directory level [`find_elf_objects`] descends to.
pub const MAX_DEPTH: usize = 32;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ET_DYN: u16 = 3;

/// Errors computing a closure.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}; check that it exists and is readable")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} looks like ELF but cannot be parsed: {source}; the file may be corrupt")]
    Parse {
        path: PathBuf,
        source: goblin::error::Error,
    },
    #[error("cannot list {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("{path} is nested deeper than {max} directories; flatten the environment")]
    TooDeep { path: PathBuf, max: usize },
}

/// The files a set of roots needs at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Libraries and interpreters, as found (not canonicalized; symlinks are kept).
    pub files: BTreeSet<PathBuf>,
    /// `(needed_by, soname)` for every dependency that could not be found.
    pub missing: Vec<(PathBuf, String)>,
}

/// What the closure needs from one ELF object.
#[derive(Debug)]
struct Object {
    path: PathBuf,
    class: ElfClassMachine,
    interp: Option<PathBuf>,
    soname: Option<String>,
    needed: Vec<String>,
    /// Ignored by ld.so when `runpath` is set.
    rpath: Vec<String>,
    runpath: Vec<String>,
    /// Directory `$ORIGIN` expands to.
    origin: PathBuf,
}

/// An object and the objects that loaded it, nearest first.
type LoaderChain = Rc<Vec<Rc<Object>>>;

/// Parsed objects by path; None for files that are not ELF.
type ParseCache = HashMap<PathBuf, Option<Rc<Object>>>;

/// Computes the interpreters and transitive DT_NEEDED libraries of `roots`.
///
/// Non-ELF roots (scripts) are skipped. Each root is resolved as its own process would be
/// (its own RPATH chain). The roots themselves are left out unless another object needs them.
pub fn library_closure(roots: &[PathBuf], cache: &LdCache) -> Result<Closure, ElfError> {
    let mut parsed = ParseCache::new();
    let mut closure = Closure::default();
    let mut missing = BTreeSet::new();
    for root in roots {
        let Some(object) = parse_root(root)? else {
            continue;
        };
        parsed.insert(root.clone(), Some(object.clone()));
        resolve_root(object, cache, &mut parsed, &mut closure.files, &mut missing)?;
    }
    closure.missing = missing.into_iter().collect();
    Ok(closure)
}

/// One root's load order: breadth-first like ld.so, with its own soname → path map.
fn resolve_root(
    root: Rc<Object>,
    cache: &LdCache,
    parsed: &mut ParseCache,
    files: &mut BTreeSet<PathBuf>,
    missing: &mut BTreeSet<(PathBuf, String)>,
) -> Result<(), ElfError> {
    let mut loaded: HashMap<String, PathBuf> = HashMap::new();
    if let Some(name) = &root.soname {
        loaded.insert(name.clone(), root.path.clone());
    }
    if let Some(interp) = &root.interp {
        if regular_file(interp) {
            files.insert(interp.clone());
            if let Some(name) = interp.file_name().and_then(|n| n.to_str()) {
                loaded.insert(name.to_string(), interp.clone());
            }
        } else {
            missing.insert((root.path.clone(), interp.display().to_string()));
        }
    }
    // Each queued object carries its loader chain (requester first) for RPATH lookup.
    let mut queue: VecDeque<(Rc<Object>, LoaderChain)> = VecDeque::new();
    queue.push_back((root.clone(), Rc::new(vec![root])));
    while let Some((object, chain)) = queue.pop_front() {
        for name in &object.needed {
            if loaded.contains_key(name) {
                if let Some(path) = loaded.get(name) {
                    files.insert(path.clone());
                }
                continue;
            }
            match find_library(name, &chain, cache, parsed)? {
                Some(lib) => {
                    files.insert(lib.path.clone());
                    loaded.insert(name.clone(), lib.path.clone());
                    if let Some(soname) = &lib.soname {
                        loaded.entry(soname.clone()).or_insert(lib.path.clone());
                    }
                    let mut next = vec![lib.clone()];
                    next.extend(chain.iter().cloned());
                    queue.push_back((lib, Rc::new(next)));
                }
                None => {
                    missing.insert((object.path.clone(), name.clone()));
                }
            }
        }
    }
    Ok(())
}

/// Searches `name` for `chain[0]` in ld.so order: RPATH chain (unless the requester has a
/// RUNPATH), RUNPATH, ld.so.cache, default dirs. Candidates of another class are skipped.
fn find_library(
    name: &str,
    chain: &[Rc<Object>],
    cache: &LdCache,
    parsed: &mut ParseCache,
) -> Result<Option<Rc<Object>>, ElfError> {
    let Some(requester) = chain.first() else {
        return Ok(None);
    };
    let class = requester.class;
    if name.contains('/') {
        return candidate(Path::new(name), class, parsed);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if requester.runpath.is_empty() {
        for loader in chain {
            // An object's RPATH is dropped entirely when it also has a RUNPATH.
            if loader.runpath.is_empty() {
                dirs.extend(expand_paths(&loader.rpath, loader));
            }
        }
    }
    dirs.extend(expand_paths(&requester.runpath, requester));
    for dir in &dirs {
        if let Some(found) = candidate(&dir.join(name), class, parsed)? {
            return Ok(Some(found));
        }
    }
    for path in cache.candidates(name, class) {
        if let Some(found) = candidate(&path, class, parsed)? {
            return Ok(Some(found));
        }
    }
    for dir in default_dirs(class) {
        if let Some(found) = candidate(&Path::new(&dir).join(name), class, parsed)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The object at `path` if it is an ELF of `class`; None if absent, not ELF, or foreign.
fn candidate(
    path: &Path,
    class: ElfClassMachine,
    parsed: &mut ParseCache,
) -> Result<Option<Rc<Object>>, ElfError> {
    if let Some(known) = parsed.get(path) {
        return Ok(known.clone().filter(|o| o.class == class));
    }
    if !regular_file(path) {
        return Ok(None);
    }
    let object = parse_object(path, None)?.map(Rc::new);
    parsed.insert(path.to_path_buf(), object.clone());
    Ok(object.filter(|o| o.class == class))
}

/// Parses a root; an executable's `$ORIGIN` is its real directory, as ld.so takes it from
/// `/proc/self/exe`.
fn parse_root(path: &Path) -> Result<Option<Rc<Object>>, ElfError> {
    let metadata = fs::metadata(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Ok(None);
    }
    let real_dir = fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    Ok(parse_object(path, real_dir)?.map(Rc::new))
}

/// Reads and parses `path`; None when it does not start with the ELF magic.
fn parse_object(path: &Path, exe_origin: Option<PathBuf>) -> Result<Option<Object>, ElfError> {
    let read_err = |source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == ELF_MAGIC => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(read_err(e)),
    }
    let mut bytes = magic.to_vec();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    let elf = Elf::parse(&bytes).map_err(|source| ElfError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let split = |list: &[&str]| -> Vec<String> {
        list.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let is_exe = elf.interpreter.is_some();
    let own_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let origin = match (is_exe, exe_origin) {
        (true, Some(real)) => real,
        _ => own_dir,
    };
    Ok(Some(Object {
        path: path.to_path_buf(),
        class: ElfClassMachine {
            is_64: elf.is_64,
            machine: elf.header.e_machine,
        },
        interp: elf.interpreter.map(PathBuf::from),
        soname: elf.soname.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        origin,
    }))
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` (also `${...}`) in search paths of `object`.
fn expand_paths(paths: &[String], object: &Object) -> Vec<PathBuf> {
    let origin = object.origin.to_string_lossy();
    let platform = platform(object.class);
    let mut out = Vec::new();
    for path in paths {
        let with_origin = replace_token(path, "ORIGIN", &origin);
        let with_platform = match platform {
            Some(p) => replace_token(&with_origin, "PLATFORM", p),
            None => with_origin,
        };
        if has_token(&with_platform, "LIB") {
            for lib in lib_names(object.class) {
                out.push(PathBuf::from(replace_token(&with_platform, "LIB", &lib)));
            }
        } else {
            out.push(PathBuf::from(with_platform));
        }
    }
    out
}

fn has_token(s: &str, token: &str) -> bool {
    s.contains(&format!("${token}")) || s.contains(&format!("${{{token}}}"))
}

/// Replaces `$TOKEN` (not followed by an identifier character) and `${TOKEN}`.
fn replace_token(s: &str, token: &str, value: &str) -> String {
    let braced = format!("${{{token}}}");
    let plain = format!("${token}");
    let s = s.replace(&braced, value);
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(at) = rest.find(&plain) {
        let after = &rest[at + plain.len()..];
        let continues = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if continues { &plain } else { value });
        rest = after;
    }
    out.push_str(rest);
    out
}

fn triplet(class: ElfClassMachine) -> Option<&'static str> {
    match (class.is_64, class.machine) {
        (true, EM_X86_64) => Some("x86_64-linux-gnu"),
        (true, EM_AARCH64) => Some("aarch64-linux-gnu"),
        _ => None,
    }
}

fn platform(class: ElfClassMachine) -> Option<&'static str> {
    match (class.is_64, class.machine) {
        (true, EM_X86_64) => Some("x86_64"),
        (true, EM_AARCH64) => Some("aarch64"),
        _ => None,
    }
}

/// What `$LIB` may expand to: Debian's ld.so uses `lib/<triplet>`, others `lib64` or `lib`.
fn lib_names(class: ElfClassMachine) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(t) = triplet(class) {
        names.push(format!("lib/{t}"));
    }
    names.push(if class.is_64 { "lib64" } else { "lib" }.to_string());
    names
}

/// ld.so's built-in search dirs for `class`.
fn default_dirs(class: ElfClassMachine) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(class) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if class.is_64 {
        dirs.push("/lib64".to_string());
        dirs.push("/usr/lib64".to_string());
    }
    dirs.push("/lib".to_string());
    dirs.push("/usr/lib".to_string());
    dirs
}

fn regular_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Every ELF shared object (or PIE) under `dir`, sorted. Directory symlinks are not followed;
/// file symlinks to ELF files are listed. Fails past [`MAX_DEPTH`] levels.
pub fn find_elf_objects(dir: &Path) -> Result<Vec<PathBuf>, ElfError> {
    let mut found = Vec::new();
    walk(dir, 0, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), ElfError> {
    if depth > MAX_DEPTH {
        return Err(ElfError::TooDeep {
            path: dir.to_path_buf(),
            max: MAX_DEPTH,
        });
    }
    let entries = fs::read_dir(dir).map_err(|source| ElfError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ElfError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|source| ElfError::Read {
            path: path.clone(),
            source,
        })?;
        if file_type.is_dir() {
            walk(&path, depth + 1, found)?;
        } else if (file_type.is_file() || file_type.is_symlink())
            && regular_file(&path)
            && is_shared_object(&path)?
        {
            found.push(path);
        }
    }
    Ok(())
}

/// True when `path` starts with the ELF magic and has type ET_DYN.
fn is_shared_object(path: &Path) -> Result<bool, ElfError> {
    let mut file = fs::File::open(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut head = [0u8; 18];
    match file.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(source) => {
            return Err(ElfError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    if &head[..4] != ELF_MAGIC {
        return Ok(false);
    }
    // EI_DATA (byte 5): 1 little, 2 big endian; e_type follows the 16-byte ident.
    let e_type = match head[5] {
        2 => u16::from_be_bytes([head[16], head[17]]),
        _ => u16::from_le_bytes([head[16], head[17]]),
    };
    Ok(e_type == ET_DYN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn host_cache() -> LdCache {
        LdCache::load(Path::new("/etc/ld.so.cache")).unwrap_or_else(|_| LdCache::empty())
    }

    fn names(closure: &Closure) -> BTreeSet<String> {
        closure
            .files
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect()
    }

    fn assert_has(closure: &Closure, wanted: &[&str]) {
        let names = names(closure);
        for w in wanted {
            assert!(names.contains(*w), "{w} missing from {names:?}");
        }
        for file in &closure.files {
            assert!(file.exists(), "{} does not exist", file.display());
        }
    }

    #[test]
    fn python_closure_has_libc_zlib_expat_libm_and_interpreter() {
        let python = PathBuf::from("/usr/bin/python3.11");
        if !python.exists() {
            eprintln!("skipped: {} is not installed", python.display());
            return;
        }
        let closure = library_closure(std::slice::from_ref(&python), &host_cache()).unwrap();
        assert_has(
            &closure,
            &["libc.so.6", "libz.so.1", "libexpat.so.1", "libm.so.6"],
        );
        let interp = if cfg!(target_arch = "aarch64") {
            "/lib/ld-linux-aarch64.so.1"
        } else {
            "/lib64/ld-linux-x86-64.so.2"
        };
        assert!(closure.files.contains(Path::new(interp)), "{closure:?}");
        assert!(
            !closure.files.contains(&python),
            "a root is not its own dependency"
        );
        assert!(closure.missing.is_empty(), "{:?}", closure.missing);
    }

    #[test]
    fn lib_dynload_closure_has_ssl_crypto_ffi_sqlite() {
        let dir = Path::new("/usr/lib/python3.11/lib-dynload");
        if !dir.is_dir() {
            eprintln!("skipped: {} does not exist", dir.display());
            return;
        }
        let objects = find_elf_objects(dir).unwrap();
        assert!(objects.len() > 10, "{objects:?}");
        let closure = library_closure(&objects, &host_cache()).unwrap();
        assert_has(
            &closure,
            &[
                "libssl.so.3",
                "libcrypto.so.3",
                "libffi.so.8",
                "libsqlite3.so.0",
            ],
        );
    }

    #[test]
    fn node_closure_has_libstdcxx_and_libgcc() {
        let node = PathBuf::from("/usr/bin/node");
        if !node.exists() {
            eprintln!("skipped: {} is not installed", node.display());
            return;
        }
        let closure = library_closure(&[node], &host_cache()).unwrap();
        assert_has(&closure, &["libstdc++.so.6", "libgcc_s.so.1", "libc.so.6"]);
    }

    #[test]
    fn empty_cache_falls_back_to_default_dirs() {
        let python = PathBuf::from("/usr/bin/python3.11");
        if !python.exists() {
            eprintln!("skipped: {} is not installed", python.display());
            return;
        }
        let closure = library_closure(&[python], &LdCache::empty()).unwrap();
        assert_has(&closure, &["libc.so.6", "libz.so.1"]);
    }

    #[test]
    fn scripts_are_skipped_and_garbage_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let closure = library_closure(std::slice::from_ref(&script), &LdCache::empty()).unwrap();
        assert_eq!(closure, Closure::default());

        let garbage = tmp.path().join("bad.so");
        fs::write(&garbage, b"\x7fELF\x02\x01\x01garbage").unwrap();
        let err = library_closure(std::slice::from_ref(&garbage), &LdCache::empty()).unwrap_err();
        assert!(matches!(err, ElfError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("bad.so"), "{err}");

        let absent = tmp.path().join("absent");
        let err = library_closure(&[absent], &LdCache::empty()).unwrap_err();
        assert!(matches!(err, ElfError::Read { .. }), "{err}");
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn tokens_expand() {
        assert_eq!(
            replace_token("$ORIGIN/../lib", "ORIGIN", "/a/b"),
            "/a/b/../lib"
        );
        assert_eq!(replace_token("${ORIGIN}/x", "ORIGIN", "/o"), "/o/x");
        assert_eq!(replace_token("$ORIGINAL/x", "ORIGIN", "/o"), "$ORIGINAL/x");
        assert_eq!(
            replace_token("/p/$PLATFORM:$ORIGIN", "PLATFORM", "x86_64"),
            "/p/x86_64:$ORIGIN"
        );
        let object = Object {
            path: PathBuf::from("/opt/app/bin/tool"),
            class: ElfClassMachine {
                is_64: true,
                machine: EM_X86_64,
            },
            interp: None,
            soname: None,
            needed: Vec::new(),
            rpath: Vec::new(),
            runpath: Vec::new(),
            origin: PathBuf::from("/opt/app/bin"),
        };
        let paths = vec!["$ORIGIN/../$LIB".to_string(), "/x/${PLATFORM}".to_string()];
        assert_eq!(
            expand_paths(&paths, &object),
            vec![
                PathBuf::from("/opt/app/bin/../lib/x86_64-linux-gnu"),
                PathBuf::from("/opt/app/bin/../lib64"),
                PathBuf::from("/x/x86_64"),
            ]
        );
    }

    fn have_cc() -> bool {
        Command::new("cc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn cc(args: &[&str], cwd: &Path) {
        let out = Command::new("cc")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// exe (RUNPATH $ORIGIN/sub) → libhakoa.so in sub/ → libhakob.so (RUNPATH $ORIGIN/deep).
    #[test]
    fn runpath_origin_resolves_next_to_the_object() {
        if !have_cc() {
            eprintln!("skipped: no C compiler (cc) to build the fixture");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("sub/deep")).unwrap();
        fs::write(dir.join("b.c"), "int b(void) { return 2; }\n").unwrap();
        fs::write(
            dir.join("a.c"),
            "int b(void);\nint a(void) { return b(); }\n",
        )
        .unwrap();
        fs::write(
            dir.join("main.c"),
            "int a(void);\nint main(void) { return a(); }\n",
        )
        .unwrap();
        cc(
            &["-shared", "-fPIC", "-o", "sub/deep/libhakob.so", "b.c"],
            dir,
        );
        cc(
            &[
                "-shared",
                "-fPIC",
                "-o",
                "sub/libhakoa.so",
                "a.c",
                "-Lsub/deep",
                "-lhakob",
                "-Wl,--enable-new-dtags,-rpath,$ORIGIN/deep",
            ],
            dir,
        );
        cc(
            &[
                "-o",
                "main",
                "main.c",
                "-Lsub",
                "-lhakoa",
                "-Wl,--enable-new-dtags,-rpath,$ORIGIN/sub",
            ],
            dir,
        );
        // Sanity: the loader agrees (exit code 2 from b()).
        let status = Command::new(dir.join("main")).status().unwrap();
        assert_eq!(status.code(), Some(2));

        let closure = library_closure(&[dir.join("main")], &host_cache()).unwrap();
        assert!(
            closure.files.contains(&dir.join("sub/libhakoa.so")),
            "{closure:?}"
        );
        assert!(
            closure.files.contains(&dir.join("sub/deep/libhakob.so")),
            "{closure:?}"
        );
        assert!(closure.missing.is_empty(), "{:?}", closure.missing);

        // Removing the deep lib makes it missing, named with its requester.
        fs::remove_file(dir.join("sub/deep/libhakob.so")).unwrap();
        let closure = library_closure(&[dir.join("main")], &host_cache()).unwrap();
        assert_eq!(
            closure.missing,
            vec![(dir.join("sub/libhakoa.so"), "libhakob.so".to_string())]
        );

        // find_elf_objects sees the shared object but not the C sources.
        let found = find_elf_objects(dir).unwrap();
        assert!(found.contains(&dir.join("sub/libhakoa.so")), "{found:?}");
        assert!(!found
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "c")));
    }

    #[test]
    fn find_elf_objects_skips_dir_symlinks_and_bounds_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let libc = host_cache().lookup(
            "libc.so.6",
            ElfClassMachine {
                is_64: cfg!(target_pointer_width = "64"),
                machine: if cfg!(target_arch = "aarch64") {
                    EM_AARCH64
                } else {
                    EM_X86_64
                },
            },
        );
        let Some(libc) = libc else {
            eprintln!("skipped: no libc.so.6 in the host's ld.so.cache");
            return;
        };
        fs::create_dir_all(dir.join("pkg/numpy.libs")).unwrap();
        fs::copy(&libc, dir.join("pkg/numpy.libs/libx.so")).unwrap();
        fs::write(dir.join("pkg/readme.txt"), "not elf").unwrap();
        fs::write(dir.join("pkg/short"), "\x7fE").unwrap();
        std::os::unix::fs::symlink(dir.join("pkg"), dir.join("pkg/loop")).unwrap();
        let found = find_elf_objects(dir).unwrap();
        assert_eq!(found, vec![dir.join("pkg/numpy.libs/libx.so")]);

        let mut deep = dir.join("deep");
        for _ in 0..=MAX_DEPTH + 1 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        let err = find_elf_objects(dir).unwrap_err();
        assert!(matches!(err, ElfError::TooDeep { .. }), "{err}");
    }
}
