//! engage against the Kafka Streams peer (`benches/peers/kafka-streams`),
//! fairly (issue 28): `scripts/bench-peers` runs [`fair`], which writes
//! one table, every run behind it and a chart to `target/bench-peers/`.
//!
//! **Systems.** On one broker and one backlog, each consuming both inputs
//! from the beginning in its own consumer group and publishing to its own
//! topics:
//!
//! - the bare consumer (engage's consumer settings, nothing done with the
//!   records): the client and broker ceiling;
//! - the pipe ([`pipe_main`]): the floor. It consumes with engage's consumer
//!   settings and publishes, with engage's producer settings, as many
//!   records per event of the same size as engage published in the first
//!   round (score changes with engage's headers, keyed by customer; state
//!   records to a compacted topic, to the input's partition), and does
//!   nothing else. engage's own cost is its CPU per event minus the pipe's;
//! - engage (`engage run`, release build);
//! - the peer with a bounded RocksDB store and with an in-memory store, each
//!   with 1 and 2 stream threads.
//!
//! engage and the peer read one config file: engage's, with
//! `engage.example.toml`'s rules, changed customers flushed and offsets
//! committed every second (`state.flush_interval` 1 s beside librdkafka's
//! `auto.commit.interval.ms` 1 s; the peer's `commit.interval.ms` follows
//! from the same file), and engage's sweeps an effectively infinite
//! interval apart (they run on the wall clock; the peer has none).
//!
//! **Throughput.** `engage loadgen`'s population preloads the backlog
//! once. Rounds run every system once each (the order rotates between
//! rounds: A B C, B C A, ...), `PEERS_REPS` rounds (5). A run polls its
//! group's committed offsets every 100 ms with the process' and the
//! broker's CPU. Reported: the steady-state rate, from the moment 30 % of
//! the backlog is committed to the moment 90 % is (start-up, JIT and
//! cache warm-up are behind every system by then; the window must span at
//! least 10 commit intervals, and the table says how many it did), with
//! the client and broker CPU over that window; the whole-run rate (ready to
//! everything committed) and CPU (process start to everything committed,
//! start-up included); start-up time; peak RSS; for the JVM the share of
//! wall time in GC (`jstat`); records and bytes published per event and
//! the score topic's records per batch, read from the broker's log
//! segments. Medians with min–max over the runs kept.
//!
//! **Discarded runs.** The machine is shared. Each run records the load
//! average (1 min) at its start and end, and the CPU other processes took
//! meanwhile: the machine's busy time (`/proc/stat`) minus that of the
//! system under test, the broker and this harness, in cores. A run where
//! others took more than `PEERS_MAX_FOREIGN_CPU` (0.10 cores, 5 % of two)
//! is discarded and run again, at most `PEERS_RETRIES` (3) times; the
//! table lists every run, discarded ones marked.
//!
//! **Outputs.** In the first round the score changes of engage and of every
//! peer variant are read back and must agree per customer (same number, last
//! score within 10⁻⁶, same last stage; `tests/common/peer.rs`), as the
//! output gate `tests/peers.rs` checks on a smaller slice. A disagreement is
//! reported with the table.
//!
//! **Memory.** Per system, one instance is given 0.5 M single-event
//! customers, then another 0.5 M (`PEERS_MEMORY_CUSTOMERS`, 1 M in all);
//! after each, once everything is committed and it idled 3 s, its RSS (for
//! the JVM after a full GC, `jcmd GC.run`, and its heap in use). Reported:
//! the slope (RSS at 1 M − RSS at 0.5 M) / 0.5 M, and the total RSS at 1 M.
//! With its heap fixed (`-Xms` = `-Xmx`) the JVM's RSS hardly follows the
//! population: young collections have touched the whole heap long before
//! 0.5 M customers, so for the peer the slope of its heap in use is the
//! figure that says what a customer costs (and the RocksDB store keeps its
//! customers on disk, off both).
//!
//! **Latency.** Per system, on fresh topics: new customers' events offered
//! at `PEERS_LATENCY_RATE` (5 000 events/s) by one generator (linger 1 ms)
//! for `PEERS_LATENCY_WARMUP` (10) s unmeasured then `PEERS_LATENCY_SECONDS`
//! (20) s; a reader takes, for each score change, its arrival time minus its
//! `event_time` (the send time of its event). p50 and p99 per run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engage::config::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, TopicPartitionList};

use super::common::peer::{self, Published};
use super::common::runs::run_topics;
use super::common::{self, Broker, Engage, Topics};
use super::{BINARY, PARTITIONS};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.to_string()).split_whitespace().map(str::to_string).collect()
}

/// One system of the comparison.
#[derive(Clone, Debug, PartialEq)]
enum System {
    Ceiling,
    Pipe,
    Engage,
    /// Another engage binary (`engage=PATH`), e.g. a baseline build, to
    /// measure a change in the same interleaved rounds; its outputs are
    /// gated against this build's like the peer's.
    EngageAt(PathBuf),
    Peer {
        store: &'static str,
        threads: u32,
    },
}

impl System {
    /// From a `PEERS_SYSTEMS` item: `ceiling`, `pipe`, `engage`,
    /// `engage=PATH`, `rocksdb-N`, `in_memory-N` (N stream threads).
    fn parse(s: &str) -> System {
        if let Some(path) = s.strip_prefix("engage=") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "PEERS_SYSTEMS: no engage binary at {}", path.display());
            return System::EngageAt(path);
        }
        match s {
            "ceiling" => System::Ceiling,
            "pipe" => System::Pipe,
            "engage" => System::Engage,
            other => {
                let (store, threads) = other.rsplit_once('-').unwrap_or((other, "1"));
                let store = match store {
                    "rocksdb" => "rocksdb",
                    "in_memory" => "in_memory",
                    _ => panic!("PEERS_SYSTEMS: unknown system {other}"),
                };
                System::Peer { store, threads: threads.parse().expect("PEERS_SYSTEMS: rocksdb-N, in_memory-N") }
            }
        }
    }

    fn name(&self) -> String {
        match self {
            System::Ceiling => "bare consumer (ceiling)".into(),
            System::Pipe => "consume → produce pipe (floor)".into(),
            System::Engage => "engage".into(),
            System::EngageAt(path) => {
                format!("engage [{}]", path.file_name().map_or(path.display().to_string(), |f| f.display().to_string()))
            }
            System::Peer { store, threads } => {
                let store = if *store == "rocksdb" { "RocksDB" } else { "in-memory" };
                format!("Kafka Streams peer, {store}, {threads} thread{}", if *threads == 1 { "" } else { "s" })
            }
        }
    }

    fn is_peer(&self) -> bool {
        matches!(self, System::Peer { .. })
    }
}

/// The benchmark's knobs (`scripts/bench-peers` lists them).
struct Settings {
    events: u64,
    customers: usize,
    reps: usize,
    guarantee: String,
    systems: Vec<System>,
    phases: String,
    memory_customers: usize,
    memory_reps: usize,
    latency_rate: f64,
    latency_secs: u64,
    latency_warmup: u64,
    latency_reps: usize,
    heap_rocksdb: Vec<String>,
    heap_in_memory: Vec<String>,
    jvm_extra: Vec<String>,
    properties: Vec<String>,
    max_foreign_cpu: f64,
    retries: usize,
    out: PathBuf,
    /// The broker's process, once started.
    broker_pid: Option<u32>,
}

impl Settings {
    fn from_env() -> Settings {
        let guarantee = std::env::var("PEERS_GUARANTEE").unwrap_or_else(|_| "at_least_once".into());
        assert!(
            guarantee == "at_least_once" || guarantee == "exactly_once",
            "PEERS_GUARANTEE is at_least_once or exactly_once"
        );
        Settings {
            events: env_or("PEERS_EVENTS", 8_000_000),
            customers: env_or("PEERS_CUSTOMERS", 50_000),
            reps: env_or("PEERS_REPS", 5),
            guarantee,
            systems: env_list("PEERS_SYSTEMS", "ceiling pipe engage rocksdb-1 rocksdb-2 in_memory-1 in_memory-2")
                .iter()
                .flat_map(|s| s.split(',').filter(|s| !s.is_empty()).map(System::parse).collect::<Vec<_>>())
                .collect(),
            phases: std::env::var("PEERS_PHASES").unwrap_or_else(|_| "throughput,memory,latency".into()),
            memory_customers: env_or("PEERS_MEMORY_CUSTOMERS", 1_000_000),
            memory_reps: env_or("PEERS_MEMORY_REPS", 3),
            latency_rate: env_or("PEERS_LATENCY_RATE", 5000.0),
            latency_secs: env_or("PEERS_LATENCY_SECONDS", 20),
            latency_warmup: env_or("PEERS_LATENCY_WARMUP", 10),
            latency_reps: env_or("PEERS_LATENCY_REPS", 5),
            heap_rocksdb: env_list("PEERS_HEAP_ROCKSDB", DEFAULT_HEAP_ROCKSDB),
            heap_in_memory: env_list("PEERS_HEAP_IN_MEMORY", DEFAULT_HEAP_IN_MEMORY),
            jvm_extra: env_list("PEERS_JVM_OPTS", ""),
            properties: env_list("PEERS_PEER_PROPERTIES", ""),
            max_foreign_cpu: env_or("PEERS_MAX_FOREIGN_CPU", 0.10),
            retries: env_or("PEERS_RETRIES", 3),
            out: PathBuf::from(
                std::env::var("PEERS_OUT")
                    .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-peers").to_string()),
            ),
            broker_pid: None,
        }
    }

    /// The peer's JVM options for `store`: its fixed heap, then any extra.
    fn jvm(&self, store: &str) -> Vec<String> {
        let heap = if store == "rocksdb" { &self.heap_rocksdb } else { &self.heap_in_memory };
        heap.iter().chain(&self.jvm_extra).cloned().collect()
    }

    fn peer_guarantee(&self) -> &'static str {
        if self.guarantee == "exactly_once" { "exactly_once_v2" } else { "at_least_once" }
    }
}

/// The peer's heap with the RocksDB store: `-Xms` = `-Xmx`, the smallest
/// that ran the throughput and 1 M-customer memory phases without GC
/// thrash (trials in benches/peers/kafka-streams/README.md: GC pauses took
/// 9–15 % of the run at 128–192 MiB, 5–8 % from 256 MiB up).
const DEFAULT_HEAP_ROCKSDB: &str = "-Xms256m -Xmx256m";
/// The same with the in-memory store, which holds every customer on the
/// heap (230 MiB in use at 1 M customers after a full GC; pauses 8.5 % of
/// the throughput run at 320 MiB, 5–8 % from 384 MiB up).
const DEFAULT_HEAP_IN_MEMORY: &str = "-Xms384m -Xmx384m";

/// The engage config both engage and the peer run with on `t` (module docs).
fn config_text(broker: &Broker, t: &Topics, guarantee: &str) -> String {
    format!(
        r#"[kafka]
"bootstrap.servers" = "{bootstrap}"

[topics]
clickstream = "{c}"
purchases = "{p}"
scores = "{s}"
alerts = "{a}"
dlq = "{d}"

[http]
listen = "127.0.0.1:0"

[run]
group_id = "{g}"
create_topics = true
processing_guarantee = "{guarantee}"
sweep_interval = "3650days"

[state]
flush_interval = "1s"
{rules}"#,
        bootstrap = broker.bootstrap,
        c = t.clickstream,
        p = t.purchases,
        s = t.scores,
        a = t.alerts,
        d = t.dlq,
        g = t.group,
        rules = peer::rules_sections()
    )
}

/// What the pipe publishes per input event, as engage did (module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Shape {
    scores_per_event: f64,
    score_bytes: usize,
    changelog_per_event: f64,
    changelog_bytes: usize,
}

/// A process under test and the log line that says it is ready.
struct Running {
    process: Engage,
    ready: &'static str,
    /// Topics it created or writes besides `t`'s outputs (changelogs).
    extra_topics: Vec<String>,
}

/// The engage config of a run, in its directory: [`config_text`] for its
/// topics.
const CONFIG_FILE: &str = "engage.toml";

/// Starts `system` on `t` (its outputs) with the config in `dir`
/// ([`CONFIG_FILE`]).
async fn start(
    broker: &Broker,
    s: &Settings,
    system: &System,
    t: &Topics,
    dir: &Path,
    want: i64,
    shape: Option<Shape>,
) -> Running {
    let config_file = &dir.join(CONFIG_FILE);
    match system {
        System::Engage | System::EngageAt(_) => {
            let config = std::fs::read_to_string(config_file).unwrap();
            let binary = match system {
                System::EngageAt(path) => path.to_str().expect("a UTF-8 path"),
                _ => BINARY,
            };
            Running {
                process: Engage::start_binary(dir, &config, binary),
                ready: "state restored",
                extra_topics: vec![format!("{}.engage-state", t.group)],
            }
        }
        System::Peer { store, threads } => {
            let app = t.group.clone();
            let mut properties = vec![format!("num.stream.threads={threads}")];
            properties.extend(s.properties.iter().cloned());
            let jvm = s.jvm(store);
            let options = peer::Options {
                guarantee: s.peer_guarantee(),
                store,
                config: config_file,
                state_dir: &dir.join("state"),
                jvm: &jvm,
                properties: &properties,
            };
            Running {
                process: peer::start(broker, t, &app, &options),
                ready: "engage-peer: RUNNING",
                extra_topics: vec![format!("{app}-{}-changelog", peer::STORE)],
            }
        }
        System::Ceiling | System::Pipe => {
            let changelog = format!("{}.pipe-changelog", t.group);
            if shape.is_some() {
                create_compacted(broker, &changelog).await;
            }
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["--ignored", "--exact", "peers::child", "--nocapture", "--test-threads=1"])
                .env("PEERS_CHILD_CONFIG", config_file)
                .env("PEERS_CHILD_WANT", want.to_string())
                .env("PEERS_CHILD_CHANGELOG", &changelog);
            if let Some(shape) = shape {
                command
                    .env("PEERS_CHILD_SCORES_PER_EVENT", shape.scores_per_event.to_string())
                    .env("PEERS_CHILD_SCORE_BYTES", shape.score_bytes.to_string())
                    .env("PEERS_CHILD_CHANGELOG_PER_EVENT", shape.changelog_per_event.to_string())
                    .env("PEERS_CHILD_CHANGELOG_BYTES", shape.changelog_bytes.to_string());
            }
            let child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            Running {
                process: Engage::capture(child),
                ready: "child: ready",
                extra_topics: if shape.is_some() { vec![changelog] } else { Vec::new() },
            }
        }
    }
}

async fn create_compacted(broker: &Broker, name: &str) {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let topic = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let r = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    r[0].as_ref().expect("topic created");
}

async fn delete_topics(broker: &Broker, names: &[String]) {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    // Best effort: a topic a run never created is fine to miss.
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

/// A consumer that reads a group's committed offsets on both inputs.
struct CommittedOffsets {
    consumer: BaseConsumer,
    tpl: TopicPartitionList,
}

impl CommittedOffsets {
    fn new(broker: &Broker, group: &str, t: &Topics) -> CommittedOffsets {
        let consumer: BaseConsumer = broker.client_config().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(&t.clickstream, p);
            tpl.add_partition(&t.purchases, p);
        }
        CommittedOffsets { consumer, tpl }
    }

    /// Records committed over both inputs; `None` while the broker answers
    /// with an error.
    fn total(&self) -> Option<i64> {
        let c = self.consumer.committed_offsets(self.tpl.clone(), Duration::from_secs(5)).ok()?;
        Some(c.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum())
    }

    /// Waits until `want` records are committed by `process`, which must
    /// keep running.
    fn wait_for(&self, want: i64, limit: Duration, process: &mut Engage) {
        let t = Instant::now();
        while self.total().unwrap_or(0) < want {
            assert!(t.elapsed() < limit, "not all {want} records committed in {limit:?}:\n{}", process.log());
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("exited with {status} before committing {want} records:\n{}", process.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The machine's busy CPU seconds so far (all cores), from `/proc/stat`.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let f: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum::<f64>();
    busy / 100.0
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// CPU taken by processes other than the ones measured, over a run.
struct Foreign {
    at: Instant,
    busy: f64,
    ours: f64,
    load: f64,
}

impl Foreign {
    fn start(ours: f64) -> Foreign {
        Foreign { at: Instant::now(), busy: machine_busy(), ours, load: load_average() }
    }

    /// (cores others used on average, load average at start, at end).
    fn end(&self, ours: f64) -> (f64, f64, f64) {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let others = (machine_busy() - self.busy) - (ours - self.ours);
        (others.max(0.0) / secs, self.load, load_average())
    }
}

/// CPU seconds of `pids` plus this harness and the broker.
fn our_cpu(broker: &Broker, pids: &[u32]) -> f64 {
    let harness = common::cpu_seconds(std::process::id());
    harness + broker.pid().map_or(0.0, common::cpu_seconds) + pids.iter().map(|&p| common::cpu_seconds(p)).sum::<f64>()
}

/// A value of `/proc/PID/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// A JVM's garbage collection so far, from `jstat -gcutil`.
#[derive(Clone, Copy, Debug, Default)]
struct Gc {
    /// Seconds in GC, all collectors (GCT).
    seconds: f64,
    /// Full collections (FGC).
    full: u32,
}

fn gc(pid: u32) -> Option<Gc> {
    let out = Command::new("jstat").args(["-gcutil", &pid.to_string()]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name).and_then(|i| values.get(i));
    Some(Gc { seconds: column("GCT")?.parse().ok()?, full: column("FGC")?.parse().ok()? })
}

fn jcmd(pid: u32, command: &str) -> String {
    let out = Command::new("jcmd").arg(pid.to_string()).arg(command).output().expect("jcmd");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The used heap in `jcmd GC.heap_info` output ("... heap total 1234K,
/// used 567K [...").
fn heap_used(info: &str) -> Option<f64> {
    let line = info.lines().find(|l| l.contains(" heap ") && l.contains("used "))?;
    let used = line.split("used ").nth(1)?;
    let kb: f64 = used.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Record batches on the broker's disk for one topic (every partition).
#[derive(Clone, Copy, Debug, Default)]
struct LogStats {
    batches: u64,
    records: u64,
    bytes: u64,
}

/// The broker's data directory, from its command line's properties file.
fn log_dir(broker: &Broker) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", broker.pid()?)).ok()?;
    let props = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).to_string())
        .find(|a| a.ends_with(".properties") && !a.contains("log4j"))?;
    let text = std::fs::read_to_string(props).ok()?;
    text.lines().find_map(|l| l.strip_prefix("log.dirs=")).map(|d| PathBuf::from(d.trim()))
}

/// Reads the batch headers of `topic`'s log segments (Kafka's record batch
/// v2: length at byte 8, attributes at 21, record count at 57), leaving
/// out control batches (transaction markers).
fn log_stats(broker: &Broker, topic: &str) -> Option<LogStats> {
    use std::io::{Read, Seek, SeekFrom};
    let dir = log_dir(broker)?;
    let mut stats = LogStats::default();
    for p in 0..PARTITIONS {
        let Ok(entries) = std::fs::read_dir(dir.join(format!("{topic}-{p}"))) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let mut file = std::fs::File::open(&path).ok()?;
            let mut header = [0u8; 61];
            let mut at = 0u64;
            while file.seek(SeekFrom::Start(at)).is_ok() && file.read_exact(&mut header).is_ok() {
                let length = i32::from_be_bytes(header[8..12].try_into().unwrap());
                if length <= 0 {
                    break;
                }
                let attributes = i16::from_be_bytes(header[21..23].try_into().unwrap());
                let size = 12 + length as u64;
                if attributes & 0x20 == 0 {
                    stats.batches += 1;
                    stats.records += i32::from_be_bytes(header[57..61].try_into().unwrap()).max(0) as u64;
                    stats.bytes += size;
                }
                at += size;
            }
        }
    }
    Some(stats)
}

/// One throughput run.
#[derive(Clone, Debug, Default)]
struct ThroughputRun {
    system: String,
    round: usize,
    startup: f64,
    whole_rate: f64,
    steady_rate: f64,
    steady_cpu: f64,
    whole_cpu: f64,
    broker_cpu: f64,
    commits_in_window: usize,
    peak_rss: f64,
    gc_share: Option<f64>,
    full_gcs: Option<u32>,
    published: Option<f64>,
    bytes_per_event: Option<f64>,
    records_per_batch: Option<f64>,
    bytes_per_batch: Option<f64>,
    foreign: f64,
    load: (f64, f64),
    discarded: bool,
}

/// One poll of a running system.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    committed: i64,
    cpu: f64,
    broker: f64,
}

/// The first sample at or past `share` of `n` committed.
fn sample_at(samples: &[Sample], n: i64, share: f64) -> Sample {
    *samples.iter().find(|s| s.committed as f64 >= share * n as f64).unwrap_or(samples.last().unwrap())
}

/// What a first-round run leaves for the output check and the pipe.
struct Outputs {
    changes: BTreeMap<String, Published>,
    shape: Option<Shape>,
}

/// Runs `system` over the backlog on `base` once.
#[allow(clippy::too_many_arguments)]
async fn throughput_run(
    broker: &Broker,
    s: &Settings,
    system: &System,
    base: &Topics,
    n: i64,
    round: usize,
    shape: Option<Shape>,
    read_outputs: bool,
) -> (ThroughputRun, Option<Outputs>) {
    let name = match system {
        System::Ceiling => "ceiling".to_string(),
        System::Pipe => "pipe".to_string(),
        System::Engage => "engage".to_string(),
        System::EngageAt(_) => "engage-at".to_string(),
        System::Peer { store, threads } => format!("ks-{store}-{threads}"),
    };
    let t = run_topics(broker, base, &format!("{name}-r{round}-{}", common::unique("x"))).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), config_text(broker, &t, &s.guarantee)).unwrap();
    let committed = CommittedOffsets::new(broker, &t.group, &t);
    let foreign = Foreign::start(our_cpu(broker, &[]));
    let started = Instant::now();
    let mut running = start(broker, s, system, &t, dir.path(), n, shape).await;
    let pid = running.process.child.id();
    assert!(
        running.process.wait_for_log(running.ready, Duration::from_secs(180)),
        "{}: not ready:\n{}",
        system.name(),
        running.process.log()
    );
    let startup = started.elapsed().as_secs_f64();
    let broker_cpu = || broker.pid().map_or(0.0, common::cpu_seconds);
    let ready = Instant::now();
    let mut samples = vec![Sample { at: 0.0, committed: 0, cpu: common::cpu_seconds(pid), broker: broker_cpu() }];
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let c = committed.total().unwrap_or(0);
        samples.push(Sample {
            at: ready.elapsed().as_secs_f64(),
            committed: c,
            cpu: common::cpu_seconds(pid),
            broker: broker_cpu(),
        });
        if c >= n {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(1800),
            "{}: not all committed in 30 min:\n{}",
            system.name(),
            running.process.log()
        );
        if let Some(status) = running.process.child.try_wait().unwrap() {
            panic!("{} exited with {status}:\n{}", system.name(), running.process.log());
        }
    }
    let last = *samples.last().unwrap();
    let (a, b) = (sample_at(&samples, n, 0.3), sample_at(&samples, n, 0.9));
    let steady_events = (b.committed - a.committed).max(1) as f64;
    let commits_in_window =
        samples.windows(2).filter(|w| w[1].at > a.at && w[1].at <= b.at && w[1].committed != w[0].committed).count();
    let gc = system.is_peer().then(|| gc(pid)).flatten();
    let gc_share = gc.map(|g| g.seconds / started.elapsed().as_secs_f64());
    let peak_rss = proc_status_bytes(pid, "VmHWM").unwrap_or(f64::NAN);
    let (foreign, load_start, load_end) = foreign.end(our_cpu(broker, &[pid]));
    running.process.terminate(Duration::from_secs(60));
    let mut run = ThroughputRun {
        system: system.name(),
        round,
        startup,
        whole_rate: n as f64 / last.at,
        // A backlog too short for commits to move between 30 % and 90 %
        // has no steady state to report.
        steady_rate: if b.at > a.at { steady_events / (b.at - a.at) } else { f64::NAN },
        steady_cpu: if b.at > a.at { (b.cpu - a.cpu) / steady_events * 1e6 } else { f64::NAN },
        whole_cpu: last.cpu / n as f64 * 1e6,
        broker_cpu: if b.at > a.at { (b.broker - a.broker) / steady_events * 1e6 } else { f64::NAN },
        commits_in_window,
        peak_rss,
        gc_share,
        full_gcs: gc.map(|g| g.full),
        foreign,
        load: (load_start, load_end),
        discarded: foreign > s.max_foreign_cpu,
        ..ThroughputRun::default()
    };
    // Records and bytes published per event, and the score topic's batches.
    let published: Vec<String> = match system {
        System::Ceiling => Vec::new(),
        System::Pipe => running.extra_topics.iter().cloned().chain([t.scores.clone()]).collect(),
        _ => [t.scores.clone(), t.alerts.clone()].into_iter().chain(running.extra_topics.iter().cloned()).collect(),
    };
    let logs: Vec<LogStats> = published.iter().filter_map(|topic| log_stats(broker, topic)).collect();
    if !published.is_empty() && logs.len() == published.len() {
        run.published = Some(logs.iter().map(|l| l.records).sum::<u64>() as f64 / n as f64);
        run.bytes_per_event = Some(logs.iter().map(|l| l.bytes).sum::<u64>() as f64 / n as f64);
        let scores = log_stats(broker, &t.scores).unwrap_or_default();
        if scores.batches > 0 {
            run.records_per_batch = Some(scores.records as f64 / scores.batches as f64);
            run.bytes_per_batch = Some(scores.bytes as f64 / scores.batches as f64);
        }
    }
    let outputs = if read_outputs && !matches!(system, System::Ceiling | System::Pipe) {
        let (changes, score_bytes) = peer::score_changes(broker, &t.scores);
        let shape = (*system == System::Engage).then(|| shape_of(broker, &t, n as u64, &changes, score_bytes));
        Some(Outputs { changes, shape })
    } else {
        None
    };
    let mut topics = vec![t.scores.clone(), t.alerts.clone(), t.dlq.clone()];
    topics.extend(running.extra_topics.iter().cloned());
    delete_topics(broker, &topics).await;
    eprintln!(
        "peers: round {round} {}: {:.0} events/s steady ({} commits in the window), {:.2} CPU s / M events{}; \
         others used {:.2} cores{}",
        run.system,
        run.steady_rate,
        run.commits_in_window,
        run.steady_cpu,
        match (run.gc_share, run.full_gcs) {
            (Some(g), Some(f)) => format!(", GC {:.1} % ({f} full)", g * 100.0),
            _ => String::new(),
        },
        run.foreign,
        if run.discarded { " — discarded" } else { "" }
    );
    (run, outputs)
}

/// What engage published per event over the backlog of `n` events whose
/// outputs are `t`'s (its score topic and state changelog), for the pipe
/// to publish the same.
pub fn engage_shape(broker: &Broker, t: &Topics, n: u64) -> Shape {
    let (changes, score_bytes) = peer::score_changes(broker, &t.scores);
    shape_of(broker, t, n, &changes, score_bytes)
}

/// [`engage_shape`] with its score changes already read.
fn shape_of(broker: &Broker, t: &Topics, n: u64, changes: &BTreeMap<String, Published>, score_bytes: u64) -> Shape {
    let scores: u32 = changes.values().map(|p| p.count).sum();
    let (mut records, mut bytes) = (0u64, 0u64);
    peer::fold_topic(broker, &format!("{}.engage-state", t.group), |m| {
        records += 1;
        bytes += m.payload_len() as u64;
    });
    Shape {
        scores_per_event: f64::from(scores) / n as f64,
        score_bytes: (score_bytes as f64 / f64::from(scores.max(1))).round() as usize,
        changelog_per_event: records as f64 / n as f64,
        changelog_bytes: (bytes as f64 / records.max(1) as f64).round() as usize,
    }
}

/// The pipe floor over the backlog on `base` (`n` events) publishing
/// `shape`: (events/s whole run, client CPU s / M events whole run, broker
/// CPU s / M events in the steady window). For the end-to-end benchmark.
pub async fn pipe_floor(broker: &Broker, base: &Topics, n: u64, shape: Shape) -> (f64, f64, f64) {
    let s = Settings::from_env();
    let (run, _) = throughput_run(broker, &s, &System::Pipe, base, n as i64, 0, Some(shape), false).await;
    (run.whole_rate, run.whole_cpu, run.broker_cpu)
}

/// One memory run.
#[derive(Clone, Debug, Default)]
struct MemoryRun {
    system: String,
    slope: f64,
    total: f64,
    heap_slope: Option<f64>,
    /// For the JVM: heap in use at the full population, bytes.
    heap: Option<f64>,
    /// For the JVM: share of the run's wall time in GC.
    gc_share: Option<f64>,
    /// For the JVM: full collections.
    full_gcs: Option<u32>,
    foreign: f64,
    load: (f64, f64),
    discarded: bool,
}

/// `n` customers with one page view each, ids from `from`.
fn one_event_customers(from: usize, n: usize) -> Vec<engage::cmd::loadgen::synth::Record> {
    let now = engage::clock::wall_clock_ms();
    (from..from + n)
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
        .collect()
}

/// `system`'s RSS growth per customer between half and all of
/// `s.memory_customers` (module docs).
async fn memory_run(broker: &Broker, s: &Settings, system: &System) -> MemoryRun {
    let t = Topics::create(broker, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), config_text(broker, &t, &s.guarantee)).unwrap();
    let committed = CommittedOffsets::new(broker, &t.group, &t);
    let foreign = Foreign::start(our_cpu(broker, &[]));
    let started = Instant::now();
    let mut running = start(broker, s, system, &t, dir.path(), 0, None).await;
    let pid = running.process.child.id();
    assert!(running.process.wait_for_log(running.ready, Duration::from_secs(180)), "{}", running.process.log());
    let half = s.memory_customers / 2;
    let mut measured = Vec::new();
    let mut fed = 0i64;
    // The full collections this harness asks for, to leave out of the GC
    // figures.
    let mut induced = Gc::default();
    for from in [0, half] {
        let (clicks, buys) = common::feed(broker, &t, &one_event_customers(from, half));
        fed += clicks + buys;
        committed.wait_for(fed, Duration::from_secs(900), &mut running.process);
        std::thread::sleep(Duration::from_secs(3));
        let heap = system.is_peer().then(|| {
            let before = gc(pid).unwrap_or_default();
            jcmd(pid, "GC.run");
            let after = gc(pid).unwrap_or_default();
            induced.seconds += after.seconds - before.seconds;
            induced.full += after.full - before.full;
            std::thread::sleep(Duration::from_secs(1));
            heap_used(&jcmd(pid, "GC.heap_info")).unwrap_or(f64::NAN)
        });
        measured.push((proc_status_bytes(pid, "VmRSS").unwrap_or(f64::NAN), heap));
    }
    let gc = system
        .is_peer()
        .then(|| gc(pid))
        .flatten()
        .map(|g| Gc { seconds: g.seconds - induced.seconds, full: g.full.saturating_sub(induced.full) });
    let gc_share = gc.map(|g| g.seconds / started.elapsed().as_secs_f64());
    let (foreign, load_start, load_end) = foreign.end(our_cpu(broker, &[pid]));
    running.process.terminate(Duration::from_secs(60));
    let mut topics =
        vec![t.clickstream.clone(), t.purchases.clone(), t.scores.clone(), t.alerts.clone(), t.dlq.clone()];
    topics.extend(running.extra_topics.iter().cloned());
    delete_topics(broker, &topics).await;
    let run = MemoryRun {
        heap: measured[1].1,
        gc_share,
        full_gcs: gc.map(|g| g.full),
        system: system.name(),
        slope: (measured[1].0 - measured[0].0) / half as f64,
        total: measured[1].0,
        heap_slope: measured[1].1.zip(measured[0].1).map(|(b, a)| (b - a) / half as f64),
        foreign,
        load: (load_start, load_end),
        discarded: foreign > s.max_foreign_cpu,
    };
    eprintln!(
        "peers: memory {}: {:.0} B per customer, {:.0} MiB at {} customers (heap in use {}, GC {}, {} full); \
         others used {:.2} cores{}",
        run.system,
        run.slope,
        run.total / 1048576.0,
        s.memory_customers,
        run.heap.map_or("–".into(), |h| format!("{:.0} MiB", h / 1048576.0)),
        run.gc_share.map_or("–".into(), |g| format!("{:.1} %", g * 100.0)),
        run.full_gcs.map_or("–".into(), |f| f.to_string()),
        run.foreign,
        if run.discarded { " — discarded" } else { "" }
    );
    run
}

/// One latency run.
#[derive(Clone, Debug, Default)]
struct LatencyRun {
    system: String,
    p50: f64,
    p99: f64,
    foreign: f64,
    load: (f64, f64),
    discarded: bool,
}

/// p50 and p99 end-to-end latency (ms) of `system` (module docs): fresh
/// topics, new customers' events offered at the common rate, each event's
/// `ts` the wall clock when it is sent; for every score change, the time
/// it is read minus its `event_time`. Both systems are measured the same
/// way, from outside: generator linger 1 ms, the reader's fetch wait 10 ms.
async fn latency_run(broker: &Broker, s: &Settings, system: &System) -> LatencyRun {
    let t = Topics::create(broker, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), config_text(broker, &t, &s.guarantee)).unwrap();
    let foreign = Foreign::start(our_cpu(broker, &[]));
    let mut running = start(broker, s, system, &t, dir.path(), 0, None).await;
    let pid = running.process.child.id();
    assert!(running.process.wait_for_log(running.ready, Duration::from_secs(180)), "{}", running.process.log());
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", common::unique("lat"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    reader.subscribe(&[&t.scores]).unwrap();
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
    // Readers settle before traffic starts.
    std::thread::sleep(Duration::from_secs(2));
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("linger.ms", "1").create().unwrap();
    let rate = s.latency_rate;
    let n = (rate * (s.latency_warmup + s.latency_secs) as f64) as usize;
    let warm = (rate * s.latency_warmup as f64) as usize;
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
            engage::vocab::InputKind::Clickstream => &t.clickstream,
            engage::vocab::InputKind::Purchases => &t.purchases,
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
    let (foreign, load_start, load_end) = foreign.end(our_cpu(broker, &[pid]));
    running.process.terminate(Duration::from_secs(60));
    let mut topics =
        vec![t.clickstream.clone(), t.purchases.clone(), t.scores.clone(), t.alerts.clone(), t.dlq.clone()];
    topics.extend(running.extra_topics.iter().cloned());
    delete_topics(broker, &topics).await;
    latencies.sort_by(f64::total_cmp);
    let q = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    let run = LatencyRun {
        system: system.name(),
        p50: q(0.5),
        p99: q(0.99),
        foreign,
        load: (load_start, load_end),
        discarded: foreign > s.max_foreign_cpu,
    };
    eprintln!(
        "peers: latency {}: p50 {:.0} ms, p99 {:.0} ms; others used {:.2} cores{}",
        run.system,
        run.p50,
        run.p99,
        run.foreign,
        if run.discarded { " — discarded" } else { "" }
    );
    run
}

/// A JSON event with its `"ts":<number>` replaced by `ts`.
fn with_ts(value: &[u8], ts: i64) -> Vec<u8> {
    let text = std::str::from_utf8(value).unwrap();
    let start = text.find("\"ts\":").expect("synthetic events carry ts") + 5;
    let end = start + text[start..].find(|c: char| !c.is_ascii_digit() && c != '-').unwrap_or(text.len() - start);
    format!("{}{ts}{}", &text[..start], &text[end..]).into_bytes()
}

/// Runs `run` until it is kept or `retries` more attempts were discarded
/// (then the last is kept, marked discarded, and left out of the medians).
async fn until_kept<R, F, Fut>(retries: usize, discarded: fn(&R) -> bool, mut run: F) -> Vec<R>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = R>,
{
    let mut runs = Vec::new();
    for _ in 0..=retries {
        let r = run().await;
        let keep = !discarded(&r);
        runs.push(r);
        if keep {
            break;
        }
    }
    runs
}

/// Median, min and max of `values` (NaN-free), `None` if empty.
fn stats(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
    Some((median, v[0], v[v.len() - 1]))
}

/// A number with thin-space thousands for large figures.
fn num(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    if digits > 0 || v.abs() < 10_000.0 {
        return s;
    }
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// "median (min–max)".
fn cell(v: Option<(f64, f64, f64)>, digits: usize) -> String {
    match v {
        Some((m, lo, hi)) if lo == hi => num(m, digits),
        Some((m, lo, hi)) => format!("{} ({}–{})", num(m, digits), num(lo, digits), num(hi, digits)),
        None => "–".into(),
    }
}

/// The row of one system for the chart (`svg`).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    pub rate: Option<f64>,
    pub client_cpu: Option<f64>,
    /// Bytes per customer (the memory slope).
    pub rss_per_customer: Option<f64>,
    /// (p50, p99) ms at the common rate.
    pub latency: Option<(f64, f64)>,
    /// Seconds from process start to the first output (not measured by
    /// this benchmark; the chart's panel stays empty).
    pub first_output: Option<f64>,
}

/// Everything the benchmark measured.
#[derive(Default)]
struct Results {
    throughput: Vec<ThroughputRun>,
    memory: Vec<MemoryRun>,
    latency: Vec<LatencyRun>,
    gate: Vec<String>,
    shape: Option<Shape>,
}

impl Results {
    fn kept<'a, R: 'a>(runs: &'a [R], name: &'a str, f: fn(&R) -> (&str, bool)) -> impl Iterator<Item = &'a R> {
        runs.iter().filter(move |r| f(r) == (name, false))
    }

    fn throughput_of(&self, name: &str, f: fn(&ThroughputRun) -> Option<f64>) -> Option<(f64, f64, f64)> {
        stats(Self::kept(&self.throughput, name, |r| (&r.system, r.discarded)).filter_map(f))
    }

    fn memory_of(&self, name: &str, f: fn(&MemoryRun) -> Option<f64>) -> Option<(f64, f64, f64)> {
        stats(Self::kept(&self.memory, name, |r| (&r.system, r.discarded)).filter_map(f))
    }

    fn latency_of(&self, name: &str, f: fn(&LatencyRun) -> f64) -> Option<(f64, f64, f64)> {
        stats(Self::kept(&self.latency, name, |r| (&r.system, r.discarded)).map(f))
    }

    /// The peer variant with the highest median steady-state rate.
    fn best_peer(&self, systems: &[System]) -> Option<String> {
        systems
            .iter()
            .filter(|s| s.is_peer())
            .map(System::name)
            .filter_map(|n| self.throughput_of(&n, |r| Some(r.steady_rate)).map(|s| (n, s.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, _)| n)
    }
}

/// The results as Markdown: headline ratios, the three tables, the method's
/// parameters and every run.
fn report(s: &Settings, r: &Results, environment: &str) -> String {
    use std::fmt::Write;
    let names: Vec<String> = s.systems.iter().map(System::name).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "engage against the Kafka Streams peer, {} guarantee: {} events over {} customers, {PARTITIONS} partitions, \
         Apache Kafka 4.4.0 on loopback, {} interleaved rounds; memory at {} customers; latency at {:.0} events/s \
         offered. Medians, with min–max over the runs kept.\n",
        s.guarantee.replace('_', " "),
        s.events,
        s.customers,
        s.reps,
        s.memory_customers,
        s.latency_rate
    );
    // Headline ratios against the best peer.
    let engage = System::Engage.name();
    if let Some(best) = r.best_peer(&s.systems) {
        let _ = writeln!(out, "| engage ÷ best peer ({best}) | median |\n|---|---|");
        let ratio = |a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}×", a.0 / b.0),
            _ => "–".into(),
        };
        let t = |n: &str, f: fn(&ThroughputRun) -> Option<f64>| r.throughput_of(n, f);
        let _ = writeln!(
            out,
            "| events/s, steady state | {} |",
            ratio(t(&engage, |x| Some(x.steady_rate)), t(&best, |x| Some(x.steady_rate)))
        );
        let _ = writeln!(
            out,
            "| events/s, whole run | {} |",
            ratio(t(&engage, |x| Some(x.whole_rate)), t(&best, |x| Some(x.whole_rate)))
        );
        let _ = writeln!(
            out,
            "| events per client CPU-second, steady state | {} |",
            ratio(t(&best, |x| Some(x.steady_cpu)), t(&engage, |x| Some(x.steady_cpu)))
        );
        let _ = writeln!(
            out,
            "| events per client CPU-second, start-up included | {} |",
            ratio(t(&best, |x| Some(x.whole_cpu)), t(&engage, |x| Some(x.whole_cpu)))
        );
        for store in ["rocksdb", "in_memory"] {
            let peer = System::Peer { store, threads: 1 }.name();
            let slope = |n: &str| r.memory_of(n, |x| Some(x.slope));
            if slope(&peer).is_some() {
                let heap = r.memory_of(&peer, |x| x.heap_slope);
                let _ = writeln!(
                    out,
                    "| memory slope, engage's RSS ÷ {peer}'s RSS / heap in use | {} / {} |",
                    ratio(slope(&engage), slope(&peer)),
                    ratio(slope(&engage), heap)
                );
            }
        }
        let p99 = |n: &str| r.latency_of(n, |x| x.p99);
        let _ = writeln!(out, "| p99 latency at the common rate, ÷ best peer | {} |", ratio(p99(&engage), p99(&best)));
        let floor = System::Pipe.name();
        let above = |f: fn(&ThroughputRun) -> Option<f64>| match (t(&engage, f), t(&floor, f)) {
            (Some(e), Some(p)) => format!("{:.2} (engage {:.2} − pipe {:.2})", e.0 - p.0, e.0, p.0),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| engage's own client CPU above the pipe floor, s / M events: steady state | {} |",
            above(|x| Some(x.steady_cpu))
        );
        let _ = writeln!(out, "| the same over the whole run | {} |", above(|x| Some(x.whole_cpu)));
        out.push('\n');
    }
    if !r.throughput.is_empty() {
        let _ = writeln!(
            out,
            "### Throughput\n\nSteady state: from 30 % to 90 % of the backlog committed. CPU in seconds per \
             million events; whole-run CPU from process start (start-up included).\n\n\
             | system | events/s, steady | events/s, whole run | client CPU, steady | client CPU, whole run | \
             broker CPU, steady | commits in window | start-up s | published / event | bytes / event | \
             score batches: records | score batches: KiB | peak RSS MiB | GC share | runs kept |\n|{}",
            "---|".repeat(15)
        );
        for n in &names {
            let t = |f: fn(&ThroughputRun) -> Option<f64>| r.throughput_of(n, f);
            let kept = r.throughput.iter().filter(|x| &x.system == n && !x.discarded).count();
            let all = r.throughput.iter().filter(|x| &x.system == n).count();
            if all == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {kept} of {all} |",
                cell(t(|x| Some(x.steady_rate)), 0),
                cell(t(|x| Some(x.whole_rate)), 0),
                cell(t(|x| Some(x.steady_cpu)), 2),
                cell(t(|x| Some(x.whole_cpu)), 2),
                cell(t(|x| Some(x.broker_cpu)), 2),
                cell(t(|x| Some(x.commits_in_window as f64)), 0),
                cell(t(|x| Some(x.startup)), 1),
                cell(t(|x| x.published), 3),
                cell(t(|x| x.bytes_per_event), 0),
                cell(t(|x| x.records_per_batch), 0),
                cell(t(|x| x.bytes_per_batch.map(|b| b / 1024.0)), 0),
                cell(t(|x| Some(x.peak_rss / 1048576.0)), 0),
                match t(|x| x.gc_share.map(|g| g * 100.0)) {
                    Some(g) => cell(Some(g), 1) + " %",
                    None => "–".into(),
                },
            );
        }
        out.push('\n');
        // The ceiling is there for scale only: it is always over in a few
        // commits.
        let ceiling = System::Ceiling.name();
        let short: Vec<&String> = names
            .iter()
            .filter(|n| **n != ceiling)
            .filter(|n| r.throughput_of(n, |x| Some(x.commits_in_window as f64)).is_some_and(|c| c.0 < 10.0))
            .collect();
        if !short.is_empty() {
            let _ = writeln!(
                out,
                "**The steady-state window spanned fewer than 10 commits for: {}.** Its rate and CPU are coarse; \
                 a larger backlog (`PEERS_EVENTS`) fixes it.\n",
                short.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Some(shape) = r.shape {
        let _ = writeln!(
            out,
            "The pipe published per event {:.3} score changes of {} bytes (with engage's three headers) and {:.3} \
             state records of {} bytes, as engage did in the first round.\n",
            shape.scores_per_event, shape.score_bytes, shape.changelog_per_event, shape.changelog_bytes
        );
    }
    if !r.gate.is_empty() {
        let _ = writeln!(out, "Outputs (first round):\n");
        for line in &r.gate {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    if !r.memory.is_empty() {
        let _ = writeln!(
            out,
            "### Memory\n\nSlope: (RSS at {} customers − RSS at {}) / {}, after a full GC for the JVM. With a \
             fixed heap the JVM's RSS hardly follows the population (its heap pages are touched long before); \
             its heap in use does.\n\n\
             | system | bytes / customer (slope) | RSS at {} customers, MiB | heap in use / customer (slope) | \
             GC share | runs kept |\n|---|---|---|---|---|---|",
            s.memory_customers,
            s.memory_customers / 2,
            s.memory_customers / 2,
            s.memory_customers
        );
        for n in &names {
            let all = r.memory.iter().filter(|x| &x.system == n).count();
            if all == 0 {
                continue;
            }
            let kept = r.memory.iter().filter(|x| &x.system == n && !x.discarded).count();
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {kept} of {all} |",
                cell(r.memory_of(n, |x| Some(x.slope)), 0),
                cell(r.memory_of(n, |x| Some(x.total / 1048576.0)), 0),
                cell(r.memory_of(n, |x| x.heap_slope), 0),
                match r.memory_of(n, |x| x.gc_share.map(|g| g * 100.0)) {
                    Some(g) => cell(Some(g), 1) + " %",
                    None => "–".into(),
                }
            );
        }
        out.push('\n');
    }
    if !r.latency.is_empty() {
        let _ = writeln!(
            out,
            "### Latency at {:.0} events/s offered\n\n| system | p50 ms | p99 ms | runs kept |\n|---|---|---|---|",
            s.latency_rate
        );
        for n in &names {
            let all = r.latency.iter().filter(|x| &x.system == n).count();
            if all == 0 {
                continue;
            }
            let kept = r.latency.iter().filter(|x| &x.system == n && !x.discarded).count();
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {kept} of {all} |",
                cell(r.latency_of(n, |x| x.p50), 0),
                cell(r.latency_of(n, |x| x.p99), 0)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "### Environment\n\n```\n{}```\n", environment);
    let _ = writeln!(
        out,
        "### Every run\n\nA run is discarded when other processes used more than {:.2} cores meanwhile.\n\n\
         | phase | round | system | result | others' cores | load avg start → end | kept |\n|---|---|---|---|---|---|---|",
        s.max_foreign_cpu
    );
    for x in &r.throughput {
        let _ = writeln!(
            out,
            "| throughput | {} | {} | {} events/s steady, {:.2} CPU s / M, {} commits in window | {:.2} | {:.2} → {:.2} | {} |",
            x.round,
            x.system,
            num(x.steady_rate, 0),
            x.steady_cpu,
            x.commits_in_window,
            x.foreign,
            x.load.0,
            x.load.1,
            if x.discarded { "no" } else { "yes" }
        );
    }
    for x in &r.memory {
        let _ = writeln!(
            out,
            "| memory | | {} | {:.0} B / customer, {:.0} MiB | {:.2} | {:.2} → {:.2} | {} |",
            x.system,
            x.slope,
            x.total / 1048576.0,
            x.foreign,
            x.load.0,
            x.load.1,
            if x.discarded { "no" } else { "yes" }
        );
    }
    for x in &r.latency {
        let _ = writeln!(
            out,
            "| latency | | {} | p50 {:.0} ms, p99 {:.0} ms | {:.2} | {:.2} → {:.2} | {} |",
            x.system,
            x.p50,
            x.p99,
            x.foreign,
            x.load.0,
            x.load.1,
            if x.discarded { "no" } else { "yes" }
        );
    }
    out
}

/// The machine, the JDK and the peer's JVM flags, for the record.
fn environment(s: &Settings) -> String {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
            .unwrap_or_else(|e| format!("{cmd}: {e}\n"))
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let mut out = format!(
        "engage {}cores {} ({cpu}), {}",
        run("git", &["rev-parse", "--short", "HEAD"]),
        run("nproc", &[]).trim(),
        run("uname", &["-sr"])
    );
    for store in ["rocksdb", "in_memory"] {
        let mut args: Vec<String> = s.jvm(store);
        args.extend(["-XX:+PrintCommandLineFlags".into(), "-version".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        out.push_str(&format!("peer JVM ({store} store): {} {}\n", peer::java(), args.join(" ")));
        out.push_str(&run(&peer::java(), &args));
    }
    // The broker's JVM (scripts/kafka-broker), the same for every system.
    let broker_jvm = s
        .broker_pid
        .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| {
            let args: Vec<String> = c.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
            args.iter().take_while(|a| *a != "-cp").cloned().collect::<Vec<_>>().join(" ")
        })
        .unwrap_or_default();
    out.push_str(&format!("broker: {broker_jvm}\n"));
    out.push_str(&format!(
        "peer properties: num.stream.threads per system, {}\n",
        if s.properties.is_empty() { "nothing else".to_string() } else { s.properties.join(" ") }
    ));
    out
}

/// The comparison (module docs): `scripts/bench-peers`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-peers"]
async fn fair() {
    let mut s = Settings::from_env();
    let broker = Broker::private();
    s.broker_pid = broker.pid();
    let environment = environment(&s);
    eprintln!("peers: {environment}");
    peer::classpath(); // built before any clock starts
    let mut results = Results::default();

    if s.phases.contains("throughput") {
        let base = Topics::create(&broker, PARTITIONS).await;
        let config = Config::from_toml(&config_text(&broker, &base, "at_least_once")).unwrap();
        let history_days = (1.5 * s.events as f64 / (s.customers as f64 * 1.16)).max(30.0);
        let opts = engage::cmd::loadgen::LoadOptions {
            rate: None,
            customers: s.customers,
            count: Some(s.events),
            duration: None,
            seed: 1,
            format: engage::vocab::Format::Json,
            bad_fraction: 0.0,
            history_days,
            progress_every: Duration::from_secs(30),
        };
        let t = Instant::now();
        let load =
            engage::cmd::loadgen::loadgen(&config, &opts, tokio_util::sync::CancellationToken::new()).await.unwrap();
        assert_eq!(load.records, s.events, "the population produced fewer events than asked");
        eprintln!("peers: preloaded {} events in {:.0} s", s.events, t.elapsed().as_secs_f64());
        let n = s.events as i64;
        // engage first in the first round: the pipe publishes what it did.
        let mut order: Vec<System> = s.systems.clone();
        if let Some(i) = order.iter().position(|x| *x == System::Engage) {
            let engage = order.remove(i);
            order.insert(0, engage);
        }
        let mut engaged: Option<BTreeMap<String, Published>> = None;
        for round in 0..s.reps {
            let mut this_round = order.clone();
            this_round.rotate_left(round % order.len().max(1));
            for system in &this_round {
                if *system == System::Pipe && results.shape.is_none() {
                    eprintln!("peers: no pipe without engage's first run (its shape)");
                    continue;
                }
                let read_outputs = round == 0;
                let shape = if *system == System::Pipe { results.shape } else { None };
                let mut outputs = None;
                let runs = until_kept(
                    s.retries,
                    |r: &(ThroughputRun, Option<Outputs>)| r.0.discarded,
                    || throughput_run(&broker, &s, system, &base, n, round, shape, read_outputs && outputs.is_none()),
                )
                .await;
                for (run, o) in runs {
                    results.throughput.push(run);
                    if o.is_some() {
                        outputs = o;
                    }
                }
                let Some(o) = outputs else { continue };
                let line = if *system == System::Engage {
                    results.shape = o.shape;
                    let changes: u32 = o.changes.values().map(|p| p.count).sum();
                    let line = format!("engage published {changes} score changes for {} customers", o.changes.len());
                    engaged = Some(o.changes);
                    line
                } else if let Some(e) = &engaged {
                    let differ = peer::output_differences(e, &o.changes);
                    if differ.is_empty() {
                        format!(
                            "{}: the same score changes as engage for every customer (largest last-score \
                             difference {:.1e})",
                            system.name(),
                            peer::largest_score_difference(e, &o.changes)
                        )
                    } else {
                        format!(
                            "{}: **differs from engage** for {} customers; first: {}",
                            system.name(),
                            differ.len(),
                            differ.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                        )
                    }
                } else {
                    continue;
                };
                eprintln!("peers: {line}");
                results.gate.push(line);
            }
        }
        delete_topics(&broker, &[base.clickstream.clone(), base.purchases.clone()]).await;
    }

    // Memory and latency: engage and the peer's stores (each with the
    // thread count that was faster, else 1).
    let threads_for = |store: &'static str| -> u32 {
        [1, 2]
            .into_iter()
            .filter_map(|threads| {
                let name = System::Peer { store, threads }.name();
                results.throughput_of(&name, |r| Some(r.steady_rate)).map(|m| (threads, m.0))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(1, |b| b.0)
    };
    let mut others: Vec<System> = vec![];
    if s.systems.contains(&System::Engage) {
        others.push(System::Engage);
    }
    for store in ["rocksdb", "in_memory"] {
        if s.systems.iter().any(|x| matches!(x, System::Peer { store: st, .. } if *st == store)) {
            others.push(System::Peer { store, threads: threads_for(store) });
        }
    }
    if s.phases.contains("memory") {
        for _ in 0..s.memory_reps {
            for system in &others {
                let mut system = system.clone();
                if let System::Peer { threads, .. } = &mut system {
                    // Memory per customer does not depend on the threads.
                    *threads = 1;
                }
                let runs =
                    until_kept(s.retries, |r: &MemoryRun| r.discarded, || memory_run(&broker, &s, &system)).await;
                results.memory.extend(runs);
            }
        }
    }
    if s.phases.contains("latency") {
        for _ in 0..s.latency_reps {
            for system in &others {
                let runs =
                    until_kept(s.retries, |r: &LatencyRun| r.discarded, || latency_run(&broker, &s, system)).await;
                results.latency.extend(runs);
            }
        }
    }

    let table = report(&s, &results, &environment);
    let rows: Vec<Row> = s
        .systems
        .iter()
        .map(System::name)
        .map(|n| Row {
            rate: results.throughput_of(&n, |r| Some(r.steady_rate)).map(|m| m.0),
            client_cpu: results.throughput_of(&n, |r| Some(r.steady_cpu)).map(|m| m.0),
            rss_per_customer: results.memory_of(&n, |r| Some(r.slope)).map(|m| m.0),
            latency: results.latency_of(&n, |r| r.p50).zip(results.latency_of(&n, |r| r.p99)).map(|(a, b)| (a.0, b.0)),
            // Not measured: the start-up time (to ready) is in the table.
            first_output: None,
            name: n,
        })
        .collect();
    std::fs::create_dir_all(&s.out).unwrap();
    std::fs::write(s.out.join("peers.md"), &table).unwrap();
    std::fs::write(s.out.join("peers.svg"), svg(&rows)).unwrap();
    println!("\n{table}");
    println!("table and chart: {}/peers.{{md,svg}}", s.out.display());
    let failed: Vec<&String> = results.gate.iter().filter(|l| l.contains("differs from engage")).collect();
    assert!(failed.is_empty(), "the peer's outputs differ from engage's: {failed:?}");
}

/// The bare consumer or the pipe (module docs), run by [`start`] as a child
/// process of this test binary (so its CPU and memory are its own) with
/// its parameters in `PEERS_CHILD_*`; does nothing when run otherwise.
#[test]
#[ignore = "a child process of peers::fair"]
fn child() {
    let Ok(config_file) = std::env::var("PEERS_CHILD_CONFIG") else { return };
    let config = Config::from_toml(&std::fs::read_to_string(config_file).unwrap()).unwrap();
    let want: u64 = env_or("PEERS_CHILD_WANT", 0);
    let shape = std::env::var("PEERS_CHILD_SCORES_PER_EVENT").is_ok().then(|| Shape {
        scores_per_event: env_or("PEERS_CHILD_SCORES_PER_EVENT", 0.0),
        score_bytes: env_or("PEERS_CHILD_SCORE_BYTES", 0),
        changelog_per_event: env_or("PEERS_CHILD_CHANGELOG_PER_EVENT", 0.0),
        changelog_bytes: env_or("PEERS_CHILD_CHANGELOG_BYTES", 0),
    });
    let changelog = std::env::var("PEERS_CHILD_CHANGELOG").unwrap_or_default();
    pipe_main(&config, want, shape, &changelog);
    // Stay alive, idle, so the harness can read this process' CPU; it ends
    // us with SIGTERM.
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The bare consumer (`shape` `None`) or the pipe: consumes both inputs of
/// `config` with engage's consumer settings (offsets stored as consumed,
/// committed by librdkafka every second as engage's are) and, for the pipe,
/// publishes per event what `shape` says with engage's producer settings;
/// after `want` records, flushes and commits.
pub fn pipe_main(config: &Config, want: u64, shape: Option<Shape>, changelog: &str) {
    // engage's consumer settings matter: with librdkafka's defaults the
    // consumer stops fetching for a second whenever its local queue is full
    // (engage's kafka/client.rs), and a pipe so configured made a third of
    // the events/s at the same CPU per event.
    let mut consumer_config = engage::kafka::client::input_consumer(config);
    consumer_config.set("enable.auto.offset.store", "true").set("enable.auto.commit", "true");
    let consumer: BaseConsumer = consumer_config.create().unwrap();
    consumer.subscribe(&[&config.topics.clickstream, &config.topics.purchases]).unwrap();
    let producer: Option<BaseProducer> =
        shape.map(|_| engage::kafka::client::output_producer(config, None).create().unwrap());
    let shape = shape.unwrap_or_default();
    let score = vec![b'x'; shape.score_bytes];
    let state = vec![b'x'; shape.changelog_bytes];
    let scores_topic = config.topics.scores.as_str();
    let send = |producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>| {
        while let Err((e, back)) = producer.send(record) {
            assert!(matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::QueueFull)), "{e}");
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    };
    let (mut seen, mut owed_scores, mut owed_state) = (0u64, 0.0, 0.0);
    while seen < want {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.unwrap();
        if seen == 0 {
            eprintln!("child: ready");
        }
        seen += 1;
        let Some(producer) = &producer else { continue };
        let key = m.key().unwrap_or_default();
        owed_scores += shape.scores_per_event;
        while owed_scores >= 1.0 {
            owed_scores -= 1.0;
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header { key: "content-type", value: Some("application/json") })
                .insert(Header { key: "engage.schema.version", value: Some("1") })
                .insert(Header { key: "engage.message.type", value: Some("engage.v1.ScoreChanged") });
            send(producer, BaseRecord::to(scores_topic).key(key).payload(&score[..]).headers(headers));
        }
        owed_state += shape.changelog_per_event;
        while owed_state >= 1.0 {
            owed_state -= 1.0;
            send(producer, BaseRecord::to(changelog).key(key).payload(&state[..]).partition(m.partition()));
        }
        if seen % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    if let Some(producer) = &producer {
        producer.flush(Duration::from_secs(120)).unwrap();
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    eprintln!("child: done, {seen} records");
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
    assert_eq!(stats([3.0, 1.0, 2.0, f64::NAN]), Some((2.0, 1.0, 3.0)));
    assert_eq!(stats([4.0, 1.0]), Some((2.5, 1.0, 4.0)));
}
