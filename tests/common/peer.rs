//! The Kafka Streams peer of engage (`benches/peers/kafka-streams`, issues
//! 19 and 28) as a child process: built by `scripts/install-peers`, run on
//! a test's topics with the engage config engage runs with, and what a
//! system published on its score topic, per customer, so the output gate
//! (`tests/peers.rs`, and the benchmark's own check in
//! `benches/broker/peers.rs`) can hold the peer's score changes to
//! engage's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::{Broker, Engage, Topics, committed, repo_root};

/// The peer's key-value store; its changelog is `<application.id>-` this
/// `-changelog`.
pub const STORE: &str = "customer-scores";

/// Builds the peer if its sources changed (`scripts/install-peers`, Maven
/// from its pinned pom) and returns its Java classpath.
pub fn classpath() -> String {
    let out = Command::new(repo_root().join("scripts/install-peers"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-peers");
    assert!(out.status.success(), "scripts/install-peers failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The `java` the peer runs on: `$PEERS_JAVA`, else `$JAVA_HOME/bin/java`,
/// else the one on the `PATH` (the broker follows `JAVA_HOME` too;
/// `PEERS_JAVA` changes the peer's alone).
pub fn java() -> String {
    std::env::var("PEERS_JAVA")
        .unwrap_or_else(|_| std::env::var("JAVA_HOME").map_or_else(|_| "java".to_string(), |h| format!("{h}/bin/java")))
}

/// The sections of `engage.example.toml` that hold the rules (`[input]`
/// to the end: input limits, output formats, scoring, lifecycle, churn),
/// to append to a test's engage config so that engage and the peer, which
/// needs them spelled out, read the same rules from the same file.
pub fn rules_sections() -> String {
    let example = std::fs::read_to_string(repo_root().join("engage.example.toml")).unwrap();
    let from = example.find("\n[input]\n").expect("engage.example.toml has an [input] section");
    example[from..].to_string()
}

/// How to run the peer.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// `at_least_once` or `exactly_once_v2`.
    pub guarantee: &'a str,
    /// `rocksdb` or `in_memory`.
    pub store: &'a str,
    /// The engage config file engage runs with (rules and commit cadence).
    pub config: &'a Path,
    /// RocksDB's directory.
    pub state_dir: &'a Path,
    /// JVM options (heap, GC).
    pub jvm: &'a [String],
    /// Streams and client properties, `key=value`.
    pub properties: &'a [String],
}

/// Starts the peer as `application_id` on `topics` (inputs, and scores as
/// its output). The returned handle's log is the peer's stderr; it prints
/// `engage-peer: RUNNING` once running.
pub fn start(broker: &Broker, topics: &Topics, application_id: &str, o: &Options<'_>) -> Engage {
    let mut command = Command::new(java());
    command
        .args(o.jvm)
        .arg("-cp")
        .arg(classpath())
        .arg("engage.peer.EngagePeer")
        .arg("--config")
        .arg(o.config)
        .args(["--bootstrap", &broker.bootstrap, "--application-id", application_id, "--guarantee", o.guarantee])
        .args(["--clickstream", &topics.clickstream, "--purchases", &topics.purchases, "--scores", &topics.scores])
        .args(["--store", o.store])
        .arg("--state-dir")
        .arg(o.state_dir);
    for p in o.properties {
        command.args(["--property", p]);
    }
    let child =
        command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start java (the Kafka Streams peer)");
    Engage::capture(child)
}

/// Waits until consumer group `group` has committed `want` (clickstream,
/// purchases) records of `topics`; false after `limit`.
pub fn wait_consumed(
    broker: &Broker,
    topics: &Topics,
    group: &str,
    partitions: i32,
    want: (i64, i64),
    limit: Duration,
) -> bool {
    let t = Instant::now();
    while committed(broker, group, &topics.clickstream, partitions) < want.0
        || committed(broker, group, &topics.purchases, partitions) < want.1
    {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// Calls `f` with every record of `topic` from the beginning to its end
/// as of now (committed transactions only), without keeping them: the
/// benchmark's topics hold millions. The producer must be done.
pub fn fold_topic(broker: &Broker, topic: &str, mut f: impl FnMut(&BorrowedMessage<'_>)) {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", super::unique("fold"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::BTreeSet::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        remaining.insert(p.id());
    }
    assert!(!remaining.is_empty(), "{topic} has no partitions");
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !remaining.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic}: partitions {remaining:?} not read to their end in 10 min");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => f(&m),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
}

/// What a system published for one customer on its score topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// Score changes.
    pub count: u32,
    /// The score of the last one.
    pub score: f64,
    /// Its lifecycle stage.
    pub stage: String,
}

/// The score changes on `topic`, per customer (a customer's changes share
/// a partition, so the last read is the last published), and the bytes of
/// their values.
pub fn score_changes(broker: &Broker, topic: &str) -> (BTreeMap<String, Published>, u64) {
    #[derive(serde::Deserialize)]
    struct Change<'a> {
        #[serde(borrow)]
        customer_id: std::borrow::Cow<'a, str>,
        score: f64,
        #[serde(borrow)]
        stage: std::borrow::Cow<'a, str>,
    }
    let mut out: BTreeMap<String, Published> = BTreeMap::new();
    let mut bytes = 0u64;
    fold_topic(broker, topic, |m| {
        let value = m.payload().unwrap_or_default();
        bytes += value.len() as u64;
        let c: Change<'_> = serde_json::from_slice(value)
            .unwrap_or_else(|e| panic!("{topic}: not a score change ({e}): {}", String::from_utf8_lossy(value)));
        let p = out.entry(c.customer_id.into_owned()).or_default();
        p.count += 1;
        p.score = c.score;
        if p.stage != c.stage {
            p.stage = c.stage.into_owned();
        }
    });
    (out, bytes)
}

/// Largest difference allowed between two systems' final scores.
pub const SCORE_TOLERANCE: f64 = 1e-6;

/// Where `peer`'s score changes differ from `engage`'s: a customer only
/// one published for, a different number of score changes, a last score
/// more than [`SCORE_TOLERANCE`] apart or a different last stage. One line
/// per customer that differs; empty if none.
pub fn output_differences(engage: &BTreeMap<String, Published>, peer: &BTreeMap<String, Published>) -> Vec<String> {
    let mut differ = Vec::new();
    for (id, e) in engage {
        match peer.get(id) {
            None => differ.push(format!("{id}: {} score changes from engage, none from the peer", e.count)),
            Some(p) if p.count != e.count => {
                differ.push(format!("{id}: {} score changes from engage, {} from the peer", e.count, p.count))
            }
            Some(p) if (p.score - e.score).abs() > SCORE_TOLERANCE || p.score.is_nan() => {
                differ.push(format!("{id}: last score {} from engage, {} from the peer", e.score, p.score))
            }
            Some(p) if p.stage != e.stage => {
                differ.push(format!("{id}: last stage {} from engage, {} from the peer", e.stage, p.stage))
            }
            Some(_) => {}
        }
    }
    for (id, p) in peer.iter().filter(|(id, _)| !engage.contains_key(*id)) {
        differ.push(format!("{id}: {} score changes from the peer, none from engage", p.count));
    }
    differ
}

/// The largest difference between the two systems' last scores.
pub fn largest_score_difference(a: &BTreeMap<String, Published>, b: &BTreeMap<String, Published>) -> f64 {
    a.iter().filter_map(|(id, x)| b.get(id).map(|y| (x.score - y.score).abs())).fold(0.0, f64::max)
}
