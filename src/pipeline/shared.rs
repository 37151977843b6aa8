//! What the main loop and the consumer callbacks share.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::PipelineError;
use super::align::Ends;
use super::status::Status;
use crate::config::{Config, Inputs};
use crate::durability::Durability;
use crate::engine::store::Store;
use crate::sync;
use crate::telemetry::events::Fatal;
use crate::vocab::InputKind;

/// What the main loop and the consumer callbacks share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) inputs: Inputs,
    pub(super) store: Arc<Store>,
    pub(super) status: Arc<Status>,
    pub(super) durability: Durability,
    /// Partition numbers currently assigned and restored.
    pub(super) owned: Mutex<BTreeSet<i32>>,
    /// Bumped on every rebalance, so the main loop drops cached partitions.
    pub(super) generation: AtomicU64,
    /// A failure inside a callback, for the main loop to act on.
    pub(super) fatal: Mutex<Option<PipelineError>>,
    /// Where each input partition stands on the broker, from the consumer's
    /// statistics (for event-time alignment).
    pub(super) ends: Mutex<HashMap<(InputKind, i32), Ends>>,
}

impl Shared {
    pub(super) fn owned(&self) -> Vec<i32> {
        sync::lock(&self.owned).iter().copied().collect()
    }

    pub(super) fn set_fatal(&self, e: PipelineError) {
        Fatal { error: &e }.emit();
        sync::lock(&self.fatal).get_or_insert(e);
    }
}
