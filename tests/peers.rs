//! The output gate of the Kafka Streams peer (issues 19 and 28): the peer
//! benchmarked against engage must publish what engage publishes. On the
//! same input records, `engage run` and the peer (`benches/peers/kafka-streams`,
//! built by `scripts/install-peers`) each run until they have committed
//! every record, and their score topics must hold, for every customer, the
//! same number of score changes, a last score within 10⁻⁶ and the same last
//! lifecycle stage.
//!
//! **What is deterministic, and so gated.** engage publishes a score change
//! when a customer is new, when the score moved by at least
//! `scoring.min_delta` since the last one published, or when the stage or
//! the health changed. All but health are functions of the events applied
//! and their order, which both systems make the same: each orders a
//! partition's clickstream and purchases records by event time, waiting for
//! records already on the broker (engage's alignment; the peer's event-time
//! extractor, Streams' `max.task.idle.ms` 0), so on a backlog loaded before
//! either starts they apply the same events in the same order; and the
//! peer keeps the sums in `f32` between events as engage does, so the same
//! arithmetic gives the same scores up to the last bits of `exp`. Health
//! moves only in engage's sweeps, which run on the wall clock (when a
//! sweep falls, and the stream time it sees, depend on how fast records
//! were consumed): the peer does not implement them, and the gate's engage
//! runs with sweeps an effectively infinite interval apart, so health stays
//! `active` and no churn alert is published. Both systems read their rules
//! from one config file: the gate's, with `engage.example.toml`'s rules.
//!
//! `scripts/test` runs the sample file (its bad records included: both
//! drop them, engage before ordering, the peer in its timestamp extractor)
//! and a 20 000-event loadgen population exactly once; the issue's
//! 100 000-event check is ignored here for time:
//! `scripts/test --test peers -- --ignored`. The benchmark
//! (`scripts/bench-peers`) holds its own backlog to the same check.

mod common;

use std::time::Duration;

use common::peer::{self, Published};
use common::runs::run_topics;
use common::{Broker, Engage, Topics};
use engage::cmd::loadgen::synth::{Population, Record};
use engage::vocab::Format;
use engage::vocab::InputKind;
use serde_json::Value;

const PARTITIONS: i32 = 4;

/// A JSONL line as an input record: purchases and refunds to the purchases
/// topic, the rest (bad lines included) to the clickstream, keyed by
/// customer_id (empty when there is none, so both sides reject it).
fn record_of_line(line: &str) -> Record {
    let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let purchases = matches!(v["type"].as_str(), Some("purchase" | "refund"));
    Record {
        topic: if purchases { InputKind::Purchases } else { InputKind::Clickstream },
        key: v["customer_id"].as_str().unwrap_or_default().as_bytes().to_vec(),
        value: line.as_bytes().to_vec(),
        ts_ms: 0,
    }
}

/// Feeds `records` to fresh topics, runs engage (`engage_guarantee`) and the
/// peer (`peer_guarantee`, each store) side by side over them, and holds
/// the peer's score changes to engage's.
async fn gate(name: &str, records: &[Record], engage_guarantee: &str, peer_guarantee: &str) {
    let broker = Broker::start();
    let topics = Topics::create(&broker, PARTITIONS).await;
    let want = common::feed(&broker, &topics, records);
    let dir = tempfile::tempdir().unwrap();
    // No sweeps (module docs); offsets and changelog every second, the
    // peer committing as often.
    let config = topics.config(
        &broker,
        &format!(
            "sweep_interval = \"3650days\"\nprocessing_guarantee = \"{engage_guarantee}\"\n\
             [state]\nflush_interval = \"1s\"\n{}",
            peer::rules_sections()
        ),
    );
    let config_file = dir.path().join("engage.toml");
    std::fs::write(&config_file, &config).unwrap();

    peer::classpath(); // built before anything starts
    let mut engage = Engage::start(dir.path(), &config);
    let mut peers = Vec::new();
    for store in ["rocksdb", "in_memory"] {
        let t = run_topics(&broker, &topics, &format!("peer-{store}")).await;
        let app = common::unique("peer");
        let options = peer::Options {
            guarantee: peer_guarantee,
            store,
            config: &config_file,
            state_dir: &dir.path().join(&app),
            jvm: &["-Xmx256m".to_string()],
            properties: &[],
        };
        let run = peer::start(&broker, &t, &app, &options);
        peers.push((store, t, app, run));
    }
    let limit = Duration::from_secs(240);
    assert!(
        peer::wait_consumed(&broker, &topics, &topics.group, PARTITIONS, want, limit),
        "{name}: engage did not commit all {want:?} input records:\n{}",
        engage.log()
    );
    assert_eq!(engage.terminate(Duration::from_secs(60)).0, Some(0), "{name}: engage exit:\n{}", engage.log());
    let (engaged, _) = peer::score_changes(&broker, &topics.scores);
    assert!(!engaged.is_empty(), "{name}: engage published nothing");
    let changes: u32 = engaged.values().map(|p| p.count).sum();

    for (store, t, app, mut run) in peers {
        let consumed = peer::wait_consumed(&broker, &topics, &app, PARTITIONS, want, limit);
        assert!(consumed, "{name}: the peer ({store}) did not commit all {want:?} input records:\n{}", run.log());
        // The JVM exits 143 (128 + SIGTERM) after its shutdown hook closed
        // Kafka Streams cleanly.
        let (code, _) = run.terminate(Duration::from_secs(60));
        assert!(run.log().contains("engage-peer: stopped"), "{name}: the peer did not stop cleanly:\n{}", run.log());
        assert!(matches!(code, Some(0 | 143)), "{name}: peer exit {code:?}:\n{}", run.log());
        let (peered, _) = peer::score_changes(&broker, &t.scores);
        let differ = peer::output_differences(&engaged, &peered);
        println!(
            "{name} (engage {engage_guarantee}, peer {peer_guarantee}, {store}): {} records, {} customers, \
             {changes} score changes; largest last-score difference {:.1e}",
            records.len(),
            engaged.len(),
            peer::largest_score_difference(&engaged, &peered)
        );
        assert!(
            differ.is_empty(),
            "{name}: the peer ({store}) published differently from engage for {} of {} customers; first:\n{}",
            differ.len(),
            engaged.len(),
            differ.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// `n` events of `engage loadgen`'s simulated population (60 days of
/// history ending an hour ago, about one event per customer-day), as
/// loadgen produces them.
fn population(n: usize) -> Vec<Record> {
    let now = engage::clock::wall_clock_ms();
    let start = now - 60 * 86_400_000;
    let customers = (n / 60).max(100);
    let mut population = Population::new(7, customers, start);
    let mut records = Vec::new();
    let mut until = start;
    while records.len() < n && until < now - 3_600_000 {
        until += 3_600_000;
        population.advance(until, Format::Json, &mut records);
    }
    assert!(records.len() >= n.min(1000), "the population made {} events", records.len());
    records.truncate(n);
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_streams_peer_publishes_engages_score_changes_on_the_sample_events() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sample-events.jsonl")).unwrap();
    let records: Vec<Record> = text.lines().filter(|l| !l.trim().is_empty()).map(record_of_line).collect();
    gate("sample-events.jsonl", &records, "at_least_once", "at_least_once").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_streams_peer_publishes_engages_score_changes_on_a_loadgen_population_exactly_once() {
    gate("loadgen population, 20 000 events", &population(20_000), "exactly_once", "exactly_once_v2").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the issue's 100 000-event check, about a minute: scripts/test --test peers -- --ignored"]
async fn the_kafka_streams_peer_publishes_engages_score_changes_on_100_000_loadgen_events() {
    let n = std::env::var("PEERS_GATE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    gate(&format!("loadgen population, {n} events"), &population(n), "at_least_once", "at_least_once").await;
}

/// The comparison itself can fail: each kind of difference is reported.
#[test]
fn output_differences_name_every_kind_of_difference() {
    let p = |count, score: f64, stage: &str| Published { count, score, stage: stage.to_string() };
    let engage = [("a", p(3, 50.0, "integration")), ("b", p(1, 8.7, "initiation")), ("c", p(2, 10.0, "initiation"))];
    let engage = engage.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert!(peer::output_differences(&engage, &engage).is_empty());
    let mut peer = engage.clone();
    peer.get_mut("a").unwrap().count = 4;
    peer.get_mut("b").unwrap().score += 2e-6;
    peer.get_mut("c").unwrap().stage = "integration".into();
    peer.insert("d".into(), p(1, 1.0, "initiation"));
    let differ = peer::output_differences(&engage, &peer);
    assert_eq!(differ.len(), 4, "{differ:#?}");
    peer.get_mut("b").unwrap().score = 8.7 + 5e-7;
    assert_eq!(peer::output_differences(&engage, &peer).len(), 3, "within 1e-6 is equal");
    peer.remove("a");
    assert!(peer::output_differences(&engage, &peer).iter().any(|d| d.starts_with("a:")));
}
