//! History: the engine driven from event files instead of Kafka, in
//! event-time order. `engage replay` is this and nothing more; `fit`,
//! `evaluate` and `bootstrap` read their history through it too.
//!
//! Every input line is either applied or written to `dlq.jsonl` with its
//! reason; churn sweeps run on event time every `sweep_every` (and once more
//! at the as-of time), so silent customers raise alerts exactly as they would
//! live. Events are held in memory to be sorted, about 100 bytes each
//! (`files.rs` reads them). [`drive`] is that loop, with cut-offs at which
//! the caller sees every customer; [`cutoffs`] rolls cut-offs through a
//! history to learn and judge the purchase probability.

pub mod cutoffs;
mod files;

pub use files::{BadLine, InputFormat, read_events};

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::engine::churn::Health;
use crate::engine::lifecycle::Stage;
use crate::engine::output::{Dimensions, Output};
use crate::engine::store::Store;
use crate::engine::{Engine, Outcome, Rules};
use crate::vocab::Format;

/// Why a replay (or a file read for `engage fit`) could not finish. Bad
/// lines are not errors: they go to the dead-letter report. Retrying helps
/// only once the file or directory problem is fixed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file or directory could not be opened, read, created or written.
    #[error("{action} {path}")]
    Io {
        /// What engage was doing: "opening", "reading", "creating", "writing".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON line could not be written or read back.
    #[error("JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A chart could not be drawn.
    #[error("chart {path}: {detail}")]
    Chart {
        /// The file it was for.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A CSV file cannot be read as events: no usable header row.
    #[error("CSV {path} line {line}: {detail}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line at fault.
        line: u64,
        /// What is wrong.
        detail: String,
    },
}

/// An I/O error while `action`ing `path`.
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.to_path_buf();
    move |source| ReplayError::Io { action, path, source }
}

/// What to replay and where to write the results.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Event files, JSONL or CSV (both topics' events may be mixed).
    pub inputs: Vec<PathBuf>,
    /// Apply events up to this time (epoch ms) and report state as of it;
    /// default: the last event time.
    pub as_of: Option<i64>,
    /// Output directory (created if missing).
    pub out_dir: PathBuf,
    /// Event-time interval between churn sweeps, ms.
    pub sweep_every_ms: i64,
}

/// Counts of what a replay did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Non-blank input lines read.
    pub lines: u64,
    /// Events that changed state.
    pub applied: u64,
    /// Lines written to `dlq.jsonl`.
    pub dead_letters: u64,
    /// Events already applied (same `event_id` seen recently).
    pub duplicates: u64,
    /// Events of unknown clickstream types (accepted, no effect).
    pub unknown_types: u64,
    /// Valid events after the as-of time, not applied.
    pub after_as_of: u64,
    /// Lines written to `scores.jsonl`.
    pub score_changes: u64,
    /// Lines written to `alerts.jsonl`.
    pub alerts: u64,
    /// Lines written to `state.jsonl`.
    pub customers: u64,
    /// The as-of time used, epoch ms.
    pub as_of: Option<i64>,
}

/// One line of `dlq.jsonl`.
#[derive(Serialize)]
struct DeadLetter<'a> {
    file: &'a str,
    line: u64,
    reason: &'static str,
    detail: &'a str,
    value: &'a str,
}

/// One line of `state.jsonl`: the customer as of the as-of time.
#[derive(Serialize)]
struct StateLine<'a> {
    customer_id: &'a str,
    score: f64,
    dimensions: Dimensions,
    /// The five decayed dimension sums `v` as of the as-of time (not before
    /// `last_seen`): what `dimensions` is computed from, unrounded by the
    /// saturating curves, so other implementations can be checked exactly.
    dimension_sums: Dimensions,
    stage: Stage,
    health: Health,
    p_alive: f64,
    active_days: u16,
    cadence_days: f64,
    idle_days: f64,
    first_seen: i64,
    last_seen: i64,
    purchase_days: u16,
    /// BG/NBD x.
    repeat_purchases: Option<u32>,
    /// BG/NBD t_x, days.
    recency_days: Option<f64>,
    /// BG/NBD T, days.
    age_days: Option<f64>,
    spend_lifetime: f64,
    /// BG/NBD expected purchase days in the next 90 days.
    expected_purchases_90d: Option<f64>,
    /// Expected spend in the next 90 days.
    expected_value_90d: Option<f64>,
    seq: u32,
}

/// A finished replay: its counts, and every customer as of the as-of time
/// with the engine that made them (what `engage bootstrap` writes).
pub struct Replayed {
    /// What the replay did.
    pub summary: ReplaySummary,
    /// The engine, with the config's rules.
    pub engine: Engine,
    /// Every customer, as of the as-of time.
    pub customers: std::sync::Arc<crate::engine::store::Partition>,
}

/// Runs a replay. Fails only on I/O errors; bad lines go to `dlq.jsonl`.
pub fn replay(config: &Config, opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    replay_keeping_state(config, opts).map(|r| r.summary)
}

/// [`replay`], keeping the customers' states.
pub fn replay_keeping_state(config: &Config, opts: &ReplayOptions) -> Result<Replayed, ReplayError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(io("creating", &opts.out_dir))?;
    let create = |name: &str| -> Result<(BufWriter<File>, PathBuf), ReplayError> {
        let path = opts.out_dir.join(name);
        Ok((BufWriter::new(File::create(&path).map_err(io("creating", &path))?), path))
    };
    let (mut scores, mut alerts, mut dlq, mut states) =
        (create("scores.jsonl")?, create("alerts.jsonl")?, create("dlq.jsonl")?, create("state.jsonl")?);
    let mut summary = ReplaySummary::default();
    let limits = config.input.limits();
    let now = wall_clock_ms();

    let events = read_events(&opts.inputs, opts.as_of, &limits, now, &mut summary, |bad| {
        let dl = DeadLetter {
            file: bad.file,
            line: bad.line,
            reason: bad.error.reason.as_str(),
            detail: &bad.error.detail,
            value: &String::from_utf8_lossy(bad.value),
        };
        write_line(&mut dlq, &dl)
    })?;

    let engine = Engine::new(Rules::new(config));
    let mut write = |out: &mut Vec<Output>, summary: &mut ReplaySummary| -> Result<(), ReplayError> {
        for o in out.drain(..) {
            let ((file, path), count) = match o {
                Output::Score(_) => (&mut scores, &mut summary.score_changes),
                Output::Alert(_) => (&mut alerts, &mut summary.alerts),
                // Replay reads events only.
                Output::Erasure(_) => continue,
            };
            let mut line = crate::codec::output::encode(&o, Format::Json);
            line.push(b'\n');
            file.write_all(&line).map_err(io("writing", path))?;
            *count += 1;
        }
        Ok(())
    };
    let as_of = opts.as_of.or(events.last().map(|e| e.ts_ms));
    summary.as_of = as_of;
    let cutoffs: Vec<i64> = as_of.into_iter().collect();
    let mut customers = 0;
    let partition = drive(&engine, &events, opts.sweep_every_ms, &cutoffs, &mut summary, &mut write, |at, p| {
        customers = write_states(&engine, p, at, &mut states)?;
        Ok(())
    })?;
    summary.customers = customers;
    for (mut f, path) in [scores, alerts, dlq, states] {
        f.flush().map_err(io("writing", &path))?;
    }
    Ok(Replayed { summary, engine, customers: partition })
}

/// What [`drive`] does with the outputs of each step: write them, count
/// them, or drop them.
pub type OnOutputs<'a> = dyn FnMut(&mut Vec<Output>, &mut ReplaySummary) -> Result<(), ReplayError> + 'a;

/// Drives `engine` over `events` (sorted by event time) in one fresh
/// partition, on event time only, as `engage replay` does: every event is
/// applied, churn sweeps run every `sweep_every_ms` of event time, and at
/// each of `cutoffs` (ascending), once every event up to it is applied and
/// a sweep has run at it, `at_cutoff` sees every customer as of that time.
/// `engage fit` and `engage evaluate` roll cut-offs through a history this
/// way; `engage replay` has one, its as-of time. Outputs go to `on_outputs`
/// as they are made; what was applied is counted in `summary`.
pub fn drive(
    engine: &Engine,
    events: &[crate::engine::event::Event<'_>],
    sweep_every_ms: i64,
    cutoffs: &[i64],
    summary: &mut ReplaySummary,
    on_outputs: &mut OnOutputs<'_>,
    mut at_cutoff: impl FnMut(i64, &crate::engine::store::Partition) -> Result<(), ReplayError>,
) -> Result<std::sync::Arc<crate::engine::store::Partition>, ReplayError> {
    let store = Store::new();
    let partition = store.partition(0);
    let mut out = Vec::new();
    let every = sweep_every_ms.max(1);
    let mut sweeps = Sweeps { next: events.first().map(|e| (e.ts_ms.div_euclid(every) + 1) * every), every };
    let mut cuts = cutoffs.iter().copied().peekable();
    for event in events {
        while let Some(at) = cuts.next_if(|c| *c < event.ts_ms) {
            sweeps.run_before(engine, &partition, at, &mut out);
            engine.sweep(&partition, at, &mut out);
            sweeps.skip_to(at);
            on_outputs(&mut out, summary)?;
            at_cutoff(at, &partition)?;
        }
        sweeps.run_before(engine, &partition, event.ts_ms + 1, &mut out);
        match engine.apply(&partition, event, None, &mut out) {
            Outcome::Applied => summary.applied += 1,
            // A replay's partition has no bootstrap as-of: never Bootstrapped.
            Outcome::Duplicate | Outcome::Bootstrapped => summary.duplicates += 1,
            Outcome::UnknownType => summary.unknown_types += 1,
            // Replay applies no erasures.
            Outcome::BeforeErasure | Outcome::Erased => {}
        }
        on_outputs(&mut out, summary)?;
    }
    for at in cuts {
        sweeps.run_before(engine, &partition, at, &mut out);
        engine.sweep(&partition, at, &mut out);
        sweeps.skip_to(at);
        on_outputs(&mut out, summary)?;
        at_cutoff(at, &partition)?;
    }
    Ok(partition)
}

/// The periodic churn sweeps of [`drive`], on event time.
struct Sweeps {
    next: Option<i64>,
    every: i64,
}

impl Sweeps {
    /// Runs every sweep due before `until`.
    fn run_before(
        &mut self,
        engine: &Engine,
        partition: &crate::engine::store::Partition,
        until: i64,
        out: &mut Vec<Output>,
    ) {
        while let Some(t) = self.next.filter(|t| *t < until) {
            engine.sweep(partition, t, out);
            self.next = Some(t + self.every);
        }
    }

    /// Skips the sweeps at or before `at` (one has just run there).
    fn skip_to(&mut self, at: i64) {
        while let Some(t) = self.next.filter(|t| *t <= at) {
            self.next = Some(t + self.every);
        }
    }
}

fn write_states(
    engine: &Engine,
    partition: &crate::engine::store::Partition,
    as_of: i64,
    w: &mut (BufWriter<File>, PathBuf),
) -> Result<u64, ReplayError> {
    let mut ids = Vec::with_capacity(partition.len());
    partition.for_each(|id, _| ids.push(id.to_string()));
    ids.sort();
    for id in &ids {
        let Some(state) = partition.get(id) else { continue };
        let at = as_of.max(state.last_seen);
        let snap = engine.snapshot(&state, at);
        let value = engine.value_90d(&state, &snap);
        let line = StateLine {
            customer_id: id,
            score: snap.score,
            dimensions: snap.dimensions.into(),
            dimension_sums: state.raw_at(at, &engine.rules().scoring).into(),
            stage: state.stage,
            health: state.health,
            p_alive: snap.signals.p_alive,
            active_days: state.active_days,
            cadence_days: snap.signals.cadence_days,
            idle_days: snap.signals.idle_days,
            first_seen: state.first_seen,
            last_seen: state.last_seen,
            purchase_days: state.purchase_days(),
            repeat_purchases: snap.purchases.map(|p| p.repeat_purchases),
            recency_days: snap.purchases.map(|p| p.recency_days),
            age_days: snap.purchases.map(|p| p.age_days),
            spend_lifetime: state.spend_lifetime(),
            expected_purchases_90d: value.map(|v| v.expected_purchases),
            expected_value_90d: value.map(|v| v.expected_value),
            seq: state.seq,
        };
        write_line(w, &line)?;
    }
    Ok(ids.len() as u64)
}

/// Reads a JSONL output file back as JSON values (tests and tools).
pub fn read_jsonl(path: &Path) -> Result<Vec<serde_json::Value>, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
    let json = |source| ReplayError::Json { path: path.to_path_buf(), source };
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).map_err(json)).collect()
}

/// Writes `value` as one JSON line to an output file.
fn write_line(out: &mut (BufWriter<File>, PathBuf), value: &impl Serialize) -> Result<(), ReplayError> {
    let (w, path) = out;
    serde_json::to_writer(&mut *w, value).map_err(|source| ReplayError::Json { path: path.clone(), source })?;
    w.write_all(b"\n").map_err(io("writing", path))
}
