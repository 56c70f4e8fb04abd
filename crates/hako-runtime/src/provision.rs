//! What a Python environment prepares at install time, outside the jail, for runs to read:
//! caches that libraries would otherwise rebuild in every run, and data files the operator
//! lists (NLTK corpora, tiktoken encodings, Hugging Face models).
//!
//! ```text
//! <env>/seed/    bound at /opt/hako/seed; each entry appears in every run's /tmp as a link
//!                (see hako_jail::mounts::SEED_IN_JAIL), e.g. /tmp/matplotlib/fontlist-*.json
//! <env>/data/    bound at /opt/hako/data; the variables libraries read point into it
//! ```

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `<env>/data` appears inside the jail.
pub const DATA_IN_JAIL: &str = "/opt/hako/data";
/// Directory names of an environment.
pub const SEED_DIR: &str = "seed";
pub const DATA_DIR: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("hako.python_data target {target:?} must be a relative path without `..`")]
    Target { target: String },
    #[error("hako.python_data: copy {source_path} to {target}: {source}")]
    Copy {
        source_path: PathBuf,
        target: PathBuf,
        source: std::io::Error,
    },
    #[error("hako.python_data: download {url} failed: {output}")]
    Download { url: String, output: String },
    #[error("build the {library} cache: {output}")]
    Cache { library: String, output: String },
    #[error("start {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("hako.python_data: hand {path} to the data owner: {source}")]
    Owner {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One item of `hako.python_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataItem {
    /// A local file or directory, or an `http(s)://` URL (a single file).
    pub source: String,
    /// Where it goes, relative to /opt/hako/data (e.g. `nltk_data/corpora/stopwords`).
    pub target: String,
    /// A variable set to `/opt/hako/data/<target>` in every run (optional).
    #[serde(default)]
    pub env: String,
}

/// Variables set when `<env>/data/<dir>` exists: the names the libraries read.
const DATA_VARIABLES: [(&str, &str); 3] = [
    ("nltk_data", "NLTK_DATA"),
    ("tiktoken", "TIKTOKEN_CACHE_DIR"),
    ("huggingface", "HF_HOME"),
];

/// Caches built once per environment: (top-level module, code run with the environment on
/// `PYTHONPATH` and `HAKO_SEED` = `<env>/seed`).
const CACHE_BUILDERS: [(&str, &str); 2] = [
    // The font list (matplotlib calls fc-list to make it; runs may not).
    (
        "matplotlib",
        "import os\nos.environ['MPLCONFIGDIR'] = os.path.join(os.environ['HAKO_SEED'], 'matplotlib')\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.font_manager\n",
    ),
    // The prefix dictionary (1-3 s per run otherwise); jieba reads $TMPDIR/jieba.cache.
    (
        "jieba",
        "import os, jieba\njieba.dt.tmp_dir = os.environ['HAKO_SEED']\njieba.initialize()\n",
    ),
];

/// Builds the caches of the libraries installed in `site` into `<env>/seed`. Paths of the
/// build directory in them are rewritten to the jail's (`site_in_jail`).
pub(crate) fn build_caches(
    interpreter: &Path,
    env: &Path,
    site: &Path,
    site_in_jail: &str,
) -> Result<(), ProvisionError> {
    let seed = env.join(SEED_DIR);
    for (module, code) in CACHE_BUILDERS {
        if !site.join(module).is_dir() {
            continue;
        }
        make_dir(&seed)?;
        let home = env.join(".home");
        make_dir(&home)?;
        let output = Command::new(interpreter)
            .args(["-s", "-B", "-c", code])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("PYTHONPATH", site)
            .env("HAKO_SEED", &seed)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ProvisionError::Spawn {
                program: interpreter.to_path_buf(),
                source,
            })?;
        let _ = fs::remove_dir_all(&home);
        if !output.status.success() {
            return Err(ProvisionError::Cache {
                library: module.into(),
                output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
    }
    if seed.is_dir() {
        rewrite_paths(&seed, &site.to_string_lossy(), site_in_jail)?;
    }
    Ok(())
}

/// Replaces `from` with `to` in the text files below `dir` (cache files name font files by
/// absolute path).
fn rewrite_paths(dir: &Path, from: &str, to: &str) -> Result<(), ProvisionError> {
    let copy_err = |path: &Path, source| ProvisionError::Copy {
        source_path: path.to_path_buf(),
        target: path.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(|e| copy_err(dir, e))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rewrite_paths(&path, from, to)?;
        } else if let Ok(text) = fs::read_to_string(&path) {
            if text.contains(from) {
                fs::write(&path, text.replace(from, to)).map_err(|e| copy_err(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Copies or downloads every item into `<env>/data`.
pub(crate) fn provision_data(
    interpreter: &Path,
    env: &Path,
    items: &[DataItem],
) -> Result<(), ProvisionError> {
    for item in items {
        let target = env.join(DATA_DIR).join(clean_target(&item.target)?);
        if let Some(parent) = target.parent() {
            make_dir(parent)?;
        }
        if item.source.starts_with("http://") || item.source.starts_with("https://") {
            download(interpreter, &item.source, &target)?;
        } else {
            copy_tree(Path::new(&item.source), &target)?;
        }
    }
    Ok(())
}

/// The host id that owns provisioned data: the id below `hako.uid_base` (never leased to a
/// run), mapped to root inside the jail. `None` unless hako runs as root.
pub fn data_owner(config: &crate::config::Config) -> Option<u32> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    config
        .hako
        .uid_base
        .checked_sub(1)
        .filter(|id| root && *id > 0)
}

/// Gives `<env>/data` to `owner` and makes it private to its owner (no group or world
/// write bit, no set-id bit): inside the jail it then appears owned by root, as libraries
/// that check who owns their data (nltk 3.10 and newer) require.
pub fn hand_data_to(env: &Path, owner: Option<u32>) -> Result<(), ProvisionError> {
    let (Some(owner), data) = (owner, env.join(DATA_DIR)) else {
        return Ok(());
    };
    if data.exists() {
        hand_tree(&data, owner)?;
    }
    Ok(())
}

fn hand_tree(path: &Path, owner: u32) -> Result<(), ProvisionError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| ProvisionError::Owner {
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::lchown(path, Some(owner), Some(owner)).map_err(err)?;
    let meta = fs::symlink_metadata(path).map_err(err)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o755;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(err)? {
            hand_tree(&entry.map_err(err)?.path(), owner)?;
        }
    }
    Ok(())
}

/// The variables runs get for the data in `<env>/data`.
pub(crate) fn data_variables(env: &Path, items: &[DataItem]) -> Vec<(String, String)> {
    let data = env.join(DATA_DIR);
    let mut vars: Vec<(String, String)> = Vec::new();
    for (dir, var) in DATA_VARIABLES {
        if data.join(dir).exists() {
            vars.push((var.into(), format!("{DATA_IN_JAIL}/{dir}")));
        }
    }
    if data.join("huggingface").exists() {
        vars.push(("HF_HUB_OFFLINE".into(), "1".into()));
    }
    for item in items.iter().filter(|i| !i.env.is_empty()) {
        vars.retain(|(k, _)| *k != item.env);
        let target = item.target.trim_matches('/');
        vars.push((item.env.clone(), format!("{DATA_IN_JAIL}/{target}")));
    }
    vars
}

fn clean_target(target: &str) -> Result<PathBuf, ProvisionError> {
    let path = PathBuf::from(target.trim_end_matches('/'));
    let clean = !target.is_empty()
        && path.is_relative()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if clean {
        Ok(path)
    } else {
        Err(ProvisionError::Target {
            target: target.into(),
        })
    }
}

/// Downloads with the interpreter's urllib (proxy variables of the server apply).
fn download(interpreter: &Path, url: &str, target: &Path) -> Result<(), ProvisionError> {
    const FETCH: &str = "import shutil, sys, urllib.request\nwith urllib.request.urlopen(sys.argv[1], timeout=60) as r, open(sys.argv[2], 'wb') as f:\n    shutil.copyfileobj(r, f)\n";
    let output = Command::new(interpreter)
        .args(["-s", "-B", "-c", FETCH, url])
        .arg(target)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ProvisionError::Spawn {
            program: interpreter.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let _ = fs::remove_file(target);
    Err(ProvisionError::Download {
        url: url.into(),
        output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

fn copy_tree(source: &Path, target: &Path) -> Result<(), ProvisionError> {
    let err = |source_path: &Path, e| ProvisionError::Copy {
        source_path: source_path.to_path_buf(),
        target: target.to_path_buf(),
        source: e,
    };
    let meta = fs::metadata(source).map_err(|e| err(source, e))?;
    if !meta.is_dir() {
        fs::copy(source, target).map_err(|e| err(source, e))?;
        return Ok(());
    }
    make_dir(target)?;
    for entry in fs::read_dir(source).map_err(|e| err(source, e))? {
        let entry = entry.map_err(|e| err(source, e))?;
        copy_tree(&entry.path(), &target.join(entry.file_name()))?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), ProvisionError> {
    fs::create_dir_all(dir).map_err(|source| ProvisionError::Copy {
        source_path: dir.to_path_buf(),
        target: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_inside_the_data_dir() {
        assert!(clean_target("nltk_data/corpora").is_ok());
        for bad in ["", "/etc", "../x", "a/../../b"] {
            assert!(clean_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_data_is_copied_and_named_by_variables() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("corpora/x")).unwrap();
        fs::write(src.path().join("corpora/x/a.txt"), "hi").unwrap();
        let env = tempfile::tempdir().unwrap();
        let items = vec![
            DataItem {
                source: src.path().to_string_lossy().into_owned(),
                target: "nltk_data".into(),
                env: String::new(),
            },
            DataItem {
                source: src
                    .path()
                    .join("corpora/x/a.txt")
                    .to_string_lossy()
                    .into_owned(),
                target: "extra/a.txt".into(),
                env: "EXTRA_FILE".into(),
            },
        ];
        provision_data(Path::new("/usr/bin/python3"), env.path(), &items).unwrap();
        let copied = env.path().join("data/nltk_data/corpora/x/a.txt");
        assert_eq!(fs::read_to_string(copied).unwrap(), "hi");
        assert_eq!(
            data_variables(env.path(), &items),
            vec![
                (
                    "NLTK_DATA".to_string(),
                    "/opt/hako/data/nltk_data".to_string()
                ),
                (
                    "EXTRA_FILE".to_string(),
                    "/opt/hako/data/extra/a.txt".to_string()
                ),
            ]
        );
    }
}
