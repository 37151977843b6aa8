//! `engage topics create` against Apache Kafka (the shared test broker, or
//! one the harness starts), and `engage run`'s start-up checks of the
//! changelog it makes.

mod cli_support;
mod common;

use std::time::Duration;

use common::{Broker, Engage, Topics};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Topic names for one test, of which only the inputs exist yet.
async fn inputs_only(broker: &Broker, partitions: i32) -> Topics {
    let t = Topics::named("t");
    broker.create_topic(&t.clickstream, partitions).await;
    broker.create_topic(&t.purchases, partitions).await;
    t
}

/// Partition counts by topic name (`None`: the broker does not know it).
fn partitions(broker: &Broker, names: &[&str]) -> Vec<Option<usize>> {
    let c: BaseConsumer = broker.client_config().create().unwrap();
    names
        .iter()
        .map(|name| {
            let md = c.fetch_metadata(Some(name), Duration::from_secs(10)).unwrap();
            let t = md.topics().iter().find(|t| t.name() == *name)?;
            (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
        })
        .collect()
}

/// `cleanup.policy` of each topic, as the broker describes it.
async fn cleanup_policies(broker: &Broker, names: &[&str]) -> Vec<String> {
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let specs: Vec<ResourceSpecifier<'_>> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    let described = admin.describe_configs(&specs, &AdminOptions::new()).await.unwrap();
    described
        .into_iter()
        .map(|r| {
            let r = r.expect("topic described");
            r.get("cleanup.policy").and_then(|e| e.value.clone()).expect("cleanup.policy")
        })
        .collect()
}

fn created(stdout: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let mut names: Vec<String> =
        v["created"].as_array().expect("created list").iter().map(|n| n.as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_create_makes_outputs_and_a_compacted_changelog_like_the_inputs_and_is_idempotent() {
    let broker = Broker::start();
    // Inputs with 3 partitions, outputs asked for with 2: the changelog must
    // follow the inputs, not topics.partitions.
    let topics = inputs_only(&broker, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let config = topics.config(&broker, "").replace("[topics]", "[topics]\npartitions = 2");
    let path = cli_support::write_config(dir.path(), &config);
    let changelog = format!("{}.engage-state", topics.group);
    let outputs = [topics.scores.as_str(), topics.alerts.as_str(), topics.dlq.as_str()];

    let first = cli_support::engage(&["topics", "create", "--config", &path], Duration::from_secs(60));
    assert_eq!(first.code, Some(0), "{}", first.output());
    let mut expected: Vec<String> = outputs.iter().map(|s| s.to_string()).chain([changelog.clone()]).collect();
    expected.sort();
    assert_eq!(created(&first.stdout), expected, "{}", first.output());
    assert_eq!(partitions(&broker, &outputs), [Some(2); 3], "outputs get topics.partitions");
    assert_eq!(partitions(&broker, &[&changelog]), [Some(3)], "the changelog gets the inputs' partition count");
    assert_eq!(cleanup_policies(&broker, &[&changelog]).await, ["compact"], "the changelog is compacted");
    // Outputs are event streams: compacting them would drop all but each
    // customer's latest score change and alert.
    assert_eq!(cleanup_policies(&broker, &outputs).await, ["delete"; 3]);

    // Again: succeeds, creates nothing, changes nothing.
    let second = cli_support::engage(&["topics", "create", "--config", &path], Duration::from_secs(60));
    assert_eq!(second.code, Some(0), "{}", second.output());
    assert!(created(&second.stdout).is_empty(), "{}", second.output());
    assert_eq!(partitions(&broker, &outputs), [Some(2); 3]);
    assert_eq!(partitions(&broker, &[&changelog]), [Some(3)]);
    assert_eq!(cleanup_policies(&broker, &[&changelog]).await, ["compact"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_a_missing_changelog_and_one_partitioned_unlike_the_inputs() {
    let broker = Broker::start();
    let topics = Topics::create(&broker, 2).await;
    let changelog = format!("{}.engage-state", topics.group);
    let config = topics.config(&broker, "").replace("create_topics = true", "create_topics = false");
    let dir = tempfile::tempdir().unwrap();

    let mut engage = Engage::start(dir.path(), &config);
    let status = engage.wait_exit(Duration::from_secs(60));
    let log = engage.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("{changelog:?}"))
            && log.contains("does not exist")
            && log.contains("engage topics create"),
        "the error names the changelog, that it is missing and how to make it:\n{log}"
    );
    assert!(partitions(&broker, &[&changelog]) == [None], "run.create_topics = false must not create it");

    broker.create_topic(&changelog, 3).await;
    let mut engage = Engage::start(dir.path(), &config);
    let status = engage.wait_exit(Duration::from_secs(60));
    let log = engage.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("changelog {changelog:?} has 3 partitions but the inputs have 2")),
        "the error names the changelog and both counts:\n{log}"
    );
    assert!(!log.contains("stopped cleanly"), "{log}");
}
