//! Every branch of the `validate()` functions, table-driven: each invalid
//! TOML snippet must be refused with an error that names the key at fault,
//! so an operator can find the line to fix.

use super::{Config, ConfigError};

/// (snippet, text the error must contain: the key, and for keys shared by
/// one message, the field).
const INVALID: &[(&str, &[&str])] = &[
    // [kafka]: properties engage sets itself.
    ("[kafka]\n\"group.id\" = \"g\"\n", &["kafka.group.id"]),
    ("[kafka]\n\"enable.auto.offset.store\" = true\n", &["kafka.enable.auto.offset.store"]),
    ("[kafka]\n\"enable.auto.commit\" = true\n", &["kafka.enable.auto.commit"]),
    ("[kafka]\n\"enable.idempotence\" = false\n", &["kafka.enable.idempotence"]),
    ("[kafka]\n\"partition.assignment.strategy\" = \"roundrobin\"\n", &["kafka.partition.assignment.strategy"]),
    ("[kafka]\n\"transactional.id\" = \"t\"\n", &["kafka.transactional.id"]),
    // The underscore spelling reaches the same check.
    ("[kafka]\ngroup_id = \"g\"\n", &["kafka.group.id"]),
    // [topics]: names, duplicates, layout.
    ("[topics]\nclickstream = \"\"\n", &["topics.clickstream", "Kafka topic name"]),
    ("[topics]\npurchases = \"a/b\"\n", &["topics.purchases", "Kafka topic name"]),
    ("[topics]\nalerts = \"ümlaut\"\n", &["topics.alerts", "Kafka topic name"]),
    ("[topics]\nscores = \"bad name\"\n", &["topics.scores", "Kafka topic name"]),
    ("[topics]\npurchases = \"clickstream\"\n", &["topics.purchases", "topics.clickstream"]),
    ("[topics]\ndlq = \"engagement.scores\"\n", &["topics.dlq", "topics.scores"]),
    ("[topics]\nerasures = \"bad name\"\n", &["topics.erasures", "Kafka topic name"]),
    ("[topics]\nerasures = \"clickstream\"\n", &["topics.erasures", "topics.clickstream"]),
    ("[topics]\nerasures = \"e\"\nerasure_confirmations = \"\"\n", &["topics.erasure_confirmations"]),
    (
        "[topics]\nerasures = \"e\"\nerasure_confirmations = \"e\"\n",
        &["topics.erasure_confirmations", "topics.erasures"],
    ),
    ("[topics]\npartitions = 0\n", &["topics.partitions"]),
    ("[topics]\nreplication_factor = 0\n", &["topics.replication_factor"]),
    ("[topics]\nreplication_factor = -2\n", &["topics.replication_factor"]),
    // [run]
    ("[run]\ngroup_id = \"  \"\n", &["run.group_id"]),
    ("[run]\nsweep_interval = \"0s\"\n", &["run.sweep_interval"]),
    ("[run]\nsweep_slices = 0\n", &["run.sweep_slices"]),
    ("[run]\nlog_interval = \"0s\"\n", &["run.log_interval"]),
    ("[run]\nmax_in_flight = 0\n", &["run.max_in_flight"]),
    // [state]: one message for both durations; it names the field.
    ("[state]\nflush_interval = \"0s\"\n", &["state", "flush_interval"]),
    ("[state]\nretention = \"0s\"\n", &["state", "retention"]),
    ("[state]\nrestore_timeout = \"0s\"\n", &["state", "restore_timeout"]),
    // [http]
    ("[http]\nlisten = \"localhost\"\n", &["http.listen"]),
    ("[http]\nlisten = \"127.0.0.1:99999\"\n", &["http.listen"]),
    // [input]
    ("[input]\nmax_record_bytes = 0\n", &["input.max_record_bytes"]),
    ("[input]\nmax_amount = 0.0\n", &["input.max_amount"]),
    ("[input]\nmax_amount = inf\n", &["input.max_amount"]),
    ("[input]\nmax_amount = nan\n", &["input.max_amount"]),
    // [scoring]
    ("[scoring]\nmin_delta = -1.0\n", &["scoring.min_delta"]),
    ("[scoring]\nmin_delta = nan\n", &["scoring.min_delta"]),
    ("[scoring.attention]\nhalf_life = \"0s\"\n", &["scoring.attention.half_life"]),
    ("[scoring.transaction]\nsaturation = 0.0\n", &["scoring.transaction.saturation"]),
    ("[scoring.social]\nsaturation = inf\n", &["scoring.social.saturation"]),
    ("[scoring.satisfaction]\nweight = -0.1\n", &["scoring.satisfaction.weight"]),
    ("[scoring.loyalty]\nweight = nan\n", &["scoring.loyalty.weight"]),
    ("[scoring.social.events]\nlike = 1.0\n", &["scoring.social.events", "\"like\""]),
    ("[scoring.attention.events]\npage_view = inf\n", &["scoring.attention.events.page_view"]),
    (
        "[scoring.attention]\nweight = 0.0\n[scoring.transaction]\nweight = 0.0\n[scoring.social]\nweight = 0.0\n\
         [scoring.loyalty]\nweight = 0.0\n[scoring.satisfaction]\nweight = 0.0\n",
        &["scoring.*.weight"],
    ),
    // [churn]
    ("[churn]\np_alive_at_risk = 1.5\n", &["churn.p_alive_at_risk"]),
    ("[churn]\np_alive_dormant = -0.1\n", &["churn.p_alive_dormant", "probability"]),
    ("[churn]\np_alive_dormant = 0.7\n", &["churn.p_alive_dormant", "churn.p_alive_at_risk"]),
    ("[churn]\nidle_at_risk = 0.0\noverdue_gate = 0.0\n", &["churn.idle_dormant", "churn.idle_at_risk"]),
    ("[churn]\nidle_dormant = 2.0\n", &["churn.idle_dormant"]),
    ("[churn]\nscore_drop_ratio = 1.0\n", &["churn.score_drop_ratio"]),
    ("[churn]\nscore_drop_ratio = -0.5\n", &["churn.score_drop_ratio"]),
    ("[churn]\noverdue_gate = -1.0\n", &["churn.overdue_gate"]),
    ("[churn]\noverdue_gate = 4.0\n", &["churn.overdue_gate", "churn.idle_at_risk"]),
    ("[churn]\ndefault_cadence = \"0s\"\n", &["churn", "default_cadence"]),
    ("[churn]\nscore_drop_window = \"0s\"\n", &["churn", "score_drop_window"]),
    ("[churn.bgnbd]\ntime_unit = \"0s\"\n", &["churn", "bgnbd.time_unit"]),
    ("[churn.bgnbd]\nr = 0.0\n", &["churn.bgnbd.r"]),
    ("[churn.bgnbd]\nalpha = -1.0\n", &["churn.bgnbd.alpha"]),
    ("[churn.bgnbd]\na = nan\n", &["churn.bgnbd.a"]),
    ("[churn.bgnbd]\nb = inf\n", &["churn.bgnbd.b"]),
    ("[churn.gamma_gamma]\np = 0.0\n", &["churn.gamma_gamma", "p > 0"]),
    ("[churn.gamma_gamma]\nq = 1.0\n", &["churn.gamma_gamma", "q > 1"]),
    ("[churn.gamma_gamma]\ngamma = -3.0\n", &["churn.gamma_gamma", "gamma > 0"]),
    ("[churn.gamma_gamma]\nq = inf\n", &["churn.gamma_gamma"]),
    // [lifecycle]: one message for both counts; it names the field.
    ("[lifecycle]\nestablished_purchase_days = 0\n", &["lifecycle", "established_purchase_days"]),
    ("[lifecycle]\nestablished_active_days = 0\n", &["lifecycle", "established_active_days"]),
];

#[test]
fn every_invalid_value_is_refused_with_an_error_naming_its_key() {
    let mut failures = Vec::new();
    for (snippet, wanted) in INVALID {
        match Config::from_toml(snippet) {
            Ok(_) => failures.push(format!("accepted:\n{snippet}")),
            Err(e @ ConfigError::Load(_)) => failures.push(format!("not a validation error ({e}):\n{snippet}")),
            Err(e) => {
                let text = e.to_string();
                let missing: Vec<&&str> = wanted.iter().filter(|w| !text.contains(**w)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{snippet}→ {text:?} does not name {missing:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), INVALID.len(), failures.join("\n"));
}

/// The boundary values the checks allow: each table entry above is refused
/// because of its value, not because the key cannot be set at all.
#[test]
fn the_boundary_values_next_to_each_refused_one_are_accepted() {
    for snippet in [
        "[topics]\nreplication_factor = -1\n",
        "[topics]\nreplication_factor = 1\npartitions = 1\n",
        "[topics]\nscores = \"a.B_c-9\"\n",
        "[http]\nlisten = \"\"\n",
        "[http]\nlisten = \"0.0.0.0:9898\"\n",
        "[scoring]\nmin_delta = 0.0\n",
        "[scoring.satisfaction]\nweight = 0.0\n",
        "[churn]\np_alive_at_risk = 1.0\np_alive_dormant = 1.0\n",
        "[churn]\nidle_dormant = 3.0\n",
        "[churn]\nscore_drop_ratio = 0.0\n",
        "[churn]\noverdue_gate = 3.0\n",
        "[churn]\noverdue_gate = 0.0\n",
        "[churn.gamma_gamma]\nq = 1.01\n",
        "[input]\nmax_record_bytes = 1\n",
        "[run]\nmax_in_flight = 1\nsweep_slices = 1\n",
        "[lifecycle]\nestablished_purchase_days = 1\nestablished_active_days = 1\n",
    ] {
        if let Err(e) = Config::from_toml(snippet) {
            panic!("refused {snippet:?}: {e}");
        }
    }
}

/// Wrong types and unknown keys fail at load, naming the key.
#[test]
fn wrong_types_and_unknown_keys_name_the_key() {
    for (snippet, key) in [
        ("[run]\nsweep_slices = \"ten\"\n", "sweep_slices"),
        ("[state]\nflush_interval = \"soon\"\n", "flush_interval"),
        ("[output]\nscores_format = \"avro\"\n", "scores_format"),
        ("[run]\nprocessing_guarantee = \"at_most_once\"\n", "processing_guarantee"),
        ("[topics]\nclikstream = \"c\"\n", "clikstream"),
        ("[nonsense]\nx = 1\n", "nonsense"),
    ] {
        let err = Config::from_toml(snippet).expect_err(snippet).to_string();
        assert!(err.contains(key), "{snippet:?} → {err}");
    }
}

/// Kafka's limit on topic names is 249 characters.
#[test]
fn topic_names_longer_than_kafka_allows_are_refused() {
    let at_limit = format!("[topics]\nalerts = \"{}\"\n", "a".repeat(249));
    assert!(Config::from_toml(&at_limit).is_ok());
    let over = format!("[topics]\nalerts = \"{}\"\n", "a".repeat(250));
    let err = Config::from_toml(&over).expect_err("250 characters").to_string();
    assert!(err.contains("topics.alerts") && err.contains("1-249"), "{err}");
}

/// An enum key is refused when loading, naming the key and the choices.
#[test]
fn an_unknown_upstream_partitioner_is_refused_naming_the_key_and_the_choices() {
    let e = Config::from_toml("[topics]\nupstream_partitioner = \"fnv1a\"\n").unwrap_err().to_string();
    for want in ["topics.upstream_partitioner", "murmur2", "consistent_random"] {
        assert!(e.contains(want), "{e}");
    }
}
