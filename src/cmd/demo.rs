//! `engage demo`: the whole product on one machine with no setup. An
//! embedded Kafka-protocol broker (librdkafka's mock cluster), a simulated
//! customer population producing clickstream and purchases, `engage run`
//! against it, and a watcher printing score movers, stage changes and churn
//! alerts as they happen.
//!
//! Simulated time starts `history_days` in the past and runs at
//! `days_per_second` until it reaches the present, then follows the clock,
//! so a minute of demo shows weeks of customer behaviour.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use crate::clock::wall_clock_ms;
use crate::cmd::loadgen::synth::Population;
use crate::config::Config;
use crate::engine::store::Store;
use crate::vocab::Format;

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long (default: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Simulated customers.
    pub customers: usize,
    /// Simulated days per wall-clock second until the present is reached.
    pub days_per_second: f64,
    /// How far back simulated time starts.
    pub history_days: f64,
    /// Where `/metrics` is served, if anywhere.
    pub http: Option<SocketAddr>,
    /// Where the customer API is served (without tokens), if anywhere.
    pub api: Option<SocketAddr>,
    /// Seed of the simulated population.
    pub seed: u64,
}

const DAY_MS: f64 = 86_400_000.0;

/// Why the demo stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// librdkafka's mock cluster could not start.
    #[error("starting the embedded broker")]
    Broker(#[source] rdkafka::error::KafkaError),
    /// A topic could not be created on it.
    #[error("creating topic {name}")]
    Topic {
        /// The topic.
        name: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The HTTP endpoint could not start (is the port taken? see --http).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The customer API could not start (is the port taken? see --api).
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// The processor stopped with an error.
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    /// The processor's task panicked.
    #[error("the processor task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// `engage demo`'s command line.
#[derive(clap::Args)]
pub struct Args {
    /// Stop after this long (e.g. 60s); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
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
    /// Where to serve the customer API, without tokens ("" to disable).
    #[arg(long, default_value = "127.0.0.1:9899")]
    api: String,
    /// Seed for the simulated population.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `engage demo` until Ctrl-C or `--duration`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let address = |flag: &str, value: &str| -> anyhow::Result<Option<SocketAddr>> {
        if value.is_empty() {
            return Ok(None);
        }
        Ok(Some(value.parse().with_context(|| format!("{flag} {value:?} is not host:port"))?))
    };
    let http = address("--http", &args.http)?;
    let api = address("--api", &args.api)?;
    let shutdown = crate::shutdown::on_signals().context("installing signal handlers")?;
    let opts = DemoOptions {
        duration: args.duration,
        customers: args.customers,
        days_per_second: args.days_per_second,
        history_days: args.history_days,
        http,
        api,
        seed: args.seed,
    };
    Ok(demo(opts, shutdown).await?)
}

/// Runs the demo until `duration` or `shutdown`.
pub async fn demo(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let mock = MockCluster::new(1).map_err(DemoError::Broker)?;
    let create = |name: &str| {
        mock.create_topic(name, 6, 1).map_err(|source| DemoError::Topic { name: name.to_string(), source })
    };
    let bootstrap = mock.bootstrap_servers();
    let mut config = Config::default();
    let t = &config.topics;
    for name in [&t.clickstream, &t.purchases, &t.scores, &t.alerts, &t.dlq] {
        create(name)?;
    }
    config.run.group_id = "engage-demo".into();
    let changelog = crate::kafka::changelog::topic_name(&config);
    create(&changelog)?;
    let kafka = &mut config.kafka.properties;
    kafka.insert("bootstrap.servers".into(), bootstrap.clone());
    kafka.insert("session.timeout.ms".into(), "6000".into());
    kafka.insert("max.poll.interval.ms".into(), "7000".into());
    config.run.sweep_interval = Duration::from_millis(500);
    config.run.log_interval = Duration::from_secs(3600);

    println!("engage demo");
    println!("  embedded Kafka-protocol broker: {bootstrap}  (point any Kafka client at it)");
    println!(
        "  topics: {} + {} → {}, {}, {}",
        config.topics.clickstream,
        config.topics.purchases,
        config.topics.scores,
        config.topics.alerts,
        config.topics.dlq
    );
    let store = Arc::new(Store::new());
    let status = Arc::new(crate::pipeline::Status::new());
    let stop = shutdown.child_token();
    config.http.listen = opts.http.map(|a| a.to_string()).unwrap_or_default();
    if crate::http::start(&config, &status, &stop).await?.is_some() {
        println!("  HTTP: http://{}/metrics, /readyz", config.http.listen);
    }
    // One instance on this machine: its API needs no tokens and owns every
    // partition.
    config.api.listen = opts.api.map(|a| a.to_string()).unwrap_or_default();
    config.api.allow_unauthenticated = true;
    let api = crate::api::start(&config, store.clone(), status.clone(), stop.clone())?;
    if let Some(api) = &api {
        config.api.advertised_url = api.advertised_url().to_string();
        println!("  API: http://{}/v1/customers?health=at_risk, /v1/customers/{{id}}", api.listen());
    }
    println!(
        "  {} simulated customers, starting {} days ago at {} days/s; Ctrl-C stops\n",
        opts.customers, opts.history_days, opts.days_per_second
    );

    let pipeline = tokio::spawn(crate::pipeline::run(config.clone(), store.clone(), status.clone(), stop.clone()));
    let produced = Arc::new(AtomicU64::new(0));
    let sim_now = Arc::new(AtomicI64::new(0));
    let generator =
        tokio::spawn(generate(config.clone(), opts.clone(), stop.clone(), produced.clone(), sim_now.clone()));
    let watcher = tokio::spawn(watch(config.clone(), stop.clone(), produced.clone(), sim_now.clone(), store.clone()));

    match opts.duration {
        Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = shutdown.cancelled() => {} },
        None => shutdown.cancelled().await,
    }
    let customers = store.customers();
    stop.cancel();
    let _ = generator.await;
    let _ = watcher.await;
    let summary = pipeline.await.map_err(DemoError::Task)??;
    if let Some(api) = api {
        api.stopped().await;
    }
    println!(
        "\nstopped: {} records in, {} applied, {} dead letters, {} outputs, {} customers",
        summary.records, summary.applied, summary.dead_letters, summary.outputs, customers
    );
    drop(mock);
    Ok(())
}

async fn generate(
    config: Config,
    opts: DemoOptions,
    stop: CancellationToken,
    produced: Arc<AtomicU64>,
    sim_now: Arc<AtomicI64>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = match ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.properties["bootstrap.servers"])
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo: cannot create the traffic producer: {e}");
            return;
        }
    };
    let mut sim = (wall_clock_ms() as f64 - opts.history_days * DAY_MS) as i64;
    let mut population = Population::new(opts.seed, opts.customers, sim);
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.is_cancelled() {
        tokio::select! { _ = tick.tick() => {}, _ = stop.cancelled() => break }
        sim = (sim + (opts.days_per_second * DAY_MS / 10.0) as i64).min(wall_clock_ms());
        sim_now.store(sim, Ordering::Relaxed);
        population.advance(sim, Format::Json, &mut batch);
        for r in batch.drain(..) {
            let topic = config.topics.input(r.topic);
            let record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..]);
            if let Err(e) = crate::kafka::enqueue(&producer, record).await {
                eprintln!("demo: cannot produce traffic: {e}");
                return;
            }
            produced.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
}

async fn watch(
    config: Config,
    stop: CancellationToken,
    produced: Arc<AtomicU64>,
    sim_now: Arc<AtomicI64>,
    store: Arc<Store>,
) {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.properties["bootstrap.servers"])
        .set("group.id", "engage-demo-watch")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: cannot create the watcher: {e}");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&config.topics.scores, &config.topics.alerts]) {
        eprintln!("demo: cannot subscribe the watcher: {e}");
        return;
    }
    let mut stages: HashMap<String, String> = HashMap::new();
    let mut alert_counts: HashMap<String, u64> = HashMap::new();
    let (mut scores, mut printed) = (0u64, 0u32);
    let mut movers: Vec<(f64, String, String)> = Vec::new();
    let mut last = Instant::now();
    let mut last_produced = 0;
    let mut report = tokio::time::interval(Duration::from_secs(2));
    report.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = report.tick() => {
                let n = produced.load(Ordering::Relaxed);
                let rate = (n - last_produced) as f64 / last.elapsed().as_secs_f64();
                last_produced = n;
                last = Instant::now();
                let day = time::OffsetDateTime::from_unix_timestamp(sim_now.load(Ordering::Relaxed) / 1000)
                    .map(|t| t.date().to_string()).unwrap_or_default();
                movers.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
                let top: Vec<String> = movers.iter().take(3).map(|(d, c, why)| format!("{c} {d:+.1} ({why})")).collect();
                let count = |k: &str| alert_counts.get(k).copied().unwrap_or(0);
                println!("[{day}] {rate:>7.0} events/s | {scores} score changes | {} customers | alerts: at_risk {} dormant {} reactivated {} | movers: {}",
                    store.customers(), count("at_risk"), count("dormant"), count("reactivated"), top.join(", "));
                movers.clear();
                printed = 0;
            }
            message = consumer.recv() => {
                let Ok(m) = message else { continue };
                let Some(Ok(v)) = m.payload().map(serde_json::from_slice::<serde_json::Value>) else { continue };
                let customer = v["customer_id"].as_str().unwrap_or("?").to_string();
                if m.topic() == config.topics.alerts {
                    let kind = v["kind"].as_str().unwrap_or("?").to_string();
                    *alert_counts.entry(kind.clone()).or_default() += 1;
                    if printed < 8 {
                        printed += 1;
                        let why = v["reasons"].as_array().and_then(|r| r.first()).map(|r| {
                            format!("{} {:.2} (threshold {})", r["signal"].as_str().unwrap_or(""), r["value"].as_f64().unwrap_or(0.0), r["threshold"])
                        }).unwrap_or_else(|| format!("back after {:.1} days", v["idle_days"].as_f64().unwrap_or(0.0)));
                        println!("  ALERT {customer} {kind}: {why}; score {:.1}, P(alive) {:.2}",
                            v["score"].as_f64().unwrap_or(0.0), v["p_alive"].as_f64().unwrap_or(0.0));
                    }
                } else {
                    scores += 1;
                    let stage = v["stage"].as_str().unwrap_or("?").to_string();
                    if let Some(before) = stages.insert(customer.clone(), stage.clone())
                        && before != stage && printed < 8 {
                            printed += 1;
                            println!("  STAGE {customer}: {before} → {stage} (score {:.1})", v["score"].as_f64().unwrap_or(0.0));
                        }
                    if let (Some(now), Some(prev)) = (v["score"].as_f64(), v["previous_score"].as_f64()) {
                        let why = v["drivers"][0]["dimension"].as_str().unwrap_or("").to_string();
                        movers.push((now - prev, customer, why));
                    }
                }
            }
        }
    }
}
