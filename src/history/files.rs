//! Reading event files: JSONL, or CSV with a header row, decoded as Kafka
//! records are (without keys), sorted by event time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::{ReplayError, ReplaySummary, io};
use crate::decode::{Envelope, decode};
use crate::engine::event::Event;
use crate::vocab::Format;

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
