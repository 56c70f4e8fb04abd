//! The seam between the HTTP layer and the executor, so handlers can be tested with a fake.

use hako_runtime::stop::Cancel;
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
        text
    }
}
