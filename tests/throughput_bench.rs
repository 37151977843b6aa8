//! End-to-end throughput through the real broker: preloads N synthetic
//! events, measures a bare rdkafka consumer reading them (the client/broker
//! ceiling) and then `engage run` (release build) processing the same
//! backlog from scratch with every output produced, the changelog written
//! and all offsets committed. Not part of the test suite:
//!   scripts/bench-e2e [EVENTS]

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics, committed};
use engage::decode::Format;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-e2e"]
async fn end_to_end_throughput() {
    let n: usize = std::env::var("E2E_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let broker = Broker::start();
    let topics = Topics::create(&broker, PARTITIONS).await;
    let start = engage::engine::wall_clock_ms() - 30 * 86_400_000;
    // Event times spread over the last 30 days, whatever N is.
    let step = (30 * 86_400_000 / n as i64).max(1);
    let records = engage::synth::records(9, n, 50_000, start, step, Format::Json);
    let t = Instant::now();
    let (clicks, buys) = common::feed(&broker, &topics, &records);
    let produce_rate = n as f64 / t.elapsed().as_secs_f64();

    // Ceiling: a bare consumer reading both topics, doing nothing.
    let consumer: BaseConsumer = broker.client_config().set("group.id", "ceiling").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topics.clickstream, p, Offset::Beginning).unwrap();
        tpl.add_partition_offset(&topics.purchases, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let t = Instant::now();
    let mut seen = 0;
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            m.unwrap();
            seen += 1;
        }
    }
    let ceiling = n as f64 / t.elapsed().as_secs_f64();

    // engage: from start-up until every offset is committed (includes the
    // group join, which tansu holds for up to the session timeout).
    let dir = tempfile::tempdir().unwrap();
    let extra = std::env::var("E2E_RUN_CONFIG").unwrap_or_default().replace(';', "\n");
    let config = topics.config(&broker, &format!("sweep_interval = \"1h\"\n{extra}\n"));
    let t = Instant::now();
    let mut engage = Engage::start_binary(dir.path(), &config, env!("CARGO_BIN_EXE_engage"));
    assert!(engage.wait_for_log("state restored", Duration::from_secs(60)));
    let joined = t.elapsed();
    while committed(&broker, &topics.group, &topics.clickstream, PARTITIONS) < clicks
        || committed(&broker, &topics.group, &topics.purchases, PARTITIONS) < buys
    {
        assert!(t.elapsed() < Duration::from_secs(600), "{}", engage.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = t.elapsed();
    assert_eq!(engage.terminate(Duration::from_secs(30)).0, Some(0));
    if std::env::var_os("E2E_LOG").is_some() {
        println!("{}", engage.log());
    }
    let processing = (total - joined).as_secs_f64();
    let rate = n as f64 / processing;
    println!("end-to-end benchmark: {n} events over 50 000 customers, {PARTITIONS} partitions");
    println!("  bare consumer ceiling: {ceiling:>10.0} events/s");
    println!("  producer feeding the backlog: {produce_rate:>5.0} events/s");
    let log = engage.log();
    println!("  backpressure pauses: {}", log.matches("paused=true").count());
    println!("  engage (join excluded): {rate:>9.0} events/s  ({:.2} of the ceiling)", rate / ceiling);
    println!("  group join + restore: {:.1} s; total {:.1} s", joined.as_secs_f64(), total.as_secs_f64());
}
