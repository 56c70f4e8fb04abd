//! The environment overlay: one row per variable (variable, key, parser). Dify Sandbox's
//! variables come first, then hako's `HAKO_<KEY>` ones (the key path in capitals, `.` → `_`).
//! docs/configuration.md lists the same variables; a test holds the two together.
//!
//! An empty value (or only spaces) counts as unset, as in Dify Sandbox. A value that does not
//! parse stops loading with an error that names the variable.

use super::types::split_list;
use super::{Config, ConfigError, ExecMode, LogFormat, NetworkPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

/// Where values set by the environment come from, in error messages.
pub(super) const ORIGIN: &str = "environment";

/// One environment variable and the config key it sets.
pub(super) struct EnvVar {
    pub var: &'static str,
    /// The key's path in the file, e.g. `hako.limits.pids`.
    pub key: &'static str,
    /// Sets the key from the variable's (non-empty, untrimmed) value; `Err` says what was
    /// expected.
    pub apply: fn(&mut Config, &str) -> Result<(), &'static str>,
}

/// A row whose parser turns the value into the field's type.
macro_rules! var {
    ($var:literal => $key:literal, $parse:ident, |$c:ident| $field:expr) => {
        EnvVar {
            var: $var,
            key: $key,
            apply: |$c: &mut Config, value: &str| {
                $field = $parse(value)?;
                Ok(())
            },
        }
    };
}

/// Every variable hako reads into its configuration, in the order they are applied.
pub(super) const VARIABLES: &[EnvVar] = &[
    // Dify Sandbox's variables.
    var!("API_KEY" => "app.key", text, |c| c.app.key),
    var!("SANDBOX_PORT" => "app.port", port, |c| c.app.port),
    var!("MAX_WORKERS" => "max_workers", positive, |c| c.max_workers),
    var!("MAX_REQUESTS" => "max_requests", positive, |c| c.max_requests),
    var!("WORKER_TIMEOUT" => "worker_timeout", positive, |c| c.worker_timeout),
    var!("ENABLE_NETWORK" => "enable_network", boolean, |c| c.enable_network),
    var!("ENABLE_PRELOAD" => "enable_preload", boolean, |c| c.enable_preload),
    var!("PYTHON_PATH" => "python_path", path, |c| c.python_path),
    var!("NODEJS_PATH" => "nodejs_path", path, |c| c.nodejs_path),
    var!("PIP_MIRROR_URL" => "python_pip_mirror_url", text, |c| c.python_pip_mirror_url),
    var!("PYTHON_DEPS_UPDATE_INTERVAL" => "python_deps_update_interval", text,
        |c| c.python_deps_update_interval),
    var!("PYTHON_LIB_PATH" => "python_lib_path", list, |c| c.python_lib_path),
    // Added to the file's list (each checked where it came from: see `validate`).
    EnvVar {
        var: "ALLOWED_SYSCALLS",
        key: "allowed_syscalls",
        apply: |c, value| {
            c.allowed_syscalls.extend(split_list(value));
            Ok(())
        },
    },
    var!("HTTP_PROXY" => "proxy.http", text, |c| c.proxy.http),
    var!("HTTPS_PROXY" => "proxy.https", text, |c| c.proxy.https),
    var!("SOCKS5_PROXY" => "proxy.socks5", text, |c| c.proxy.socks5),
    // Before DEBUG, which wins when both are set.
    EnvVar {
        var: "GIN_MODE",
        key: "app.debug",
        apply: |c, value| {
            match value.trim() {
                "release" => c.app.debug = false,
                "debug" => c.app.debug = true,
                "test" => {}
                _ => return Err("release, debug or test"),
            }
            Ok(())
        },
    },
    var!("DEBUG" => "app.debug", boolean, |c| c.app.debug),
    // hako's own section.
    var!("HAKO_STATE_DIR" => "hako.state_dir", path, |c| c.hako.state_dir),
    var!("HAKO_RUNTIME_DIR" => "hako.runtime_dir", path, |c| c.hako.runtime_dir),
    var!("HAKO_MODE" => "hako.mode", exec_mode, |c| c.hako.mode),
    var!("HAKO_PYTHON_PRELOAD" => "hako.python_preload", list, |c| c.hako.python_preload),
    var!("HAKO_PYTHON_WARMUP" => "hako.python_warmup", code, |c| c.hako.python_warmup),
    var!("HAKO_NODEJS_POOL" => "hako.nodejs_pool", integer, |c| c.hako.nodejs_pool),
    var!("HAKO_LIMITS_MEMORY_MB" => "hako.limits.memory_mb", positive,
        |c| c.hako.limits.memory_mb),
    var!("HAKO_LIMITS_PIDS" => "hako.limits.pids", positive, |c| c.hako.limits.pids),
    var!("HAKO_LIMITS_TMP_MB" => "hako.limits.tmp_mb", positive, |c| c.hako.limits.tmp_mb),
    var!("HAKO_LIMITS_OUTPUT_BYTES" => "hako.limits.output_bytes", positive,
        |c| c.hako.limits.output_bytes),
    var!("HAKO_LIMITS_NOFILE" => "hako.limits.nofile", positive, |c| c.hako.limits.nofile),
    var!("HAKO_LIMITS_CPU_PERCENT" => "hako.limits.cpu_percent", positive,
        |c| c.hako.limits.cpu_percent),
    var!("HAKO_NETWORK_MODE" => "hako.network.mode", network_policy, |c| c.hako.network.mode),
    var!("HAKO_NETWORK_ALLOW" => "hako.network.allow", list, |c| c.hako.network.allow),
    var!("HAKO_NETWORK_DENY" => "hako.network.deny", list, |c| c.hako.network.deny),
    var!("HAKO_NETWORK_CA_FILE" => "hako.network.ca_file", path, |c| c.hako.network.ca_file),
    var!("HAKO_NETWORK_MAX_CONNECTIONS" => "hako.network.max_connections", positive,
        |c| c.hako.network.max_connections),
    var!("HAKO_NETWORK_MAX_CONCURRENT" => "hako.network.max_concurrent", positive,
        |c| c.hako.network.max_concurrent),
    var!("HAKO_NETWORK_MAX_BYTES" => "hako.network.max_bytes", positive,
        |c| c.hako.network.max_bytes),
    var!("HAKO_HTTP_HEADER_TIMEOUT_SECS" => "hako.http.header_timeout_secs", positive,
        |c| c.hako.http.header_timeout_secs),
    var!("HAKO_HTTP_IDLE_TIMEOUT_SECS" => "hako.http.idle_timeout_secs", positive,
        |c| c.hako.http.idle_timeout_secs),
    var!("HAKO_HTTP_MAX_CONNECTIONS" => "hako.http.max_connections", positive,
        |c| c.hako.http.max_connections),
    var!("HAKO_HTTP_METRICS_PUBLIC" => "hako.http.metrics_public", boolean,
        |c| c.hako.http.metrics_public),
    var!("HAKO_NODEJS_REQUIREMENTS" => "hako.nodejs_requirements", path,
        |c| c.hako.nodejs_requirements),
    var!("HAKO_PYTHON_REQUIREMENTS" => "hako.python_requirements", path,
        |c| c.hako.python_requirements),
    var!("HAKO_INSECURE" => "hako.insecure", boolean, |c| c.hako.insecure),
    var!("HAKO_LOG_FORMAT" => "hako.log_format", log_format, |c| c.hako.log_format),
    var!("HAKO_MAX_BODY_BYTES" => "hako.max_body_bytes", positive, |c| c.hako.max_body_bytes),
    var!("HAKO_UID_BASE" => "hako.uid_base", integer, |c| c.hako.uid_base),
    var!("HAKO_UID_COUNT" => "hako.uid_count", integer, |c| c.hako.uid_count),
    var!("HAKO_CGROUP_ROOT" => "hako.cgroup_root", path, |c| c.hako.cgroup_root),
    var!("HAKO_PACKAGES_WAIT_SECONDS" => "hako.packages_wait_seconds", seconds,
        |c| c.hako.packages_wait_seconds),
    var!("HAKO_AGENT_FILES_MAX_BYTES" => "hako.agent.files_max_bytes", number,
        |c| c.hako.agent.files_max_bytes),
    var!("HAKO_AGENT_MAX_SESSIONS" => "hako.agent.max_sessions", number,
        |c| c.hako.agent.max_sessions),
    var!("HAKO_AGENT_SESSIONS_MEMORY_MB" => "hako.agent.sessions_memory_mb", number,
        |c| c.hako.agent.sessions_memory_mb),
    var!("HAKO_AGENT_SESSION_IDLE_S" => "hako.agent.session_idle_s", number,
        |c| c.hako.agent.session_idle_s),
    var!("HAKO_AGENT_SESSION_LIFETIME_S" => "hako.agent.session_lifetime_s", number,
        |c| c.hako.agent.session_lifetime_s),
    var!("HAKO_AGENT_REPLICA" => "hako.agent.replica", text, |c| c.hako.agent.replica),
    var!("HAKO_AGENT_PEER_URL" => "hako.agent.peer_url", text, |c| c.hako.agent.peer_url),
];

/// Applies every set variable of `get` to `config`; returns which keys they set (key →
/// variable), so that a later error names the variable.
pub(super) fn apply(
    config: &mut Config,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<&'static str, &'static str>, ConfigError> {
    let mut set = BTreeMap::new();
    for row in VARIABLES {
        let Some(value) = get(row.var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        (row.apply)(config, &value).map_err(|expected| ConfigError::Invalid {
            key: row.var.to_string(),
            origin: ORIGIN.to_string(),
            value: format!("{value:?}"),
            reason: format!("expected {expected}"),
        })?;
        set.insert(row.key, row.var);
    }
    Ok(set)
}

// The parsers: each returns what it expected when the text is not a value of its kind.

fn text(s: &str) -> Result<String, &'static str> {
    Ok(s.trim().to_string())
}

/// Code keeps its spaces and line ends.
fn code(s: &str) -> Result<String, &'static str> {
    Ok(s.to_string())
}

fn path(s: &str) -> Result<PathBuf, &'static str> {
    Ok(PathBuf::from(s.trim()))
}

/// Comma-separated, spaces around items ignored.
fn list(s: &str) -> Result<Vec<String>, &'static str> {
    Ok(split_list(s))
}

fn positive<T: FromStr + Default + PartialEq>(s: &str) -> Result<T, &'static str> {
    let value = s.trim().parse::<T>().ok();
    value
        .filter(|v| *v != T::default())
        .ok_or("a positive integer")
}

fn port(s: &str) -> Result<u16, &'static str> {
    positive(s).map_err(|_| "a port number (1-65535)")
}

fn integer<T: FromStr>(s: &str) -> Result<T, &'static str> {
    s.trim().parse().map_err(|_| "an integer")
}

fn seconds(s: &str) -> Result<u64, &'static str> {
    s.trim().parse().map_err(|_| "an integer (seconds)")
}

fn number<T: FromStr>(s: &str) -> Result<T, &'static str> {
    s.trim().parse().map_err(|_| "a number")
}

fn boolean(s: &str) -> Result<bool, &'static str> {
    parse_bool(s).ok_or("a boolean (true/false, 1/0, yes/no)")
}

fn exec_mode(s: &str) -> Result<ExecMode, &'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "zygote" => Ok(ExecMode::Zygote),
        "spawn" => Ok(ExecMode::Spawn),
        _ => Err("zygote or spawn"),
    }
}

fn network_policy(s: &str) -> Result<NetworkPolicy, &'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "proxy" => Ok(NetworkPolicy::Proxy),
        "host" => Ok(NetworkPolicy::Host),
        _ => Err("proxy or host"),
    }
}

fn log_format(s: &str) -> Result<LogFormat, &'static str> {
    match s.trim().to_ascii_lowercase().as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err("human or json"),
    }
}

/// Go's `strconv.ParseBool` set plus yes/no, case-insensitively.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "y" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const DOC: &str = include_str!("../../../../docs/configuration.md");

    /// The (key, variable) pairs and the keys of the key tables in docs/configuration.md:
    /// rows "| `key` | default | `VARIABLE`, ... | meaning |" before "## Validation".
    fn documented() -> (BTreeSet<(String, String)>, BTreeSet<String>) {
        let tables = DOC.split("## Validation").next().unwrap_or_default();
        let (mut pairs, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for line in tables.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells[1].trim_matches('`').to_string();
            for var in cells[3].split('`').skip(1).step_by(2) {
                if var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    pairs.insert((key.clone(), var.to_string()));
                }
            }
            keys.insert(key);
        }
        (pairs, keys)
    }

    /// The leaf keys of the configuration (`hako.limits.pids`, `allowed_syscalls`, ...).
    fn config_keys() -> BTreeSet<String> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
            match value.as_object() {
                Some(map) => map.iter().for_each(|(name, value)| {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    walk(&path, value, out);
                }),
                None => {
                    out.insert(prefix.to_string());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut out,
        );
        out
    }

    #[test]
    fn the_table_and_the_documentation_list_the_same_variables() {
        let (documented, _) = documented();
        let table: BTreeSet<(String, String)> = VARIABLES
            .iter()
            .map(|row| (row.key.to_string(), row.var.to_string()))
            .collect();
        let undocumented: Vec<_> = table.difference(&documented).collect();
        let unread: Vec<_> = documented.difference(&table).collect();
        assert!(
            undocumented.is_empty() && unread.is_empty(),
            "in the table but not in docs/configuration.md: {undocumented:?}; \
             documented but not in the table: {unread:?}"
        );
    }

    /// The prose list "The complete list of Dify Sandbox environment variables hako reads".
    #[test]
    fn the_documented_dify_list_is_the_tables_dify_rows() {
        let list = DOC
            .split("environment variables hako reads:")
            .nth(1)
            .and_then(|rest| rest.split(".\n").next())
            .unwrap_or_default();
        let documented: BTreeSet<&str> = list.split('`').skip(1).step_by(2).collect();
        let table: BTreeSet<&str> = VARIABLES
            .iter()
            .map(|row| row.var)
            .filter(|var| !var.starts_with("HAKO_"))
            .collect();
        assert_eq!(documented, table);
    }

    #[test]
    fn the_documentation_lists_every_config_key() {
        let (_, documented) = documented();
        let keys = config_keys();
        let undocumented: Vec<_> = keys.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&keys).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "keys not in docs/configuration.md: {undocumented:?}; \
             documented keys the configuration does not have: {unknown:?}"
        );
    }

    /// Each row sets exactly the key it names (and no other).
    #[test]
    fn every_row_sets_the_key_it_names() {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let samples = [
            "7", "true", "false", "spawn", "host", "json", "debug", "/x", "a,b",
        ];
        for row in VARIABLES {
            let mut changed = BTreeSet::new();
            for sample in samples {
                let mut config = Config::default();
                if (row.apply)(&mut config, sample).is_err() {
                    continue;
                }
                let after = serde_json::to_value(&config).unwrap();
                for key in config_keys() {
                    let pointer = format!("/{}", key.replace('.', "/"));
                    if defaults.pointer(&pointer) != after.pointer(&pointer) {
                        changed.insert(key);
                    }
                }
            }
            let want = BTreeSet::from([row.key.to_string()]);
            assert_eq!(changed, want, "{} should set {}", row.var, row.key);
        }
    }
}
