//! `engage run` end to end against a real Kafka-protocol broker (tansu,
//! started by the harness; see tests/common).

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
    produce(&producer, &topics.clickstream, Some(b"ann"), &click("a3", "ann", T0 + 200 * DAY, "page_view"), &[]).await;
    produce(&producer, &topics.clickstream, Some(b"ann"), &click("a4", "ann", T0 + 201 * DAY, "review"), &[]).await;
    // bob: one page view and one unknown type (accepted, no effect).
    produce(&producer, &topics.clickstream, Some(b"bob"), &click("b1", "bob", T0, "page_view"), &[]).await;
    produce(&producer, &topics.clickstream, Some(b"bob"), &click("b2", "bob", T0 + 1, "video_watch"), &[]).await;

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &topics.config(&broker, "[churn]\noverdue_gate = 0.0\n"));
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
