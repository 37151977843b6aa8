//! The end-to-end benchmark through Apache Kafka on loopback (a private
//! node, or the broker at `ENGAGE_TEST_BOOTSTRAP`),
//! every figure a ratio against a baseline measured in the same run, or a
//! figure per customer. Not part of the test suite: `scripts/bench-e2e`.
//!
//! 1. **Throughput.** `engage loadgen`'s population preloads N events; a
//!    bare rdkafka consumer reads them (the client/broker ceiling); then
//!    `engage run` (release build) processes the same backlog from scratch,
//!    every output produced and acknowledged, the changelog written and all
//!    offsets committed. A second baseline, a bare consume → produce pipe
//!    ([`peers::pipe_floor`]), publishes as many records per event of the
//!    same sizes as engage did, with engage's client settings and no
//!    processing: the Kafka work any processor of this output volume pays.
//! 2. **Latency.** A fresh instance on fresh topics, loadgen producing new
//!    customers' traffic at half the rate engage just sustained (or
//!    `E2E_LATENCY_RATE`), lingering `E2E_LATENCY_LINGER_MS` (1) per batch. engage's own histograms give
//!    p50, p99 and p99.9: `engage_end_to_end_latency_seconds` (input
//!    record's produce timestamp → output acknowledged), overall and per
//!    second, and `engage_processing_latency_seconds` (record consumed →
//!    output acknowledged), engage's own share.
//! 3. **Memory.** One event for each of M customers (default 1 M) on fresh
//!    topics; RSS per customer once processed, and again in a fresh
//!    instance after restoring them all from the changelog.
//!
//! engage against the Kafka Streams peer is a test of its own in this
//! binary, [`peers`]' `fair` (`scripts/bench-peers`).
//!
//! `E2E_GUARANTEE=exactly_once` runs engage in its transactional mode;
//! `E2E_ALIGNMENT_WAITS` (default `5s`, the default `run.alignment_wait`)
//! runs the latency phase once per value in the comma-separated list, in
//! turn: `5s,0s,5s,0s` compares event-time alignment on and off.
//!
//! Prints one table and writes an SVG plot of throughput and latency over
//! time (`E2E_PLOT`, default `target/bench-e2e/e2e.svg`). `E2E_PHASES`
//! (default `throughput,latency,memory`) runs only some phases; latency
//! without throughput needs `E2E_LATENCY_RATE`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod peers;

use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics, committed};
use engage::cmd::loadgen::{LoadOptions, loadgen};
use engage::config::Config;
use engage::vocab::Format;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;
const LATENCY: &str = "engage_end_to_end_latency_seconds";
const PROCESSING: &str = "engage_processing_latency_seconds";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Cumulative bucket counts of a histogram in a Prometheus exposition, by
/// upper bound (the last is +Inf).
fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, value.trim().parse().ok()?))
        })
        .collect()
}

/// The q-quantile of the observations between two scrapes of a histogram,
/// interpolated linearly within its bucket (as Prometheus'
/// histogram_quantile does). `None` without observations.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(l, _)| l == le).map_or(0.0, |(_, m)| *m))).collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let share = if n > prev.1 { (rank - prev.1) / (n - prev.1) } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * share);
        }
        prev = (le, n);
    }
    None
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn scrape(addr: &str) -> String {
    common::http_get(addr, "/metrics").map(|r| r.1).unwrap_or_default()
}

/// Fresh co-partitioned topics, a free HTTP address, and an engage config
/// on both: each phase starts from these.
async fn fresh_setup(broker: &Broker, run_extra: &str) -> (Topics, String, String) {
    let topics = Topics::create(broker, PARTITIONS).await;
    let http = common::free_addr();
    // E2E_GUARANTEE=exactly_once measures the transactional mode.
    let guarantee = std::env::var("E2E_GUARANTEE").unwrap_or_else(|_| "at_least_once".into());
    let config_text = topics
        .config(broker, &format!("sweep_interval = \"1h\"\nprocessing_guarantee = \"{guarantee}\"\n{run_extra}"))
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{http}\""));
    (topics, http, config_text)
}

/// p50, p99 and p99.9 of a histogram's observations between two scrapes.
fn percentiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> String {
    let ms = |q| quantile(before, after, q).map_or(f64::NAN, |s| s * 1000.0);
    format!("p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms", ms(0.5), ms(0.99), ms(0.999))
}

fn wait_committed(broker: &Broker, topics: &Topics, clicks: i64, buys: i64, engage: &Engage, limit: Duration) {
    let t = Instant::now();
    while committed(broker, &topics.group, &topics.clickstream, PARTITIONS) < clicks
        || committed(broker, &topics.group, &topics.purchases, PARTITIONS) < buys
    {
        assert!(t.elapsed() < limit, "not all committed in {limit:?}:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The loadgen options both traffic phases share: `customers` customers,
/// good JSON records; each phase sets how much, how fast and the seed.
fn load_options(customers: usize) -> LoadOptions {
    LoadOptions {
        rate: None,
        customers,
        count: None,
        duration: None,
        seed: 0,
        format: Format::Json,
        bad_fraction: 0.0,
        history_days: 60.0,
        progress_every: Duration::from_secs(30),
    }
}

/// A bare consumer assigned both inputs' partitions from the beginning,
/// with librdkafka's defaults: the baselines read the backlog with it.
fn backlog_reader(broker: &Broker, topics: &Topics, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = broker.client_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topics.clickstream, p, Offset::Beginning).unwrap();
        tpl.add_partition_offset(&topics.purchases, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// What the throughput phase measured.
struct Throughput {
    /// engage's events/s over the whole backlog.
    rate: f64,
    /// The bare consumer's events/s.
    ceiling: f64,
    /// (seconds, events/s) once a second while engage ran.
    series: Vec<(f64, f64)>,
}

/// Phase 1: the bare-consumer ceiling and engage over the same backlog of
/// `n` events from `customers` customers.
async fn throughput_phase(broker: &Broker, n: u64, customers: usize, report: &mut Vec<String>) -> Throughput {
    // 1. Throughput. About 1.2 events per customer-day: enough history for N.
    let (topics, http, config_text) = fresh_setup(broker, "").await;
    let config = Config::from_toml(&config_text).unwrap();
    let history_days = (1.5 * n as f64 / (customers as f64 * 1.16)).max(30.0);
    let opts = LoadOptions { count: Some(n), seed: 1, history_days, ..load_options(customers) };
    let t = Instant::now();
    let load = loadgen(&config, &opts, CancellationToken::new()).await.unwrap();
    let preload = t.elapsed().as_secs_f64();
    assert_eq!(load.records, n, "the population produced fewer events than asked");

    let consumer = backlog_reader(broker, &topics, "ceiling");
    let broker_cpu = || broker.pid().map_or(0.0, common::cpu_seconds);
    let (cpu0, broker0) = (common::cpu_seconds(std::process::id()), broker_cpu());
    let t = Instant::now();
    let mut seen = 0;
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            m.unwrap();
            seen += 1;
        }
    }
    let ceiling = n as f64 / t.elapsed().as_secs_f64();
    let per_million = 1e6 / n as f64;
    let ceiling_cpu = (common::cpu_seconds(std::process::id()) - cpu0) * per_million;
    let ceiling_broker_cpu = (broker_cpu() - broker0) * per_million;
    drop(consumer);

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start_binary(dir.path(), &config_text, BINARY);
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    let (engage0, broker0) = (common::cpu_seconds(engage.child.id()), broker_cpu());
    let t = Instant::now();
    let mut series = Vec::new();
    let mut last = (0.0, 0.0);
    let (clicks, buys) = (load.clickstream as i64, load.purchases as i64);
    // Commits polled every 200 ms, throughput
    // sampled once a second.
    while committed(broker, &topics.group, &topics.clickstream, PARTITIONS) < clicks
        || committed(broker, &topics.group, &topics.purchases, PARTITIONS) < buys
    {
        assert!(t.elapsed() < Duration::from_secs(900), "{}", engage.log());
        std::thread::sleep(Duration::from_millis(200));
        let at = t.elapsed().as_secs_f64();
        if at - last.0 >= 1.0 {
            let records = sample(&scrape(&http), "engage_records_in_total");
            series.push((at, (records - last.1) / (at - last.0)));
            last = (at, records);
        }
    }
    let processing = t.elapsed().as_secs_f64();
    let rate = n as f64 / processing;
    let engage_cpu = (common::cpu_seconds(engage.child.id()) - engage0) * per_million;
    let engage_broker_cpu = (broker_cpu() - broker0) * per_million;
    let metrics = scrape(&http);
    let (outputs, changelog) =
        (sample(&metrics, "engage_outputs_total"), sample(&metrics, "engage_changelog_records_written_total"));
    drop(engage);
    let per_record = (outputs + changelog) / n as f64;
    let shape = peers::engage_shape(broker, &topics, n);
    let (pipe_rate, pipe_cpu, pipe_broker_cpu) = peers::pipe_floor(broker, &topics, n, shape).await;
    report.push(format!(
        "preload (engage loadgen, {customers} customers, {history_days:.0} days): {n} events in {preload:.1} s"
    ));
    report.push(format!("bare consumer ceiling                {ceiling:>10.0} events/s"));
    report.push(format!(
        "engage, all outputs acked + committed {rate:>9.0} events/s   {:.2} of the ceiling",
        rate / ceiling
    ));
    report.push(format!(
        "bare consume -> produce pipe          {pipe_rate:>9.0} events/s   engage is {:.2} of it \
         ({per_record:.2} messages per record: engage's {outputs:.0} outputs + {changelog:.0} changelog records)",
        rate / pipe_rate
    ));
    report.push(format!(
        "CPU seconds per million events: ceiling client {ceiling_cpu:.2} + broker {ceiling_broker_cpu:.2}; \
         pipe {pipe_cpu:.2} + broker {pipe_broker_cpu:.2}; engage {engage_cpu:.2} + broker {engage_broker_cpu:.2}"
    ));
    Throughput { rate, ceiling, series }
}

/// Phase 2: latency at `half` events/s for `latency_secs` (module docs):
/// (seconds, p50, p99, p99.9 in ms) once a second.
async fn latency_phase(
    broker: &Broker,
    half: f64,
    alignment_wait: &str,
    customers: usize,
    latency_secs: u64,
    report: &mut Vec<String>,
) -> Vec<(f64, f64, f64, f64)> {
    // 2. Latency at half the sustained rate (or E2E_LATENCY_RATE), new
    // customers (seed 2), on fresh topics with a fresh instance: the
    // backlog's batches would slow every fetch (module docs).
    let dir = tempfile::tempdir().unwrap();
    let (topics, http, config_text) = fresh_setup(broker, &format!("alignment_wait = \"{alignment_wait}\"\n")).await;
    let config = Config::from_toml(&config_text).unwrap();
    let engage = Engage::start_binary(dir.path(), &config_text, BINARY);
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    let start = scrape(&http);
    let before = buckets(&start, LATENCY);
    let processing_before = buckets(&start, PROCESSING);
    // The generator's linger is part of the end-to-end latency measured.
    let mut generator_config = config.clone();
    generator_config.kafka.properties.insert("linger.ms".into(), env_or("E2E_LATENCY_LINGER_MS", 1u32).to_string());
    let opts = LoadOptions {
        rate: Some(half),
        duration: Some(Duration::from_secs(latency_secs)),
        seed: 2,
        history_days: 60.0,
        ..load_options(customers)
    };
    let generator = {
        let config = generator_config;
        tokio::spawn(async move { loadgen(&config, &opts, CancellationToken::new()).await.unwrap() })
    };
    let t = Instant::now();
    let mut latency = Vec::new();
    let mut previous = before.clone();
    while !generator.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = buckets(&scrape(&http), LATENCY);
        let at = t.elapsed().as_secs_f64();
        let q = |q| quantile(&previous, &now, q).map(|s| s * 1000.0);
        if let (Some(p50), Some(p99), Some(p999)) = (q(0.5), q(0.99), q(0.999)) {
            latency.push((at, p50, p99, p999));
        }
        previous = now;
    }
    let sent = generator.await.unwrap();
    let (clicks, buys) = (sent.clickstream as i64, sent.purchases as i64);
    wait_committed(broker, &topics, clicks, buys, &engage, Duration::from_secs(300));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = scrape(&http);
    let after = buckets(&end, LATENCY);
    let observed = after.last().map_or(0.0, |b| b.1) - before.last().map_or(0.0, |b| b.1);
    report.push(format!(
        "latency at {half:.0} events/s asked, {:.0} achieved, alignment_wait {alignment_wait}, {observed:.0} outputs: {}",
        sent.rate,
        percentiles(&before, &after)
    ));
    report.push(format!(
        "  of which engage (record consumed -> output acked): {}",
        percentiles(&processing_before, &buckets(&end, PROCESSING))
    ));
    drop(engage);
    latency
}

/// Phase 3: RSS per customer at `memory_customers`, and after a restore.
async fn memory_phase(broker: &Broker, memory_customers: usize, report: &mut Vec<String>) {
    // 3. Memory: one event per customer on fresh topics.
    let dir = tempfile::tempdir().unwrap();
    let (topics, http, config_text) = fresh_setup(broker, "").await;
    let now = engage::clock::wall_clock_ms();
    let records: Vec<engage::cmd::loadgen::synth::Record> = (0..memory_customers)
        .map(|i| {
            let id = format!("m-{i:08}");
            let ts = now - 86_400_000 + (i as i64 % 86_400) * 1000;
            let value = format!(r#"{{"event_id":"e{i}","customer_id":"{id}","type":"page_view","ts":{ts}}}"#);
            engage::cmd::loadgen::synth::Record {
                topic: engage::vocab::InputKind::Clickstream,
                key: id.into_bytes(),
                value: value.into_bytes(),
                ts_ms: ts,
            }
        })
        .collect();
    let (clicks, buys) = common::feed(broker, &topics, &records);
    drop(records);
    let rss_of = |http: &str| {
        let m = scrape(http);
        (sample(&m, "engage_process_resident_memory_bytes"), sample(&m, "engage_customers"))
    };
    let mut engage = Engage::start_binary(dir.path(), &config_text, BINARY);
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    wait_committed(broker, &topics, clicks, buys, &engage, Duration::from_secs(600));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, held) = rss_of(&http);
    assert_eq!(engage.terminate(Duration::from_secs(60)).0, Some(0), "{}", engage.log());
    let restored = Engage::start_binary(dir.path(), &config_text, BINARY);
    let t = Instant::now();
    while common::http_get(&http, "/readyz").map(|r| r.0) != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(300), "{}", restored.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let restore_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_restored, held_restored) = rss_of(&http);
    report.push(format!(
        "memory at {held:.0} customers: RSS {:.0} MiB, {:.0} B per customer; after restore ({held_restored:.0} customers, ready in {restore_secs:.1} s): {:.0} MiB, {:.0} B per customer",
        rss / 1048576.0,
        rss / held,
        rss_restored / 1048576.0,
        rss_restored / held_restored
    ));
    drop(restored);
}

/// The release binary every phase runs.
const BINARY: &str = env!("CARGO_BIN_EXE_engage");

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-e2e"]
async fn end_to_end() {
    let n: u64 = env_or("E2E_EVENTS", 2_000_000);
    let customers: usize = env_or("E2E_CUSTOMERS", 50_000);
    let memory_customers: usize = env_or("E2E_MEMORY_CUSTOMERS", 1_000_000);
    let latency_secs: u64 = env_or("E2E_LATENCY_SECONDS", 30);
    let phases = std::env::var("E2E_PHASES").unwrap_or_else(|_| "throughput,latency,memory".into());
    let broker = Broker::start();
    let mut report = Vec::new();

    let throughput = if phases.contains("throughput") {
        Some(throughput_phase(&broker, n, customers, &mut report).await)
    } else {
        None
    };
    let mut latency = Vec::new();
    let mut half = 0.0;
    if phases.contains("latency") {
        let measured = throughput.as_ref().map(|t| (t.rate / 2.0).round());
        half = std::env::var("E2E_LATENCY_RATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .or(measured)
            .expect("the latency phase runs at half the throughput phase's rate, or at E2E_LATENCY_RATE");
        // E2E_ALIGNMENT_WAITS runs the phase once per run.alignment_wait
        // given, in turn (e.g. "5s,0s,5s,0s": with and without alignment).
        let waits = std::env::var("E2E_ALIGNMENT_WAITS").unwrap_or_else(|_| "5s".into());
        for (i, wait) in waits.split(',').enumerate() {
            let series = latency_phase(&broker, half, wait.trim(), customers, latency_secs, &mut report).await;
            if i == 0 {
                latency = series;
            }
        }
    }
    if phases.contains("memory") {
        memory_phase(&broker, memory_customers, &mut report).await;
    }

    println!("\nend-to-end benchmark, {PARTITIONS} partitions, Apache Kafka on loopback, release build");
    for line in &report {
        println!("  {line}");
    }
    // The plot needs the throughput series (latency may be absent).
    if let Some(t) = &throughput {
        let plot = std::env::var("E2E_PLOT")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-e2e/e2e.svg").to_string());
        let plot = std::path::PathBuf::from(plot);
        std::fs::create_dir_all(plot.parent().unwrap()).unwrap();
        std::fs::write(&plot, svg(&t.series, t.ceiling, &latency, half)).unwrap();
        println!("  plot: {}", plot.display());
    }
}

/// Two stacked line charts: throughput over time (with the ceiling) and
/// latency percentiles over time.
fn svg(throughput: &[(f64, f64)], ceiling: f64, latency: &[(f64, f64, f64, f64)], rate: f64) -> String {
    use engage::charts::{LineChart, Series, line_charts};
    let end = throughput.last().map_or(1.0, |t| t.0);
    let series = |i: usize| latency.iter().map(|l| (l.0, [l.1, l.2, l.3][i])).collect::<Vec<_>>();
    let title = format!("end-to-end latency at {rate:.0} events/s (ms, per second)");
    line_charts(&[
        LineChart {
            title: "engage throughput while processing the backlog (events/s)",
            x_label: "seconds",
            series: vec![
                Series { name: "engage", colour: "#1f77b4", points: throughput.to_vec() },
                Series {
                    name: "bare consumer ceiling",
                    colour: "#999999",
                    points: vec![(0.0, ceiling), (end, ceiling)],
                },
            ],
            x_categories: None,
            y_max: None,
        },
        LineChart {
            title: &title,
            x_label: "seconds",
            series: vec![
                Series { name: "p50", colour: "#2ca02c", points: series(0) },
                Series { name: "p99", colour: "#ff7f0e", points: series(1) },
                Series { name: "p99.9", colour: "#d62728", points: series(2) },
            ],
            x_categories: None,
            y_max: None,
        },
    ])
    .expect("the benchmark's series are finite")
}

#[test]
fn quantiles_interpolate_within_buckets_between_two_scrapes() {
    let before = [(0.01, 0.0), (0.1, 0.0), (f64::INFINITY, 0.0)];
    let after = [(0.01, 50.0), (0.1, 100.0), (f64::INFINITY, 100.0)];
    assert_eq!(quantile(&before, &after, 0.5), Some(0.01));
    assert!((quantile(&before, &after, 0.75).unwrap() - 0.055).abs() < 1e-12);
    assert_eq!(quantile(&after, &after, 0.5), None, "no observations in between");
    let text = "x_bucket{le=\"0.01\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_count 4\n";
    assert_eq!(buckets(text, "x"), vec![(0.01, 3.0), (f64::INFINITY, 4.0)]);
}
