//! `run.processing_guarantee = "exactly_once"` on Apache Kafka: outputs,
//! changelog records and input offsets committed as one transaction per
//! flush. A `read_committed` consumer of the outputs sees every
//! (customer, seq) exactly once, through `kill -9`s and through a second
//! instance that fences the first.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::runs::*;
use common::{Broker, Engage, Topics, committed, read_topic, unique};
use engage::engine::state::CustomerState;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// `t`'s config in `exactly_once` mode under `transactional_id`. A
/// transaction left open by a killed instance is aborted by the broker
/// after `transaction.timeout.ms` (10 s here, 60 s by default), or at once
/// when the next instance with the same id starts.
fn eos_config(broker: &Broker, t: &Topics, transactional_id: &str) -> String {
    config(broker, t)
        .replace("\"statistics.interval.ms\" = 1000", "\"statistics.interval.ms\" = 1000\n\"transaction.timeout.ms\" = 10000")
        .replace(
        "sweep_interval = \"1h\"",
        &format!(
            "sweep_interval = \"1h\"\nprocessing_guarantee = \"exactly_once\"\ntransactional_id = \"{transactional_id}\""
        ),
    )
}

/// Per customer, the seqs a `read_committed` consumer sees are exactly
/// 1..=the final state's seq: none missing, none twice.
fn assert_each_seq_exactly_once(broker: &Broker, t: &Topics, states: &BTreeMap<String, CustomerState>) {
    assert_eq!(assert_no_seq_gaps(broker, t, states), 0, "outputs seen twice by a read_committed consumer");
}

/// The outputs were written in transactions: a topic written
/// transactionally holds a commit marker after each transaction, so its
/// offsets run past the records a consumer reads. A silent fall-back to
/// plain writes would leave none.
fn assert_written_in_transactions(broker: &Broker, topic: &str, records_read: usize) {
    let c: BaseConsumer = broker.client_config().create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let end: i64 = md.topics()[0]
        .partitions()
        .iter()
        .map(|p| c.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).unwrap().1)
        .sum();
    assert!(
        end > records_read as i64,
        "{topic}: {records_read} records over {end} offsets: no transaction markers, so not transactional"
    );
}

/// After a crash, the committed input offsets are the last committed
/// transaction's: for every input partition, the committed changelog's
/// states have applied exactly the records before the committed offset
/// (every synthetic record is a valid event, so the newest applied record
/// is the one just before it), never one after.
fn assert_offsets_match_committed_state(broker: &Broker, t: &Topics) -> i64 {
    let changelog = format!("{}.engage-state", t.group);
    let mut latest: BTreeMap<String, (i32, [i64; 2])> = BTreeMap::new();
    for r in read_topic(broker, &changelog, 0, Duration::from_secs(60)) {
        let state = engage::proto::CustomerState::decode(&r.value[..]).unwrap();
        let (_, state) = engage::codec::state::state_from_proto(&state).unwrap();
        latest.insert(String::from_utf8(r.key.unwrap()).unwrap(), (r.partition, state.offsets));
    }
    // While a killed instance's transaction is open its offsets are
    // unstable: this asks again until the transaction is aborted.
    let committed = common::committed_offsets(broker, &t.group, &[&t.clickstream, &t.purchases], PARTITIONS);
    let mut total = 0;
    for p in 0..PARTITIONS {
        for (i, topic) in [&t.clickstream, &t.purchases].into_iter().enumerate() {
            let next = committed[&(topic.to_string(), p)];
            let applied = latest.values().filter(|(q, _)| *q == p).map(|(_, o)| o[i]).max().unwrap_or(-1);
            assert_eq!(applied, next - 1, "{topic}[{p}]: state applied up to {applied}, offset committed at {next}");
            total += next.max(0);
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_through_five_kill_nines_publishes_every_output_once() {
    let broker = Broker::start();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 80_000, 1_500);
    let expected = reference_run(&broker, &base, want).await;

    let eos = run_topics(&broker, &base, "eos").await;
    let text = eos_config(&broker, &eos, &unique("eos-kill"));
    // The instances to be killed are throttled: unthrottled, one 200 ms
    // transaction can commit a tenth of this input, and a kill aimed at a
    // share of it can land after the end.
    let killed = throttled(&text, 100, 1_000);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = engage::cmd::loadgen::synth::SplitMix64::new(11);
    let mut landed = Vec::new();
    for i in 0..5 {
        let mut engage = Engage::start(dir.path(), &killed);
        // Killed once the i-th eighth of the input is committed (plus a
        // random moment): the kills spread over the run however fast
        // engage gets, and always before its end.
        // (At least one record more than at the previous kill: each
        // instance joins and commits something before it is killed.)
        let target = ((want.0 + want.1) * (i + 1) / 8).max(landed.last().map_or(1, |l| l + 1));
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed(&broker, &eos.group, &eos.clickstream, PARTITIONS)
            + committed(&broker, &eos.group, &eos.purchases, PARTITIONS)
            < target
        {
            assert!(Instant::now() < deadline, "run {i}: {target} records never committed:\n{}", engage.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 200));
        engage.kill9();
        let done = assert_offsets_match_committed_state(&broker, &eos);
        assert!(done < want.0 + want.1, "kill {i} landed after everything was committed: the test proves nothing");
        landed.push(done);
    }
    let mut engage = Engage::start(dir.path(), &text);
    assert!(wait_committed(&broker, &eos, PARTITIONS, want), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());

    let states = final_states(&broker, &eos);
    assert_same_facts(&expected, &states);
    assert_each_seq_exactly_once(&broker, &eos, &states);
    let scores = read_topic(&broker, &eos.scores, 1, Duration::from_secs(30)).len();
    assert_written_in_transactions(&broker, &eos.scores, scores);
    println!(
        "exactly_once: killed at {landed:?} of {} records committed; {} customers equal to the at-least-once \
         reference; {scores} score changes, each (customer, seq) once",
        want.0 + want.1,
        states.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let broker = Broker::start();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 30_000, 1_500);
    let total = want.0 + want.1;
    let expected = reference_run(&broker, &base, want).await;
    let eos = run_topics(&broker, &base, "fence").await;
    let text = eos_config(&broker, &eos, &unique("eos-fence"));
    let dir = tempfile::tempdir().unwrap();

    // The first instance, throttled, has committed transactions (a quarter
    // of the input) and has work left when the second starts.
    let mut first = Engage::start(dir.path(), &throttled(&text, 100, 500));
    let before = wait_progress(&broker, &eos, PARTITIONS, total / 4, &mut first, Duration::from_secs(120));
    let mut second = Engage::start(dir.path(), &text);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the first instance was not fenced:\n{}", first.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a fenced instance must exit non-zero:\n{}", first.log());
    assert!(first.log().to_lowercase().contains("fenced"), "the exit names the fencing:\n{}", first.log());
    let fenced_at = committed_now(&broker, &eos, PARTITIONS);
    assert!(fenced_at < total, "the first instance committed all {total} records before it was fenced");

    assert!(wait_committed(&broker, &eos, PARTITIONS, want), "{}", second.log());
    assert_eq!(second.terminate(Duration::from_secs(30)).0, Some(0), "{}", second.log());
    // What the fenced instance committed before the fence, and what the
    // second did after it, add up to one uninterrupted run: nothing applied
    // twice or lost at the hand-over.
    let states = final_states(&broker, &eos);
    assert_same_facts(&expected, &states);
    assert_each_seq_exactly_once(&broker, &eos, &states);
    println!(
        "fencing: the second instance started at {before} of {total} records committed; the first exited with \
         {status} at {fenced_at}; {} customers equal to the at-least-once reference, each (customer, seq) once",
        states.len()
    );
}

/// How many records of `topic` a reader at `isolation` sees.
fn records_seen(broker: &Broker, topic: &str, isolation: &str) -> usize {
    let reader: BaseConsumer = broker
        .client_config()
        .set("isolation.level", isolation)
        .set("group.id", unique("count"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let (mut seen, mut ends) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends < PARTITIONS && Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => ends += 1,
            _ => {}
        }
    }
    assert_eq!(ends, PARTITIONS, "{topic}: not read to its end within 60 s");
    seen
}

/// A clean exit (SIGTERM) under exactly_once, with input still arriving
/// and sweeps publishing every second, leaves every output visible to
/// `read_committed` readers at once: within 1 s of the exit each output
/// and changelog partition's last stable offset is its high watermark (no
/// transaction left open), a `read_committed` reader sees as many records
/// as a `read_uncommitted` one (none aborted), and each customer's seqs run
/// once from 1 to its final state's. Three stops, each restarting from the
/// last.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_exit_under_exactly_once_leaves_every_output_visible_at_once() {
    let broker = Broker::start();
    let t = Topics::create(&broker, PARTITIONS).await;
    feed_events(&broker, &t, 6_000, 600);
    let text = eos_config(&broker, &t, &unique("eos-exit"))
        .replace("sweep_interval = \"1h\"", "sweep_interval = \"1s\"\nidle_grace = \"1s\"");
    let changelog = format!("{}.engage-state", t.group);
    let outputs = [&t.scores, &t.alerts, &t.dlq, &changelog];
    let dir = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Live input all along: each stop lands with work in flight.
        scope.spawn(|| {
            let mut seed = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = engage::clock::wall_clock_ms();
                let batch = engage::cmd::loadgen::synth::records(seed, 200, 600, now, 1, engage::vocab::Format::Json);
                common::feed(&broker, &t, &batch);
                seed += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for round in 0..3 {
            let mut engage = Engage::start(dir.path(), &text);
            assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
            std::thread::sleep(Duration::from_millis(2_500 + 400 * round));
            let before: Vec<i64> =
                outputs.iter().map(|o| stable_and_high(&broker, o).iter().map(|s| s.1).sum()).collect();
            let (code, _) = engage.terminate(Duration::from_secs(30));
            let exited = Instant::now();
            assert_eq!(code, Some(0), "round {round}:\n{}", engage.log());
            // Within 1 s of the exit, no output partition's end is held back.
            let open = loop {
                let open: Vec<(&str, i32, (i64, i64))> = outputs
                    .iter()
                    .flat_map(|o| (0..).zip(stable_and_high(&broker, o)).map(move |(p, at)| (o.as_str(), p, at)))
                    .filter(|(_, _, (stable, high))| stable < high)
                    .collect();
                if open.is_empty() || exited.elapsed() > Duration::from_secs(1) {
                    break open;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(
                open.is_empty(),
                "round {round}: 1 s after a clean exit read_committed readers are still held back \
                 (topic, partition, (last stable offset, high watermark)): {open:?}\n{}",
                engage.log()
            );
            let visible = exited.elapsed();
            // The final flush wrote something: the check is not empty.
            let after: Vec<i64> =
                outputs.iter().map(|o| stable_and_high(&broker, o).iter().map(|s| s.1).sum()).collect();
            assert!(
                after.iter().sum::<i64>() > before.iter().sum::<i64>(),
                "round {round}: nothing written at the stop"
            );
            println!(
                "round {round}: outputs {before:?} -> {after:?} at the stop; all visible {visible:.1?} after the exit"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    for topic in [&t.scores, &t.alerts] {
        let (committed, all) =
            (records_seen(&broker, topic, "read_committed"), records_seen(&broker, topic, "read_uncommitted"));
        assert_eq!(committed, all, "{topic}: records of aborted transactions at clean exits");
    }
    let states = final_states(&broker, &t);
    assert_each_seq_exactly_once(&broker, &t, &states);
}
