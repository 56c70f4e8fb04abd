//! Package environments end to end: real pip and npm installs from the registries, bound
//! read-only into runs of a real `hako serve`, under the default seccomp policy.
//!
//! Downloads are cached in /var/cache/hako-test (pip, npm) and the heavy environment lives
//! in a stable state dir there, so a repeated run reuses it instead of installing again.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const CACHE: &str = "/var/cache/hako-test";
const HEAVY: &str = "numpy\npandas\nmatplotlib\nscipy\npillow\nboto3\n";

/// Installer caches shared by every test and every CI run.
fn cache_env() -> Vec<(String, String)> {
    vec![
        ("PIP_CACHE_DIR".into(), format!("{CACHE}/pip")),
        ("npm_config_cache".into(), format!("{CACHE}/npm")),
    ]
}

/// Starts `hako serve` with the requirements files already in place.
fn start(state_dir: &Path, python: &str, node: Option<&str>) -> Server {
    start_with(state_dir, python, node, "", "")
}

/// [`start`], with more YAML: `top` at the top level, `hako` (indented) in the hako section.
fn start_with(state_dir: &Path, python: &str, node: Option<&str>, top: &str, hako: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = format!("test-key-{port}");
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("dependencies")).unwrap();
    let yaml = format!(
        "app:\n  port: {port}\n  key: {key}\nworker_timeout: 60\n{top}hako:\n  state_dir: {}\n{hako}",
        state_dir.display()
    );
    std::fs::write(dir.path().join("conf/config.yaml"), yaml).unwrap();
    std::fs::write(
        dir.path().join("dependencies/python-requirements.txt"),
        python,
    )
    .unwrap();
    if let Some(node) = node {
        std::fs::write(
            dir.path().join("dependencies/nodejs-requirements.txt"),
            node,
        )
        .unwrap();
    }
    let env = cache_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_in(dir, port, key, &env)
}

/// A state dir the runs' uids can traverse (temp dirs are 0700).
fn temp_state() -> tempfile::TempDir {
    std::fs::create_dir_all(CACHE).unwrap();
    let dir = tempfile::tempdir_in(CACHE).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn get(server: &Server, path: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(server.url(path))
        .header("X-Api-Key", &server.key)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// `refresh` rebuilds now and answers when the build is over.
async fn refresh(server: &Server, language: &str) -> Value {
    let t = Instant::now();
    let report = get(
        server,
        &format!("/v1/sandbox/dependencies/refresh?language={language}"),
    )
    .await;
    eprintln!(
        "refresh {language}: {:.1}s, state {}",
        t.elapsed().as_secs_f64(),
        report["data"]["state"]
    );
    report["data"].clone()
}

fn names(report: &Value) -> Vec<String> {
    report["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_lowercase())
        .collect()
}

/// The `data` of one run.
async fn run(server: &Server, language: &str, code: &str) -> Value {
    let body = json!({"language": language, "code": code, "preload": "", "enable_network": false});
    let resp = reqwest::Client::new()
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["code"], 0, "{json}");
    json["data"].clone()
}

/// Runs `code` and asserts it succeeded and printed `expected`.
async fn expect_stdout(server: &Server, what: &str, language: &str, code: &str, expected: &str) {
    let data = run(server, language, code).await;
    assert_eq!(data["error"], "", "{what}: {data}");
    assert_eq!(data["stdout"], expected, "{what}: {data}");
    if data["blocked_syscalls"]
        .as_array()
        .is_some_and(|b| !b.is_empty())
    {
        eprintln!("{what}: denied but survived: {}", data["blocked_syscalls"]);
    }
}

#[tokio::test]
async fn heavy_packages_and_node_modules_work_under_the_default_policy() {
    if !can_run_jail() {
        return;
    }
    let state = Path::new(CACHE).join("state-heavy");
    std::fs::create_dir_all(&state).unwrap();
    let server = start(&state, HEAVY, Some("# utilities\nlodash\n"));
    let python = refresh(&server, "python3").await;
    assert_eq!(python["state"], "ready", "{python}");
    let installed = names(&python);
    for name in [
        "numpy",
        "pandas",
        "matplotlib",
        "scipy",
        "pillow",
        "boto3",
        "jinja2",
        "requests",
        "httpx",
    ] {
        assert!(
            installed.contains(&name.to_string()),
            "{name} not listed: {installed:?}"
        );
    }
    let node = refresh(&server, "nodejs").await;
    assert_eq!(names(&node), vec!["lodash"], "{node}");

    let cases = [
        ("numpy", "import numpy as np\na = np.random.rand(300, 300) + np.eye(300) * 300\nprint(np.allclose(np.linalg.inv(a) @ a, np.eye(300)))\n", "True\n"),
        ("pandas", "import io, pandas as pd\ndf = pd.read_csv(io.StringIO('k,v,t\\na,1,2024-01-01\\nb,2,2024-02-01\\na,3,2024-03-01'), parse_dates=['t'])\nprint(df.groupby('k')['v'].sum().to_dict(), df['t'].dt.month.tolist())\n", "{'a': 4, 'b': 2} [1, 2, 3]\n"),
        ("matplotlib", "import io, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3], [1, 4, 9])\nbuf = io.BytesIO()\nfig.savefig(buf, format='png')\nprint(buf.getvalue()[:4])\n", "b'\\x89PNG'\n"),
        ("scipy", "from scipy.optimize import minimize\nr = minimize(lambda x: (x[0] - 3) ** 2 + (x[1] + 1) ** 2, [0, 0])\nprint(r.success, [round(float(v), 3) for v in r.x])\n", "True [3.0, -1.0]\n"),
        ("pillow", "import io\nfrom PIL import Image\nsrc = io.BytesIO()\nImage.new('RGB', (64, 32), 'red').save(src, 'PNG')\nim = Image.open(io.BytesIO(src.getvalue())).resize((16, 8))\nprint(im.size, im.getpixel((0, 0)))\n", "(16, 8) (255, 0, 0)\n"),
        ("boto3", "import boto3\nc = boto3.client('s3', region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b')\nprint(c.meta.region_name)\n", "us-east-1\n"),
        ("requests+httpx", "import requests, httpx\nprint(requests.Session is not None, httpx.Client is not None)\n", "True True\n"),
        ("sys.path", "import sys\nprint('/opt/hako/python/site-packages' in sys.path)\n", "True\n"),
    ];
    for (what, code, expected) in cases {
        let t = Instant::now();
        expect_stdout(&server, what, "python3", code, expected).await;
        eprintln!("{what}: {} ms", t.elapsed().as_millis());
    }
    let jinja = jinja2_runner(
        "Hello {{ name }}! {{ items | join(',') }}",
        &json!({"name": "hako", "items": [1, 2]}),
    );
    expect_stdout(
        &server,
        "jinja2",
        "python3",
        &jinja,
        "<<RESULT>>Hello hako! 1,2<<RESULT>>\n",
    )
    .await;
    expect_stdout(
        &server,
        "lodash",
        "nodejs",
        "const _ = require('lodash');\nconsole.log(_.chunk([1, 2, 3, 4], 2));\n",
        "[ [ 1, 2 ], [ 3, 4 ] ]\n",
    )
    .await;

    // Nothing of the environment is writable by a run.
    let attacks = [
        (
            "modify a module",
            "open('/opt/hako/python/site-packages/jinja2/__init__.py', 'a').write('x')\n",
        ),
        (
            "add a .pth file",
            "open('/opt/hako/python/site-packages/evil.pth', 'w').write('import os')\n",
        ),
        (
            "replace a package",
            "import os\nos.rename('/opt/hako/python/site-packages/six.py', '/opt/hako/python/site-packages/six2.py')\n",
        ),
        (
            "chmod",
            "import os\nos.chmod('/opt/hako/python/site-packages/numpy', 0o777)\n",
        ),
    ];
    for (what, code) in attacks {
        let data = run(&server, "python3", code).await;
        let error = data["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("Read-only file system")
                || error.contains("Permission denied")
                || error.contains("Operation not permitted"),
            "{what} was not refused: {data}"
        );
    }
    let data = run(
        &server,
        "nodejs",
        "require('fs').writeFileSync('/opt/hako/nodejs/node_modules/lodash/index.js', 'x')",
    )
    .await;
    assert!(
        data["error"].as_str().unwrap().contains("EROFS")
            || data["error"].as_str().unwrap().contains("EACCES"),
        "{data}"
    );
    expect_stdout(
        &server,
        "after the attacks",
        "python3",
        "import jinja2, os\nprint(os.path.exists('/opt/hako/python/site-packages/evil.pth'))\n",
        "False\n",
    )
    .await;
}

#[tokio::test]
async fn refresh_switches_environments_without_restart_or_failed_runs() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    let server = start(state.path(), "", None);
    let first = refresh(&server, "python3").await;
    assert_eq!(first["state"], "ready", "{first}");
    assert!(
        names(&first).contains(&"jinja2".to_string()),
        "default packages missing: {first}"
    );
    let data = run(&server, "python3", "import six").await;
    assert!(
        data["error"]
            .as_str()
            .unwrap()
            .contains("No module named 'six'"),
        "{data}"
    );

    // Runs in flight during the switch keep their environment and succeed.
    let in_flight = "import time, jinja2\ntime.sleep(0.5)\nimport requests\nprint('ok')\n";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut runners = Vec::new();
    for _ in 0..3 {
        let stop = stop.clone();
        let url = server.url("/v1/sandbox/run");
        let key = server.key.clone();
        runners.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut results = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"language": "python3", "code": in_flight});
                let resp = client
                    .post(&url)
                    .header("X-Api-Key", &key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let json: Value = resp.json().await.unwrap();
                results.push(json["data"].clone());
            }
            results
        }));
    }
    let path = server
        .dir
        .path()
        .join("dependencies/python-requirements.txt");
    std::fs::write(&path, "six\n").unwrap();
    let second = refresh(&server, "python3").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for runner in runners {
        for data in runner.await.unwrap() {
            assert_eq!(
                data["stdout"], "ok\n",
                "a run during the switch failed: {data}"
            );
            total += 1;
        }
    }
    assert!(total >= 3, "only {total} runs overlapped the switch");
    assert_eq!(second["state"], "ready", "{second}");
    assert!(names(&second).contains(&"six".to_string()), "{second}");
    expect_stdout(
        &server,
        "new package",
        "python3",
        "import six\nprint(six.PY3)\n",
        "True\n",
    )
    .await;
    // The previous environment is kept (a run may still use it).
    let envs = std::fs::read_dir(state.path().join("packages/python3"))
        .unwrap()
        .count();
    assert!(
        envs >= 2,
        "old environment removed too early ({envs} entries)"
    );
}

#[tokio::test]
async fn failed_install_is_reported_and_the_previous_environment_stays() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    let server = start(state.path(), "six\n", None);
    let good = refresh(&server, "python3").await;
    assert_eq!(good["state"], "ready", "{good}");

    let path = server
        .dir
        .path()
        .join("dependencies/python-requirements.txt");
    std::fs::write(&path, "six\nhako-no-such-package-4f1c9\n").unwrap();
    let bad = refresh(&server, "python3").await;
    assert_eq!(bad["state"], "failed", "{bad}");
    let error = bad["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("hako-no-such-package-4f1c9"),
        "pip's error is not shown: {bad}"
    );
    assert!(
        names(&bad).contains(&"six".to_string()),
        "the list lost the previous environment: {bad}"
    );
    let listed = get(&server, "/v1/sandbox/dependencies?language=python3").await;
    assert_eq!(listed["data"], bad, "list and refresh disagree");
    expect_stdout(
        &server,
        "previous environment",
        "python3",
        "import six, jinja2\nprint('still here')\n",
        "still here\n",
    )
    .await;

    let doctor = std::process::Command::new(HAKO)
        .arg("doctor")
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("packages python3"))
        .unwrap_or_else(|| panic!("no packages line: {text}"));
    assert!(line.contains("failed"), "{line}");
    assert!(
        text.contains("hako-no-such-package-4f1c9"),
        "doctor does not show pip's error: {text}"
    );
}

#[tokio::test]
async fn the_first_run_after_a_fresh_start_waits_for_the_packages() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    // The port is open: Dify sends its first template now, while jinja2 is being installed.
    let server = start(state.path(), "", None);
    let template = jinja2_runner("Hello {{ name }}!", &json!({"name": "hako"}));
    expect_stdout(
        &server,
        "first jinja2 template",
        "python3",
        &template,
        "<<RESULT>>Hello hako!<<RESULT>>\n",
    )
    .await;
    let report = get(&server, "/v1/sandbox/dependencies?language=python3").await;
    assert_eq!(report["data"]["state"], "ready", "{report}");
}

#[tokio::test]
async fn a_run_past_the_packages_wait_gets_503_with_retry_after() {
    if !can_run_jail() {
        return;
    }
    // A package index that accepts connections and never answers: the install cannot end.
    let index = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let top = format!(
        "python_pip_mirror_url: http://127.0.0.1:{}/simple\n",
        index.local_addr().unwrap().port()
    );
    let state = temp_state();
    let server = start_with(state.path(), "", None, &top, "  packages_wait_seconds: 1\n");
    let client = reqwest::Client::new();
    let body =
        json!({"language": "python3", "code": "print(1)", "preload": "", "enable_network": false});
    let resp = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["code"], -503, "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("hako.packages_wait_seconds"), "{message}");
    // Liveness and readiness keep their meaning meanwhile.
    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = client.get(server.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    // The index goes away: the install fails, and runs no longer wait for it.
    drop(index);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = get(&server, "/v1/sandbox/dependencies?language=python3").await;
        if report["data"]["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "install never failed: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let data = run(&server, "python3", "print(1)").await;
    assert_eq!(data["stdout"], "1\n", "{data}");
}

/// Serves `body` for every GET on a loopback port, for as long as the test runs.
fn serve_file(body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    port
}

#[tokio::test]
async fn fonts_prepared_caches_and_provisioned_data_work_offline() {
    if !can_run_jail() {
        return;
    }
    // Data the operator provisions: a local NLTK corpus and an encoding file from a URL.
    let source = temp_state();
    let corpus = source.path().join("nltk_data/corpora/hako_test");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("README"), "offline corpus\n").unwrap();
    let port = serve_file("encoding from the url\n");
    let encoding = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4";
    let hako = format!(
        "  python_data:\n    - source: {}\n      target: nltk_data\n    - source: http://127.0.0.1:{port}/cl100k_base.tiktoken\n      target: tiktoken/{encoding}\n",
        source.path().join("nltk_data").display()
    );
    let state = temp_state();
    let requirements = "pillow\nmatplotlib\njoblib\n";
    for mode in ["spawn", "zygote"] {
        let server = start_with(
            state.path(),
            requirements,
            None,
            "",
            &format!("  mode: {mode}\n{hako}"),
        );
        let report = refresh(&server, "python3").await;
        assert_eq!(report["state"], "ready", "{report}");
        expect_stdout(
            &server,
            "a TrueType font by name",
            "python3",
            "from PIL import ImageFont\nprint(ImageFont.truetype('DejaVuSans.ttf', 12).getname())\n",
            "('DejaVu Sans', 'Book')\n",
        )
        .await;
        let chart = "import io, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.set_title('hako')\nbuf = io.BytesIO()\nfig.savefig(buf, format='png')\nprint(buf.getvalue()[:4])\n";
        for round in 0..2 {
            let data = run(&server, "python3", chart).await;
            assert_eq!(data["stdout"], "b'\\x89PNG'\n", "{mode} {round}: {data}");
            let stderr = data["stderr"].as_str().unwrap_or_default();
            assert!(
                !stderr.contains("building the font cache"),
                "{mode} {round}: font cache rebuilt: {data}"
            );
            assert_eq!(
                data["blocked_syscalls"],
                json!([]),
                "{mode} {round}: {data}"
            );
        }
        let offline = format!(
            "import os, joblib\nprint(open(os.path.join(os.environ['NLTK_DATA'], 'corpora/hako_test/README')).read(), end='')\nprint(open(os.path.join(os.environ['TIKTOKEN_CACHE_DIR'], '{encoding}')).read(), end='')\n"
        );
        let data = run(&server, "python3", &offline).await;
        assert_eq!(
            data["stdout"], "offline corpus\nencoding from the url\n",
            "{mode}: {data}"
        );
        // joblib finds /dev/shm and warns about nothing.
        assert_eq!(data["stderr"], "", "{mode}: {data}");
    }
}

/// Waits until `/ready` answers 200 and at least `zygotes` warm zygotes of the current
/// package environment are idle (a first run makes the pool notice the environment).
async fn wait_zygotes(server: &Server, zygotes: f64) {
    run(server, "python3", "pass").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    while Instant::now() < deadline {
        let ready = reqwest::get(server.url("/ready"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let metrics = match reqwest::get(server.url("/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let warm = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hako_warm_workers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if ready == 200 && warm >= zygotes {
            return;
        }
        last = format!("/ready {ready}, {warm} warm zygotes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the zygotes did not start: {last}");
}

#[tokio::test]
async fn each_run_forks_from_the_lightest_zygote_its_imports_allow() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    let server = start_with(
        state.path(),
        "numpy\n",
        None,
        "max_workers: 1\n",
        "  mode: zygote\n",
    );
    let report = refresh(&server, "python3").await;
    assert_eq!(report["state"], "ready", "{report}");
    // One plain, one lean and one heavy zygote.
    wait_zygotes(&server, 3.0).await;
    let loaded = "print(*(m in sys.modules for m in ('jinja2', 'requests', 'numpy')))\n";
    // Standard-library imports only (Dify's Python template): the plain zygote, which
    // imported nothing of the environment, not even jinja2.
    let plain = format!("import sys, json\nfrom base64 import b64decode\n{loaded}");
    let data = run(&server, "python3", &plain).await;
    assert_eq!(data["stdout"], "False False False\n", "{data}");
    // Dify's Jinja2 template: the lean zygote (jinja2, not the rest of the environment).
    let template = format!(
        "import jinja2, sys\nprint(jinja2.Template('{{{{ a }}}}').render(a='ok'))\n{loaded}"
    );
    let data = run(&server, "python3", &template).await;
    assert_eq!(data["stdout"], "ok\nTrue False False\n", "{data}");
    // numpy: the heavy zygote, which imported the whole environment (requests among it).
    let heavy = format!("import sys\nimport numpy as np\nprint(int(np.arange(4).sum()))\n{loaded}");
    let data = run(&server, "python3", &heavy).await;
    assert_eq!(data["stdout"], "6\nTrue True True\n", "{data}");
}

#[tokio::test]
async fn each_pool_reports_its_workers_and_memory() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    let server = start_with(
        state.path(),
        "six\n",
        None,
        "max_workers: 2\n",
        "  mode: zygote\n",
    );
    let report = refresh(&server, "python3").await;
    assert_eq!(report["state"], "ready", "{report}");
    wait_zygotes(&server, 6.0).await;
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str, pool: &str| -> f64 {
        let prefix = format!("{name}{{pool=\"{pool}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}in /metrics:\n{metrics}"))
    };
    for pool in ["plain", "lean", "heavy"] {
        assert!(
            value("hako_pool_workers", pool) >= 1.0,
            "{pool}:\n{metrics}"
        );
        assert!(
            value("hako_pool_memory_bytes", pool) > 0.0,
            "{pool}:\n{metrics}"
        );
        assert!(
            value("hako_pool_zygote_bytes", pool) > 0.0,
            "{pool}:\n{metrics}"
        );
        // Each worker's calibration listed the pages a run writes.
        assert!(
            value("hako_pool_hot_pages", pool) > 0.0,
            "{pool}:\n{metrics}"
        );
    }
    // The heavy parent imported requests, httpx and six; the plain one none of them.
    assert!(
        value("hako_pool_zygote_bytes", "heavy") > value("hako_pool_zygote_bytes", "plain"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_runs_memory_limit_is_its_own_whatever_the_preload_weighs() {
    if !can_run_jail() {
        return;
    }
    let state = temp_state();
    // The heavy zygote's warm-up holds 160 MiB, more than a run's whole limit (128 MiB).
    let hako = "  mode: zygote\n  limits:\n    memory_mb: 128\n  python_warmup: \"import builtins\\nbuiltins.HAKO_BALLAST = b'x' * (160 << 20)\"\n";
    let server = start_with(state.path(), "six\n", None, "max_workers: 1\n", hako);
    let report = refresh(&server, "python3").await;
    assert_eq!(report["state"], "ready", "{report}");
    wait_zygotes(&server, 3.0).await;
    // Forked from that zygote (it sees the ballast), the run still gets its own 100 MiB.
    let code = "import builtins, six\nheld = bytearray(100 << 20)\nheld[::4096] = b'y' * len(held[::4096])\nprint(len(getattr(builtins, 'HAKO_BALLAST', b'')) >> 20, len(held) >> 20)\n";
    let data = run(&server, "python3", code).await;
    assert_eq!(data["stdout"], "160 100\n", "{data}");
    assert_eq!(data["status"], "ok", "{data}");
    // And the limit still holds for the run itself.
    let bomb = "import six\nheld = bytearray(300 << 20)\nheld[::4096] = b'y' * len(held[::4096])\n";
    let data = run(&server, "python3", bomb).await;
    assert_eq!(data["status"], "memory_limit", "{data}");
}

#[tokio::test]
async fn nltk_reads_provisioned_data_with_its_own_loader() {
    if !can_run_jail() {
        return;
    }
    // nltk 3.10 and newer read data only from files owned by root or by the reader.
    let source = temp_state();
    let stopwords = source.path().join("nltk_data/corpora/stopwords");
    std::fs::create_dir_all(&stopwords).unwrap();
    std::fs::write(stopwords.join("english"), "a\nan\nthe\n").unwrap();
    let hako = format!(
        "  python_data:\n    - source: {}\n      target: nltk_data\n",
        source.path().join("nltk_data").display()
    );
    let state = temp_state();
    let code = "import os, nltk\nfrom nltk.corpus import stopwords\nst = os.stat(os.environ['NLTK_DATA'] + '/corpora/stopwords/english')\nprint(nltk.__version__ >= '3.10', stopwords.words('english'), st.st_uid)\n";
    for mode in ["spawn", "zygote"] {
        let server = start_with(
            state.path(),
            "nltk>=3.10\n",
            None,
            "",
            &format!("  mode: {mode}\n{hako}"),
        );
        let report = refresh(&server, "python3").await;
        assert_eq!(report["state"], "ready", "{report}");
        let data = run(&server, "python3", code).await;
        assert_eq!(
            data["stdout"], "True ['a', 'an', 'the'] 0\n",
            "{mode}: {data}"
        );
    }
}
