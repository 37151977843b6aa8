//! The correctness gate of the Kafka Streams peer (issue 19): the peer
//! benchmarked against engage must do engage's scoring work, so on the same
//! events its final five dimension sums per customer must equal
//! `engage replay`'s.
//!
//! Each test loads events into fresh topics on the shared broker, runs the
//! peer (`benches/peers/kafka-streams`, built by `scripts/install-peers`)
//! until it has committed every input record, stops it, and reads each
//! customer's last state from its store's changelog: the five decayed sums
//! as of the customer's latest event time. `engage replay` of the same
//! events (engage's built-in defaults, which `engage.example.toml`, the
//! file the peer reads, must spell out: `config::example_tests`) writes each
//! customer's sums decayed to the as-of time (the last event time).
//!
//! **What is compared, and how precisely.** The raw decayed sums, not the
//! 0–100 dimension scores: the saturating curves flatten large sums, so a
//! wrong sum can still give a score within 10⁻⁶. The peer's sums are decayed
//! to the as-of time with engage's decay, and each must equal replay's
//! within 10⁻⁶ relative, or, for sums smaller than the dimension's
//! saturation `s`, within 10⁻⁶·`s`: one millionth of the dimension score's
//! range, since the score moves 100/`s` points per unit of sum near zero.
//! That floor is for sums near zero left by cancelling weights
//! (satisfaction: support +2, a poor rating −8): engage keeps each sum in
//! f32 between events, so a customer whose satisfaction went through ±30
//! carries an absolute rounding error of a few 10⁻⁶ (an f32 step at 32 is
//! 3.8·10⁻⁶), however small the final sum. The peer keeps f64, and the two
//! apply the events in different orders (replay in event-time order, the
//! peer as the partitions deliver them), which the late-event rule makes
//! equal up to that rounding. Each customer's reference time
//! (latest event time) must be equal, and the sets of customers too: a bad
//! record the peer applied, or a good one it dropped, shows up as either.
//!
//! `scripts/test` runs the sample file and a 20 000-event loadgen
//! population; the ≥ 100 000-event check the issue asks for is ignored
//! here for time: `scripts/test --test peers -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::peer::{self, PeerState};
use common::{Broker, Topics};
use engage::cmd::loadgen::synth::{Population, Record};
use engage::config::ScoringConfig;
use engage::engine::scoring::ScoringRules;
use engage::vocab::Dimension;
use engage::vocab::Format;
use engage::vocab::InputKind;
use serde_json::Value;

const PARTITIONS: i32 = 4;
const TOLERANCE: f64 = 1e-6;

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

/// `engage replay` of `input`: (as-of time, per customer (last_seen, the
/// five sums at the as-of time)).
fn replay(input: &Path, out: &Path) -> (i64, BTreeMap<String, (i64, [f64; 5])>) {
    let output = Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(["replay", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(output.status.success(), "engage replay: {}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let as_of = summary["as_of"].as_i64().expect("replay reports its as-of time");
    let states = engage::history::read_jsonl(&out.join("state.jsonl"))
        .unwrap()
        .into_iter()
        .map(|s| {
            let sums = Dimension::ALL.map(|d| s["dimension_sums"][d.as_str()].as_f64().unwrap());
            (s["customer_id"].as_str().unwrap().to_string(), (s["last_seen"].as_i64().unwrap(), sums))
        })
        .collect();
    (as_of, states)
}

/// Feeds `lines` to fresh topics, runs the peer over them with
/// `guarantee`, and holds its final sums to `engage replay`'s.
async fn gate(name: &str, lines: &[String], guarantee: &str) {
    let broker = Broker::start();
    let topics = Topics::create(&broker, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let records: Vec<Record> = lines.iter().map(|l| record_of_line(l)).collect();
    let want = common::feed(&broker, &topics, &records);

    let app = common::unique("peer");
    let mut run = peer::start(&broker, &topics, &app, guarantee, &dir.path().join("state"), &["-Xmx256m"]);
    let consumed = peer::wait_consumed(&broker, &topics, &app, PARTITIONS, want, Duration::from_secs(180));
    assert!(consumed, "{name}: the peer did not commit all {want:?} input records in 180 s:\n{}", run.log());
    // The JVM exits 143 (128 + SIGTERM) after its shutdown hook closed
    // Kafka Streams cleanly.
    let (code, _) = run.terminate(Duration::from_secs(60));
    assert!(run.log().contains("engage-peer: stopped"), "{name}: the peer did not stop cleanly:\n{}", run.log());
    assert!(matches!(code, Some(0 | 143)), "{name}: peer exit {code:?}:\n{}", run.log());
    let peer_states = peer::final_states(&broker, &app);

    let (as_of, replayed) = replay(&input, &dir.path().join("replay"));
    let config = ScoringConfig::default();
    let rules = ScoringRules::new(&config);
    let saturation = config.dimensions().map(|(_, d)| d.saturation);
    let mut differ = Vec::new();
    let mut worst: f64 = 0.0;
    for (id, (last_seen, sums)) in &replayed {
        let Some(PeerState { sums: peer_sums, last_seen: peer_seen, .. }) = peer_states.get(id) else {
            differ.push(format!("{id}: in replay, not in the peer's store"));
            continue;
        };
        if peer_seen != last_seen {
            differ.push(format!("{id}: latest event time {peer_seen} in the peer, {last_seen} in replay"));
            continue;
        }
        let decay = rules.decay(as_of.max(*peer_seen) - peer_seen);
        for d in Dimension::ALL {
            let i = d as usize;
            let (p, r) = (peer_sums[i] * decay[i], sums[i]);
            let scale = p.abs().max(r.abs()).max(saturation[i]);
            worst = worst.max((p - r).abs() / scale);
            if (p - r).abs() > TOLERANCE * scale {
                differ.push(format!("{id}: {} {p} in the peer, {r} in replay", d.as_str()));
            }
        }
    }
    for id in peer_states.keys().filter(|id| !replayed.contains_key(*id)) {
        differ.push(format!("{id}: in the peer's store, not in replay"));
    }
    println!(
        "{name} ({guarantee}): {} lines, {} customers, largest difference {worst:.2e} (relative, or of the saturation below it)",
        lines.len(),
        replayed.len()
    );
    assert!(
        differ.is_empty(),
        "{name}: {} differences from engage replay's dimension sums beyond {TOLERANCE:e}, over {} customers; first:\n{}",
        differ.len(),
        replayed.len(),
        differ.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// `n` events of `engage loadgen`'s simulated population (60 days of
/// history ending an hour ago, about one event per customer-day).
fn population_lines(n: usize) -> Vec<String> {
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
    records.into_iter().map(|r| String::from_utf8(r.value).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_streams_peer_ends_with_replays_dimension_sums_on_the_sample_events() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sample-events.jsonl")).unwrap();
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    gate("sample-events.jsonl", &lines, "at_least_once").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_streams_peer_ends_with_replays_dimension_sums_on_a_loadgen_population_exactly_once() {
    gate("loadgen population, 20 000 events", &population_lines(20_000), "exactly_once_v2").await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the issue's 100 000-event check, about a minute: scripts/test --test peers -- --ignored"]
async fn the_kafka_streams_peer_ends_with_replays_dimension_sums_on_100_000_loadgen_events() {
    let n = std::env::var("PEERS_GATE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    gate(&format!("loadgen population, {n} events"), &population_lines(n), "at_least_once").await;
}
