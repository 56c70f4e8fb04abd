//! The seam between the HTTP layer and the executor, so handlers can be tested with a fake.

use hako_runtime::{ExecError, Executor, RunRequest, RunResult};
use std::future::Future;

/// Something that runs code: the real [`Executor`], or a fake in tests.
pub trait RunCode: Send + Sync + 'static {
    fn run(&self, request: RunRequest)
        -> impl Future<Output = Result<RunResult, ExecError>> + Send;
}

impl RunCode for Executor {
    fn run(
        &self,
        request: RunRequest,
    ) -> impl Future<Output = Result<RunResult, ExecError>> + Send {
        Executor::run(self, request)
    }
}
