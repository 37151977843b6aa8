//! Which instance owns which input partition, where to reach it, and
//! whether an owner has caught up far enough to say "no such customer".
//!
//! **Where the owners come from: the consumer group's description.** Every
//! `api.membership_refresh`, and at once when a forward finds an owner
//! gone, the API describes `run.group_id` (Kafka's ListGroups and
//! DescribeGroups, through librdkafka): each member's `client.id` and the
//! partitions of its last stable assignment, decoded from the consumer
//! protocol. An instance publishes its advertised URL in its input
//! consumer's `client.id` (`<client.id>@<advertised_url>`,
//! [`crate::kafka::client::member_client_id`]). Nothing new is written to Kafka, no topic is
//! created, and no ACL beyond the pipeline's own is needed: READ on the
//! group implies the DESCRIBE these requests need.
//!
//! **Staleness is safe.** The description is only a hint of where to
//! forward: an instance answers for a partition only while it holds it
//! restored ([`crate::pipeline::Status`]), and a forwarded request is
//! never forwarded again. A stale view therefore costs a 503 with
//! `Retry-After` (and a refresh), never a wrong answer. While the group
//! rebalances (any state but `Stable`) the last stable view is kept: its
//! owners answer 503 until they hold their new partitions.
//!
//! **Caught up.** A partition newly served here was restored from the
//! changelog, but the records its previous owner applied after its last
//! commit are applied again from the input: until they are, a customer
//! seen only in them is missing. So "not found" becomes 404 only once the
//! group's committed offsets of the partition, in every input, have
//! reached the inputs' end offsets as of when it was first seen served
//! here; before that it is 503. (Upstream transactions end in a marker the
//! committed offset may stop short of: an idle partition then answers 503
//! for unknown customers until its next record. Found customers are
//! always answered.)

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::groups::GroupList;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UpstreamPartitioner};
use crate::kafka::KafkaSetupError;
use crate::pipeline::{Held, PartitionPhase, Status};
use crate::sync;
use crate::telemetry::API_ROUTABLE_PARTITIONS;
use crate::telemetry::events::{MembershipBack, MembershipUnavailable};

/// How long one request to the brokers may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a partition catching up is looked at.
const CATCH_UP_POLL: Duration = Duration::from_millis(250);

/// The least time between two refreshes asked for by failed forwards.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);

/// The advertised URL in a member's `client.id`, if it carries one.
fn url_of(client_id: &str) -> Option<Arc<str>> {
    let (_, url) = client_id.rsplit_once('@')?;
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.into())
}

/// Who answers for a partition, as far as this instance knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This instance serves it (assignment `assigned`).
    Here {
        /// See [`Held::assigned`].
        assigned: u64,
    },
    /// This instance holds it and is restoring it.
    Restoring,
    /// The instance at this URL.
    Peer(Arc<str>),
    /// Nobody reachable right now; why.
    Unknown(&'static str),
}

/// What is known about the partitions' owners.
pub struct Routing {
    own_url: Arc<str>,
    partitioner: UpstreamPartitioner,
    status: Arc<Status>,
    /// The inputs' partition count, once read.
    partitions: RwLock<Option<i32>>,
    /// Owner URL by partition, from the group's last stable assignment.
    owners: RwLock<Arc<BTreeMap<i32, Arc<str>>>>,
    /// Partitions caught up here, with the assignment that caught up.
    caught_up: RwLock<HashMap<i32, u64>>,
    wake: Notify,
}

impl Routing {
    /// Routing for the instance advertised at `own_url`.
    pub fn new(own_url: &str, partitioner: UpstreamPartitioner, status: Arc<Status>) -> Routing {
        Routing {
            own_url: own_url.into(),
            partitioner,
            status,
            partitions: RwLock::new(None),
            owners: RwLock::new(Arc::default()),
            caught_up: RwLock::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// The inputs' partition count, once known.
    pub fn partitions(&self) -> Option<i32> {
        *sync::read(&self.partitions)
    }

    /// The input partition of customer `id`: where the upstream producers
    /// put its key (`topics.upstream_partitioner`).
    pub fn partition_of(&self, id: &str) -> Option<i32> {
        Some(self.partitioner.partition(id.as_bytes(), self.partitions()?))
    }

    /// Who answers for partition `p`.
    pub fn owner(&self, p: i32) -> Owner {
        match self.status.partition(p) {
            Some(Held { phase: PartitionPhase::Serving, assigned }) => Owner::Here { assigned },
            Some(Held { phase: PartitionPhase::Restoring, .. }) => Owner::Restoring,
            None => match sync::read(&self.owners).get(&p) {
                Some(url) if **url != *self.own_url => Owner::Peer(url.clone()),
                Some(_) => Owner::Unknown("the partition is moving to or from this instance"),
                None => Owner::Unknown("no owner of the partition is known: it is moving, or its owner serves no API"),
            },
        }
    }

    /// Whether assignment `assigned` of partition `p` has applied
    /// everything its previous owner could have (see the module doc).
    pub fn caught_up(&self, p: i32, assigned: u64) -> bool {
        sync::read(&self.caught_up).get(&p) == Some(&assigned)
    }

    /// Asks for the owners to be read again soon (a forward failed).
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    fn set_owners(&self, owners: BTreeMap<i32, Arc<str>>) {
        *sync::write(&self.owners) = Arc::new(owners);
    }

    fn publish_routable(&self) {
        let Some(n) = self.partitions() else { return };
        let owners = sync::read(&self.owners).clone();
        let routable = (0..n).filter(|p| self.status.partition(*p).is_some() || owners.contains_key(p)).count();
        metrics::gauge!(API_ROUTABLE_PARTITIONS).set(routable as f64);
    }
}

/// A partition served here, waiting to catch up.
struct Pending {
    assigned: u64,
    /// (topic, low watermark, high watermark) of each input, when first
    /// seen served here.
    ends: Vec<(String, i64, i64)>,
}

/// The API's Kafka client: describes the group and reads its committed
/// offsets. It never subscribes, so it never joins the group.
pub struct Observer {
    consumer: BaseConsumer,
    group: String,
    /// Every input topic; the first decides the partition count.
    inputs: Vec<String>,
}

impl Observer {
    /// The observer of `config`'s group.
    pub fn new(config: &Config) -> Result<Observer, KafkaSetupError> {
        let consumer = crate::kafka::client::group_observer(config)
            .create()
            .map_err(|e| KafkaSetupError::client("creating the API's group observer", e))?;
        let inputs = config.inputs().subscribed().into_iter().map(String::from).collect();
        Ok(Observer { consumer, group: config.run.group_id.clone(), inputs })
    }

    /// One look: partition count, owners (when some partition is not held
    /// here), catch-up of the partitions served here. Blocking.
    fn step(&self, routing: &Routing, pending: &mut HashMap<i32, Pending>) -> Result<(), String> {
        // Nothing is consumed; this drains librdkafka's events.
        let _ = self.consumer.poll(Duration::ZERO);
        let mut outcome = Ok(());
        match self.partition_count() {
            Ok(n) => *sync::write(&routing.partitions) = Some(n),
            Err(e) => outcome = Err(format!("reading the partition count of {}: {e}", self.inputs[0])),
        }
        let (_, held) = routing.status.partitions_held();
        if let Some(n) = routing.partitions() {
            // Until its first assignment the instance knows nothing the
            // group could correct; once it holds every partition (a single
            // instance, the demo) there is nobody to forward to.
            let all_here = (0..n).all(|p| held.iter().any(|(q, _)| *q == p));
            if routing.status.joined() && !all_here {
                match self.consumer.fetch_group_list(Some(&self.group), KAFKA_TIMEOUT) {
                    Ok(list) => {
                        if let Some(owners) = owners(&list, &self.group, &self.inputs[0]) {
                            routing.set_owners(owners);
                        }
                    }
                    Err(e) => outcome = Err(format!("describing consumer group {:?}: {e}", self.group)),
                }
            }
        }
        routing.publish_routable();
        self.catch_up(routing, &held, pending);
        outcome
    }

    fn partition_count(&self) -> Result<i32, rdkafka::error::KafkaError> {
        let md = self.consumer.fetch_metadata(Some(&self.inputs[0]), KAFKA_TIMEOUT)?;
        let n = md.topics().first().map_or(0, |t| t.partitions().len());
        if n == 0 {
            return Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownPartition));
        }
        Ok(n as i32)
    }

    fn catch_up(&self, routing: &Routing, held: &[(i32, Held)], pending: &mut HashMap<i32, Pending>) {
        let serving: HashMap<i32, u64> =
            held.iter().filter(|(_, h)| h.phase == PartitionPhase::Serving).map(|(p, h)| (*p, h.assigned)).collect();
        sync::write(&routing.caught_up).retain(|p, a| serving.get(p) == Some(a));
        pending.retain(|p, t| serving.get(p) == Some(&t.assigned));
        for (&p, &assigned) in &serving {
            if routing.caught_up(p, assigned) || pending.contains_key(&p) {
                continue;
            }
            let mut ends = Vec::new();
            for topic in &self.inputs {
                match self.consumer.fetch_watermarks(topic, p, KAFKA_TIMEOUT) {
                    Ok((low, high)) => ends.push((topic.clone(), low, high)),
                    Err(_) => break,
                }
            }
            if ends.len() == self.inputs.len() {
                pending.insert(p, Pending { assigned, ends });
            }
        }
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in pending.keys() {
            for topic in &self.inputs {
                tpl.add_partition(topic, *p);
            }
        }
        let Ok(committed) = self.consumer.committed_offsets(tpl, KAFKA_TIMEOUT) else { return };
        let done: Vec<i32> = pending
            .iter()
            .filter(|(p, t)| {
                t.ends.iter().all(|(topic, low, high)| {
                    let c = committed.find_partition(topic, **p).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0);
                    c.unwrap_or(*low) >= *high
                })
            })
            .map(|(p, _)| *p)
            .collect();
        for p in done {
            if let Some(t) = pending.remove(&p) {
                sync::write(&routing.caught_up).insert(p, t.assigned);
            }
        }
    }
}

/// Keeps `routing` current until `shutdown`: every `every`, and soon after
/// [`Routing::refresh_soon`].
pub async fn refresh(routing: Arc<Routing>, observer: Arc<Observer>, every: Duration, shutdown: CancellationToken) {
    let mut pending: HashMap<i32, Pending> = HashMap::new();
    let mut failing = false;
    loop {
        let (r, o) = (routing.clone(), observer.clone());
        let step = tokio::task::spawn_blocking(move || {
            let outcome = o.step(&r, &mut pending);
            (outcome, pending)
        })
        .await;
        let outcome = match step {
            Ok((outcome, back)) => {
                pending = back;
                outcome
            }
            // A panic in the client (a member id that is not UTF-8):
            // start over.
            Err(e) => {
                pending = HashMap::new();
                Err(format!("describing the group failed: {e}"))
            }
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                MembershipBack.emit();
            }
            Ok(()) => {}
            Err(error) => {
                MembershipUnavailable { error: &error, first: !failing }.emit();
                failing = true;
            }
        }
        // A partition catching up is looked at often: until then its
        // unknown customers get 503.
        let next = if pending.is_empty() { every } else { every.min(CATCH_UP_POLL) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            _ = routing.wake.notified() => tokio::time::sleep(MIN_REFRESH_GAP).await,
        }
    }
}

/// Owner URLs by partition of `topic` from a group description; `None`
/// while the group rebalances (only a stable group reports assignments).
fn owners(list: &GroupList, group: &str, topic: &str) -> Option<BTreeMap<i32, Arc<str>>> {
    let mut owners = BTreeMap::new();
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else { return Some(owners) };
    match g.state() {
        "Stable" => {}
        "Empty" | "Dead" => return Some(owners),
        _ => return None,
    }
    for member in g.members() {
        let Some(url) = url_of(member.client_id()) else { continue };
        for p in member.assignment().and_then(|a| assigned_partitions(a, topic)).unwrap_or_default() {
            owners.insert(p, url.clone());
        }
    }
    Some(owners)
}

/// The partitions of `topic` in a consumer-protocol assignment (Kafka's
/// `ConsumerProtocolAssignment`, versions 0-3: int16 version, then an
/// array of topic name and partition numbers, then user data).
fn assigned_partitions(bytes: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut found = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = r.take(len)?;
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            let p = r.i32()?;
            if name == topic.as_bytes() {
                found.push(p);
            }
        }
    }
    Some(found)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client::member_client_id;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(1i16.to_be_bytes());
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn an_assignment_is_decoded_for_one_topic_and_a_truncated_one_is_refused() {
        let a = assignment(&[("clicks", &[0, 3]), ("purchases", &[0, 3]), ("erasures", &[])]);
        assert_eq!(assigned_partitions(&a, "clicks"), Some(vec![0, 3]));
        assert_eq!(assigned_partitions(&a, "other"), Some(vec![]));
        assert_eq!(assigned_partitions(&a[..a.len() - 9], "clicks"), None);
        assert_eq!(assigned_partitions(&[], "clicks"), None);
    }

    #[test]
    fn the_url_rides_in_the_client_id() {
        let mut config = Config::default();
        assert_eq!(member_client_id(&config), None, "API off");
        config.api.listen = "0.0.0.0:9899".into();
        config.api.advertised_url = "http://10.0.0.7:9899/".into();
        let id = member_client_id(&config).unwrap();
        assert_eq!(id, "engage@http://10.0.0.7:9899");
        assert_eq!(url_of(&id).as_deref(), Some("http://10.0.0.7:9899"));
        config.kafka.properties.insert("client.id".into(), "team@engage".into());
        let id = member_client_id(&config).unwrap();
        assert_eq!(url_of(&id).as_deref(), Some("http://10.0.0.7:9899"), "{id}");
        assert_eq!(url_of("rdkafka"), None);
        assert_eq!(url_of("someone@example.com"), None);
    }

    #[test]
    fn a_partition_held_here_is_answered_here_and_others_go_to_their_owner() {
        let status = Arc::new(Status::new());
        let routing = Routing::new("http://me:1", UpstreamPartitioner::Murmur2, status.clone());
        assert_eq!(routing.partition_of("u1"), None, "no partition count yet");
        *sync::write(&routing.partitions) = Some(4);
        assert_eq!(routing.partition_of("u1"), Some(UpstreamPartitioner::Murmur2.partition(b"u1", 4)));
        routing.set_owners(BTreeMap::from([(0, "http://me:1".into()), (1, "http://peer:1".into())]));
        status.set_partition_phase(0, Some(PartitionPhase::Restoring));
        assert_eq!(routing.owner(0), Owner::Restoring);
        status.set_partition_phase(0, Some(PartitionPhase::Serving));
        let assigned = status.partition(0).unwrap().assigned;
        assert_eq!(routing.owner(0), Owner::Here { assigned });
        assert_eq!(routing.owner(1), Owner::Peer("http://peer:1".into()));
        assert!(matches!(routing.owner(2), Owner::Unknown(_)));
        status.set_partition_phase(0, None);
        assert!(matches!(routing.owner(0), Owner::Unknown(_)), "named owner, but revoked here: moving");
        assert!(!routing.caught_up(0, assigned));
    }
}
