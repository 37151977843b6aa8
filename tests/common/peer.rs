//! The Kafka Streams peer of engage (`benches/peers/kafka-streams`, issue
//! 19) as a child process: built by `scripts/install-peers`, run on a
//! test's topics with the scoring rules of `engage.example.toml`, and its
//! final per-customer state read back from its store's changelog topic.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Broker, Engage, Topics, committed, read_topic, repo_root};

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

/// Starts the peer as `application_id` on `topics` (inputs, and scores as
/// its output) with `guarantee` (`at_least_once` or `exactly_once_v2`), its
/// RocksDB under `state_dir`. `jvm` are extra JVM options. The returned
/// handle's log is the peer's stderr; it prints `engage-peer: RUNNING` once
/// running.
pub fn start(
    broker: &Broker,
    topics: &Topics,
    application_id: &str,
    guarantee: &str,
    state_dir: &Path,
    jvm: &[&str],
) -> Engage {
    let java = std::env::var("JAVA_HOME").map_or_else(|_| "java".to_string(), |h| format!("{h}/bin/java"));
    let config = repo_root().join("engage.example.toml");
    let child = Command::new(java)
        .args(jvm)
        .arg("-cp")
        .arg(classpath())
        .arg("engage.peer.EngagePeer")
        .arg("--config")
        .arg(&config)
        .args(["--bootstrap", &broker.bootstrap, "--application-id", application_id, "--guarantee", guarantee])
        .args(["--clickstream", &topics.clickstream, "--purchases", &topics.purchases, "--scores", &topics.scores])
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start java (the Kafka Streams peer)");
    Engage::capture(child)
}

/// Waits until the peer (consumer group `application_id`) has committed
/// `want` (clickstream, purchases) records of `topics`; false after `limit`.
pub fn wait_consumed(
    broker: &Broker,
    topics: &Topics,
    application_id: &str,
    partitions: i32,
    want: (i64, i64),
    limit: Duration,
) -> bool {
    let t = Instant::now();
    while committed(broker, application_id, &topics.clickstream, partitions) < want.0
        || committed(broker, application_id, &topics.purchases, partitions) < want.1
    {
        if t.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    true
}

/// One customer's state in the peer's store.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerState {
    /// The five decayed dimension sums as of `last_seen`, in engage's
    /// dimension order.
    pub sums: [f64; 5],
    /// Their reference time: the customer's latest event time, epoch ms.
    pub last_seen: i64,
    /// The last score the peer published.
    pub last_published: f64,
}

impl PeerState {
    /// Decodes the store's 56-byte big-endian value.
    pub fn decode(bytes: &[u8]) -> PeerState {
        assert_eq!(bytes.len(), 56, "a peer state is 56 bytes");
        let f = |i: usize| f64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        PeerState {
            sums: [f(0), f(1), f(2), f(3), f(4)],
            last_seen: i64::from_be_bytes(bytes[40..48].try_into().unwrap()),
            last_published: f(6),
        }
    }
}

/// Every customer's last state in the changelog of `application_id`'s
/// store (read once the peer has stopped, so its cache is flushed).
pub fn final_states(broker: &Broker, application_id: &str) -> BTreeMap<String, PeerState> {
    let topic = format!("{application_id}-{STORE}-changelog");
    let mut states = BTreeMap::new();
    for r in read_topic(broker, &topic, 1, Duration::from_secs(60)) {
        let key = String::from_utf8(r.key.expect("changelog records are keyed")).unwrap();
        states.insert(key, PeerState::decode(&r.value));
    }
    states
}
