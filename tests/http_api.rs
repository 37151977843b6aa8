//! The HTTP endpoint of `engage run` beyond what tests/pipeline.rs checks:
//! the customer list with many customers in it, the API switched off, ids
//! that need URL encoding, methods other than GET and request bodies, and
//! /readyz while a partition restores.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics};
use engage::engine::event::InputTopic;
use engage::synth::Record;
use rdkafka::producer::{BaseRecord, Producer};
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

fn record(topic: InputTopic, value: Value) -> Record {
    let key = value["customer_id"].as_str().unwrap().as_bytes().to_vec();
    Record { topic, key, value: value.to_string().into_bytes(), ts_ms: 0 }
}

fn purchase(id: &str, customer: &str, ts: i64) -> Record {
    let v =
        json!({"event_id": id, "customer_id": customer, "type": "purchase", "ts": ts, "order_id": id, "amount": 20.0});
    record(InputTopic::Purchases, v)
}

fn page_view(id: &str, customer: &str, ts: i64) -> Record {
    record(InputTopic::Clickstream, json!({"event_id": id, "customer_id": customer, "type": "page_view", "ts": ts}))
}

/// A config for `topics`; `extra` is appended. HTTP listens on a port the
/// system picks ([`Engage::http_addr`] reads it back).
fn config(broker: &Broker, topics: &Topics, extra: &str) -> String {
    topics.config(broker, extra)
}

/// One raw HTTP/1.1 exchange; returns (status, body).
fn exchange(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{text:?}"));
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = common::http_get(addr, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|c| c["customer_id"].as_str().unwrap().to_string()).collect()
}

/// Polls until `check` holds or `timeout` passes; fails with `what`.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_list_puts_lowest_p_alive_first_and_honours_limit_up_to_its_cap() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let now = engage::clock::wall_clock_ms();
    let mut records = Vec::new();
    // r0..r4: two purchase days a day apart (cadence 1 day), then silent
    // for 7, 10, 13, 16 and 19 days: at risk (idle ≥ 3× cadence, under
    // churn.dormant_min_idle), the longer silent the lower P(alive).
    for k in 0..5 {
        let c = format!("r{k}");
        let idle = (7 + 3 * k) * DAY;
        records.push(purchase(&format!("{c}-1"), &c, now - idle - DAY));
        records.push(purchase(&format!("{c}-2"), &c, now - idle));
    }
    // d0: the same, 99 days ago: dormant.
    records.push(purchase("d0-1", "d0", now - 100 * DAY));
    records.push(purchase("d0-2", "d0", now - 99 * DAY));
    // More active customers than the list's cap of 10 000.
    let active = 10_050;
    for i in 0..active {
        records.push(page_view(&format!("a{i}"), &format!("a{i:05}"), now - 3_600_000));
    }
    common::feed(&broker, &topics, &records);
    let dir = tempfile::tempdir().unwrap();
    let extra = "sweep_interval = \"1s\"\nidle_grace = \"2s\"\n";
    let engage = Engage::start(dir.path(), &config(&broker, &topics, extra));
    let addr = engage.http_addr();
    // Health changes on the sweeps once everything is applied.
    eventually("5 at risk and 1 dormant", Duration::from_secs(90), || {
        common::http_get(&addr, "/v1/customers?health=at_risk")
            .is_some_and(|(s, b)| s == 200 && b.matches("\"customer_id\"").count() == 5)
            && common::http_get(&addr, "/v1/customers?health=dormant")
                .is_some_and(|(s, b)| s == 200 && b.contains("\"d0\""))
    });

    // health=at_risk is the default; lowest P(alive) first, across both
    // partitions.
    let at_risk = get_json(&addr, "/v1/customers");
    assert_eq!(ids(&at_risk), ids(&get_json(&addr, "/v1/customers?health=at_risk")));
    let p_alive: Vec<f64> = at_risk.as_array().unwrap().iter().map(|c| c["p_alive"].as_f64().unwrap()).collect();
    assert!(p_alive.windows(2).all(|w| w[0] < w[1]), "strictly increasing P(alive): {p_alive:?}\n{at_risk:#}");
    assert_eq!(ids(&at_risk), ["r4", "r3", "r2", "r1", "r0"], "the longest silent first: {p_alive:?}");
    let partitions: std::collections::BTreeSet<i64> =
        at_risk.as_array().unwrap().iter().map(|c| c["partition"].as_i64().unwrap()).collect();
    assert_eq!(partitions.len(), 2, "customers of both partitions in one list: {at_risk:#}");
    assert!(at_risk.as_array().unwrap().iter().all(|c| c["health"] == "at_risk"));

    // limit takes the first N of that order.
    assert_eq!(ids(&get_json(&addr, "/v1/customers?limit=2")), ["r4", "r3"]);
    assert_eq!(ids(&get_json(&addr, "/v1/customers?health=at_risk&limit=1")), ["r4"]);
    assert_eq!(get_json(&addr, "/v1/customers?limit=0"), json!([]));
    assert_eq!(ids(&get_json(&addr, "/v1/customers?health=dormant")), ["d0"]);
    // A limit that is not a count is a client error, not the default.
    for bad in ["abc", "-1", "2.5", "99999999999999999999999"] {
        let (status, body) = common::http_get(&addr, &format!("/v1/customers?limit={bad}")).unwrap();
        assert_eq!(status, 400, "limit={bad}: {body}");
    }

    // Without a limit: 100. Asked for more than 10 000: 10 000.
    assert_eq!(get_json(&addr, "/v1/customers?health=active").as_array().unwrap().len(), 100);
    let capped = get_json(&addr, "/v1/customers?health=active&limit=20000");
    assert_eq!(capped.as_array().unwrap().len(), 10_000, "the cap on limit");
    let exact = get_json(&addr, &format!("/v1/customers?health=active&limit={active}"));
    assert_eq!(exact.as_array().unwrap().len(), 10_000, "the cap, with {active} active customers held");
    drop(engage);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_customer_api_off_customer_endpoints_are_404_and_the_probes_still_answer() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let now = engage::clock::wall_clock_ms();
    common::feed(&broker, &topics, &[page_view("k1", "kim", now - DAY)]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(&broker, &topics, "").replace("[http]\n", "[http]\ncustomer_api = false\n");
    let engage = Engage::start(dir.path(), &config);
    let addr = engage.http_addr();
    // kim is held (her score change is out) but not readable over HTTP.
    assert_eq!(common::read_topic(&broker, &topics.scores, 1, Duration::from_secs(60)).len(), 1);
    for path in ["/v1/customers/kim", "/v1/customers", "/v1/customers?health=active"] {
        let (status, body) = common::http_get(&addr, path).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("http.customer_api") && !body.contains("kim"), "{path}: {body}");
    }
    assert_eq!(common::http_get(&addr, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(common::http_get(&addr, "/readyz").map(|r| r.0), Some(200));
    let (status, metrics) = common::http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("engage_records_in_total"), "{metrics}");
    drop(engage);
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_need_url_encoding_are_found_and_only_get_is_served() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let now = engage::clock::wall_clock_ms();
    let odd = "a b/ü?#%";
    common::feed(&broker, &topics, &[page_view("o1", odd, now - DAY), page_view("p1", "plain", now - DAY)]);
    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &config(&broker, &topics, ""));
    let addr = engage.http_addr();
    assert_eq!(common::read_topic(&broker, &topics.scores, 2, Duration::from_secs(60)).len(), 2);

    let found = get_json(&addr, "/v1/customers/a%20b%2F%C3%BC%3F%23%25");
    assert_eq!(found["customer_id"], odd);
    assert_eq!(found["active_days"], 1);
    // The list carries the id as it is, in JSON.
    assert!(ids(&get_json(&addr, "/v1/customers?health=active")).contains(&odd.to_string()));
    // The same id half-encoded is another path (the '/' splits it): not found.
    assert_eq!(common::http_get(&addr, "/v1/customers/a%20b/%C3%BC%3F%23%25").map(|r| r.0), Some(404));

    // Only GET is served: any other method is 405, body or not.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let request = format!(
            "{method} /v1/customers/plain HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let (status, body) = exchange(&addr, &request);
        assert_eq!(status, 405, "{method}: {body}");
    }
    let request =
        format!("POST /v1/customers HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
    assert_eq!(exchange(&addr, &request).0, 405);
    let request = format!(
        "GET /v1/customers/plain HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 16\r\nConnection: close\r\n\r\n{{\"seq\": 999999}}"
    );
    let (status, body) = exchange(&addr, &request);
    // A body on a GET is not read: the answer is the customer as held.
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["seq"], 1, "{body}");
    assert_eq!(get_json(&addr, "/v1/customers/plain")["seq"], 1);
    drop(engage);
}

/// A partition's customers are restored from the changelog before its
/// first record is processed; meanwhile `/readyz` is 503 (queries would see
/// part of the state), and once the restore is done it is 200 and every
/// restored customer is served. The changelog is large enough (300 000
/// customers) that the restore takes a moment to watch; the 503 says it is
/// restoring.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_a_partition_restores_and_the_restored_state_is_served_after() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 1).await;
    let changelog = format!("{}.engage-state", topics.group);
    broker.create_topic(&changelog, 1).await;
    let now = engage::clock::wall_clock_ms();
    let customers = 300_000;
    {
        use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> = broker
            .client_config()
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        let mut state = engage::engine::state::CustomerState::default();
        state.first_seen = now - 10 * DAY;
        state.last_seen = now - DAY;
        state.active_days = 3;
        for i in 0..customers {
            let id = format!("c{i:06}");
            let value = prost::Message::encode_to_vec(&state.to_proto(&id));
            let mut r = BaseRecord::<str, [u8]>::to(&changelog).key(&id).payload(&value);
            while let Err((_, back)) = producer.send(r) {
                r = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let engage = Engage::start(dir.path(), &config(&broker, &topics, ""));
    let addr = engage.http_addr();
    // /readyz until it is 200: never before the restore is logged done.
    let restored = |log: &str| log.contains("state restored");
    let mut not_ready = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "not ready within 120 s: {not_ready:?}\n{}", engage.log());
        let before = restored(&engage.log());
        match common::http_get(&addr, "/readyz") {
            Some((200, body)) => {
                assert!(restored(&engage.log()), "200 ({body}) before the restore finished:\n{}", engage.log());
                break;
            }
            // (Just after the log line the joined flag may not be set yet.)
            Some((status, body)) if !before => not_ready.push((status, body)),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!not_ready.is_empty() && not_ready.iter().all(|a| a.0 == 503), "{not_ready:?}");
    assert!(not_ready.iter().any(|a| a.1.contains("restoring 1 partition")), "{not_ready:?}");
    // Ready means restored: every customer is there.
    let log = strip_ansi(&engage.log());
    assert!(log.contains(&format!("records={customers} customers={customers} unreadable=0")), "{log}");
    let last = get_json(&addr, &format!("/v1/customers/c{:06}", customers - 1));
    assert_eq!((last["active_days"].as_i64(), last["last_seen"].as_i64()), (Some(3), Some(now - DAY)));
    drop(engage);
}

/// The log without its colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
