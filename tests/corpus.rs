//! The bad-input corpus (`tests/data/bad-input/`, made by its
//! `generate.py`) through the real broker: every malformed or hostile
//! record is dead-lettered with the reason its case names, or processed
//! when legitimate; the good events interleaved with them all count; and
//! the processor never stops (docs/model.md "Events").

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics, produce, read_topic};
use serde_json::Value;

struct Case {
    name: String,
    topic: String,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
    expect: String,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad-input");
    let manifest = std::fs::read_to_string(dir.join("cases.jsonl")).unwrap();
    manifest
        .lines()
        .map(|line| {
            let c: Value = serde_json::from_str(line).unwrap();
            let key = match (&c["key"], c["key_hex"].as_str()) {
                (Value::String(k), _) => Some(k.as_bytes().to_vec()),
                (_, Some(hex)) => {
                    Some((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect())
                }
                _ => None,
            };
            let headers = c["headers"]
                .as_object()
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec())).collect())
                .unwrap_or_default();
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                topic: c["topic"].as_str().unwrap().to_string(),
                key,
                headers,
                value: std::fs::read(dir.join(c["file"].as_str().unwrap())).unwrap(),
                expect: c["expect"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_corpus_covers_every_reason_code_and_both_topics_and_formats() {
    let cases = corpus();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let expected: BTreeSet<&str> = cases.iter().map(|c| c.expect.as_str()).collect();
    for reason in engage::decode::Reason::ALL {
        assert!(expected.contains(reason.as_str()), "no case for {reason}");
    }
    let protobuf = |c: &&Case| c.headers.iter().any(|(k, v)| k == "content-type" && v.ends_with(b"protobuf"));
    for topic in ["clickstream", "purchases"] {
        assert!(cases.iter().filter(|c| c.topic == topic).any(|c| protobuf(&c)), "{topic} protobuf");
        assert!(cases.iter().filter(|c| c.topic == topic).any(|c| !protobuf(&c)), "{topic} JSON");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_record_is_dead_lettered_with_its_reason_and_every_good_event_counts() {
    let cases = corpus();
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let p = broker.producer();
    let topic_name = |t: &str| if t == "purchases" { topics.purchases.clone() } else { topics.clickstream.clone() };

    // Each case between good events of 20 good customers, on both topics.
    let mut good = 0;
    for (i, case) in cases.iter().enumerate() {
        for j in 0..3 {
            let customer = format!("good-{}", (i + j) % 20);
            let (topic, body) = if j == 2 {
                let body =
                    format!(r#"{{"event_id":"g-{i}-{j}","customer_id":"{customer}","type":"purchase","amount":12.5}}"#);
                (&topics.purchases, body)
            } else {
                let body = format!(r#"{{"event_id":"g-{i}-{j}","customer_id":"{customer}","type":"product_view"}}"#);
                (&topics.clickstream, body)
            };
            produce(&p, topic, Some(customer.as_bytes()), body.as_bytes(), &[]).await;
            good += 1;
        }
        let mut headers: Vec<(&str, &[u8])> = case.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        headers.push(("corpus-case", case.name.as_bytes()));
        produce(&p, &topic_name(&case.topic), case.key.as_deref(), &case.value, &headers).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let config = common::with_api(&topics.config(&broker, "\n[input]\nmax_record_bytes = 4096\n"));
    let mut engage = Engage::start(dir.path(), &config);
    let (addr, api) = (engage.http_addr(), engage.api_addr());

    let bad: BTreeMap<&str, &str> = cases
        .iter()
        .filter(|c| !["ok", "unknown_type", "duplicate"].contains(&c.expect.as_str()))
        .map(|c| (c.name.as_str(), c.expect.as_str()))
        .collect();
    let dead = read_topic(&broker, &topics.dlq, bad.len(), Duration::from_secs(90));
    let mut got = BTreeMap::new();
    for d in &dead {
        let name = String::from_utf8(d.header("corpus-case").expect("original headers kept").to_vec()).unwrap();
        let reason = String::from_utf8(d.header("engage.error").unwrap().to_vec()).unwrap();
        let case = cases.iter().find(|c| c.name == name).unwrap();
        assert_eq!(d.value, case.value, "{name}: the original bytes");
        got.insert(name, reason);
    }
    let got: BTreeMap<&str, &str> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, bad, "dead letters by case (name → reason)");

    // Every record read; the legitimate ones applied; nothing else.
    let ok = cases.iter().filter(|c| c.expect == "ok").count();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = common::http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default();
        if sum(&m, "engage_records_in_total") as usize >= good + cases.len() || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sum(&metrics, "engage_records_in_total") as usize, good + cases.len());
    assert_eq!(sum(&metrics, "engage_dead_letters_total") as usize, bad.len());
    assert_eq!(sum(&metrics, "engage_duplicates_total"), 1.0);
    assert_eq!(sum(&metrics, "engage_unknown_event_types_total"), 1.0);
    let applied = sum(&metrics, "engage_events_total")
        - sum(&metrics, "engage_duplicates_total")
        - sum(&metrics, "engage_unknown_event_types_total");
    assert_eq!(applied as usize, good + ok, "every good event and every legitimate case applied");
    for c in cases.iter().filter(|c| c.expect == "ok") {
        let id = String::from_utf8(c.key.clone().unwrap()).unwrap();
        assert_eq!(common::api_get(&api, &format!("/v1/customers/{id}")).map(|r| r.0), Some(200), "{}", c.name);
    }
    let mut purchases = 0;
    for g in 0..20 {
        let (status, body) = common::api_get(&api, &format!("/v1/customers/good-{g}")).unwrap();
        assert_eq!(status, 200, "good-{g}");
        let v: Value = serde_json::from_str(&body).unwrap();
        purchases += v["purchase_days"].as_u64().unwrap();
    }
    assert!(purchases >= 20, "each good customer bought at least once");

    // Never restarted, never stopped.
    assert!(engage.child.try_wait().unwrap().is_none(), "engage exited:\n{}", engage.log());
    assert!(!engage.log().contains("panicked"), "{}", engage.log());
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0), "{}", engage.log());
}
