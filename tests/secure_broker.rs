//! The secured-broker harness (`tests/common/secure.rs`) proven with plain
//! rdkafka clients, no engage: SCRAM-SHA-512 over SASL_SSL, mTLS with a PEM
//! certificate and encrypted key and with PKCS12, OAUTHBEARER against the
//! harness's JWKS, each principal holding exactly the ACLs it needs; and
//! what librdkafka reports, where and how fast, when authentication fails or
//! an ACL is missing: the facts `tests/kafka/SECURITY-FACTS.md` records for
//! engage's "no silent stall" detection. The assertions pin those facts;
//! each test also prints a `FACT` block with the details and timings
//! (`cargo test --test secure_broker -- --nocapture`).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::secure::{Acl, Operation, Recorder, SecureBroker};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

/// A fresh user name and password.
fn new_user(prefix: &str) -> (String, String) {
    (common::unique(prefix), format!("pw-{}", common::unique("s")))
}

/// What a consumer saw: records' payloads, and every error `recv` returned
/// with the time since the consumer was created.
#[derive(Debug, Default)]
struct Seen {
    records: Vec<String>,
    errors: Vec<(Duration, KafkaError)>,
}

impl Seen {
    /// The distinct errors, each with when it came first and how often.
    fn summary(&self) -> String {
        let mut out: Vec<(String, Duration, usize)> = Vec::new();
        for (t, e) in &self.errors {
            let s = format!("{e:?} / \"{e}\"");
            match out.iter_mut().find(|(k, _, _)| *k == s) {
                Some(entry) => entry.2 += 1,
                None => out.push((s, *t, 1)),
            }
        }
        out.iter().map(|(s, t, n)| format!("    first at {t:.1?}, {n}x: {s}\n")).collect()
    }

    /// When `recv` first returned an error with `code`.
    fn first(&self, code: RDKafkaErrorCode) -> Option<Duration> {
        self.errors.iter().find(|(_, e)| e.rdkafka_error_code() == Some(code)).map(|(t, _)| *t)
    }
}

/// Receives until `want` records came or `timeout` passed.
async fn consume<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    created: Instant,
    want: usize,
    timeout: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let deadline = Instant::now() + timeout;
    while seen.records.len() < want && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(m)) => seen.records.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()),
            Ok(Err(e)) => seen.errors.push((created.elapsed(), e)),
            Err(_) => {}
        }
    }
    seen
}

/// What librdkafka logged at warning or worse, and its error callbacks,
/// with times since `created`, one line each (repeats counted).
fn out_of_band(recorder: &Recorder, created: Instant) -> String {
    let mut out: Vec<(String, Duration, usize)> = Vec::new();
    for (t, line) in recorder.events() {
        let bad = ["LOG Emerg ", "LOG Alert ", "LOG Critical ", "LOG Error ", "LOG Warning ", "ERROR "];
        if !bad.iter().any(|b| line.starts_with(b)) {
            continue;
        }
        match out.iter_mut().find(|(k, _, _)| *k == line) {
            Some(entry) => entry.2 += 1,
            None => out.push((line, t.saturating_duration_since(created), 1)),
        }
    }
    out.iter().map(|(l, t, n)| format!("    at {t:.1?}, {n}x: {l}\n")).collect()
}

/// Creates `topic` and writes `n` records (`r0`, `r1`, …) into it over the
/// admin path.
async fn topic_with_records(secure: &SecureBroker, topic: &str, n: usize) {
    secure.broker.create_topic(topic, 1).await;
    produce_admin(secure, topic, 0..n).await;
}

async fn produce_admin(secure: &SecureBroker, topic: &str, range: std::ops::Range<usize>) {
    let producer = secure.broker.producer();
    for i in range {
        common::produce(&producer, topic, None, format!("r{i}").as_bytes(), &[]).await;
    }
}

/// A subscribing consumer as engage's input consumer is (StreamConsumer,
/// no auto commit), recording librdkafka's logs (warning and worse, as
/// engage's default `librdkafka=warn`; rust-rdkafka would otherwise derive
/// the level from the `log` crate's, Error with no logger) and its error
/// callbacks.
fn consumer(config: &ClientConfig, group: &str) -> (StreamConsumer<Recorder>, Recorder, Instant) {
    let recorder = Recorder::default();
    let c = config
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(recorder.clone())
        .expect("consumer");
    (c, recorder, Instant::now())
}

fn producer(config: &ClientConfig) -> (FutureProducer<Recorder>, Recorder, Instant) {
    let recorder = Recorder::default();
    let p = config
        .clone()
        .set("linger.ms", "0")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(recorder.clone())
        .expect("producer");
    (p, recorder, Instant::now())
}

/// Names for one consume-and-produce round.
struct Round {
    input: String,
    output: String,
    group: String,
}

impl Round {
    async fn create(secure: &SecureBroker) -> Round {
        let r = Round { input: common::unique("in"), output: common::unique("out"), group: common::unique("g") };
        topic_with_records(secure, &r.input, 5).await;
        secure.broker.create_topic(&r.output, 1).await;
        r
    }

    /// Exactly what consuming `input` in `group` and producing to `output`
    /// needs (READ and WRITE imply DESCRIBE; WRITE implies IDEMPOTENT_WRITE).
    fn acls(&self, principal: &str) -> Vec<Acl> {
        vec![
            Acl::topic(principal, &self.input, Operation::Read),
            Acl::group(principal, &self.group, Operation::Read),
            Acl::topic(principal, &self.output, Operation::Write),
        ]
    }
}

/// Consumes the round's input and produces it to its output with
/// `config`, as a principal holding exactly `Round::acls`; asserts every
/// record went through, the commit too, and nothing was reported at
/// warning level or worse.
async fn round_trip(secure: &SecureBroker, principal: &str, config: &ClientConfig, what: &str) {
    let round = Round::create(secure).await;
    secure.grant(&round.acls(principal));
    assert_eq!(secure.acls(principal).len(), 3, "{what}: ACLs listed");

    let (c, c_rec, created) = consumer(config, &round.group);
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 5, Duration::from_secs(30)).await;
    assert_eq!(seen.records, ["r0", "r1", "r2", "r3", "r4"], "{what}: errors:\n{}", seen.summary());
    let consumed_in = created.elapsed();
    c.commit_consumer_state(CommitMode::Sync).expect("commit with group READ");

    let (p, p_rec, _) = producer(config);
    for r in &seen.records {
        let record = FutureRecord::<(), _>::to(&round.output).payload(r);
        p.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produced");
    }
    assert_eq!(common::read_topic(&secure.broker, &round.output, 5, Duration::from_secs(30)).len(), 5, "{what}");
    assert!(seen.errors.is_empty(), "{what}: consumer errors:\n{}", seen.summary());
    assert_eq!(out_of_band(&c_rec, created), "", "{what}: consumer warnings/errors");
    assert_eq!(out_of_band(&p_rec, created), "", "{what}: producer warnings/errors");
    eprintln!("FACT {what}: as {principal}, 5 records consumed {consumed_in:.1?} after creating the consumer");
}

#[tokio::test]
async fn scram_user_with_exact_acls_consumes_and_produces() {
    let secure = SecureBroker::shared();
    eprintln!("FACT secured broker started in {:.1?}", secure.started_in);
    let (user, password) = new_user("scram");
    let t = Instant::now();
    secure.create_scram_user(&user, &password);
    eprintln!("FACT SCRAM user created and listed in {:.1?}", t.elapsed());
    round_trip(secure, &format!("User:{user}"), &secure.scram_config(&user, &password), "SCRAM-SHA-512").await;
}

#[tokio::test]
async fn mtls_with_pem_and_encrypted_key_consumes_and_produces() {
    let secure = SecureBroker::shared();
    let cn = common::unique("pem");
    let t = Instant::now();
    let cert = secure.client_cert(&cn);
    eprintln!("FACT client certificate (PEM + PKCS12) made in {:.1?}", t.elapsed());
    let key = std::fs::read_to_string(&cert.key_pem).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"), "{key}");
    round_trip(secure, &format!("User:{cn}"), &secure.mtls_pem_config(&cert), "mTLS PEM, encrypted key").await;
}

#[tokio::test]
async fn mtls_with_pkcs12_consumes_and_produces() {
    let secure = SecureBroker::shared();
    let cn = common::unique("p12");
    let cert = secure.client_cert(&cn);
    round_trip(secure, &format!("User:{cn}"), &secure.mtls_p12_config(&cert), "mTLS PKCS12").await;
}

/// Ten ACLs granted then revoked one at a time: each call returns once the
/// broker's authorizer lists (or no longer lists) the ACL.
#[tokio::test]
async fn acls_granted_and_revoked_one_at_a_time_are_listed_at_once() {
    let secure = SecureBroker::shared();
    let principal = format!("User:{}", common::unique("acl"));
    let p = &principal;
    let acls = vec![
        Acl::topic(p, "clickstream", Operation::Read),
        Acl::topic(p, "purchases", Operation::Read),
        Acl::topic(p, "purchases", Operation::Describe),
        Acl::topic(p, "engagement.scores", Operation::Write),
        Acl::topic(p, "engagement.", Operation::Describe).prefixed(),
        Acl::topic(p, "engage.engage-state", Operation::Read),
        Acl::group(p, "engage", Operation::Read).prefixed(),
        Acl::transactional_id(p, "engage", Operation::Write).prefixed(),
        Acl::transactional_id(p, "engage", Operation::Describe).prefixed(),
        Acl::cluster(p, Operation::IdempotentWrite),
    ];
    let mut grant_times = Vec::new();
    for (i, acl) in acls.iter().enumerate() {
        let t = Instant::now();
        secure.grant(std::slice::from_ref(acl));
        grant_times.push(t.elapsed());
        let mut want = acls[..=i].to_vec();
        want.sort();
        assert_eq!(secure.acls(p), want);
    }
    let mut revoke_times = Vec::new();
    for (i, acl) in acls.iter().enumerate() {
        let t = Instant::now();
        secure.revoke(std::slice::from_ref(acl));
        revoke_times.push(t.elapsed());
        let mut want = acls[i + 1..].to_vec();
        want.sort();
        assert_eq!(secure.acls(p), want);
    }
    let t = Instant::now();
    secure.grant(&acls);
    let batch = t.elapsed();
    assert_eq!(secure.acls(p).len(), acls.len());
    eprintln!(
        "FACT ACL grant one at a time (request + wait until listed): {grant_times:.0?}\n\
         FACT ACL revoke one at a time: {revoke_times:.0?}\nFACT 10 ACLs granted in one call: {batch:.0?}"
    );
}

/// A client that is only asked for metadata (as engage's start-up checks
/// do, with a BaseConsumer it never polls), then polled for a second so
/// its queued error callbacks run: what each channel says.
fn metadata_only(config: &ClientConfig) -> (Result<(), KafkaError>, Duration, String) {
    let recorder = Recorder::default();
    metadata_only_with(config, recorder.clone(), &recorder)
}

/// [`metadata_only`] with a client context of the caller's, which reports
/// to `recorder`.
fn metadata_only_with<C: ConsumerContext + 'static>(
    config: &ClientConfig,
    context: C,
    recorder: &Recorder,
) -> (Result<(), KafkaError>, Duration, String) {
    let c: BaseConsumer<C> =
        config.clone().set_log_level(RDKafkaLogLevel::Warning).create_with_context(context).unwrap();
    let created = Instant::now();
    let md = c.fetch_metadata(None, Duration::from_secs(5)).map(|_| ());
    let took = created.elapsed();
    let before_poll = out_of_band(recorder, created);
    let polled = Instant::now();
    while polled.elapsed() < Duration::from_secs(1) {
        if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
            recorder.error(e, "(returned by poll)");
        }
    }
    let report = format!(
        "  fetch_metadata(5 s): {md:?} after {took:.1?}\n  logs/callbacks before any poll:\n{before_poll}  \
         after polling 1 s:\n{}",
        out_of_band(recorder, created)
    );
    (md, took, report)
}

#[tokio::test]
async fn wrong_scram_password_reports_authentication_failure() {
    let secure = SecureBroker::shared();
    let (user, password) = new_user("wrongpw");
    secure.create_scram_user(&user, &password);
    let round = Round::create(secure).await;
    secure.grant(&round.acls(&format!("User:{user}")));
    let config = secure.scram_config(&user, "not-the-password");

    let (c, c_rec, created) = consumer(&config, &round.group);
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 1, Duration::from_secs(5)).await;
    let (p, p_rec, p_created) = producer(config.clone().set("message.timeout.ms", "5000"));
    let sent = p
        .send(FutureRecord::<(), _>::to(&round.output).payload("x"), Duration::from_secs(0))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e);
    let sent_after = p_created.elapsed();
    let (md, _, md_report) = metadata_only(&config);
    eprintln!(
        "FACT wrong SCRAM password\n  consumer recv errors:\n{}  consumer logs/callbacks:\n{}  \
         producer (message.timeout.ms 5 s) delivery: {sent:?} after {sent_after:.1?}\n  producer logs/callbacks:\n{}\
         metadata-only client:\n{md_report}",
        seen.summary(),
        out_of_band(&c_rec, created),
        out_of_band(&p_rec, p_created),
    );
    assert!(seen.records.is_empty());
    let t = seen.first(RDKafkaErrorCode::Authentication).expect("recv returns the Authentication error");
    assert!(t < Duration::from_secs(5), "after {t:?}");
    let (at, line) = c_rec.find("Authentication failed").expect("an error callback names the failure");
    assert!(line.contains("SCRAM-SHA-512"), "{line}");
    assert!(at - created < Duration::from_secs(5), "reported after {:?}", at - created);
    assert_eq!(sent.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::MessageTimedOut));
    assert_eq!(md.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::BrokerTransportFailure));
}

/// A consumer as a principal lacking one of the ACLs it needs: returns
/// what it saw within `timeout`.
async fn consume_lacking(secure: &SecureBroker, drop: &[usize], timeout: Duration, what: &str) -> (Seen, String) {
    let (user, password) = new_user("lack");
    secure.create_scram_user(&user, &password);
    let round = Round::create(secure).await;
    let principal = format!("User:{user}");
    // [topic READ, group READ, topic DESCRIBE]
    let all = [
        Acl::topic(&principal, &round.input, Operation::Read),
        Acl::group(&principal, &round.group, Operation::Read),
        Acl::topic(&principal, &round.input, Operation::Describe),
    ];
    let granted: Vec<Acl> = all.iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, a)| a.clone()).collect();
    secure.grant(&granted);
    let (c, rec, created) = consumer(&secure.scram_config(&user, &password), &round.group);
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 5, timeout).await;
    let oob = out_of_band(&rec, created);
    eprintln!("FACT consumer {what} (granted {granted:?})\n  recv errors:\n{}  logs/callbacks:\n{oob}", seen.summary());
    (seen, oob)
}

#[tokio::test]
async fn consumer_without_topic_read_gets_topic_authorization_failed() {
    let secure = SecureBroker::shared();
    let (seen, _) =
        consume_lacking(secure, &[0], Duration::from_secs(10), "with DESCRIBE but no READ on the topic").await;
    assert!(seen.records.is_empty());
    let t = seen.first(RDKafkaErrorCode::TopicAuthorizationFailed).expect("TopicAuthorizationFailed from recv");
    assert!(t < Duration::from_secs(5), "after {t:?}");
}

#[tokio::test]
async fn consumer_without_any_topic_acl_gets_topic_authorization_failed() {
    let secure = SecureBroker::shared();
    let (seen, _) = consume_lacking(secure, &[0, 2], Duration::from_secs(10), "with no ACL on the topic").await;
    assert!(seen.records.is_empty());
    let t = seen.first(RDKafkaErrorCode::TopicAuthorizationFailed).expect("TopicAuthorizationFailed from recv");
    assert!(t < Duration::from_secs(5), "after {t:?}");
}

#[tokio::test]
async fn consumer_without_group_read_gets_group_authorization_failed() {
    let secure = SecureBroker::shared();
    let (seen, _) = consume_lacking(secure, &[1], Duration::from_secs(10), "with topic READ but no group READ").await;
    assert!(seen.records.is_empty());
    let t = seen.first(RDKafkaErrorCode::GroupAuthorizationFailed).expect("GroupAuthorizationFailed from recv");
    assert!(t < Duration::from_secs(5), "after {t:?}");
}

/// A producer as a principal with `granted` on its topic.
async fn produce_lacking(secure: &SecureBroker, granted: &[Operation], what: &str) -> Result<(), KafkaError> {
    let (user, password) = new_user("plack");
    secure.create_scram_user(&user, &password);
    let topic = common::unique("out");
    secure.broker.create_topic(&topic, 1).await;
    let principal = format!("User:{user}");
    let acls: Vec<Acl> = granted.iter().map(|op| Acl::topic(&principal, &topic, *op)).collect();
    secure.grant(&acls);
    let (p, rec, created) = producer(&secure.scram_config(&user, &password).set("message.timeout.ms", "30000").clone());
    let sent = p.send(FutureRecord::<(), _>::to(&topic).payload("x"), Duration::from_secs(0)).await;
    let took = created.elapsed();
    let sent = sent.map(|_| ()).map_err(|(e, _)| e);
    eprintln!(
        "FACT producer {what}: delivery {sent:?} after {took:.1?}\n  logs/callbacks:\n{}",
        out_of_band(&rec, created)
    );
    sent
}

#[tokio::test]
async fn producer_without_write_gets_topic_authorization_failed() {
    let secure = SecureBroker::shared();
    let sent = produce_lacking(secure, &[Operation::Describe], "with DESCRIBE but no WRITE").await;
    assert_eq!(sent.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::TopicAuthorizationFailed));
}

#[tokio::test]
async fn producer_without_any_topic_acl_gets_topic_authorization_failed() {
    let secure = SecureBroker::shared();
    let sent = produce_lacking(secure, &[], "with no ACL on the topic").await;
    assert_eq!(sent.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::TopicAuthorizationFailed));
}

#[tokio::test]
async fn transactional_producer_without_transactional_id_acl_fails_to_initialize() {
    let secure = SecureBroker::shared();
    let (user, password) = new_user("txn");
    secure.create_scram_user(&user, &password);
    let topic = common::unique("out");
    secure.broker.create_topic(&topic, 1).await;
    let principal = format!("User:{user}");
    secure.grant(&[Acl::topic(&principal, &topic, Operation::Write)]);
    let txn_id = common::unique("tx");
    let config = secure.scram_config(&user, &password).set("transactional.id", &txn_id).clone();
    let (p, rec, created) = producer(&config);
    let init = p.init_transactions(Duration::from_secs(20));
    let took = created.elapsed();
    eprintln!(
        "FACT transactional producer without TRANSACTIONAL_ID ACLs: init_transactions {init:?} after {took:.1?}\n  \
         logs/callbacks:\n{}",
        out_of_band(&rec, created)
    );
    let code = init.expect_err("init_transactions without a transactional id ACL").rdkafka_error_code();
    assert_eq!(code, Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed));

    // With WRITE on the transactional id (DESCRIBE implied) it works.
    secure.grant(&[Acl::transactional_id(&principal, &txn_id, Operation::Write)]);
    let (p, _, _) = producer(&config);
    p.init_transactions(Duration::from_secs(20)).expect("init_transactions with WRITE on the transactional id");
    p.begin_transaction().unwrap();
    p.send(FutureRecord::<(), _>::to(&topic).payload("x"), Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    p.commit_transaction(Duration::from_secs(20)).expect("commit");
}

/// A running consumer loses its topic READ, then gets it back. A fetch
/// the broker authorized before the revoke may still return records
/// produced while it waited (up to `fetch.wait.max.ms`); the next fetch
/// fails, `recv` returns TopicAuthorizationFailed once, and librdkafka
/// then retries every 5 s without reporting anything more: the consumer
/// stalls silently. READ granted again, it resumes at the next retry.
#[tokio::test]
async fn revoking_read_from_a_running_consumer() {
    let secure = SecureBroker::shared();
    let (user, password) = new_user("revoke");
    secure.create_scram_user(&user, &password);
    let round = Round::create(secure).await;
    let principal = format!("User:{user}");
    secure.grant(&round.acls(&principal));
    let (c, rec, created) = consumer(&secure.scram_config(&user, &password), &round.group);
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 5, Duration::from_secs(30)).await;
    assert_eq!(seen.records.len(), 5, "{}", seen.summary());

    let read = Acl::topic(&principal, &round.input, Operation::Read);
    let revoked = Instant::now();
    secure.revoke(std::slice::from_ref(&read));
    let revoke_took = revoked.elapsed();
    produce_admin(secure, &round.input, 5..6).await;
    // Until the error: at most what an in-flight fetch returns.
    let mut until_error = Seen::default();
    while until_error.errors.is_empty() && revoked.elapsed() < Duration::from_secs(10) {
        let more = consume(&c, revoked, 1, Duration::from_millis(100)).await;
        until_error.records.extend(more.records);
        until_error.errors.extend(more.errors);
    }
    let (error_at, error) = until_error.errors.first().cloned().expect("an error after the revoke");
    assert_eq!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::TopicAuthorizationFailed));
    assert!(error_at < Duration::from_secs(5), "after {error_at:?}");
    assert!(until_error.records.len() <= 1, "at most the record an authorized fetch was waiting for");

    produce_admin(secure, &round.input, 6..11).await;
    let quiet = consume(&c, Instant::now(), 5, Duration::from_secs(11)).await;
    let denials = secure.log_text().matches(&format!("Principal = {principal} is Denied operation = READ")).count();
    eprintln!(
        "FACT READ revoked from a running consumer: revoke call {revoke_took:.0?}; TopicAuthorizationFailed from recv \
         {error_at:.0?} after it (records from an in-flight fetch before it: {:?}); then 11 s: {} records, recv \
         errors:\n{}  broker denials of this consumer's fetches so far: {denials}",
        until_error.records,
        quiet.records.len(),
        quiet.summary()
    );
    assert!(quiet.records.is_empty(), "no record without READ");
    assert!(quiet.errors.is_empty(), "librdkafka reports the failure once, then retries silently");
    assert!(denials >= 2, "the consumer kept fetching (every 5 s): {denials} denials");

    let regranted = Instant::now();
    secure.grant(std::slice::from_ref(&read));
    // r5 to r10, less what the in-flight fetch returned.
    let want = 6 - until_error.records.len();
    let after = consume(&c, regranted, want, Duration::from_secs(30)).await;
    eprintln!(
        "FACT READ granted again: {} records {:.1?} later; recv errors:\n{}  all logs/callbacks of the consumer:\n{}",
        after.records.len(),
        regranted.elapsed(),
        after.summary(),
        out_of_band(&rec, created)
    );
    assert_eq!(after.records.len(), want, "the consumer resumes once READ is back");
    assert!(regranted.elapsed() < Duration::from_secs(10), "within a retry: {:?}", regranted.elapsed());
}

#[tokio::test]
async fn mtls_without_a_client_certificate_is_refused() {
    let secure = SecureBroker::shared();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &secure.ssl)
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", secure.ca_pem().display().to_string());
    let (md, _, report) = metadata_only(&config);
    eprintln!("FACT mTLS without a client certificate\n{report}");
    assert_eq!(md.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::BrokerTransportFailure));
}

#[tokio::test]
async fn mtls_with_a_certificate_from_another_ca_is_refused() {
    let secure = SecureBroker::shared();
    let other = secure.untrusted_client_cert(&common::unique("stranger"));
    let (md, _, report) = metadata_only(&secure.mtls_pem_config(&other));
    eprintln!("FACT mTLS with a certificate of an unknown CA\n{report}");
    assert_eq!(md.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::BrokerTransportFailure));
}

/// The `[kafka]` lines an engage test gets from a client configuration:
/// quoted, escaped and sorted, digits staying a string.
#[test]
fn kafka_toml_renders_quoted_sorted_lines() {
    let mut c = ClientConfig::new();
    c.set("sasl.password", "0123\"x").set("bootstrap.servers", "127.0.0.1:9093");
    assert_eq!(
        common::secure::kafka_toml(&c),
        "\"bootstrap.servers\" = \"127.0.0.1:9093\"\n\"sasl.password\" = \"0123\\\"x\"\n"
    );
}

/// librdkafka's `builtin.features` as this build has them, and the codecs
/// engage's inputs can come in: gzip, snappy and lz4 are built in without
/// any cargo feature (zstd needs rdkafka's `zstd` feature).
#[test]
fn gzip_snappy_and_lz4_are_built_in() {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new().create_native_config().unwrap().get("builtin.features").unwrap();
    eprintln!("FACT librdkafka {version}, builtin.features = {features}");
    let features: Vec<&str> = features.split(',').collect();
    for f in ["gzip", "snappy", "lz4", "ssl", "sasl_scram", "sasl_oauthbearer"] {
        assert!(features.contains(&f), "{f} not in {features:?}");
    }
}

/// Input compressed with each codec, read over SASL_SSL. A topic whose
/// `compression.type` is zstd makes the broker store zstd batches whatever
/// the producer sent, which is how a zstd producer's input looks to engage.
#[tokio::test]
async fn compressed_input_is_read_or_reported() {
    let secure = SecureBroker::shared();
    let (user, password) = new_user("codec");
    secure.create_scram_user(&user, &password);
    let principal = format!("User:{user}");
    let features = ClientConfig::new().create_native_config().unwrap().get("builtin.features").unwrap();
    let admin: AdminClient<DefaultClientContext> = secure.broker.client_config().create().unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = common::unique(codec);
        let group = common::unique("g");
        let t = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("compression.type", codec);
        admin.create_topics([&t], &AdminOptions::new()).await.unwrap()[0].as_ref().expect("topic created");
        let supported = features.split(',').any(|f| f == codec);
        if supported {
            // Compressed by the producer too.
            let p: FutureProducer = secure.broker.client_config().set("compression.type", codec).create().unwrap();
            for i in 0..5 {
                common::produce(&p, &topic, None, format!("r{i}").as_bytes(), &[]).await;
            }
        } else {
            produce_admin(secure, &topic, 0..5).await;
        }
        secure
            .grant(&[Acl::topic(&principal, &topic, Operation::Read), Acl::group(&principal, &group, Operation::Read)]);
        let (c, rec, created) = consumer(&secure.scram_config(&user, &password), &group);
        c.subscribe(&[&topic]).unwrap();
        let seen = consume(&c, created, 5, Duration::from_secs(if supported { 30 } else { 10 })).await;
        eprintln!(
            "FACT {codec} input (built in: {supported}): {} records in {:.1?}\n  recv errors:\n{}  logs/callbacks:\n{}",
            seen.records.len(),
            created.elapsed(),
            seen.summary(),
            out_of_band(&rec, created)
        );
        if supported {
            assert_eq!(seen.records, ["r0", "r1", "r2", "r3", "r4"], "{codec}: {}", seen.summary());
        } else {
            assert!(seen.records.is_empty());
            let warn = rec.find("Not implemented").expect("librdkafka names the unsupported codec somewhere");
            eprintln!("FACT unsupported {codec}: {}", warn.1);
        }
    }
}

/// A client context whose OAUTHBEARER token comes from the harness's token
/// endpoint (client credentials), fetched by Rust code: rust-rdkafka's
/// `generate_oauth_token`, which works without librdkafka's OIDC (curl).
#[derive(Clone)]
struct TokenFetcher {
    /// A token to hand out instead of asking the endpoint.
    fixed: Option<String>,
    token_url: String,
    client_id: String,
    secret: String,
    recorder: Recorder,
}

impl ClientContext for TokenFetcher {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.recorder.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.recorder.error(error, reason);
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        if let Some(token) = &self.fixed {
            // librdkafka wants a lifetime in the future; the broker reads
            // the JWT's own `exp`.
            return Ok(OAuthToken {
                token: token.clone(),
                principal_name: self.client_id.clone(),
                lifetime_ms: now_ms + 60_000,
            });
        }
        let json = post_client_credentials(&self.token_url, &self.client_id, &self.secret)?;
        let token = json["access_token"].as_str().ok_or("no access_token")?.to_string();
        let expires_in = json["expires_in"].as_i64().ok_or("no expires_in")?;
        Ok(OAuthToken { token, principal_name: self.client_id.clone(), lifetime_ms: now_ms + expires_in * 1000 })
    }
}

impl ConsumerContext for TokenFetcher {}

/// `POST url` with the client credentials grant (HTTP Basic); the JSON answer.
fn post_client_credentials(url: &str, id: &str, secret: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let rest = url.strip_prefix("http://").ok_or("http only")?;
    let (addr, path) = rest.split_once('/').ok_or("no path")?;
    let mut s = std::net::TcpStream::connect(addr)?;
    let body = "grant_type=client_credentials&scope=kafka";
    let auth = common::secure::base64(format!("{id}:{secret}").as_bytes());
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, json) = text.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("token endpoint: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(serde_json::from_str(json)?)
}

fn oauth_config(secure: &SecureBroker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &secure.sasl_ssl)
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "OAUTHBEARER")
        .set("ssl.ca.location", secure.ca_pem().display().to_string());
    c
}

#[tokio::test]
async fn oauthbearer_token_validated_against_the_jwks() {
    let secure = SecureBroker::shared();
    let client_id = common::unique("svc");
    let secret = format!("secret-{}", common::unique("x"));
    secure.oidc.add_client(&client_id, &secret);
    let round = Round::create(secure).await;
    let principal = format!("User:{client_id}");
    secure.grant(&round.acls(&principal));
    let context = TokenFetcher {
        fixed: None,
        token_url: secure.oidc.token_url(),
        client_id: client_id.clone(),
        secret: secret.clone(),
        recorder: Recorder::default(),
    };
    let config = oauth_config(secure);
    let created = Instant::now();
    let c: StreamConsumer<TokenFetcher> = config
        .clone()
        .set("group.id", &round.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create_with_context(context.clone())
        .unwrap();
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 5, Duration::from_secs(30)).await;
    eprintln!(
        "FACT OAUTHBEARER (token from generate_oauth_token): {} records in {:.1?}; tokens issued {}\n  recv errors:\n{}  \
         logs/callbacks:\n{}",
        seen.records.len(),
        created.elapsed(),
        secure.oidc.tokens_issued(),
        seen.summary(),
        out_of_band(&context.recorder, created)
    );
    assert_eq!(seen.records, ["r0", "r1", "r2", "r3", "r4"], "{}", seen.summary());
    assert!(seen.errors.is_empty(), "{}", seen.summary());
    let p: FutureProducer<TokenFetcher> = config.create_with_context(context.clone()).unwrap();
    p.send(FutureRecord::<(), _>::to(&round.output).payload("x"), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produced with OAUTHBEARER");
    assert_eq!(out_of_band(&context.recorder, created), "");

    // A client the token endpoint refuses gets no token at all.
    let refused = TokenFetcher { secret: "wrong".into(), recorder: Recorder::default(), ..context.clone() };
    let (md, _, report) = metadata_only_with(&config, refused.clone(), &refused.recorder);
    eprintln!("FACT OAUTHBEARER, the token endpoint refusing the client (generate_oauth_token fails)\n{report}");
    assert_eq!(md.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::BrokerTransportFailure));

    // An expired token (signed by the right key) is refused by the broker.
    let expired = TokenFetcher {
        fixed: Some(secure.oidc.token(&client_id, -120)),
        recorder: Recorder::default(),
        ..context.clone()
    };
    let (md, _, report) = metadata_only_with(&config, expired.clone(), &expired.recorder);
    eprintln!("FACT OAUTHBEARER with an expired JWT\n{report}");
    assert_eq!(md.unwrap_err().rdkafka_error_code(), Some(RDKafkaErrorCode::BrokerTransportFailure));
    assert!(expired.recorder.find("SASL authentication error").is_some(), "the broker's refusal is reported");

    // A token for a principal without ACLs authenticates, then is denied.
    let stranger = common::unique("nobody");
    let nobody =
        TokenFetcher { fixed: Some(secure.oidc.token(&stranger, 600)), recorder: Recorder::default(), ..context };
    let c: StreamConsumer<TokenFetcher> = config
        .clone()
        .set("group.id", &round.group)
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(nobody.clone())
        .unwrap();
    let created = Instant::now();
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 1, Duration::from_secs(5)).await;
    eprintln!("FACT OAUTHBEARER as User:{stranger} without ACLs: recv errors\n{}", seen.summary());
    assert!(seen.records.is_empty());
    assert!(!seen.errors.is_empty());
}

/// librdkafka's own OIDC client (`sasl.oauthbearer.method=oidc`, built with
/// rdkafka's `curl` feature) against the harness's token endpoint. Without
/// that feature, creating such a client must fail (and does: the property
/// is rejected), which is what engage has to report clearly.
#[tokio::test]
async fn librdkafka_oidc_client_credentials() {
    let secure = SecureBroker::shared();
    let features = ClientConfig::new().create_native_config().unwrap().get("builtin.features").unwrap();
    let client_id = common::unique("oidc");
    let secret = format!("secret-{}", common::unique("x"));
    secure.oidc.add_client(&client_id, &secret);
    let mut config = oauth_config(secure);
    config
        .set("sasl.oauthbearer.method", "oidc")
        .set("sasl.oauthbearer.client.id", &client_id)
        .set("sasl.oauthbearer.client.secret", &secret)
        .set("sasl.oauthbearer.token.endpoint.url", secure.oidc.token_url())
        .set("sasl.oauthbearer.scope", "kafka");
    if !features.split(',').any(|f| f == "oidc") {
        let made: Result<StreamConsumer<Recorder>, _> =
            config.clone().set("group.id", "g").create_with_context(Recorder::default());
        let err = made.err().expect("an OIDC client without OIDC support");
        eprintln!(
            "FACT librdkafka without OIDC support ({features}): creating the client fails with {err:?} / \"{err}\""
        );
        return;
    }
    let round = Round::create(secure).await;
    secure.grant(&round.acls(&format!("User:{client_id}")));
    let (c, rec, created) = consumer(&config, &round.group);
    c.subscribe(&[&round.input]).unwrap();
    let seen = consume(&c, created, 5, Duration::from_secs(30)).await;
    eprintln!(
        "FACT librdkafka OIDC: {} records in {:.1?}, tokens issued {}\n  recv errors:\n{}  logs/callbacks:\n{}",
        seen.records.len(),
        created.elapsed(),
        secure.oidc.tokens_issued(),
        seen.summary(),
        out_of_band(&rec, created)
    );
    assert_eq!(seen.records, ["r0", "r1", "r2", "r3", "r4"], "{}", seen.summary());
}
