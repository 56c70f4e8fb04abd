//! The warm Python zygotes of a server: a plain pool (the interpreter with the operator's
//! standard-library preload), a lean pool (plus [`LEAN_PACKAGES`]) and a heavy pool (the
//! whole package environment). Each run goes to the pool its imports call for (see
//! [`crate::imports`]); when that pool has no free zygote, it takes one of a heavier pool.

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
    pub plain: JailSpec,
    /// The package environment's binds (what the zygotes were made from).
    pub key: Vec<(PathBuf, PathBuf)>,
    /// Top-level modules of the package environment.
    pub environment: BTreeSet<String>,
}

pub struct PythonZygotes {
    plain: ZygotePool,
    lean: ZygotePool,
    heavy: ZygotePool,
    /// The zygote library (built next to the binary).
    pub library: PathBuf,
    environment: Mutex<Arc<BTreeSet<String>>>,
}

impl PythonZygotes {
    pub fn new(helper: PathBuf, count: usize, finishing: Finishing, library: PathBuf) -> Self {
        PythonZygotes {
            plain: ZygotePool::new("plain", helper.clone(), count, finishing.clone()),
            lean: ZygotePool::new("lean", helper.clone(), count, finishing.clone()),
            heavy: ZygotePool::new("heavy", helper, count, finishing),
            library,
            environment: Mutex::new(Arc::new(BTreeSet::new())),
        }
    }

    /// Sets what new zygotes of every pool are made of.
    pub fn set_templates(&self, templates: Templates) {
        let bootstrap = hako_jail::zygote::BOOTSTRAP.as_bytes().to_vec();
        *self.lock() = Arc::new(templates.environment);
        self.plain
            .set_template(templates.plain, bootstrap.clone(), templates.key.clone());
        self.lean
            .set_template(templates.lean, bootstrap.clone(), templates.key.clone());
        self.heavy
            .set_template(templates.heavy, bootstrap, templates.key);
    }

    /// True when the zygotes were made from `key` (the package environment's binds).
    pub fn made_from(&self, key: &[(PathBuf, PathBuf)]) -> bool {
        self.heavy.made_from(key) && self.lean.made_from(key) && self.plain.made_from(key)
    }

    /// Which pool `code` goes to.
    pub fn weigh(&self, code: &[u8]) -> Weight {
        let environment = self.lock().clone();
        crate::imports::weigh(&String::from_utf8_lossy(code), &environment)
    }

    /// Runs `code` in a zygote of the pool its imports call for; when that pool has none
    /// free, in one of a heavier pool (plain, then lean, then heavy). `Ok(None)`: none was
    /// free.
    pub async fn run(
        &self,
        order: &RunOrder,
        code: &[u8],
        cancel: &mut crate::stop::Cancel,
    ) -> Result<Option<JailOutcome>, WarmError> {
        let weight = self.weigh(code);
        for (pool, serves) in [(&self.plain, Weight::Plain), (&self.lean, Weight::Lean)] {
            if weight <= serves {
                match pool.run(order, code, cancel).await {
                    Ok(None) => {}
                    answered => return answered,
                }
            }
        }
        self.heavy.run(order, code, cancel).await
    }

    pub async fn close(&self) {
        self.plain.close().await;
        self.lean.close().await;
        self.heavy.close().await;
    }

    /// The pools as one: ready when all are, idle zygotes of all, memory of all; and each
    /// pool on its own in `pools`.
    pub fn status(&self) -> PoolStatus {
        let all = [self.plain.status(), self.lean.status(), self.heavy.status()];
        PoolStatus {
            warmed: all.iter().all(|p| p.warmed),
            failed_starts: all.iter().map(|p| p.failed_starts).sum(),
            // The heaviest pool's error first (it serves every run).
            start_error: all.iter().rev().find_map(|p| p.start_error.clone()),
            idle: all.iter().map(|p| p.idle).sum(),
            node_idle: 0,
            zygote_rss_bytes: all
                .iter()
                .flat_map(|p| p.zygote_rss_bytes.clone())
                .collect(),
            zygote_pss_bytes: all.iter().map(|p| p.zygote_pss_bytes).sum(),
            skipped_preload: all[2].skipped_preload.clone(),
            pools: all.into_iter().flat_map(|p| p.pools).collect(),
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

/// The plain preload: the operator's modules that are not of the environment (standard
/// library ones such as `json` and `base64`). Nothing else: hako's zygote script imports what
/// it needs itself.
pub fn plain_preload(operator: &[String], environment: &BTreeSet<String>) -> Vec<String> {
    let top = |m: &str| m.split('.').next().unwrap_or(m).to_string();
    operator
        .iter()
        .filter(|m| !environment.contains(&top(m)))
        .cloned()
        .collect()
}

/// Which lighter pool a spec is for (its id hints start apart from the others').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Light {
    Lean,
    Plain,
}

/// A lighter zygote's spec: the heavy one's with `preload` and no warm-up code (the
/// operator's warm-up may import anything).
pub fn light_spec(
    heavy: &JailSpec,
    light: Light,
    preload: &[String],
) -> Result<JailSpec, serde_json::Error> {
    let mut spec = heavy.clone();
    let preload = serde_json::to_string(preload)?;
    for (name, value) in spec.env.iter_mut() {
        match name.as_str() {
            "HAKO_PRELOAD" => *value = preload.clone(),
            "HAKO_PYTHON_WARMUP" => value.clear(),
            _ => {}
        }
    }
    // Its own id range: the leases of the pools start apart.
    let offset = match light {
        Light::Lean => ID_HINT_SPAN,
        Light::Plain => 2 * ID_HINT_SPAN,
    };
    spec.ids.host_uid += offset;
    spec.ids.host_gid += offset;
    Ok(spec)
}

/// How far apart the pools' id hints start (the heavy pool's first, then the lean's, then the
/// plain's): a pool's parents take their hints from one span (see `ZygotePool`).
const ID_HINT_SPAN: u32 = 1 << 15;

/// Proportional memory (shared pages split between the processes sharing them) of `pid` and
/// its descendants, in bytes. A child that shares its parent's memory (a zygote run's reaper,
/// cloned with `CLONE_VM`) adds nothing of its own: its memory is its parent's, counted once.
pub fn pss_of_tree(pid: i32) -> u64 {
    tree_pss(pid, None)
}

fn tree_pss(pid: i32, parent: Option<i32>) -> u64 {
    let own = if parent.is_some_and(|p| shares_memory(p, pid) == Some(true)) {
        0
    } else {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .map(|child| tree_pss(child, Some(pid)))
        .sum::<u64>()
}

/// Whether `a` and `b` share one address space (`kcmp(KCMP_VM)`); None where the kernel
/// does not say (no permission to inspect them, or either is gone).
fn shares_memory(a: i32, b: i32) -> Option<bool> {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp compares two processes' kernel objects; it takes integers only.
    let order = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_VM, 0, 0) };
    (order >= 0).then_some(order == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_shared_by_threads_and_not_by_forked_processes() {
        let me = std::process::id() as i32;
        assert_eq!(shares_memory(me, me), Some(true));
        // SAFETY: gettid takes no arguments.
        let tid = std::thread::spawn(|| unsafe { libc::gettid() })
            .join()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid takes no arguments.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = done_rx.recv();
        });
        let live = rx.recv().unwrap();
        assert_eq!(shares_memory(me, live), Some(true));
        drop(done_tx);
        thread.join().unwrap();
        assert_eq!(shares_memory(me, tid), None, "an ended thread");
        let mut other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(shares_memory(me, other.id() as i32), Some(false));
        let _ = other.kill();
        let _ = other.wait();
    }

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
        assert_eq!(plain_preload(&operator, &environment), ["json", "os.path"]);
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
