//! The loader end to end: file, environment, validation and their messages.

use super::env::parse_bool;
use super::validate::parse_go_duration;
use super::*;
use hako_jail::seccomp::resolve_syscall;
use std::collections::HashMap;
use std::time::Duration;

const DIFY_SAMPLE: &str = "\
app:
  port: 8194
  debug: True
  key: dify-sandbox
max_workers: 4
max_requests: 50
worker_timeout: 5
python_path: /usr/local/bin/python3
enable_network: True # please make sure there is no network risk in your environment
allowed_syscalls: # please leave it empty if you have no idea how seccomp works
proxy:
  socks5: ''
  http: ''
  https: ''
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let (_dir, path) = write(text);
    let map: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(Some(&path), &|k| map.get(k).cloned())
}

fn err_text(text: &str, env: &[(&str, &str)]) -> String {
    match load_text(text, env) {
        Ok(_) => panic!("expected an error for {text:?} with {env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_difys_sample_file() {
    let loaded = load_text(DIFY_SAMPLE, &[]).unwrap();
    let c = &loaded.config;
    assert_eq!(c.app.port, 8194);
    assert!(c.app.debug);
    assert_eq!(c.app.key, "dify-sandbox");
    assert_eq!(
        (c.max_workers, c.max_requests, c.worker_timeout),
        (4, 50, 5)
    );
    assert_eq!(c.python_path, PathBuf::from("/usr/local/bin/python3"));
    assert!(c.enable_network);
    assert!(c.allowed_syscalls.is_empty());
    assert_eq!(c.proxy, ProxyConfig::default());
    assert!(loaded.source.is_some());
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("unknown key")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn warns_about_the_default_key_and_disabled_network() {
    let loaded = load_text(DIFY_SAMPLE, &[("ENABLE_NETWORK", "false")]).unwrap();
    assert!(!loaded.config.enable_network);
    let all = loaded.warnings.join("\n");
    assert!(all.contains("\"dify-sandbox\""), "{all}");
    assert!(
        all.contains("Dify always sends enable_network: true"),
        "{all}"
    );

    let loaded = load_text(DIFY_SAMPLE, &[("API_KEY", "s3cret")]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn dify_extra_keys_and_empty_values_are_accepted() {
    let text = "\
python_lib_path:
  - /usr/local/lib/python3.10
  - /etc/ssl/certs/ca-certificates.crt
python_pip_mirror_url:
python_deps_update_interval: 30m
nodejs_path:
enable_preload: false
";
    let c = load_text(text, &[]).unwrap().config;
    assert_eq!(c.python_lib_path.len(), 2);
    assert_eq!(c.python_pip_mirror_url, "");
    assert_eq!(c.nodejs_path, Config::default().nodejs_path);
    assert_eq!(c.deps_update_interval(), Some(Duration::from_secs(1800)));
    // YAML 1.1 booleans, as Go's yaml reads them into a bool.
    assert!(
        load_text("enable_preload: yes", &[])
            .unwrap()
            .config
            .enable_preload
    );
    assert!(load_text("", &[]).unwrap().config == Config::default());
}

#[test]
fn allowed_syscalls_take_names_and_numbers() {
    let loaded = load_text("allowed_syscalls: [0, mbind, \"1\"]", &[]).unwrap();
    assert_eq!(loaded.config.allowed_syscalls, ["0", "mbind", "1"]);
    let numbers = loaded.config.allowed_syscall_numbers();
    assert_eq!(numbers[1], resolve_syscall("mbind").unwrap());
    assert_eq!(numbers[0], 0);
    let c = load_text("allowed_syscalls:\n  - 2\n  - 3\n", &[])
        .unwrap()
        .config;
    assert_eq!(c.allowed_syscalls, ["2", "3"]);
}

#[test]
fn allowed_syscalls_from_env_are_merged_with_the_file() {
    let text = "allowed_syscalls: [mbind]";
    let c = load_text(text, &[("ALLOWED_SYSCALLS", "syslog, 0,mbind")])
        .unwrap()
        .config;
    assert_eq!(c.allowed_syscalls, ["mbind", "syslog", "0"]);
}

#[test]
fn unknown_syscalls_name_the_key_and_the_value() {
    let e = err_text("allowed_syscalls: [no_such_call]", &[]);
    assert!(
        e.contains("\"no_such_call\"") && e.contains("allowed_syscalls"),
        "{e}"
    );
    let e = err_text("", &[("ALLOWED_SYSCALLS", "mbind,999999")]);
    assert!(
        e.contains("\"999999\" in ALLOWED_SYSCALLS (environment)"),
        "{e}"
    );
    let mut c = Config {
        allowed_syscalls: vec!["bogus".into()],
        ..Config::default()
    };
    let origins = validate::Origins {
        file: "configuration".into(),
        env: Default::default(),
    };
    assert!(validate::resolve(&mut c, &origins, 1).is_err());
}

#[test]
fn unknown_keys_warn_and_do_not_fail() {
    let text = "future_key: 1\napp:\n  port: 9000\n  colour: blue\nhako:\n  limits:\n    gpus: 2\n";
    let loaded = load_text(text, &[]).unwrap();
    assert_eq!(loaded.config.app.port, 9000);
    let all = loaded.warnings.join("\n");
    for key in ["future_key", "app.colour", "hako.limits.gpus"] {
        assert!(all.contains(&format!("unknown key {key} ")), "{key}: {all}");
    }
}

#[test]
fn dify_env_vars_override_the_file() {
    let env = [
        ("API_KEY", "k"),
        ("SANDBOX_PORT", "9001"),
        ("MAX_WORKERS", "8"),
        ("MAX_REQUESTS", "80"),
        ("WORKER_TIMEOUT", "15"),
        ("ENABLE_NETWORK", "FALSE"),
        ("ENABLE_PRELOAD", "1"),
        ("PYTHON_PATH", "/opt/py/bin/python3"),
        ("NODEJS_PATH", "/opt/node/bin/node"),
        ("PIP_MIRROR_URL", "https://mirror.example/simple"),
        ("PYTHON_DEPS_UPDATE_INTERVAL", "1h30m"),
        ("PYTHON_LIB_PATH", "/a, /b"),
        ("HTTP_PROXY", "http://ssrf_proxy:3128"),
        ("HTTPS_PROXY", "http://ssrf_proxy:3129"),
        ("SOCKS5_PROXY", "socks5://p:1080"),
        ("DEBUG", "false"),
        ("GIN_MODE", "release"),
    ];
    let c = load_text(DIFY_SAMPLE, &env).unwrap().config;
    assert_eq!((c.app.key.as_str(), c.app.port), ("k", 9001));
    assert_eq!(
        (c.max_workers, c.max_requests, c.worker_timeout),
        (8, 80, 15)
    );
    assert!(!c.enable_network && c.enable_preload && !c.app.debug);
    assert_eq!(c.python_path, PathBuf::from("/opt/py/bin/python3"));
    assert_eq!(c.nodejs_path, PathBuf::from("/opt/node/bin/node"));
    assert_eq!(c.python_pip_mirror_url, "https://mirror.example/simple");
    assert_eq!(c.deps_update_interval(), Some(Duration::from_secs(5400)));
    assert_eq!(c.python_lib_path, ["/a", "/b"]);
    assert_eq!(c.proxy.http, "http://ssrf_proxy:3128");
    assert_eq!(c.proxy.https, "http://ssrf_proxy:3129");
    assert_eq!(c.proxy.socks5, "socks5://p:1080");
}

#[test]
fn empty_env_values_count_as_unset() {
    let c = load_text(DIFY_SAMPLE, &[("MAX_WORKERS", ""), ("API_KEY", " ")])
        .unwrap()
        .config;
    assert_eq!(c.max_workers, 4);
    assert_eq!(c.app.key, "dify-sandbox");
}

#[test]
fn gin_mode_sets_debug_unless_debug_is_given() {
    assert!(
        !load_text(DIFY_SAMPLE, &[("GIN_MODE", "release")])
            .unwrap()
            .config
            .app
            .debug
    );
    let env = [("GIN_MODE", "release"), ("DEBUG", "true")];
    assert!(load_text(DIFY_SAMPLE, &env).unwrap().config.app.debug);
    let e = err_text("", &[("GIN_MODE", "fast")]);
    assert!(e.contains("GIN_MODE"), "{e}");
}

#[test]
fn hako_env_vars_override_the_hako_section() {
    let text = "hako:\n  mode: zygote\n  limits:\n    memory_mb: 256\n";
    let env = [
        ("HAKO_MODE", "spawn"),
        ("HAKO_STATE_DIR", "/srv/state"),
        ("HAKO_RUNTIME_DIR", "/srv/run"),
        ("HAKO_NODEJS_POOL", "0"),
        ("HAKO_INSECURE", "yes"),
        ("HAKO_LOG_FORMAT", "json"),
        ("HAKO_MAX_BODY_BYTES", "1024"),
        ("HAKO_LIMITS_PIDS", "64"),
        ("HAKO_LIMITS_TMP_MB", "32"),
        ("HAKO_LIMITS_OUTPUT_BYTES", "1000"),
        ("HAKO_NETWORK_MODE", "host"),
        ("HAKO_PYTHON_PRELOAD", "json, numpy,os.path"),
        ("HAKO_PYTHON_WARMUP", "import json\njson.dumps([1])\n"),
    ];
    let loaded = load_text(text, &env).unwrap();
    let h = &loaded.config.hako;
    assert_eq!(h.mode, ExecMode::Spawn);
    assert_eq!(h.state_dir, PathBuf::from("/srv/state"));
    assert_eq!(h.runtime_dir, PathBuf::from("/srv/run"));
    assert_eq!(h.nodejs_pool, 0);
    assert!(h.insecure);
    assert_eq!(h.log_format, LogFormat::Json);
    assert_eq!(h.max_body_bytes, 1024);
    assert_eq!(
        h.limits.memory_mb, 256,
        "the file's value stays when no env var is set"
    );
    assert_eq!(
        (h.limits.pids, h.limits.tmp_mb, h.limits.output_bytes),
        (64, 32, 1000)
    );
    assert_eq!(h.network.mode, NetworkPolicy::Host);
    assert_eq!(h.python_preload, ["json", "numpy", "os.path"]);
    assert_eq!(h.python_warmup, "import json\njson.dumps([1])\n");
    assert!(loaded.warnings.iter().any(|w| w.contains("hako.insecure")));
    let c = load_text("", &[("HAKO_LIMITS_MEMORY_MB", "128")])
        .unwrap()
        .config;
    assert_eq!(c.hako.limits.memory_mb, 128);
}

#[test]
fn bad_env_values_name_the_variable() {
    let e = err_text("", &[("MAX_WORKERS", "abc")]);
    assert_eq!(
        e,
        "invalid value \"abc\" for MAX_WORKERS (environment): expected a positive integer"
    );
    for (var, value) in [
        ("MAX_WORKERS", "0"),
        ("MAX_REQUESTS", "-1"),
        ("WORKER_TIMEOUT", "5s"),
        ("SANDBOX_PORT", "70000"),
        ("SANDBOX_PORT", "0"),
        ("ENABLE_NETWORK", "maybe"),
        ("DEBUG", "2"),
        ("HAKO_MODE", "fork"),
        ("HAKO_NETWORK_MODE", "none"),
        ("HAKO_LOG_FORMAT", "xml"),
        ("HAKO_LIMITS_MEMORY_MB", "0"),
        ("HAKO_MAX_BODY_BYTES", "lots"),
        ("HAKO_INSECURE", "sure"),
    ] {
        let e = err_text("", &[(var, value)]);
        assert!(
            e.contains(&format!("{value:?} for {var} (environment)")),
            "{e}"
        );
    }
}

#[test]
fn bad_file_values_name_the_key_and_file() {
    let (_dir, path) = write("max_workers: 0\n");
    let e = Config::load_with_env(Some(&path), &no_env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "invalid value 0 for max_workers ({}): must be at least 1",
            path.display()
        )
    );
    for (text, needle) in [
        (
            "max_workers: 8\nmax_requests: 4",
            "invalid value 4 for max_requests",
        ),
        ("worker_timeout: 0", "invalid value 0 for worker_timeout"),
        ("app:\n  port: 0", "invalid value 0 for app.port"),
        ("app:\n  key: ''", "for app.key"),
        (
            "hako:\n  limits:\n    pids: 0",
            "invalid value 0 for hako.limits.pids",
        ),
        ("hako:\n  limits:\n    tmp_mb: 0", "hako.limits.tmp_mb"),
        (
            "hako:\n  limits:\n    output_bytes: 0",
            "hako.limits.output_bytes",
        ),
        (
            "hako:\n  limits:\n    memory_mb: 0",
            "hako.limits.memory_mb",
        ),
        ("hako:\n  max_body_bytes: 0", "hako.max_body_bytes"),
        (
            "hako:\n  python_preload: ['a b']",
            "\"a b\" for hako.python_preload",
        ),
        (
            "python_deps_update_interval: soon",
            "\"soon\" for python_deps_update_interval",
        ),
    ] {
        let e = err_text(text, &[]);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
    // The environment is named when it set the bad value.
    let e = err_text("max_workers: 2", &[("MAX_REQUESTS", "1")]);
    assert!(
        e.starts_with("invalid value 1 for MAX_REQUESTS (environment)"),
        "{e}"
    );
}

#[test]
fn type_errors_and_broken_yaml_name_the_file() {
    for text in [
        "max_workers: many",
        "app: [1, 2]",
        "app:\n  port: 8194\n bad indent: [",
    ] {
        let (_dir, path) = write(text);
        match Config::load_with_env(Some(&path), &no_env) {
            Err(ConfigError::Parse { path: p, source }) => {
                assert_eq!(p, path);
                assert!(!source.to_string().is_empty());
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("conf/config.yaml");
    let loaded = Config::load_from(None, &absent, &no_env).unwrap();
    assert!(loaded.source.is_none());
    assert_eq!(loaded.config, Config::default());
    assert!(
        loaded.warnings[0].contains("built-in defaults"),
        "{:?}",
        loaded.warnings
    );

    let e = Config::load_with_env(Some(&absent), &no_env).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");

    std::fs::create_dir_all(absent.parent().unwrap()).unwrap();
    std::fs::write(&absent, "max_workers: 3\n").unwrap();
    let loaded = Config::load_from(None, &absent, &no_env).unwrap();
    assert_eq!(loaded.source.as_deref(), Some(absent.as_path()));
    assert_eq!(loaded.config.max_workers, 3);
}

#[test]
fn go_durations() {
    for (text, secs) in [
        ("0", 0.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("+2m3s", 123.0),
        ("10us", 0.00001),
    ] {
        assert_eq!(
            parse_go_duration(text).unwrap().as_secs_f64(),
            secs,
            "{text}"
        );
    }
    for text in ["", "30", "m", "1x", "-5m", "1h 30m", "1..5s"] {
        assert!(parse_go_duration(text).is_err(), "{text}");
    }
}

#[test]
fn bool_spellings() {
    for t in ["1", "t", "TRUE", "True", "yes", "Y", "on"] {
        assert_eq!(parse_bool(t), Some(true), "{t}");
    }
    for f in ["0", "f", "false", "FALSE", "No", "off"] {
        assert_eq!(parse_bool(f), Some(false), "{f}");
    }
    assert_eq!(parse_bool("2"), None);
}

#[test]
fn http_keys_come_from_the_file_and_the_environment() {
    let text = "hako:\n  http:\n    header_timeout_secs: 3\n    metrics_public: false\n";
    let env = [
        ("HAKO_HTTP_MAX_CONNECTIONS", "7"),
        ("HAKO_HTTP_METRICS_PUBLIC", "yes"),
    ];
    let c = load_text(text, &env).unwrap().config;
    let want = HttpConfig {
        header_timeout_secs: 3,
        idle_timeout_secs: 60,
        max_connections: 7,
        metrics_public: true,
    };
    assert_eq!(c.hako.http, want);
    let env = [("HAKO_HTTP_IDLE_TIMEOUT_SECS", "0")];
    assert!(err_text("", &env).contains("HAKO_HTTP_IDLE_TIMEOUT_SECS"));
    let text = "hako:\n  http:\n    max_connections: 0\n";
    assert!(err_text(text, &[]).contains("hako.http.max_connections"));
}

#[test]
fn more_workers_than_a_zygote_parent_serves_are_refused_in_zygote_mode() {
    let (_dir, path) = write("max_workers: 65\nmax_requests: 100\n");
    let e = Config::load_with_env(Some(&path), &no_env)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "invalid value 65 for max_workers ({}): must be at most 64 in zygote mode (a warm \
             Python pool's preloaded parent serves at most 64 worker zygotes); lower it, or set \
             hako.mode: spawn",
            path.display()
        )
    );
    let e = err_text("", &[("MAX_WORKERS", "100"), ("MAX_REQUESTS", "200")]);
    assert!(
        e.starts_with("invalid value 100 for MAX_WORKERS (environment): must be at most 64"),
        "{e}"
    );
    // 64 is served; more are fine where no zygote serves them.
    let c = load_text("max_workers: 64\nmax_requests: 64\n", &[]).unwrap();
    assert_eq!(c.config.max_workers, 64);
    let c = load_text(
        "max_workers: 65\nmax_requests: 100\nhako:\n  mode: spawn\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.config.max_workers, 65);
}

#[test]
fn run_ids_split_uid_count_and_fit_a_pods_user_namespace() {
    // The default keeps the long-standing layout: 65536 spawn ids, 196608 for zygotes, 65536
    // for the Node pool.
    let c = load_text("", &[]).unwrap().config;
    let ranges = c.id_ranges();
    assert_eq!(ranges.spawn, (0, 65536));
    assert_eq!(ranges.zygote, (65536, 196608));
    assert_eq!(ranges.node, (262144, 65536));
    // A user-namespaced pod maps 65536 ids: every range lies inside 10000 .. 60000.
    let c = load_text("hako:\n  uid_base: 10000\n  uid_count: 50000\n", &[])
        .unwrap()
        .config;
    let ranges = c.id_ranges();
    for (offset, count) in [ranges.spawn, ranges.zygote, ranges.node] {
        assert!(count >= 1024, "{ranges:?}");
        assert!(c.hako.uid_base + offset + count <= 60000, "{ranges:?}");
    }
    assert_eq!(ranges.spawn.0 + ranges.spawn.1, ranges.zygote.0);
    assert_eq!(ranges.zygote.0 + ranges.zygote.1, ranges.node.0);
    assert_eq!(
        load_text("", &[("HAKO_UID_COUNT", "20000")])
            .unwrap()
            .config
            .hako
            .uid_count,
        20000
    );
    // Too few ids, or a range past the last uid, are refused.
    let e = err_text("hako:\n  uid_count: 5000\n", &[]);
    assert!(e.contains("invalid value 5000 for hako.uid_count"), "{e}");
    assert!(e.contains("must be at least 5120"), "{e}");
    let e = err_text("", &[("HAKO_UID_BASE", "4294967000")]);
    assert!(
        e.starts_with("invalid value 4294967000 for HAKO_UID_BASE (environment)"),
        "{e}"
    );
}
