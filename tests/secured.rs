//! `engage run` on a secured Apache Kafka (issue 26): SASL_SSL with
//! SCRAM-SHA-512, mTLS (PEM with an encrypted key, PKCS12), OAUTHBEARER with
//! librdkafka's OIDC client, and the StandardAuthorizer with no ACL meaning
//! no access (`common::secure`). Every engage here runs as a principal that
//! holds exactly the ACLs the README's table lists for what it does
//! ([`run_acls`]), with `run.create_topics = false`; the harness, a super
//! user on a plaintext listener, creates the topics, produces the input and
//! reads the outputs back.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::runs::{
    PARTITIONS, assert_no_seq_gaps, assert_same_facts, assert_seqs_run_from_one, feed_events, final_states,
    reference_run, stable_and_high,
};
use common::secure::{Acl, Operation, SecureBroker, kafka_toml};
use common::{Broker, Engage, Topics, committed, http_get, read_topic, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The changelog of `t`'s group.
fn changelog(t: &Topics) -> String {
    format!("{}.engage-state", t.group)
}

/// The README's ACLs for `engage run` ("Connecting to a secured cluster"):
/// READ on the inputs and the changelog, WRITE on the outputs and the
/// changelog, READ on the groups the group id prefixes (its own, and the
/// `.restore` and `.probe` groups of the consumers that assign partitions
/// themselves); with `exactly_once` also WRITE on the transactional ids it
/// prefixes.
fn run_acls(principal: &str, t: &Topics, exactly_once: bool) -> Vec<Acl> {
    let mut acls = vec![
        Acl::topic(principal, &t.clickstream, Operation::Read),
        Acl::topic(principal, &t.purchases, Operation::Read),
        Acl::topic(principal, &changelog(t), Operation::Read),
        Acl::topic(principal, &changelog(t), Operation::Write),
        Acl::topic(principal, &t.scores, Operation::Write),
        Acl::topic(principal, &t.alerts, Operation::Write),
        Acl::topic(principal, &t.dlq, Operation::Write),
        Acl::group(principal, &t.group, Operation::Read).prefixed(),
    ];
    if exactly_once {
        acls.push(Acl::transactional_id(principal, &t.group, Operation::Write).prefixed());
    }
    acls
}

/// Inputs, outputs and the changelog of one test, created by the super
/// user (engage may not create them).
async fn topics(broker: &Broker) -> Topics {
    let t = Topics::named("sec");
    for name in [&t.clickstream, &t.purchases, &t.scores, &t.alerts, &t.dlq, &changelog(&t)] {
        broker.create_topic(name, PARTITIONS).await;
    }
    t
}

/// An engage config for `t` whose `[kafka]` is `client` (a secured
/// listener), without topic creation; `extra` goes into `[run]`.
fn secured_config(secure: &SecureBroker, t: &Topics, client: &ClientConfig, extra: &str) -> String {
    let plain = format!("\"bootstrap.servers\" = \"{}\"\n", secure.broker.bootstrap);
    t.config(&secure.broker, &format!("sweep_interval = \"1h\"\n{extra}\n[state]\nflush_interval = \"200ms\"\n"))
        .replace(&plain, &kafka_toml(client))
        .replace("create_topics = true", "create_topics = false")
}

/// Starts `engage run` with `config` and extra environment variables.
fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Engage {
    let path = dir.join(format!("engage-{}.toml", unique("c")));
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engage"));
    cmd.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Engage::capture(cmd.spawn().unwrap())
}

/// The lines of engage's log at ERROR level.
fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" ERROR ")).collect()
}

/// Waits until `t`'s group has committed `want` input records, or fails
/// with engage's log.
fn wait_committed(secure: &SecureBroker, t: &Topics, want: (i64, i64), engage: &Engage, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let b = &secure.broker;
        if (committed(b, &t.group, &t.clickstream, PARTITIONS), committed(b, &t.group, &t.purchases, PARTITIONS))
            == want
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{want:?} not committed within {within:?}:\n{}", engage.log());
}

/// The fraction of the input `t`'s group has committed.
fn committed_fraction(secure: &SecureBroker, t: &Topics, want: (i64, i64)) -> f64 {
    let b = &secure.broker;
    let done = committed(b, &t.group, &t.clickstream, PARTITIONS) + committed(b, &t.group, &t.purchases, PARTITIONS);
    done as f64 / (want.0 + want.1) as f64
}

/// Kills `engage` with SIGKILL while one of its transactions holds output
/// records, and returns each output partition's (last stable offset, high
/// watermark) at the kill. A transaction is open only for the moment of a
/// flush, so the process is frozen (SIGSTOP) at short intervals and killed
/// only when an output partition's last stable offset trails its high
/// watermark, twice, 300 ms apart (a commit already on its way would have
/// moved it); otherwise it is thawed and frozen again a little later.
fn kill_inside_transaction(secure: &SecureBroker, t: &Topics, engage: &mut Engage) -> Vec<Vec<(i64, i64)>> {
    let signal = |name: &str| {
        let pid = engage.child.id().to_string();
        assert!(Command::new("kill").args([name, &pid]).status().unwrap().success());
    };
    let outputs = || -> Vec<Vec<(i64, i64)>> {
        [&t.scores, &t.alerts].iter().map(|o| stable_and_high(&secure.broker, o)).collect()
    };
    let open = |at: &Vec<Vec<(i64, i64)>>| at.iter().flatten().any(|(stable, high)| stable < high);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never caught a transaction open\n{}", engage.log());
        signal("-STOP");
        if open(&outputs()) {
            std::thread::sleep(Duration::from_millis(300));
            let at_kill = outputs();
            if open(&at_kill) {
                engage.kill9();
                return at_kill;
            }
        }
        signal("-CONT");
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// SCRAM-SHA-512 with exactly the README's ACLs, under `guarantee`: a run
/// killed with `kill -9` once a fifth of the input is committed and restarted (its
/// partitions restored from a non-empty changelog) ends with the facts of
/// an uninterrupted run, with no `seq` gaps (exactly once for a
/// `read_committed` reader under `exactly_once`), and no ERROR line.
async fn scram_run_survives_kill_nine(exactly_once: bool) {
    let secure = SecureBroker::shared();
    let t = topics(&secure.broker).await;
    let want = feed_events(&secure.broker, &t, 12_000, 600);
    let reference = reference_run(&secure.broker, &t, want).await;

    let (user, password) = (unique("engage"), format!("pw-{}", unique("s")));
    secure.create_scram_user(&user, &password);
    secure.grant(&run_acls(&format!("User:{user}"), &t, exactly_once));
    // The password from a file, as a Kubernetes Secret is mounted.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sasl-password");
    std::fs::write(&secret, format!("{password}\n")).unwrap();
    let mut client = secure.scram_config(&user, "");
    client.remove("sasl.password");
    // Offsets committed five times a second, and output throttled as the
    // other fault tests throttle it (common::runs::throttled: 500 in
    // flight, 100 ms linger), so the run takes seconds and the kill lands
    // between commits with work remaining. (With 20 in flight the run
    // crawled at about 50 records a second, as every pause costs up to a
    // second of fetching, and outlasted the test's wait.)
    let guarantee = if exactly_once {
        "max_in_flight = 500\nprocessing_guarantee = \"exactly_once\""
    } else {
        "max_in_flight = 500"
    };
    let kafka = format!(
        "[kafka]\n\"sasl.password\" = {{ file = {:?} }}\n\"auto.commit.interval.ms\" = 200\n\"linger.ms\" = 100\n",
        secret.display().to_string()
    );
    let config = secured_config(secure, &t, &client, guarantee).replace("[kafka]\n", &kafka);

    let mut engage = start(dir.path(), &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed_fraction(secure, &t, want) < 0.2 {
        assert!(Instant::now() < deadline && engage.child.try_wait().unwrap().is_none(), "{}", engage.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let high_at_kill = if exactly_once {
        kill_inside_transaction(secure, &t, &mut engage)
    } else {
        engage.kill9();
        [&t.scores, &t.alerts].iter().map(|o| stable_and_high(&secure.broker, o)).collect()
    };
    let at_kill = committed_fraction(secure, &t, want);
    assert!(at_kill < 0.9, "the kill must land while work remains ({at_kill:.2} committed)");
    let first_log = engage.log();

    let restarted = Instant::now();
    let mut engage = start(dir.path(), &config, &[]);
    if exactly_once {
        let open = high_at_kill.iter().flatten().any(|(stable, high)| stable < high);
        assert!(open, "no transaction with records was open at the kill: the check proves nothing ({high_at_kill:?})");
        // The restarted instance takes its predecessor's transactional id,
        // which aborts the transaction the kill left open: read_committed
        // readers see everything up to the kill's high watermark at once
        // (measured: under a second), not after transaction.timeout.ms and
        // the broker's next expiry check (10 s each by default, so 10-20 s).
        // The issue asks for 15 s; 8 s tells the two apart.
        let deadline = restarted + Duration::from_secs(8);
        loop {
            let now: Vec<Vec<(i64, i64)>> =
                [&t.scores, &t.alerts].iter().map(|o| stable_and_high(&secure.broker, o)).collect();
            let past = now.iter().zip(&high_at_kill).all(|(n, k)| n.iter().zip(k).all(|(n, k)| n.0 >= k.1));
            if past {
                println!("read_committed readers moved past the kill {:.1?} after the restart", restarted.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a killed transaction still holds readers back: {now:?} vs {high_at_kill:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    wait_committed(secure, &t, want, &engage, Duration::from_secs(180));
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());

    let states = final_states(&secure.broker, &t);
    assert_same_facts(&reference, &states);
    let duplicates = if exactly_once {
        read_committed_duplicates(secure, &t, &states)
    } else {
        assert_no_seq_gaps(&secure.broker, &t, &states)
    };
    if exactly_once {
        assert_eq!(duplicates, 0, "a read_committed reader saw outputs twice");
    }
    for log in [first_log, engage.log()] {
        assert!(error_lines(&log).is_empty(), "ERROR lines on the normal path:\n{log}");
        assert!(!log.contains(&password), "the password was logged:\n{log}");
    }
}

/// Every (customer, seq) a `read_committed` reader sees runs from 1 to the
/// final state's seq with none missing; returns how many it saw twice.
fn read_committed_duplicates(
    secure: &SecureBroker,
    t: &Topics,
    states: &BTreeMap<String, engage::engine::state::CustomerState>,
) -> usize {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for topic in [&t.scores, &t.alerts] {
        let reader: BaseConsumer = secure
            .broker
            .client_config()
            .set("isolation.level", "read_committed")
            .set("group.id", unique("rc"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        reader.subscribe(&[topic]).unwrap();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
                use rdkafka::Message;
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                seqs.entry(v["customer_id"].as_str().unwrap().into()).or_default().push(v["seq"].as_u64().unwrap());
                quiet = Instant::now();
            }
        }
    }
    assert_seqs_run_from_one(seqs, states)
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_at_least_once_with_the_readme_acls_survives_kill_nine() {
    scram_run_survives_kill_nine(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_exactly_once_with_the_readme_acls_survives_kill_nine_and_readers_move_on_at_once() {
    scram_run_survives_kill_nine(true).await;
}

/// A short run as `client`: engage starts, takes up every record and
/// stops cleanly, with no ERROR line and no secret in its log.
async fn short_run(
    secure: &SecureBroker,
    principal: &str,
    client: &ClientConfig,
    env: &[(&str, &str)],
    secrets: &[&str],
) {
    let t = topics(&secure.broker).await;
    let want = feed_events(&secure.broker, &t, 300, 30);
    secure.grant(&run_acls(principal, &t, false));
    let dir = tempfile::tempdir().unwrap();
    let mut engage = start(dir.path(), &secured_config(secure, &t, client, ""), env);
    wait_committed(secure, &t, want, &engage, Duration::from_secs(90));
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    let log = engage.log();
    assert!(error_lines(&log).is_empty(), "ERROR lines:\n{log}");
    for s in secrets {
        assert!(!log.contains(s), "{s:?} was logged:\n{log}");
    }
    assert!(!read_topic(&secure.broker, &t.scores, 1, Duration::from_secs(30)).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_pem_with_the_key_password_from_the_environment_or_a_file_and_pkcs12() {
    let secure = SecureBroker::shared();
    let cn = unique("mtls");
    let cert = secure.client_cert(&cn);
    let principal = format!("User:{cn}");
    // PEM, the key's password from the environment.
    let mut pem = secure.mtls_pem_config(&cert);
    pem.remove("ssl.key.password");
    short_run(
        secure,
        &principal,
        &pem,
        &[("ENGAGE__KAFKA__SSL_KEY_PASSWORD", &cert.key_password)],
        &[&cert.key_password],
    )
    .await;
    // PEM, the key's password from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key-password");
    std::fs::write(&file, &cert.key_password).unwrap();
    let mut from_file = secure.mtls_pem_config(&cert);
    from_file.remove("ssl.key.password");
    from_file.set("ssl.key.password", "@FILE@");
    let t = topics(&secure.broker).await;
    let want = feed_events(&secure.broker, &t, 200, 20);
    secure.grant(&run_acls(&principal, &t, false));
    let config = secured_config(secure, &t, &from_file, "")
        .replace("\"@FILE@\"", &format!("{{ file = {:?} }}", file.display().to_string()));
    let mut engage = start(dir.path(), &config, &[]);
    wait_committed(secure, &t, want, &engage, Duration::from_secs(90));
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    assert!(!engage.log().contains(&cert.key_password));
    // PKCS12.
    short_run(secure, &principal, &secure.mtls_p12_config(&cert), &[], &[&cert.p12_password]).await;
}

/// Passwords as a Kubernetes Secret may hold them, in the environment:
/// each reaches the broker exactly (figment would have read `0123456789` as
/// a number and dropped its zero), and none is ever printed.
#[tokio::test(flavor = "multi_thread")]
async fn scram_passwords_from_the_environment_are_taken_verbatim() {
    let secure = SecureBroker::shared();
    let t = topics(&secure.broker).await;
    let awkward = ["0123456789", "true", "1e5", "[x]", "\"quoted\"", "two words", "a#b"];
    let dir = tempfile::tempdir().unwrap();
    for password in awkward {
        let user = unique("env");
        secure.create_scram_user(&user, password);
        // Ready needs only the group and the inputs' READ: no records.
        secure.grant(&run_acls(&format!("User:{user}"), &t, false));
        let mut client = secure.scram_config(&user, "");
        client.remove("sasl.password");
        let config = secured_config(secure, &t, &client, "");
        let mut engage = start(dir.path(), &config, &[("ENGAGE__KAFKA__SASL_PASSWORD", password)]);
        let addr = engage.http_addr();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&addr, "/readyz").map(|r| r.0) != Some(200) {
            assert!(engage.child.try_wait().unwrap().is_none(), "{password:?}: engage exited:\n{}", engage.log());
            assert!(Instant::now() < deadline, "{password:?}: never ready:\n{}", engage.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0));
        let log = engage.log();
        assert!(error_lines(&log).is_empty(), "{password:?}:\n{log}");
        if password.len() > 4 {
            assert!(!log.contains(password), "{password:?} was logged:\n{log}");
        }
    }
}

/// A wrong password: engage exits non-zero within 30 s, naming the
/// authentication failure, the user and the mechanism, and printing no
/// secret (neither the wrong password nor the right one).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_exits_naming_authentication() {
    let secure = SecureBroker::shared();
    let t = topics(&secure.broker).await;
    let (user, password) = (unique("wrong"), format!("pw-{}", unique("s")));
    secure.create_scram_user(&user, &password);
    secure.grant(&run_acls(&format!("User:{user}"), &t, false));
    let wrong = format!("not-{password}");
    let dir = tempfile::tempdir().unwrap();
    let mut engage = start(dir.path(), &secured_config(secure, &t, &secure.scram_config(&user, &wrong), ""), &[]);
    let started = Instant::now();
    let status = engage.wait_exit(Duration::from_secs(30));
    let log = engage.log();
    assert!(!status.success(), "{log}");
    println!("wrong password: exited after {:.1?}", started.elapsed());
    let expected = format!("authentication failed for user `{user}` (SCRAM-SHA-512)");
    assert!(log.contains(&expected), "expected {expected:?}:\n{log}");
    assert!(!log.contains(&wrong) && !log.contains(&password), "a password was printed:\n{log}");
}

/// Each ACL of the README's set removed in turn: engage names the missing
/// permission and exits non-zero within 30 s (`run.give_up_after` is 5 s
/// here; a refusal found at start-up exits at once), committing nothing it
/// could not make durable. The input exercises every permission within
/// seconds: a bad record first (a dead letter), score changes, and a
/// customer who goes quiet while another is active, so a sweep raises an
/// alert; one partition, so one stream time covers both.
#[tokio::test(flavor = "multi_thread")]
async fn each_acl_removed_in_turn_is_named_and_nothing_is_committed() {
    let secure = SecureBroker::shared();
    let (user, password) = (unique("acl"), format!("pw-{}", unique("s")));
    secure.create_scram_user(&user, &password);
    let principal = format!("User:{user}");
    let count = run_acls(&principal, &Topics::named("n"), false).len();
    for i in 0..count {
        let t = Topics::named("acl");
        for name in [&t.clickstream, &t.purchases, &t.scores, &t.alerts, &t.dlq, &changelog(&t)] {
            secure.broker.create_topic(name, 1).await;
        }
        let want = feed_every_output(&secure.broker, &t).await;
        let mut acls = run_acls(&principal, &t, false);
        let dropped = acls.remove(i);
        secure.grant(&acls);
        let dir = tempfile::tempdir().unwrap();
        let extra = "give_up_after = \"5s\"\nsweep_interval = \"1s\"";
        let config = secured_config(secure, &t, &secure.scram_config(&user, &password), extra)
            .replace("sweep_interval = \"1h\"\n", "");
        let started = Instant::now();
        let mut engage = start(dir.path(), &config, &[]);
        let status = engage.wait_exit(Duration::from_secs(30));
        let log = engage.log();
        assert!(!status.success(), "without {dropped}:\n{log}");
        let named = format!("not authorized to {} {}", operation_name(dropped.operation), resource_name(&dropped));
        assert!(log.contains(&named), "without {dropped}, expected {named:?}:\n{log}");
        println!("without {dropped}: exited after {:.1?}, naming it", started.elapsed());
        let done = committed(&secure.broker, &t.group, &t.clickstream, 1)
            + committed(&secure.broker, &t.group, &t.purchases, 1);
        // Every record's work reaches the scores, the dead-letter topic or
        // the changelog before any commit: without one of those, nothing.
        let blocks_everything = dropped.name != t.alerts;
        if blocks_everything {
            assert_eq!(done, 0, "without {dropped}: offsets committed past work that could not be delivered");
        } else {
            assert!(done <= want.0 + want.1);
        }
        secure.revoke(&acls);
    }
}

/// Kafka's name of an ACL operation, as engage's messages give it.
fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Read => "READ",
        Operation::Write => "WRITE",
        Operation::Describe => "DESCRIBE",
        Operation::Create => "CREATE",
        other => panic!("{other:?} is not in the README's table"),
    }
}

/// "topic `x`", "group `g`", as engage's messages name a resource.
fn resource_name(acl: &Acl) -> String {
    match acl.resource {
        common::secure::Resource::Topic => format!("topic `{}`", acl.name),
        common::secure::Resource::Group => format!("group `{}`", acl.name),
        common::secure::Resource::TransactionalId => format!("transactional id `{}", acl.name),
        common::secure::Resource::Cluster => "cluster".to_string(),
    }
}

/// One partition of input that makes engage use every permission at once:
/// a record with no key (a dead letter) first, then a customer active on
/// three days two months ago and another active yesterday (score changes,
/// and at yesterday's stream time the first is dormant: an alert).
async fn feed_every_output(broker: &Broker, t: &Topics) -> (i64, i64) {
    let p = broker.producer();
    let day = 86_400_000;
    let now = engage::clock::wall_clock_ms();
    common::produce(&p, &t.clickstream, None, br#"{"event_id":"bad","customer_id":"x","type":"page_view"}"#, &[]).await;
    let mut clicks = 1;
    for (customer, days_ago) in [("quiet", 60), ("quiet", 59), ("quiet", 58), ("busy", 1)] {
        let v = serde_json::json!({"event_id": format!("{customer}-{days_ago}"), "customer_id": customer,
                                   "type": "product_view", "ts": now - days_ago * day});
        common::produce(&p, &t.clickstream, Some(customer.as_bytes()), v.to_string().as_bytes(), &[]).await;
        clicks += 1;
    }
    let buy = serde_json::json!({"event_id": "buy", "customer_id": "busy", "type": "purchase", "amount": 20.0, "ts": now - day});
    common::produce(&p, &t.purchases, Some(b"busy"), buy.to_string().as_bytes(), &[]).await;
    (clicks, 1)
}

/// Input compressed with each codec Kafka has, on both event inputs and
/// the erasures input, is applied; with `[kafka] "compression.type" =
/// "zstd"` engage's outputs and changelog records are stored zstd batches.
#[tokio::test(flavor = "multi_thread")]
async fn input_in_every_codec_is_applied_and_outputs_can_be_zstd() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let secure = SecureBroker::shared();
    let t = topics(&secure.broker).await;
    let erasures = format!("{}.erasures", t.group);
    let confirmations = format!("{}.confirmed", t.group);
    secure.broker.create_topic(&erasures, PARTITIONS).await;
    secure.broker.create_topic(&confirmations, PARTITIONS).await;
    let day = 86_400_000;
    let now = engage::clock::wall_clock_ms();
    let mut sent = (0i64, 0i64);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let p: FutureProducer =
            secure.broker.client_config().set("compression.type", codec).set("linger.ms", "20").create().unwrap();
        for i in 0..25 {
            let id = format!("{codec}-{i}");
            let click = serde_json::json!({"event_id": format!("c-{id}"), "customer_id": id, "type": "page_view", "ts": now - 3 * day});
            let buy = serde_json::json!({"event_id": format!("p-{id}"), "customer_id": id, "type": "purchase", "amount": 10.0, "ts": now - 2 * day});
            for (topic, value) in [(&t.clickstream, click), (&t.purchases, buy)] {
                let v = value.to_string();
                p.send(FutureRecord::to(topic).key(&id).payload(&v), Duration::from_secs(10)).await.unwrap();
            }
            sent = (sent.0 + 1, sent.1 + 1);
        }
        let id = format!("{codec}-0");
        let request =
            serde_json::json!({"customer_id": id, "request_id": format!("r-{codec}"), "ts": now - day}).to_string();
        p.send(FutureRecord::to(&erasures).key(&id).payload(&request), Duration::from_secs(10)).await.unwrap();
    }
    let (user, password) = (unique("zstd"), format!("pw-{}", unique("s")));
    secure.create_scram_user(&user, &password);
    let principal = format!("User:{user}");
    let mut acls = run_acls(&principal, &t, false);
    acls.push(Acl::topic(&principal, &erasures, Operation::Read));
    acls.push(Acl::topic(&principal, &confirmations, Operation::Write));
    secure.grant(&acls);
    let mut client = secure.scram_config(&user, &password);
    client.set("compression.type", "zstd");
    let config = secured_config(secure, &t, &client, "").replace(
        "[topics]\n",
        &format!("[topics]\nerasures = \"{erasures}\"\nerasure_confirmations = \"{confirmations}\"\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut engage = start(dir.path(), &config, &[]);
    wait_committed(secure, &t, sent, &engage, Duration::from_secs(90));
    let confirmed = read_topic(&secure.broker, &confirmations, 4, Duration::from_secs(60));
    assert_eq!(confirmed.len(), 4, "one confirmation per codec's erasure request");
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    let log = engage.log();
    assert!(error_lines(&log).is_empty(), "{log}");
    assert!(read_topic(&secure.broker, &t.dlq, 0, Duration::from_secs(10)).is_empty(), "nothing dead-lettered");
    // Every score change arrived, and the broker stored the outputs and
    // the changelog records as zstd batches, or plain where librdkafka found
    // compressing did not make a batch smaller.
    assert!(read_topic(&secure.broker, &t.scores, 100, Duration::from_secs(60)).len() >= 100);
    for topic in [&t.scores, &changelog(&t)] {
        let codecs: Vec<u8> = (0..PARTITIONS).flat_map(|p| batch_codecs(secure, topic, p)).collect();
        let zstd = codecs.iter().filter(|c| **c == 4).count();
        let only = codecs.iter().all(|c| *c == 4 || *c == 0);
        assert!(zstd > 0 && only, "{topic}: batch codecs {codecs:?}, want zstd (4)");
        println!("{topic}: {zstd} of {} batches zstd", codecs.len());
    }
}

/// The compression codec of each record batch stored in `topic`'s
/// partition `p` (the broker keeps the producer's batches), read from its
/// first log segment: a batch's attributes hold the codec in their low 3
/// bits (zstd 4, none 0).
fn batch_codecs(secure: &SecureBroker, topic: &str, p: i32) -> Vec<u8> {
    let segment = secure.data_dir().join(format!("{topic}-{p}")).join("00000000000000000000.log");
    let bytes = std::fs::read(segment).unwrap_or_default();
    let mut codecs = Vec::new();
    let mut at = 0;
    // Each batch: baseOffset 8, batchLength 4 (of what follows it),
    // partitionLeaderEpoch 4, magic 1, crc 4, attributes (int16, big-endian).
    while at + 23 <= bytes.len() {
        let length = i32::from_be_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
        codecs.push((u16::from_be_bytes([bytes[at + 21], bytes[at + 22]]) & 0x7) as u8);
        at += 12 + length.max(0) as usize;
    }
    codecs
}

/// OAUTHBEARER with librdkafka's OIDC client (client credentials against
/// the test's token endpoint, the secret from a file): engage consumes, and
/// the secret is never printed.
#[tokio::test(flavor = "multi_thread")]
async fn oidc_client_credentials_with_the_secret_from_a_file() {
    let secure = SecureBroker::shared();
    let (client_id, secret) = (unique("oidc"), format!("secret-{}", unique("s")));
    secure.oidc.add_client(&client_id, &secret);
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &secure.sasl_ssl)
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "OAUTHBEARER")
        .set("sasl.oauthbearer.method", "oidc")
        .set("sasl.oauthbearer.client.id", &client_id)
        .set("sasl.oauthbearer.client.secret", "@FILE@")
        .set("sasl.oauthbearer.token.endpoint.url", secure.oidc.token_url())
        .set("sasl.oauthbearer.scope", "kafka")
        .set("ssl.ca.location", secure.ca_pem().display().to_string());
    let t = topics(&secure.broker).await;
    let want = feed_events(&secure.broker, &t, 200, 20);
    secure.grant(&run_acls(&format!("User:{client_id}"), &t, false));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client-secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let config = secured_config(secure, &t, &client, "")
        .replace("\"@FILE@\"", &format!("{{ file = {:?} }}", file.display().to_string()));
    let mut engage = start(dir.path(), &config, &[]);
    wait_committed(secure, &t, want, &engage, Duration::from_secs(90));
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
    assert!(secure.oidc.tokens_issued() > 0);
    let log = engage.log();
    assert!(error_lines(&log).is_empty() && !log.contains(&secret), "{log}");
}

/// A property this build rejects makes client creation fail; the error
/// names the property and never prints its value (librdkafka's and
/// rust-rdkafka's messages both quote it).
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_secret_property_is_never_printed() {
    let secure = SecureBroker::shared();
    let t = topics(&secure.broker).await;
    let secret = format!("hunter-{}", unique("s"));
    let mut client = secure.scram_config("nobody", "irrelevant");
    // Misspelt: librdkafka rejects it, quoting the value.
    client.set("sasl.oauthbearer.client.secrett", &secret);
    let dir = tempfile::tempdir().unwrap();
    let mut engage = start(dir.path(), &secured_config(secure, &t, &client, ""), &[]);
    assert!(!engage.wait_exit(Duration::from_secs(30)).success());
    let log = engage.log();
    assert!(log.contains("sasl.oauthbearer.client.secrett"), "the property is named:\n{log}");
    assert!(!log.contains(&secret), "the secret was printed:\n{log}");
}

/// `engage loadgen`, `engage topics create` and `engage bootstrap` each
/// work as a principal holding exactly the README's ACLs for them.
#[tokio::test(flavor = "multi_thread")]
async fn loadgen_topics_create_and_bootstrap_work_with_exactly_their_readme_acls() {
    let secure = SecureBroker::shared();
    let t = Topics::named("cmd");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], user: &str, password: &str| {
        let config = secured_config(secure, &t, &secure.scram_config(user, password), "");
        let path = dir.path().join(format!("{}.toml", unique("c")));
        std::fs::write(&path, config).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}:\n{text}");
        assert!(error_lines(&text).is_empty() && !text.contains(password), "{args:?}:\n{text}");
        text
    };
    let user = |name: &str| {
        let (user, password) = (unique(name), format!("pw-{}", unique("s")));
        secure.create_scram_user(&user, &password);
        (format!("User:{user}"), user, password)
    };

    // loadgen: WRITE on each input, and CREATE with --create-topics.
    let (principal, name, password) = user("loadgen");
    let mut acls = Vec::new();
    for input in [&t.clickstream, &t.purchases] {
        acls.push(Acl::topic(&principal, input, Operation::Write));
        acls.push(Acl::topic(&principal, input, Operation::Create));
    }
    secure.grant(&acls);
    let args = ["loadgen", "--count", "300", "--customers", "30", "--create-topics", "4", "--history-days", "20"];
    run(&args, &name, &password);

    // topics create: DESCRIBE on each input, CREATE on each output and the
    // changelog.
    let (principal, name, password) = user("topics");
    let mut acls: Vec<Acl> =
        [&t.clickstream, &t.purchases].iter().map(|i| Acl::topic(&principal, i, Operation::Describe)).collect();
    for output in [&t.scores, &t.alerts, &t.dlq, &changelog(&t)] {
        acls.push(Acl::topic(&principal, output, Operation::Create));
    }
    secure.grant(&acls);
    let created = run(&["topics", "create"], &name, &password);
    assert!(created.contains(&changelog(&t)), "{created}");

    // bootstrap: READ on each input, WRITE on the changelog, READ on the
    // groups the group id prefixes.
    let (principal, name, password) = user("bootstrap");
    let mut acls: Vec<Acl> =
        [&t.clickstream, &t.purchases].iter().map(|i| Acl::topic(&principal, i, Operation::Read)).collect();
    acls.push(Acl::topic(&principal, &changelog(&t), Operation::Write));
    acls.push(Acl::group(&principal, &t.group, Operation::Read).prefixed());
    secure.grant(&acls);
    let history = dir.path().join("history.jsonl");
    let now = engage::clock::wall_clock_ms();
    let lines: Vec<String> = (0..50)
        .map(|i| {
            let ts = now - 30 * 86_400_000 + i * 3_600_000;
            serde_json::json!({"event_id": format!("h{i}"), "customer_id": format!("c{}", i % 10), "type": "page_view", "ts": ts})
                .to_string()
        })
        .collect();
    std::fs::write(&history, lines.join("\n")).unwrap();
    let out = dir.path().join("bootstrap-out");
    let (input, out) = (history.display().to_string(), out.display().to_string());
    let text = run(&["bootstrap", "--input", &input, "--out", &out], &name, &password);
    assert!(text.contains("\"customers_written\": 10"), "{text}");
}
