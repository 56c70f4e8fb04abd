//! Language adapters: what each interpreter needs inside the jail (files, arguments,
//! environment), discovered once at start-up from the interpreter itself.

use crate::language::Language;
use hako_elf::closure::{self as elf, find_elf_objects};
use hako_elf::ldcache::LdCache;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("interpreter {path} not found or not executable; set {key} in conf/config.yaml")]
    Missing { path: PathBuf, key: &'static str },
    #[error("could not query {path}: {detail}")]
    Query { path: PathBuf, detail: String },
    #[error("shared-library closure of {language}: {source}")]
    Closure {
        language: Language,
        source: elf::ElfError,
    },
}

/// Where the program text lives inside the jail.
pub const CODE_DIR: &str = "/sandbox";

/// Everything needed to start one language inside the jail.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub language: Language,
    /// Interpreter path (same inside and outside the jail).
    pub interpreter: PathBuf,
    pub version: String,
    /// Host paths bound read-only.
    pub ro_binds: Vec<PathBuf>,
    /// Sonames no object could resolve (reported by `hako doctor`).
    pub missing_libraries: Vec<String>,
}

/// Files every run gets: CA certificates, time zones, and the system's fonts with the
/// fontconfig configuration (all read-only; docs/packages.md says how to add fonts). The
/// fontconfig cache under /var is left out: no part of /var is in the jail.
fn shared_data_paths() -> Vec<PathBuf> {
    [
        "/etc/ssl/certs",
        "/usr/share/ca-certificates",
        "/usr/lib/ssl",
        "/usr/share/zoneinfo",
        "/etc/localtime",
        "/usr/share/fonts",
        "/usr/local/share/fonts",
        "/etc/fonts",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

impl Adapter {
    pub(crate) fn discover(
        language: Language,
        interpreter: &Path,
    ) -> Result<Adapter, AdapterError> {
        match language {
            Language::Python3 => discover_python(interpreter),
            Language::Nodejs => discover_node(interpreter),
        }
    }

    pub fn code_path(&self) -> PathBuf {
        match self.language {
            Language::Python3 => PathBuf::from(CODE_DIR).join("main.py"),
            Language::Nodejs => PathBuf::from(CODE_DIR).join("main.js"),
        }
    }

    /// Interpreter arguments (after argv[0]).
    pub fn args(&self, memory_bytes: u64) -> Vec<String> {
        let code = self.code_path().to_string_lossy().into_owned();
        match self.language {
            // -s: no user site; -B: nothing is written next to sources.
            Language::Python3 => vec!["-s".into(), "-B".into(), code],
            Language::Nodejs => {
                // Keep V8's heap inside the memory limit so an overrun is a JS error first.
                let heap_mb = (memory_bytes >> 20) * 3 / 4;
                vec![format!("--max-old-space-size={}", heap_mb.max(16)), code]
            }
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", hako_jail::mounts::RUN_HOME),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("TZ", "UTC"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if self.language == Language::Python3 {
            env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
            env.push(("PYTHONIOENCODING".into(), "utf-8".into()));
            env.push(("MPLCONFIGDIR".into(), "/tmp/matplotlib".into()));
        }
        env
    }
}

fn check_executable(path: &Path, key: &'static str) -> Result<PathBuf, AdapterError> {
    let real = std::fs::canonicalize(path).map_err(|_| AdapterError::Missing {
        path: path.to_path_buf(),
        key,
    })?;
    if !real.is_file() {
        return Err(AdapterError::Missing {
            path: path.to_path_buf(),
            key,
        });
    }
    Ok(real)
}

fn query(path: &Path, args: &[&str]) -> Result<String, AdapterError> {
    let out = Command::new(path)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .map_err(|e| AdapterError::Query {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(AdapterError::Query {
            path: path.to_path_buf(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const PYTHON_QUERY: &str = "import sys, sysconfig\n\
print(sys.version.split()[0])\n\
print(sysconfig.get_path('stdlib'))\n\
print(sysconfig.get_path('platstdlib'))\n\
print(sysconfig.get_config_var('DESTSHARED') or '')\n";

fn discover_python(interpreter: &Path) -> Result<Adapter, AdapterError> {
    let real = check_executable(interpreter, "python_path")?;
    let text = query(interpreter, &["-I", "-c", PYTHON_QUERY])?;
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default().to_string();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for line in lines {
        let p = PathBuf::from(line.trim());
        if !line.trim().is_empty() && p.is_dir() {
            dirs.insert(p);
        }
    }
    let mut binds: Vec<PathBuf> = vec![interpreter.to_path_buf(), real.clone()];
    let mut objects = vec![real.clone()];
    for dir in &dirs {
        binds.push(dir.clone());
        objects.extend(
            find_elf_objects(dir).map_err(|source| AdapterError::Closure {
                language: Language::Python3,
                source,
            })?,
        );
    }
    finish(Language::Python3, interpreter, version, binds, &objects)
}

fn discover_node(interpreter: &Path) -> Result<Adapter, AdapterError> {
    let real = check_executable(interpreter, "nodejs_path")?;
    let version = query(interpreter, &["--version"])?
        .trim()
        .trim_start_matches('v')
        .to_string();
    let binds = vec![interpreter.to_path_buf(), real.clone()];
    finish(Language::Nodejs, interpreter, version, binds, &[real])
}

fn finish(
    language: Language,
    interpreter: &Path,
    version: String,
    mut binds: Vec<PathBuf>,
    objects: &[PathBuf],
) -> Result<Adapter, AdapterError> {
    let cache = LdCache::load(Path::new("/etc/ld.so.cache")).unwrap_or_else(|_| LdCache::empty());
    let closure = elf::library_closure(objects, &cache)
        .map_err(|source| AdapterError::Closure { language, source })?;
    binds.extend(closure.files);
    binds.extend(shared_data_paths());
    binds.sort();
    binds.dedup();
    Ok(Adapter {
        language,
        interpreter: interpreter.to_path_buf(),
        version,
        ro_binds: binds,
        missing_libraries: closure
            .missing
            .into_iter()
            .map(|(_, soname)| soname)
            .collect(),
    })
}
