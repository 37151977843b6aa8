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
        /// JSONL events (purchase and refund lines are used); repeat for several.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        /// End of the calibration period (RFC 3339); later events are ignored.
        #[arg(long)]
        as_of: String,
        /// Time unit of the parameters: weeks (as in the paper) or days.
        #[arg(long, default_value = "weeks")]
        time_unit: TimeUnit,
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
        /// Wire format: json or protobuf.
        #[arg(long, default_value = "json")]
        format: String,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum TimeUnit {
    Weeks,
    Days,
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

/// Starts the HTTP endpoint when `http.listen` is set. Binding happens
/// here, so a taken port fails start-up with a clear message.
async fn serve_http(
    config: &Config,
    store: &std::sync::Arc<engage::engine::store::Store>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.http.address() else { return Ok(None) };
    let metrics = engage::telemetry::install().context("installing the metrics recorder")?;
    let engine = engage::engine::Engine::new(engage::engine::Rules::new(config));
    let state = engage::http::AppState::new(store.clone(), engine, Some(metrics), config.http.customer_api);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding http.listen {addr}"))?;
    tracing::info!(%addr, "HTTP: /metrics /healthz /readyz /v1/customers");
    let shutdown = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = engage::http::serve_on(listener, state, shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    })))
}

/// mimalloc for every allocation in the process, librdkafka's included (the
/// `override` feature replaces `malloc`/`free`): glibc's arenas lock on a
/// free from another thread, and every record crosses threads (fetched by a
/// broker thread, freed by the main loop; produced by the main loop, freed
/// by the delivery thread). See README "Performance".
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc maps memory
/// in large aligned regions; where THP is `always` (the default on many
/// distributions) the first touch of each region faults in a whole 2 MiB
/// page: after 8 000 events engage held about 50 MiB instead of 25, and at
/// 1 M customers 384 B per customer instead of 354, with no throughput lost
/// (README "Performance"). Linux only; if the call fails nothing changes.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn tune_allocator() {
    unsafe extern "C" {
        fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
    }
    const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
    let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
    // SAFETY: prctl(2) with PR_SET_THP_DISABLE takes one integer flag (the
    // rest must be 0) and touches no memory of ours.
    unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) };
}

/// Gives mimalloc's free memory back to the OS: a forced collection of the
/// calling thread's heap and a purge of the process-wide arenas. The
/// pipeline calls it once the input goes quiet (`IdleRelease` in
/// `pipeline.rs`; README "Performance").
#[cfg(feature = "mimalloc")]
fn release_free_memory() {
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers and may be called from any
    // thread.
    unsafe { mi_collect(true) };
}

fn main() -> ExitCode {
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    tune_allocator();
    #[cfg(feature = "mimalloc")]
    engage::pipeline::set_memory_release(release_free_memory);
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
            let http = serve_http(&config, &store, &shutdown).await?;
            let result = engage::pipeline::run(config, store, shutdown.clone()).await;
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
            engage::demo::demo(opts, shutdown).await
        }
        Command::Fit { inputs, as_of, time_unit } => {
            let as_of = parse_time(&as_of).context("--as-of")?;
            let config = Config::default();
            let mut counts = engage::replay::ReplaySummary::default();
            let events = engage::replay::read_events(
                &inputs,
                Some(as_of),
                &config.input.limits(),
                engage::clock::wall_clock_ms(),
                &mut counts,
                |_| Ok(()),
            )?;
            let (unit_days, unit) = match time_unit {
                TimeUnit::Weeks => (7.0, "7days"),
                TimeUnit::Days => (1.0, "1day"),
            };
            let data = engage::fit::summaries(&events, as_of, unit_days);
            let bgnbd = engage::fit::fit_bgnbd(&data)?;
            let gamma_gamma = engage::fit::fit_gamma_gamma(&data).map_err(|e| e.to_string());
            let toml = format!(
                "[churn.bgnbd]\nr = {:.6}\nalpha = {:.6}\na = {:.6}\nb = {:.6}\ntime_unit = \"{unit}\"\n",
                bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b
            );
            let out = serde_json::json!({
                "bgnbd": bgnbd,
                "gamma_gamma": gamma_gamma.as_ref().ok(),
                "gamma_gamma_error": gamma_gamma.as_ref().err(),
                "input": { "lines": counts.lines, "bad_lines": counts.dead_letters, "after_as_of": counts.after_as_of },
                "config": toml,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            eprint!("{toml}");
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
            let format = match format.as_str() {
                "json" => engage::decode::Format::Json,
                "protobuf" => engage::decode::Format::Protobuf,
                other => anyhow::bail!("--format {other:?}: expected json or protobuf"),
            };
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
    }
}
