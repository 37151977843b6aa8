//! The `engage` command line: parse arguments, set up logging and the
//! runtime, and dispatch to the command (`engage::cmd`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod allocator;

use engage::cmd;

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
    Run(cmd::run::Args),
    /// Run everything on this machine with no setup: an embedded Kafka-protocol
    /// broker, simulated customers, and the processor; prints scores and alerts
    /// as they happen. Stops on Ctrl-C or after --duration.
    Demo(cmd::demo::Args),
    /// Estimate the churn model's parameters from a purchase history: BG/NBD
    /// (r, alpha, a, b) by maximum likelihood, and Gamma-Gamma (p, q, gamma)
    /// on repeat customers' spend. Prints JSON, including a [churn.bgnbd]
    /// table to paste into engage.toml.
    Fit(cmd::fit::Args),
    /// Produce realistic synthetic traffic into the input topics: a skewed
    /// customer population with sessions, purchases, customers who drift
    /// away and some who return, optionally some bad records. Prints a JSON
    /// summary; progress goes to stderr.
    Loadgen(cmd::loadgen::Args),
    /// Manage the topics engage writes.
    Topics(cmd::topics::Args),
    /// Run the engine over event files (JSONL, or CSV with a header row),
    /// without Kafka, in event-time order.
    ///
    /// Writes DIR/scores.jsonl, DIR/alerts.jsonl, DIR/dlq.jsonl (bad lines with
    /// their reason) and DIR/state.jsonl (every customer as of --as-of).
    Replay(cmd::replay::Args),
    /// Start from history: run the engine over event files (as `replay`),
    /// then write every customer's state into the state changelog, in the
    /// partition the upstream producers put the customer's key in, so
    /// `engage run` restores it. Live events at or before --as-of are then
    /// taken as already applied.
    ///
    /// Refuses while members of run.group_id are consuming or the changelog
    /// holds records, unless --force. Prints a JSON summary; the replay's
    /// outputs (dead letters included) go to --out.
    Bootstrap(cmd::bootstrap::Args),
    /// Judge the engine's predictions against what customers did next: runs
    /// the engine (as `replay`) up to --calibration-end, then compares each
    /// customer's health, stage, score, P(alive) and BG/NBD expectations with
    /// their purchases and activity up to --holdout-end.
    ///
    /// Prints the report as JSON and writes DIR/report.json, every customer's
    /// prediction and outcome (DIR/customers.jsonl), SVG plots
    /// (calibration_holdout.svg, score_deciles.svg, roc.svg) and the
    /// calibration replay's outputs (DIR/calibration/).
    Evaluate(cmd::evaluate::Args),
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
            // Secrets never reach the message engage writes itself; this
            // also covers what a library quoted.
            eprintln!("engage: error: {}", engage::config::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => cmd::run::run(args).await,
        Command::Demo(args) => cmd::demo::run(args).await,
        Command::Fit(args) => cmd::fit::run(args),
        Command::Loadgen(args) => cmd::loadgen::run(args).await,
        Command::Topics(args) => cmd::topics::run(args).await,
        Command::Replay(args) => cmd::replay::run(args),
        Command::Bootstrap(args) => cmd::bootstrap::run(args).await,
        Command::Evaluate(args) => cmd::evaluate::run(args),
    }
}
