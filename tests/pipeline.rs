//! `engage run` end to end against Apache Kafka (the shared test broker,
//! or one the harness starts; see tests/common).

mod common;

use std::time::Duration;

use common::{Broker, Engage, Topics, committed, produce, read_topic};
use prost::Message as _;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
/// 2025-01-01T00:00:00Z: in the past, so no event is "from the future".
const T0: i64 = 1_735_689_600_000;

fn click(id: &str, customer: &str, ts: i64, kind: &str) -> Vec<u8> {
    json!({"event_id": id, "customer_id": customer, "type": kind, "ts": ts}).to_string().into_bytes()
}

fn purchase(id: &str, customer: &str, ts: i64, amount: f64) -> Vec<u8> {
    json!({"event_id": id, "customer_id": customer, "type": "purchase", "ts": ts, "order_id": id, "amount": amount})
        .to_string()
        .into_bytes()
}

fn by_customer(records: &[common::Received], customer: &str) -> Vec<Value> {
    records.iter().filter(|r| r.key.as_deref() == Some(customer.as_bytes())).map(|r| r.json()).collect()
}

/// One bad record: (topic, key, value, headers, expected reason code).
type BadCase<'a> = (&'a str, Option<&'a [u8]>, Vec<u8>, Vec<(&'a str, &'a [u8])>, &'a str);

#[tokio::test(flavor = "multi_thread")]
async fn events_become_score_changes_and_alerts_keyed_by_customer_with_seq() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let producer = broker.producer();
    // ann: buys on day 0 and day 1, then comes back on day 200. With the
    // overdue gate off, her low P(alive) on return (x = 1, t_x = 1/7 week,
    // T ≈ 28.6 weeks) marks her at risk; her next event reactivates her.
    produce(&producer, &topics.purchases, Some(b"ann"), &purchase("a1", "ann", T0, 40.0), &[]).await;
    produce(&producer, &topics.purchases, Some(b"ann"), &purchase("a2", "ann", T0 + DAY, 25.0), &[]).await;
    // bob: one page view and one unknown type (accepted, no effect).
    produce(&producer, &topics.clickstream, Some(b"bob"), &click("b1", "bob", T0, "page_view"), &[]).await;
    produce(&producer, &topics.clickstream, Some(b"bob"), &click("b2", "bob", T0 + 1, "video_watch"), &[]).await;

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, "[churn]\noverdue_gate = 0.0\n"));
    // Her story depends on her purchases being applied before her return:
    // it is sent only once they are in.
    assert_eq!(read_topic(&broker, &topics.scores, 3, Duration::from_secs(60)).len(), 3);
    produce(&producer, &topics.clickstream, Some(b"ann"), &click("a3", "ann", T0 + 200 * DAY, "page_view"), &[]).await;
    produce(&producer, &topics.clickstream, Some(b"ann"), &click("a4", "ann", T0 + 201 * DAY, "review"), &[]).await;
    let scores = read_topic(&broker, &topics.scores, 5, Duration::from_secs(60));
    let alerts = read_topic(&broker, &topics.alerts, 2, Duration::from_secs(30));
    drop(engage);

    let ann = by_customer(&scores, "ann");
    let bob = by_customer(&scores, "bob");
    assert_eq!(bob.len(), 1, "one score for bob's page view; the unknown type publishes nothing");
    assert_eq!(bob[0]["seq"], 1);
    assert_eq!(bob[0]["previous_score"], Value::Null);
    assert_eq!(ann.len(), 4, "{ann:#?}");
    assert_eq!(ann[0]["previous_score"], Value::Null);
    assert_eq!(ann[1]["stage"], "integration", "second purchase day");
    assert_eq!(ann[2]["health"], "at_risk");
    assert_eq!(ann[3]["health"], "active");
    let ann_alerts = by_customer(&alerts, "ann");
    let kinds: Vec<&str> = ann_alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["at_risk", "reactivated"]);
    assert_eq!(ann_alerts[0]["reasons"][0]["signal"], "p_alive");
    assert!(ann_alerts[0]["p_alive"].as_f64().unwrap() < 0.5);
    assert_eq!(ann_alerts[1]["idle_days"], 1.0);
    // One seq per customer across both topics, without gaps.
    let mut seqs: Vec<i64> = ann.iter().chain(&ann_alerts).map(|m| m["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    let first = scores.iter().find(|r| r.key.as_deref() == Some(&b"bob"[..])).unwrap();
    assert_eq!(first.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(first.header("engage.schema.version"), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_case_is_dead_lettered_with_its_reason_and_original_bytes() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let far_future = T0 + 100_000 * DAY;
    let oversized = json!({"event_id": "x", "customer_id": "c", "type": "search", "pad": "y".repeat(3000)}).to_string();
    // (topic, key, value, headers, expected reason), in the order produced.
    let click_t = topics.clickstream.clone();
    let buy_t = topics.purchases.clone();
    let cases: Vec<BadCase<'_>> = vec![
        (&click_t, Some(b"c"), b"{not json".to_vec(), vec![("trace-id", b"t-1")], "malformed"),
        (&click_t, Some(b"c"), br#"{"event_id":"e","customer_id":"c","type":5}"#.to_vec(), vec![], "invalid_field"),
        (&click_t, None, click("e", "c", T0, "search"), vec![], "missing_key"),
        (&click_t, Some(b"d"), click("e", "c", T0, "search"), vec![], "key_mismatch"),
        (&click_t, Some(b"c"), br#"{"event_id":"e","type":"search"}"#.to_vec(), vec![], "missing_customer_id"),
        (
            &click_t,
            Some(b"c"),
            br#"{"event_id":"","customer_id":"c","type":"search"}"#.to_vec(),
            vec![],
            "missing_event_id",
        ),
        (
            &buy_t,
            Some(b"c"),
            br#"{"event_id":"e","customer_id":"c","type":"chargeback","amount":1}"#.to_vec(),
            vec![],
            "unknown_purchase_type",
        ),
        (
            &buy_t,
            Some(b"c"),
            br#"{"event_id":"e","customer_id":"c","type":"purchase","amount":-5}"#.to_vec(),
            vec![],
            "invalid_amount",
        ),
        (
            &buy_t,
            Some(b"c"),
            br#"{"event_id":"e","customer_id":"c","type":"purchase","amount":"NaN"}"#.to_vec(),
            vec![],
            "invalid_amount",
        ),
        (
            &buy_t,
            Some(b"c"),
            br#"{"event_id":"e","customer_id":"c","type":"purchase","amount":1e15}"#.to_vec(),
            vec![],
            "invalid_amount",
        ),
        (&click_t, Some(b"c"), click("e", "c", far_future, "search"), vec![], "future_timestamp"),
        (
            &click_t,
            Some(b"c"),
            br#"{"event_id":"e","customer_id":"c","type":"search","ts":"noon"}"#.to_vec(),
            vec![],
            "invalid_timestamp",
        ),
        (&click_t, Some(b"c"), oversized.into_bytes(), vec![], "oversized"),
        (&click_t, Some(b"c"), vec![0xff, 0x01, 0x02], vec![("content-type", b"application/x-protobuf")], "malformed"),
        (&click_t, Some(b"c"), vec![1, 0, 0, 0, 1, 0], vec![("content-type", b"application/x-protobuf")], "malformed"),
        (
            &click_t,
            Some(b"c"),
            click("e", "c", T0, "search"),
            vec![("content-type", b"text/csv")],
            "unsupported_content_type",
        ),
        (&click_t, Some(b"c"), b"\xff\xfe not utf-8".to_vec(), vec![], "malformed"),
    ];
    for (topic, key, value, headers, _) in &cases {
        produce(&p, topic, *key, value, headers).await;
    }
    // Good events after the bad ones are still processed.
    produce(&p, &topics.clickstream, Some(b"good"), &click("g1", "good", T0, "page_view"), &[]).await;
    produce(&p, &topics.purchases, Some(b"good"), &purchase("g2", "good", T0 + 1000, 10.0), &[]).await;

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, "[input]\nmax_record_bytes = 2048\n"));
    let dlq = read_topic(&broker, &topics.dlq, cases.len(), Duration::from_secs(60));
    let scores = read_topic(&broker, &topics.scores, 2, Duration::from_secs(30));
    drop(engage);

    assert_eq!(dlq.len(), cases.len());
    for (topic, key, value, headers, reason) in &cases {
        let source_topic: &[u8] = topic.as_bytes();
        let found = dlq
            .iter()
            .find(|d| {
                d.value == *value
                    && d.key.as_deref() == *key
                    && d.header("engage.source.topic") == Some(source_topic)
                    && headers.iter().all(|(k, v)| d.header(k) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no dead letter for {reason}: {:?}", String::from_utf8_lossy(value)));
        assert_eq!(found.header("engage.error"), Some(reason.as_bytes()), "{}", String::from_utf8_lossy(value));
        assert_eq!(found.key.as_deref(), *key, "original key kept");
        for (k, v) in headers {
            assert_eq!(found.header(k), Some(*v), "original header {k} kept");
        }
        assert!(!found.header("engage.error.detail").unwrap().is_empty());
        assert!(found.header("engage.source.partition").is_some() && found.header("engage.source.offset").is_some());
    }
    assert_eq!(by_customer(&scores, "good").len(), 2, "good events after bad ones are processed");
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_inputs_and_outputs() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let click = engage::proto::ClickEvent {
        event_id: "e1".into(),
        customer_id: "pat".into(),
        r#type: "share".into(),
        ts: Some(T0),
        ..Default::default()
    };
    produce(&p, &topics.clickstream, Some(b"pat"), &click.encode_to_vec(), &[]).await;
    let buy = engage::proto::PurchaseEvent {
        event_id: "e2".into(),
        customer_id: "pat".into(),
        r#type: "purchase".into(),
        ts: Some(T0 + 60_000),
        amount: 99.0,
        ..Default::default()
    };
    // Confluent framing: magic 0, schema id 42, message index [0].
    let mut framed = vec![0, 0, 0, 0, 42, 0];
    framed.extend(buy.encode_to_vec());
    produce(&p, &topics.purchases, Some(b"pat"), &framed, &[]).await;
    // A JSON record on the protobuf topic, announced by its header.
    produce(
        &p,
        &topics.clickstream,
        Some(b"pat"),
        &super_click("e3", "pat", T0 + 120_000),
        &[("content-type", b"application/json")],
    )
    .await;

    let extra = "[input]\nclickstream_format = \"protobuf\"\npurchases_format = \"protobuf\"\n\
                 [output]\nscores_format = \"protobuf\"\nalerts_format = \"protobuf\"\n";
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, extra));
    let scores = read_topic(&broker, &topics.scores, 3, Duration::from_secs(60));
    drop(engage);
    let decoded: Vec<engage::proto::ScoreChanged> = scores
        .iter()
        .map(|r| engage::proto::ScoreChanged::decode(&r.value[..]).expect("protobuf ScoreChanged"))
        .collect();
    let mut seqs: Vec<u64> = decoded.iter().map(|s| s.seq).collect();
    seqs.sort();
    assert_eq!(seqs, [1, 2, 3]);
    // The last message reflects all three events, whatever order the two
    // topics were consumed in.
    let last = decoded.iter().max_by_key(|s| s.seq).unwrap();
    assert!(last.dimensions.as_ref().unwrap().transaction > 0.0, "the framed purchase was applied");
    assert!(last.expected_purchases_90d.is_some(), "value signals once there is a purchase");
    assert_eq!(scores[0].header("content-type"), Some(&b"application/x-protobuf"[..]));
    assert_eq!(scores[0].header("engage.message.type"), Some(&b"engage.v1.ScoreChanged"[..]));
}

/// Alerts in protobuf, end to end: quinn buys on days 0 and 1 and comes
/// back on day 200 (protobuf inputs); with the overdue gate off her low
/// P(alive) on return raises an at-risk `ChurnAlert`, which decodes.
#[tokio::test(flavor = "multi_thread")]
async fn churn_alerts_in_protobuf() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let buy = |id: &str, ts: i64| {
        engage::proto::PurchaseEvent {
            event_id: id.into(),
            customer_id: "quinn".into(),
            r#type: "purchase".into(),
            ts: Some(ts),
            amount: 30.0,
            ..Default::default()
        }
        .encode_to_vec()
    };
    produce(&p, &topics.purchases, Some(b"quinn"), &buy("q1", T0), &[]).await;
    produce(&p, &topics.purchases, Some(b"quinn"), &buy("q2", T0 + DAY), &[]).await;
    let back = engage::proto::ClickEvent {
        event_id: "q3".into(),
        customer_id: "quinn".into(),
        r#type: "page_view".into(),
        ts: Some(T0 + 200 * DAY),
        ..Default::default()
    };
    produce(&p, &topics.clickstream, Some(b"quinn"), &back.encode_to_vec(), &[]).await;

    let extra = "[input]\nclickstream_format = \"protobuf\"\npurchases_format = \"protobuf\"\n\
                 [output]\nalerts_format = \"protobuf\"\n[churn]\noverdue_gate = 0.0\n";
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, extra));
    let alerts = read_topic(&broker, &topics.alerts, 1, Duration::from_secs(60));
    drop(engage);
    let first = &alerts[0];
    let alert = engage::proto::ChurnAlert::decode(&first.value[..]).expect("protobuf ChurnAlert");
    assert_eq!((alert.customer_id.as_str(), alert.kind), ("quinn", engage::proto::AlertKind::AtRisk as i32));
    assert_eq!(alert.alert_id, format!("quinn:{}", alert.seq));
    assert_eq!(alert.event_time, T0 + 200 * DAY, "raised by her return");
    assert_eq!(alert.reasons[0].signal, "p_alive");
    assert!(alert.p_alive < 0.5 && alert.p_alive < alert.reasons[0].threshold, "{alert:?}");
    assert_eq!(first.key.as_deref(), Some(&b"quinn"[..]));
    assert_eq!(first.header("content-type"), Some(&b"application/x-protobuf"[..]));
    assert_eq!(first.header("engage.message.type"), Some(&b"engage.v1.ChurnAlert"[..]));
}

fn super_click(id: &str, customer: &str, ts: i64) -> Vec<u8> {
    click(id, customer, ts, "add_to_cart")
}

/// Produces `n` page views, each for its own customer, so that every input
/// record yields exactly one score change: counting score changes per
/// customer then shows whether a record was skipped or processed twice.
async fn one_event_per_customer(broker: &Broker, topics: &Topics, from: usize, n: usize) {
    let p = broker.producer();
    for i in from..from + n {
        let c = format!("u{i:05}");
        produce(
            &p,
            &topics.clickstream,
            Some(c.as_bytes()),
            &click(&format!("e{i}"), &c, T0 + i as i64, "page_view"),
            &[],
        )
        .await;
    }
}

fn assert_each_customer_scored_once(scores: &[common::Received], n: usize) {
    let mut counts = std::collections::BTreeMap::<Vec<u8>, usize>::new();
    for s in scores {
        *counts.entry(s.key.clone().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> =
        counts.iter().filter(|(_, c)| **c > 1).map(|(k, _)| String::from_utf8_lossy(k).to_string()).collect();
    assert!(twice.is_empty(), "processed twice: {twice:?}");
    assert_eq!(counts.len(), n, "every record processed, none skipped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_from_committed_offsets_without_skipping_or_repeating() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    one_event_per_customer(&broker, &topics, 0, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let mut engage = Engage::start(dir.path(), &topics.config(&broker, ""));
    let first = read_topic(&broker, &topics.scores, 300, Duration::from_secs(60));
    assert_eq!(first.len(), 300);
    let (code, _) = engage.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{}", engage.log());
    assert_eq!(committed(&broker, &topics.group, &topics.clickstream, 2), 300, "all processed offsets committed");

    one_event_per_customer(&broker, &topics, 300, 200).await;
    let _engage = Engage::start(dir.path(), &topics.config(&broker, ""));
    let all = read_topic(&broker, &topics.scores, 500, Duration::from_secs(60));
    assert_each_customer_scored_once(&all, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_zero_within_the_deadline_with_everything_processed_committed() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let total = 20_000;
    one_event_per_customer(&broker, &topics, 0, total).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.config(&broker, "");
    let mut engage = Engage::start(dir.path(), &config);
    let addr = engage.http_addr();
    // Signal while the input is still being consumed: as soon as the
    // metrics show records read, and fewer than were produced.
    let at_signal = common::wait_for_records_read(&addr, &engage) as usize;
    let (code, took) = engage.terminate(Duration::from_secs(30));
    assert!(at_signal < total, "the signal came after all {total} records were read: nothing was under load");
    assert_eq!(code, Some(0), "{}", engage.log());
    assert!(took < Duration::from_secs(20), "within run.shutdown_deadline: {took:?}");
    // Everything read before the exit was committed: the final summary's
    // record count equals the committed offsets.
    let log = engage.log();
    let records = common::summary_records(&log);
    let done = committed(&broker, &topics.group, &topics.clickstream, 2);
    assert_eq!(done, records, "consumed {records} records but committed {done}");
    assert!(done < total as i64, "stopped before the end of the input");
    // Every committed record has its output on the topic.
    let delivered = read_topic(&broker, &topics.scores, done as usize, Duration::from_secs(10));
    assert!(delivered.len() as i64 >= done, "committed {done} but only {} outputs", delivered.len());
    // A restart finishes the rest, and nothing is processed twice.
    let _engage = Engage::start(dir.path(), &config);
    let all = read_topic(&broker, &topics.scores, total, Duration::from_secs(90));
    assert_each_customer_scored_once(&all, total);
}

/// SASL credentials pass through to librdkafka, and the password appears in
/// no log line, at any level, in either log format, even when the broker
/// refuses the connection and every client reports errors.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_logs_even_at_debug_level() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-hunter2-password";
    let config = topics.config(&broker, "").replace(
        "[kafka]",
        &format!(
            "[kafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
             \"sasl.username\" = \"engage\"\n\"sasl.password\" = \"{secret}\"\n\"debug\" = \"security,broker\""
        ),
    );
    for format in ["text", "json"] {
        let args = ["--log-format", format];
        let mut engage = Engage::start_with(dir.path(), &config, env!("CARGO_BIN_EXE_engage"), &args, "debug");
        // The broker does not speak SASL: start-up fails (or hangs in
        // retries); either way, give every client time to log.
        let exited = engage.wait_for_log("error", Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(2));
        let _ = engage.terminate(Duration::from_secs(20));
        let log = engage.log();
        assert!(exited, "{format}: expected the connection errors to be logged:\n{log}");
        assert!(!log.contains(secret), "{format}: the password was logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_non_co_partitioned_inputs_and_invalid_config() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let odd = common::unique("odd");
    broker.create_topic(&odd, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics
        .config(&broker, "")
        .replace(&format!("purchases = \"{}\"", topics.purchases), &format!("purchases = \"{odd}\""));
    let mut engage = Engage::start(dir.path(), &config);
    let status = engage.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    assert!(engage.wait_for_log("not co-partitioned", Duration::from_secs(5)), "{}", engage.log());
    assert!(engage.log().contains("has 2 partitions") && engage.log().contains("has 3"), "{}", engage.log());

    let mut engage = Engage::start(dir.path(), &topics.config(&broker, "max_in_flite = 5\n"));
    assert!(!engage.wait_exit(Duration::from_secs(60)).success());
    assert!(engage.wait_for_log("max_in_flite", Duration::from_secs(5)), "{}", engage.log());

    let secret = topics
        .config(&broker, "")
        .replace("[kafka]", "[kafka]\n\"sasl.password\" = \"hunter2\"\n\"enable.idempotence\" = false");
    let mut engage = Engage::start(dir.path(), &secret);
    assert!(!engage.wait_exit(Duration::from_secs(60)).success());
    assert!(engage.wait_for_log("kafka.enable.idempotence", Duration::from_secs(5)), "{}", engage.log());
    assert!(!engage.log().contains("hunter2"), "secrets never printed");
}

#[tokio::test(flavor = "multi_thread")]
async fn sweeps_flag_silent_customers_on_stream_time_then_on_the_wall_clock_when_idle() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let now = engage::clock::wall_clock_ms();
    let day0 = now - 40 * DAY;
    // quiet: active on 4 consecutive days (cadence 1 d), 40 days ago.
    for d in 0..4 {
        produce(
            &p,
            &topics.clickstream,
            Some(b"quiet"),
            &click(&format!("q{d}"), "quiet", day0 + d * DAY, "page_view"),
            &[],
        )
        .await;
    }
    // busy: keeps stream time moving to day 6 (quiet idle 3 d = 3× cadence).
    produce(&p, &topics.clickstream, Some(b"busy"), &click("b1", "busy", day0 + 6 * DAY, "page_view"), &[]).await;
    let extra = "sweep_interval = \"1s\"\nidle_grace = \"3s\"\n";
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, extra));
    let alerts = read_topic(&broker, &topics.alerts, 2, Duration::from_secs(60));
    drop(engage);
    let quiet = by_customer(&alerts, "quiet");
    let kinds: Vec<&str> = quiet.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["at_risk", "dormant"], "{quiet:#?}");
    // The first on stream time (busy's latest event), the second once the
    // partition idled and stream time followed the wall clock (~37 days idle).
    assert_eq!(quiet[0]["event_time"].as_i64(), Some(day0 + 6 * DAY));
    assert!(quiet[1]["event_time"].as_i64().unwrap() >= now);
    assert!(quiet[1]["idle_days"].as_f64().unwrap() > 36.9);
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_idle_past_retention_are_evicted_and_tombstoned_in_the_changelog() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let now = engage::clock::wall_clock_ms();
    produce(&p, &topics.clickstream, Some(b"old"), &click("o1", "old", now - 500 * DAY, "page_view"), &[]).await;
    produce(&p, &topics.clickstream, Some(b"new"), &click("n1", "new", now - DAY, "page_view"), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, "sweep_interval = \"1s\"\n"));
    assert!(engage.wait_for_log("retention: evicted", Duration::from_secs(60)), "{}", engage.log());
    // Both were written once; then "old" was tombstoned (null value).
    let changelog = read_topic(&broker, &format!("{}.engage-state", topics.group), 3, Duration::from_secs(30));
    drop(engage);
    let last = |id: &[u8]| changelog.iter().rev().find(|r| r.key.as_deref() == Some(id)).cloned().unwrap();
    assert!(last(b"old").value.is_empty(), "tombstone for the evicted customer");
    assert!(!last(b"new").value.is_empty());
}

/// Every `engage_…` metric name a rules file or dashboard mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("engage_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // "engage_" inside a longer word (e.g. a label value) is not a name.
        let preceded = rest[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The value of one sample line in a Prometheus text exposition.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn http_probes_metrics_and_the_customer_api_reflect_the_state() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let p = broker.producer();
    let now = engage::clock::wall_clock_ms();
    produce(&p, &topics.clickstream, Some(b"kim"), &click("k1", "kim", now - 3 * DAY, "review"), &[]).await;
    produce(&p, &topics.purchases, Some(b"kim"), &purchase("k2", "kim", now - 2 * DAY, 80.0), &[]).await;
    produce(&p, &topics.clickstream, Some(b"kim"), b"{broken", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &common::with_api(&topics.config(&broker, "")));
    let (addr, api) = (engage.http_addr(), engage.api_addr());
    let scores = read_topic(&broker, &topics.scores, 2, Duration::from_secs(60));
    assert_eq!(scores.len(), 2);

    assert_eq!(common::http_get(&addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(common::http_get(&addr, "/readyz").map(|r| r.0), Some(200), "assigned and restored");
    let (status, body) = common::api_get(&api, "/v1/customers/kim").unwrap();
    assert_eq!(status, 200, "{body}");
    let kim: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((kim["purchase_days"].as_i64(), kim["active_days"].as_i64()), (Some(1), Some(2)));
    assert_eq!(kim["seq"], 2);
    assert!(kim["dimensions"]["social"].as_f64().unwrap() > 0.0 && kim["p_alive"] == 1.0);
    assert_eq!(common::api_get(&api, "/v1/customers/nobody").map(|r| r.0), Some(404));
    let (status, body) = common::api_get(&api, "/v1/customers?health=at_risk&limit=5").unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"customers":[],"missing_partitions":[]}"#));
    assert_eq!(common::api_get(&api, "/v1/customers?health=sad").map(|r| r.0), Some(400));

    // Counters move as the records did: 3 read, 1 dead letter as malformed;
    // the lag reaches 0 once everything is committed; the census sees kim.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = common::http_get(&addr, "/metrics").unwrap().1;
        let settled = sample(&m, "engage_records_in_total{topic=\"clickstream\"}") >= 2.0
            && m.lines().filter(|l| l.starts_with("engage_consumer_lag{")).count() == 2
            && m.lines().filter(|l| l.starts_with("engage_consumer_lag{")).all(|l| l.ends_with(" 0"))
            && sample(&m, "engage_customers{partition=\"0\"}") == 1.0
            // The census runs every second: wait for one that has kim.
            && sample(&m, "engage_customers_by_health{health=\"active\"}") == 1.0
            && m.contains("engage_sweep_duration_seconds_count");
        if settled || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(sample(&metrics, "engage_records_in_total{topic=\"clickstream\"}"), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, "engage_records_in_total{topic=\"purchases\"}"), 1.0);
    assert_eq!(sample(&metrics, "engage_events_total{topic=\"clickstream\",type=\"review\"}"), 1.0);
    assert_eq!(sample(&metrics, "engage_events_total{topic=\"purchases\",type=\"purchase\"}"), 1.0);
    assert_eq!(sample(&metrics, "engage_dead_letters_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(sample(&metrics, "engage_outputs_total{kind=\"score\"}"), 2.0);
    assert_eq!(sample(&metrics, "engage_end_to_end_latency_seconds_count"), 2.0, "one per score change");
    assert_eq!(sample(&metrics, "engage_processing_latency_seconds_count"), 2.0);
    assert_eq!(sample(&metrics, "engage_assigned_partitions"), 1.0);
    assert_eq!(sample(&metrics, "engage_ready"), 1.0);
    assert_eq!(sample(&metrics, "engage_customers{partition=\"0\"}"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "engage_customers_by_health{health=\"active\"}"), 1.0);
    // Her stage depends on which topic's record came first (the stage is
    // kept as of the last evaluation); she is counted in exactly one.
    let stages: f64 = ["initiation", "integration", "intelligence", "value_creation"]
        .iter()
        .map(|stage| sample(&metrics, &format!("engage_customers_by_stage{{stage=\"{stage}\"}}")))
        .sum();
    assert_eq!(stages, 1.0, "{metrics}");
    let lags: Vec<&str> = metrics.lines().filter(|l| l.starts_with("engage_consumer_lag{")).collect();
    assert_eq!(lags.len(), 2, "one per input partition: {metrics}");
    assert!(lags.iter().all(|l| l.ends_with(" 0")), "lag reaches 0: {lags:?}");
    assert!(sample(&metrics, "engage_process_resident_memory_bytes") > 1e6);
    assert!(sample(&metrics, "engage_rebalances_total{kind=\"assign\"}") >= 1.0);
    // The offsets (lag 0) were committed only after kim's state was flushed.
    assert!(sample(&metrics, "engage_changelog_records_written_total") >= 1.0, "{metrics}");
    // Every metric the alert rules and the dashboard query is one this
    // instance exports.
    for file in ["deploy/prometheus/alerts.yaml", "deploy/grafana/engage.json"] {
        let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 6, "{file}: {names:?}");
        for name in names {
            let exported = metrics.lines().any(|l| {
                // A histogram's base name is exported as _bucket/_sum/_count.
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| ["{", " ", "_bucket{", "_sum", "_count"].iter().any(|s| rest.starts_with(s)))
            });
            assert!(exported, "{file} uses {name}, which engage does not export:\n{metrics}");
        }
    }
    assert!(metrics.contains("engage_restore_duration_seconds"), "{metrics}");
    drop(engage);
}
