//! The `engage` command line: parse arguments, load config, set up logging,
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod allocator;

use engage::clock::parse_time;
use engage::config::Config;
use engage::replay::{ReplayOptions, replay};

/// Real-time customer engagement scores and churn alerts from Kafka event streams.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per
    /// line for log pipelines. RUST_LOG sets the level (default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor: consume the input topics, publish scores, alerts
    /// and dead letters. Stops cleanly on SIGTERM / SIGINT.
    Run {
        /// Configuration file (see engage.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run everything on this machine with no setup: an embedded Kafka-protocol
    /// broker, simulated customers, and the processor; prints scores and alerts
    /// as they happen. Stops on Ctrl-C or after --duration.
    Demo {
        /// Stop after this long (e.g. 60s); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Simulated customers.
        #[arg(long, default_value_t = 2000)]
        customers: usize,
        /// Simulated days per second until the present is reached.
        #[arg(long, default_value_t = 2.0)]
        days_per_second: f64,
        /// How many days of history to simulate.
        #[arg(long, default_value_t = 90.0)]
        history_days: f64,
        /// Where to serve /metrics ("" to disable).
        #[arg(long, default_value = "127.0.0.1:9898")]
        http: String,
        /// Seed for the simulated population.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Estimate the churn model's parameters from a purchase history: BG/NBD
    /// (r, alpha, a, b) by maximum likelihood, and Gamma-Gamma (p, q, gamma)
    /// on repeat customers' spend. Prints JSON, including a [churn.bgnbd]
    /// table to paste into engage.toml.
    Fit {
        /// Event files, JSONL or CSV (`*.csv`, with a header row); purchase
        /// and refund events are used. Repeat for several.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// End of the calibration period (RFC 3339); later events are ignored.
        #[arg(long)]
        as_of: String,
        /// Time unit of the parameters: weeks (as in the paper) or days.
        #[arg(long, value_enum, default_value = "weeks")]
        time_unit: engage::fit::TimeUnit,
    },
    /// Produce realistic synthetic traffic into the input topics: a skewed
    /// customer population with sessions, purchases, customers who drift
    /// away and some who return, optionally some bad records. Prints a JSON
    /// summary; progress goes to stderr.
    Loadgen {
        /// Configuration file (brokers and topic names).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events per second (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<f64>,
        /// Simulated customers.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Stop after this many records.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (e.g. 10m). Without --count or --duration,
        /// stops when the simulation reaches the present.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Seed: the same seed gives the same records.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Wire format of the records.
        #[arg(long, value_enum, default_value = "json")]
        format: engage::vocab::Format,
        /// Fraction of records replaced by bad ones (dead letters), 0-1.
        #[arg(long, default_value_t = 0.0)]
        bad_fraction: f64,
        /// Days of simulated history before the present.
        #[arg(long, default_value_t = 365.0)]
        history_days: f64,
        /// Create the input topics (co-partitioned) with this many partitions
        /// when they do not exist.
        #[arg(long)]
        create_topics: Option<i32>,
    },
    /// Manage the topics engage writes.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Run the engine over event files (JSONL, or CSV with a header row),
    /// without Kafka, in event-time order.
    ///
    /// Writes DIR/scores.jsonl, DIR/alerts.jsonl, DIR/dlq.jsonl (bad lines with
    /// their reason) and DIR/state.jsonl (every customer as of --as-of).
    Replay {
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
    },
    /// Start from history: run the engine over event files (as `replay`),
    /// then write every customer's state into the state changelog, in the
    /// partition the upstream producers put the customer's key in, so
    /// `engage run` restores it. Live events at or before --as-of are then
    /// taken as already applied.
    ///
    /// Refuses while members of run.group_id are consuming or the changelog
    /// holds records, unless --force. Prints a JSON summary; the replay's
    /// outputs (dead letters included) go to --out.
    Bootstrap {
        /// Configuration file (brokers, topics, group, upstream partitioner).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A file of events from either topic: JSONL, or CSV (`*.csv`) with a
        /// header row naming the event fields. Repeat for several.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// Apply events up to this RFC 3339 time (default: the last event
        /// time). The history must be complete up to it.
        #[arg(long)]
        as_of: Option<String>,
        /// Directory for the replay's outputs (scores, alerts, dead letters,
        /// states).
        #[arg(long, default_value = "bootstrap-out")]
        out: PathBuf,
        /// Event time between churn sweeps (e.g. 1h, 1d).
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        sweep_every: std::time::Duration,
        /// Write even while the group is consuming or the changelog holds state.
        #[arg(long)]
        force: bool,
        /// Records read from the end of each input partition to check
        /// topics.upstream_partitioner (0: no check).
        #[arg(long, default_value_t = 200)]
        check_records: usize,
    },
    /// Judge the engine's predictions against what customers did next: runs
    /// the engine (as `replay`) up to --calibration-end, then compares each
    /// customer's health, stage, score, P(alive) and BG/NBD expectations with
    /// their purchases and activity up to --holdout-end.
    ///
    /// Prints the report as JSON and writes DIR/report.json, every customer's
    /// prediction and outcome (DIR/customers.jsonl), SVG plots
    /// (calibration_holdout.svg, score_deciles.svg, roc.svg) and the
    /// calibration replay's outputs (DIR/calibration/).
    Evaluate {
        /// A file of events from either topic: JSONL, or CSV (`*.csv`) with a
        /// header row naming the event fields. Repeat for several.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// End of the calibration period (RFC 3339), best the end of a UTC day.
        #[arg(long)]
        calibration_end: String,
        /// End of the holdout (RFC 3339); default: the last event time.
        #[arg(long)]
        holdout_end: Option<String>,
        /// Output directory.
        #[arg(long, default_value = "evaluate-out")]
        out: PathBuf,
        /// Scoring configuration (the same file `engage run` uses).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Event time between churn sweeps (e.g. 1h, 1d).
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        sweep_every: std::time::Duration,
        /// Also search [churn]'s dormant thresholds for the best F1 of
        /// "dormant predicts no purchase" on the holdout, and print a [churn]
        /// table to paste (on stderr; also in the report).
        #[arg(long)]
        suggest: bool,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create the output topics (scores, alerts, dead letters) that do not exist.
    Create {
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    allocator::tune();
    #[cfg(feature = "mimalloc")]
    engage::pipeline::set_memory_release(allocator::release_free_memory);
    let cli = Cli::parse();
    // The demo prints its own narrative; keep library logs to warnings there.
    let default_level = if matches!(cli.command, Command::Demo { .. }) { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("engage: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engage: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = Config::load(config.as_deref())?;
            let shutdown = engage::shutdown::on_signals().context("installing signal handlers")?;
            let store = std::sync::Arc::new(engage::engine::store::Store::new());
            let status = std::sync::Arc::new(engage::pipeline::Status::new());
            let http = engage::http::start(&config, &store, &status, &shutdown).await?;
            let result = engage::pipeline::run(config, store, status, shutdown.clone()).await;
            shutdown.cancel();
            if let Some(h) = http {
                let _ = h.await;
            }
            result?;
            Ok(())
        }
        Command::Demo { duration, customers, days_per_second, history_days, http, seed } => {
            let http = if http.is_empty() {
                None
            } else {
                Some(http.parse().with_context(|| format!("--http {http:?} is not host:port"))?)
            };
            let shutdown = engage::shutdown::on_signals().context("installing signal handlers")?;
            let opts = engage::demo::DemoOptions { duration, customers, days_per_second, history_days, http, seed };
            Ok(engage::demo::demo(opts, shutdown).await?)
        }
        Command::Fit { inputs, as_of, time_unit } => {
            let as_of = parse_time(&as_of).context("--as-of")?;
            let report = engage::fit::fit_history(&inputs, as_of, time_unit)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprint!("{}", report.config);
            Ok(())
        }
        Command::Loadgen {
            config,
            rate,
            customers,
            count,
            duration,
            seed,
            format,
            bad_fraction,
            history_days,
            create_topics,
        } => {
            let config = Config::load(config.as_deref())?;
            anyhow::ensure!((0.0..=1.0).contains(&bad_fraction), "--bad-fraction must be between 0 and 1");
            anyhow::ensure!(rate.is_none_or(|r| r > 0.0), "--rate must be positive");
            if let Some(partitions) = create_topics {
                let created = engage::kafka::create_input_topics(&config, partitions).await?;
                if !created.is_empty() {
                    eprintln!("loadgen: created {created:?}");
                }
            }
            let opts = engage::loadgen::LoadOptions {
                rate,
                customers,
                count,
                duration,
                seed,
                format,
                bad_fraction,
                history_days,
                progress_every: std::time::Duration::from_secs(5),
            };
            let stop = engage::shutdown::on_signals().context("installing signal handlers")?;
            let summary = engage::loadgen::loadgen(&config, &opts, stop).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Topics { action: TopicsAction::Create { config } } => {
            let config = Config::load(config.as_deref())?;
            let created = engage::kafka::create_output_topics(&config).await?;
            println!("{}", serde_json::json!({ "created": created }));
            Ok(())
        }
        Command::Replay { inputs, as_of, out, config, sweep_every } => {
            let config = Config::load(config.as_deref())?;
            let opts = ReplayOptions {
                inputs,
                as_of: as_of.as_deref().map(parse_time).transpose().context("--as-of")?,
                out_dir: out,
                sweep_every_ms: sweep_every.as_millis() as i64,
            };
            let summary = replay(&config, &opts)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Bootstrap { config, inputs, as_of, out, sweep_every, force, check_records } => {
            let config = Config::load(config.as_deref())?;
            let opts = engage::bootstrap::BootstrapOptions {
                inputs,
                as_of: as_of.as_deref().map(parse_time).transpose().context("--as-of")?,
                out_dir: out,
                sweep_every_ms: sweep_every.as_millis() as i64,
                force,
                sample_per_partition: check_records,
            };
            if config.run.create_topics {
                engage::kafka::create_output_topics(&config).await?;
            }
            let summary = tokio::task::block_in_place(|| engage::bootstrap::bootstrap(&config, &opts))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            eprintln!(
                "bootstrap: {} customers as of {} written to {} ({} partitions, {:?} partitioner) at {:.0} customers/s",
                summary.customers_written,
                summary.as_of_time,
                summary.changelog,
                summary.partitions,
                summary.partitioner,
                summary.customers_per_second
            );
            Ok(())
        }
        Command::Evaluate { inputs, calibration_end, holdout_end, out, config, sweep_every, suggest } => {
            let config = Config::load(config.as_deref())?;
            let opts = engage::evaluate::EvaluateOptions {
                inputs,
                calibration_end: parse_time(&calibration_end).context("--calibration-end")?,
                holdout_end: holdout_end.as_deref().map(parse_time).transpose().context("--holdout-end")?,
                out_dir: out,
                sweep_every_ms: sweep_every.as_millis() as i64,
                suggest,
            };
            let report = engage::evaluate::evaluate(&config, &opts)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(s) = &report.suggest {
                eprint!("{}", s.config);
            }
            Ok(())
        }
    }
}
