//! `engage replay`: the engine over event files, without Kafka, in
//! event-time order (`crate::history`).

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::history::{ReplayOptions, replay};

/// `engage replay`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// A file of events from either topic: JSONL, or CSV (`*.csv`) with a
    /// header row naming the event fields. Repeat for several.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// Apply events up to this RFC 3339 time and report state as of it
    /// (default: the last event time).
    #[arg(long)]
    as_of: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Scoring configuration (the same file `engage run` uses).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Event time between churn sweeps (e.g. 1h, 1d).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    sweep_every: std::time::Duration,
}

/// Runs `engage replay`: writes the four files and prints a JSON summary.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let opts = ReplayOptions {
        inputs: args.inputs,
        as_of: args.as_of.as_deref().map(crate::clock::parse_time).transpose().context("--as-of")?,
        out_dir: args.out,
        sweep_every_ms: args.sweep_every.as_millis() as i64,
    };
    let summary = replay(&config, &opts)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
