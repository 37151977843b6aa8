//! The `engage` command line: parse arguments, load config, set up logging,
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use engage::config::Config;
use engage::replay::{ReplayOptions, parse_time, replay};

/// Real-time customer engagement scores and churn alerts from Kafka event streams.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Manage the topics engage writes.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Run the engine over JSONL event files, without Kafka, in event-time order.
    ///
    /// Writes DIR/scores.jsonl, DIR/alerts.jsonl, DIR/dlq.jsonl (bad lines with
    /// their reason) and DIR/state.jsonl (every customer as of --as-of).
    Replay {
        /// A JSONL file of events from either topic; repeat for several.
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("engage: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
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
            let store = std::sync::Arc::new(engage::store::Store::new());
            engage::pipeline::run(config, store, shutdown).await?;
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
    }
}
