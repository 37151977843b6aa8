//! The customer API's cost and latency, through Apache Kafka on loopback (a
//! private node, or the broker at `ENGAGE_TEST_BOOTSTRAP`). Not part of the
//! test suite: `scripts/bench-api`.
//!
//! 1. **Processing with and without API load, in one run.** A backlog of N
//!    events (`API_EVENTS`, 6 M) over C customers (`API_CUSTOMERS`,
//!    100 000), placed by murmur2 as upstream producers would; one
//!    `engage run` (release build) with the API on and a token file
//!    processes it. Windows of `API_WINDOW_SECONDS` (5) alternate: no
//!    requests, then lookups of random customers at `API_RATE` requests/s
//!    (3 000), paced on a fixed schedule, each with the bearer token over
//!    keep-alive connections. The processing rate of each window comes from
//!    engage's `engage_records_in_total`; the window the backlog ends in is
//!    dropped. Reports the median and range of each kind and the ratio.
//! 2. **A forwarded lookup's latency.** A second instance joins the group;
//!    once the partitions are split, lookups are sent to the first
//!    instance at `API_LATENCY_RATE` (1 000) requests/s, in alternating
//!    blocks of `API_LATENCY_SECONDS` (10): customers the second instance
//!    owns (forwarded, one hop) and customers the first owns (answered
//!    locally), four blocks each. Latency is measured from each request's
//!    scheduled send time (an open-loop schedule, so a stall counts in
//!    full), to the whole answer read.
//!
//! Both phases run on the same machine as the broker and the load
//! generator, which compete with engage for the CPU: the figures are what
//! the API costs on such a machine, not on an idle one.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics};
use engage::cmd::loadgen::synth;
use engage::vocab::{Format, InputKind};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 4;
const TOKEN: &str = "bench-token-0123456789abcdef";
const DAY_MS: i64 = 86_400_000;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Produces `n` synthetic events over `customers` customers, murmur2-placed,
/// in chunks (a few hundred MB at once otherwise).
fn backlog(broker: &Broker, topics: &Topics, n: usize, customers: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = broker
        .client_config()
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let now = engage::clock::wall_clock_ms();
    let start = now - 60 * DAY_MS;
    let step = (60 * DAY_MS / n as i64).max(1);
    let chunk = 500_000;
    for (c, from) in (0..n).step_by(chunk).enumerate() {
        let len = chunk.min(n - from);
        let records = synth::records(c as u64 + 1, len, customers, start + from as i64 * step, step, Format::Json);
        for r in &records {
            let topic = if r.topic == InputKind::Purchases { &topics.purchases } else { &topics.clickstream };
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..]);
            while let Err((_, back)) = producer.send(record) {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What a paced run of requests got.
#[derive(Default)]
struct Paced {
    sent: usize,
    by_status: BTreeMap<u16, usize>,
    /// Latency of each answered request, from its scheduled send time.
    latencies: Vec<Duration>,
    /// The same from when it was actually sent (without the client's own
    /// delay: tokio's timers fire up to a millisecond late).
    service: Vec<Duration>,
    seconds: f64,
}

impl Paced {
    /// The `q` quantile of `latencies` in ms (sorted).
    fn quantile(&self, q: f64) -> f64 {
        quantile(&self.latencies, q)
    }

    /// The `q` quantile of `service` in ms (sorted).
    fn service_quantile(&self, q: f64) -> f64 {
        quantile(&self.service, q)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// GETs `/v1/customers/{id}` at `base` for ids drawn in turn from `ids`,
/// `rate` a second for `seconds`, on a fixed schedule; extra headers in
/// `forwarded`.
async fn paced(client: &HttpClient, base: &str, ids: &[String], rate: f64, seconds: f64) -> Paced {
    let n = (rate * seconds) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let request = hyper::Request::get(format!("{base}/v1/customers/{}", ids[i % ids.len()]))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::new())
            .unwrap();
        let client = client.clone();
        tasks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let status = match client.request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            (status, at.elapsed(), sent.elapsed())
        });
    }
    let mut out = Paced { sent: n, ..Paced::default() };
    while let Some(done) = tasks.join_next().await {
        let (status, latency, service) = done.unwrap();
        *out.by_status.entry(status).or_default() += 1;
        if status != 0 {
            out.latencies.push(latency);
            out.service.push(service);
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out.latencies.sort();
    out.service.sort();
    out
}

/// CPU seconds the threads of `pid` named `name` have used (Linux: the
/// API's runtime threads are all `engage-api`).
fn threads_cpu(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .map(|tid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let field =
                |k: usize| rest.split_whitespace().nth(k - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            (field(14) + field(15)) / 100.0
        })
        .sum()
}

fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let m = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (m, v[0], v[v.len() - 1])
}

fn start_instance(
    dir: &std::path::Path,
    broker: &Broker,
    topics: &Topics,
    tokens: &std::path::Path,
) -> (Engage, String, String) {
    let (ops, api) = (common::free_addr(), common::free_addr());
    // librdkafka's session and poll timeouts, not the tests' short ones: a
    // restore on a busy machine must not push an instance out of the group.
    let config = topics
        .config(broker, "sweep_interval = \"1h\"\n")
        .replace("\"session.timeout.ms\" = 6000\n", "")
        .replace("\"max.poll.interval.ms\" = 7000\n", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{ops}\""))
        + &format!("\n[api]\nlisten = \"{api}\"\ntoken_file = \"{}\"\n", tokens.display());
    (Engage::start(dir, &config), ops, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn api_load_and_forwarded_latency() {
    let n: usize = env("API_EVENTS", 6_000_000);
    let customers: u64 = env("API_CUSTOMERS", 100_000);
    let rate: f64 = env("API_RATE", 3000.0);
    let window: f64 = env("API_WINDOW_SECONDS", 5.0);
    let latency_rate: f64 = env("API_LATENCY_RATE", 1000.0);
    let latency_seconds: f64 = env("API_LATENCY_SECONDS", 10.0);

    let broker = Broker::start();
    let topics = Topics::create(&broker, PARTITIONS).await;
    let t = Instant::now();
    backlog(&broker, &topics, n, customers);
    println!("api bench: {n} events over {customers} customers produced in {:.1?}", t.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let ids: Vec<String> = {
        // A fixed shuffle of every customer id.
        let mut v: Vec<u64> = (0..customers).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
        v.into_iter().map(|c| format!("cust-{c:07}")).collect()
    };
    // Idle connections go before engage closes them (10 s idle).
    let client: HttpClient =
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(5)).build_http();

    // 1. Processing rate, windows alternating without and with API load.
    let (a, ops, api) = start_instance(dir.path(), &broker, &topics, &tokens);
    common::wait_for_records_read(&ops, &a);
    let base = format!("http://{api}");
    let (mut off, mut on, mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut api_stats = Vec::new();
    let mut api_cpu_per_k = Vec::new();
    let mut loaded = false;
    let pid = a.child.id();
    loop {
        let (r0, c0, t0) = (common::records_read(&ops), common::cpu_seconds(pid), Instant::now());
        let api0 = threads_cpu(pid, "engage-api");
        let load = if loaded {
            Some(paced(&client, &base, &ids, rate, window).await)
        } else {
            tokio::time::sleep(Duration::from_secs_f64(window)).await;
            None
        };
        let (r1, c1, secs) = (common::records_read(&ops), common::cpu_seconds(pid), t0.elapsed().as_secs_f64());
        if r1 as usize >= n {
            break;
        }
        let (events, cpu) = ((r1 - r0) / secs, (c1 - c0) / secs);
        let api_cpu = (threads_cpu(pid, "engage-api") - api0) / secs;
        if let Some(p) = load {
            println!(
                "  window with {:.0} req/s: {events:.0} events/s, engage {cpu:.2} CPU of which the API {api_cpu:.3}, answers {:?}, p50 {:.2} ms p99 {:.2} ms",
                p.sent as f64 / p.seconds,
                p.by_status,
                p.quantile(0.5),
                p.quantile(0.99)
            );
            on.push(events);
            cpu_on.push(cpu);
            api_cpu_per_k.push(api_cpu / (p.sent as f64 / p.seconds) * 1000.0);
            api_stats.push(p);
        } else {
            println!("  window without requests: {events:.0} events/s, engage {cpu:.2} CPU");
            off.push(events);
            cpu_off.push(cpu);
        }
        loaded = !loaded;
    }
    let (off_m, off_lo, off_hi) = median_range(off.clone());
    let (on_m, on_lo, on_hi) = median_range(on.clone());
    let (cpu_off_m, _, _) = median_range(cpu_off);
    let (cpu_on_m, _, _) = median_range(cpu_on);
    let (api_k, api_k_lo, api_k_hi) = median_range(api_cpu_per_k);
    let achieved: Vec<f64> = api_stats.iter().map(|p| p.sent as f64 / p.seconds).collect();
    let (achieved_m, _, _) = median_range(achieved);
    let answered: usize = api_stats.iter().map(|p| p.by_status.get(&200).copied().unwrap_or(0)).sum();
    let sent: usize = api_stats.iter().map(|p| p.sent).sum();

    // 2. A second instance; forwarded against local lookups through the first.
    let (b, _ops_b, api_b) = start_instance(dir.path(), &broker, &topics, &tokens);
    let sample: Vec<String> = ids.iter().take(4000).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    while remote.len() < 100 || local.len() < 100 {
        assert!(Instant::now() < deadline, "the second instance never took partitions:\n{}", b.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
        (remote, local) = (Vec::new(), Vec::new());
        for id in &sample {
            // Asked directly with the forwarded mark, an instance answers
            // only for what it holds.
            let owned_by = |api: &str| {
                common::http_get_with(
                    api,
                    &format!("/v1/customers/{id}"),
                    &format!("Authorization: Bearer {TOKEN}\r\nengage-forwarded: 1\r\n"),
                )
                .is_some_and(|r| r.0 == 200)
            };
            if owned_by(&api_b) {
                remote.push(id.clone());
            } else if owned_by(&api) {
                local.push(id.clone());
            }
        }
    }
    // Measured once every sampled customer is answered through the first.
    let all_answered = || {
        sample.iter().all(|id| {
            common::http_get_with(&api, &format!("/v1/customers/{id}"), &format!("Authorization: Bearer {TOKEN}\r\n"))
                .is_some_and(|r| r.0 == 200 || r.0 == 404)
        })
    };
    while !all_answered() {
        assert!(Instant::now() < deadline, "lookups through the first instance never settled:\n{}", a.log());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rebalances = |log: &str| log.matches("rebalance").count();
    let (rebalances_a, rebalances_b) = (rebalances(&a.log()), rebalances(&b.log()));
    let mut blocks: Vec<(&str, [f64; 4])> = Vec::new();
    for _ in 0..4 {
        for (kind, set) in [("forwarded", &remote), ("local", &local)] {
            let p = paced(&client, &base, set, latency_rate, latency_seconds).await;
            println!(
                "  {kind} at {:.0} req/s: p50 {:.2} ms p99 {:.2} ms from the schedule, p50 {:.2} ms p99 {:.2} ms from sending {:?}",
                p.sent as f64 / p.seconds,
                p.quantile(0.5),
                p.quantile(0.99),
                p.service_quantile(0.5),
                p.service_quantile(0.99),
                p.by_status
            );
            blocks.push((kind, [p.quantile(0.5), p.quantile(0.99), p.service_quantile(0.5), p.service_quantile(0.99)]));
        }
    }
    let summary = |kind: &str, i: usize| {
        let (m, lo, hi) = median_range(blocks.iter().filter(|b| b.0 == kind).map(|b| b.1[i]).collect());
        format!("{m:.2} ms ({lo:.2}–{hi:.2})")
    };
    println!("the API's threads: {api_k:.3} CPU per 1 000 lookups/s ({api_k_lo:.3}–{api_k_hi:.3})");
    let moved = (rebalances(&a.log()) - rebalances_a, rebalances(&b.log()) - rebalances_b);
    println!("\napi bench: {n} events, {customers} customers, {PARTITIONS} partitions");
    println!("rebalance log lines during the latency blocks (instance 1, 2): {moved:?}");
    println!(
        "processing without requests: median {off_m:.0} events/s ({off_lo:.0}–{off_hi:.0}, {} windows of {window} s), engage {cpu_off_m:.2} CPU",
        off.len()
    );
    println!(
        "processing with {achieved_m:.0} lookups/s: median {on_m:.0} events/s ({on_lo:.0}–{on_hi:.0}, {} windows), engage {cpu_on_m:.2} CPU; ratio {:.2}; {answered} of {sent} lookups 200",
        on.len(),
        on_m / off_m
    );
    for kind in ["forwarded", "local"] {
        println!(
            "{kind} lookups at {latency_rate:.0}/s through instance 1, medians (ranges) of four blocks of {latency_seconds} s: \
             from the schedule p50 {}, p99 {}; from sending p50 {}, p99 {}",
            summary(kind, 0),
            summary(kind, 1),
            summary(kind, 2),
            summary(kind, 3)
        );
    }
    drop(b);
    drop(a);
}
