//! `engage replay`: the engine driven from event files instead of Kafka, in
//! event-time order, for backfills and for checking the model.
//!
//! Every input line is either applied or written to `dlq.jsonl` with its
//! reason; churn sweeps run on event time every `sweep_every` (and once more
//! at the as-of time), so silent customers raise alerts exactly as they would
//! live. Events are held in memory to be sorted, about 100 bytes each.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::decode::{Envelope, decode};
use crate::engine::churn::Health;
use crate::engine::event::Event;
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
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError {
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
    let store = Store::new();
    let partition = store.partition(0);
    let mut out = Vec::new();
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
    let every = opts.sweep_every_ms.max(1);
    let mut next_sweep = events.first().map(|e| (e.ts_ms.div_euclid(every) + 1) * every);
    for event in &events {
        while let Some(t) = next_sweep.filter(|t| *t <= event.ts_ms) {
            engine.sweep(&partition, t, &mut out);
            next_sweep = Some(t + every);
        }
        match engine.apply(&partition, event, None, &mut out) {
            Outcome::Applied => summary.applied += 1,
            // A replay's partition has no bootstrap as-of: never Bootstrapped.
            Outcome::Duplicate | Outcome::Bootstrapped => summary.duplicates += 1,
            Outcome::UnknownType => summary.unknown_types += 1,
            // Replay applies no erasures.
            Outcome::BeforeErasure | Outcome::Erased => {}
        }
        write(&mut out, &mut summary)?;
    }
    let as_of = opts.as_of.or(events.last().map(|e| e.ts_ms));
    summary.as_of = as_of;
    if let Some(as_of) = as_of {
        while let Some(t) = next_sweep.filter(|t| *t < as_of) {
            engine.sweep(&partition, t, &mut out);
            next_sweep = Some(t + every);
        }
        engine.sweep(&partition, as_of, &mut out);
        write(&mut out, &mut summary)?;
        summary.customers = write_states(&engine, &partition, as_of, &mut states)?;
    }
    for (mut f, path) in [scores, alerts, dlq, states] {
        f.flush().map_err(io("writing", &path))?;
    }
    Ok(Replayed { summary, engine, customers: partition })
}

/// An input line that is not a usable event.
pub struct BadLine<'a> {
    /// The file it is in.
    pub file: &'a str,
    /// Its 1-based line number.
    pub line: u64,
    /// Why it is bad.
    pub error: &'a crate::decode::DecodeError,
    /// The line itself.
    pub value: &'a [u8],
}

/// The format of an input file, by its name: `*.csv` (any case) is CSV with
/// a header row ([`crate::decode::csv_row`]), anything else JSONL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON event a line.
    Jsonl,
    /// A header row naming the event fields, then one event a row.
    Csv,
}

impl InputFormat {
    /// The format of `path`.
    pub fn of(path: &Path) -> InputFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => InputFormat::Csv,
            _ => InputFormat::Jsonl,
        }
    }
}

/// Reads and decodes event files, JSONL or CSV ([`InputFormat`]), sorted by
/// event time (ties keep file and line order). Events after `as_of` are
/// counted and left out; bad lines and rows go to `on_bad`, with their line
/// number. Shared by `engage replay`, `fit`, `evaluate` and `bootstrap`.
pub fn read_events(
    inputs: &[PathBuf],
    as_of: Option<i64>,
    limits: &crate::decode::Limits,
    now: i64,
    summary: &mut ReplaySummary,
    mut on_bad: impl FnMut(BadLine<'_>) -> Result<(), ReplayError>,
) -> Result<Vec<Event<'static>>, ReplayError> {
    let mut events: Vec<(Event<'static>, usize, u64)> = Vec::new();
    for (file_index, path) in inputs.iter().enumerate() {
        let name = path.display().to_string();
        let reader = BufReader::new(File::open(path).map_err(io("opening", path))?);
        // One line or row: its number, the JSON event (or why there is
        // none) and the text as read, for the dead-letter report.
        let mut take = |line: u64, body: Result<&[u8], crate::decode::DecodeError>, value: &[u8]| {
            summary.lines += 1;
            match body.and_then(|b| decode(None, Format::Json, &Envelope::default(), b, limits, now)) {
                Ok(e) if as_of.is_some_and(|t| e.ts_ms > t) => summary.after_as_of += 1,
                Ok(e) => events.push((e.into_owned(), file_index, line)),
                Err(error) => {
                    summary.dead_letters += 1;
                    on_bad(BadLine { file: &name, line, error: &error, value })?;
                }
            }
            Ok(())
        };
        match InputFormat::of(path) {
            InputFormat::Jsonl => read_lines(reader, path, |line, text| take(line, Ok(text), text))?,
            InputFormat::Csv => read_rows(reader, path, |line, json, row| match json {
                Ok(json) => take(line, Ok(&json), row),
                Err(e) => take(line, Err(e), row),
            })?,
        }
    }
    events.sort_by_key(|(e, f, l)| (e.ts_ms, *f, *l));
    Ok(events.into_iter().map(|(e, ..)| e).collect())
}

/// Calls `f` with each non-blank line of a JSONL file and its 1-based number.
fn read_lines(
    mut reader: impl BufRead,
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io("reading", path))? == 0 {
            return Ok(());
        }
        line_no += 1;
        let line = buf.trim_ascii();
        if !line.is_empty() {
            f(line_no, line)?;
        }
    }
}

/// Calls `f` with each row of a CSV file after the header: the line it
/// starts on, the row as a JSON event (or why it is not one) and the row
/// as CSV text. A missing or unusable header row fails the whole file.
fn read_rows(
    reader: impl std::io::Read,
    path: &Path,
    mut f: impl FnMut(u64, Result<Vec<u8>, crate::decode::DecodeError>, &[u8]) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let mut rows = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let mut row = csv::ByteRecord::new();
    let header_error = |detail: String| ReplayError::Csv { path: path.to_path_buf(), line: 1, detail };
    let header = loop {
        if !read_row(&mut rows, &mut row, path)? {
            return Err(header_error("no header row".into()));
        }
        if !is_blank(&row) {
            let names: Vec<&str> = row.iter().map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
            break crate::decode::csv_row::CsvHeader::new(names).map_err(header_error)?;
        }
    };
    let mut text = Vec::new();
    while read_row(&mut rows, &mut row, path)? {
        if is_blank(&row) {
            continue;
        }
        let line = row.position().map_or(0, |p| p.line());
        text.clear();
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(&mut text);
        // Writing to memory cannot fail.
        let _ = w.write_byte_record(&row).and_then(|()| w.flush().map_err(csv::Error::from));
        drop(w);
        let value = text.strip_suffix(b"\n").unwrap_or(&text);
        f(line, header.to_json(&row), value)?;
    }
    Ok(())
}

/// Reads the next CSV row into `row`; false at the end of the file.
fn read_row(
    csv: &mut csv::Reader<impl std::io::Read>,
    row: &mut csv::ByteRecord,
    path: &Path,
) -> Result<bool, ReplayError> {
    csv.read_byte_record(row).map_err(|e| match e.into_kind() {
        csv::ErrorKind::Io(source) => ReplayError::Io { action: "reading", path: path.to_path_buf(), source },
        other => ReplayError::Csv { path: path.to_path_buf(), line: 0, detail: format!("{other:?}") },
    })
}

/// A row with no content (an empty line).
fn is_blank(row: &csv::ByteRecord) -> bool {
    row.iter().all(|c| c.trim_ascii().is_empty())
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
