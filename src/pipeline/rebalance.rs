//! Consumer callbacks: on revoke, finish and commit a partition before
//! letting it go; on assign, restore its customers from the changelog
//! before its first record is processed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use std::collections::BTreeSet;
use tracing::warn;

use super::PipelineError;
use super::shared::Shared;
use crate::kafka::changelog;
use crate::sync;
use crate::telemetry::LagReporter;
use crate::telemetry::events::{PartitionRestored, PartitionRevoked, Rebalance as RebalanceEvent};

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
            PartitionRevoked { inputs: &s.inputs, partition: p }.emit();
        }
        RebalanceEvent { kind: "revoke", owned: sync::lock(&s.owned).len() }.emit();
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let s = &self.shared;
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
                    PartitionRestored {
                        inputs: &s.inputs,
                        partition: p,
                        changelog: &s.changelog,
                        records: stats.records,
                        customers: stats.customers,
                        unreadable: stats.unreadable,
                        elapsed: stats.elapsed,
                    }
                    .emit();
                    sync::lock(&s.owned).insert(p);
                }
                Err(source) => s.set_fatal(PipelineError::Restore { partition: p, source }),
            }
        }
        s.store.status().set_joined();
        RebalanceEvent { kind: "assign", owned: sync::lock(&s.owned).len() }.emit();
    }
}

/// The partition numbers in `tpl`, once each (both inputs share them).
fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let set: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    set.into_iter().collect()
}
