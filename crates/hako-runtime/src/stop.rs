//! Stopping runs that nobody waits for any more, and cleaning up after helpers that could
//! not clean up themselves.
//!
//! A run's caller (an HTTP request) may go away mid-run. [`Cancel`] tells the executor so; the
//! executor then stops the run's helper and waits until it is gone, so that the run keeps
//! counting against admission until its processes have ended. A helper that is killed
//! outright leaves its cgroups behind: `remove_leftovers` removes them once it is reaped.

use hako_jail::cgroup::Cgroups;
use hako_jail::spec::JailOutcome;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::sync::oneshot;

/// How long a helper asked to stop (SIGTERM) gets to kill its run and clean up before it is
/// killed (its leftovers are then removed by the server).
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// How long past a run's own timeout a warm worker may take to answer before it counts as
/// stalled: it is then killed and replaced, and the request gets a timeout.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The run side of a cancellation: completes when the caller has given up.
#[derive(Debug)]
pub struct Cancel {
    receiver: Option<oneshot::Receiver<()>>,
    fired: bool,
}

/// The caller side: dropping it cancels the run, unless the run has ended by then.
#[derive(Debug)]
pub struct CancelOnDrop {
    _sender: oneshot::Sender<()>,
}

impl Cancel {
    /// A pair: drop the first to cancel the run that holds the second.
    pub fn pair() -> (CancelOnDrop, Cancel) {
        let (sender, receiver) = oneshot::channel();
        (
            CancelOnDrop { _sender: sender },
            Cancel {
                receiver: Some(receiver),
                fired: false,
            },
        )
    }

    /// A run nobody cancels (the command line).
    pub fn never() -> Cancel {
        Cancel {
            receiver: None,
            fired: false,
        }
    }

    /// Completes once the caller gave up; never for [`Cancel::never`]. Can be awaited again.
    pub async fn cancelled(&mut self) {
        if self.fired {
            return;
        }
        match self.receiver.as_mut() {
            // Nothing is ever sent: a dropped sender is the signal.
            Some(receiver) => {
                let _ = receiver.await;
                self.receiver = None;
                self.fired = true;
            }
            None => std::future::pending().await,
        }
    }
}

/// How a bounded wait on a worker ended.
pub enum Waited<T> {
    Answer(T),
    /// The deadline passed first.
    Late,
    /// The caller gave up first.
    Cancelled,
}

/// Waits for `answer` at most `deadline`, and only while the caller still waits.
pub(crate) async fn wait_bounded<F: std::future::Future>(
    answer: F,
    deadline: Duration,
    cancel: &mut Cancel,
) -> Waited<F::Output> {
    tokio::select! {
        answer = tokio::time::timeout(deadline, answer) => match answer {
            Ok(answer) => Waited::Answer(answer),
            Err(_) => Waited::Late,
        },
        _ = cancel.cancelled() => Waited::Cancelled,
    }
}

/// The outcome of a run whose worker did not answer in time: a timeout (the program may have
/// started, so it is never run again).
pub(crate) fn stalled_outcome(waited: Duration) -> JailOutcome {
    JailOutcome {
        timed_out: true,
        wall_ms: waited.as_millis() as u64,
        ..Default::default()
    }
}

/// Stops a helper that is still supervising a run: SIGTERM (it kills the run, cleans up and
/// exits), SIGKILL after [`STOP_GRACE`]. Returns once it is reaped and its leftovers are gone.
/// The caller drops the helper's pipes first, so it never blocks writing an answer.
pub(crate) async fn stop_helper(child: &mut Child, cgroup_root: &Path) {
    let pid = child.id();
    if let Some(pid) = pid {
        // SAFETY: kill only sends a signal; `pid` is our child and not yet reaped (id() is
        // `None` once it is), so it cannot name another process.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    if !status.is_some_and(|s| s.success()) {
        remove_leftovers(pid, cgroup_root).await;
    }
}

/// Kills a stalled helper outright and removes what it left (its run's processes included).
pub(crate) async fn kill_helper(child: &mut Child, cgroup_root: &Path) {
    let pid = child.id();
    let _ = child.start_kill();
    let _ = child.wait().await;
    remove_leftovers(pid, cgroup_root).await;
}

/// Removes the cgroups of a reaped helper (`pid`) that ended without removing them (killed, or
/// failed mid-way), killing anything still in them.
pub(crate) async fn remove_leftovers(pid: Option<u32>, cgroup_root: &Path) {
    let Some(pid) = pid else {
        return;
    };
    if cgroup_root.as_os_str().is_empty() {
        return;
    }
    let root = cgroup_root.to_path_buf();
    let removed =
        tokio::task::spawn_blocking(move || Cgroups::detect(&root).remove_of_helper(pid)).await;
    match removed {
        Ok(Ok(0)) | Err(_) => {}
        Ok(Ok(groups)) => {
            tracing::info!(
                helper = pid,
                groups,
                "removed the cgroups a helper left behind"
            )
        }
        Ok(Err(err)) => tracing::warn!(helper = pid, "cannot remove a helper's cgroups: {err}"),
    }
}

/// Exponential backoff for restarting warm workers that fail to start: 100 ms, doubling per
/// failure in a row, at most 30 s.
pub(crate) fn restart_delay(failures_in_a_row: u32) -> Duration {
    let shift = failures_in_a_row.saturating_sub(1).min(9);
    Duration::from_millis(100u64 << shift).min(Duration::from_secs(30))
}

/// Jail helpers that have answered and are still cleaning up (removing the run's cgroup,
/// which takes tens of ms on cgroup v1). Each is reaped in the background; [`Finishing::wait`]
/// waits for all of them (a short-lived CLI, a stopping server).
#[derive(Clone, Default)]
pub struct Finishing {
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Where helpers make their groups; those of a helper that failed are removed.
    cgroup_root: Arc<PathBuf>,
}

impl Finishing {
    pub fn new(cgroup_root: PathBuf) -> Finishing {
        Finishing {
            tasks: Arc::default(),
            cgroup_root: Arc::new(cgroup_root),
        }
    }

    /// Reaps `child` in the background, logging what it wrote to `stderr` (if given). A
    /// helper that did not exit cleanly (killed, failed) has whatever it left removed.
    pub fn reap(&self, child: Child, stderr: Option<tokio::process::ChildStderr>) {
        self.reap_reading(child, None, stderr);
    }

    /// Like [`Finishing::reap`], reading (and discarding) what the helper still writes to
    /// `stdout` (an answer nobody waits for), so that it never blocks on a closed pipe.
    pub(crate) fn reap_reading(
        &self,
        child: Child,
        stdout: Option<ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
    ) {
        self.reap_holding(child, stdout, stderr, ());
    }

    /// Like [`Finishing::reap_reading`], keeping `held` (what the helper's processes use,
    /// such as a worker's run ids) until the helper is gone.
    pub(crate) fn reap_holding<T: Send + 'static>(
        &self,
        mut child: Child,
        stdout: Option<ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
        held: T,
    ) {
        let cgroup_root = Arc::clone(&self.cgroup_root);
        let task = tokio::spawn(async move {
            if let Some(mut stdout) = stdout {
                let _ = stdout.read_to_end(&mut Vec::new()).await;
            }
            let mut err = Vec::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_end(&mut err).await;
            }
            let pid = child.id();
            if !child.wait().await.is_ok_and(|s| s.success()) {
                remove_leftovers(pid, &cgroup_root).await;
            }
            drop(held);
            if !err.is_empty() {
                tracing::warn!(helper_stderr = %String::from_utf8_lossy(&err).trim(), "jail helper said");
            }
        });
        let mut tasks = self.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    pub async fn wait(&self) {
        let tasks = std::mem::take(&mut *self.lock());
        for task in tasks {
            let _ = task.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_exponentially_up_to_a_cap() {
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(5), Duration::from_millis(1600));
        assert_eq!(restart_delay(10), Duration::from_millis(30_000));
        assert_eq!(restart_delay(1000), Duration::from_secs(30));
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn what_a_reaped_helper_holds_is_released_only_once_it_is_gone() {
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let child = tokio::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let finishing = Finishing::new(PathBuf::from("/nonexistent"));
        finishing.reap_holding(child, None, None, DropFlag(Arc::clone(&released)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !released.load(std::sync::atomic::Ordering::SeqCst),
            "released while the helper still runs"
        );
        finishing.wait().await;
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_dropped_caller_cancels_and_stays_cancelled() {
        let (caller, mut cancel) = Cancel::pair();
        let pending = tokio::time::timeout(Duration::from_millis(20), cancel.cancelled()).await;
        assert!(pending.is_err(), "not cancelled while the caller waits");
        drop(caller);
        cancel.cancelled().await;
        cancel.cancelled().await;
    }
}
