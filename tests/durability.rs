//! Durable state and faults against a real broker, each compared with an
//! uninterrupted run over the same input: kill -9 at moments spread over
//! the run; an instance killed during scale-out; the broker stalled
//! (SIGSTOP) longer than the clients' session timeout; the broker killed
//! and restarted; outputs acknowledged slowly enough that input must pause.
//! Every fault is tied to observed progress (a share of the input
//! committed, or the killed instance's own commits) and checked to land
//! while work remains, never to a sleep. Each reports what it checked.
//! About a minute each.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::runs::*;
use common::{Broker, Engage, Topics, read_topic, records_read};
use rdkafka::consumer::{BaseConsumer, Consumer};

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_at_random_moments_loses_and_double_counts_nothing() {
    let broker = Broker::start();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 200_000, 3_000);
    let dir = tempfile::tempdir().unwrap();

    // Reference: one uninterrupted run.
    let reference = run_topics(&broker, &base, "reference").await;
    let mut engage = Engage::start(dir.path(), &config(&broker, &reference));
    assert!(wait_committed(&broker, &reference, PARTITIONS, want), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0));

    // Crash run: kill -9 five times, each once the i-th eighth of the input
    // is committed, and at least one record more than at the previous kill
    // (so each instance joined and made progress), plus a random moment:
    // the kills spread over the run however fast engage gets, and always
    // before its end. Offsets committed every 100 ms rather than every
    // second: at a second, one commit can cover a quarter of this input,
    // and a kill tied to a share of it lands after the end.
    let crash = run_topics(&broker, &base, "crash").await;
    let text = config(&broker, &crash).replace(
        "\"statistics.interval.ms\" = 1000",
        "\"statistics.interval.ms\" = 1000\n\"auto.commit.interval.ms\" = 100",
    );
    let total = want.0 + want.1;
    let mut rng = engage::cmd::loadgen::synth::SplitMix64::new(7);
    let mut landed: Vec<i64> = Vec::new();
    for i in 0..5 {
        let mut engage = Engage::start(dir.path(), &text);
        let target = (total * (i + 1) / 8).max(landed.last().map_or(1, |l| l + 1));
        wait_progress(&broker, &crash, PARTITIONS, target, &mut engage, Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 200));
        engage.kill9();
        let done = committed_now(&broker, &crash, PARTITIONS);
        assert!(done < total, "kill {i} landed after everything was committed: the test proves nothing");
        landed.push(done);
        if std::env::var("DEBUG_DURABILITY").is_ok() {
            let c: rdkafka::consumer::BaseConsumer =
                broker.client_config().set("group.id", crash.group.as_str()).create().unwrap();
            use rdkafka::consumer::Consumer;
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition(&crash.clickstream, p);
                tpl.add_partition(&crash.purchases, p);
            }
            let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
            let offs: Vec<String> = got
                .elements()
                .iter()
                .map(|el| {
                    format!(
                        "{}{}={:?}",
                        if el.topic().ends_with("clickstream") { "c" } else { "p" },
                        el.partition(),
                        el.offset().to_raw().unwrap_or(-9)
                    )
                })
                .collect();
            let cl = read_topic(&broker, &format!("{}.engage-state", crash.group), 0, Duration::from_secs(30));
            let mut per = [0usize; 4];
            for r in &cl {
                per[r.partition as usize] += 1;
            }
            println!("run {i}: changelog {per:?} committed {}", offs.join(" "));
            for l in engage.log().lines().filter(|l| {
                l.contains("WARN") || l.contains("ERROR") || l.contains("revoked") || l.contains("assigned")
            }) {
                println!("   {}", &l[l.len().saturating_sub(160)..]);
            }
        }
    }
    let mut engage = Engage::start(dir.path(), &text);
    assert!(wait_committed(&broker, &crash, PARTITIONS, want), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0));

    if std::env::var("DEBUG_DURABILITY").is_ok() {
        for l in engage
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("revoked") || l.contains("restored"))
        {
            println!("final: {l}");
        }
    }
    let expected = final_states(&broker, &reference);
    assert!(expected.len() > 2_000, "{} customers", expected.len());
    let states = final_states(&broker, &crash);
    assert_same_facts(&expected, &states);
    let duplicates = assert_no_seq_gaps(&broker, &crash, &states);
    println!(
        "crash run: killed at {landed:?} of {total} records committed; {} customers equal to the reference; \
         {duplicates} duplicate outputs (allowed)",
        expected.len()
    );
}

/// The partitions `log`'s instance holds now: restored since its last
/// revoke (the harness's groups rebalance eagerly, revoking everything),
/// once the assignment that followed is complete; `None` while it is not.
fn owned_now(log: &str) -> Option<BTreeSet<i32>> {
    let log = common::strip_ansi(log);
    let since = log.rfind("rebalance kind=\"revoke\"").unwrap_or(0);
    let current = &log[since..];
    current.contains("rebalance kind=\"assign\"").then(|| {
        current
            .lines()
            .filter(|l| l.contains("partition assigned: state restored"))
            .filter_map(|l| l.split(" partition=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect()
    })
}

/// Records committed and on the broker (high watermark) of partitions
/// `owned` of both inputs.
fn progress_of(broker: &Broker, t: &Topics, partitions: i32, owned: &BTreeSet<i32>) -> (i64, i64) {
    let committed: BTreeMap<(String, i32), i64> =
        common::committed_offsets(broker, &t.group, &[&t.clickstream, &t.purchases], partitions);
    let c: BaseConsumer = broker.client_config().create().unwrap();
    let (mut done, mut end) = (0, 0);
    for topic in [&t.clickstream, &t.purchases] {
        for &p in owned {
            done += committed[&(topic.to_string(), p)];
            end += c.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap().1;
        }
    }
    (done, end)
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_three_instances_one_killed_still_matches_a_single_run() {
    let broker = Broker::start();
    let base = Topics::create(&broker, 6).await;
    let want = feed_events(&broker, &base, 120_000, 3_000);
    let dir = tempfile::tempdir().unwrap();
    let reference = run_topics(&broker, &base, "single").await;
    let mut single = Engage::start(dir.path(), &config(&broker, &reference));
    assert!(wait_committed(&broker, &reference, 6, want), "{}", single.log());
    assert_eq!(single.terminate(Duration::from_secs(30)).0, Some(0));

    // C starts first, throttled: it holds every partition until A and B
    // join, then its share, and works through that slowly enough to be
    // killed half-way. It is killed once it has committed work on the
    // partitions it kept, and those must still hold work then: A and B
    // take them over, with what C left uncommitted.
    let group = run_topics(&broker, &base, "group").await;
    let text = config(&broker, &group);
    let mut c = Engage::start(dir.path(), &throttled(&text, 100, 500));
    assert!(c.wait_for_log("state restored", Duration::from_secs(60)), "{}", c.log());
    let mut a = Engage::start(dir.path(), &text);
    let b = Engage::start(dir.path(), &text);
    let deadline = Instant::now() + Duration::from_secs(90);
    for (name, e) in [("A", &a), ("B", &b)] {
        assert!(e.wait_for_log("partition assigned: state restored", Duration::from_secs(90)), "{name}: {}", e.log());
    }
    let owned = loop {
        if let Some(owned) = owned_now(&c.log()).filter(|o| !o.is_empty()) {
            break owned;
        }
        assert!(Instant::now() < deadline, "C kept no partition once A and B joined:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (at_join, _) = progress_of(&broker, &group, 6, &owned);
    loop {
        let (done, _) = progress_of(&broker, &group, 6, &owned);
        if done > at_join && owned_now(&c.log()).as_ref() == Some(&owned) {
            break;
        }
        assert!(c.child.try_wait().unwrap().is_none(), "C exited:\n{}", c.log());
        assert!(Instant::now() < deadline, "C committed nothing on partitions {owned:?}:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill9();
    let (left_at, end) = progress_of(&broker, &group, 6, &owned);
    assert!(left_at < end, "C's partitions {owned:?} were done ({left_at} of {end}) when it was killed");
    assert!(wait_committed(&broker, &group, 6, want), "{}\n{}", a.log(), b.log());
    assert_eq!(a.terminate(Duration::from_secs(30)).0, Some(0));
    drop(b);
    let states = final_states(&broker, &group);
    assert_same_facts(&final_states(&broker, &reference), &states);
    let duplicates = assert_no_seq_gaps(&broker, &group, &states);
    println!(
        "scale-out: C killed holding partitions {owned:?} with {left_at} of their {end} records committed; \
         {} customers equal to a single run; {duplicates} duplicate outputs (allowed)",
        states.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_stalled_past_the_session_timeout_loses_nothing() {
    let broker = Broker::private();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 60_000, 2_000);
    let expected = reference_run(&broker, &base, want).await;

    let stall = run_topics(&broker, &base, "stall").await;
    let dir = tempfile::tempdir().unwrap();
    // Throttled, and stalled once a quarter of the input is committed and
    // while engage has read less than all of it.
    let total = want.0 + want.1;
    let mut engage = Engage::start(dir.path(), &throttled(&config(&broker, &stall), 100, 500));
    let addr = engage.http_addr();
    let done = wait_progress(&broker, &stall, PARTITIONS, total / 4, &mut engage, Duration::from_secs(120));
    let read = records_read(&addr) as i64;
    assert!(read < total, "engage had read all {total} records before the stall: the test proves nothing");
    // Longer than session.timeout.ms (6 s): the group expires engage's
    // membership when the broker resumes.
    let pid = broker.pid().expect("a broker this test started");
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_secs(12));
    signal(pid, "CONT");
    // engage rides it out (or, where librdkafka gives up, exits non-zero
    // and a restart recovers): either way the run completes.
    let restarts = finish_restarting(&broker, &stall, want, dir.path(), engage, Duration::from_secs(180));
    let states = final_states(&broker, &stall);
    assert_same_facts(&expected, &states);
    report(
        &format!("broker stalled 12 s at {done} committed, {read} read ({restarts} restarts needed)"),
        want,
        &states,
        &broker,
        &stall,
    );
}

/// The broker unreachable for longer than `message.timeout.ms` (5 s here)
/// while work is in flight: outputs cannot be delivered, so engage exits
/// non-zero naming the failed delivery, without committing past it, and a
/// restart after the broker is back ends with the facts of an
/// uninterrupted run and no `seq` gap.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_unreachable_past_the_message_timeout_stops_engage_and_a_restart_loses_nothing() {
    let broker = Broker::private();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 12_000, 600);
    let expected = reference_run(&broker, &base, want).await;

    let gone = run_topics(&broker, &base, "gone").await;
    let dir = tempfile::tempdir().unwrap();
    let total = want.0 + want.1;
    let text = throttled(&config(&broker, &gone), 100, 500).replace(
        "\"statistics.interval.ms\" = 1000",
        "\"statistics.interval.ms\" = 1000\n\"message.timeout.ms\" = 5000",
    );
    let mut engage = Engage::start(dir.path(), &text);
    let addr = engage.http_addr();
    let done = wait_progress(&broker, &gone, PARTITIONS, total / 4, &mut engage, Duration::from_secs(120));
    let read = records_read(&addr) as i64;
    assert!(read < total, "engage had read all {total} records before the broker went: the test proves nothing");
    // The broker goes while outputs are in flight (lingering), so their
    // delivery must fail: frozen, and thawed and frozen again a moment
    // later unless outputs still await acknowledgement 300 ms after (the
    // gauge is published every 100 ms; a frozen broker acknowledges none).
    let in_flight = || -> f64 {
        let metrics = common::http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default();
        let line = metrics.lines().find(|l| l.starts_with("engage_producer_in_flight "));
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    let pid = broker.pid().expect("a broker this test started");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never froze the broker with outputs in flight:\n{}", engage.log());
        signal(pid, "STOP");
        std::thread::sleep(Duration::from_millis(300));
        if in_flight() >= 1.0 {
            break;
        }
        signal(pid, "CONT");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = Instant::now();
    // Outputs time out within 5 s; engage stops while the broker is away.
    let status = engage.wait_exit(Duration::from_secs(60));
    let exited = stopped.elapsed();
    signal(pid, "CONT");
    let log = engage.log();
    assert!(!status.success(), "engage exited {status} with its outputs undelivered:\n{log}");
    assert!(log.contains("output delivery failed"), "the exit does not name the failed delivery:\n{log}");
    drop(engage);

    // Restarted as a supervisor would, again if it exits while the broker
    // is still recovering from the freeze.
    let engage = Engage::start(dir.path(), &config(&broker, &gone));
    let restarts = 1 + finish_restarting(&broker, &gone, want, dir.path(), engage, Duration::from_secs(300));
    let states = final_states(&broker, &gone);
    assert_same_facts(&expected, &states);
    report(
        &format!(
            "broker unreachable at {done} committed, {read} read; engage exited {exited:.1?} later ({status}); \
             {restarts} restarts to finish"
        ),
        want,
        &states,
        &broker,
        &gone,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_outputs_pause_input_bound_memory_and_lose_nothing() {
    let broker = Broker::start();
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 8_000, 500);
    let expected = reference_run(&broker, &base, want).await;

    // Every output waits 100 ms before it is sent, and at most 100 may be
    // unacknowledged: outputs back up far faster than they drain.
    let slow = run_topics(&broker, &base, "slow").await;
    let max_in_flight = 100;
    let text = throttled(&config(&broker, &slow), 100, max_in_flight);
    let dir = tempfile::tempdir().unwrap();
    let mut engage = Engage::start(dir.path(), &text);
    let addr = engage.http_addr();
    // A metric that is missing (a failed scrape) fails the test rather than
    // reading as 0.
    let value = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    let (mut peak_in_flight, mut peak_rss, mut scrapes) = (0.0f64, 0.0f64, 0);
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while committed_now(&broker, &slow, PARTITIONS) != want.0 + want.1 {
        assert!(Instant::now() < deadline, "{}", engage.log());
        if let Some((200, m)) = common::http_get(&addr, "/metrics")
            && m.contains("engage_producer_in_flight ")
        {
            peak_in_flight = peak_in_flight.max(value(&m, "engage_producer_in_flight "));
            peak_rss = peak_rss.max(value(&m, "engage_process_resident_memory_bytes "));
            scrapes += 1;
            last = m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scrapes >= 5, "only {scrapes} metrics scrapes succeeded");
    if let Some((200, m)) = common::http_get(&addr, "/metrics") {
        last = m;
    }
    let log = engage.log();
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{log}");
    let paused = value(&last, "engage_backpressure_total{state=\"paused\"}");
    let resumed = value(&last, "engage_backpressure_total{state=\"resumed\"}");
    assert!(paused >= 1.0 && resumed >= 1.0, "input paused ({paused}) and resumed ({resumed})");
    assert!(peak_in_flight > 0.0, "outputs were in flight");
    // In flight: outputs up to the bound, plus those of the record that
    // crossed it, plus the changelog flush waiting behind them (at most one
    // record per customer).
    let bound = max_in_flight as f64 + 8.0 + expected.len() as f64;
    assert!(peak_in_flight <= bound, "in flight peaked at {peak_in_flight}, bound {bound}");
    assert!(peak_rss < 256.0 * 1024.0 * 1024.0, "RSS peaked at {peak_rss}");
    let states = final_states(&broker, &slow);
    assert_same_facts(&expected, &states);
    report(
        &format!(
            "slow outputs (in flight peaked at {peak_in_flight} of {max_in_flight}, RSS {:.0} MiB)",
            peak_rss / 1048576.0
        ),
        want,
        &states,
        &broker,
        &slow,
    );
}

/// The broker killed (-9) mid-run and restarted on its data after 5 s:
/// the same engage reconnects and finishes, without exiting, with nothing
/// lost or double-counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_run_loses_nothing() {
    let mut broker = Broker::private();
    let base = Topics::create(&broker, PARTITIONS).await;
    let n: usize = std::env::var("FAULT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let want = feed_events(&broker, &base, n, 2_000);
    let expected = reference_run(&broker, &base, want).await;

    // Throttled, and the broker killed once a quarter of the input is
    // committed and while engage has read less than all of it.
    let run = run_topics(&broker, &base, "restart").await;
    let dir = tempfile::tempdir().unwrap();
    let total = want.0 + want.1;
    let mut engage = Engage::start(dir.path(), &throttled(&config(&broker, &run), 100, 100));
    let addr = engage.http_addr();
    let done = wait_progress(&broker, &run, PARTITIONS, total / 4, &mut engage, Duration::from_secs(120));
    let read = records_read(&addr) as i64;
    assert!(read < total, "engage had read all {total} records before the broker went: the test proves nothing");
    broker.restart(Duration::from_secs(5));
    finish_without_restart(&broker, &run, want, engage, Duration::from_secs(600));
    let states = final_states_of_at_least(&broker, &run, expected.len());
    assert_same_facts(&expected, &states);
    report(
        &format!("broker killed at {done} committed, {read} read, and restarted after 5 s; engage rode it out"),
        want,
        &states,
        &broker,
        &run,
    );
}
