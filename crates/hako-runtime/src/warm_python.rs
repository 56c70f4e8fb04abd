//! The warm Python zygotes of a server: a lean pool (hako's small preload list) and a heavy
//! pool (the package environment too). Each run goes to the pool its imports call for (see
//! [`crate::imports`]); a lean run takes a heavy zygote when no lean one is free.

use crate::imports::{Weight, LEAN_PACKAGES};
use crate::warm::{Finishing, PoolStatus, WarmError, ZygotePool};
use hako_jail::spec::{JailOutcome, JailSpec};
use hako_jail::zygote::RunOrder;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The zygote specs made from one package environment.
pub struct Templates {
    pub heavy: JailSpec,
    pub lean: JailSpec,
    /// The package environment's binds (what the zygotes were made from).
    pub key: Vec<(PathBuf, PathBuf)>,
    /// Top-level modules of the package environment.
    pub environment: BTreeSet<String>,
}

pub struct PythonZygotes {
    lean: ZygotePool,
    heavy: ZygotePool,
    /// The zygote library (built next to the binary).
    pub library: PathBuf,
    environment: Mutex<Arc<BTreeSet<String>>>,
}

impl PythonZygotes {
    pub fn new(helper: PathBuf, count: usize, finishing: Finishing, library: PathBuf) -> Self {
        PythonZygotes {
            lean: ZygotePool::new("lean", helper.clone(), count, finishing.clone()),
            heavy: ZygotePool::new("heavy", helper, count, finishing),
            library,
            environment: Mutex::new(Arc::new(BTreeSet::new())),
        }
    }

    /// Sets what new zygotes of both pools are made of.
    pub fn set_templates(&self, templates: Templates) {
        let bootstrap = hako_jail::zygote::BOOTSTRAP.as_bytes().to_vec();
        *self.lock() = Arc::new(templates.environment);
        self.lean
            .set_template(templates.lean, bootstrap.clone(), templates.key.clone());
        self.heavy
            .set_template(templates.heavy, bootstrap, templates.key);
    }

    /// True when the zygotes were made from `key` (the package environment's binds).
    pub fn made_from(&self, key: &[(PathBuf, PathBuf)]) -> bool {
        self.heavy.made_from(key) && self.lean.made_from(key)
    }

    /// Which pool `code` goes to.
    pub fn weigh(&self, code: &[u8]) -> Weight {
        let environment = self.lock().clone();
        crate::imports::weigh(&String::from_utf8_lossy(code), &environment)
    }

    /// Runs `code` in a zygote of the pool its imports call for (a lean run takes a heavy
    /// zygote when no lean one is free). `Ok(None)`: none was free.
    pub async fn run(
        &self,
        order: &RunOrder,
        code: &[u8],
        cancel: &mut crate::stop::Cancel,
    ) -> Result<Option<JailOutcome>, WarmError> {
        if self.weigh(code) == Weight::Lean {
            match self.lean.run(order, code, cancel).await {
                Ok(None) => {}
                answered => return answered,
            }
        }
        self.heavy.run(order, code, cancel).await
    }

    pub async fn close(&self) {
        self.lean.close().await;
        self.heavy.close().await;
    }

    /// Both pools as one: ready when both are, idle zygotes of both, memory of all.
    pub fn status(&self) -> PoolStatus {
        let (lean, heavy) = (self.lean.status(), self.heavy.status());
        PoolStatus {
            warmed: lean.warmed && heavy.warmed,
            failed_starts: lean.failed_starts + heavy.failed_starts,
            start_error: heavy.start_error.or(lean.start_error),
            idle: lean.idle + heavy.idle,
            node_idle: 0,
            zygote_rss_bytes: [lean.zygote_rss_bytes, heavy.zygote_rss_bytes].concat(),
            zygote_pss_bytes: lean.zygote_pss_bytes + heavy.zygote_pss_bytes,
            skipped_preload: heavy.skipped_preload,
            pools: [lean.pools, heavy.pools].concat(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<BTreeSet<String>>> {
        self.environment
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The heavy preload: the operator's list plus the environment's top-level modules.
pub fn heavy_preload(operator: &[String], environment: &BTreeSet<String>) -> Vec<String> {
    let mut preload = operator.to_vec();
    for module in environment {
        if !preload.contains(module) {
            preload.push(module.clone());
        }
    }
    preload
}

/// The lean preload: the operator's modules that are not of the environment, plus the
/// [`LEAN_PACKAGES`] that are installed.
pub fn lean_preload(operator: &[String], environment: &BTreeSet<String>) -> Vec<String> {
    let top = |m: &str| m.split('.').next().unwrap_or(m).to_string();
    let mut preload: Vec<String> = operator
        .iter()
        .filter(|m| !environment.contains(&top(m)) || LEAN_PACKAGES.contains(&top(m).as_str()))
        .cloned()
        .collect();
    for package in LEAN_PACKAGES {
        if environment.contains(*package) && !preload.iter().any(|m| m == package) {
            preload.push(package.to_string());
        }
    }
    preload
}

/// The lean zygote's spec: the heavy one's with the lean preload and no warm-up code (the
/// operator's warm-up may import anything).
pub fn lean_spec(heavy: &JailSpec, lean_preload: &[String]) -> Result<JailSpec, serde_json::Error> {
    let mut spec = heavy.clone();
    let preload = serde_json::to_string(lean_preload)?;
    for (name, value) in spec.env.iter_mut() {
        match name.as_str() {
            "HAKO_PRELOAD" => *value = preload.clone(),
            "HAKO_PYTHON_WARMUP" => value.clear(),
            _ => {}
        }
    }
    // Its own id range: the leases of both pools start apart.
    spec.ids.host_uid += LEAN_ID_OFFSET;
    spec.ids.host_gid += LEAN_ID_OFFSET;
    Ok(spec)
}

/// Where the lean pool's id hints start, above the heavy pool's.
const LEAN_ID_OFFSET: u32 = 1 << 15;

/// Proportional memory (shared pages split between the processes sharing them) of `pid` and
/// its descendants, in bytes.
pub fn pss_of_tree(pid: i32) -> u64 {
    let own = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .map(pss_of_tree)
        .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_lean_preload_leaves_the_environment_out_but_jinja2() {
        let environment = set(&["jinja2", "markupsafe", "numpy", "requests"]);
        let operator = vec!["json".to_string(), "numpy".into(), "os.path".into()];
        assert_eq!(
            lean_preload(&operator, &environment),
            ["json", "os.path", "jinja2", "markupsafe"]
        );
        assert_eq!(
            heavy_preload(&operator, &environment),
            [
                "json",
                "numpy",
                "os.path",
                "jinja2",
                "markupsafe",
                "requests"
            ]
        );
    }
}
