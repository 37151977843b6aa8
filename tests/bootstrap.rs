//! `engage bootstrap` against Apache Kafka (README "Starting from history").
//!
//! **From history, then live.** A synthetic history of 16 000 events over
//! 400 customers and 40 days is cut at an as-of time 60 % of the way in.
//! The "warehouse export" is every event up to the as-of (clickstream as
//! JSONL, purchases as CSV); the input topics hold the last 55 % (so 15 %
//! of the history, up to the as-of, is in both, as it is when Kafka's
//! retention overlaps the export). Keys are placed by librdkafka's default
//! partitioner, so the config says `consistent_random`. Bootstrap, then
//! `engage run` over the topics; every customer's final changelog state
//! must hold the facts of one `engage replay` over the whole history:
//! active and purchase days, cadence, first and latest activity, lifetime
//! spend, the BG/NBD summary, and the dimension scores, score, P(alive) and
//! stage at the history's end (to 10⁻⁵ relative: the sums are kept in f32).
//! Health and `seq` are left out: they follow when the customer was
//! evaluated (replay sweeps daily, the run only at events), not the facts
//! (tests/backlog.rs compares those where they are comparable). The events
//! in both must each count once: the run must report exactly the overlap
//! as `bootstrapped`. The partitioner check must find the input records
//! where crc32 puts their keys (so engage's CRC-32 is librdkafka's).
//!
//! **Refusals and the partitioner check.** Records produced with
//! librdkafka's `murmur2_random` agree with the default `murmur2`, those
//! of its default partitioner are reported as disagreeing, with counts. A
//! second bootstrap into a changelog that holds state is refused, and so is
//! one while an `engage run` of the group is consuming; `--force`
//! overrides both and says so in the summary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::runs::{PARTITIONS, final_states_of_at_least, wait_committed};
use common::{Broker, Engage, Topics};
use engage::cmd::loadgen::synth::Record;
use engage::config::Config;
use engage::engine::event::DAY_MS;
use engage::engine::{Engine, Rules};
use engage::vocab::Format;
use engage::vocab::InputKind;
use serde_json::Value;

const EVENTS: usize = 16_000;
const CUSTOMERS: u64 = 400;
const STEP_MS: i64 = 216_000; // 16 000 events over 40 days

/// `engage bootstrap --config config --input … extra`: (success, summary
/// JSON if any, stderr).
fn bootstrap(dir: &Path, config: &str, inputs: &[&Path], extra: &[&str]) -> (bool, Value, String) {
    let path = dir.join(format!("bootstrap-{}.toml", common::unique("c")));
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_engage"));
    command.arg("bootstrap").arg("--config").arg(&path).arg("--out").arg(dir.join("bootstrap-out"));
    for input in inputs {
        command.arg("--input").arg(input);
    }
    let out = command.args(extra).env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn").output().unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), summary, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn lines(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()).collect()
}

/// The run's config, with the upstream partitioner set.
fn config(broker: &Broker, t: &Topics, partitioner: &str) -> String {
    common::runs::config(broker, t)
        .replace("[topics]\n", &format!("[topics]\nupstream_partitioner = \"{partitioner}\"\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_from_history_then_live_equals_one_replay_of_everything() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let start = engage::clock::wall_clock_ms() - 50 * DAY_MS;
    let history = engage::cmd::loadgen::synth::records(31, EVENTS, CUSTOMERS, start, STEP_MS, Format::Json);
    let cut = EVENTS * 60 / 100;
    let as_of = history[cut - 1].ts_ms;
    let live_from = EVENTS * 45 / 100;
    let overlap = (cut - live_from) as u64;

    // The export, up to the as-of: clickstream as JSONL, purchases as CSV.
    let (buys, clicks): (Vec<Record>, Vec<Record>) =
        history[..cut].iter().cloned().partition(|r| r.topic == InputKind::Purchases);
    let (clicks_file, buys_file) = (dir.path().join("clickstream.jsonl"), dir.path().join("purchases.csv"));
    std::fs::write(&clicks_file, lines(&clicks).join("\n") + "\n").unwrap();
    std::fs::write(&buys_file, common::json_lines_to_csv(&lines(&buys))).unwrap();

    // Kafka holds the rest, from before the as-of.
    let t = Topics::create(&broker, PARTITIONS).await;
    let want = common::feed(&broker, &t, &history[live_from..]);
    let config = config(&broker, &t, "consistent_random");

    let (ok, summary, log) =
        bootstrap(dir.path(), &config, &[&clicks_file, &buys_file], &["--as-of", &engage::clock::format_time(as_of)]);
    assert!(ok, "bootstrap failed:\n{log}");
    assert_eq!(summary["replay"]["applied"], cut as u64, "{summary}");
    assert_eq!(summary["replay"]["dead_letters"], 0);
    assert_eq!(summary["as_of"], as_of);
    let check = &summary["partitioner_check"];
    assert!(check["sampled"].as_u64().unwrap() > 100, "{summary}");
    assert_eq!(check["disagree"], 0, "engage's crc32 placement disagrees with librdkafka's: {summary}");
    let bootstrapped_customers = summary["customers_written"].as_u64().unwrap();
    assert_eq!(bootstrapped_customers, summary["replay"]["customers"].as_u64().unwrap());

    let mut engage = Engage::start(dir.path(), &config);
    assert!(wait_committed(&broker, &t, PARTITIONS, want), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    let log = engage.log();
    let skipped = log
        .lines()
        .find(|l| l.contains("stopped cleanly"))
        .and_then(|l| l.split("bootstrapped: ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no bootstrapped count in the summary:\n{log}"));
    assert!(log.contains("bootstrap_as_of"), "restore reports the as-of:\n{log}");

    let (states, replayed, differ) = compare_with_replay(&broker, &t, dir.path(), &history);
    assert!(states.len() as u64 > bootstrapped_customers / 2, "customers from the history are there");
    println!(
        "bootstrap then live: {} events, {} in the export up to the as-of, {} from Kafka ({overlap} in both, skipped \
         as bootstrapped); {} customers bootstrapped at {:.0} customers/s; {} customers, {} equal to one replay of \
         everything",
        EVENTS,
        cut,
        want.0 + want.1,
        bootstrapped_customers,
        summary["customers_per_second"].as_f64().unwrap(),
        replayed.len(),
        replayed.len()
            - differ.iter().map(|d| d.split(' ').next().unwrap()).collect::<std::collections::BTreeSet<_>>().len()
    );
    assert!(
        differ.is_empty(),
        "{} differences from replay, e.g.:\n{}",
        differ.len(),
        differ[..differ.len().min(10)].join("\n")
    );
    assert_eq!(skipped, overlap, "the events in both the export and Kafka are skipped by the run, and only they");
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_checks_the_partitioner_and_refuses_a_live_group_or_existing_state_unless_forced() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let start = engage::clock::wall_clock_ms() - 10 * DAY_MS;
    let history = engage::cmd::loadgen::synth::records(7, 2_000, 300, start, 60_000, Format::Json);
    let file = dir.path().join("history.jsonl");
    std::fs::write(&file, lines(&history).join("\n") + "\n").unwrap();

    // Records keyed by librdkafka's murmur2_random (the Java client's
    // placement) agree with the default `murmur2`.
    let java = Topics::create(&broker, PARTITIONS).await;
    {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> =
            broker.client_config().set("partitioner", "murmur2_random").set("linger.ms", "5").create().unwrap();
        for r in &history {
            let topic = if r.topic == InputKind::Purchases { &java.purchases } else { &java.clickstream };
            producer.send(BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..])).unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }
    let java_config = common::runs::config(&broker, &java);
    let (ok, summary, log) = bootstrap(dir.path(), &java_config, &[&file], &[]);
    assert!(ok, "{log}");
    let check = &summary["partitioner_check"];
    assert!(check["sampled"].as_u64().unwrap() > 100, "{summary}");
    assert_eq!(check["disagree"], 0, "engage's murmur2 placement disagrees with librdkafka's murmur2: {summary}");
    assert_eq!(summary["partitioner"], "murmur2");

    // Records of librdkafka's default partitioner, with the default config:
    // a warning with counts.
    let t = Topics::create(&broker, PARTITIONS).await;
    common::feed(&broker, &t, &history);
    let murmur = common::runs::config(&broker, &t);
    let (ok, summary, log) = bootstrap(dir.path(), &murmur, &[&file], &[]);
    assert!(ok, "{log}");
    let check = &summary["partitioner_check"];
    assert!(check["disagree"].as_u64().unwrap() > 0 && check["other_agrees"] == check["sampled"], "{summary}");
    assert!(log.contains("not in the partition topics.upstream_partitioner puts their key in"), "{log}");
    assert!(summary["forced"].as_array().unwrap().is_empty());

    // The changelog now holds state: refused, then forced.
    let (ok, _, log) = bootstrap(dir.path(), &murmur, &[&file], &[]);
    assert!(!ok && log.contains("already holds") && log.contains("--force"), "{log}");
    let (ok, summary, log) = bootstrap(dir.path(), &murmur, &[&file], &["--force"]);
    assert!(ok, "{log}");
    assert_eq!(summary["forced"].as_array().unwrap().len(), 1, "{summary}");

    // A member of the group is consuming: refused, then forced.
    let mut engage = Engage::start(dir.path(), &murmur);
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    let (ok, _, log) = bootstrap(dir.path(), &murmur, &[&file], &[]);
    assert!(!ok && log.contains("active member"), "{log}");
    let (ok, summary, log) = bootstrap(dir.path(), &murmur, &[&file], &["--force"]);
    assert!(ok, "{log}");
    assert_eq!(summary["forced"].as_array().unwrap().len(), 2, "group and changelog: {summary}");
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    println!(
        "partitioner check: murmur2_random records agree with murmur2, consistent_random ones disagree \
         ({}/{} sampled); refused with state in the changelog and with a live member, --force overrides both",
        check["disagree"], check["sampled"]
    );
}

/// One `engage replay` over the whole `history` against the final
/// changelog states of `t.group`: the states, replay's states, and every
/// fact on which they differ (see the module docs).
fn compare_with_replay(
    broker: &Broker,
    t: &Topics,
    dir: &Path,
    history: &[Record],
) -> (BTreeMap<String, engage::engine::state::CustomerState>, BTreeMap<String, Value>, Vec<String>) {
    // One replay over the whole history.
    let whole = dir.join("history.jsonl");
    std::fs::write(&whole, lines(history).join("\n") + "\n").unwrap();
    let end = history.last().unwrap().ts_ms;
    let out = Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(["replay", "--input"])
        .arg(&whole)
        .arg("--out")
        .arg(dir.join("replay"))
        .args(["--as-of", &engage::clock::format_time(end)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: BTreeMap<String, Value> = engage::history::read_jsonl(&dir.join("replay/state.jsonl"))
        .unwrap()
        .into_iter()
        .map(|s| (s["customer_id"].as_str().unwrap().to_string(), s))
        .collect();

    let states = final_states_of_at_least(broker, t, replayed.len());
    assert_eq!(states.keys().collect::<Vec<_>>(), replayed.keys().collect::<Vec<_>>(), "the same customers");
    let engine = Engine::new(Rules::new(&Config::default()));
    let prior = engine.rules().churn.default_cadence_days;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-3);
    let mut differ = Vec::new();
    for (id, want) in &replayed {
        let got = &states[id];
        let snap = engine.snapshot(got, end.max(got.last_seen));
        let value = engine.value_90d(got, &snap);
        let mut facts = vec![
            ("active_days", f64::from(got.active_days)),
            ("purchase_days", f64::from(got.purchase_days())),
            ("cadence_days", got.cadence_days(prior)),
            ("first_seen", got.first_seen as f64),
            ("last_seen", got.last_seen as f64),
            ("spend_lifetime", got.spend_lifetime()),
            ("score", snap.score),
            ("p_alive", snap.signals.p_alive),
        ];
        if let Some(p) = snap.purchases {
            facts.push(("repeat_purchases", f64::from(p.repeat_purchases)));
            facts.push(("recency_days", p.recency_days));
            facts.push(("age_days", p.age_days));
        }
        if let Some(v) = value {
            facts.push(("expected_purchases_90d", v.expected_purchases));
        }
        for (fact, ours) in facts {
            let theirs = want[fact].as_f64().unwrap_or(f64::NAN);
            if !close(ours, theirs) {
                differ.push(format!("{id} {fact}: run {ours}, replay {theirs}"));
            }
        }
        for (i, name) in ["attention", "transaction", "social", "loyalty", "satisfaction"].iter().enumerate() {
            let theirs = want["dimensions"][name].as_f64().unwrap();
            if !close(snap.dimensions[i], theirs) {
                differ.push(format!("{id} {name}: run {}, replay {theirs}", snap.dimensions[i]));
            }
        }
        if serde_json::to_value(snap.stage).unwrap() != want["stage"] {
            differ.push(format!("{id} stage: run {:?}, replay {}", snap.stage, want["stage"]));
        }
    }
    (states, replayed, differ)
}

/// The `bootstrapped` count of the "stopped cleanly" summary in `log`.
fn summary_bootstrapped(log: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("stopped cleanly"))
        .and_then(|l| l.split("bootstrapped: ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no bootstrapped count in the summary:\n{log}"))
}

/// Produces `records` to the inputs of `t` with librdkafka's
/// `murmur2_random` partitioner (the Java client's placement, engage's
/// default `murmur2` for keyed records).
fn feed_murmur2(broker: &Broker, t: &Topics, records: &[Record]) -> (i64, i64) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("partitioner", "murmur2_random").set("linger.ms", "5").create().unwrap();
    let (mut clicks, mut buys) = (0, 0);
    for r in records {
        let topic = if r.topic == InputKind::Purchases {
            buys += 1;
            &t.purchases
        } else {
            clicks += 1;
            &t.clickstream
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..]);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    (clicks, buys)
}

/// Per changelog partition: the offset of its bootstrap marker (the last
/// one), and how many records below it remain (the bootstrapped states
/// not yet compacted away).
fn markers_and_bootstrapped(broker: &Broker, changelog: &str) -> BTreeMap<i32, (i64, usize)> {
    let records = common::read_topic(broker, changelog, 1, Duration::from_secs(60));
    let mut markers = BTreeMap::new();
    for r in records.iter().filter(|r| r.key.as_deref() == Some(engage::codec::state::BOOTSTRAP_KEY)) {
        assert!(!r.value.is_empty(), "partition {}: the bootstrap marker was deleted", r.partition);
        markers.insert(r.partition, (r.offset, 0));
    }
    for r in &records {
        if let Some((at, below)) = markers.get_mut(&r.partition)
            && r.offset < *at
        {
            *below += 1;
        }
    }
    markers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_as_of_marker_outlives_compaction_and_a_new_owner_skips_what_it_covers() {
    const EVENTS: usize = 4_000;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let start = engage::clock::wall_clock_ms() - 50 * DAY_MS;
    let history = engage::cmd::loadgen::synth::records(17, EVENTS, 200, start, 864_000, Format::Json);
    let cut = EVENTS * 60 / 100;
    let as_of = history[cut - 1].ts_ms;
    let live_from = EVENTS * 45 / 100;
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, lines(&history[..cut]).join("\n") + "\n").unwrap();

    // Inputs keyed by murmur2, and a changelog that compacts as soon as it
    // can: segments rolled every 100 ms, any dirt worth cleaning.
    let t = Topics::create(&broker, PARTITIONS).await;
    let changelog = format!("{}.engage-state", t.group);
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<_> = broker.client_config().create().unwrap();
        let topic = NewTopic::new(&changelog, PARTITIONS, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("segment.ms", "100")
            .set("min.cleanable.dirty.ratio", "0.01")
            .set("min.compaction.lag.ms", "0")
            .set("delete.retention.ms", "100");
        admin.create_topics([&topic], &AdminOptions::new()).await.unwrap()[0].as_ref().expect("changelog created");
    }
    let mid = EVENTS * 80 / 100;
    let mut want = feed_murmur2(&broker, &t, &history[live_from..mid]);
    let config = common::runs::config(&broker, &t);

    let (ok, summary, log) =
        bootstrap(dir.path(), &config, &[&export], &["--as-of", &engage::clock::format_time(as_of)]);
    assert!(ok, "bootstrap failed:\n{log}");
    assert_eq!(summary["partitioner"], "murmur2");
    assert_eq!(summary["partitioner_check"]["disagree"], 0, "{summary}");
    let bootstrapped: Vec<usize> =
        summary["customers_by_partition"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect();
    let before = markers_and_bootstrapped(&broker, &changelog);
    assert_eq!(before.values().map(|m| m.1).collect::<Vec<_>>(), bootstrapped, "each state below its marker");

    // The run writes its own records over the bootstrapped customers, in
    // two rounds: the first round's then sit in a closed segment (Kafka
    // never cleans the active one), where the cleaner can use them.
    let first = Engage::start(dir.path(), &config);
    assert!(wait_committed(&broker, &t, PARTITIONS, want), "{}", first.log());
    let rest = feed_murmur2(&broker, &t, &history[mid..]);
    want = (want.0 + rest.0, want.1 + rest.1);
    assert!(wait_committed(&broker, &t, PARTITIONS, want), "{}", first.log());

    // Compaction removes the bootstrapped states the run replaced; the
    // markers stay.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let after = loop {
        let now = markers_and_bootstrapped(&broker, &changelog);
        assert_eq!(now.len(), PARTITIONS as usize, "a marker per partition: {now:?}");
        if now.values().map(|m| m.1).sum::<usize>() < bootstrapped.iter().sum::<usize>() {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the changelog was not compacted: {now:?} (marker offset, states below it), {} records in all; broker's \
             cleaner:\n{}",
            common::read_topic(&broker, &changelog, 1, Duration::from_secs(30)).len(),
            broker.logs().lines().filter(|l| l.contains("lean") || l.contains("oll")).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    println!(
        "compaction left {:?} of the {bootstrapped:?} bootstrapped states below the markers",
        after.values().map(|m| m.1).collect::<Vec<_>>()
    );

    // A second instance takes some partitions, restoring them from the
    // compacted changelog; then the export is sent again, every event of
    // it at or before the as-of.
    let second = Engage::start(dir.path(), &config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(second.log().contains("state restored") && first.log().contains("partition revoked")) {
        assert!(std::time::Instant::now() < deadline, "no partition moved:\n{}\n{}", first.log(), second.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(second.log().contains("bootstrap_as_of"), "the new owner restored the as-of:\n{}", second.log());
    let again = feed_murmur2(&broker, &t, &history[..cut]);
    want = (want.0 + again.0, want.1 + again.1);
    assert!(wait_committed(&broker, &t, PARTITIONS, want), "{}\n{}", first.log(), second.log());
    let mut stopped = Vec::new();
    for mut engage in [second, first] {
        assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
        stopped.push(summary_bootstrapped(&engage.log()));
    }
    let overlap = (cut - live_from) as u64;
    assert!(stopped[0] > 0, "the new owner skipped none of the events sent again: it read none");
    assert_eq!(stopped[0] + stopped[1], overlap + cut as u64, "every event at or before the as-of skipped, once");

    let (states, replayed, differ) = compare_with_replay(&broker, &t, dir.path(), &history);
    assert!(
        differ.is_empty(),
        "{} differences from replay, e.g.:\n{}",
        differ.len(),
        differ[..differ.len().min(10)].join("\n")
    );
    println!(
        "bootstrap (murmur2), run, compaction, a second instance: {} of the {cut} events sent again skipped by the \
         new owner; {} customers equal to one replay of everything",
        stopped[0],
        states.len().min(replayed.len())
    );
}
