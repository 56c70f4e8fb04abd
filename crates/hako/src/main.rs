//! `hako`: run untrusted Python and Node.js code in a real sandbox, from the command line or
//! as a Dify Sandbox compatible HTTP service.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hako_runtime::config::{Config, ConfigError, ExecMode, Loaded, LogFormat, NetworkPolicy};
use hako_runtime::{cgroups, host};
use hako_runtime::{ExecOptions, Executor, Language, RunRequest};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `println!` for the command line's output: a reader that went away (`hako doctor | head
/// -1`) ends the command quietly instead of panicking (see [`quit_if_stdout_is_gone`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::quit_if_stdout_is_gone(writeln!(std::io::stdout(), $($arg)*))
    }};
}

mod bench;
mod mcp;

#[derive(Parser)]
#[command(
    name = "hako",
    version,
    about = "Secure code execution for LLM applications"
)]
struct Cli {
    /// Configuration file (default: conf/config.yaml in the working directory).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one program in the jail and print what it printed.
    Run(RunArgs),
    /// Report which isolation layers this host can enforce.
    Doctor {
        /// Print the effective seccomp policy of a language instead.
        #[arg(long, value_name = "LANGUAGE")]
        policy: Option<String>,
    },
    /// Run a program with the syscall policy in learning mode and print what it needs.
    Profile(ProfileArgs),
    /// Serve the Dify Sandbox compatible HTTP API.
    Serve,
    /// Load-test the run API (starts its own servers unless --url is given).
    Bench(bench::BenchArgs),
    /// Serve the Model Context Protocol over stdio (tools: run_code and sessions), with its
    /// own jail runtime.
    Mcp,
    /// Build the package environments for the requirements files now (e.g. in an image build).
    Packages {
        #[command(subcommand)]
        action: PackagesAction,
    },
    /// Internal: the single-threaded jail helper (reads a run on stdin).
    #[command(name = "__jail", hide = true)]
    Jail,
    /// Internal: a warm Python zygote and its supervisor (reads runs on stdin).
    #[command(name = "__zygote", hide = true)]
    Zygote,
    /// Internal: the preloaded parent of a pool's worker zygotes.
    #[command(name = "__zygote-parent", hide = true)]
    ZygoteParent,
    /// Internal: a worker zygote (forked from the parent) and its supervisor.
    #[command(name = "__zygote-worker", hide = true)]
    ZygoteWorker,
    /// Internal: a jail helper that relays input and output while the program runs.
    #[command(name = "__live", hide = true)]
    Live,
    /// Internal: keeps a private cgroup2 mount over the given root (a read-only cgroup2).
    #[command(name = "__cgroup-mount", hide = true)]
    CgroupMount { root: PathBuf },
}

#[derive(Subcommand)]
enum PackagesAction {
    /// Install python-requirements.txt and nodejs-requirements.txt (plus the defaults).
    Install,
}

#[derive(Args)]
struct RunArgs {
    /// python3 or nodejs (default: from the file extension, else python3).
    #[arg(long, short)]
    language: Option<String>,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Give the run network access.
    #[arg(long)]
    network: bool,
    /// Print the result object as JSON instead of the program's output.
    #[arg(long)]
    json: bool,
    /// Run even if seccomp or namespaces are missing (unsafe).
    #[arg(long)]
    insecure: bool,
    /// The program, or - for standard input.
    file: PathBuf,
}

#[derive(Args)]
struct ProfileArgs {
    #[arg(long, short)]
    language: Option<String>,
    #[arg(long)]
    timeout: Option<u64>,
    file: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    // The helpers must stay single-threaded: no runtime, no logging threads.
    match cli.command {
        Command::Jail => std::process::exit(host::jail_helper_main()),
        Command::Zygote => std::process::exit(host::zygote_helper_main()),
        Command::ZygoteParent => std::process::exit(host::zygote_parent_main()),
        Command::ZygoteWorker => std::process::exit(host::zygote_worker_main()),
        Command::Live => std::process::exit(host::live_helper_main()),
        Command::CgroupMount { ref root } => std::process::exit(host::cgroup_keeper_main(root)),
        _ => {}
    }
    // The configuration is loaded once: the log settings and the command read the same copy.
    // A configuration error is reported by the command that needs the configuration.
    let loaded = Config::load(cli.config.as_deref());
    init_logging(loaded.as_ref().ok().map(|loaded| &loaded.config));
    let code = match dispatch(cli.command, loaded) {
        Ok(code) => code,
        Err(err) => {
            // Never a panic on a closed stderr.
            let _ = writeln!(std::io::stderr(), "hako: {}", error_text(&err));
            2
        }
    };
    std::process::exit(code);
}

/// Ends the process quietly (status 0) when stdout's reader is gone; any other write error
/// ends it with status 1 and a message.
fn quit_if_stdout_is_gone(written: std::io::Result<()>) {
    match written {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "hako: cannot write to stdout: {err}");
            std::process::exit(1)
        }
    }
}

/// A write whose reader went away counts as done.
fn unless_gone(written: std::io::Result<()>) -> std::io::Result<()> {
    match written {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The error and its causes, each cause once: most messages already quote their source.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Logs go to stderr: JSON with `hako.log_format: json`, hako's own crates at `debug` with
/// `app.debug` (`DEBUG`, `GIN_MODE=debug`); `HAKO_LOG` overrides the level.
fn init_logging(config: Option<&Config>) {
    let json = config.is_some_and(|c| c.hako.log_format == LogFormat::Json);
    let level = match config {
        Some(c) if c.app.debug => "info,hako=debug",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAKO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// What the configuration loader gave: the configuration, or why there is none.
type LoadResult = std::result::Result<Loaded, ConfigError>;

fn dispatch(command: Command, loaded: LoadResult) -> Result<i32> {
    match command {
        Command::Run(args) => run(loaded, args),
        Command::Doctor { policy } => doctor(loaded, policy.as_deref()),
        Command::Profile(args) => profile(loaded, args),
        Command::Serve => serve(loaded),
        Command::Bench(args) => bench::bench(args),
        Command::Mcp => serve_mcp(loaded),
        Command::Packages {
            action: PackagesAction::Install,
        } => install_packages(loaded),
        Command::Jail
        | Command::Zygote
        | Command::ZygoteParent
        | Command::ZygoteWorker
        | Command::Live
        | Command::CgroupMount { .. } => {
            unreachable!("handled before logging starts")
        }
    }
}

/// The loaded configuration, its warnings logged; they matter only to a server.
fn load_config(loaded: LoadResult, serving: bool) -> Result<Config> {
    let loaded = loaded?;
    for warning in &loaded.warnings {
        if serving {
            tracing::warn!("{warning}");
        } else {
            tracing::debug!("{warning}");
        }
    }
    Ok(loaded.config)
}

/// Refuses to run code when a required layer is missing, unless told to run insecurely.
fn check_layers(config: &Config) -> Result<()> {
    if config.enable_network && config.hako.network.mode == NetworkPolicy::Proxy {
        let egress = host::probe_egress();
        if egress.state != host::LayerState::Enforced {
            // Fails closed: such runs get a setup error, runs without network still work.
            tracing::warn!(
                "runs with network cannot start here: egress guard {}: {}; see `hako doctor`",
                egress.state,
                egress.detail
            );
        }
    }
    let reports = host::probe_layers(config);
    let missing = host::missing_required(&reports);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|r| format!("{} ({})", r.layer, r.detail))
        .collect();
    if config.hako.insecure {
        tracing::error!("RUNNING INSECURELY: missing {}", names.join(", "));
        return Ok(());
    }
    bail!(
        "refusing to run code: missing {}; see `hako doctor`, or set hako.insecure: true to run anyway (unsafe)",
        names.join(", ")
    )
}

fn executor(config: Arc<Config>) -> Result<Executor> {
    let helper = std::env::current_exe().context("locate the hako binary")?;
    Ok(Executor::new(config, helper)?)
}

fn language_for(explicit: Option<&str>, file: &Path) -> Result<Language> {
    if let Some(name) = explicit {
        return name
            .parse()
            .map_err(|_| anyhow::anyhow!("unsupported language {name:?}; use python3 or nodejs"));
    }
    Ok(match file.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Language::Nodejs,
        _ => Language::Python3,
    })
}

fn read_program(file: &Path) -> Result<String> {
    let mut code = String::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut code)
            .context("read the program from stdin")?;
    } else {
        code = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    }
    Ok(code)
}

/// A run request for a program file (or stdin) given on the command line.
fn cli_request(language: Option<&str>, file: &Path, network: bool, id: &str) -> Result<RunRequest> {
    Ok(RunRequest {
        language: language_for(language, file)?,
        code: read_program(file)?,
        preload: None,
        enable_network: network,
        limits: Default::default(),
        request_id: id.into(),
    })
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

fn serve_mcp(loaded: LoadResult) -> Result<i32> {
    let mut config = load_config(loaded, true)?;
    // Keeps the private cgroup2's keeper (if any) for the server's life.
    let _cgroups = cgroups::prepare(&mut config, true);
    check_layers(&config)?;
    let executor = executor(Arc::new(config))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(mcp::serve(executor))?;
    Ok(0)
}

fn run(loaded: LoadResult, args: RunArgs) -> Result<i32> {
    let mut config = load_config(loaded, false)?;
    config.hako.insecure |= args.insecure;
    if let Some(timeout) = args.timeout {
        config.worker_timeout = timeout.max(1);
    }
    if let Some(memory) = args.memory_mb {
        config.hako.limits.memory_mb = memory.max(1);
    }
    config.enable_network = config.enable_network || args.network;
    check_layers(&config)?;
    let request = cli_request(args.language.as_deref(), &args.file, args.network, "cli")?;
    let executor = executor(Arc::new(config))?;
    let result = block_on(async {
        let result = executor.run(request).await;
        executor.wait_for_helpers().await;
        result
    })??;
    let exit_code = result.exit_code;
    if args.json {
        let data = hako_api::RunData::from(result);
        outln!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        // A reader that went away (`hako run x.py | head -1`) is not an error: the rest
        // still goes out, and the exit code is the program's.
        let mut stdout = std::io::stdout().lock();
        unless_gone(
            stdout
                .write_all(result.stdout.as_bytes())
                .and_then(|()| stdout.flush()),
        )?;
        unless_gone(std::io::stderr().write_all(result.stderr.as_bytes()))?;
        let reasons = result.failure.iter().flat_map(|f| &f.reasons);
        let messages: String = reasons
            .flat_map(|r| {
                hako_api::result::reason_lines(r, result.language)
                    .lines()
                    .map(|l| format!("hako: {l}\n"))
                    .collect::<Vec<_>>()
            })
            .collect();
        unless_gone(std::io::stderr().write_all(messages.as_bytes()))?;
    }
    Ok(match exit_code {
        code if code >= 0 => code,
        _ => 137,
    })
}

fn profile(loaded: LoadResult, args: ProfileArgs) -> Result<i32> {
    let mut config = load_config(loaded, false)?;
    if let Some(timeout) = args.timeout {
        config.worker_timeout = timeout.max(1);
    }
    check_layers(&config)?;
    let request = cli_request(args.language.as_deref(), &args.file, false, "profile")?;
    let language = request.language;
    let executor = executor(Arc::new(config))?;
    let (result, outcome) = block_on(async {
        let ran = executor
            .run_with(
                request,
                ExecOptions {
                    learn_syscalls: true,
                },
            )
            .await;
        executor.wait_for_helpers().await;
        ran
    })??;
    unless_gone(std::io::stdout().write_all(result.stdout.as_bytes()))?;
    unless_gone(std::io::stderr().write_all(result.stderr.as_bytes()))?;
    outln!("\n--- hako profile ({language}) ---");
    if outcome.blocked.is_empty() {
        outln!("no syscalls outside the default {language} policy were used");
    } else {
        outln!("syscalls outside the default {language} policy:");
        for call in &outcome.blocked {
            outln!("  {:<24} {:>8} call(s)", call.name, call.count);
        }
        let names: Vec<&str> = outcome.blocked.iter().map(|b| b.name.as_str()).collect();
        outln!("\nenvironment:\n  ALLOWED_SYSCALLS={}", names.join(","));
        outln!("\nconf/config.yaml:\n  allowed_syscalls:");
        for name in names {
            outln!("    - {name}");
        }
    }
    outln!(
        "\nprogram: {} (exit code {})",
        result.status.as_str(),
        result.exit_code
    );
    Ok(if result.exit_code == 0 { 0 } else { 1 })
}

fn doctor(loaded: LoadResult, policy: Option<&str>) -> Result<i32> {
    let mut config = load_config(loaded, false)?;
    if let Some(language) = policy {
        outln!("{}", host::effective_policy(&config, language)?);
        return Ok(0);
    }
    let cgroups = cgroups::prepare(&mut config, false);
    let config = Arc::new(config);
    let reports = host::probe_layers(&config);
    for report in &reports {
        outln!("{:<28} {:<9} {}", report.layer, report.state, report.detail);
    }
    print_cpu_limit(&config);
    if let Some(line) = &cgroups.degraded {
        outln!("{:<28} {:<9} {line}", "memory limit", "guard");
    }
    let executor = executor(config.clone())?;
    for language in [Language::Python3, Language::Nodejs] {
        match executor.adapter(language) {
            Ok(adapter) => {
                let missing = if adapter.missing_libraries.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; unresolved libraries: {}",
                        adapter.missing_libraries.join(", ")
                    )
                };
                outln!(
                    "{:<28} {:<9} {} {} ({} read-only paths){missing}",
                    format!("interpreter {language}"),
                    "found",
                    adapter.interpreter.display(),
                    adapter.version,
                    adapter.ro_binds.len()
                );
            }
            Err(err) => outln!(
                "{:<28} {:<9} {err}",
                format!("interpreter {language}"),
                "missing"
            ),
        }
    }
    for language in [Language::Python3, Language::Nodejs] {
        print_packages(&executor, language);
    }
    match (config.enable_network, config.hako.network.mode) {
        (false, _) => outln!("{:<28} {:<9} runs have loopback only", "network", "off"),
        (true, NetworkPolicy::Proxy) => {
            outln!(
                "{:<28} {:<9} runs with network get their own namespace; egress through the SSRF guard (docs/network.md)",
                "network", "proxy"
            );
            let egress = host::probe_egress();
            outln!("{:<28} {:<9} {}", egress.layer, egress.state, egress.detail);
        }
        (true, NetworkPolicy::Host) => {
            outln!(
                "{:<28} {:<9} UNSAFE for multi-tenant use: runs with network share the host's network namespace (internal services, cloud metadata); use hako.network.mode: proxy",
                "network", "host"
            );
            outln!(
                "{:<28} {:<9} not enforced: hako.network.mode is host (the operator's choice)",
                "egress guard",
                "off"
            );
        }
    }
    match config.hako.mode {
        ExecMode::Spawn => outln!(
            "{:<28} {:<9} a fresh jailed interpreter per run",
            "execution mode", "spawn"
        ),
        ExecMode::Zygote => match executor.zygote_library() {
            Ok(path) => outln!(
                "{:<28} {:<9} python3 forks from warm zygotes ({}); nodejs uses {} pre-started workers",
                "execution mode",
                "zygote",
                path.display(),
                config.hako.nodejs_pool
            ),
            Err(err) => outln!("{:<28} {:<9} falls back to spawn: {err}", "execution mode", "degraded"),
        },
    }
    if config.hako.mode == ExecMode::Zygote && executor.zygote_library().is_ok() {
        print_warm_pool(&executor)?;
    }
    let missing = host::missing_required(&reports);
    if !missing.is_empty() {
        outln!("\nhako refuses to run code on this host (missing required layers) unless hako.insecure is set");
        return Ok(1);
    }
    Ok(0)
}

/// Starts one warm zygote, as `hako serve` would, and says whether it came up (and if not,
/// why: runs would then start afresh, and `/ready` says so too).
fn print_warm_pool(executor: &Executor) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (state, detail) = runtime.block_on(async {
        if let Err(err) = executor.start_warm(1) {
            return ("failed", err.to_string());
        }
        let started = std::time::Instant::now();
        let result = loop {
            match executor.warm_status() {
                // Every pool (plain, lean and heavy) has a zygote up.
                Some(status) if status.warmed => {
                    break (
                        "ok",
                        format!("zygotes started in {} ms", started.elapsed().as_millis()),
                    )
                }
                Some(status) if status.start_error.is_some() => {
                    break ("failed", status.start_error.unwrap_or_default())
                }
                None => break ("skipped", "zygotes need root".to_string()),
                _ if started.elapsed() > std::time::Duration::from_secs(60) => {
                    break ("failed", "no zygote started within 60 s".to_string())
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        executor.shutdown().await;
        result
    });
    outln!("{:<28} {state:<9} {detail}", "warm pool python3");
    Ok(())
}

/// One line per language on its package environment; a failed install's output below it.
fn print_packages(executor: &Executor, language: Language) {
    use hako_runtime::packages::EnvState;
    let packages = executor.packages();
    let report = packages.report(language);
    let layer = format!("packages {language}");
    let current = match &report.current {
        Some((key, dir)) => format!(
            "{} packages in {} ({key})",
            report.packages.len(),
            dir.display()
        ),
        None => "no environment".to_string(),
    };
    let pending = if packages.pending(language) {
        "; the requirements file changed and is not installed yet (`hako serve` installs it)"
    } else {
        ""
    };
    let missing = if report.missing_libraries.is_empty() {
        String::new()
    } else {
        format!(
            "; unresolved libraries: {}",
            report.missing_libraries.join(", ")
        )
    };
    let state = match report.state {
        EnvState::None if pending.is_empty() => "none",
        EnvState::None | EnvState::Installing => "pending",
        EnvState::Ready => "ready",
        EnvState::Failed => "failed",
    };
    outln!("{layer:<28} {state:<9} {current}{pending}{missing}");
    if let Some(error) = &report.error {
        for line in error.lines() {
            outln!("{:<38} {line}", "");
        }
    }
}

fn serve(loaded: LoadResult) -> Result<i32> {
    let mut config = load_config(loaded, true)?;
    let cgroups = cgroups::prepare(&mut config, true);
    let config = Arc::new(config);
    check_layers(&config)?;
    print_cpu_limit(&config);
    let executor = executor(config.clone())?;
    for language in [Language::Python3, Language::Nodejs] {
        if let Err(err) = executor.adapter(language) {
            tracing::warn!("{err}");
        }
    }
    let stale = host::remove_stale_cgroups(&config);
    if stale > 0 {
        tracing::info!("removed {stale} empty cgroups left by earlier runs");
    }
    // Installs in the background; until then runs use the previous (or no) environment.
    let packages = executor.packages().clone();
    packages.start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Err(err) = executor.start_warm(config.max_workers) {
            tracing::warn!("warm workers unavailable, every run starts a fresh interpreter: {err}");
        }
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], config.app.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| hako_api::ApiError::Bind { addr, source })?;
        let readiness = readiness(executor.clone(), config.hako.mode == ExecMode::Zygote);
        // The server and the executor share the one loaded configuration.
        let state = hako_api::AppState::new(config, executor.clone())
            .with_dependencies(std::sync::Arc::new(packages))
            .with_readiness(std::sync::Arc::new(hako_api::WithDegraded {
                source: readiness,
                degraded: cgroups
                    .degraded
                    .iter()
                    .map(|line| hako_api::NotReady::new("cgroups", line.clone()))
                    .collect(),
            }));
        let served = hako_api::serve_on(listener, state, hako_api::shutdown_signal()).await;
        // Warm workers, helpers that answered the last runs and the egress guard finish
        // their clean-up before we exit: a clean stop leaves nothing behind.
        executor.shutdown().await;
        served
    })?;
    Ok(0)
}

/// Ready means: every package environment is built for the current requirements (not
/// installing, and not failed: runs would miss the packages they ask for), and in zygote mode
/// a warm Python worker exists or can start.
fn readiness(executor: Executor, warm: bool) -> std::sync::Arc<dyn hako_api::Readiness> {
    use hako_runtime::packages::EnvState;
    std::sync::Arc::new(move || {
        let mut not_ready = Vec::new();
        for language in [Language::Python3, Language::Nodejs] {
            let report = executor.packages().report(language);
            let reason = match report.state {
                EnvState::Installing => "installing".to_string(),
                EnvState::Failed => format!(
                    "install failed: {}",
                    short_error(report.error.as_deref().unwrap_or("(no installer output)"))
                ),
                EnvState::None | EnvState::Ready => continue,
            };
            not_ready.push(hako_api::NotReady::new(
                format!("{language} packages"),
                reason,
            ));
        }
        match executor.warm_status() {
            Some(status) if warm => {
                if let Some(error) = status.start_error {
                    // Runs still start afresh; the pool retries with backoff.
                    not_ready.push(hako_api::NotReady::new(
                        "python3 zygote",
                        format!(
                            "cannot start ({} failed starts): {error}",
                            status.failed_starts
                        ),
                    ));
                } else if !status.warmed {
                    not_ready.push(hako_api::NotReady::new(
                        "python3 zygote",
                        "no warm worker yet",
                    ));
                }
            }
            _ => {}
        }
        not_ready
    })
}

/// An installer error short enough for `/ready`: its first line and the installer's own
/// `ERROR` lines (the full output is in the dependencies endpoint and the log).
fn short_error(error: &str) -> String {
    let mut lines = error.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut text = lines.next().unwrap_or_default().to_string();
    for line in lines.filter(|l| l.starts_with("ERROR") || l.starts_with("npm ERR")) {
        text.push(' ');
        text.push_str(line);
    }
    if text.len() > 600 {
        let mut end = 600;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" ...");
    }
    text
}

fn install_packages(loaded: LoadResult) -> Result<i32> {
    let config = load_config(loaded, false)?;
    let executor = executor(Arc::new(config))?;
    let mut failed = false;
    for language in [Language::Python3, Language::Nodejs] {
        if executor.adapter(language).is_err() {
            outln!("{language}: interpreter not found, skipped");
            continue;
        }
        match executor.packages().ensure(language) {
            Ok(()) => {
                let report = executor.packages().report(language);
                outln!(
                    "{language}: {:?}, {} package(s)",
                    report.state,
                    report.packages.len()
                );
            }
            Err(err) => {
                outln!("{language}: install failed: {err}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// The `cpu limit` line of `hako doctor` and of the server's start-up.
fn print_cpu_limit(config: &Config) {
    let cpu = host::cpu_limit_enforced(config);
    let detail = if cpu {
        format!(
            "{} % of one CPU per run (hako.limits.cpu_percent)",
            config.hako.limits.cpu_percent
        )
    } else {
        "no writable cpu cgroup controller: runs are not CPU-limited".to_string()
    };
    let state = if cpu { "enforced" } else { "missing" };
    outln!("{:<28} {:<9} {}", "cpu limit", state, detail);
}
