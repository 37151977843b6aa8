//! Replays every saved fuzz input (`tests/data/fuzz-regressions/<target>/`)
//! through the same checks as its fuzz target (`tests/fuzz/fuzz_targets`),
//! so a crash `scripts/fuzz` once found stays fixed. Keep each crashing
//! input there once it is fixed.

#[path = "fuzz/fuzz_targets/common.rs"]
mod fuzz;

use std::path::Path;

use engage::vocab::Format;

/// The saved inputs of one target, in name order.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.') && n != "README.md"))
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
}

/// Runs `check` on every saved input of `target`, naming the one that fails.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) -> usize {
    let inputs = inputs(target);
    for (name, data) in &inputs {
        if std::panic::catch_unwind(|| check(data)).is_err() {
            panic!("{target}: saved input {name} fails its check again");
        }
    }
    inputs.len()
}

#[test]
fn saved_fuzz_inputs_pass_their_targets_checks() {
    let json = replay("decode_json", |d| fuzz::check(Format::Json, d));
    let protobuf = replay("decode_protobuf", |d| fuzz::check(Format::Protobuf, d));
    let config = replay("config", fuzz::check_config);
    // The seeds kept here make sure the replay reads every folder.
    assert!(json > 0 && protobuf > 0 && config > 0, "inputs: {json} json, {protobuf} protobuf, {config} config");
}

#[test]
fn a_failing_input_is_reported_by_name() {
    let failed = std::panic::catch_unwind(|| replay("config", |_| panic!("broken check")));
    let message = failed.expect_err("a failing check must fail the replay");
    let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("config: saved input") && text.contains("fails its check again"), "{text}");
}
