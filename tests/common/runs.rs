//! Runs of `engage run` over one input and their comparison: output topics
//! and a group per run over shared inputs, waiting for the commits, the
//! final changelog states, and the checks every fault test makes (the same
//! facts as an uninterrupted run; no `seq` gaps).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engage::engine::state::CustomerState;
use engage::vocab::Format;
use prost::Message as _;

use super::{Broker, Engage, Topics, committed, read_topic};

/// Input partitions of the fault tests.
pub const PARTITIONS: i32 = 4;

/// Produces the synthetic traffic: `n` events over `customers` customers,
/// event times in the past. Returns how many went to each input topic.
pub fn feed_events(broker: &Broker, topics: &Topics, n: usize, customers: u64) -> (i64, i64) {
    let start = engage::clock::wall_clock_ms() - 40 * 86_400_000;
    super::feed(broker, topics, &engage::cmd::loadgen::synth::records(42, n, customers, start, 10_000, Format::Json))
}

/// Output topics and group of one run, so two runs over the same inputs do
/// not mix.
pub async fn run_topics(broker: &Broker, base: &Topics, name: &str) -> Topics {
    let t = Topics {
        clickstream: base.clickstream.clone(),
        purchases: base.purchases.clone(),
        scores: format!("{}.{name}.scores", base.group),
        alerts: format!("{}.{name}.alerts", base.group),
        dlq: format!("{}.{name}.dlq", base.group),
        group: format!("{}.{name}", base.group),
    };
    for topic in [&t.scores, &t.alerts, &t.dlq] {
        broker.create_topic(topic, PARTITIONS).await;
    }
    t
}

pub fn config(broker: &Broker, t: &Topics) -> String {
    // No sweeps (they depend on wall-clock timing) so both runs see the
    // same transitions for the same events.
    t.config(broker, "sweep_interval = \"1h\"\n[state]\nflush_interval = \"200ms\"\n")
}

/// `text` (a [`config`]) with engage's output throttled: each batch lingers
/// `linger_ms` in the producer, and input pauses while more than
/// `max_in_flight` records await acknowledgement. Unthrottled, engage
/// consumes these inputs in a few seconds, far less than the faults take to
/// play out; throttled (to about `max_in_flight` records per pause, and a
/// pause costs up to a second: librdkafka fetches a resumed partition on
/// its broker thread's next wake-up), the faults land while work remains, however fast
/// engage gets. The engine sees the same records in the same order either
/// way. Input is paused much of the time, so a rebalance often comes while
/// it is: engage must resume the partitions it is given afterwards.
pub fn throttled(text: &str, linger_ms: u32, max_in_flight: usize) -> String {
    text.replace(
        "\"statistics.interval.ms\" = 1000",
        &format!("\"statistics.interval.ms\" = 1000\n\"linger.ms\" = {linger_ms}"),
    )
    .replace("sweep_interval = \"1h\"", &format!("sweep_interval = \"1h\"\nmax_in_flight = {max_in_flight}"))
}

/// `t`'s [`config`] in `exactly_once` mode under `transactional_id`. A
/// transaction left open by a killed instance is aborted by the broker
/// after `transaction.timeout.ms` (10 s here, 60 s by default), or at once
/// when the next instance with the same id starts.
pub fn eos_config(broker: &Broker, t: &Topics, transactional_id: &str) -> String {
    config(broker, t)
        .replace("\"statistics.interval.ms\" = 1000", "\"statistics.interval.ms\" = 1000\n\"transaction.timeout.ms\" = 10000")
        .replace(
            "sweep_interval = \"1h\"",
            &format!(
                "sweep_interval = \"1h\"\nprocessing_guarantee = \"exactly_once\"\ntransactional_id = \"{transactional_id}\""
            ),
        )
}

/// Input records committed by `t.group` over both inputs, asking again
/// while the broker answers with an error (never reading one as nothing
/// committed).
pub fn committed_now(broker: &Broker, t: &Topics, partitions: i32) -> i64 {
    super::committed_offsets(broker, &t.group, &[&t.clickstream, &t.purchases], partitions).values().sum()
}

/// Waits until `t.group` has committed at least `target` input records
/// over both inputs, and returns how many it has: the moment to land a
/// fault tied to progress rather than to a clock. Fails if `engage` exits
/// first, or after `limit`.
pub fn wait_progress(
    broker: &Broker,
    t: &Topics,
    partitions: i32,
    target: i64,
    engage: &mut Engage,
    limit: Duration,
) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let done = committed_now(broker, t, partitions);
        if done >= target {
            return done;
        }
        if let Some(status) = engage.child.try_wait().unwrap() {
            panic!("engage exited ({status}) with {done} of the {target} records wanted committed:\n{}", engage.log());
        }
        assert!(
            Instant::now() < deadline,
            "{target} records not committed within {limit:?} ({done}):\n{}",
            engage.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until all of `want` is committed by the one `engage` that was
/// running when the fault came: fails if it exits meanwhile (the claim is
/// that it rides the fault out, not that a restart recovers), or after
/// `limit`. Then stops it cleanly.
pub fn finish_without_restart(broker: &Broker, t: &Topics, want: (i64, i64), mut engage: Engage, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = engage.child.try_wait().unwrap() {
            panic!("engage exited ({status}) instead of riding the fault out:\n{}", engage.log());
        }
        let done = super::committed_offsets(broker, &t.group, &[&t.clickstream, &t.purchases], PARTITIONS);
        let sum = |topic: &str| done.iter().filter(|((name, _), _)| name == topic).map(|(_, o)| o).sum::<i64>();
        if (sum(&t.clickstream), sum(&t.purchases)) == want {
            break;
        }
        assert!(Instant::now() < deadline, "not everything committed within {limit:?}:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
}

pub fn wait_committed(broker: &Broker, t: &Topics, partitions: i32, want: (i64, i64)) -> bool {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if committed(broker, &t.group, &t.clickstream, partitions) == want.0
            && committed(broker, &t.group, &t.purchases, partitions) == want.1
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The latest changelog value per customer (bootstrap markers left out).
pub fn final_states(broker: &Broker, t: &Topics) -> BTreeMap<String, CustomerState> {
    final_states_of_at_least(broker, t, 1)
}

/// [`final_states`], reading at least `records` changelog records (a slow
/// broker may pause between partitions longer than the reader's idle limit).
pub fn final_states_of_at_least(broker: &Broker, t: &Topics, records: usize) -> BTreeMap<String, CustomerState> {
    let topic = format!("{}.engage-state", t.group);
    let mut out = BTreeMap::new();
    for r in read_topic(broker, &topic, records, Duration::from_secs(120)) {
        if r.key.as_deref() == Some(engage::codec::state::BOOTSTRAP_KEY) {
            continue;
        }
        let key = String::from_utf8(r.key.unwrap()).unwrap();
        let state = engage::proto::CustomerState::decode(&r.value[..]).unwrap();
        let (_, state) = engage::codec::state::state_from_proto(&state).unwrap();
        out.insert(key, state);
    }
    out
}

/// The two runs hold the same customers with the same facts: the same
/// records applied, each once; the same dimensions, days, times and spend.
pub fn assert_same_facts(reference: &BTreeMap<String, CustomerState>, other: &BTreeMap<String, CustomerState>) {
    assert!(!reference.is_empty(), "the reference run holds no customers: nothing to compare");
    assert_eq!(reference.len(), other.len(), "same customers");
    let differ: Vec<_> = reference
        .iter()
        .filter(|(id, a)| other.get(*id).map(|b| b.offsets) != Some(a.offsets))
        .map(|(id, a)| (id.clone(), a.offsets, other.get(id).map(|b| b.offsets)))
        .collect();
    if !differ.is_empty() {
        println!("{} customers differ in applied offsets; first: {:?}", differ.len(), &differ[..differ.len().min(10)]);
    }
    for (id, a) in reference {
        let b = other.get(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(a.offsets, b.offsets, "{id}: the same records applied, each once");
        for i in 0..5 {
            // Kept in f32: the two topics interleave differently in each
            // run, and each event rounds to about seven significant digits.
            let scale = a.raw[i].abs().max(b.raw[i].abs()).max(1.0);
            assert!((a.raw[i] - b.raw[i]).abs() <= 1e-5 * scale, "{id} dimension {i}: {} vs {}", a.raw[i], b.raw[i]);
        }
        assert_eq!((a.active_days, a.purchase_days()), (b.active_days, b.purchase_days()), "{id}");
        assert_eq!((a.first_seen, a.last_seen), (b.first_seen, b.last_seen), "{id}");
        assert!((a.spend_lifetime() - b.spend_lifetime()).abs() < 1e-6, "{id} spend");
    }
}

/// Every (customer, seq) read from the output topics (scores and alerts
/// share one counter per customer), in no particular order.
pub fn seqs_by_customer(broker: &Broker, t: &Topics) -> BTreeMap<String, Vec<u64>> {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for topic in [&t.scores, &t.alerts] {
        for r in read_topic(broker, topic, 0, Duration::from_secs(60)) {
            let v = r.json();
            seqs.entry(v["customer_id"].as_str().unwrap().to_string()).or_default().push(v["seq"].as_u64().unwrap());
        }
    }
    seqs
}

/// Per customer, the seqs on the output topics run from 1 to the final
/// state's seq with none missing (repeats are allowed: at-least-once), and
/// every customer in the final state published. Returns the repeats.
pub fn assert_no_seq_gaps(broker: &Broker, t: &Topics, states: &BTreeMap<String, CustomerState>) -> usize {
    assert_seqs_run_from_one(seqs_by_customer(broker, t), states)
}

/// Per customer, `seqs` (as read, in any order) run from 1 to the final
/// state's seq with none missing, and every customer in the final state
/// published. Returns the repeats.
pub fn assert_seqs_run_from_one(seqs: BTreeMap<String, Vec<u64>>, states: &BTreeMap<String, CustomerState>) -> usize {
    assert_eq!(seqs.len(), states.len(), "every customer published, and only they");
    let mut duplicates = 0;
    for (id, mut s) in seqs {
        s.sort();
        let before = s.len();
        s.dedup();
        duplicates += before - s.len();
        let last = u64::from(states.get(&id).unwrap_or_else(|| panic!("{id} published but has no state")).seq);
        assert_eq!(s, (1..=last).collect::<Vec<_>>(), "{id}: seqs published are not 1..={last}");
    }
    duplicates
}

/// Runs engage over `want` from scratch in `t`, uninterrupted; the reference
/// the fault runs are compared with.
pub async fn reference_run(broker: &Broker, base: &Topics, want: (i64, i64)) -> BTreeMap<String, CustomerState> {
    reference_run_over(broker, base, PARTITIONS, want).await
}

/// [`reference_run`] over inputs of `partitions` partitions.
pub async fn reference_run_over(
    broker: &Broker,
    base: &Topics,
    partitions: i32,
    want: (i64, i64),
) -> BTreeMap<String, CustomerState> {
    let dir = tempfile::tempdir().unwrap();
    let reference = run_topics(broker, base, "reference").await;
    let mut engage = Engage::start(dir.path(), &config(broker, &reference));
    assert!(wait_committed(broker, &reference, partitions, want), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0));
    final_states(broker, &reference)
}

/// What a fault scenario checked, printed for the record.
pub fn report(scenario: &str, want: (i64, i64), states: &BTreeMap<String, CustomerState>, broker: &Broker, t: &Topics) {
    let outputs: usize =
        [&t.scores, &t.alerts].iter().map(|topic| read_topic(broker, topic, 0, Duration::from_secs(30)).len()).sum();
    let dead = read_topic(broker, &t.dlq, 0, Duration::from_secs(30)).len();
    let duplicates = assert_no_seq_gaps(broker, t, states);
    println!(
        "{scenario}: {} events in; {} customers, all equal to the uninterrupted run; {dead} dead letters; \
         {outputs} outputs, {duplicates} duplicates, no seq gaps",
        want.0 + want.1,
        states.len()
    );
}

/// Waits until everything is committed, restarting engage whenever it exits
/// (which must be with an error: it never stops on its own), then stops it
/// cleanly. Returns how many restarts it took.
pub fn finish_restarting(
    broker: &Broker,
    t: &Topics,
    want: (i64, i64),
    dir: &std::path::Path,
    mut engage: Engage,
    limit: Duration,
) -> usize {
    let mut restarts = 0;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = engage.child.try_wait().unwrap() {
            assert!(!status.success(), "engage stopped with success mid-run:\n{}", engage.log());
            restarts += 1;
            engage = Engage::start(dir, &config(broker, t));
        }
        if committed(broker, &t.group, &t.clickstream, PARTITIONS) == want.0
            && committed(broker, &t.group, &t.purchases, PARTITIONS) == want.1
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", engage.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    restarts
}

pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(ok.success());
}

/// Per partition of `topic` (`PARTITIONS` of them): (last stable offset,
/// high watermark). The first trails the second while a transaction
/// holding records there is open.
pub fn stable_and_high(broker: &Broker, topic: &str) -> Vec<(i64, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let committed: BaseConsumer = broker.client_config().set("isolation.level", "read_committed").create().unwrap();
    let uncommitted: BaseConsumer = broker.client_config().set("isolation.level", "read_uncommitted").create().unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let t = Duration::from_secs(5);
            (committed.fetch_watermarks(topic, p, t).unwrap().1, uncommitted.fetch_watermarks(topic, p, t).unwrap().1)
        })
        .collect()
}
