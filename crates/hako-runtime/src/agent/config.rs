//! Configuration of the agent API (`hako.agent` in conf/config.yaml).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentConfig {
    /// Largest total of a run's input files, and of the files it returns (also the largest
    /// session file moved in or out). Input files also count against `hako.limits.tmp_mb`.
    pub files_max_bytes: u64,
    /// Sessions alive at once on this replica.
    pub max_sessions: usize,
    /// Total memory limit of all sessions of this replica, in MiB.
    pub sessions_memory_mb: u64,
    /// A session unused this long (seconds) is closed; a request may ask for less.
    pub session_idle_s: u64,
    /// A session is closed this long (seconds) after it started, used or not.
    pub session_lifetime_s: u64,
    /// This replica's name in session ids (default: the host name, e.g. the pod name).
    pub replica: String,
    /// How to reach another replica: a URL with `{replica}` in it, e.g.
    /// `http://{replica}.hako-headless:8194`. Empty: sessions of other replicas are 404.
    pub peer_url: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            files_max_bytes: 16 << 20,
            max_sessions: 16,
            sessions_memory_mb: 4096,
            session_idle_s: 600,
            session_lifetime_s: 3600,
            replica: String::new(),
            peer_url: String::new(),
        }
    }
}

impl AgentConfig {
    /// This replica's name: the configured one, else the host name, made safe for an id.
    pub fn replica_name(&self) -> String {
        let name = if self.replica.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            self.replica.clone()
        };
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
            .take(63)
            .collect();
        if safe.is_empty() {
            "hako".into()
        } else {
            safe
        }
    }

    /// Applies `HAKO_AGENT_*` variables from `vars`; a bad number names its variable.
    pub fn apply_env(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(), (&'static str, String)> {
        fn number<T: std::str::FromStr>(
            name: &'static str,
            value: Option<String>,
            into: &mut T,
        ) -> Result<(), (&'static str, String)> {
            if let Some(v) = value {
                *into = v.trim().parse().map_err(|_| (name, v))?;
            }
            Ok(())
        }
        let n = "HAKO_AGENT_FILES_MAX_BYTES";
        number(n, var(n), &mut self.files_max_bytes)?;
        let n = "HAKO_AGENT_MAX_SESSIONS";
        number(n, var(n), &mut self.max_sessions)?;
        let n = "HAKO_AGENT_SESSIONS_MEMORY_MB";
        number(n, var(n), &mut self.sessions_memory_mb)?;
        let n = "HAKO_AGENT_SESSION_IDLE_S";
        number(n, var(n), &mut self.session_idle_s)?;
        let n = "HAKO_AGENT_SESSION_LIFETIME_S";
        number(n, var(n), &mut self.session_lifetime_s)?;
        if let Some(v) = var("HAKO_AGENT_REPLICA") {
            self.replica = v;
        }
        if let Some(v) = var("HAKO_AGENT_PEER_URL") {
            self.peer_url = v;
        }
        Ok(())
    }
}
