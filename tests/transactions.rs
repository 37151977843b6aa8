//! `run.processing_guarantee = "exactly_once"`: outputs, changelog records
//! and input offsets committed as one Kafka transaction per flush.
//!
//! The test broker (tansu 0.6.0) does not implement transactions (no
//! EndTxn), so this runs against the one transaction-capable Kafka-protocol
//! broker available on this machine: librdkafka's built-in mock cluster
//! (the same one `engage demo` embeds). The default mode is tested against
//! tansu in tests/pipeline.rs and tests/durability.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engage::config::Config;
use engage::engine::store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// A `read_committed` consumer for assigned partitions. It commits
/// nothing: closing a consumer that has offsets to commit waits for the
/// group coordinator, which hung once the mock cluster was gone.
fn reader(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

fn read_committed(bootstrap: &str, topic: &str, want: usize) -> Vec<serde_json::Value> {
    let c = reader(bootstrap, &format!("reader-{topic}"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_mode_commits_outputs_state_and_offsets_together() {
    let mock = MockCluster::new(3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let topics = [
        "clickstream",
        "purchases",
        "engagement.scores",
        "engagement.churn-alerts",
        "engagement.dlq",
        "eos.engage-state",
    ];
    for t in topics {
        mock.create_topic(t, 2, 1).unwrap();
    }
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let t0 = engage::clock::wall_clock_ms() - 86_400_000;
    for i in 0..50 {
        let customer = format!("c{i}");
        let value = serde_json::json!({"event_id": format!("e{i}"), "customer_id": customer, "type": "page_view", "ts": t0 + i})
            .to_string();
        producer
            .send(FutureRecord::to("clickstream").key(&customer).payload(&value), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let config = Config::from_toml(&format!(
        "[kafka]\n\"bootstrap.servers\" = \"{bootstrap}\"\n\"session.timeout.ms\" = 6000\n\
         [run]\ngroup_id = \"eos\"\nprocessing_guarantee = \"exactly_once\"\ntransactional_id = \"eos-test\"\n\
         [http]\nlisten = \"\"\n[state]\nflush_interval = \"200ms\"\n"
    ))
    .unwrap();
    let token = CancellationToken::new();
    let run = tokio::spawn(engage::pipeline::run(config, Arc::new(Store::new()), token.clone()));

    // Outputs become visible to read_committed consumers once their
    // transaction commits; one score change per new customer.
    let scores = read_committed(&bootstrap, "engagement.scores", 50);
    assert_eq!(scores.len(), 50);
    // The state changelog is written in the same transactions.
    let c = reader(&bootstrap, "state-reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("eos.engage-state", p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut states = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while states < 50 && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            use prost::Message as _;
            engage::proto::CustomerState::decode(m.payload().unwrap()).unwrap();
            states += 1;
        }
    }
    assert_eq!(states, 50);
    // (The input offsets go into the same transactions via
    // send_offsets_to_transaction; the mock cluster accepts TxnOffsetCommit
    // but does not store it, so that part cannot be checked here.)
    token.cancel();
    let summary = run.await.unwrap().expect("clean shutdown");
    assert_eq!(summary.applied, 50);
    // Every client closes while the cluster is still there.
    drop((c, producer));
    drop(mock);
}
