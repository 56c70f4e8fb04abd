//! Validation: every value is checked once, at load time, and the text values become the
//! typed values the runtime uses (syscall numbers, durations). A bad value names its key (or
//! the variable that set it) and where it came from.

use super::env::ORIGIN;
use super::{Config, ConfigError, DEFAULT_API_KEY};
use hako_jail::seccomp::resolve_syscall;
use std::collections::BTreeMap;
use std::time::Duration;

/// Checks `config` and works out its typed values. The first `from_file` entries of
/// `allowed_syscalls` came from the file, the rest from `ALLOWED_SYSCALLS`.
pub(super) fn resolve(
    config: &mut Config,
    origin: &Origins,
    from_file: usize,
) -> Result<(), ConfigError> {
    let (file_syscalls, env_syscalls) = config.allowed_syscalls.split_at(from_file);
    let mut numbers = check_syscalls(file_syscalls, "allowed_syscalls", &origin.file)?;
    numbers.extend(check_syscalls(env_syscalls, "ALLOWED_SYSCALLS", ORIGIN)?);
    normalize(config, &numbers);
    check_values(config, origin)?;
    let interval = config.python_deps_update_interval.trim();
    let deps_update_interval = if interval.is_empty() {
        None
    } else {
        let (key, origin) = origin.describe("python_deps_update_interval");
        let duration = parse_go_duration(interval).map_err(|reason| ConfigError::Invalid {
            key,
            origin,
            value: format!("{interval:?}"),
            reason,
        })?;
        Some(duration)
    };
    config.resolved.deps_update_interval = deps_update_interval;
    Ok(())
}

/// Empty interpreter paths mean the defaults; a syscall named twice is kept once.
fn normalize(c: &mut Config, numbers: &[u32]) {
    let defaults = Config::default();
    if c.python_path.as_os_str().is_empty() {
        c.python_path = defaults.python_path;
    }
    if c.nodejs_path.as_os_str().is_empty() {
        c.nodejs_path = defaults.nodejs_path;
    }
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let mut syscalls = Vec::new();
    for (name, &number) in c.allowed_syscalls.iter().zip(numbers) {
        if seen.insert(name.trim().to_string()) {
            kept.push(name.clone());
            syscalls.push(number);
        }
    }
    c.allowed_syscalls = kept;
    c.resolved.syscalls = syscalls;
}

fn check_values(c: &Config, origin: &Origins) -> Result<(), ConfigError> {
    let invalid = |key: &'static str, value: String, reason: &str| {
        let (key, origin) = origin.describe(key);
        ConfigError::Invalid {
            key,
            origin,
            value,
            reason: reason.to_string(),
        }
    };
    if c.app.port == 0 {
        return Err(invalid(
            "app.port",
            "0".into(),
            "must be a port number from 1 to 65535",
        ));
    }
    if c.app.key.is_empty() {
        return Err(invalid("app.key", "\"\"".into(), "must not be empty"));
    }
    if c.max_workers < 1 {
        return Err(invalid(
            "max_workers",
            c.max_workers.to_string(),
            "must be at least 1",
        ));
    }
    // Each warm Python pool forks its workers from one preloaded parent, whose user namespace
    // holds run ids for that many workers.
    let most = hako_jail::zygote::MAX_WORKERS as usize;
    if c.hako.mode == super::ExecMode::Zygote && c.max_workers > most {
        let reason = format!(
            "must be at most {most} in zygote mode (a warm Python pool's preloaded parent \
             serves at most {most} worker zygotes); lower it, or set hako.mode: spawn"
        );
        return Err(invalid("max_workers", c.max_workers.to_string(), &reason));
    }
    if c.hako.uid_count < super::MIN_UID_COUNT {
        let reason = format!(
            "must be at least {} (spawned runs, zygotes and the Node pool each need their own ids)",
            super::MIN_UID_COUNT
        );
        return Err(invalid(
            "hako.uid_count",
            c.hako.uid_count.to_string(),
            &reason,
        ));
    }
    if c.hako.uid_base == 0 || c.hako.uid_base.checked_add(c.hako.uid_count).is_none() {
        let reason = "must be at least 1 (the id below it owns provisioned data), and \
                      hako.uid_base + hako.uid_count must stay below 2^32";
        return Err(invalid(
            "hako.uid_base",
            c.hako.uid_base.to_string(),
            reason,
        ));
    }
    if c.max_requests < c.max_workers {
        let reason = format!("must be at least max_workers ({})", c.max_workers);
        return Err(invalid("max_requests", c.max_requests.to_string(), &reason));
    }
    if c.worker_timeout < 1 {
        let value = c.worker_timeout.to_string();
        return Err(invalid(
            "worker_timeout",
            value,
            "must be at least 1 (seconds)",
        ));
    }
    let limits = [
        ("hako.limits.memory_mb", c.hako.limits.memory_mb),
        ("hako.limits.pids", c.hako.limits.pids),
        ("hako.limits.tmp_mb", c.hako.limits.tmp_mb),
        ("hako.limits.output_bytes", c.hako.limits.output_bytes),
        ("hako.limits.nofile", c.hako.limits.nofile),
        ("hako.limits.cpu_percent", c.hako.limits.cpu_percent),
        ("hako.max_body_bytes", c.hako.max_body_bytes),
        (
            "hako.http.header_timeout_secs",
            c.hako.http.header_timeout_secs,
        ),
        ("hako.http.idle_timeout_secs", c.hako.http.idle_timeout_secs),
        ("hako.http.max_connections", c.hako.http.max_connections),
    ];
    for (key, value) in limits {
        if value == 0 {
            return Err(invalid(key, "0".into(), "must be greater than 0"));
        }
    }
    for module in &c.hako.python_preload {
        if !is_module_name(module) {
            let reason = "expected a Python module name such as json or numpy";
            return Err(invalid(
                "hako.python_preload",
                format!("{module:?}"),
                reason,
            ));
        }
    }
    Ok(())
}

/// What start-up logs as warnings: settings that work but are probably not meant.
pub(super) fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if c.app.key == DEFAULT_API_KEY {
        out.push(format!(
            "the API key is the public default {DEFAULT_API_KEY:?}: anyone who can reach \
             port {} can run code; set API_KEY (or app.key) to a secret",
            c.app.port
        ));
    }
    if !c.enable_network {
        out.push(
            "enable_network is false: Dify always sends enable_network: true, so every Dify \
             Code and Template node will fail with \"network is disabled\""
                .to_string(),
        );
    }
    if c.hako.insecure {
        out.push(
            "hako.insecure is set: code will run even if seccomp or namespaces are missing"
                .to_string(),
        );
    }
    out
}

/// Which config keys the environment set, and the file they otherwise come from.
pub(super) struct Origins {
    pub file: String,
    /// Config key → environment variable.
    pub env: BTreeMap<&'static str, &'static str>,
}

impl Origins {
    /// The name to show for a key and where its value came from.
    fn describe(&self, key: &'static str) -> (String, String) {
        match self.env.get(key) {
            Some(var) => (var.to_string(), ORIGIN.to_string()),
            None => (key.to_string(), self.file.clone()),
        }
    }
}

fn check_syscalls(list: &[String], key: &str, origin: &str) -> Result<Vec<u32>, ConfigError> {
    list.iter()
        .map(|name| {
            resolve_syscall(name).map_err(|reason| ConfigError::Syscall {
                key: key.to_string(),
                origin: origin.to_string(),
                value: name.clone(),
                reason: Box::new(reason),
            })
        })
        .collect()
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Parses a Go `time.ParseDuration` string such as `30m`, `1h30m`, `1.5s` or `0`.
/// Negative durations are rejected.
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 30m, 1h30m or 90s";
    let s = text.trim().strip_prefix('+').unwrap_or(text.trim());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(EXPECTED.to_string());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| EXPECTED.to_string())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{EXPECTED} (units: ns, us, ms, s, m, h)")),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| EXPECTED.to_string())
}
