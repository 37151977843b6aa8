//! What the main loop and the consumer callbacks share.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::PipelineError;
use super::align::Ends;
use super::status::Status;
use crate::config::{Config, Inputs};
use crate::durability::Durability;
use crate::engine::store::Store;
use crate::kafka::diagnosis;
use crate::sync;
use crate::telemetry::events::{ClientError, Fatal};
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
    /// A READ probe is running ([`Shared::client_error`]).
    pub(super) probing: AtomicBool,
    /// The pipeline stopped on an error: partitions revoked from now on
    /// (as the consumer closes) are dropped without a commit.
    pub(super) failed: AtomicBool,
    /// When the consumer's partitions were revoked, until the group
    /// assigns again (if only nothing): a consumer that never rejoins is
    /// given up on ([`super::PipelineError::NoRejoin`]).
    pub(super) revoked_at: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    pub(super) fn owned(&self) -> Vec<i32> {
        sync::lock(&self.owned).iter().copied().collect()
    }

    /// An error the input consumer reported (`reason`: librdkafka's text,
    /// redacted): counted, and when retrying will not clear it, a stall
    /// (`Status::block`). A refused fetch names no topic: a probe finds
    /// which input engage may not READ, off the consumer's thread.
    pub(super) fn client_error(self: &Arc<Self>, error: &KafkaError, reason: &str) {
        ClientError { client: "consumer", error, reason }.emit();
        match diagnosis::classify(&self.config, error, reason, None, "READ") {
            Some(blocker) => self.status.block(blocker),
            None if error.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                if self.probing.swap(true, Ordering::SeqCst) {
                    return;
                }
                let shared = self.clone();
                std::thread::spawn(move || {
                    for input in shared.inputs.all() {
                        if let Ok(Some(blocker)) = crate::kafka::probe_read(&shared.config, &input.name) {
                            shared.status.block(blocker);
                        }
                    }
                    shared.probing.store(false, Ordering::SeqCst);
                });
            }
            None => {}
        }
    }

    pub(super) fn set_fatal(&self, e: PipelineError) {
        Fatal { error: &e }.emit();
        sync::lock(&self.fatal).get_or_insert(e);
    }
}
