//! Network of runs, runtime side: picks the jail's network mode, starts the egress guard
//! (lazily, on the caller's tokio runtime) and gives proxy-mode runs what they need to use it:
//! proxy variables, the Node bootstrap, and the operator's CA bundle.

use crate::config::{Config, NetworkPolicy};
use crate::language::Language;
use hako_jail::netns::EGRESS_PORT;
use hako_jail::spec::{EgressSpec, JailSpec, NetworkMode};
use hako_net::{Guard, GuardConfig, NetLimits, Policy, Upstreams};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("{0}")]
    Policy(#[from] hako_net::PolicyError),
    #[error("{0}")]
    Upstream(#[from] hako_net::UpstreamError),
    #[error("hako.network.ca_file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start the egress guard: {0}")]
    Guard(#[from] hako_net::GuardError),
}

const NODE_BOOTSTRAP: &str = include_str!("node_egress.js");
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where runs see the Node bootstrap and the operator's CA bundle: fixed paths, never the
/// host's (a runtime directory under /tmp would be hidden by the run's own /tmp).
pub const NODE_BOOTSTRAP_IN_JAIL: &str = "/opt/hako/net/node-egress.js";
pub const CA_BUNDLE_IN_JAIL: &str = "/opt/hako/net/ca.pem";

/// The jail network mode of a run.
pub(crate) fn network_mode(config: &Config, enable_network: bool) -> NetworkMode {
    match (enable_network, config.hako.network.mode) {
        (false, _) => NetworkMode::None,
        (true, NetworkPolicy::Proxy) => NetworkMode::Proxy,
        (true, NetworkPolicy::Host) => NetworkMode::Host,
    }
}

/// Everything the executor needs for runs with network.
pub struct Egress {
    config: GuardConfig,
    dir: PathBuf,
    node_bootstrap: PathBuf,
    ca_bundle: Option<PathBuf>,
    guard: Mutex<Option<Arc<Guard>>>,
    next_run: AtomicU64,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("dir", &self.dir).finish()
    }
}

impl Egress {
    /// Validates the network settings and writes the files runs bind (in runtime_dir/net).
    pub fn new(config: &Config) -> Result<Egress, EgressError> {
        let net = &config.hako.network;
        let guard_config = GuardConfig {
            policy: Policy::new(&net.allow, &net.deny)?,
            upstreams: Upstreams::parse(
                &config.proxy.http,
                &config.proxy.https,
                &config.proxy.socks5,
            )?,
            limits: NetLimits {
                max_connections: net.max_connections,
                max_concurrent: net.max_concurrent,
                max_bytes: net.max_bytes,
            },
        };
        let dir = config.hako.runtime_dir.join("net");
        create_private_dir(&dir)?;
        let node_bootstrap =
            write_by_content(&dir, "node-egress", "js", NODE_BOOTSTRAP.as_bytes())?;
        let ca_bundle = if net.ca_file.as_os_str().is_empty() {
            None
        } else {
            let extra = std::fs::read(&net.ca_file).map_err(|source| EgressError::CaFile {
                path: net.ca_file.clone(),
                source,
            })?;
            let mut bundle = std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default();
            bundle.push(b'\n');
            bundle.extend_from_slice(&extra);
            Some(write_by_content(&dir, "ca", "pem", &bundle)?)
        };
        Ok(Egress {
            config: guard_config,
            dir,
            node_bootstrap,
            ca_bundle,
            guard: Mutex::new(None),
            next_run: AtomicU64::new(0),
        })
    }

    /// Prepares a run's spec for its network mode. Starts the guard on first use, so it must
    /// be called inside the tokio runtime that will serve it.
    pub(crate) fn attach(
        &self,
        spec: &mut JailSpec,
        language: Language,
        request_id: &str,
    ) -> Result<(), EgressError> {
        self.bind_files(spec, language);
        if spec.network == NetworkMode::None {
            return Ok(());
        }
        if self.ca_bundle.is_some() {
            for var in [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
            ] {
                spec.env.push((var.into(), CA_BUNDLE_IN_JAIL.into()));
            }
        }
        if spec.network == NetworkMode::Host {
            let resolv = Path::new("/etc/resolv.conf");
            if resolv.exists() {
                spec.ro_binds.push(resolv.to_path_buf());
            }
            return Ok(());
        }
        let guard = self.guard()?;
        let n = self.next_run.fetch_add(1, Ordering::Relaxed);
        spec.egress = Some(EgressSpec {
            socket: guard.socket_path().to_path_buf(),
            run_id: format!("{request_id}#{n}"),
        });
        let url = format!("http://127.0.0.1:{EGRESS_PORT}");
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            spec.env.push((var.into(), url.clone()));
        }
        // nltk's downloader refuses a proxied urlopen unless told it is expected.
        spec.env
            .push(("NLTK_ALLOW_PROXIED_URLOPEN".into(), "1".into()));
        if language == Language::Nodejs {
            let code = spec.code_path.to_string_lossy().into_owned();
            let at = spec.args.iter().position(|a| *a == code).unwrap_or(0);
            let require = ["--require".to_string(), NODE_BOOTSTRAP_IN_JAIL.to_string()];
            spec.args.splice(at..at, require);
        }
        Ok(())
    }

    /// Binds the files runs with network read at their fixed jail paths. Every run of the
    /// language gets them, with or without network, so that warm workers made for one fit
    /// the other (their binds are compared).
    pub(crate) fn bind_files(&self, spec: &mut JailSpec, language: Language) {
        let mut files = Vec::new();
        if language == Language::Nodejs {
            files.push((self.node_bootstrap.clone(), NODE_BOOTSTRAP_IN_JAIL));
        }
        if let Some(bundle) = &self.ca_bundle {
            files.push((bundle.clone(), CA_BUNDLE_IN_JAIL));
        }
        for (src, at) in files {
            let bind = (src, PathBuf::from(at));
            if !spec.mapped_binds.contains(&bind) {
                spec.mapped_binds.push(bind);
            }
        }
    }

    /// Stops the guard (if it was started) and removes its socket.
    pub fn stop(&self) {
        let guard = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(guard) = guard {
            let _ = std::fs::remove_file(guard.socket_path());
        }
    }

    fn guard(&self) -> Result<Arc<Guard>, EgressError> {
        let mut slot = self.guard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(guard) = slot.as_ref() {
            return Ok(guard.clone());
        }
        remove_stale_sockets(&self.dir);
        let path = self.dir.join(format!("guard-{}.sock", std::process::id()));
        let guard = Arc::new(Guard::start(self.config.clone(), path)?);
        *slot = Some(guard.clone());
        Ok(guard)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), EgressError> {
    use std::os::unix::fs::PermissionsExt;
    let write = |source| EgressError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write)?;
    // Runs read the bound files through their own bind mounts; others need nothing here.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(write)
}

/// Writes `bytes` to `dir/<stem>-<hash>.<ext>` atomically (concurrent processes write the
/// same content) and returns the path.
fn write_by_content(
    dir: &Path,
    stem: &str,
    ext: &str,
    bytes: &[u8],
) -> Result<PathBuf, EgressError> {
    use std::os::unix::fs::PermissionsExt;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{stem}-{hash:016x}.{ext}"));
    if std::fs::read(&path).is_ok_and(|existing| existing == bytes) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{stem}-{}.tmp", std::process::id()));
    let write = |source| EgressError::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(write)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(write)?;
    std::fs::rename(&tmp, &path).map_err(write)?;
    Ok(path)
}

/// Guard sockets of processes that are gone (the CLI exits without cleaning up).
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("guard-")
            .and_then(|r| r.strip_suffix(".sock"))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.hako.runtime_dir = dir.to_path_buf();
        c
    }

    #[test]
    fn modes_follow_the_request_and_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        assert_eq!(network_mode(&c, false), NetworkMode::None);
        assert_eq!(network_mode(&c, true), NetworkMode::Proxy);
        c.hako.network.mode = NetworkPolicy::Host;
        assert_eq!(network_mode(&c, true), NetworkMode::Host);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.hako.network.allow = vec!["10.0.0.0/99".into()];
        assert!(Egress::new(&c)
            .unwrap_err()
            .to_string()
            .contains("hako.network.allow"));
        let mut c = config(dir.path());
        c.proxy.socks5 = "http://x".into();
        assert!(Egress::new(&c)
            .unwrap_err()
            .to_string()
            .contains("proxy.socks5"));
        let mut c = config(dir.path());
        c.hako.network.ca_file = dir.path().join("missing.pem");
        assert!(Egress::new(&c)
            .unwrap_err()
            .to_string()
            .contains("hako.network.ca_file"));
    }

    #[test]
    fn files_are_named_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_by_content(dir.path(), "x", "js", b"one").unwrap();
        assert_eq!(a, write_by_content(dir.path(), "x", "js", b"one").unwrap());
        assert_ne!(a, write_by_content(dir.path(), "x", "js", b"two").unwrap());
    }
}
