//! `hako bench`: a load generator that speaks the run API, against a URL or servers it starts
//! itself, with ratios against a spawn-mode server or another build's server measured in the
//! same invocation.

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Args;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server to measure (default: start one, in zygote mode).
    #[arg(long)]
    url: Option<String>,
    /// API key of --url.
    #[arg(long, default_value = "dify-sandbox")]
    key: String,
    /// python-hello | python-pandas | python-matplotlib | node-hello | python-session |
    /// node-session (ignored
    /// with --code). A session workload execs in one warm session per concurrent client
    /// (`/v2/sessions/{id}/exec`) and compares with one-shot runs of the same code.
    #[arg(long, default_value = "python-hello")]
    workload: String,
    /// A program to run instead of a built-in workload.
    #[arg(long)]
    code: Option<PathBuf>,
    /// Language of --code.
    #[arg(long, default_value = "python3")]
    language: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to run (unless --count).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Total runs (overrides --duration).
    #[arg(long)]
    count: Option<usize>,
    /// Pause between a worker's runs, in ms (e.g. to let a pool refill).
    #[arg(long, default_value_t = 0)]
    spacing_ms: u64,
    /// Also measure a spawn-mode server with the same workload and print the ratios.
    #[arg(long)]
    compare_spawn: bool,
    /// Runs before measuring (not counted).
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Send `enable_network: false` (Dify always sends true).
    #[arg(long)]
    no_network: bool,
    /// Requirements file the started servers install instead of the workload's own (e.g. a
    /// heavy set: numpy, pandas, scipy, scikit-learn, matplotlib; the same file gives every
    /// workload the same environment).
    #[arg(long)]
    requirements: Option<PathBuf>,
    /// `max_workers` of the started servers (default: --concurrency). Before measuring, the
    /// bench reports how long the server took to be ready with all of them warm, and the
    /// memory they take while idle.
    #[arg(long)]
    workers: Option<usize>,
    /// Python file the started servers use as `hako.python_warmup`.
    #[arg(long)]
    python_warmup: Option<PathBuf>,
    /// Another build's `hako` binary (e.g. the build before a change): measure servers started
    /// from it and from this build, alternating for --rounds, and print the medians and their
    /// ratio. The host's load drifts within minutes; only the same sitting compares builds.
    #[arg(long, conflicts_with_all = ["url", "compare_spawn"])]
    against: Option<PathBuf>,
    /// Rounds of --against; each measures both builds on fresh servers, in turn first.
    #[arg(long, default_value_t = 3, requires = "against", value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

#[derive(Clone)]
struct Workload {
    language: String,
    code: String,
    requirements: Vec<&'static str>,
    network: bool,
    /// Exec in a session instead of one-shot runs.
    session: bool,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Dify's runner templates around trivial user code.
fn workload(args: &BenchArgs) -> Result<Workload> {
    if let Some(path) = &args.code {
        let code =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        return Ok(Workload {
            language: args.language.clone(),
            code,
            requirements: Vec::new(),
            network: !args.no_network,
            session: false,
        });
    }
    let inputs = b64(r#"{"arg1": "Hello", "arg2": "World"}"#);
    let python = |user: &str| {
        format!(
            "{user}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('{inputs}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nresult = f'''<<RESULT>>{{output_json}}<<RESULT>>'''\nprint(result)\n"
        )
    };
    let network = !args.no_network;
    Ok(match args.workload.as_str() {
        "python-hello" => Workload {
            language: "python3".into(),
            code: python("def main(arg1: str, arg2: str):\n    return {\"result\": arg1 + arg2}\n"),
            requirements: Vec::new(),
            network,
            session: false,
        },
        "python-pandas" => Workload {
            language: "python3".into(),
            code: python("import pandas as pd\ndef main(arg1: str, arg2: str):\n    df = pd.DataFrame({'a': [1, 2, 3], 'b': [arg1, arg2, arg1]})\n    return {\"result\": int(df['a'].sum()), \"rows\": len(df)}\n"),
            requirements: vec!["pandas"],
            network,
            session: false,
        },
        "python-matplotlib" => Workload {
            language: "python3".into(),
            code: python("import io\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\ndef main(arg1: str, arg2: str):\n    fig, ax = plt.subplots(figsize=(4, 3))\n    ax.plot([1, 3, 2, 4])\n    ax.set_title(arg1 + arg2)\n    buf = io.BytesIO()\n    fig.savefig(buf, format='png')\n    plt.close(fig)\n    return {\"png_bytes\": len(buf.getvalue())}\n"),
            requirements: vec!["matplotlib"],
            network,
            session: false,
        },
        "node-hello" => Workload {
            language: "nodejs".into(),
            code: format!(
                "function main({{arg1, arg2}}) {{\n    return {{ result: arg1 + arg2 }}\n}}\nvar inputs_obj = JSON.parse(Buffer.from('{inputs}', 'base64').toString('utf-8'))\nvar output_obj = main(inputs_obj)\nvar output_json = JSON.stringify(output_obj)\nvar result = `<<RESULT>>${{output_json}}<<RESULT>>`\nconsole.log(result)\n"
            ),
            requirements: Vec::new(),
            network,
            session: false,
        },
        "python-session" => Workload {
            language: "python3".into(),
            code: "def main(arg1, arg2):\n    return {'result': arg1 + arg2}\nprint(main('Hello', 'World'))\n".into(),
            requirements: Vec::new(),
            network: false,
            session: true,
        },
        "node-session" => Workload {
            language: "nodejs".into(),
            code: "function main(arg1, arg2) { return { result: arg1 + arg2 } }\nconsole.log(main('Hello', 'World'))\n".into(),
            requirements: Vec::new(),
            network: false,
            session: true,
        },
        other => bail!("unknown workload {other:?}; use python-hello, python-pandas, python-matplotlib, node-hello, python-session or node-session"),
    })
}

/// A server started by the bench in its own directory; killed on drop.
struct OwnServer {
    child: Child,
    url: String,
    key: String,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // SAFETY: kill only signals the server child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_server(
    binary: &Path,
    mode: &str,
    workers: usize,
    requirements: &[&str],
    extra_requirements: &str,
    warmup: Option<&str>,
) -> Result<OwnServer> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let key = "bench-key".to_string();
    std::fs::create_dir_all(dir.path().join("conf"))?;
    std::fs::create_dir_all(dir.path().join("dependencies"))?;
    std::fs::write(
        dir.path().join("conf/config.yaml"),
        format!(
            "app:\n  port: {port}\n  key: {key}\nmax_workers: {workers}\nmax_requests: {}\nworker_timeout: 30\nhako:\n  mode: {mode}\n  nodejs_pool: {workers}\n",
            workers * 4 + 8
        ),
    )?;
    std::fs::write(
        dir.path().join("dependencies/python-requirements.txt"),
        if extra_requirements.is_empty() {
            requirements.join("\n")
        } else {
            extra_requirements.to_string()
        },
    )?;
    let mut command = Command::new(binary);
    if let Some(code) = warmup {
        command.env("HAKO_PYTHON_WARMUP", code);
    }
    let child = command
        .arg("serve")
        .current_dir(dir.path())
        .env("HAKO_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("start {} serve", binary.display()))?;
    Ok(OwnServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
        key,
        _dir: dir,
    })
}

/// Waits until the server's package environment is ready (not merely installing, nor not yet
/// started: every environment holds hako's default packages), `/ready` answers 200 and the
/// workload runs.
async fn wait_ready(client: &reqwest::Client, url: &str, key: &str, work: &Workload) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if Instant::now() > deadline {
            bail!("the server at {url} did not become ready");
        }
        let deps = client
            .get(format!("{url}/v1/sandbox/dependencies?language=python3"))
            .header("X-Api-Key", key)
            .send()
            .await;
        let state = match deps {
            Ok(resp) => resp
                .json::<Value>()
                .await
                .map(|v| v["data"].clone())
                .unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if state["state"] == "failed" {
            bail!(
                "the server at {url} could not install its packages: {}",
                state["error"]
            );
        }
        let ready = match client.get(format!("{url}/ready")).send().await {
            Ok(r) => r.status().as_u16() == 200,
            Err(_) => false,
        };
        if state["state"] == "ready" && ready {
            if let Ok(answer) = run_once(client, url, key, work, None).await {
                if answer.is_ok() {
                    // Let warm workers settle after the environment switch.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_once(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    work: &Workload,
    session: Option<&str>,
) -> Result<std::result::Result<(), String>> {
    if let Some(id) = session {
        let resp = client
            .post(format!("{url}/v2/sessions/{id}/exec"))
            .header("X-Api-Key", key)
            .json(&json!({ "code": work.code }))
            .send()
            .await?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Ok(Err(format!("HTTP {status}")));
        }
        let body: Value = resp.json().await?;
        return Ok(if body["status"] == "ok" {
            Ok(())
        } else {
            Err(body.to_string())
        });
    }
    let resp = client
        .post(format!("{url}/v1/sandbox/run"))
        .header("X-Api-Key", key)
        .json(
            &json!({"language": work.language, "code": work.code, "enable_network": work.network}),
        )
        .send()
        .await?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Ok(Err(format!("HTTP {status}")));
    }
    let body: Value = resp.json().await?;
    let ok = body["code"] == 0 && body["data"]["exit_code"] == 0;
    Ok(if ok { Ok(()) } else { Err(body.to_string()) })
}

#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    errors: usize,
    overloaded: usize,
    elapsed: Duration,
    cpu_ms: Option<f64>,
    /// `cpu_ms` by part of the server's tree.
    cpu_parts: Option<TreeCpu>,
    server_rss: Option<u64>,
}

impl Measured {
    fn percentile(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// CPU time (ms) of the server's process tree by part. A process's own time goes to its part;
/// the time of the children it has reaped goes to `runs` when it is an interpreter (a zygote,
/// a pool worker, a jail's init) and to its own part otherwise. A process that ends between
/// two readings moves its time from one part to another: the parts are right over many runs,
/// the total always.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct TreeCpu {
    /// The server process itself (HTTP, scheduling, the egress guard).
    server: f64,
    /// hako's helpers: jails, zygote supervisors.
    helpers: f64,
    /// Zygotes and pool workers, their own work (forking, serving).
    interpreters: f64,
    /// Finished runs: the children the interpreters reaped.
    runs: f64,
}

/// Which part a process's own time belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Server,
    Helper,
    Interpreter,
}

impl Part {
    /// `cmdline` as `/proc/PID/cmdline` has it (NUL-separated).
    fn of(pid: u32, root: u32, cmdline: &[u8]) -> Part {
        let mut args = cmdline.split(|&b| b == 0);
        let program = args.next().unwrap_or_default();
        let hako = program.ends_with(b"/hako") || program == b"hako";
        match args.next() {
            _ if pid == root => Part::Server,
            Some(sub) if hako && sub.starts_with(b"__") => Part::Helper,
            _ => Part::Interpreter,
        }
    }
}

impl TreeCpu {
    fn total(&self) -> f64 {
        self.server + self.helpers + self.interpreters + self.runs
    }

    fn add(&mut self, part: Part, own: f64, reaped: f64) {
        match part {
            Part::Server => self.server += own + reaped,
            Part::Helper => self.helpers += own + reaped,
            Part::Interpreter => {
                self.interpreters += own;
                self.runs += reaped;
            }
        }
    }

    /// What was spent since `before`, per run.
    fn per_run_since(&self, before: &TreeCpu, runs: f64) -> TreeCpu {
        TreeCpu {
            server: (self.server - before.server) / runs,
            helpers: (self.helpers - before.helpers) / runs,
            interpreters: (self.interpreters - before.interpreters) / runs,
            runs: (self.runs - before.runs) / runs,
        }
    }
}

/// A process's own CPU time and that of the children it reaped (ms), from `/proc/PID/stat`.
fn stat_times(stat: &str) -> Option<(f64, f64)> {
    let ticks = 100.0; // USER_HZ on Linux
                       // After the name: utime, stime, cutime and cstime are the 12th to 15th fields.
    let fields: Vec<f64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [utime, stime, cutime, cstime] = fields[..] else {
        return None;
    };
    Some((
        (utime + stime) / ticks * 1000.0,
        (cutime + cstime) / ticks * 1000.0,
    ))
}

/// CPU time of a process and all its descendants, including reaped children, by part.
fn tree_cpu(root: u32) -> TreeCpu {
    let mut total = TreeCpu::default();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some((own, reaped)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(stat_times)
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            total.add(Part::of(pid, root, &cmdline), own, reaped);
        }
        // Children hang off the thread that started them: look at every thread.
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    total
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

async fn measure(
    url: &str,
    key: &str,
    work: Arc<Workload>,
    args: &BenchArgs,
    server_pid: Option<u32>,
) -> Result<Measured> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    wait_ready(&client, url, key, &work).await?;
    let warm_session = match work.session {
        true => Some(open_session(&client, url, key, &work).await?),
        false => None,
    };
    for _ in 0..args.warmup {
        let _ = run_once(&client, url, key, &work, warm_session.as_deref()).await;
        if args.spacing_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.spacing_ms)).await;
        }
    }
    let server_rss = server_pid.and_then(rss_bytes);
    let cpu_before = server_pid.map(tree_cpu);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let remaining = Arc::new(std::sync::atomic::AtomicIsize::new(
        args.count.map_or(isize::MAX, |c| c as isize),
    ));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url, key, work, remaining) = (
            client.clone(),
            url.to_string(),
            key.to_string(),
            work.clone(),
            remaining.clone(),
        );
        let spacing = Duration::from_millis(args.spacing_ms);
        let use_deadline = args.count.is_none();
        tasks.push(tokio::spawn(async move {
            let mut m = Measured::default();
            let session = match work.session {
                true => match open_session(&client, &url, &key, &work).await {
                    Ok(id) => Some(id),
                    Err(_) => {
                        m.errors += 1;
                        return m;
                    }
                },
                false => None,
            };
            loop {
                if use_deadline && Instant::now() >= deadline {
                    break;
                }
                if remaining.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 0 {
                    break;
                }
                let t = Instant::now();
                match run_once(&client, &url, &key, &work, session.as_deref()).await {
                    Ok(Ok(())) => m.latencies.push(t.elapsed()),
                    Ok(Err(e)) if e == "HTTP 503" => m.overloaded += 1,
                    _ => m.errors += 1,
                }
                if !spacing.is_zero() {
                    tokio::time::sleep(spacing).await;
                }
            }
            m
        }));
    }
    let mut total = Measured::default();
    for t in tasks {
        let m = t.await?;
        total.latencies.extend(m.latencies);
        total.errors += m.errors;
        total.overloaded += m.overloaded;
    }
    total.elapsed = started.elapsed();
    if let (Some(pid), Some(before)) = (server_pid, cpu_before) {
        let runs = (total.latencies.len() + total.errors).max(1) as f64;
        let parts = tree_cpu(pid).per_run_since(&before, runs);
        total.cpu_ms = Some(parts.total());
        total.cpu_parts = Some(parts);
    }
    total.server_rss = server_rss;
    Ok(total)
}

/// Starts a session for a session workload.
async fn open_session(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    work: &Workload,
) -> Result<String> {
    let answer: Value = client
        .post(format!("{url}/v2/sessions"))
        .header("X-Api-Key", key)
        .json(&json!({ "language": work.language }))
        .send()
        .await?
        .json()
        .await?;
    answer["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no session: {answer}"))
}

fn report(label: &str, m: &Measured) {
    outln!(
        "{label:<8} runs {:>6}  errors {:>3}  503s {:>3}  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  {:>8.1} runs/s  cpu/run {}  server RSS {}",
        m.latencies.len(),
        m.errors,
        m.overloaded,
        m.percentile(50.0),
        m.percentile(90.0),
        m.percentile(99.0),
        m.rate(),
        m.cpu_ms.map_or("n/a".into(), |c| format!("{c:.1} ms")),
        m.server_rss.map_or("n/a".into(), |r| format!("{:.1} MiB", r as f64 / 1048576.0)),
    );
    if let Some(parts) = &m.cpu_parts {
        outln!(
            "{:<8} cpu/run by part: server {:.2} ms, helpers {:.2} ms, zygotes and workers {:.2} ms, finished runs {:.2} ms",
            "",
            parts.server,
            parts.helpers,
            parts.interpreters,
            parts.runs
        );
    }
}

pub fn bench(args: BenchArgs) -> Result<i32> {
    let work = Arc::new(workload(&args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    outln!(
        "workload {} ({}, enable_network: {}), concurrency {}, {}{}",
        if args.code.is_some() {
            "custom"
        } else {
            args.workload.as_str()
        },
        work.language,
        work.network,
        args.concurrency,
        args.count
            .map_or(format!("{} s", args.duration), |c| format!("{c} runs")),
        if args.spacing_ms > 0 {
            format!(", {} ms between runs", args.spacing_ms)
        } else {
            String::new()
        }
    );
    let warmup = match &args.python_warmup {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        ),
        None => None,
    };
    let extra_requirements = match &args.requirements {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
        }
        None => String::new(),
    };
    if let Some(other) = &args.against {
        let started = Started {
            requirements: &extra_requirements,
            warmup: warmup.as_deref(),
        };
        return compare_builds(&runtime, &args, work, other, started);
    }
    let main = match &args.url {
        Some(url) => runtime.block_on(measure(url, &args.key, work.clone(), &args, None))?,
        None => {
            let workers = args.workers.unwrap_or(args.concurrency).max(1);
            let started = Instant::now();
            let server = start_server(
                &std::env::current_exe()?,
                "zygote",
                workers,
                &work.requirements,
                &extra_requirements,
                warmup.as_deref(),
            )?;
            runtime.block_on(report_start(&server, &work, workers, started))?;
            let pid = server.child.id();
            let m = runtime.block_on(measure(
                &server.url,
                &server.key,
                work.clone(),
                &args,
                Some(pid),
            ))?;
            print_workers(&runtime, &server.url);
            if work.session {
                // The same code as one-shot runs (warm zygote or Node pool), same sitting.
                report("session", &m);
                let once = Arc::new(Workload {
                    session: false,
                    ..(*work).clone()
                });
                let one_shot =
                    runtime.block_on(measure(&server.url, &server.key, once, &args, Some(pid)))?;
                report("one-shot", &one_shot);
                outln!(
                    "ratios (one-shot / session exec): p50 {:.1}x  p99 {:.1}x",
                    one_shot.percentile(50.0) / m.percentile(50.0),
                    one_shot.percentile(99.0) / m.percentile(99.0),
                );
                return Ok(if m.errors == 0 { 0 } else { 1 });
            }
            m
        }
    };
    report(if args.url.is_some() { "server" } else { "warm" }, &main);
    if args.compare_spawn {
        let server = start_server(
            &std::env::current_exe()?,
            "spawn",
            args.workers.unwrap_or(args.concurrency).max(1),
            &work.requirements,
            &extra_requirements,
            warmup.as_deref(),
        )?;
        let pid = server.child.id();
        let spawn = runtime.block_on(measure(&server.url, &server.key, work, &args, Some(pid)))?;
        report("spawn", &spawn);
        outln!(
            "ratios (spawn / warm): p50 {:.1}x  p99 {:.1}x  throughput (warm / spawn) {:.2}x",
            spawn.percentile(50.0) / main.percentile(50.0),
            spawn.percentile(99.0) / main.percentile(99.0),
            main.rate() / spawn.rate().max(1e-9)
        );
    }
    Ok(if main.errors == 0 { 0 } else { 1 })
}

/// What the servers of one invocation start with besides the workload.
struct Started<'a> {
    /// The --requirements file's text (empty: the workload's own).
    requirements: &'a str,
    warmup: Option<&'a str>,
}

/// `--against`: this build's servers and `other`'s, alternating for `args.rounds` rounds,
/// each on a fresh server; then the medians of both and their ratio.
fn compare_builds(
    runtime: &tokio::runtime::Runtime,
    args: &BenchArgs,
    work: Arc<Workload>,
    other: &Path,
    started: Started<'_>,
) -> Result<i32> {
    if work.session {
        bail!("--against measures one-shot runs; choose a workload without a session");
    }
    let other = other
        .canonicalize()
        .with_context(|| format!("--against {}", other.display()))?;
    let this = std::env::current_exe()?;
    outln!("builds: this {}, other {}", this.display(), other.display());
    let builds = [("this", this.as_path()), ("other", other.as_path())];
    let workers = args.workers.unwrap_or(args.concurrency).max(1);
    let mut measured: [Vec<Measured>; 2] = Default::default();
    for round in 1..=args.rounds {
        for build in round_order(round) {
            let (label, binary) = builds[build];
            let server = start_server(
                binary,
                "zygote",
                workers,
                &work.requirements,
                started.requirements,
                started.warmup,
            )?;
            let pid = server.child.id();
            runtime.block_on(wait_ready(
                &reqwest::Client::new(),
                &server.url,
                &server.key,
                &work,
            ))?;
            wait_settled(pid);
            let m = runtime.block_on(measure(
                &server.url,
                &server.key,
                work.clone(),
                args,
                Some(pid),
            ))?;
            report(&format!("{label} {round}"), &m);
            measured[build].push(m);
        }
    }
    let [this, other] = measured.map(|rounds| BuildSummary::of(&rounds));
    let ms = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2} ms"));
    outln!(
        "medians of {} rounds: this p50 {}, cpu/run {}; other p50 {}, cpu/run {}",
        args.rounds,
        ms(this.p50_ms),
        ms(this.cpu_ms),
        ms(other.p50_ms),
        ms(other.cpu_ms)
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    };
    outln!(
        "ratios (this / other): p50 {}  cpu/run {}",
        ratio(this.p50_ms, other.p50_ms),
        ratio(this.cpu_ms, other.cpu_ms)
    );
    Ok(if this.errors + other.errors == 0 {
        0
    } else {
        1
    })
}

/// The builds of a round in the order they are measured (0 this, 1 other): each goes first
/// every other round, so a drift of the host's load does not favour one.
fn round_order(round: u32) -> [usize; 2] {
    if round % 2 == 1 {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// A build's rounds: the medians of their p50 and CPU per run (None when no round had one),
/// and all their errors.
#[derive(Debug, PartialEq)]
struct BuildSummary {
    p50_ms: Option<f64>,
    cpu_ms: Option<f64>,
    errors: usize,
}

impl BuildSummary {
    fn of(rounds: &[Measured]) -> BuildSummary {
        let p50s: Vec<f64> = rounds.iter().map(|m| m.percentile(50.0)).collect();
        let cpus: Vec<f64> = rounds.iter().filter_map(|m| m.cpu_ms).collect();
        BuildSummary {
            p50_ms: median(p50s),
            cpu_ms: median(cpus),
            errors: rounds.iter().map(|m| m.errors).sum(),
        }
    }
}

/// The median of the finite values (the mean of the middle two of an even count); None for
/// none (a round without a successful run has no p50).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Waits (at most 5 minutes) until the server's process tree uses less than a tenth of a CPU:
/// a zygote may still be importing its preload at the lowest priority after the server says
/// it is ready, and that work is not the runs'.
fn wait_settled(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let step = Duration::from_millis(500);
    let mut last = tree_cpu(pid).total();
    // Two quiet steps in a row; a fall (a process left the tree) is not quiet.
    let mut quiet = 0;
    while Instant::now() < deadline {
        std::thread::sleep(step);
        let now = tree_cpu(pid).total();
        let used = now - last;
        quiet = if (0.0..step.as_secs_f64() * 1000.0 / 10.0).contains(&used) {
            quiet + 1
        } else {
            0
        };
        if quiet == 2 {
            return;
        }
        last = now;
    }
    outln!("(the server at pid {pid} still used CPU after 5 minutes; measuring anyway)");
}

/// The labelled values of one metric of a server's /metrics: `name{pool="x"} v` → (x, v).
async fn labelled(url: &str, name: &str) -> Vec<(String, f64)> {
    let Some(text) = metrics_text(url).await else {
        return Vec::new();
    };
    let prefix = format!("{name}{{pool=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (pool, value) = rest.split_once("\"} ")?;
            Some((pool.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn metrics_text(url: &str) -> Option<String> {
    reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Waits until a started server is ready with every warm pool full (`workers` idle worker
/// zygotes each); prints how long that took from its start, and what the idle pools weigh
/// against one preloaded zygote.
async fn report_start(
    server: &OwnServer,
    work: &Workload,
    workers: usize,
    started: Instant,
) -> Result<()> {
    let url = server.url.as_str();
    // The packages are in and a run went through (the pools then use the environment).
    wait_ready(&reqwest::Client::new(), url, &server.key, work).await?;
    let deadline = started + Duration::from_secs(900);
    loop {
        if Instant::now() > deadline {
            bail!("the server at {url} did not become ready with {workers} warm workers per pool");
        }
        let ready = match reqwest::get(format!("{url}/ready")).await {
            Ok(r) => r.status().as_u16() == 200,
            Err(_) => false,
        };
        let pools = labelled(url, "hako_pool_workers").await;
        if ready && !pools.is_empty() && pools.iter().all(|(_, n)| *n >= workers as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready_ms = started.elapsed().as_millis();
    // Idle: the prepared children are confined and waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    let memory = labelled(url, "hako_pool_memory_bytes").await;
    let zygotes = labelled(url, "hako_pool_zygote_bytes").await;
    let names: Vec<&str> = memory.iter().map(|(p, _)| p.as_str()).collect();
    outln!(
        "ready in {ready_ms} ms with {workers} warm workers in each pool ({})",
        names.join(", ")
    );
    let zygote_of = |pool: &str| {
        zygotes
            .iter()
            .find(|(p, _)| p == pool)
            .map_or(0.0, |(_, b)| *b)
    };
    for (pool, bytes) in &memory {
        let zygote = zygote_of(pool);
        outln!(
            "  pool {pool:<6} idle memory {:>10} (proportional: parent, workers, prepared children)  one zygote {:>10} (resident)  ratio {:.2}x",
            mib(*bytes),
            mib(zygote),
            bytes / zygote.max(1.0)
        );
    }
    let total: f64 = memory.iter().map(|(_, b)| b).sum();
    let largest = zygotes.iter().map(|(_, b)| *b).fold(0.0, f64::max);
    outln!(
        "  all pools idle memory {} = {:.2}x the largest zygote ({})",
        mib(total),
        total / largest.max(1.0),
        mib(largest)
    );
    Ok(())
}

fn print_workers(runtime: &tokio::runtime::Runtime, url: &str) {
    let text = runtime.block_on(metrics_text(url));
    if let Some(text) = text {
        for line in text
            .lines()
            .filter(|l| l.starts_with("hako_pool_") || l.starts_with("hako_warm_workers"))
        {
            outln!("  {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_of_the_tree_has_its_part() {
        let root = 100;
        assert_eq!(Part::of(100, root, b"/usr/bin/hako\0serve\0"), Part::Server);
        for helper in [
            &b"/usr/bin/hako\0__zygote-worker\0"[..],
            b"/opt/x/hako\0__jail\0",
            b"hako\0__zygote-parent\0",
        ] {
            assert_eq!(Part::of(7, root, helper), Part::Helper, "{helper:?}");
        }
        for interpreter in [
            &b"/usr/bin/python3\0-s\0-B\0/opt/hako/zygote.py\0"[..],
            b"hako-init\0",
            b"/usr/bin/node\0--require\0/opt/hako/net/node-egress.js\0",
            // A program named like a helper's argument is not hako.
            b"/usr/bin/python3\0__jail\0",
            b"/usr/bin/hako\0serve\0",
            b"",
        ] {
            assert_eq!(
                Part::of(7, root, interpreter),
                Part::Interpreter,
                "{interpreter:?}"
            );
        }
    }

    #[test]
    fn each_build_goes_first_every_other_round() {
        assert_eq!(round_order(1), [0, 1]);
        assert_eq!(round_order(2), [1, 0]);
        assert_eq!(round_order(3), [0, 1]);
    }

    #[test]
    fn a_builds_summary_takes_the_medians_of_its_rounds_and_all_their_errors() {
        let round = |p50_ms: u64, cpu_ms: f64, errors: usize| Measured {
            latencies: vec![Duration::from_millis(p50_ms); 3],
            errors,
            cpu_ms: Some(cpu_ms),
            ..Measured::default()
        };
        let summary = BuildSummary::of(&[round(4, 5.0, 0), round(9, 4.0, 2), round(3, 6.5, 1)]);
        assert_eq!(
            summary,
            BuildSummary {
                p50_ms: Some(4.0),
                cpu_ms: Some(5.0),
                errors: 3
            }
        );
        // An even count: the mean of the middle two.
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
        // A round without a successful run has no p50; it does not move the median.
        let failed = Measured {
            errors: 5,
            ..Measured::default()
        };
        let summary = BuildSummary::of(&[round(4, 5.0, 0), failed, round(6, 7.0, 0)]);
        assert_eq!(summary.p50_ms, Some(5.0));
        assert_eq!(summary.errors, 5);
        assert_eq!(BuildSummary::of(&[Measured::default()]).p50_ms, None);
    }

    #[test]
    fn stat_gives_own_and_reaped_time_even_with_a_parenthesis_in_the_name() {
        let stat = "42 (py (x)) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 300 100 20 0 1 0 5 0 0";
        assert_eq!(stat_times(stat), Some((2000.0, 4000.0)));
        assert_eq!(stat_times("42 (short) S 1 2"), None);
        assert_eq!(stat_times("no name"), None);
    }

    #[test]
    fn an_interpreters_reaped_children_are_finished_runs() {
        let mut before = TreeCpu::default();
        before.add(Part::Server, 10.0, 0.0);
        let mut after = before;
        after.add(Part::Server, 5.0, 1.0);
        after.add(Part::Helper, 4.0, 2.0);
        after.add(Part::Interpreter, 3.0, 40.0);
        let per_run = after.per_run_since(&before, 2.0);
        assert_eq!(
            per_run,
            TreeCpu {
                server: 3.0,
                helpers: 3.0,
                interpreters: 1.5,
                runs: 20.0
            }
        );
        assert_eq!(per_run.total(), 27.5);
    }
}
