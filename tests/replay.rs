//! `engage replay` end to end: the binary over a JSONL file.

use std::path::Path;
use std::process::Command;

use engage::replay::read_jsonl;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn line(v: Value) -> String {
    v.to_string()
}

fn click(id: &str, customer: &str, day: f64, kind: &str) -> String {
    line(json!({"event_id": id, "customer_id": customer, "type": kind, "ts": T0 + (day * DAY as f64) as i64}))
}

fn purchase(id: &str, customer: &str, day: i64, amount: f64) -> String {
    line(json!({"event_id": id, "customer_id": customer, "type": "purchase", "ts": T0 + day * DAY,
                "order_id": id, "amount": amount}))
}

fn replay(dir: &Path, input: &str, extra: &[&str]) -> Value {
    let path = dir.join("events.jsonl");
    std::fs::write(&path, input).unwrap();
    let config = dir.join("engage.toml");
    std::fs::write(&config, "[input]\nmax_record_bytes = 2000\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(["replay", "--input"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--config")
        .arg(&config)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bad_lines_go_to_the_dead_letter_file_with_their_reason_and_replay_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        ("{\"event_id\":", "malformed"),
        (r#"{"event_id":"b2","customer_id":["x"],"type":"search","ts":1}"#, "invalid_field"),
        (r#"{"event_id":"b3","type":"search","ts":1}"#, "missing_customer_id"),
        (r#"{"event_id":"","customer_id":"a","type":"search","ts":1}"#, "missing_event_id"),
        (r#"{"event_id":"b5","customer_id":"a","ts":1}"#, "missing_type"),
        (r#"{"event_id":"b6","customer_id":"a","type":"refund","amount":-3,"ts":1}"#, "invalid_amount"),
        (r#"{"event_id":"b7","customer_id":"a","type":"search","ts":"soon"}"#, "invalid_timestamp"),
        (r#"{"event_id":"b8","customer_id":"a","type":"search","ts":99999999999999}"#, "future_timestamp"),
    ];
    let oversized = line(json!({"event_id": "b9", "customer_id": "a", "type": "search", "pad": "x".repeat(3000)}));
    let mut input = vec![click("g1", "a", 0.0, "page_view")];
    for (l, _) in &bad {
        input.push(l.to_string());
    }
    input.push(oversized);
    input.push(String::new());
    input.push(click("g2", "a", 1.0, "review"));
    let summary = replay(dir.path(), &(input.join("\n") + "\n"), &[]);
    assert_eq!(summary["dead_letters"], 9);
    assert_eq!(summary["applied"], 2, "good events before and after the bad ones count");

    let dlq = read_jsonl(&dir.path().join("out/dlq.jsonl")).unwrap();
    let reasons: Vec<&str> = dlq.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = bad.iter().map(|(_, r)| *r).collect();
    want.push("oversized");
    assert_eq!(reasons, want);
    assert_eq!(dlq[0]["line"], 2);
    assert_eq!(dlq[0]["value"], "{\"event_id\":", "the original line is kept");
    assert!(dlq[1]["detail"].as_str().unwrap().contains("customer_id"));
}

#[test]
fn a_customer_who_goes_silent_is_flagged_on_event_time_and_reported_as_of() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::new();
    // "quiet": active daily for 5 days (cadence 1 d), then silent.
    for d in 0..5 {
        input.push(click(&format!("q{d}"), "quiet", d as f64 + 0.5, "product_view"));
    }
    // "steady": buys every 10 days for 60 days, keeping event time moving.
    for d in (0..=60).step_by(10) {
        input.push(purchase(&format!("s{d}"), "steady", d, 25.0));
    }
    // Out of order in the file: replay sorts by event time.
    input.reverse();
    let summary = replay(dir.path(), &(input.join("\n") + "\n"), &["--as-of", "2026-03-02T12:00:00Z"]);
    assert_eq!(summary["applied"], 12);

    let alerts = read_jsonl(&dir.path().join("out/alerts.jsonl")).unwrap();
    let quiet: Vec<(&str, i64)> = alerts
        .iter()
        .filter(|a| a["customer_id"] == "quiet")
        .map(|a| (a["kind"].as_str().unwrap(), a["event_time"].as_i64().unwrap()))
        .collect();
    // Last activity day 4.5; daily sweeps at midnight: idle ≥ 3 d at day 8,
    // ≥ 30 d (and ≥ 6× cadence) at day 35.
    assert_eq!(quiet, vec![("at_risk", T0 + 8 * DAY), ("dormant", T0 + 35 * DAY)]);

    let states = read_jsonl(&dir.path().join("out/state.jsonl")).unwrap();
    let get = |id: &str| states.iter().find(|s| s["customer_id"] == id).unwrap().clone();
    let (quiet, steady) = (get("quiet"), get("steady"));
    assert_eq!(quiet["health"], "dormant");
    assert_eq!(quiet["repeat_purchases"], Value::Null);
    // Purchase days 0..60 step 10: x = 6, t_x = 60, T = day 60 (as-of 2026-03-02) − 0 = 60.
    assert_eq!((steady["purchase_days"].as_i64(), steady["repeat_purchases"].as_i64()), (Some(7), Some(6)));
    assert_eq!((steady["recency_days"].as_f64(), steady["age_days"].as_f64()), (Some(60.0), Some(60.0)));
    assert_eq!(steady["stage"], "intelligence");
    assert_eq!(steady["health"], "active");
    assert!(steady["p_alive"].as_f64().unwrap() > 0.9);

    let scores = read_jsonl(&dir.path().join("out/scores.jsonl")).unwrap();
    let seqs: Vec<i64> = scores
        .iter()
        .chain(alerts.iter())
        .filter(|m| m["customer_id"] == "quiet")
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seq has no gaps across both files");
}
