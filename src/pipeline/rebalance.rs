//! Consumer callbacks: on revoke, finish and commit a partition before
//! letting it go; on assign, restore its customers from the changelog
//! before its first record is processed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeSet;

use super::PipelineError;
use super::align::Ends;
use super::shared::Shared;
use super::status::PartitionPhase;
use crate::kafka::changelog;
use crate::sync;
use crate::telemetry::LagReporter;
use crate::telemetry::events::{PartitionRestored, PartitionRevoked, Rebalance as RebalanceEvent, RevokeUnfinished};

/// Consumer callbacks: on revoke, finish and commit before letting go; on
/// assign, restore before the first record.
pub(super) struct PipelineContext {
    pub(super) shared: Arc<Shared>,
    pub(super) lag: LagReporter,
}

impl ClientContext for PipelineContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::kafka::client::forward_log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.client_error(&error, &crate::config::redact(reason));
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        self.lag.report(&stats);
        let lag: i64 = stats
            .topics
            .iter()
            .filter(|(topic, _)| self.shared.inputs.of(topic).is_some())
            .flat_map(|(_, t)| t.partitions.iter())
            .filter(|(p, s)| **p >= 0 && s.desired && s.consumer_lag >= 0)
            .map(|(_, s)| s.consumer_lag)
            .sum();
        self.shared.status.set_lag(lag);
        let mut ends = sync::lock(&self.shared.ends);
        for (topic, t) in &stats.topics {
            let Some(kind) = self.shared.inputs.of(topic).map(|i| i.kind) else { continue };
            for (&partition, p) in &t.partitions {
                // -1: librdkafka's internal unassigned partition; offsets
                // below 0 are not known yet.
                let start = if p.committed_offset >= 0 { p.committed_offset } else { p.lo_offset };
                if partition < 0 || !p.desired || start < 0 || p.ls_offset < 0 {
                    continue;
                }
                ends.insert((kind, partition), Ends { start, end: p.ls_offset });
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let s = &self.shared;
        s.generation.fetch_add(1, Ordering::SeqCst);
        // The API stops answering for them before they start to go.
        for p in partitions_of(tpl) {
            s.status.set_partition_phase(p, None);
        }
        let partitions: Vec<i32> =
            partitions_of(tpl).into_iter().filter(|p| sync::lock(&s.owned).contains(p)).collect();
        // Stopping on an error, nothing more is committed; otherwise the
        // work is finished, or the next owner resumes from the last commit
        // and the changelog.
        let committed = !s.failed.load(Ordering::SeqCst)
            && s.durability.finish(consumer, &partitions).map_err(|e| RevokeUnfinished { error: &e }.emit()).is_ok();
        sync::lock(&s.ends).retain(|(_, p), _| !partitions.contains(p));
        for p in partitions {
            s.durability.forget(p);
            sync::lock(&s.owned).remove(&p);
            s.store.remove_partition(p);
            PartitionRevoked { inputs: &s.inputs, partition: p, committed }.emit();
        }
        sync::lock(&s.revoked_at).get_or_insert_with(std::time::Instant::now);
        RebalanceEvent { kind: "revoke", owned: sync::lock(&s.owned).len() }.emit();
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let s = &self.shared;
        *sync::lock(&s.revoked_at) = None;
        s.generation.fetch_add(1, Ordering::SeqCst);
        for p in partitions_of(tpl) {
            if sync::lock(&s.owned).contains(&p) {
                continue;
            }
            s.status.set_partition_phase(p, Some(PartitionPhase::Restoring));
            s.store.remove_partition(p);
            let partition = s.store.partition(p);
            let _restoring = s.status.begin_restore();
            let topic = changelog::topic_name(&s.config);
            match changelog::restore(&s.config, &topic, &partition, s.config.state.restore_timeout) {
                Ok(stats) => {
                    PartitionRestored {
                        inputs: &s.inputs,
                        partition: p,
                        changelog: &topic,
                        records: stats.records,
                        customers: stats.customers,
                        unreadable: stats.unreadable,
                        bootstrap_as_of: stats.bootstrap_as_of,
                        elapsed: stats.elapsed,
                    }
                    .emit();
                    sync::lock(&s.owned).insert(p);
                    s.status.set_partition_phase(p, Some(PartitionPhase::Serving));
                }
                Err(source) => s.set_fatal(PipelineError::Restore { partition: p, source }),
            }
        }
        query_ends(consumer, s, tpl);
        s.status.set_joined();
        RebalanceEvent { kind: "assign", owned: sync::lock(&s.owned).len() }.emit();
    }
}

/// Asks the broker where each newly assigned input partition stands, so
/// event-time alignment knows at once which inputs are caught up rather
/// than after the first statistics report. The high watermark stands in for
/// the last stable offset until then (they differ only while an upstream
/// transaction is open, and then the pair waits at most
/// `run.alignment_wait`). A failed query leaves it to the statistics.
fn query_ends(consumer: &BaseConsumer<PipelineContext>, s: &Shared, tpl: &TopicPartitionList) {
    if s.config.run.alignment_wait.is_zero() {
        return;
    }
    let timeout = Duration::from_secs(10);
    let committed = consumer.committed_offsets(tpl.clone(), timeout).ok();
    for e in tpl.elements() {
        let Some(kind) = s.inputs.of(e.topic()).map(|i| i.kind) else { continue };
        let Ok((low, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout) else { continue };
        let start = committed
            .as_ref()
            .and_then(|c| c.find_partition(e.topic(), e.partition()))
            .and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        sync::lock(&s.ends).insert((kind, e.partition()), Ends { start, end: high });
    }
}

/// The partition numbers in `tpl`, once each (both inputs share them).
fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let set: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    set.into_iter().collect()
}
