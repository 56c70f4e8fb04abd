//! The seam between the HTTP layer and the executor, so handlers can be tested with a fake.

use hako_runtime::stop::Cancel;
use hako_runtime::warm::PoolMemory;
use hako_runtime::{ExecError, Executor, RunReport, RunRequest};
use std::future::Future;

/// Something that runs code: the real [`Executor`], or a fake in tests.
pub trait RunCode: Send + Sync + 'static {
    fn run(&self, request: RunRequest)
        -> impl Future<Output = Result<RunReport, ExecError>> + Send;

    /// Runs until done or until `cancel` fires (the client went away); a cancelled run
    /// completes once its processes are gone. By default the run is dropped on cancel.
    fn run_until(
        &self,
        request: RunRequest,
        mut cancel: Cancel,
    ) -> impl Future<Output = Result<RunReport, ExecError>> + Send {
        async move {
            tokio::select! {
                outcome = self.run(request) => outcome,
                _ = cancel.cancelled() => Err(ExecError::Cancelled),
            }
        }
    }

    /// Extra Prometheus text about the workers (warm zygotes and their memory).
    fn worker_metrics(&self) -> String {
        String::new()
    }

    /// The agent API's runtime (files, streaming, sessions), if this executor has one.
    fn agent(&self) -> Option<hako_runtime::agent::Agent> {
        None
    }
}

impl RunCode for Executor {
    fn run(
        &self,
        request: RunRequest,
    ) -> impl Future<Output = Result<RunReport, ExecError>> + Send {
        Executor::run(self, request)
    }

    fn agent(&self) -> Option<hako_runtime::agent::Agent> {
        Some(hako_runtime::agent::Agent::new(self.clone()))
    }

    fn run_until(
        &self,
        request: RunRequest,
        cancel: Cancel,
    ) -> impl Future<Output = Result<RunReport, ExecError>> + Send {
        Executor::run_until(self, request, cancel)
    }

    fn worker_metrics(&self) -> String {
        let mut text = String::from(
            "# HELP hako_tampering_total Runs killed because they sent their supervisor a control message out of its state.\n# TYPE hako_tampering_total counter\n",
        );
        text.push_str(&format!("hako_tampering_total {}\n", self.tampered_runs()));
        let Some(status) = self.warm_status() else {
            return text;
        };
        text.push_str(
            "# HELP hako_warm_workers Warm Python zygotes ready to fork a run.\n# TYPE hako_warm_workers gauge\n",
        );
        text.push_str(&format!("hako_warm_workers {}\n", status.idle));
        text.push_str("# HELP hako_zygote_failed_starts_total Zygotes that failed to start.\n# TYPE hako_zygote_failed_starts_total counter\n");
        text.push_str(&format!(
            "hako_zygote_failed_starts_total {}\n",
            status.failed_starts
        ));
        text.push_str("# HELP hako_node_workers Pre-started Node.js workers ready for a program.\n# TYPE hako_node_workers gauge\n");
        text.push_str(&format!("hako_node_workers {}\n", status.node_idle));
        text.push_str("# HELP hako_zygote_memory_bytes Proportional memory of every warm zygote, their preloaded parents and prepared children (shared pages counted once).\n# TYPE hako_zygote_memory_bytes gauge\n");
        text.push_str(&format!(
            "hako_zygote_memory_bytes {}\n",
            status.zygote_pss_bytes
        ));
        text.push_str("# HELP hako_zygote_rss_bytes Resident memory of each idle zygote.\n# TYPE hako_zygote_rss_bytes gauge\n");
        for (i, rss) in status.zygote_rss_bytes.iter().enumerate() {
            text.push_str(&format!("hako_zygote_rss_bytes{{zygote=\"{i}\"}} {rss}\n"));
        }
        text.push_str(&pool_metrics(&status.pools));
        text
    }
}

/// A pool gauge: its name, its help text, and its value for one pool.
type Gauge = (&'static str, &'static str, fn(&PoolMemory) -> u64);

/// One gauge per warm Python pool: its idle workers, what the whole pool weighs (shared pages
/// counted once) and what its preloaded parent alone weighs, so the two can be compared.
fn pool_metrics(pools: &[PoolMemory]) -> String {
    let mut text = String::new();
    let gauges: [Gauge; 4] = [
        (
            "hako_pool_workers",
            "Worker zygotes of the pool ready to fork a run.",
            |p| p.workers as u64,
        ),
        (
            "hako_pool_memory_bytes",
            "Proportional memory (PSS) of the pool's preloaded parent, its worker zygotes and their prepared children.",
            |p| p.memory_bytes,
        ),
        (
            "hako_pool_zygote_bytes",
            "Resident memory of the pool's preloaded parent: what one zygote of the pool weighs.",
            |p| p.zygote_bytes,
        ),
        (
            "hako_pool_hot_pages",
            "Pages the newest worker's calibration found a run writes; its children copy them before their run (0: calibration failed).",
            |p| p.hot_pages,
        ),
    ];
    for (name, help, value) in gauges {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for pool in pools {
            text.push_str(&format!(
                "{name}{{pool=\"{}\"}} {}\n",
                pool.pool,
                value(pool)
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pool_has_its_gauges() {
        let pools = [
            PoolMemory {
                pool: "lean",
                workers: 2,
                memory_bytes: 30 << 20,
                zygote_bytes: 20 << 20,
                hot_pages: 570,
            },
            PoolMemory {
                pool: "heavy",
                workers: 1,
                memory_bytes: 200 << 20,
                zygote_bytes: 150 << 20,
                hot_pages: 0,
            },
        ];
        let text = pool_metrics(&pools);
        for line in [
            "hako_pool_workers{pool=\"lean\"} 2",
            "hako_pool_workers{pool=\"heavy\"} 1",
            "hako_pool_memory_bytes{pool=\"heavy\"} 209715200",
            "hako_pool_zygote_bytes{pool=\"lean\"} 20971520",
            "hako_pool_hot_pages{pool=\"lean\"} 570",
            "hako_pool_hot_pages{pool=\"heavy\"} 0",
            "# TYPE hako_pool_memory_bytes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
