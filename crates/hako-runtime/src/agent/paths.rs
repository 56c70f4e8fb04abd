//! Checks of the paths, globs and environment a request names.

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?} must be relative to the working directory (/tmp), without `..`, `.` or empty parts")]
    Path(String),
    #[error("return_files pattern {0:?} must be relative, without `..`")]
    Glob(String),
    #[error("env name {0:?} is not allowed (letters, digits and _, not starting with a digit; not LD_* or one hako sets)")]
    EnvName(String),
    #[error("env value of {0} contains a NUL byte")]
    EnvValue(String),
    #[error("too many env entries ({0}; at most {MAX_ENV})")]
    EnvCount(usize),
}

const MAX_PATH: usize = 1024;
pub const MAX_ENV: usize = 64;
/// Variables the adapters set and a request may not change.
const RESERVED: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONHOME",
    "NODE_PATH",
];

fn parts_ok(path: &str, part_ok: impl Fn(&str) -> bool) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && !path.starts_with('/')
        && !path.contains('\0')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && part_ok(p))
}

/// A file path inside the run's working directory.
pub(crate) fn check_path(path: &str) -> Result<(), PathError> {
    if parts_ok(path, |_| true) {
        Ok(())
    } else {
        Err(PathError::Path(path.to_string()))
    }
}

/// A `return_files` glob (`*`, `?` and `**` allowed).
pub(crate) fn check_glob(pattern: &str) -> Result<(), PathError> {
    if parts_ok(pattern, |_| true) {
        Ok(())
    } else {
        Err(PathError::Glob(pattern.to_string()))
    }
}

pub fn check_env<'a>(
    env: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<(), PathError> {
    if env.len() > MAX_ENV {
        return Err(PathError::EnvCount(env.len()));
    }
    for (name, value) in env {
        let mut chars = name.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 128;
        if !well_formed
            || name.starts_with("LD_")
            || name.starts_with("HAKO_")
            || RESERVED.contains(&name.as_str())
        {
            return Err(PathError::EnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(PathError::EnvValue(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_working_directory() {
        for good in ["data.csv", "in/data.csv", "a/b/c.txt", ".hidden"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "a\0b",
            "a\\b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_glob("**/*.png").is_ok());
        assert!(check_glob("../*.png").is_err());
        assert!(check_glob("/tmp/*.png").is_err());
    }

    #[test]
    fn env_names_are_checked() {
        let ok = [("MY_VAR".to_string(), "1".to_string())];
        assert!(check_env(ok.iter().map(|(a, b)| (a, b))).is_ok());
        for bad in [
            "LD_PRELOAD",
            "PATH",
            "1X",
            "A-B",
            "HAKO_SESSION_OUTPUT_BYTES",
            "",
        ] {
            let env = [(bad.to_string(), String::new())];
            assert!(check_env(env.iter().map(|(a, b)| (a, b))).is_err(), "{bad}");
        }
    }
}
