//! The churn model on real data: the CDNOW sample of Fader, Hardie & Lee
//! (2005), against the paper and the reference implementation `lifetimes`
//! 0.11.3 (tests/data/cdnow_reference.csv, made by scripts/cdnow-reference).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const AS_OF: &str = "1997-09-30T23:59:59Z";

/// CDNOW_sample.txt → purchase events: one per row, at noon UTC of its day.
fn events(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/CDNOW_sample.txt")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (customer, date, value) = (f[1].trim_start_matches('0'), f[2], f[4]);
        let ts = format!("{}-{}-{}T12:00:00Z", &date[..4], &date[4..6], &date[6..]);
        let amount: f64 = value.parse().unwrap();
        out.push_str(
            &json!({"event_id": format!("cdnow-{i}"), "customer_id": customer, "type": "purchase",
                             "ts": ts, "amount": amount})
            .to_string(),
        );
        out.push('\n');
    }
    let path = dir.join("cdnow.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

fn engage(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_engage")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn replay_matches_the_lifetimes_summary_and_p_alive_for_every_customer() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let out = dir.path().join("out");
    let summary =
        engage(&["replay", "--input", input.to_str().unwrap(), "--as-of", AS_OF, "--out", out.to_str().unwrap()]);
    assert_eq!(summary["dead_letters"], 0);
    let states: HashMap<String, Value> = engage::history::read_jsonl(&out.join("state.jsonl"))
        .unwrap()
        .into_iter()
        .map(|s| (s["customer_id"].as_str().unwrap().to_string(), s))
        .collect();
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cdnow_reference.csv")).unwrap();
    let mut compared = 0;
    for line in reference.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let s = states.get(f[0]).unwrap_or_else(|| panic!("customer {} missing", f[0]));
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        assert_eq!(s["repeat_purchases"].as_f64(), Some(num(1)), "x of {}", f[0]);
        assert_eq!(s["recency_days"].as_f64(), Some(num(2)), "t_x of {}", f[0]);
        assert_eq!(s["age_days"].as_f64(), Some(num(3)), "T of {}", f[0]);
        let p = s["p_alive"].as_f64().unwrap();
        assert!((p - num(5)).abs() < 1e-6, "p_alive of {}: {p} vs {}", f[0], num(5));
        for (field, col) in [("expected_purchases_90d", 6), ("expected_value_90d", 7)] {
            let got = s[field].as_f64().unwrap();
            assert!((got - num(col)).abs() <= 1e-6 * num(col).max(1.0), "{field} of {}: {got} vs {}", f[0], num(col));
        }
        compared += 1;
    }
    assert_eq!(compared, 2357);
}

#[test]
fn fit_recovers_the_published_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let input = events(dir.path());
    let fit = engage(&["fit", "--input", input.to_str().unwrap(), "--as-of", AS_OF]);
    let b = &fit["bgnbd"];
    let close = |v: &Value, want: f64, tol: f64| {
        let v = v.as_f64().unwrap();
        assert!((v - want).abs() <= tol * want.abs(), "{v} vs {want} (±{}%)", tol * 100.0);
    };
    // Fader, Hardie & Lee (2005): r 0.243, α 4.414, a 0.793, b 2.426, LL −9582.4.
    close(&b["r"], 0.243, 0.005);
    close(&b["alpha"], 4.414, 0.005);
    close(&b["a"], 0.793, 0.005);
    close(&b["b"], 2.426, 0.005);
    // The paper gives the log-likelihood to 0.1 nats; the fit must match
    // it to that precision (it reaches -9582.43).
    let ll = b["log_likelihood"].as_f64().unwrap();
    assert!((ll - -9582.4).abs() <= 0.05, "log-likelihood {ll} vs the paper's -9582.4");
    assert_eq!(b["customers"], 2357);
    // Gamma-Gamma on the repeat buyers: p 6.25, q 3.74, γ 15.44.
    let g = &fit["gamma_gamma"];
    close(&g["p"], 6.25, 0.01);
    close(&g["q"], 3.74, 0.01);
    close(&g["gamma"], 15.44, 0.01);
    assert!(fit["config"].as_str().unwrap().contains("[churn.bgnbd]"));
}
