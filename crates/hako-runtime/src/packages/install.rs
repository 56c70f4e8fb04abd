//! Building an environment: the requirement set, its key, and the installer run.

use super::*;

impl PackageManager {
    /// The requirement set of `language`; `None` when there is nothing to install.
    pub(super) fn inputs(&self, language: Language) -> Result<Option<Inputs>, PackageError> {
        let (interpreter, requirements_path, defaults) = match language {
            Language::Python3 => (
                &self.inner.python,
                &self.inner.python_requirements,
                DEFAULT_PYTHON_PACKAGES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
            Language::Nodejs => (&self.inner.node, &self.inner.node_requirements, Vec::new()),
        };
        let requirements = match fs::read_to_string(requirements_path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(PackageError::Requirements {
                    path: requirements_path.clone(),
                    source,
                })
            }
        };
        if language == Language::Nodejs && requirement_lines(&requirements).is_empty() {
            return Ok(None);
        }
        let (interpreter, version) = interpreter
            .clone()
            .map_err(|reason| PackageError::NoInterpreter { language, reason })?;
        let data = match language {
            Language::Python3 => serde_json::to_string(&self.inner.python_data).unwrap_or_default(),
            Language::Nodejs => String::new(),
        };
        // The key names what is installed: comments, blank lines and spacing change nothing
        // (a requirements file of comments only is the image's pre-installed set).
        let mut hash = Fnv::new();
        for part in [
            language.as_str(),
            &interpreter.to_string_lossy(),
            &version,
            &requirement_lines(&requirements).join("\n"),
            &defaults.join("\n"),
            &data,
        ] {
            hash.write(part.as_bytes());
            hash.write(&[0]);
        }
        let requirements_path =
            std::path::absolute(requirements_path).unwrap_or_else(|_| requirements_path.clone());
        Ok(Some(Inputs {
            language,
            key: format!("{:016x}", hash.finish()),
            interpreter,
            interpreter_version: version,
            requirements_path,
            requirements,
            defaults,
        }))
    }

    /// Installs into a temporary directory next to `dir` and renames it into place.
    pub(super) fn build(&self, inputs: &Inputs, dir: &Path) -> Result<(), PackageError> {
        let parent = self.language_dir(inputs.language);
        create_dirs(&parent)?;
        let tmp = parent.join(format!(".build-{}-{}", inputs.key, std::process::id()));
        if tmp.exists() {
            remove_dir(&tmp)?;
        }
        create_dirs(&tmp)?;
        let result = self.install(inputs, &tmp).and_then(|()| {
            let content = tmp.join(content_name(inputs.language));
            create_dirs(&content)?;
            let data_env = self.provision(inputs, &tmp, &content)?;
            open_permissions(&tmp)?;
            let (system_libs, missing_libraries) = system_libraries(&content)?;
            let manifest = Manifest {
                key: inputs.key.clone(),
                language: inputs.language,
                interpreter: inputs.interpreter.clone(),
                interpreter_version: inputs.interpreter_version.clone(),
                requirements: inputs.requirements.clone(),
                defaults: inputs.defaults.clone(),
                system_libs,
                missing_libraries,
                data_env,
            };
            let text =
                serde_json::to_vec_pretty(&manifest).map_err(|e| PackageError::Manifest {
                    path: tmp.join(MANIFEST),
                    detail: e.to_string(),
                })?;
            write(&tmp.join(MANIFEST), &text)?;
            match fs::rename(&tmp, dir) {
                Ok(()) => Ok(()),
                // Another process finished the same key first; use its copy.
                Err(_) if dir.join(MANIFEST).is_file() => remove_dir(&tmp),
                Err(source) => Err(PackageError::Io {
                    path: dir.to_path_buf(),
                    source,
                }),
            }
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Builds the library caches and copies the operator's data into a Python build; returns
    /// the variables runs get.
    pub(super) fn provision(
        &self,
        inputs: &Inputs,
        tmp: &Path,
        content: &Path,
    ) -> Result<Vec<(String, String)>, PackageError> {
        if inputs.language != Language::Python3 {
            return Ok(Vec::new());
        }
        let data = &self.inner.python_data;
        crate::provision::build_caches(&inputs.interpreter, tmp, content, PYTHON_SITE)?;
        crate::provision::provision_data(&inputs.interpreter, tmp, data)?;
        crate::provision::hand_data_to(tmp, self.inner.data_owner)?;
        Ok(crate::provision::data_variables(tmp, data))
    }

    pub(super) fn install(&self, inputs: &Inputs, tmp: &Path) -> Result<(), PackageError> {
        let cache = self.inner.state_dir.join("cache");
        let (tool, mut command) = match inputs.language {
            Language::Python3 => {
                let mut command = Command::new(&inputs.interpreter);
                command
                    .args(["-m", "pip", "install", "--no-input", "--no-user"])
                    .args(["--disable-pip-version-check", "--progress-bar", "off"])
                    .args(["--no-warn-script-location", "--target"])
                    .arg(tmp.join(content_name(Language::Python3)));
                if !self.inner.pip_index_url.is_empty() {
                    command.args(["--index-url", &self.inner.pip_index_url]);
                }
                if !inputs.requirements.trim().is_empty() {
                    command.arg("-r").arg(&inputs.requirements_path);
                }
                command.args(&inputs.defaults);
                if std::env::var_os("PIP_CACHE_DIR").is_none() {
                    command.env("PIP_CACHE_DIR", cache.join("pip"));
                }
                ("pip", command)
            }
            Language::Nodejs => {
                let npm = inputs
                    .interpreter
                    .parent()
                    .map(|d| d.join("npm"))
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("npm"));
                let mut command = Command::new(npm);
                command
                    .args(["install", "--prefix"])
                    .arg(tmp)
                    .args([
                        "--no-audit",
                        "--no-fund",
                        "--omit=dev",
                        "--no-update-notifier",
                    ])
                    .args(requirement_lines(&inputs.requirements));
                if std::env::var_os("npm_config_cache").is_none() {
                    command.env("npm_config_cache", cache.join("npm"));
                }
                if let Some(bin) = inputs.interpreter.parent() {
                    // npm's `#!/usr/bin/env node` finds the configured node first.
                    let path = std::env::var("PATH").unwrap_or_default();
                    command.env("PATH", format!("{}:{path}", bin.display()));
                }
                ("npm", command)
            }
        };
        let program = command.get_program().to_string_lossy().into_owned();
        let output = command
            .current_dir(tmp)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| PackageError::Spawn { program, source })?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        if text.trim().is_empty() {
            text = String::from_utf8_lossy(&output.stdout).into_owned();
        }
        Err(PackageError::Install {
            tool,
            requirements: inputs.requirements_path.clone(),
            status: output.status.to_string(),
            output: tail(text.trim(), ERROR_TAIL),
        })
    }
}

/// The requirements of a pip or npm file, one per line, trimmed; `#` starts a comment at
/// the line start or after a space (a `#` inside a spec, as in `user/repo#tag` or
/// `git+https://...#egg=name`, is kept), and blank lines are dropped.
pub(super) fn requirement_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let line = line.trim();
            let line = if line.starts_with('#') {
                ""
            } else {
                line.split(" #").next().unwrap_or_default()
            };
            line.trim().to_string()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The last `max` bytes of `text`, on a character boundary.
pub(super) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// FNV-1a, 64 bits: a stable name for a requirement set (stable across toolchains, unlike
/// std's hasher). Inputs are trusted; the manifest keeps them for inspection.
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(super) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub(super) fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_lines_skip_comments_and_keep_git_refs() {
        let text = "# tools\nlodash@4\n\n  dayjs # dates\nuser/repo#v1\n";
        assert_eq!(
            requirement_lines(text),
            vec!["lodash@4", "dayjs", "user/repo#v1"]
        );
        let pip = "requests==2.32.3  # http\ngit+https://example.com/x.git#egg=x\n";
        assert_eq!(
            requirement_lines(pip),
            vec!["requests==2.32.3", "git+https://example.com/x.git#egg=x"]
        );
        assert!(requirement_lines("# only comments\n\n   \n# more\n").is_empty());
    }

    /// The Python environment key a manager gets for `requirements` (`None`: no file).
    fn python_key(requirements: Option<&str>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python-requirements.txt");
        if let Some(text) = requirements {
            std::fs::write(&path, text).unwrap();
        }
        let mut config = Config::default();
        config.hako.state_dir = dir.path().join("state");
        config.hako.python_requirements = path;
        let python = Ok((PathBuf::from("/usr/bin/python3"), "3.11.2".to_string()));
        let manager = PackageManager::new(&config, python, Err("none".into()));
        manager.inputs(Language::Python3).unwrap().unwrap().key
    }

    #[test]
    fn comments_and_spacing_do_not_change_the_environment_key() {
        let absent = python_key(None);
        assert_eq!(python_key(Some("")), absent);
        // A file of comments only (as the Kubernetes ConfigMap ships) is the image's set.
        assert_eq!(python_key(Some("# extra packages\n\n# none yet\n")), absent);
        assert_eq!(
            python_key(Some("  numpy   # arrays\n\npandas\n")),
            python_key(Some("numpy\npandas"))
        );
        assert_ne!(python_key(Some("numpy\n")), absent);
        assert_ne!(
            python_key(Some("numpy\n")),
            python_key(Some("numpy==2.0\n"))
        );
    }

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("ééé", 3), "...é");
    }
}
