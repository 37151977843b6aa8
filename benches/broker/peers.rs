//! The peers phase of the end-to-end benchmark (issue 19): engage against
//! the Kafka Streams peer (`benches/peers/kafka-streams`) on the same broker
//! and the same backlog, in one run, as one table.
//!
//! On the throughput phase's backlog, after the bare consumer, engage and
//! the pipe: engage in exactly-once mode, and the peer in both of its
//! guarantees, each with its own group and output topics. For each: events/s
//! from ready (engage's "state restored", the peer's RUNNING state) until
//! every input offset is committed, client and broker CPU seconds per
//! million events over that time, peak RSS (`VmHWM`), and the time from
//! process start to the first record on its score topic (JVM start-up
//! included). On the memory phase's 1 M customers: RSS per customer, and
//! for the JVM the heap after a full GC (`jcmd GC.run`, `GC.heap_info`).
//! Latency at one common offered rate ([`latency`]), measured the same way
//! for every system from outside.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::common::peer;
use super::common::runs::run_topics;
use super::common::{self, Broker, Engage, Topics, committed};
use super::{BINARY, PARTITIONS};

/// One system's row of the table; `None` where not measured.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    pub rate: Option<f64>,
    pub client_cpu: Option<f64>,
    pub broker_cpu: Option<f64>,
    /// Bytes.
    pub peak_rss: Option<f64>,
    /// Bytes per customer at the memory phase's population.
    pub rss_per_customer: Option<f64>,
    /// JVM heap after a full GC, bytes per customer.
    pub heap_per_customer: Option<f64>,
    /// (p50, p99) ms at the common rate.
    pub latency: Option<(f64, f64)>,
    /// Seconds from process start to the first output record.
    pub first_output: Option<f64>,
    /// Records published (outputs and changelog) per input event.
    pub published: Option<f64>,
}

/// How many records `topics` hold (high watermarks summed over
/// [`PARTITIONS`] partitions each; transaction markers included, a few per
/// commit).
pub fn records_in(broker: &Broker, topics: &[&str]) -> i64 {
    let consumer: BaseConsumer = broker.client_config().set("group.id", common::unique("count")).create().unwrap();
    topics
        .iter()
        .flat_map(|t| (0..PARTITIONS).map(move |p| (*t, p)))
        .filter_map(|(t, p)| consumer.fetch_watermarks(t, p, Duration::from_secs(5)).ok())
        .map(|(_, high)| high)
        .sum()
}

/// Extra JVM options for the peer (`E2E_PEER_JVM_OPTS`, split on spaces).
/// None by default: the JVM sizes its heap by its own rules (a quarter of
/// the machine's memory), as a deployment without a container limit does.
fn jvm_options() -> Vec<&'static str> {
    let opts: &'static str = std::env::var("E2E_PEER_JVM_OPTS").unwrap_or_default().leak();
    opts.split_whitespace().collect()
}

/// A value of `/proc/PID/status` in bytes (`VmHWM`, `VmRSS`).
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Watches `topic` from now and records when its first record lands
/// (the sum of its partitions' high watermarks leaves 0), measured from
/// `since`. Stops after 10 minutes or when the returned flag is set.
pub fn watch_first_output(
    broker: &Broker,
    topic: &str,
    since: Instant,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Option<f64>>) {
    let consumer: BaseConsumer = broker.client_config().set("group.id", common::unique("watch")).create().unwrap();
    let topic = topic.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) && since.elapsed() < Duration::from_secs(600) {
            let high: i64 = (0..PARTITIONS)
                .filter_map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(1)).ok())
                .map(|(_, h)| h)
                .sum();
            if high > 0 {
                return Some(since.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    (stop, handle)
}

fn wait_all_committed(broker: &Broker, group: &str, topics: &Topics, want: (i64, i64), log: &dyn Fn() -> String) {
    let t = Instant::now();
    while committed(broker, group, &topics.clickstream, PARTITIONS) < want.0
        || committed(broker, group, &topics.purchases, PARTITIONS) < want.1
    {
        assert!(t.elapsed() < Duration::from_secs(1800), "{group}: not all committed in 30 min:\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a process did over the backlog between `ready` and everything
/// committed.
fn measure(broker: &Broker, pid: u32, group: &str, topics: &Topics, want: (i64, i64), log: &dyn Fn() -> String) -> Row {
    let n = (want.0 + want.1) as f64;
    let broker_cpu = || broker.pid().map_or(0.0, common::cpu_seconds);
    let (cpu0, broker0) = (common::cpu_seconds(pid), broker_cpu());
    let t = Instant::now();
    wait_all_committed(broker, group, topics, want, log);
    let secs = t.elapsed().as_secs_f64();
    let per_million = 1e6 / n;
    Row {
        rate: Some(n / secs),
        client_cpu: Some((common::cpu_seconds(pid) - cpu0) * per_million),
        broker_cpu: Some((broker_cpu() - broker0) * per_million),
        peak_rss: proc_status_bytes(pid, "VmHWM"),
        ..Row::default()
    }
}

/// An engage config on `t` with `guarantee`, no sweeps (as the other phases).
fn engage_config(broker: &Broker, t: &Topics, guarantee: &str) -> String {
    t.config(broker, &format!("sweep_interval = \"1h\"\nprocessing_guarantee = \"{guarantee}\"\n"))
}

/// engage with `guarantee` over the backlog on `base`'s inputs.
pub async fn engage_backlog(broker: &Broker, base: &Topics, want: (i64, i64), guarantee: &str) -> Row {
    let t = run_topics(broker, base, &format!("engage-{guarantee}")).await;
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (stop, first) = watch_first_output(broker, &t.scores, start);
    let engage = Engage::start_binary(dir.path(), &engage_config(broker, &t, guarantee), BINARY);
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    let mut row = measure(broker, engage.child.id(), &t.group, &t, want, &|| engage.log());
    stop.store(true, Ordering::Relaxed);
    row.first_output = first.join().unwrap();
    let changelog = format!("{}.engage-state", t.group);
    row.published = Some(records_in(broker, &[&t.scores, &t.alerts, &changelog]) as f64 / (want.0 + want.1) as f64);
    row.name = format!("engage, {}", guarantee.replace('_', " "));
    row
}

/// The Kafka Streams peer with `guarantee` over the backlog on `base`'s
/// inputs.
pub async fn peer_backlog(broker: &Broker, base: &Topics, want: (i64, i64), guarantee: &str) -> Row {
    let t = run_topics(broker, base, &format!("ks-{guarantee}")).await;
    let dir = tempfile::tempdir().unwrap();
    let app = common::unique("ks");
    peer::classpath(); // built before the clock starts
    let start = Instant::now();
    let (stop, first) = watch_first_output(broker, &t.scores, start);
    let mut run = peer::start(broker, &t, &app, guarantee, &dir.path().join("state"), &jvm_options());
    assert!(run.wait_for_log("engage-peer: RUNNING", Duration::from_secs(120)), "{}", run.log());
    let mut row = measure(broker, run.child.id(), &app, &t, want, &|| run.log());
    stop.store(true, Ordering::Relaxed);
    row.first_output = first.join().unwrap();
    run.terminate(Duration::from_secs(60));
    let changelog = format!("{app}-{}-changelog", peer::STORE);
    row.published = Some(records_in(broker, &[&t.scores, &changelog]) as f64 / (want.0 + want.1) as f64);
    row.name = format!("Kafka Streams peer, {}", guarantee.replace('_', " "));
    row
}

/// The peer over the memory phase's population (one event for each of
/// `customers` customers on `base`'s inputs): (RSS per customer, heap
/// after a full GC per customer), in bytes.
pub async fn peer_memory(broker: &Broker, base: &Topics, want: (i64, i64), customers: f64) -> (f64, f64) {
    let t = run_topics(broker, base, "ks-memory").await;
    let dir = tempfile::tempdir().unwrap();
    let app = common::unique("ks-mem");
    let mut run = peer::start(broker, &t, &app, "at_least_once", &dir.path().join("state"), &jvm_options());
    let pid = run.child.id();
    wait_all_committed(broker, &app, &t, want, &|| run.log());
    // As engage's memory phase: settled for 3 s after the last commit.
    std::thread::sleep(Duration::from_secs(3));
    let rss = proc_status_bytes(pid, "VmRSS").unwrap_or(f64::NAN);
    let jcmd = |command: &str| {
        let out = std::process::Command::new("jcmd").arg(pid.to_string()).arg(command).output().expect("jcmd");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    jcmd("GC.run");
    let heap = heap_used(&jcmd("GC.heap_info")).unwrap_or(f64::NAN);
    run.terminate(Duration::from_secs(60));
    (rss / customers, heap / customers)
}

/// The used heap in `jcmd GC.heap_info` output ("... heap total 1234K,
/// used 567K [...").
fn heap_used(info: &str) -> Option<f64> {
    let line = info.lines().find(|l| l.contains(" heap ") && l.contains("used "))?;
    let used = line.split("used ").nth(1)?;
    let kb: f64 = used.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Which system the latency phase runs.
pub enum System {
    Engage(&'static str),
    Peer(&'static str),
}

/// p50 and p99 end-to-end latency (ms) of `system` on fresh topics, new
/// customers' traffic offered at `rate` events/s for `warmup` seconds, not
/// measured (the JVM compiles its hot code in the first seconds; time to
/// first output reports start-up), then for `secs`: each event's
/// `ts` is the wall clock when it is sent, and a reader on the score
/// topic takes, for every score change, the time it arrived minus its
/// `event_time` (the `ts` of the event that caused it; both systems
/// publish it). So both are measured the same way, from outside: event
/// produced → score change readable by a consumer, generator linger 1 ms,
/// the reader's fetch wait 10 ms.
pub async fn latency(broker: &Broker, system: System, rate: f64, warmup: u64, secs: u64) -> (f64, f64) {
    let base = Topics::create(broker, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let app = common::unique("ks-lat");
    let mut process = match system {
        System::Engage(g) => {
            let e = Engage::start_binary(dir.path(), &engage_config(broker, &base, g), BINARY);
            assert!(e.wait_for_log("state restored", Duration::from_secs(60)), "{}", e.log());
            e
        }
        System::Peer(g) => {
            let p = peer::start(broker, &base, &app, g, &dir.path().join("state"), &jvm_options());
            assert!(p.wait_for_log("engage-peer: RUNNING", Duration::from_secs(120)), "{}", p.log());
            p
        }
    };
    // Readers settle before traffic starts.
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", common::unique("lat"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    reader.subscribe(&[&base.scores]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let read = std::thread::spawn(move || {
        let mut latencies = Vec::new();
        let mut quiet_since = None::<Instant>;
        loop {
            match reader.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let now = engage::clock::wall_clock_ms();
                    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or(b"{}")).unwrap_or_default();
                    if let Some(t) = v["event_time"].as_i64() {
                        latencies.push((t, (now - t) as f64));
                    }
                    quiet_since = None;
                }
                _ if flag.load(Ordering::Relaxed) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(3) {
                        return latencies;
                    }
                }
                _ => {}
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("linger.ms", "1").create().unwrap();
    // The synthetic mix of the tests (purchases included), customers never
    // seen before this run; ts rewritten to the send time.
    let n = (rate * (warmup + secs) as f64) as usize;
    let warm = (rate * warmup as f64) as usize;
    let records = engage::cmd::loadgen::synth::records(11, n, 50_000, 0, 0, engage::vocab::Format::Json);
    let started = Instant::now();
    let mut measured_from = i64::MAX;
    for (i, r) in records.iter().enumerate() {
        if i == warm {
            measured_from = engage::clock::wall_clock_ms();
        }
        let due = Duration::from_secs_f64(i as f64 / rate);
        let elapsed = started.elapsed();
        if due > elapsed + Duration::from_millis(1) {
            std::thread::sleep(due - elapsed);
        }
        let value = with_ts(&r.value, engage::clock::wall_clock_ms());
        let topic = match r.topic {
            engage::vocab::InputKind::Clickstream => &base.clickstream,
            engage::vocab::InputKind::Purchases => &base.purchases,
            engage::vocab::InputKind::Erasures => unreachable!("synth produces events only"),
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&value[..]);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<f64> =
        read.join().unwrap().into_iter().filter(|(t, _)| *t >= measured_from).map(|(_, l)| l).collect();
    process.terminate(Duration::from_secs(60));
    latencies.sort_by(f64::total_cmp);
    let q = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    (q(0.5), q(0.99))
}

/// A JSON event with its `"ts":<number>` replaced by `ts`.
fn with_ts(value: &[u8], ts: i64) -> Vec<u8> {
    let text = std::str::from_utf8(value).unwrap();
    let start = text.find("\"ts\":").expect("synthetic events carry ts") + 5;
    let end = start + text[start..].find(|c: char| !c.is_ascii_digit() && c != '-').unwrap_or(text.len() - start);
    format!("{}{ts}{}", &text[..start], &text[end..]).into_bytes()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let s = format!("{v:.digits$}");
            // Thousands separated by thin spaces for the large figures.
            if digits == 0 && v >= 10_000.0 {
                let mut out = String::new();
                for (i, c) in s.chars().enumerate() {
                    if i > 0 && (s.len() - i) % 3 == 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            } else {
                s
            }
        }
        _ => "–".to_string(),
    }
}

/// The table in Markdown; ratios against the first row (the bare consumer).
pub fn table(rows: &[Row], n: u64, customers: usize, memory_customers: usize, rate: f64) -> String {
    let ceiling = rows.first().filter(|r| r.name.starts_with("bare consumer")).and_then(|r| r.rate);
    let mut out = format!(
        "{n} events over {customers} customers, {PARTITIONS} partitions, Apache Kafka 4.4.0 on loopback, one run; \
         memory at {memory_customers} customers; latency at {rate:.0} events/s offered\n\n\
         | system | events/s | of bare consumer | client CPU s / M events | broker CPU s / M events | published / event | peak RSS | RSS / customer | heap after full GC / customer | p50 / p99 latency | first output |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let ratio = r.rate.zip(ceiling).map(|(a, b)| a / b);
        let latency = r.latency.map_or("–".to_string(), |(a, b)| format!("{a:.0} / {b:.0} ms"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            fmt(r.rate, 0),
            fmt(ratio, 2),
            fmt(r.client_cpu, 2),
            fmt(r.broker_cpu, 2),
            fmt(r.published, 2),
            r.peak_rss.map_or("–".into(), |b| format!("{:.0} MiB", b / 1048576.0)),
            r.rss_per_customer.map_or("–".into(), |b| format!("{b:.0} B")),
            r.heap_per_customer.map_or("–".into(), |b| format!("{b:.0} B")),
            latency,
            r.first_output.map_or("–".into(), |s| format!("{s:.1} s")),
        ));
    }
    out
}

/// Horizontal bar charts, one per figure, one bar per system that has it.
pub fn svg(rows: &[Row]) -> String {
    use engage::charts::{Bars, bar_charts};
    type Figure = (&'static str, fn(&Row) -> Option<f64>);
    let figures: [Figure; 5] = [
        ("events/s (higher is better)", |r| r.rate),
        ("client CPU s per million events", |r| r.client_cpu),
        ("RSS per customer at 1 M customers, bytes", |r| r.rss_per_customer),
        ("p99 latency at the common rate, ms", |r| r.latency.map(|l| l.1)),
        ("start to first output, s", |r| r.first_output),
    ];
    let panels: Vec<Bars<'_>> = figures
        .iter()
        .map(|(title, f)| Bars {
            title,
            bars: rows
                .iter()
                .filter_map(|r| {
                    // Names without their parenthesised detail, to fit the label column.
                    let name = r.name.split(" (").next().unwrap_or_default();
                    let colour = if name.starts_with("engage") {
                        "#1f77b4"
                    } else if name.starts_with("Kafka Streams") {
                        "#ff7f0e"
                    } else {
                        "#999999"
                    };
                    f(r).map(|v| (name, v, colour))
                })
                .collect(),
        })
        .collect();
    bar_charts(&panels).expect("the figures are finite")
}

#[test]
fn heap_used_reads_jcmd_heap_info() {
    let info = "12345:\n garbage-first heap   total 262144K, used 20480K [0x00000000f0000000, 0x0000000100000000)\n  region size 1024K\n";
    assert_eq!(heap_used(info), Some(20480.0 * 1024.0));
    assert_eq!(with_ts(br#"{"a":1,"ts":123,"b":2}"#, 77), br#"{"a":1,"ts":77,"b":2}"#.to_vec());
}
