//! `engage loadgen`: realistic synthetic traffic into the two input topics,
//! at a target rate or as fast as the broker takes it.
//!
//! The traffic is a simulated [`Population`]: customers with their own visit
//! cadence (log-uniform from half a day to two weeks, so activity is
//! Zipf-like: a few customers are far more active than most), sessions of
//! clickstream events, purchases with log-uniform baskets, advocacy and
//! loyalty events at realistic rarity, customers who drift away (so churn
//! alerts happen) and some who come back. Simulated time starts
//! `history_days` ago and runs as fast as the target rate needs, never past
//! the wall clock. An optional fraction of records is replaced by bad ones
//! (each a docs/model.md "Events" dead-letter case), to exercise the dead-letter path.
//! Same seed, same records (`synth.rs`, which the demo, benchmarks and
//! tests draw from too).

pub mod synth;

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;

use crate::clock::wall_clock_ms;
use crate::config::Config;
use crate::engine::event::DAY_MS;
use crate::kafka::{KafkaSetupError, enqueue};
use crate::vocab::Format;
use crate::vocab::InputKind;
use synth::{Population, Record, SplitMix64};

/// What `engage loadgen` generates.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Events per second; `None` for as fast as the broker takes them.
    pub rate: Option<f64>,
    /// Simulated customers.
    pub customers: usize,
    /// Stop after this many records ...
    pub count: Option<u64>,
    /// ... or after this long (whichever comes first; neither: until the
    /// simulation reaches the present, or Ctrl-C).
    pub duration: Option<Duration>,
    /// Seed of the population and the bad-record draw.
    pub seed: u64,
    /// Wire format of the records.
    pub format: Format,
    /// Fraction of records replaced by bad ones, 0–1.
    pub bad_fraction: f64,
    /// How far back simulated time starts.
    pub history_days: f64,
    /// Print progress this often (stderr).
    pub progress_every: Duration,
}

/// What a load generation run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LoadSummary {
    /// Records acknowledged by the broker.
    pub records: u64,
    /// Of which bad (expected in the dead-letter topic).
    pub bad_records: u64,
    /// Records per topic: clickstream, purchases.
    pub clickstream: u64,
    /// Records on the purchases topic.
    pub purchases: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Records per second achieved.
    pub rate: f64,
}

/// Why load generation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The producer could not be created.
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    /// A record could not be enqueued (e.g. larger than the producer allows).
    #[error("cannot produce: {0}")]
    Send(rdkafka::error::KafkaError),
    /// Records were not acknowledged in time at the end.
    #[error("not every record was acknowledged by the broker: {0}")]
    Flush(rdkafka::error::KafkaError),
}

/// Bad records, one per docs/model.md "Events" case that a producer bug typically causes.
/// Each replaces a good record's value (the key is kept).
const BAD_VALUES: [&[u8]; 6] = [
    b"{\"event_id\":\"bad-1\",\"customer_id\":",
    b"{\"event_id\":\"bad-2\",\"type\":\"page_view\",\"timestamp\":\"2026-01-01T00:00:00Z\"}",
    b"{\"event_id\":\"bad-3\",\"customer_id\":\"x\",\"type\":\"purchase\",\"timestamp\":\"not a time\",\"amount\":1}",
    b"{\"event_id\":\"bad-4\",\"customer_id\":\"x\",\"type\":\"purchase\",\"timestamp\":\"2026-01-01T00:00:00Z\",\"amount\":-5}",
    b"\xff\xfe not utf-8",
    b"[1,2,3]",
];

/// Produces the simulated traffic until the count, the duration, the
/// present or `stop` is reached, whichever comes first.
pub async fn loadgen(config: &Config, opts: &LoadOptions, stop: CancellationToken) -> Result<LoadSummary, LoadError> {
    let producer: ThreadedProducer<DefaultProducerContext> = crate::kafka::client::load_producer(config, opts.rate)
        .create()
        .map_err(|e| KafkaSetupError::client("creating the load producer", e))?;
    let started = Instant::now();
    let mut sim = wall_clock_ms() - (opts.history_days * DAY_MS as f64) as i64;
    let mut population = Population::new(opts.seed, opts.customers, sim);
    let mut bad_rng = SplitMix64::new(opts.seed ^ 0xBAD);
    let mut summary = LoadSummary::default();
    let mut batch: Vec<Record> = Vec::new();
    // Simulated time per step, adapted so each step yields about a tenth of
    // a second of traffic (a step walks every customer once).
    let target_batch = opts.rate.map_or(20_000.0, |r| (r / 10.0).max(1.0));
    let mut step_ms = 3_600_000i64;
    let mut last_progress = Instant::now();
    let limit = opts.count.unwrap_or(u64::MAX);
    'outer: while summary.records < limit {
        if stop.is_cancelled() || opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let now = wall_clock_ms();
        if sim >= now {
            // Caught up with the present: from here traffic is what the
            // population does in real time.
            if opts.duration.is_none() && opts.count.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sim = (sim + step_ms).min(now);
        population.advance(sim, opts.format, &mut batch);
        let n = batch.len() as f64;
        if n < target_batch / 2.0 && step_ms < 30 * DAY_MS {
            step_ms *= 2;
        } else if n > target_batch * 2.0 && step_ms > 1_000 {
            step_ms /= 2;
        }
        for r in batch.drain(..) {
            if summary.records >= limit || stop.is_cancelled() {
                break 'outer;
            }
            let bad = opts.bad_fraction > 0.0 && bad_rng.next_f64() < opts.bad_fraction;
            let value = if bad {
                summary.bad_records += 1;
                BAD_VALUES[(bad_rng.next_u64() % BAD_VALUES.len() as u64) as usize]
            } else {
                &r.value[..]
            };
            match r.topic {
                InputKind::Clickstream => summary.clickstream += 1,
                InputKind::Purchases => summary.purchases += 1,
                // The simulation produces events only.
                InputKind::Erasures => {}
            }
            let topic = config.topics.input(r.topic);
            let record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(value);
            enqueue(&producer, record).await.map_err(LoadError::Send)?;
            summary.records += 1;
            if let Some(rate) = opts.rate {
                // Pace: record k is due at k / rate seconds.
                let due = Duration::from_secs_f64(summary.records as f64 / rate);
                let elapsed = started.elapsed();
                if due > elapsed + Duration::from_millis(2) {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
            if last_progress.elapsed() >= opts.progress_every {
                last_progress = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "loadgen: {} records ({} bad) in {:.0} s, {:.0}/s; simulated time {}",
                    summary.records,
                    summary.bad_records,
                    secs,
                    summary.records as f64 / secs,
                    crate::clock::format_time(sim)
                );
            }
        }
    }
    producer.flush(Duration::from_secs(60)).map_err(LoadError::Flush)?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rate = summary.records as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// `engage loadgen`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (brokers and topic names).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
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
    duration: Option<Duration>,
    /// Seed: the same seed gives the same records.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Wire format of the records.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
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
}

/// Runs `engage loadgen`: prints a JSON summary, progress on stderr.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    anyhow::ensure!((0.0..=1.0).contains(&args.bad_fraction), "--bad-fraction must be between 0 and 1");
    anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    if let Some(partitions) = args.create_topics {
        let created = crate::kafka::create_input_topics(&config, partitions).await?;
        if !created.is_empty() {
            eprintln!("loadgen: created {created:?}");
        }
    }
    let opts = LoadOptions {
        rate: args.rate,
        customers: args.customers,
        count: args.count,
        duration: args.duration,
        seed: args.seed,
        format: args.format,
        bad_fraction: args.bad_fraction,
        history_days: args.history_days,
        progress_every: Duration::from_secs(5),
    };
    let stop = crate::shutdown::on_signals().context("installing signal handlers")?;
    let summary = loadgen(&config, &opts, stop).await?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Envelope, Limits, decode};

    /// Every bad value is rejected by the decoder, so `--bad-fraction`
    /// records all land in the dead-letter topic.
    #[test]
    fn every_bad_value_is_dead_lettered() {
        let limits = Limits { max_record_bytes: 1 << 20, max_future_skew_ms: 300_000, max_amount: 1e6 };
        for value in BAD_VALUES {
            let env = Envelope { key: Some(b"x"), require_key: true, timestamp_ms: None, content_type: None };
            let topic = Some(InputKind::Purchases);
            assert!(decode(topic, Format::Json, &env, value, &limits, wall_clock_ms()).is_err(), "{value:?}");
        }
    }
}
