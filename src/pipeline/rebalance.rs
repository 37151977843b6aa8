//! Consumer callbacks: on revoke, finish and commit a partition before
//! letting it go; on assign, restore its customers from the changelog
//! before its first record is processed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use std::collections::BTreeSet;
use tracing::{info, warn};

use super::PipelineError;
use super::shared::Shared;
use crate::kafka::changelog;
use crate::sync;
use crate::telemetry::LagReporter;

/// Consumer callbacks: on revoke, finish and commit before letting go; on
/// assign, restore before the first record.
pub(super) struct PipelineContext {
    pub(super) shared: Arc<Shared>,
    pub(super) lag: LagReporter,
}

impl ClientContext for PipelineContext {
    fn stats(&self, stats: rdkafka::Statistics) {
        self.lag.report(&stats);
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let s = &self.shared;
        metrics::counter!(crate::telemetry::REBALANCES, "kind" => "revoke").increment(1);
        s.generation.fetch_add(1, Ordering::SeqCst);
        let partitions: Vec<i32> =
            partitions_of(tpl).into_iter().filter(|p| sync::lock(&s.owned).contains(p)).collect();
        if let Err(e) = s.finish(consumer, &partitions) {
            // The next owner resumes from the last commit and the changelog.
            warn!(error = %e, "revoke: could not finish; uncommitted records will be reprocessed");
        }
        sync::lock(&s.processed).retain(|(_, p), _| !partitions.contains(p));
        for p in partitions {
            s.sink.forget(p);
            sync::lock(&s.dirty).forget(p);
            sync::lock(&s.owned).remove(&p);
            s.store.remove_partition(p);
            info!(topic = %s.inputs, partition = p, "partition revoked: flushed, committed, dropped");
        }
        metrics::gauge!(crate::telemetry::ASSIGNED_PARTITIONS).set(sync::lock(&s.owned).len() as f64);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let s = &self.shared;
        metrics::counter!(crate::telemetry::REBALANCES, "kind" => "assign").increment(1);
        s.generation.fetch_add(1, Ordering::SeqCst);
        for p in partitions_of(tpl) {
            if sync::lock(&s.owned).contains(&p) {
                continue;
            }
            s.store.remove_partition(p);
            let partition = s.store.partition(p);
            let _restoring = s.store.begin_restore();
            match changelog::restore(&s.config, &s.changelog, &partition, s.config.state.restore_timeout) {
                Ok(stats) => {
                    let rate = stats.records as f64 / stats.elapsed.as_secs_f64().max(1e-9);
                    info!(
                        topic = %s.inputs,
                        partition = p,
                        changelog = %s.changelog,
                        records = stats.records,
                        customers = stats.customers,
                        unreadable = stats.unreadable,
                        seconds = stats.elapsed.as_secs_f64(),
                        records_per_second = rate as u64,
                        "partition assigned: state restored"
                    );
                    sync::lock(&s.owned).insert(p);
                    metrics::counter!(crate::telemetry::RESTORE_RECORDS).increment(stats.records);
                    metrics::histogram!(crate::telemetry::RESTORE_DURATION).record(stats.elapsed.as_secs_f64());
                }
                Err(source) => s.set_fatal(PipelineError::Restore { partition: p, source }),
            }
        }
        s.store.status().set_joined();
        metrics::gauge!(crate::telemetry::ASSIGNED_PARTITIONS).set(sync::lock(&s.owned).len() as f64);
    }
}

/// The partition numbers in `tpl`, once each (both inputs share them).
fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let set: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    set.into_iter().collect()
}
