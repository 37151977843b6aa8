//! `engage replay` end to end: the binary over JSONL and CSV files.

mod common;

use std::path::Path;
use std::process::Command;

use engage::history::read_jsonl;
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
    replay_files(dir, &[path], "out", extra)
}

/// `engage replay` over `inputs` into `dir/out`; returns its summary.
fn replay_files(dir: &Path, inputs: &[std::path::PathBuf], out: &str, extra: &[&str]) -> Value {
    let config = dir.join("engage.toml");
    std::fs::write(&config, "[input]\nmax_record_bytes = 2000\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_engage"));
    command.arg("replay");
    for input in inputs {
        command.arg("--input").arg(input);
    }
    let out = command.arg("--out").arg(dir.join(out)).arg("--config").arg(&config).args(extra).output().unwrap();
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

/// An output file's lines without the wall-clock `processed_at`, sorted (a
/// sweep visits customers in no set order; `seq` orders each customer's).
fn without_wall_clock(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = read_jsonl(path)
        .unwrap()
        .into_iter()
        .map(|mut l| {
            l.as_object_mut().unwrap().remove("processed_at");
            l.to_string()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn csv_files_replay_exactly_as_the_same_events_in_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let records = engage::cmd::loadgen::synth::records(9, 3_000, 200, T0, 20 * 60_000, engage::vocab::Format::Json);
    let lines: Vec<String> = records.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()).collect();
    let jsonl = dir.path().join("history.jsonl");
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    // Purchases and clickstream in two CSV files, as two warehouse tables.
    let (buys, clicks): (Vec<String>, Vec<String>) =
        lines.iter().cloned().partition(|l| l.contains(r#""type":"purchase""#) || l.contains(r#""type":"refund""#));
    assert!(buys.len() > 50 && clicks.len() > 1_000);
    let (buys_csv, clicks_csv) = (dir.path().join("purchases.csv"), dir.path().join("clickstream.CSV"));
    std::fs::write(&buys_csv, common::json_lines_to_csv(&buys)).unwrap();
    std::fs::write(&clicks_csv, common::json_lines_to_csv(&clicks)).unwrap();

    let from_jsonl = replay_files(dir.path(), &[jsonl], "jsonl", &[]);
    let from_csv = replay_files(dir.path(), &[clicks_csv, buys_csv], "csv", &[]);
    assert_eq!(from_jsonl["applied"], 3_000, "{from_jsonl}");
    assert_eq!(from_csv, from_jsonl, "the same counts");
    for file in ["state.jsonl", "scores.jsonl", "alerts.jsonl"] {
        let (a, b) = (
            without_wall_clock(&dir.path().join("jsonl").join(file)),
            without_wall_clock(&dir.path().join("csv").join(file)),
        );
        assert!(!a.is_empty(), "{file} is empty: nothing compared");
        assert_eq!(a.len(), b.len(), "{file}: as many lines from JSONL as from CSV");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("{file} line {} differs between the JSONL and the CSV replay:\n{}\n{}", i + 1, a[i], b[i]);
        }
    }
}

#[test]
fn bad_csv_rows_go_to_the_dead_letter_file_with_their_reason_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("g1,a,page_view,1767225600000,,", None),
        ("b1,a,page_view,1767225600000,", Some("malformed")),
        ("b2,,search,1767225600000,,", Some("missing_customer_id")),
        ("b3,a,purchase,1767225600000,lots,", Some("invalid_amount")),
        ("b4,a,search,soon,,", Some("invalid_timestamp")),
        ("b5,a,purchase,1767225600000,5,yes", Some("invalid_field")),
        ("", None),
        ("\"g,2\",a,purchase,2026-01-02T00:00:00Z,5.50,true", None),
    ];
    let mut text = "event_id,customer_id,type,ts,amount,loyalty_member\n".to_string();
    for (row, _) in rows {
        text += row;
        text += "\n";
    }
    let path = dir.path().join("history.csv");
    std::fs::write(&path, text).unwrap();
    let summary = replay_files(dir.path(), &[path], "out", &[]);
    assert_eq!((summary["applied"].as_i64(), summary["dead_letters"].as_i64()), (Some(2), Some(5)), "{summary}");

    let dlq = read_jsonl(&dir.path().join("out/dlq.jsonl")).unwrap();
    let got: Vec<(&str, i64, &str)> = dlq
        .iter()
        .map(|d| (d["reason"].as_str().unwrap(), d["line"].as_i64().unwrap(), d["value"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, i64, &str)> =
        rows.iter().enumerate().filter_map(|(i, (row, reason))| reason.map(|r| (r, i as i64 + 2, *row))).collect();
    assert_eq!(got, want, "reason, line number (header is line 1) and the row as written");
    assert!(dlq[0]["detail"].as_str().unwrap().contains("5 cells"), "{}", dlq[0]["detail"]);
    assert!(dlq.iter().all(|d| d["file"].as_str().unwrap().ends_with("history.csv")));
}
