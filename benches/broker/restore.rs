//! Restore speed (issue: ≥ 500 k customers/s from the changelog): writes N
//! customer states to a changelog partition on the real broker with
//! `engage bootstrap`'s writer (timed: the bootstrap rate), then times
//! `changelog::restore` reading them back, next to two baselines measured
//! in the same run: a bare consumer reading the same records (the
//! client/broker ceiling) and decode + insert alone (the CPU cost). Not
//! part of the test suite:
//!   scripts/bench-restore [CUSTOMERS]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Broker, unique};
use engage::config::Config;
use engage::engine::event::{Event, EventKind};
use engage::engine::store::Store;
use engage::engine::{Engine, Rules};
use engage::vocab::ClickKind;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-restore"]
async fn restore_speed() {
    let n: usize = std::env::var("RESTORE_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let broker = Broker::start();
    let topic = unique("bench.engage-state");
    broker.create_topic(&topic, 1).await;

    // Realistic states: three events per customer through the engine.
    let engine = Engine::new(Rules::new(&Config::default()));
    let source = Store::new();
    let part = source.partition(0);
    let mut out = Vec::new();
    let t0 = engage::clock::wall_clock_ms() - 10 * 86_400_000;
    for c in 0..n {
        let id = format!("cust-{c:09}");
        for (i, kind) in [ClickKind::PageView, ClickKind::AddToCart, ClickKind::Share].into_iter().enumerate() {
            let e = Event {
                event_id: format!("{c}-{i}").into(),
                customer_id: id.as_str().into(),
                ts_ms: t0 + (i as i64) * 86_400_000,
                kind: if i == 1 && c % 4 == 0 {
                    EventKind::Purchase { amount: 40.0, loyalty_member: true, coupon_used: false }
                } else {
                    EventKind::Click { kind, rating: None }
                },
            };
            engine.apply(&part, &e, None, &mut out);
            out.clear();
        }
    }
    let mut values = Vec::with_capacity(n);
    part.for_each(|id, s| values.push((id.to_string(), engage::codec::state::state_to_proto(s, id).encode_to_vec())));
    let bytes: usize = values.iter().map(|(k, v)| k.len() + v.len()).sum();
    // engage bootstrap's writer: every state, then the as-of marker.
    let mut config = Config::default();
    config.kafka.properties.insert("bootstrap.servers".into(), broker.bootstrap.clone());
    let written = engage::cmd::bootstrap::write_states(
        &config,
        &topic,
        1,
        engage::config::UpstreamPartitioner::Murmur2,
        &part,
        t0 + 3 * 86_400_000,
    )
    .unwrap();
    assert_eq!(written.by_partition, vec![n as u64]);
    let bootstrap_rate = n as f64 / written.elapsed.as_secs_f64();

    // Baseline 1: decode + insert only (no Kafka).
    let start = Instant::now();
    let target = Store::new();
    let tp = target.partition(0);
    for (_, v) in &values {
        let (id, s) =
            engage::codec::state::state_from_proto(&engage::proto::CustomerState::decode(&v[..]).unwrap()).unwrap();
        tp.insert(id, s);
    }
    let cpu = n as f64 / start.elapsed().as_secs_f64();

    // Baseline 2: a bare consumer reading the same records, doing nothing.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "bench")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "16777216")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let mut seen = 0;
    while seen < n {
        if let Some(m) = consumer.poll(Duration::from_secs(5)) {
            let _ = m.unwrap().offset();
            seen += 1;
        }
    }
    let ceiling = n as f64 / start.elapsed().as_secs_f64();

    // engage's restore.
    let restored = Store::new();
    let stats =
        engage::kafka::changelog::restore(&config, &topic, &restored.partition(0), Duration::from_secs(300)).unwrap();
    assert_eq!(stats.customers, n);
    let rate = n as f64 / stats.elapsed.as_secs_f64();
    println!("restore benchmark: {n} customers, {:.1} MB of changelog", bytes as f64 / 1e6);
    println!("  decode + insert only:  {:>10.0} customers/s", cpu);
    println!("  bare consumer ceiling: {:>10.0} records/s", ceiling);
    println!("  engage restore:        {:>10.0} customers/s  ({:.2} of the ceiling)", rate, rate / ceiling);
    println!(
        "  engage bootstrap write:{:>10.0} customers/s  ({:.2} of the restore rate)",
        bootstrap_rate,
        bootstrap_rate / rate
    );
}
