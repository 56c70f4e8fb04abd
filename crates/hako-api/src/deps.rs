//! The dependencies endpoints' data source: the runtime's package manager, or
//! [`NoDependencies`] (an empty list) where none is plugged in.

use hako_runtime::packages::{EnvReport, EnvState, PackageManager};
use hako_runtime::Language;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyState {
    /// Nothing configured.
    None,
    Installing,
    Ready,
    Failed,
}

/// The `data` of the dependencies endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyReport {
    pub dependencies: Vec<Dependency>,
    pub state: DependencyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DependencyReport {
    pub fn empty() -> Self {
        DependencyReport {
            dependencies: Vec::new(),
            state: DependencyState::None,
            error: None,
        }
    }
}

pub type ReportFuture<'a> = Pin<Box<dyn Future<Output = DependencyReport> + Send + 'a>>;

pub trait Dependencies: Send + Sync + 'static {
    /// The installed packages of a language.
    fn list(&self, language: Language) -> DependencyReport;
    /// Re-prepares the environment (`POST /v1/sandbox/dependencies/update`).
    fn update(&self, language: Language) -> ReportFuture<'_>;
    /// Re-runs the install and returns the list (`GET /v1/sandbox/dependencies/refresh`).
    fn refresh(&self, language: Language) -> ReportFuture<'_>;
}

/// No package management: every list is empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDependencies;

impl Dependencies for NoDependencies {
    fn list(&self, _: Language) -> DependencyReport {
        DependencyReport::empty()
    }
    fn update(&self, _: Language) -> ReportFuture<'_> {
        Box::pin(async { DependencyReport::empty() })
    }
    fn refresh(&self, _: Language) -> ReportFuture<'_> {
        Box::pin(async { DependencyReport::empty() })
    }
}

/// The package manager behind the endpoints: the list is what the current environment
/// really holds; `update` and `refresh` re-read the requirements file and rebuild now.
impl Dependencies for PackageManager {
    fn list(&self, language: Language) -> DependencyReport {
        from_env_report(self.report(language))
    }
    fn update(&self, language: Language) -> ReportFuture<'_> {
        Box::pin(async move { from_env_report(PackageManager::refresh(self, language).await) })
    }
    fn refresh(&self, language: Language) -> ReportFuture<'_> {
        Box::pin(async move { from_env_report(PackageManager::refresh(self, language).await) })
    }
}

fn from_env_report(report: EnvReport) -> DependencyReport {
    DependencyReport {
        dependencies: report
            .packages
            .into_iter()
            .map(|p| Dependency {
                name: p.name,
                version: p.version,
            })
            .collect(),
        state: match report.state {
            EnvState::None => DependencyState::None,
            EnvState::Installing => DependencyState::Installing,
            EnvState::Ready => DependencyState::Ready,
            EnvState::Failed => DependencyState::Failed,
        },
        error: report.error,
    }
}
