//! One plan per run: what a run asks of its jail ([`JailRequest`]) plus the configuration
//! become its [`JailSpec`] here, and only here. Spawn runs, the warm pools' templates and the
//! agent API's runs and sessions all start from [`Executor::spec`].

use super::{id_pool, root_mountpoint, ExecError, ExecOptions, Executor};
use crate::adapter::Adapter;
use crate::language::Language;
use crate::result::{LimitOverrides, RunRequest};
use hako_jail::spec::{JailSpec, Limits, RunIds, SeccompMode, SeccompSpec};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a run asks of its jail; everything else comes from the configuration.
#[derive(Debug, Clone)]
pub struct JailRequest {
    pub language: Language,
    /// Network as Dify asks for it (`enable_network`); the configuration decides the mode.
    pub enable_network: bool,
    /// May lower the configured limits, never raise them.
    pub limits: LimitOverrides,
    /// Record calls outside the policy and let them through (`hako profile`).
    pub learn_syscalls: bool,
}

impl JailRequest {
    /// A run of `language` that asks for nothing special.
    pub fn new(language: Language) -> JailRequest {
        JailRequest {
            language,
            enable_network: false,
            limits: LimitOverrides::default(),
            learn_syscalls: false,
        }
    }

    /// The jail part of a run request.
    pub fn of(request: &RunRequest, options: ExecOptions) -> JailRequest {
        JailRequest {
            language: request.language,
            enable_network: request.enable_network,
            limits: request.limits,
            learn_syscalls: options.learn_syscalls,
        }
    }
}

impl Executor {
    /// A run's limits: the configured ones, lowered by what the run asks for.
    pub(super) fn limits(&self, overrides: LimitOverrides) -> Limits {
        let config = &self.inner.config;
        let configured = &config.hako.limits;
        let timeout_ms = config.worker_timeout.saturating_mul(1000);
        let memory_mb = overrides
            .memory_mb
            .map_or(configured.memory_mb, |m| m.min(configured.memory_mb));
        Limits {
            memory_bytes: memory_mb << 20,
            pids: configured.pids,
            tmp_bytes: configured.tmp_mb << 20,
            output_bytes: configured.output_bytes,
            timeout_ms: overrides
                .timeout_ms
                .map_or(timeout_ms, |t| t.min(timeout_ms))
                .max(1),
            nofile: configured.nofile,
            cpu_percent: configured.cpu_percent,
        }
    }

    /// The spawn-mode spec of `request` in `adapter`'s interpreter: next host ids, no
    /// packages or egress attached yet (see [`Executor::plan`]).
    pub(super) fn spec(&self, adapter: &Adapter, request: &JailRequest) -> JailSpec {
        let config = &self.inner.config;
        let limits = self.limits(request.limits);
        let pool = id_pool(config, config.id_ranges().spawn);
        let first = pool.first + self.inner.next_id.fetch_add(1, Ordering::Relaxed) % pool.count;
        JailSpec {
            language: adapter.language,
            interpreter: adapter.interpreter.clone(),
            args: adapter.args(limits.memory_bytes),
            env: adapter.env(),
            code_path: adapter.code_path(),
            ro_binds: adapter.ro_binds.clone(),
            mapped_binds: Vec::new(),
            limits,
            network: crate::egress::network_mode(config, request.enable_network),
            seccomp: SeccompSpec {
                mode: if request.learn_syscalls {
                    SeccompMode::Learn
                } else {
                    SeccompMode::Enforce
                },
                extra_allowed: self.inner.config.allowed_syscall_numbers().to_vec(),
            },
            ids: RunIds {
                host_uid: first,
                host_gid: first,
            },
            id_pool: Some(pool),
            root_mountpoint: root_mountpoint(config),
            insecure: config.hako.insecure,
            zygote: false,
            cgroup_root: config.hako.cgroup_root.clone(),
            deferred: false,
            egress: None,
            data_owner: crate::provision::data_owner(config),
        }
    }

    /// The complete spec of a spawn-mode run, with its package environment and egress
    /// attached (the environment is held as long as the returned guard lives). `request_id`
    /// names the run to the egress guard.
    pub fn plan(
        &self,
        request: &JailRequest,
        request_id: &str,
    ) -> Result<(JailSpec, Option<Arc<crate::packages::Env>>), ExecError> {
        if request.enable_network && !self.inner.config.enable_network {
            return Err(ExecError::NetworkDisabled);
        }
        let adapter = self.adapter(request.language)?;
        let mut spec = self.spec(adapter, request);
        let env = self.inner.packages.attach(request.language, &mut spec);
        self.inner
            .egress
            .attach(&mut spec, request.language, request_id)
            .map_err(ExecError::Egress)?;
        Ok((spec, env))
    }
}
