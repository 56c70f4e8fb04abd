//! Prometheus metrics, kept per [`Metrics`] value rather than in a global recorder so
//! several servers can live in one process.

use metrics::{Counter, Gauge, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::Duration;

const METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let help = |text: &'static str| text.into();
        let counter = |name: &'static str, text| {
            recorder.describe_counter(KeyName::from(name), None, help(text))
        };
        counter("hako_runs_total", "Finished runs by language and status.");
        counter(
            "hako_rejected_total",
            "Requests refused before running, by reason.",
        );
        counter(
            "hako_http_connections_rejected_total",
            "Connections closed at once because hako.http.max_connections were open.",
        );
        counter(
            "hako_http_connections_timed_out_total",
            "Connections closed by the server: phase head (hako.http.header_timeout_secs) or idle.",
        );
        let name = KeyName::from("hako_http_connections_open");
        recorder.describe_gauge(name, None, help("Open connections to the API."));
        let name = KeyName::from("hako_run_duration_seconds");
        recorder.describe_histogram(name, None, help("Wall time of runs, without queueing."));
        let name = KeyName::from("hako_queue_depth");
        recorder.describe_gauge(name, None, help("Admitted runs waiting for a worker."));
        let name = KeyName::from("hako_runs_in_flight");
        recorder.describe_gauge(name, None, help("Runs executing now."));
        let handle = recorder.handle();
        let metrics = Metrics { recorder, handle };
        // Present from the start, so dashboards see zeros rather than nothing.
        metrics.queue_depth().set(0.0);
        metrics.in_flight().set(0.0);
        metrics.connections_open().set(0.0);
        metrics
            .counter("hako_http_connections_rejected_total", Vec::new())
            .increment(0);
        metrics
    }

    pub fn run_finished(&self, language: &str, status: &str, elapsed: Duration) {
        let labels = vec![Label::new("language", language.to_string())];
        let key = Key::from_parts("hako_run_duration_seconds", labels.clone());
        self.recorder
            .register_histogram(&key, &METADATA)
            .record(elapsed.as_secs_f64());
        let mut labels = labels;
        labels.push(Label::new("status", status.to_string()));
        self.counter("hako_runs_total", labels).increment(1);
    }

    pub fn rejected(&self, reason: &'static str) {
        self.counter("hako_rejected_total", vec![Label::new("reason", reason)])
            .increment(1);
    }

    pub fn queue_depth(&self) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name("hako_queue_depth"), &METADATA)
    }

    pub fn in_flight(&self) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name("hako_runs_in_flight"), &METADATA)
    }

    pub fn connections_open(&self) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name("hako_http_connections_open"), &METADATA)
    }

    pub fn connection_rejected(&self) {
        self.counter("hako_http_connections_rejected_total", Vec::new())
            .increment(1);
    }

    pub fn connection_timed_out(&self, phase: &'static str) {
        let labels = vec![Label::new("phase", phase)];
        self.counter("hako_http_connections_timed_out_total", labels)
            .increment(1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_count_separately() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.run_finished("python3", "ok", Duration::from_millis(20));
        a.rejected("auth");
        let text = a.render();
        assert!(
            text.contains(r#"hako_runs_total{language="python3",status="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hako_rejected_total{reason="auth"} 1"#),
            "{text}"
        );
        assert!(text.contains("hako_run_duration_seconds_bucket"), "{text}");
        assert!(text.contains("hako_queue_depth 0"), "{text}");
        assert!(!b.render().contains("hako_runs_total"));
    }
}
