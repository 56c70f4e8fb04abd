//! Environments on disk: loading a finished environment, the packages it holds, garbage
//! collection and the file-system helpers of a build.

use super::*;

impl PackageManager {
    /// Keeps the newest [`KEEP_ENVS`] environments and any a run may still use; removes
    /// the rest, and builds abandoned by a process that no longer exists.
    pub(super) fn collect_garbage(&self, language: Language) {
        let dir = self.language_dir(language);
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let live: Vec<String> = {
            let mut loaded = self
                .slot(language)
                .loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            loaded.retain(|_, weak| weak.strong_count() > 0);
            loaded.keys().cloned().collect()
        };
        let mut finished: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == FAILED {
                continue;
            }
            if let Some(rest) = name.strip_prefix(".build-") {
                let pid = rest.rsplit('-').next().unwrap_or_default();
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(&path);
                }
                continue;
            }
            let modified = fs::metadata(path.join(MANIFEST))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            finished.push((modified, path));
        }
        finished.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
        for (_, path) in finished.into_iter().skip(KEEP_ENVS) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| live.contains(&n)) {
                continue;
            }
            tracing::info!(path = %path.display(), "removing old package environment");
            if let Err(err) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove old package environment");
            }
        }
    }
}

pub(super) fn content_name(language: Language) -> &'static str {
    match language {
        Language::Python3 => "site-packages",
        Language::Nodejs => "node_modules",
    }
}

pub(super) fn load_env(language: Language, dir: &Path) -> Result<Env, PackageError> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).map_err(|source| PackageError::Io {
        path: path.clone(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| PackageError::Manifest {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let content = dir.join(content_name(language));
    let packages = match language {
        Language::Python3 => python_packages(&content),
        Language::Nodejs => node_packages(&content),
    };
    Ok(Env {
        language,
        key: manifest.key,
        dir: dir.to_path_buf(),
        content,
        packages,
        // A library removed from the host since the build is skipped, not fatal.
        system_libs: manifest
            .system_libs
            .into_iter()
            .filter(|p| p.exists())
            .collect(),
        missing_libraries: manifest.missing_libraries,
        data_env: manifest.data_env,
        prepared_dirs: [
            (crate::provision::SEED_DIR, hako_jail::mounts::SEED_IN_JAIL),
            (crate::provision::DATA_DIR, crate::provision::DATA_IN_JAIL),
        ]
        .into_iter()
        .filter(|(name, _)| dir.join(name).is_dir())
        .map(|(name, at)| (dir.join(name), PathBuf::from(at)))
        .collect(),
    })
}

/// Host libraries the environment's ELF objects need, and the sonames nothing provides.
/// Files inside the environment are reachable through its own bind.
pub(super) fn system_libraries(
    content: &Path,
) -> Result<(Vec<PathBuf>, Vec<String>), PackageError> {
    let closure_err = |source| PackageError::Closure {
        path: content.to_path_buf(),
        source,
    };
    let objects = find_elf_objects(content).map_err(closure_err)?;
    let cache = LdCache::load(Path::new("/etc/ld.so.cache")).unwrap_or_else(|_| LdCache::empty());
    let closure = elf::library_closure(&objects, &cache).map_err(closure_err)?;
    let libs = closure
        .files
        .into_iter()
        .filter(|p| !p.starts_with(content))
        .collect();
    // A library bundled in the environment but needed by an object without RPATH (e.g.
    // scipy.libs' libgfortran) is found at run time through its loader's RPATH.
    let bundled: std::collections::HashSet<_> =
        objects.iter().filter_map(|p| p.file_name()).collect();
    let mut missing: Vec<String> = closure
        .missing
        .into_iter()
        .map(|(_, soname)| soname)
        .filter(|soname| !bundled.contains(std::ffi::OsStr::new(soname)))
        .collect();
    missing.sort();
    missing.dedup();
    Ok((libs, missing))
}

/// Names and versions from every `*.dist-info/METADATA`.
pub(super) fn python_packages(site: &Path) -> Vec<Package> {
    let mut packages = Vec::new();
    let Ok(entries) = fs::read_dir(site) else {
        return packages;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().ends_with(".dist-info") {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path().join("METADATA")) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        if let (Some(name), Some(version)) = (field("Name:"), field("Version:")) {
            packages.push(Package { name, version });
        }
    }
    packages.sort_by_key(|p| p.name.to_lowercase());
    packages
}

/// Names and versions from `node_modules/<name>/package.json` (and `@scope/<name>`).
pub(super) fn node_packages(modules: &Path) -> Vec<Package> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(modules).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('@') {
            dirs.extend(
                fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if !name.starts_with('.') {
            dirs.push(entry.path());
        }
    }
    let mut packages: Vec<Package> = dirs
        .iter()
        .filter_map(|dir| {
            let text = fs::read(dir.join("package.json")).ok()?;
            let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
            Some(Package {
                name: json["name"].as_str()?.to_string(),
                version: json["version"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

/// Runs read through binds as another uid: everything must be world-readable, and
/// directories and executables world-searchable, whatever the installer's umask was.
pub(super) fn open_permissions(path: &Path) -> Result<(), PackageError> {
    let io = |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let wanted = if meta.is_dir() || mode & 0o100 != 0 {
        mode | 0o555
    } else {
        mode | 0o444
    };
    if wanted != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(wanted)).map_err(io)?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io)? {
            open_permissions(&entry.map_err(io)?.path())?;
        }
    }
    Ok(())
}

/// Creates `dir` and its parents, each searchable by the runs' uids.
pub(super) fn create_dirs(dir: &Path) -> Result<(), PackageError> {
    fs::create_dir_all(dir).map_err(|source| PackageError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|source| PackageError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn remove_dir(dir: &Path) -> Result<(), PackageError> {
    fs::remove_dir_all(dir).map_err(|source| PackageError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), PackageError> {
    fs::write(path, bytes).map_err(|source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_packages_read_dist_info_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("Jinja2-3.1.4.dist-info");
        fs::create_dir(&info).unwrap();
        fs::write(
            info.join("METADATA"),
            "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.4\n\nName: body\n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("jinja2")).unwrap();
        assert_eq!(
            python_packages(dir.path()),
            vec![Package {
                name: "Jinja2".into(),
                version: "3.1.4".into()
            }]
        );
    }

    #[test]
    fn a_loaded_environment_binds_the_prepared_directories_it_has() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(MANIFEST),
            r#"{"key":"k","language":"python3","interpreter":"/usr/bin/python3",
                "interpreter_version":"3.11","requirements":"","defaults":[],
                "system_libs":[],"missing_libraries":[]}"#,
        )
        .unwrap();
        let load = || {
            load_env(Language::Python3, dir.path())
                .unwrap()
                .prepared_dirs
        };
        assert_eq!(load(), Vec::new());
        fs::create_dir(dir.path().join(crate::provision::DATA_DIR)).unwrap();
        assert_eq!(
            load(),
            [(
                dir.path().join(crate::provision::DATA_DIR),
                PathBuf::from(crate::provision::DATA_IN_JAIL)
            )]
        );
        fs::create_dir(dir.path().join(crate::provision::SEED_DIR)).unwrap();
        assert_eq!(
            load(),
            [
                (
                    dir.path().join(crate::provision::SEED_DIR),
                    PathBuf::from(hako_jail::mounts::SEED_IN_JAIL)
                ),
                (
                    dir.path().join(crate::provision::DATA_DIR),
                    PathBuf::from(crate::provision::DATA_IN_JAIL)
                ),
            ]
        );
    }

    #[test]
    fn node_packages_include_scoped_ones() {
        let dir = tempfile::tempdir().unwrap();
        for (path, json) in [
            ("lodash", r#"{"name":"lodash","version":"4.17.21"}"#),
            (
                "@types/node",
                r#"{"name":"@types/node","version":"20.0.0"}"#,
            ),
        ] {
            fs::create_dir_all(dir.path().join(path)).unwrap();
            fs::write(dir.path().join(path).join("package.json"), json).unwrap();
        }
        fs::create_dir(dir.path().join(".bin")).unwrap();
        let names: Vec<String> = node_packages(dir.path())
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, vec!["@types/node", "lodash"]);
    }
}
