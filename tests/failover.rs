//! Faults of the cluster around a running engage, each compared with an
//! uninterrupted run over the same input: brokers of a three-node cluster
//! killed (-9) under the partitions it reads and writes, then a rolling
//! restart of every node; the transaction coordinator killed under
//! `exactly_once`; an input partition left without a leader (the other
//! input waits at most `run.alignment_wait`, and holds at most 10 000
//! records); and the group scaled from one instance to three and back to
//! one mid-stream, with no partition ever owned by two instances at once.
//! None publishes any output twice. Each reports what it checked.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::runs::*;
use common::{Broker, Engage, Topics};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Held by each test that starts a three-node cluster, so that only one
/// runs at a time: two at once (six brokers beside engage on two cores)
/// slowed failovers past the tests' bounds.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Prints what the test is doing, with the seconds since `started`.
fn step(started: Instant, what: &str) {
    println!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// Waits until every partition of every topic has a leader and all its
/// replicas in sync, so the next node stopped never takes the last in-sync
/// replica of anything. Returns how long it took.
fn wait_in_sync(broker: &Broker, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        let c: BaseConsumer = broker.client_config().create().unwrap();
        match c.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(md) => {
                let lagging: Vec<String> = md
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(move |p| (t.name(), p)))
                    .filter(|(_, p)| p.leader() < 0 || p.isr().len() < p.replicas().len())
                    .map(|(t, p)| format!("{t}[{}] leader {} isr {:?}", p.id(), p.leader(), p.isr()))
                    .collect();
                if lagging.is_empty() && !md.topics().is_empty() {
                    return start.elapsed();
                }
                last = lagging.join(", ");
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("partitions not back in sync after {timeout:?}: {last}\n{}", broker.logs());
}

/// Stops node `id` with SIGTERM (a controlled shutdown: its leaderships
/// move first) and waits for the JVM to exit; SIGKILL after 60 s. Returns
/// whether it stopped gracefully.
fn stop_node_gracefully(broker: &mut Broker, id: u32) -> bool {
    let pid = broker.node_pid(id).expect("node running");
    signal(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let exited = loop {
        // Exited once it is a zombie (the harness has not reaped it yet).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z") | Some("X")) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Reaps the exited JVM (or kills the one that would not stop).
    broker.kill_node(id);
    exited
}

/// Why `wait_committed` gave up: how far the group got, engage's warnings,
/// its rebalances and backpressure switches, and its last progress line.
fn stalled(broker: &Broker, t: &Topics, partitions: i32, total: i64, engage: &Engage) -> String {
    let log = engage.log();
    let lines: Vec<String> = log.lines().map(strip_ansi).collect();
    let events: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains(" progress ") && !l.contains("Connect to") && !l.contains("CONFWARN"))
        .collect();
    let events: Vec<&str> = events[events.len().saturating_sub(80)..].iter().map(|l| l.as_str()).collect();
    let last_progress = lines.iter().rev().find(|l| l.contains(" progress ")).cloned().unwrap_or_default();
    let warned: Vec<String> = warnings(&log).into_iter().map(|(w, n)| format!("{n} x {w}")).collect();
    format!(
        "only {} of {total} records committed after 180 s; engage {}.\n\
         warnings:\n{}\nlast events:\n{}\n{last_progress}",
        committed_now(broker, t, partitions),
        if log.contains("\"revoke\"") { "went through a rebalance" } else { "never rebalanced" },
        warned.join("\n"),
        events.join("\n")
    )
}

/// Replica count of each partition of `topic`.
fn replication_of(broker: &Broker, topic: &str) -> Vec<usize> {
    let c: BaseConsumer = broker.client_config().create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    md.topics()[0].partitions().iter().map(|p| p.replicas().len()).collect()
}

/// The WARN and ERROR lines of an engage log, ANSI codes and timestamps
/// removed, with how often each came; but not librdkafka's CONFWARNs (the
/// harness's `[kafka]` section names consumer properties, which every
/// client is given).
fn warnings(log: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines().map(strip_ansi) {
        if (line.contains(" WARN ") || line.contains(" ERROR ")) && !line.contains("CONFWARN") {
            let text = line.split_once(' ').map_or(line.as_str(), |(_, rest)| rest.trim()).to_string();
            *out.entry(text).or_insert(0) += 1;
        }
    }
    out
}

/// Prints the warnings of an engage log: each kind once with its count,
/// those about a broker connection (expected while a node is down) only as
/// a count. Returns how many there were.
fn print_warnings(name: &str, log: &str) -> usize {
    let who = if name.is_empty() { "engage".to_string() } else { format!("engage {name}") };
    let (mut all, mut connection) = (0, 0);
    for (w, n) in warnings(log) {
        all += n;
        if w.contains("Connect to") || w.contains("BrokerTransportFailure") {
            connection += n;
        } else {
            println!("  {who}: {n} x {}", w.chars().take(220).collect::<String>());
        }
    }
    if connection > 0 {
        println!("  {who}: {connection} x a broker connection refused or lost");
    }
    all
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The brokers of a three-node cluster fail under a running engage: the
/// leader of an input partition is killed (-9) and restarted, then the
/// leader of an output partition, then every node is restarted in turn.
/// engage rides through all of it without exiting, and its final states
/// equal an uninterrupted run's.
#[tokio::test(flavor = "multi_thread")]
async fn broker_failover_and_a_rolling_restart_lose_nothing() {
    let _cluster = ONE_CLUSTER.lock().await;
    let started = Instant::now();
    let mut broker = Broker::cluster(3);
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 60_000, 2_000);
    let total = want.0 + want.1;
    let expected = reference_run(&broker, &base, want).await;
    let reference_done = started.elapsed();
    step(started, "reference run done");

    let run = run_topics(&broker, &base, "failover").await;
    let changelog = format!("{}.engage-state", run.group);
    let dir = tempfile::tempdir().unwrap();
    // Throttled so the five faults (half a minute or so) land while input
    // remains. The group's timeouts stay the harness's (6 s session, 7 s
    // poll interval): when the group coordinator is killed or stopped,
    // librdkafka sometimes finds the next one only after the session has
    // timed out, and engage must then go through a rebalance as well.
    let text = throttled(&config(&broker, &run), 100, 500);
    let mut engage = Engage::start(dir.path(), &text);
    assert!(engage.wait_for_log("\"assign\"", Duration::from_secs(90)), "{}", engage.log());
    // engage created the changelog with the broker's default replication
    // (topics.replication_factor = -1): 3 here, so it survives a node.
    let rf = replication_of(&broker, &changelog);
    assert!(rf.len() == PARTITIONS as usize && rf.iter().all(|&r| r == 3), "{changelog} replicas {rf:?}");
    // Work under way: something committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_now(&broker, &run, PARTITIONS) == 0 {
        assert!(Instant::now() < deadline, "no progress:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut faults: Vec<String> = Vec::new();
    let fault = |broker: &Broker, what: String| {
        let done = committed_now(broker, &run, PARTITIONS);
        assert!(done < total, "{what} landed after all {total} records were committed: the test proves nothing");
        let what = format!("{what} at {done}/{total}");
        step(started, &what);
        what
    };

    // 1. The leader of input partition 0, killed for 3 s.
    let first = broker.leader_of(&base.clickstream, 0).expect("a leader of the clickstream's partition 0");
    faults.push(fault(&broker, format!("kill -9 node {first} (leads {}[0])", base.clickstream)));
    broker.kill_node(first);
    std::thread::sleep(Duration::from_secs(3));
    broker.start_node(first);
    wait_in_sync(&broker, Duration::from_secs(120));

    // 2. The leader of an output partition: the scores topic's partition 0,
    //    or another output or changelog partition led by a different node.
    let mut leaders = Vec::new();
    for p in 0..PARTITIONS {
        for topic in [&run.scores, &run.alerts, &changelog] {
            if let Some(l) = broker.leader_of(topic, p) {
                leaders.push((topic.clone(), p, l));
            }
        }
    }
    leaders.sort_by_key(|(t, p, _)| (*p != 0 || *t != run.scores, *p));
    let (topic, p, second) = leaders
        .iter()
        .find(|(_, _, l)| *l != first)
        .or(leaders.first())
        .cloned()
        .expect("output partitions have leaders");
    faults.push(fault(&broker, format!("kill -9 node {second} (leads {topic}[{p}])")));
    broker.kill_node(second);
    std::thread::sleep(Duration::from_secs(3));
    broker.start_node(second);
    wait_in_sync(&broker, Duration::from_secs(120));

    // 3. A rolling restart: each node stopped gracefully and started again,
    //    the next only once every partition is back in sync.
    for id in 1..=3 {
        let what = fault(&broker, format!("restart node {id}"));
        let graceful = stop_node_gracefully(&mut broker, id);
        broker.start_node(id);
        let sync = wait_in_sync(&broker, Duration::from_secs(120));
        let how = if graceful { "SIGTERM" } else { "SIGTERM ignored, SIGKILL" };
        faults.push(format!("{what} ({how}; in sync {:.1} s after start)", sync.as_secs_f64()));
    }
    let faults_done = started.elapsed();
    step(started, "faults done");
    assert!(
        engage.child.try_wait().unwrap().is_none(),
        "engage exited during the broker faults ({faults:?}):\n{}",
        engage.log()
    );

    assert!(wait_committed(&broker, &run, PARTITIONS, want), "{}", stalled(&broker, &run, PARTITIONS, total, &engage));
    let log = engage.log();
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{log}");
    let states = final_states_of_at_least(&broker, &run, expected.len());
    assert_same_facts(&expected, &states);
    let duplicates = assert_no_seq_gaps(&broker, &run, &states);
    let warned = print_warnings("", &log);
    println!(
        "broker failover: {}; engage never restarted; {} rebalances; {} warnings or errors; {duplicates} duplicates \
         (reference done at {:.0} s, faults done at {:.0} s, all at {:.0} s)",
        faults.join("; "),
        log.matches("\"assign\"").count() - 1,
        warned,
        reference_done.as_secs_f64(),
        faults_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The idempotent producer retries through a leader change without
    // writing twice, and engage never restarted or re-read anything: a
    // reader sees every output once.
    assert_eq!(duplicates, 0, "outputs published twice through the broker faults ({faults:?})");
    report("broker failover and rolling restart", want, &states, &broker, &run);
}

/// One instance's ownership of partitions, from its log: (partition,
/// restored at, revoked at or else the instance's last log line, whether a
/// revoke ended it).
fn ownership(log: &str) -> Vec<(i32, String, String, bool)> {
    let mut open: BTreeMap<i32, String> = BTreeMap::new();
    let mut out = Vec::new();
    let mut last = String::new();
    for line in log.lines().map(strip_ansi) {
        let Some(ts) = line.split_whitespace().next().filter(|t| t.len() > 20 && t.ends_with('Z')) else {
            continue;
        };
        last = ts.to_string();
        let partition = || -> i32 {
            let rest = &line[line.find(" partition=").unwrap_or_else(|| panic!("no partition in {line}")) + 11..];
            rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
        };
        if line.contains("partition assigned: state restored") {
            let p = partition();
            assert!(open.insert(p, last.clone()).is_none(), "partition {p} restored twice without a revoke:\n{log}");
        } else if line.contains("partition revoked: flushed, committed, dropped") {
            let p = partition();
            let from = open.remove(&p).unwrap_or_else(|| panic!("partition {p} revoked but never restored:\n{log}"));
            out.push((p, from, last.clone(), true));
        }
    }
    out.extend(open.into_iter().map(|(p, from)| (p, from, last.clone(), false)));
    out
}

/// The group grows from one instance to three while input is flowing, then
/// the two newcomers stop gracefully and the first takes everything back:
/// the final states equal a single uninterrupted run's, and no partition
/// was ever held by two instances at once.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_one_to_three_to_one_instances_mid_stream_matches_a_single_run() {
    const P: i32 = 6;
    let started = Instant::now();
    let broker = Broker::start();
    let base = Topics::create(&broker, P).await;
    let want = feed_events(&broker, &base, 120_000, 3_000);
    let total = want.0 + want.1;
    let dir = tempfile::tempdir().unwrap();

    // Reference: one instance, uninterrupted.
    let expected = reference_run_over(&broker, &base, P, want).await;

    // Throttled so the group changes twice while input remains.
    let group = run_topics(&broker, &base, "scaling").await;
    let text = throttled(&config(&broker, &group), 100, 1_000);
    let mut a = Engage::start(dir.path(), &text);
    assert!(a.wait_for_log("\"assign\"", Duration::from_secs(60)), "{}", a.log());
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed_now(&broker, &group, P) == 0 {
        assert!(Instant::now() < deadline, "A made no progress:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let alone = committed_now(&broker, &group, P);

    // Scale out to three.
    let mut b = Engage::start(dir.path(), &text);
    let mut c = Engage::start(dir.path(), &text);
    for (name, e) in [("B", &b), ("C", &c)] {
        assert!(e.wait_for_log("partition assigned: state restored", Duration::from_secs(60)), "{name}: {}", e.log());
    }
    let before = committed_now(&broker, &group, P);
    std::thread::sleep(Duration::from_secs(3));
    let three = committed_now(&broker, &group, P);
    assert!(three > before, "no progress with three instances ({before} committed):\n{}\n{}", b.log(), c.log());

    // Scale back in to one: B and C stop gracefully.
    assert!(three < total, "the scale-in began after all {total} records were committed: the test proves nothing");
    for (name, e) in [("B", &mut b), ("C", &mut c)] {
        let (code, took) = e.terminate(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{name} stopped in {took:?}:\n{}", e.log());
    }
    let scaled_in = committed_now(&broker, &group, P);
    assert!(wait_committed(&broker, &group, P, want), "{}", stalled(&broker, &group, P, total, &a));
    assert_eq!(a.terminate(Duration::from_secs(30)).0, Some(0), "{}", a.log());

    // No partition held by two instances at once: one instance's revoke of
    // a partition comes before another's restore of it.
    let logs = [("A", a.log()), ("B", b.log()), ("C", c.log())];
    let mut held: BTreeMap<i32, Vec<(String, String, &str)>> = BTreeMap::new();
    let mut per_instance = Vec::new();
    for (name, log) in &logs {
        let owned = ownership(log);
        assert!(!owned.is_empty(), "{name} never owned a partition:\n{log}");
        let revoked = owned.iter().filter(|o| o.3).count();
        per_instance.push(format!("{name} {} ({revoked} ended by a logged revoke)", owned.len()));
        for (p, from, to, _) in owned {
            held.entry(p).or_default().push((from, to, name));
        }
    }
    let mut intervals = 0;
    for (p, spans) in &mut held {
        spans.sort();
        intervals += spans.len();
        for (i, x) in spans.iter().enumerate() {
            for y in &spans[i + 1..] {
                if x.2 != y.2 {
                    assert!(x.1 < y.0, "partition {p}: {} held it {}..{} and {} {}..{}", x.2, x.0, x.1, y.2, y.0, y.1);
                }
            }
        }
        let (_, last_to, last_owner) = spans.last().unwrap();
        assert_eq!(*last_owner, "A", "partition {p} ended with {last_owner} (until {last_to}), not A");
    }
    assert_eq!(held.len(), P as usize, "every partition owned: {held:?}");

    let states = final_states(&broker, &group);
    assert_same_facts(&expected, &states);
    let duplicates = assert_no_seq_gaps(&broker, &group, &states);
    let warned: usize = logs.iter().map(|(name, log)| print_warnings(name, log)).sum();
    println!(
        "scaling 1 -> 3 -> 1: scaled out at {alone}, in at {three} (both stopped at {scaled_in}) of {total} \
         records committed; {intervals} ownership intervals over {P} partitions ({}), none overlapping; \
         {} customers equal to the single run; {duplicates} duplicates; {warned} warnings or errors; {:.0} s",
        per_instance.join(", "),
        states.len(),
        started.elapsed().as_secs_f64()
    );
    // Every handover was graceful (finish, commit, revoke): the new owner
    // starts where the old one committed, so nothing is published twice.
    assert_eq!(duplicates, 0, "outputs published twice across graceful handovers");
}

/// `transaction.state.log.num.partitions` of the harness's nodes.
fn transaction_state_partitions() -> i32 {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka/server.properties.in"));
    template
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("transaction.state.log.num.partitions="))
        .and_then(|n| n.trim().parse().ok())
        .expect("transaction.state.log.num.partitions in tests/kafka/server.properties.in")
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping).
fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__transaction_state` partition whose leader coordinates
/// `transactional_id`, as Kafka's `TransactionStateManager.partitionFor`
/// picks it: `Utils.abs(transactionalId.hashCode) % partitions`, where
/// `Utils.abs(Integer.MIN_VALUE)` is 0.
fn transaction_partition(transactional_id: &str, partitions: i32) -> i32 {
    let hash = java_hash_code(transactional_id);
    (if hash == i32::MIN { 0 } else { hash.abs() }) % partitions
}

/// The transaction coordinators librdkafka was given, in order, from its
/// `eos` debug log (the FindCoordinator answers).
fn coordinators(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.split_once("Transaction coordinator is broker ")?.1.split(' ').next()?.parse().ok())
        .collect()
}

/// Waits until `t`'s group has committed at least `target` input records,
/// starting engage again with `text` whenever it exits (which must be with
/// an error), and returns how many are committed. The log of each instance
/// that exited is kept in `exited`.
fn progress_restarting(
    broker: &Broker,
    t: &Topics,
    target: i64,
    engage: &mut Engage,
    (dir, text): (&std::path::Path, &str),
    exited: &mut Vec<String>,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = engage.child.try_wait().unwrap() {
            let log = engage.log();
            assert!(!status.success(), "engage stopped with success mid-run:\n{log}");
            // The one exit the claim allows: a transaction that could not
            // commit through the failover, aborted.
            assert!(
                log.contains("transaction failed and was aborted"),
                "engage exited ({status}) for another reason:\n{log}"
            );
            assert!(exited.len() < 3, "engage exited a fourth time:\n{log}");
            println!("engage exited ({status}); starting it again:\n{}", last_lines(&log, 5));
            exited.push(log);
            *engage = Engage::start_with(dir, text, env!("CARGO_BIN_EXE_engage"), &[], "info,librdkafka=debug");
        }
        let done = committed_now(broker, t, PARTITIONS);
        if done >= target {
            return done;
        }
        assert!(Instant::now() < deadline, "{target} records not committed within 180 s:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `log` without librdkafka's debug lines.
fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Under `exactly_once`, the leader of the `__transaction_state` partition
/// that coordinates engage's transactional id is killed (-9) mid-run and
/// started again later. engage finds the new coordinator; a transaction
/// whose commit fails meanwhile (the coordinator unreachable past
/// `run.shutdown_deadline`, or the group member lost with a node that also
/// coordinated the group) makes it exit non-zero, and a restart resumes
/// from the last committed transaction. Either way a `read_committed`
/// reader sees each (customer, seq) once, and the final states equal an
/// uninterrupted run's. (On a quiet machine engage rode the failover out
/// without exiting, 3 runs of 3.)
#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_survives_a_transaction_coordinator_failover() {
    let _cluster = ONE_CLUSTER.lock().await;
    // Java's "hello".hashCode() and one that overflows to a negative.
    assert_eq!(java_hash_code("hello"), 99_162_322);
    assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
    let started = Instant::now();
    let mut broker = Broker::cluster(3);
    let base = Topics::create(&broker, PARTITIONS).await;
    let want = feed_events(&broker, &base, 30_000, 1_500);
    let total = want.0 + want.1;
    let expected = reference_run(&broker, &base, want).await;
    step(started, "reference run done");

    let run = run_topics(&broker, &base, "coordinator").await;
    let id = common::unique("eos-coordinator");
    let p = transaction_partition(&id, transaction_state_partitions());
    let dir = tempfile::tempdir().unwrap();
    // Throttled so the coordinator dies with most of the input left.
    // librdkafka's `eos` debug log names each coordinator it is given.
    let text = throttled(&eos_config(&broker, &run, &id), 100, 500)
        .replace("\"statistics.interval.ms\" = 1000", "\"statistics.interval.ms\" = 1000\ndebug = \"eos\"");
    let mut engage = Engage::start_with(dir.path(), &text, env!("CARGO_BIN_EXE_engage"), &[], "info,librdkafka=debug");
    let mut exited = Vec::new();
    let restart = (dir.path(), text.as_str());
    let before = progress_restarting(&broker, &run, total / 5, &mut engage, restart, &mut exited);
    let coordinator = broker.leader_of("__transaction_state", p).expect("a leader of the coordinator's partition");
    assert!(before < total, "the coordinator would die after all {total} records were committed");
    step(
        started,
        &format!("kill -9 node {coordinator} (leads __transaction_state[{p}], coordinates {id}) at {before}/{total}"),
    );
    // The node killed is the one coordinating engage's transactions.
    let told = coordinators(&engage.log());
    assert_eq!(told.last(), Some(&coordinator), "engage's transaction coordinators so far: {told:?}");
    let told_before_kill = coordinators(&(exited.concat() + &engage.log())).len();
    broker.kill_node(coordinator);
    // Down until engage has committed a tenth of the input more: those
    // transactions went through the new coordinator.
    let during = progress_restarting(&broker, &run, before + total / 10, &mut engage, restart, &mut exited);
    let successor = broker.leader_of("__transaction_state", p);
    assert!(during < total, "the coordinator came back after all {total} records were committed");
    step(
        started,
        &format!(
            "{during}/{total} committed with node {coordinator} down (new coordinator {successor:?}); starting it"
        ),
    );
    broker.start_node(coordinator);
    wait_in_sync(&broker, Duration::from_secs(120));
    step(started, "back in sync");

    progress_restarting(&broker, &run, total, &mut engage, restart, &mut exited);
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    let restarts = exited.len();
    let log = exited.concat() + &engage.log();
    let states = final_states_of_at_least(&broker, &run, expected.len());
    assert_same_facts(&expected, &states);
    // The outputs are read at librdkafka's default isolation,
    // read_committed: aborted transactions are not seen.
    assert!(log.contains("exactly_once: transactional producer"), "not transactional:\n{log}");
    let duplicates = assert_no_seq_gaps(&broker, &run, &states);
    // After the kill engage was told of another coordinator.
    let told = coordinators(&log);
    let moved = told[told_before_kill.min(told.len())..].iter().find(|&&n| n != coordinator);
    assert!(moved.is_some(), "engage was never given a new transaction coordinator: {told:?}");
    let log: String = log.lines().filter(|l| !l.contains(" DEBUG ")).collect::<Vec<_>>().join("\n");
    let warned = print_warnings("", &log);
    println!(
        "transaction coordinator failover: node {coordinator} (__transaction_state[{p}]) killed at {before}/{total} \
         committed, restarted at {during}; engage restarted {restarts} times; {} customers equal to the uninterrupted run; \
         {warned} warnings or errors; {duplicates} duplicates; {:.0} s",
        states.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(duplicates, 0, "outputs seen twice by a read_committed reader through the coordinator failover");
}

/// The sum of metric `name` over its label sets on engage's `/metrics` at
/// `addr` (0 when absent or when engage does not answer).
fn metric(addr: &str, name: &str) -> f64 {
    let body = common::http_get(addr, "/metrics").map(|r| r.1).unwrap_or_default();
    body.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// A process's resident memory (`VmRSS`), in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kb.map_or(0.0, |kb: f64| kb / 1024.0)
}

/// Fresh topics of `partitions` partitions on a three-node cluster, each
/// with three replicas except the purchases: one replica (with
/// `min.insync.replicas` 1, so they take writes), partition 0's on node
/// `alone` and the others' on the other nodes. Killing `alone` leaves that
/// one input partition without a leader, while every other partition,
/// engage's outputs, changelog and group fail over.
async fn topics_with_a_lone_purchases_partition(broker: &Broker, partitions: i32, alone: u32) -> Topics {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let t = Topics::named("align");
    for name in [&t.clickstream, &t.scores, &t.alerts, &t.dlq] {
        broker.create_topic(name, partitions).await;
    }
    // Kafka wants the same replica count for every partition of a topic:
    // the purchases' other partitions have one replica too, on the other
    // nodes.
    let others: Vec<i32> = (1..=3).filter(|&n| n != alone as i32).collect();
    let replicas: Vec<Vec<i32>> = (0..partitions)
        .map(|p| if p == 0 { vec![alone as i32] } else { vec![others[p as usize % others.len()]] })
        .collect();
    let assignment: Vec<&[i32]> = replicas.iter().map(Vec::as_slice).collect();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = broker.client_config().create().unwrap();
    let topic = NewTopic::new(&t.purchases, partitions, TopicReplication::Variable(&assignment))
        .set("min.insync.replicas", "1");
    let r = admin.create_topics([&topic], &AdminOptions::new()).await.unwrap();
    r[0].as_ref().expect("purchases created");
    t
}

/// The high watermark of `topic`'s `partition`.
fn end_of(broker: &Broker, topic: &str, partition: i32) -> i64 {
    let c: BaseConsumer = broker.client_config().create().unwrap();
    c.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1
}

/// Alignment timeouts engage logged for input partition `p` waiting for
/// the purchases.
fn purchase_timeouts(log: &str, p: i32) -> usize {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("alignment: the lagging input sent nothing in time"))
        .filter(|l| l.contains(&format!(" partition={p} ")) && l.contains("lagging=\"purchases\""))
        .count()
}

/// Committed offsets of `t.group` on both inputs, by (topic, partition).
fn offsets_of(broker: &Broker, t: &Topics) -> BTreeMap<(String, i32), i64> {
    common::committed_offsets(broker, &t.group, &[&t.clickstream, &t.purchases], PARTITIONS)
}

/// Writes `text` to `dir`/engage.toml and runs `engage topics create` on
/// it: the changelog is created with all three nodes up (engage, creating
/// it with three replicas just after a node died, can time out).
fn create_engage_topics(dir: &std::path::Path, text: &str) {
    let path = dir.join("engage.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(["topics", "create", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "engage topics create: {}", String::from_utf8_lossy(&out.stderr));
}

/// The time of day (seconds) of an engage log line, from its timestamp
/// (`2026-01-01T12:34:56.789Z ...`).
fn time_of_day(line: &str) -> Option<f64> {
    let clock = line.get(11..line.find('Z')?)?;
    let mut parts = clock.split(':').map(|p| p.parse::<f64>().ok());
    Some(parts.next()?? * 3600.0 + parts.next()?? * 60.0 + parts.next()??)
}

/// One input's partition has no broker for longer than `run.alignment_wait`
/// (2 s here): the purchases' partition 0 lives only on node 3, killed
/// after all input is produced and before engage starts, so every one of
/// its records is on the broker and none can be read, whatever engage's
/// speed. The clicks of partition 0 are held for the wait, then all applied
/// without their purchases (`engage_alignment_timeouts_total` counts it).
/// Once node 3 is back the purchases are applied late, engage never exits,
/// and the final states equal an uninterrupted run's (the documented
/// limits: decayed dimensions are order-insensitive, days are kept exactly
/// for events within `state.retention`).
#[tokio::test(flavor = "multi_thread")]
async fn a_leaderless_input_partition_is_waited_for_at_most_the_alignment_wait() {
    let _cluster = ONE_CLUSTER.lock().await;
    const ALONE: u32 = 3;
    let started = Instant::now();
    let mut broker = Broker::cluster(3);
    let base = topics_with_a_lone_purchases_partition(&broker, PARTITIONS, ALONE).await;
    let want = feed_events(&broker, &base, 20_000, 1_500);
    let clicks_end = end_of(&broker, &base.clickstream, 0);
    let purchases_end = end_of(&broker, &base.purchases, 0);
    assert!(clicks_end > 500 && purchases_end > 100, "partition 0: {clicks_end} clicks, {purchases_end} purchases");
    let expected = reference_run(&broker, &base, want).await;
    step(started, &format!("fed {want:?}; reference run done"));

    let run = run_topics(&broker, &base, "leaderless").await;
    let text =
        config(&broker, &run).replace("sweep_interval = \"1h\"", "sweep_interval = \"1h\"\nalignment_wait = \"2s\"");
    let dir = tempfile::tempdir().unwrap();
    create_engage_topics(dir.path(), &text);
    wait_in_sync(&broker, Duration::from_secs(60));
    step(started, &format!("kill -9 node {ALONE} (the only replica of {}[0]); starting engage", base.purchases));
    broker.kill_node(ALONE);
    let mut engage = Engage::start(dir.path(), &text);
    let addr = engage.http_addr();

    // Partition 0's clicks wait for its purchases, at most the wait.
    let deadline = Instant::now() + Duration::from_secs(120);
    while purchase_timeouts(&engage.log(), 0) == 0 {
        assert!(engage.child.try_wait().unwrap().is_none(), "engage exited:\n{}", engage.log());
        assert!(
            Instant::now() < deadline,
            "partition 0 never stopped waiting for its leaderless purchases ({:?} committed):\n{}",
            offsets_of(&broker, &run),
            engage.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let timeouts = metric(&addr, "engage_alignment_timeouts_total");
    let log = strip_ansi(&engage.log());
    assert!(timeouts >= 1.0, "a timeout logged but engage_alignment_timeouts_total is {timeouts}:\n{log}");
    // By engage's own clock: from its first assignment to giving up. The
    // bound is generous (the wait is 2 s) for a loaded machine.
    let at = |what: &str| log.lines().find(|l| l.contains(what)).and_then(time_of_day);
    let waited = at("\"assign\"").zip(at("lagging=\"purchases\"")).map(|(a, b)| (b - a).rem_euclid(86_400.0));
    let waited = waited.unwrap_or_else(|| panic!("no assignment or timeout time in the log:\n{log}"));
    let held = log
        .lines()
        .find(|l| l.contains("lagging=\"purchases\""))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("held=")).and_then(|n| n.parse::<i64>().ok()));
    step(
        started,
        &format!(
            "gave up waiting for {}[0] {waited:.1} s after the first assignment, holding {held:?} clicks",
            base.purchases
        ),
    );
    assert!(waited < 30.0, "partition 0 waited {waited:.1} s for its purchases, with alignment_wait 2 s:\n{log}");
    assert!(held.is_some_and(|n| n > 0), "the timeout held no clicks of partition 0:\n{log}");

    // Then its clicks go on without the purchases: all of them applied
    // (committed) while not one purchase of partition 0 could be read.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = offsets_of(&broker, &run);
        let (clicks, purchases) = (o[&(run.clickstream.clone(), 0)], o[&(run.purchases.clone(), 0)]);
        assert_eq!(purchases, 0, "purchases of partition 0 committed while it had no leader");
        if clicks == clicks_end {
            break;
        }
        assert!(engage.child.try_wait().unwrap().is_none(), "engage exited:\n{}", engage.log());
        assert!(
            Instant::now() < deadline,
            "clicks of partition 0 stopped at {clicks} (of {clicks_end}) with its purchases leaderless:\n{}",
            engage.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    step(
        started,
        &format!("all {clicks_end} clicks of partition 0 applied, none of its purchases; starting node {ALONE}"),
    );
    broker.start_node(ALONE);
    wait_in_sync(&broker, Duration::from_secs(120));

    let log = engage.log.clone();
    finish_without_restart(&broker, &run, want, engage, Duration::from_secs(180));
    let log = log.lock().unwrap().clone();
    let states = final_states_of_at_least(&broker, &run, expected.len());
    assert_same_facts(&expected, &states);
    let duplicates = assert_no_seq_gaps(&broker, &run, &states);
    let warned = print_warnings("", &log);
    println!(
        "leaderless input partition: all {clicks_end} clicks of partition 0 applied before any of its \
         {purchases_end} purchases; gave up waiting {waited:.1} s after the first assignment; \
         engage_alignment_timeouts_total {timeouts}; engage never restarted; {} customers equal to the uninterrupted run; {warned} warnings or errors; {duplicates} \
         duplicates; {:.0} s",
        states.len(),
        started.elapsed().as_secs_f64()
    );
}

/// With `run.alignment_wait` long (5 min) and one input's partition
/// without a leader, the other input's records of that partition are held
/// waiting for it, at most 10 000 (align::HOLD_LIMIT): then that partition is
/// paused, however much more it has on the broker, and engage's memory
/// stays flat. Once the broker is back everything is applied, without a
/// restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_leaderless_input_partition_holds_at_most_ten_thousand_records_of_the_other() {
    let _cluster = ONE_CLUSTER.lock().await;
    const ALONE: u32 = 3;
    const HOLD_LIMIT: f64 = 10_000.0;
    let started = Instant::now();
    let mut broker = Broker::cluster(3);
    let t = topics_with_a_lone_purchases_partition(&broker, 1, ALONE).await;
    let want = feed_events(&broker, &t, 60_000, 1_500);
    assert!(want.0 as f64 > 4.0 * HOLD_LIMIT, "{want:?}: too few clicks to show a bound");
    let text =
        config(&broker, &t).replace("sweep_interval = \"1h\"", "sweep_interval = \"1h\"\nalignment_wait = \"300s\"");
    let dir = tempfile::tempdir().unwrap();
    create_engage_topics(dir.path(), &text);
    step(started, &format!("fed {want:?}; kill -9 node {ALONE} (the only replica of {}[0])", t.purchases));
    broker.kill_node(ALONE);

    let mut engage = Engage::start(dir.path(), &text);
    let addr = engage.http_addr();
    let pid = engage.child.id();
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(&addr, "engage_alignment_held_records") < HOLD_LIMIT {
        assert!(engage.child.try_wait().unwrap().is_none(), "engage exited:\n{}", engage.log());
        assert!(Instant::now() < deadline, "{HOLD_LIMIT} clicks never held:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    step(started, "10 000 clicks held");
    // Watched for 5 s: no more is held, and memory stays flat.
    let rss_full = rss_mib(pid);
    let (mut held_max, mut rss_max) = (0.0f64, rss_full);
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        held_max = held_max.max(metric(&addr, "engage_alignment_held_records"));
        rss_max = rss_max.max(rss_mib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let committed = committed_now(&broker, &t, 1);
    step(
        started,
        &format!("held at most {held_max} for 5 s; {committed} committed; RSS {rss_full:.0} -> {rss_max:.0} MiB"),
    );
    // engage reads 10 000 records well within a second: holding no more
    // than that for 5 s, with four times as many clicks on the broker,
    // the partition was paused. And nothing was applied (the purchases
    // may hold earlier events).
    assert!(held_max <= HOLD_LIMIT + 512.0, "{held_max} records held, more than the 10 000 limit allows");
    assert_eq!(committed, 0, "records applied while the purchases could still hold earlier events");
    assert!(rss_max < rss_full + 16.0, "RSS grew from {rss_full:.0} to {rss_max:.0} MiB while the partition was held");

    broker.start_node(ALONE);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = common::committed_offsets(&broker, &t.group, &[&t.clickstream, &t.purchases], 1);
        if (done[&(t.clickstream.clone(), 0)], done[&(t.purchases.clone(), 0)]) == want {
            break;
        }
        assert!(engage.child.try_wait().unwrap().is_none(), "engage exited:\n{}", engage.log());
        assert!(Instant::now() < deadline, "not everything committed after the broker came back:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = engage.log();
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{log}");
    let states = final_states(&broker, &t);
    let duplicates = assert_no_seq_gaps(&broker, &t, &states);
    let warned = print_warnings("", &log);
    println!(
        "alignment hold: {} clicks over one partition, at most {held_max} held while its purchases were \
         leaderless (RSS {rss_full:.0} -> {rss_max:.0} MiB); all applied once the leader \
         returned, {} customers, {duplicates} duplicates, {warned} warnings or errors; {:.0} s",
        want.0,
        states.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(duplicates, 0, "outputs published twice");
}
