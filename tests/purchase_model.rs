//! The learned purchase probability end to end, file-based (no broker):
//! `engage fit --holdout-end T` learns it from cut-offs whose horizon ends
//! by T, and `engage evaluate` judges it at cut-offs from T on, which it
//! never saw. On the CDNOW sample (purchases only) and on a simulated
//! population with clickstream, it must rank customers better than every
//! single signal (score, P(alive), expected purchases, recency: ROC area on
//! the same customers and outcome) and be calibrated to 0.03 (expected
//! calibration error over deciles); with the outcomes shuffled it must fall
//! to chance, so these checks can fail; and `fit` must refuse what it
//! cannot learn from, naming the cause.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engage::cmd::evaluate::{evaluation_cutoffs, roc_auc};
use engage::cmd::loadgen::synth::{SplitMix64, lifecycles};
use engage::config::Config;
use engage::engine::{Engine, Rules};
use engage::history::cutoffs::{CutoffOptions, examples_at_cutoffs};
use engage::history::{ReplaySummary, read_events};
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

/// CDNOW_sample.txt → purchase events, one per row at noon UTC (as
/// tests/cdnow.rs writes them).
fn cdnow_events(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/CDNOW_sample.txt")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (customer, date, value) = (f[1].trim_start_matches('0'), f[2], f[4]);
        let ts = format!("{}-{}-{}T12:00:00Z", &date[..4], &date[4..6], &date[6..]);
        let amount: f64 = value.parse().unwrap();
        let e = json!({"event_id": format!("cdnow-{i}"), "customer_id": customer, "type": "purchase", "ts": ts,
                       "amount": amount});
        out.push_str(&e.to_string());
        out.push('\n');
    }
    let path = dir.join("cdnow.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

/// 2025-01-01T00:00:00Z: the simulated history's start.
const SIM_START: i64 = 1_735_689_600_000;

/// The simulated population ([`lifecycles`]): 2 000 customers arriving over
/// 450 days, clickstream and purchases.
fn simulated_events(dir: &Path) -> PathBuf {
    let mut out = Vec::new();
    for r in lifecycles(2026, 2_000, SIM_START, 450, engage::vocab::Format::Json) {
        out.extend_from_slice(&r.value);
        out.push(b'\n');
    }
    let path = dir.join("simulated.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

fn engage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engage")).args(args).output().unwrap()
}

fn succeeded(o: Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `engage fit --holdout-end` on `input`; the printed tables written to
/// `dir/model.toml`, whose path is returned with the report.
fn fit(dir: &Path, input: &Path, holdout_end: &str) -> (PathBuf, Value) {
    let report = succeeded(engage(&["fit", "--input", input.to_str().unwrap(), "--holdout-end", holdout_end]));
    let config = dir.join("model.toml");
    std::fs::write(&config, report["config"].as_str().unwrap()).unwrap();
    (config, report)
}

/// `engage evaluate` with `config` from `t1` to `t2`, judging the model at
/// cut-offs `every` apart.
fn evaluate(dir: &Path, input: &Path, config: &Path, t1: &str, t2: &str, every: &str) -> Value {
    let out = dir.join("evaluate");
    succeeded(engage(&[
        "evaluate",
        "--input",
        input.to_str().unwrap(),
        "--calibration-end",
        t1,
        "--holdout-end",
        t2,
        "--config",
        config.to_str().unwrap(),
        "--cutoff-every",
        every,
        "--out",
        out.to_str().unwrap(),
    ]))
}

/// What the suite holds the learned probability to, on a period it never
/// saw: above every single signal's ROC area, calibrated to 0.03.
fn assert_beats_every_signal_and_is_calibrated(report: &Value, what: &str) {
    let m = &report["purchase_model"];
    assert_eq!(m["overlaps_training"], false, "{what}: judged on data the fit used");
    let auc = m["p_purchase"]["roc_auc"].as_f64().unwrap();
    let ece = m["p_purchase"]["expected_calibration_error"].as_f64().unwrap();
    let signals: Vec<(String, f64)> = m["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["roc_auc"].as_f64().unwrap()))
        .collect();
    eprintln!(
        "{what}: {} examples at {} cut-offs, p_purchase ROC area {auc:.4}, ECE {ece:.4}, Brier {:.4} (base rate \
         {:.4}), lift@10% {:.2}; signals {signals:?}",
        m["examples"],
        m["cutoffs"].as_array().unwrap().len(),
        m["p_purchase"]["brier"].as_f64().unwrap(),
        m["base_rate_brier"].as_f64().unwrap(),
        m["p_purchase"]["lift_10"].as_f64().unwrap(),
    );
    assert_eq!(signals.len(), 4);
    for (name, signal) in &signals {
        assert!(auc > *signal, "{what}: p_purchase ROC area {auc} is not above {name}'s {signal}");
    }
    assert!(ece <= 0.03, "{what}: expected calibration error {ece} above 0.03");
    // Informative: better than predicting the base rate for everyone.
    assert!(m["p_purchase"]["brier"].as_f64() < m["base_rate_brier"].as_f64());
    assert!(report["plots"].as_array().unwrap().contains(&json!("reliability.svg")));
}

/// The model's ROC area on the same cut-offs and customers as the report,
/// against the true outcomes and against the outcomes shuffled: the negative
/// control, which must be chance.
fn auc_true_and_shuffled(config: &Path, input: &Path, t1: &str, t2: &str, every: i64) -> (f64, f64) {
    let config = Config::from_toml(&std::fs::read_to_string(config).unwrap()).unwrap();
    let engine = Engine::new(Rules::new(&config));
    let t = |s: &str| engage::clock::parse_time(s).unwrap();
    let (t1, t2) = (t(t1), t(t2));
    let events = read_events(
        &[input.to_path_buf()],
        Some(t2),
        &config.input.limits(),
        i64::MAX / 2,
        &mut ReplaySummary::default(),
        |_| Ok(()),
    )
    .unwrap();
    let horizon_ms = 90 * DAY;
    let cutoffs = evaluation_cutoffs(t1, t2, horizon_ms, Some(every));
    let opts = CutoffOptions { cutoffs, horizon_ms, sweep_every_ms: DAY, keep: 1.0 };
    let examples = examples_at_cutoffs(&engine, &events, &opts).unwrap();
    let model = engine.rules().churn.purchase_model.as_ref().unwrap();
    let p: Vec<f64> = examples.iter().map(|e| model.probability(&e.features)).collect();
    let mut outcomes: Vec<bool> = examples.iter().map(|e| e.bought).collect();
    let truth = roc_auc(&p, &outcomes).unwrap();
    let mut rng = SplitMix64::new(99);
    for i in (1..outcomes.len()).rev() {
        outcomes.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    (truth, roc_auc(&p, &outcomes).unwrap())
}

/// The negative controls: shuffled outcomes give chance (and so fail the
/// assertion above), and `fit` on shuffled labels finds no skill.
fn assert_negative_controls(input: &Path, config: &Path, report: &Value, t: (&str, &str, i64)) {
    let (truth, shuffled) = auc_true_and_shuffled(config, input, t.0, t.1, t.2);
    let reported = report["purchase_model"]["p_purchase"]["roc_auc"].as_f64().unwrap();
    assert!((truth - reported).abs() < 1e-12, "the library and the command agree: {truth} vs {reported}");
    eprintln!("shuffled outcomes: ROC area {shuffled:.4}");
    assert!((shuffled - 0.5).abs() < 0.03, "shuffled outcomes should give chance, got {shuffled}");
    let signals = report["purchase_model"]["signals"].as_array().unwrap();
    assert!(signals.iter().any(|s| s["roc_auc"].as_f64().unwrap() > shuffled), "the check can fail");
    let o = engage(&["fit", "--input", input.to_str().unwrap(), "--holdout-end", t.0, "--shuffle-labels", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no skill"), "{err}");
}

#[test]
fn cdnow_learned_probability_beats_every_signal_and_is_calibrated_on_a_later_period() {
    const T1: &str = "1997-09-30T23:59:59Z";
    const T2: &str = "1998-06-30T23:59:59Z";
    let dir = tempfile::tempdir().unwrap();
    let input = cdnow_events(dir.path());
    let (config, fit_report) = fit(dir.path(), &input, T1);
    let training = &fit_report["purchase_model"]["training"];
    assert_eq!(training["holdout_end"], T1);
    // Purchases only: no clickstream dimension varies, and they get no weight.
    let constant: Vec<&str> =
        training["constant_features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for f in ["attention", "social", "loyalty", "satisfaction"] {
        assert!(constant.contains(&f), "{constant:?}");
    }
    // Monthly cut-offs from T1 while 90 days fit before T2: 7 of them.
    let report = evaluate(dir.path(), &input, &config, T1, T2, "30d");
    assert_eq!(report["purchase_model"]["cutoffs"].as_array().unwrap().len(), 7);
    assert_beats_every_signal_and_is_calibrated(&report, "CDNOW");
    let svg = std::fs::read_to_string(dir.path().join("evaluate/reliability.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("p_purchase_90d"), "{svg}");
    assert_negative_controls(&input, &config, &report, (T1, T2, 30 * DAY));
}

#[test]
fn simulated_learned_probability_beats_every_signal_and_is_calibrated_on_a_later_period() {
    const T1: &str = "2025-10-28T00:00:00Z"; // day 300
    const T2: &str = "2026-03-27T00:00:00Z"; // day 450
    let dir = tempfile::tempdir().unwrap();
    let input = simulated_events(dir.path());
    let (config, fit_report) = fit(dir.path(), &input, T1);
    assert_eq!(fit_report["purchase_model"]["training"]["constant_features"], json!([]));
    let report = evaluate(dir.path(), &input, &config, T1, T2, "10d");
    assert_eq!(report["purchase_model"]["cutoffs"].as_array().unwrap().len(), 7);
    assert_beats_every_signal_and_is_calibrated(&report, "simulated");
    assert_negative_controls(&input, &config, &report, (T1, T2, 10 * DAY));
}

#[test]
fn fit_refuses_too_little_history_and_one_class_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let input = cdnow_events(dir.path());
    // CDNOW starts on 1997-01-01: by mid-April a 90-day horizon leaves room
    // for one weekly cut-off.
    let o = engage(&["fit", "--input", input.to_str().unwrap(), "--holdout-end", "1997-04-15T00:00:00Z"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("too little history") && err.contains("at least 3"), "{err}");
    // Customers who bought in their first week and then only browsed:
    // nobody buys after any cut-off, so there is no buyer to learn from
    // (BG/NBD itself can be fitted: they bought on three days each).
    let mut lines = String::new();
    for c in 0..50 {
        for d in (0..200).step_by(3) {
            let ts = SIM_START + d * DAY + c * 60_000;
            let (kind, amount) = if d <= 6 { ("purchase", ",\"amount\":20") } else { ("page_view", "") };
            lines.push_str(&format!(
                "{{\"event_id\":\"e{c}-{d}\",\"customer_id\":\"c{c}\",\"type\":\"{kind}\",\"ts\":{ts}{amount}}}\n"
            ));
        }
    }
    let early = dir.path().join("early-buyers.jsonl");
    std::fs::write(&early, lines).unwrap();
    let o = engage(&["fit", "--input", early.to_str().unwrap(), "--holdout-end", "2025-07-20T00:00:00Z"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("one class only: 0 of") && err.contains("bought within"), "{err}");
}

#[test]
fn the_probability_is_live_in_replay_and_a_model_from_another_version_is_refused_at_start() {
    const T1: &str = "1997-09-30T23:59:59Z";
    let dir = tempfile::tempdir().unwrap();
    let input = cdnow_events(dir.path());
    let (config, _) = fit(dir.path(), &input, T1);
    let replay = |config: &Path, out: &str| {
        engage(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--as-of",
            T1,
            "--config",
            config.to_str().unwrap(),
            "--out",
            dir.path().join(out).to_str().unwrap(),
        ])
    };
    succeeded(replay(&config, "with"));
    let scores = engage::history::read_jsonl(&dir.path().join("with/scores.jsonl")).unwrap();
    assert!(!scores.is_empty());
    for s in &scores {
        let p = s["p_purchase_90d"].as_f64().unwrap_or_else(|| panic!("no p_purchase_90d in {s}"));
        assert!((0.0..=1.0).contains(&p), "{s}");
    }
    // Without a model, the score changes are as they were: no field.
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    succeeded(replay(&plain, "without"));
    let scores = engage::history::read_jsonl(&dir.path().join("without/scores.jsonl")).unwrap();
    assert!(scores.iter().all(|s| s.get("p_purchase_90d").is_none()));
    // A model trained on other features (an older or newer engage) is
    // refused before anything runs, naming the key.
    let text = std::fs::read_to_string(&config).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, text.replace("\"log1p_idle_ratio\", ", "")).unwrap();
    let o = replay(&other, "other");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("churn.model.features") && err.contains("refit"), "{err}");
    assert!(!dir.path().join("other").exists(), "refused at start");
}
