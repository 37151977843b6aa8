//! The command line as a user types it: a missing config file, `engage
//! demo`, `engage loadgen --create-topics`, and SIGINT (Ctrl-C) stopping
//! `engage run` cleanly.

mod cli_support;
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics};
use rdkafka::consumer::{BaseConsumer, Consumer};

#[test]
fn a_config_file_that_does_not_exist_is_a_clear_error_for_every_command_that_reads_one() {
    for command in [&["run"][..], &["topics", "create"], &["loadgen", "--count", "1"]] {
        let args: Vec<&str> = command.iter().copied().chain(["--config", "/does/not/exist.toml"]).collect();
        let done = cli_support::engage(&args, Duration::from_secs(20));
        assert_eq!(done.code, Some(1), "{args:?}: {}", done.output());
        assert!(
            done.stderr.contains("engage: error:")
                && done.stderr.contains("/does/not/exist.toml")
                && done.stderr.contains("does not exist"),
            "{args:?}: the error names the file and what is wrong with it:\n{}",
            done.output()
        );
    }
}

/// A child process whose stdout is collected line by line as it runs.
struct Running {
    child: std::process::Child,
    stdout: Arc<Mutex<String>>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start engage");
        let stdout = Arc::new(Mutex::new(String::new()));
        let sink = stdout.clone();
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running { child, stdout }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the exit, killing the process and failing after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("engage did not exit within {timeout:?}:\n{}", self.stdout());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `engage demo` with `args` and `--http`, `--api` on free ports (it prints
/// the addresses it was given, so port 0 would not tell the test where it
/// serves). Another process can take the port between the check and the
/// demo's bind: then the demo exits before it says it serves HTTP, and is
/// started again on another port, at most three times.
fn demo_serving_http(args: &[&str]) -> (Running, String, String) {
    for attempt in 1..=3 {
        let (addr, api) = (common::free_addr(), common::free_addr());
        let with_http: Vec<&str> =
            args.iter().copied().chain(["--http", addr.as_str(), "--api", api.as_str()]).collect();
        let mut demo = Running::spawn(&with_http);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = demo.stdout();
            if out.contains(&format!("HTTP: http://{addr}/")) && out.contains(&format!("API: http://{api}/")) {
                return (demo, addr, api);
            }
            if let Some(status) = demo.child.try_wait().unwrap() {
                assert!(attempt < 3, "the demo exited ({status}) without serving HTTP three times:\n{}", demo.stdout());
                break;
            }
            assert!(Instant::now() < deadline, "the demo did not serve HTTP within 60 s:\n{}", demo.stdout());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unreachable!("three attempts")
}

/// The numbers of the demo's last line, `stopped: N records in, N applied,
/// N dead letters, N outputs, N customers`.
fn stopped_counts(stdout: &str) -> Vec<u64> {
    let line = stdout.lines().find(|l| l.starts_with("stopped: ")).unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).map(|w| w.parse().unwrap()).collect()
}

#[test]
fn demo_with_a_duration_prints_its_broker_progress_and_summary_serves_http_and_exits_zero() {
    // 40 s: the demo's group joins take several seconds of it (its engage
    // and its watcher each join the embedded broker's groups), and at 10 s
    // a loaded machine left no score change counted before the end.
    let (mut demo, addr, api) = demo_serving_http(&["demo", "--duration", "40s", "--customers", "300"]);
    // While it runs, the endpoints the README names answer (ready once
    // its group has joined and the partitions are restored).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = None;
    while Instant::now() < deadline && ready != Some(200) {
        ready = common::http_get(&addr, "/readyz").map(|r| r.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ready, Some(200), "/readyz while the demo runs:\n{}", demo.stdout());
    let (status, body) = common::http_get(&api, "/v1/customers?health=at_risk").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["customers"].is_array(), "{body}");
    let (status, metrics) = common::http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("engage_records_in_total"), "{metrics}");

    let code = demo.wait_exit(Duration::from_secs(60));
    let out = demo.stdout();
    assert_eq!(code, Some(0), "{out}");
    // The broker's address, for any Kafka client.
    let broker_line = out.lines().find(|l| l.contains("embedded Kafka-protocol broker: ")).expect(&out);
    let address = broker_line.split("broker: ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()), "{broker_line}");
    assert!(out.contains(&format!("HTTP: http://{addr}/metrics")), "{out}");
    // Throughput as it happens, every 2 s.
    let progress: Vec<&str> = out.lines().filter(|l| l.contains(" events/s | ")).collect();
    assert!(progress.len() >= 2, "{out}");
    assert!(progress.iter().any(|l| !l.contains("| 0 score changes")), "scores reported:\n{out}");
    let counts = stopped_counts(&out);
    let (records, outputs, customers) = (counts[0], counts[3], counts[4]);
    assert!(records > 0 && outputs > 0 && customers > 0 && customers <= 300, "{out}");
}

#[test]
fn demo_stops_cleanly_on_ctrl_c() {
    let mut demo = Running::spawn(&["demo", "--customers", "100", "--http", "", "--api", ""]);
    // Ctrl-C once the processor has published something.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !demo.stdout().lines().any(|l| l.contains(" events/s | ") && !l.contains("| 0 score changes")) {
        assert!(Instant::now() < deadline, "no score changes reported:\n{}", demo.stdout());
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    cli_support::signal(demo.child.id(), 2);
    let code = demo.wait_exit(Duration::from_secs(40));
    let out = demo.stdout();
    assert_eq!(code, Some(0), "{out}");
    assert!(started.elapsed() < Duration::from_secs(35), "run.shutdown_deadline is 30 s: {:?}", started.elapsed());
    assert!(stopped_counts(&out)[0] > 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loadgen_creates_co_partitioned_inputs_and_they_hold_exactly_the_records_it_reports() {
    let broker = Broker::start();
    let topics = Topics::named("lg");
    let dir = tempfile::tempdir().unwrap();
    let path = cli_support::write_config(dir.path(), &topics.config(&broker, ""));
    let args = [
        "loadgen",
        "--config",
        &path,
        "--create-topics",
        "3",
        "--count",
        "1500",
        "--customers",
        "200",
        "--bad-fraction",
        "0.1",
        "--seed",
        "7",
    ];
    let done = cli_support::engage(&args, Duration::from_secs(120));
    assert_eq!(done.code, Some(0), "{}", done.output());
    assert!(done.stderr.contains("loadgen: created"), "{}", done.output());
    let summary: serde_json::Value =
        serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}: {}", done.output()));
    let n = |k: &str| summary[k].as_u64().unwrap_or_else(|| panic!("{k} in {summary}"));
    assert_eq!(n("records"), 1500, "--count");
    assert_eq!(n("clickstream") + n("purchases"), 1500, "{summary}");
    assert!(n("purchases") > 0 && n("clickstream") > 0, "{summary}");
    let bad = n("bad_records");
    assert!(bad > 50 && bad < 300, "about a tenth bad: {summary}");

    let md: BaseConsumer = broker.client_config().create().unwrap();
    for name in [&topics.clickstream, &topics.purchases] {
        let m = md.fetch_metadata(Some(name), Duration::from_secs(10)).unwrap();
        assert_eq!(m.topics()[0].partitions().len(), 3, "{name}: --create-topics 3");
    }
    let clicks = common::read_topic(&broker, &topics.clickstream, n("clickstream") as usize, Duration::from_secs(60));
    let buys = common::read_topic(&broker, &topics.purchases, n("purchases") as usize, Duration::from_secs(60));
    assert_eq!(clicks.len() as u64, n("clickstream"));
    assert_eq!(buys.len() as u64, n("purchases"));
    // Keyed by customer: every good record's key is its customer_id (a bad
    // one may be unparsable or name someone else, on purpose).
    let keyed = clicks
        .iter()
        .chain(&buys)
        .filter(|r| {
            let v = serde_json::from_slice::<serde_json::Value>(&r.value).unwrap_or_default();
            r.key.as_deref().is_some_and(|k| v["customer_id"].as_str().map(str::as_bytes) == Some(k))
        })
        .count() as u64;
    assert!(keyed >= 1500 - bad, "{keyed} records keyed by their customer of 1500 with {bad} bad");

    // A second run with --create-topics keeps the topics and appends.
    let again = cli_support::engage(&args, Duration::from_secs(120));
    assert_eq!(again.code, Some(0), "{}", again.output());
    assert!(!again.stderr.contains("loadgen: created"), "{}", again.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_run_with_exit_zero_and_everything_it_read_committed() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let total = 20_000;
    let records: Vec<engage::cmd::loadgen::synth::Record> = (0..total)
        .map(|i| {
            let c = format!("u{i:05}");
            let value = serde_json::json!({"event_id": format!("e{i}"), "customer_id": c, "type": "page_view",
                                           "ts": 1_735_689_600_000i64 + i as i64});
            engage::cmd::loadgen::synth::Record {
                topic: engage::vocab::InputKind::Clickstream,
                key: c.into_bytes(),
                value: value.to_string().into_bytes(),
                ts_ms: 0,
            }
        })
        .collect();
    common::feed(&broker, &topics, &records);
    let dir = tempfile::tempdir().unwrap();
    let mut engage = Engage::start(dir.path(), &topics.config(&broker, ""));
    let addr = engage.http_addr();
    // Ctrl-C as soon as records are being read.
    common::wait_for_records_read(&addr, &engage);
    let started = Instant::now();
    cli_support::signal(engage.child.id(), 2);
    let status = engage.wait_exit(Duration::from_secs(40));
    let log = engage.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "within run.shutdown_deadline (20 s): {:?}",
        started.elapsed()
    );
    assert!(log.contains("SIGINT: shutting down"), "{log}");
    // Mid-stream by the run's own account: it stopped having read fewer
    // records than there were.
    let read = common::summary_records(&log);
    assert!(read < total as i64, "the run read all {total} records before it stopped: nothing was left mid-stream");
    let committed = common::committed(&broker, &topics.group, &topics.clickstream, 2);
    assert_eq!(committed, read, "read {read} records but committed {committed}");
}
