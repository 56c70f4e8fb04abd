//! `hako serve` spoken to the way Dify's code executor speaks to Dify Sandbox: its runner
//! templates, its `<<RESULT>>` extraction and its error mapping. Real server, real jail.

mod common;
use common::*;
use serde_json::{json, Value};

const PY_DEFAULT: &str = "def main(arg1: str, arg2: str):\n    return {\"result\": arg1 + arg2}\n";
const JS_DEFAULT: &str = "function main({arg1, arg2}) {\n    return { result: arg1 + arg2 }\n}\n";

fn spawn_server(extra: &str) -> Option<Server> {
    if !can_run_jail() {
        return None;
    }
    Some(Server::start(&format!("worker_timeout: 10\n{extra}"), &[]))
}

async fn result_json(server: &Server, language: &str, script: &str) -> Value {
    match dify_execute(server, language, script).await {
        DifyOutcome::Stdout(stdout) => {
            let text =
                dify_result(&stdout).unwrap_or_else(|| panic!("no <<RESULT>> in {stdout:?}"));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        }
        DifyOutcome::Failed(msg) => panic!("node failed: {msg}"),
    }
}

#[tokio::test]
async fn code_nodes_with_dify_templates() {
    let Some(server) = spawn_server("") else {
        return;
    };
    let inputs = json!({"arg1": "Hello", "arg2": "World"});
    let expected = json!({"result": "HelloWorld"});
    assert_eq!(
        result_json(&server, "python3", &python_runner(PY_DEFAULT, &inputs)).await,
        expected
    );
    assert_eq!(
        result_json(&server, "nodejs", &javascript_runner(JS_DEFAULT, &inputs)).await,
        expected
    );

    let unicode = json!({"arg1": "你好，", "arg2": "世界 🌍 \"quoted\" \\ back"});
    let expected = json!({"result": "你好，世界 🌍 \"quoted\" \\ back"});
    assert_eq!(
        result_json(&server, "python3", &python_runner(PY_DEFAULT, &unicode)).await,
        expected
    );
    assert_eq!(
        result_json(&server, "nodejs", &javascript_runner(JS_DEFAULT, &unicode)).await,
        expected
    );

    let nested = "def main(n: int) -> dict:\n    return {'items': [{'i': i, 'sq': i * i} for i in range(n)], 'ok': True, 'none': None}\n";
    let got = result_json(&server, "python3", &python_runner(nested, &json!({"n": 3}))).await;
    assert_eq!(got["items"][2], json!({"i": 2, "sq": 4}));
    assert_eq!(
        (got["ok"].clone(), got["none"].clone()),
        (json!(true), Value::Null)
    );
}

#[tokio::test]
async fn plain_print_and_json_are_byte_exact() {
    let Some(server) = spawn_server("") else {
        return;
    };
    assert_eq!(
        dify_execute(&server, "python3", "print('hello')").await,
        DifyOutcome::Stdout("hello\n".into())
    );
    let code = "import json\nprint(json.dumps({'a': [1, 2.5, 'x'], 'b': {'c': None}}))";
    assert_eq!(
        dify_execute(&server, "python3", code).await,
        DifyOutcome::Stdout("{\"a\": [1, 2.5, \"x\"], \"b\": {\"c\": null}}\n".into())
    );
    let b64 = "import base64\nprint(base64.b64encode(b'hako sandbox').decode())\nprint(base64.b64decode('aGFrbw==').decode())";
    assert_eq!(
        dify_execute(&server, "python3", b64).await,
        DifyOutcome::Stdout("aGFrbyBzYW5kYm94\nhako\n".into())
    );
    let big = "import sys\nsys.stdout.write(''.join(chr(97 + i % 26) for i in range(304487)))";
    let DifyOutcome::Stdout(out) = dify_execute(&server, "python3", big).await else {
        panic!("big output failed")
    };
    let expected: String = (0..304487)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    assert_eq!(out.len(), 304487);
    assert!(out == expected, "304,487 bytes differ");
}

#[tokio::test]
async fn dify_sandbox_suite_cases() {
    let Some(server) = spawn_server("") else {
        return;
    };
    let tz = "import datetime, zoneinfo\nprint(datetime.datetime(2024, 6, 1, tzinfo=zoneinfo.ZoneInfo('Asia/Shanghai')).isoformat())";
    assert_eq!(
        dify_execute(&server, "python3", tz).await,
        DifyOutcome::Stdout("2024-06-01T00:00:00+08:00\n".into())
    );

    // logging goes to stderr; a zero exit keeps `error` empty.
    let client = reqwest::Client::new();
    let body = json!({"language": "python3", "code": "import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.info('hello log')\nprint('done')"});
    let resp: Value = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["code"], 0);
    assert_eq!(resp["data"]["stdout"], "done\n");
    assert_eq!(resp["data"]["stderr"], "INFO:root:hello log\n");
    assert_eq!(resp["data"]["error"], "");
    assert_eq!(resp["data"]["exit_code"], 0);

    let DifyOutcome::Failed(err) =
        dify_execute(&server, "python3", "raise ValueError('bad input')").await
    else {
        panic!("raise did not fail the node")
    };
    assert!(err.starts_with("process exited with code 1\n"), "{err}");
    assert!(
        err.contains("Traceback (most recent call last)") && err.contains("ValueError: bad input"),
        "{err}"
    );

    for code in [
        "import os\nos.execl('/usr/bin/python3', 'python3', '-c', 'print(1)')",
        "import subprocess\nsubprocess.run(['echo', 'hi'])",
    ] {
        let DifyOutcome::Failed(err) = dify_execute(&server, "python3", code).await else {
            panic!("{code} ran")
        };
        assert!(err.contains("operation not permitted"), "{err}");
    }
    let DifyOutcome::Failed(err) = dify_execute(
        &server,
        "nodejs",
        "require('child_process').execSync('echo hi')",
    )
    .await
    else {
        panic!("child_process ran")
    };
    assert!(err.contains("operation not permitted"), "{err}");

    let resp: Value = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .json(&json!({"language": "nodejs", "code": "console.error('to stderr'); console.log('to stdout')"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            resp["data"]["stdout"].as_str(),
            resp["data"]["stderr"].as_str()
        ),
        (Some("to stdout\n"), Some("to stderr\n"))
    );
    assert_eq!(resp["data"]["error"], "");

    let DifyOutcome::Failed(err) =
        dify_execute(&server, "nodejs", "throw new Error('js boom')").await
    else {
        panic!("throw did not fail")
    };
    assert!(
        err.starts_with("process exited with code 1\n") && err.contains("Error: js boom"),
        "{err}"
    );
}

#[tokio::test]
async fn unsupported_language_and_wrong_key() {
    let Some(server) = spawn_server("") else {
        return;
    };
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", &server.key)
        .json(&json!({"language": "ruby", "code": "puts 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": -400, "message": "unsupported language", "data": null})
    );
    assert!(
        matches!(dify_execute(&server, "ruby", "puts 1").await, DifyOutcome::Failed(m) if m.contains("got status code 400"))
    );

    let resp = client
        .post(server.url("/v1/sandbox/run"))
        .header("X-Api-Key", "wrong")
        .json(&json!({"language": "python3", "code": "print(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), "");
}

#[tokio::test]
async fn twelve_concurrent_runs_over_six_admissions() {
    let Some(server) = spawn_server("max_workers: 2\nmax_requests: 6\n") else {
        return;
    };
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(server.url("/v1/sandbox/run"))
                .header("X-Api-Key", &server.key)
                .json(&json!({"language": "python3", "code": "import time\ntime.sleep(1)\nprint('slept')"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [vec![200; 6], vec![503; 6]].concat());
    assert_eq!(
        dify_execute(&server, "python3", "print('after')").await,
        DifyOutcome::Stdout("after\n".into())
    );
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let Some(server) = spawn_server("") else {
        return;
    };
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        client
            .post(server.url("/v1/sandbox/run"))
            .header("X-Api-Key", &server.key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"{\"language\": \"python3\", \"code\": \"pri".to_vec(), 400),
        (b"{\"language\": \"python3\", \"code\": 5}".to_vec(), 400),
        (b"{\"language\": 3, \"code\": \"print(1)\"}".to_vec(), 400),
        (vec![0xff, 0xfe, b'{', 0x80], 400),
        (Vec::new(), 400),
        (vec![b' '; 30 << 20], 413),
    ];
    for (body, want) in cases {
        let resp = post(body).await.unwrap();
        assert_eq!(resp.status().as_u16(), want);
        if want == 400 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["code"], -400, "{body}");
        }
    }
    let huge = "x".repeat(100 << 10);
    let resp = client
        .get(server.url("/health"))
        .header("X-Huge", huge)
        .send()
        .await;
    assert!(resp.map(|r| r.status().is_client_error()).unwrap_or(true));
    assert_eq!(
        dify_execute(&server, "python3", "print('alive')").await,
        DifyOutcome::Stdout("alive\n".into())
    );
}

#[test]
fn serve_with_no_config_uses_port_8194() {
    if !can_run_jail() {
        return;
    }
    if std::net::TcpListener::bind("0.0.0.0:8194").is_err() {
        panic!("port 8194 is taken on this machine; this test needs it free");
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir, 8194, "dify-sandbox".into(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(dify_execute(&server, "python3", "print(1)"));
    assert_eq!(out, DifyOutcome::Stdout("1\n".into()));
    assert!(server.stop().success());
}

#[test]
fn a_thousand_runs_leave_nothing_behind() {
    if !can_run_jail() {
        return;
    }
    // Only what is this server's own is counted (other servers and jails run on the host
    // meanwhile): its process tree and descriptors, the cgroups of its uid range and of its
    // zygote helpers, the mounts under its runtime directory.
    let runtime = own_runtime_dir();
    let uid_base = own_uid_base();
    let server = Server::start(
        &format!(
            "max_workers: 2\nhako:\n  uid_base: {uid_base}\n  runtime_dir: {}\n",
            runtime.path().display()
        ),
        &[],
    );
    let zygotes = HelperLog::start(server.pid(), "__zygote");
    let count_fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let mounts = || mounts_under(runtime.path()).len();
    // Left behind: groups whose helper is gone (a live helper may still be cleaning up).
    let run_cgroups = || {
        let helpers: std::collections::BTreeSet<u32> = children(server.pid()).into_iter().collect();
        let mut left: Vec<String> = run_cgroups_of_uids(uid_base)
            .into_iter()
            .filter(|dir| {
                let name = dir.rsplit('/').next().unwrap_or_default();
                let helper = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                !helper.is_some_and(|h| helpers.contains(&h))
            })
            .collect();
        left.extend(cgroups_of_helpers(&zygotes.gone(server.pid())));
        left
    };
    // The server's helpers by kind (the warm pools' zygotes and Node workers), and how many
    // processes they hold.
    let helpers = |pid: u32| {
        let mut kinds: Vec<String> = helpers_of(pid).into_iter().map(|(_, s)| s).collect();
        kinds.sort();
        (kinds, descendants(pid).len())
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Packages installed and the pool full before the warm-up (a package switch during it
    // would replace the zygotes); the warm-up's replacements are up before the baseline.
    server.wait_settled(6);
    // Warm up so pools and lazily opened descriptors are in the baseline.
    for _ in 0..50 {
        assert_eq!(
            rt.block_on(dify_execute(&server, "python3", "print(0)")),
            DifyOutcome::Stdout("0\n".into())
        );
    }
    server.wait_settled(6);
    let zygote_rss = |server: &Server| -> Vec<u64> {
        let text = rt.block_on(async {
            reqwest::get(server.url("/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        text.lines()
            .filter(|l| l.starts_with("hako_zygote_rss_bytes"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let rss_before = zygote_rss(&server);
    let (fds, mnt) = (count_fds(server.pid()), mounts());
    let helpers_before = helpers(server.pid());
    rt.block_on(async {
        let client = reqwest::Client::new();
        for i in 0..1000 {
            let resp: Value = client
                .post(server.url("/v1/sandbox/run"))
                .header("X-Api-Key", &server.key)
                .json(&json!({"language": "python3", "code": format!("print({i})")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(resp["data"]["stdout"], format!("{i}\n"), "{resp}");
        }
    });
    server.wait_settled(6);
    // The last runs' helpers finish cleaning up in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while helpers(server.pid()) != helpers_before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        helpers(server.pid()),
        helpers_before,
        "jail helpers left running"
    );
    assert_eq!(
        run_cgroups(),
        Vec::<String>::new(),
        "run cgroups left behind"
    );
    assert_eq!(mounts(), mnt, "host mounts changed");
    let after = count_fds(server.pid());
    // Pools may replace a worker meanwhile; a leak would grow with the 1,000 runs.
    assert!(
        after <= fds + 8,
        "server descriptors grew from {fds} to {after}"
    );
    let rss_after = zygote_rss(&server);
    assert!(!rss_before.is_empty(), "no zygote reported");
    let (before, after) = (
        rss_before.iter().max().unwrap(),
        rss_after.iter().max().unwrap_or(&0),
    );
    assert!(
        *after < before + (2 << 20),
        "zygote RSS grew from {before} to {after}"
    );
}

#[test]
fn a_client_that_gives_up_leaves_nothing_running() {
    if !can_run_jail() {
        return;
    }
    // Its own uid range: the run cgroups counted below are this server's only.
    let uid_base = own_uid_base();
    let config = format!("worker_timeout: 30\nhako:\n  mode: spawn\n  uid_base: {uid_base}\n");
    let server = Server::start(&config, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(1500))
            .build()
            .unwrap();
        let gave_up = client
            .post(server.url("/v1/sandbox/run"))
            .header("X-Api-Key", &server.key)
            .json(&json!({"language": "python3", "code": "import time\ntime.sleep(25)"}))
            .send()
            .await;
        assert!(
            gave_up.is_err(),
            "the request should time out on the client side"
        );
    });
    // The helper was asked to stop: within a few seconds no jail process and no cgroup of
    // this server remain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let children = descendants(server.pid());
        let cgroups = run_cgroups_of_uids(uid_base);
        if children.is_empty() && cgroups.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left running: children {children:?}, cgroups {cgroups:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        rt.block_on(dify_execute(&server, "python3", "print('after')")),
        DifyOutcome::Stdout("after\n".into())
    );
}
