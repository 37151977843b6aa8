//! Test harness for integration tests against Apache Kafka: a broker
//! shared by the tests that do not harm it (`ENGAGE_TEST_BOOTSTRAP`, which
//! `scripts/test` starts), private single nodes and three-node KRaft
//! clusters for tests that stop, kill or freeze a broker, random topic
//! names per test, and the `engage` binary run as a child process.
#![allow(dead_code)]

pub mod peer;
pub mod runs;
pub mod secure;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One Apache Kafka node (broker and controller in one JVM) this harness
/// started, on its own data directory so it can be killed and restarted.
struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    props: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self, cluster_id: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(repo_root().join("scripts/kafka-broker"))
            .arg(&self.props)
            .env("KAFKA_CLUSTER_ID", cluster_id)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start scripts/kafka-broker");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Kafka cluster for a test: the shared broker, or nodes this harness
/// started (killed on drop).
pub struct Broker {
    pub bootstrap: String,
    nodes: Vec<Node>,
    cluster_id: String,
    replication: i32,
    _dir: Option<tempfile::TempDir>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A loopback port for a process the harness starts that cannot bind port
/// 0 and report it (a Kafka node), or for a command that does not report
/// what it bound (`engage demo --http`).
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`),
/// which is where `bind(…:0)` and every outgoing connection take their
/// local port: a port from there, released and handed to another process,
/// can be taken in between by any engage or client of a test running in
/// parallel, and a broker restarted on its old port can find it taken.
/// Below the range only another process choosing a port explicitly can
/// take it, so this checks that the port is free now, never hands out the
/// same port twice in one test process, and callers retry on "Address
/// already in use".
fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let ephemeral_start = range.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..1000 {
        let port = low + (rand_u64() % u64::from(high - low)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/PID/stat` (Linux; clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces), 1-based:
    // utime is field 14, stime field 15; the first after the name is 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |k: usize| rest.split_whitespace().nth(k - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (field(14) + field(15)) / 100.0
}

/// A node's server.properties: `tests/kafka/server.properties.in` filled in.
fn node_properties(id: u32, port: u16, controller_port: u16, quorum: &str, data: &Path, rf: i32) -> String {
    let template = std::fs::read_to_string(repo_root().join("tests/kafka/server.properties.in")).unwrap();
    template
        .replace("@NODE_ID@", &id.to_string())
        .replace("@QUORUM@", quorum)
        .replace("@PORT@", &port.to_string())
        .replace("@CONTROLLER_PORT@", &controller_port.to_string())
        .replace("@DATA@", &data.display().to_string())
        .replace("@RF@", &rf.to_string())
        .replace("@MIN_ISR@", &(rf.min(2)).to_string())
}

impl Broker {
    /// The broker shared by the tests that do not harm it: the one at
    /// `ENGAGE_TEST_BOOTSTRAP` (`scripts/test` starts it), or else a
    /// private single node.
    pub fn start() -> Broker {
        match std::env::var("ENGAGE_TEST_BOOTSTRAP") {
            Ok(b) => Broker { bootstrap: b, nodes: Vec::new(), cluster_id: String::new(), replication: 1, _dir: None },
            Err(_) => Broker::private(),
        }
    }

    /// A single Apache Kafka node of this test's own, which it may stop,
    /// freeze or kill.
    pub fn private() -> Broker {
        Broker::cluster(1)
    }

    /// `n` combined broker+controller nodes on loopback. With more than one
    /// node: a static controller quorum, replication factor 3 and
    /// `min.insync.replicas` 2 for every topic.
    ///
    /// The nodes' ports are chosen by [`free_port`]; when a node finds one
    /// taken all the same (another process bound it in between), the
    /// cluster starts again on new ports, at most three times.
    pub fn cluster(n: u32) -> Broker {
        let out = Command::new(repo_root().join("scripts/install-kafka")).output().expect("run scripts/install-kafka");
        assert!(out.status.success(), "install-kafka: {}", String::from_utf8_lossy(&out.stderr));
        for attempt in 1.. {
            let mut broker = Broker::spawn_cluster(n);
            if broker.wait_ready(Duration::from_secs(120)) {
                return broker;
            }
            // (The whole logs: the bind error comes long before the tail.)
            let taken = broker
                .nodes
                .iter()
                .any(|n| std::fs::read_to_string(&n.log).is_ok_and(|text| text.contains("Address already in use")));
            assert!(attempt < 3 && taken, "Kafka did not become ready (attempt {attempt}):\n{}", broker.logs());
            println!("a Kafka node's port was taken: starting the cluster again on other ports");
        }
        unreachable!()
    }

    /// `n` nodes on fresh ports and data, started (not yet ready).
    fn spawn_cluster(n: u32) -> Broker {
        let dir = tempfile::Builder::new().prefix("engage-kafka-").tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let rf = if n > 1 { 3.min(n as i32) } else { 1 };
        let quorum = if n == 1 {
            format!("controller.quorum.bootstrap.servers=127.0.0.1:{}", ports[0].1)
        } else {
            let voters: Vec<String> =
                ports.iter().enumerate().map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1)).collect();
            format!("controller.quorum.voters={}", voters.join(","))
        };
        let mut nodes = Vec::new();
        for (i, &(port, controller_port)) in ports.iter().enumerate() {
            let id = i as u32 + 1;
            let data = dir.path().join(format!("node{id}"));
            let props = dir.path().join(format!("node{id}.properties"));
            std::fs::write(&props, node_properties(id, port, controller_port, &quorum, &data, rf)).unwrap();
            let log = dir.path().join(format!("node{id}.log"));
            nodes.push(Node { id, port, controller_port, props, log, child: None });
        }
        // 16 random bytes, base64url without padding, as Kafka's cluster
        // ids are; the same on every node.
        let cluster_id = base64url_16((u128::from(rand_u64()) << 64) | u128::from(rand_u64() ^ 0x5bd1_e995));
        for node in &mut nodes {
            node.spawn(&cluster_id);
        }
        let bootstrap = ports.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        Broker { bootstrap, nodes, cluster_id, replication: rf, _dir: Some(dir) }
    }

    /// Whether this broker is one the test started (and may restart).
    pub fn is_persistent(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The first node's process id, when this harness started it.
    pub fn pid(&self) -> Option<u32> {
        self.node_pid(1)
    }

    /// Node `id`'s (1-based) process id, while it runs.
    pub fn node_pid(&self, id: u32) -> Option<u32> {
        self.nodes.iter().find(|n| n.id == id)?.child.as_ref().map(|c| c.id())
    }

    /// Kills node `id` with SIGKILL.
    pub fn kill_node(&mut self, id: u32) {
        self.nodes.iter_mut().find(|n| n.id == id).expect("a node of this cluster").kill();
    }

    /// Starts node `id` again on its data, and waits until it serves.
    pub fn start_node(&mut self, id: u32) {
        let cluster_id = self.cluster_id.clone();
        let node = self.nodes.iter_mut().find(|n| n.id == id).expect("a node of this cluster");
        node.spawn(&cluster_id);
        let addr = format!("127.0.0.1:{}", node.port);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &addr).create().unwrap();
            if let Ok(md) = c.fetch_metadata(None, Duration::from_secs(2))
                && md.brokers().iter().any(|b| b.id() == id as i32)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("node {id} did not come back:\n{}", self.logs());
    }

    /// Kills every node (SIGKILL) and, after `down`, starts them again on
    /// the same ports and data.
    pub fn restart(&mut self, down: Duration) {
        for node in &mut self.nodes {
            node.kill();
        }
        std::thread::sleep(down);
        for id in 1..=self.nodes.len() as u32 {
            let cluster_id = self.cluster_id.clone();
            self.nodes[id as usize - 1].spawn(&cluster_id);
        }
        assert!(self.wait_ready(Duration::from_secs(120)), "Kafka did not come back:\n{}", self.logs());
    }

    /// The node leading `topic`'s `partition`, if the metadata names one.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let c: BaseConsumer = self.client_config().create().unwrap();
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let p = md.topics().first()?.partitions().iter().find(|p| p.id() == partition)?.leader();
        u32::try_from(p).ok()
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("--- node {} ({}):\n", n.id, n.log.display());
            for l in tail.into_iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// Ready when every node this harness started is in the metadata; not
    /// ready (at once) when a node exited, as one that cannot bind its
    /// port does.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let c: BaseConsumer = self.client_config().create().unwrap();
            if let Ok(md) = c.fetch_metadata(None, Duration::from_secs(2))
                && md.brokers().len() >= self.nodes.len().max(1)
            {
                return true;
            }
            if self.nodes.iter_mut().any(|n| n.child.as_mut().is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_some()))) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create().unwrap();
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(self.replication));
        let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
        r[0].as_ref().expect("topic created");
    }

    pub fn producer(&self) -> FutureProducer {
        self.client_config().set("linger.ms", "0").create().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// 16 bytes in base64url without padding (22 characters); never starting
/// with '-', which Kafka's tools would read as an option.
fn base64url_16(v: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = v.to_be_bytes();
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = String::new();
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    out.replacen('-', "A", usize::from(out.starts_with('-')))
}

/// A pseudo-random number from the clock and the process id (no RNG crate
/// needed for unique names).
fn rand_u64() -> u64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut x = n ^ (u64::from(std::process::id()) << 32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// A unique topic-name prefix for one test.
pub fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{:x}-{}", n & 0xffff_ffff, std::process::id())
}

/// The topics of one test.
pub struct Topics {
    pub clickstream: String,
    pub purchases: String,
    pub scores: String,
    pub alerts: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    /// Fresh names under a unique `prefix`, none created yet.
    pub fn named(prefix: &str) -> Topics {
        let p = unique(prefix);
        Topics {
            clickstream: format!("{p}.clickstream"),
            purchases: format!("{p}.purchases"),
            scores: format!("{p}.scores"),
            alerts: format!("{p}.alerts"),
            dlq: format!("{p}.dlq"),
            group: format!("{p}.group"),
        }
    }

    /// Fresh topics, every one created with `partitions` partitions.
    pub async fn create(broker: &Broker, partitions: i32) -> Topics {
        let t = Topics::named("t");
        for name in [&t.clickstream, &t.purchases, &t.scores, &t.alerts, &t.dlq] {
            broker.create_topic(name, partitions).await;
        }
        t
    }

    /// An engage config for these topics; `extra` is appended as TOML.
    pub fn config(&self, broker: &Broker, extra: &str) -> String {
        format!(
            r#"
[kafka]
"bootstrap.servers" = "{bootstrap}"
"session.timeout.ms" = 6000
"max.poll.interval.ms" = 7000
"statistics.interval.ms" = 1000

[topics]
clickstream = "{c}"
purchases = "{p}"
scores = "{s}"
alerts = "{a}"
dlq = "{d}"

[http]
listen = "127.0.0.1:0"

[run]
group_id = "{g}"
create_topics = true
shutdown_deadline = "20s"
log_interval = "1s"
{extra}
"#,
            bootstrap = broker.bootstrap,
            c = self.clickstream,
            p = self.purchases,
            s = self.scores,
            a = self.alerts,
            d = self.dlq,
            g = self.group
        )
    }
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(*v) });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer.send(record, Duration::from_secs(10)).await.expect("produced");
}

/// A record read back from an output topic.
#[derive(Clone, Debug)]
pub struct Received {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp (producer create time, epoch ms).
    pub timestamp: Option<i64>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("JSON output")
    }

    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

/// Reads every partition of `topic` from the beginning until `count`
/// records arrived, every partition was read to its end at least once (a
/// slow broker can pause between partitions for longer than the quiet
/// second), and nothing more came for a second; or `timeout`.
pub fn read_topic(broker: &Broker, topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("group.id", unique("reader"))
        .create()
        .unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let mut tpl = TopicPartitionList::new();
    // Partitions not yet read to their end (librdkafka reports the end once
    // the fetch position reaches the high watermark, control records and
    // all).
    let mut remaining = std::collections::BTreeSet::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        remaining.insert(p.id());
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push(Received {
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().unwrap_or(&[]).to_vec(),
                    headers: m
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or(&[]).to_vec())).collect())
                        .unwrap_or_default(),
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                });
                last_new = Instant::now();
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                remaining.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= count && remaining.is_empty() && last_new.elapsed() > Duration::from_secs(1) => break,
            None => {}
        }
    }
    // A read that never reached some partition's end is not "everything on
    // the topic": fail rather than hand back part of it.
    assert!(remaining.is_empty(), "reading {topic}: partitions {remaining:?} not read to their end within {timeout:?}");
    out
}

/// The committed offsets of `group` on partitions 0..`partitions` of each
/// of `topics` (0 where none), by (topic, partition). Asks again while the
/// broker answers with an error (a coordinator moving, or offsets left
/// unstable by a killed instance's open transaction) rather than reading
/// that as nothing committed; fails after 90 s.
pub fn committed_offsets(
    broker: &Broker,
    group: &str,
    topics: &[&str],
    partitions: i32,
) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = broker.client_config().set("group.id", group).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            for p in 0..partitions {
                tpl.add_partition(topic, p);
            }
        }
        // An error may also come per partition, in an answer that is Ok.
        let answer = consumer.committed_offsets(tpl, Duration::from_secs(10)).and_then(|c| {
            c.elements()
                .iter()
                .map(|e| e.error().map(|()| ((e.topic().to_string(), e.partition()), e.offset().to_raw())))
                .collect::<Result<Vec<_>, _>>()
        });
        match answer {
            // No offset committed yet (Offset::Invalid): 0.
            Ok(c) => return c.into_iter().map(|(k, raw)| (k, raw.unwrap_or(0).max(0))).collect(),
            Err(e) => assert!(Instant::now() < deadline, "committed offsets of {group}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The committed offset of `group` on `topic`'s partitions (sum over
/// partitions). Like [`committed_offsets`], asks again while the broker
/// answers with an error and fails after 90 s: an error read as nothing
/// committed would let a "work remained" guard pass without testing
/// anything.
pub fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> i64 {
    committed_offsets(broker, group, &[topic], partitions).values().sum()
}

/// The engage binary running `engage run`, with its stderr captured.
pub struct Engage {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Engage {
    pub fn start(dir: &Path, config: &str) -> Engage {
        Self::start_binary(dir, config, env!("CARGO_BIN_EXE_engage"))
    }

    /// Like [`Engage::start`], with an explicit binary.
    pub fn start_binary(dir: &Path, config: &str, binary: &str) -> Engage {
        Self::start_with(dir, config, binary, &[], "info,librdkafka=warn,rdkafka=warn")
    }

    /// `engage [global_args] run --config …` with `RUST_LOG=rust_log`.
    pub fn start_with(dir: &Path, config: &str, binary: &str, global_args: &[&str], rust_log: &str) -> Engage {
        let path = dir.join(format!("engage-{}.toml", unique("c")));
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary)
            .args(global_args)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Engage::capture(child)
    }

    /// Wraps a child process started with `stderr` piped, collecting its
    /// stderr as it comes.
    pub fn capture(mut child: Child) -> Engage {
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Engage { child, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address engage's HTTP endpoint is bound to, from its `HTTP:`
    /// log line (text or JSON logs). The harness's configs listen on
    /// `127.0.0.1:0`: the system picks a free port as engage binds, where a
    /// port the test picked and handed over could be taken by a test
    /// running in parallel in between. Waits for the line at most 60 s.
    pub fn http_addr(&self) -> String {
        self.bound_addr("HTTP: /metrics", "addr")
    }

    /// The address in field `field` of the first log line containing
    /// `line` (text or JSON logs); waits for it at most 60 s.
    fn bound_addr(&self, line: &str, field: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (text, json) = (format!("{field}="), format!("\"{field}\":\""));
        loop {
            let log = strip_ansi(&self.log());
            let found = log.lines().filter(|l| l.contains(line)).find_map(|l| {
                let (_, rest) = l.split_once(&text).or_else(|| l.split_once(&json))?;
                rest.split(|c: char| c.is_whitespace() || c == '"').next().map(str::to_string)
            });
            if let Some(addr) = found {
                assert!(!addr.ends_with(":0"), "engage logged the configured port, not the bound one: {addr}");
                return addr;
            }
            assert!(Instant::now() < deadline, "engage logged no `{line}` address within 60 s:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the customer API is bound to (see [`with_api`]), from
    /// its start-up line, as [`Engage::http_addr`] finds the ops address.
    pub fn api_addr(&self) -> String {
        self.bound_addr("customer API: GET", "listen")
    }

    /// Waits until the log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends SIGTERM and waits for exit; returns the exit code and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        unsafe_kill(self.child.id(), 15);
        let deadline = start + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return (None, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for engage to exit on its own, at most `timeout` (then kills
    /// it and fails the test: a hang must not hang the suite).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("engage did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Engage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
}

/// A free loopback address, for a command that does not report the address
/// it bound (`engage demo --http`; retry if it finds it taken). For `engage
/// run` use the configured `127.0.0.1:0` and [`Engage::http_addr`].
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `config` with the customer API on, at a port the system picks (see
/// [`Engage::api_addr`]), without tokens (tests/http_api.rs covers tokens
/// and TLS).
pub fn with_api(config: &str) -> String {
    format!("{config}\n[api]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n")
}

/// `GET path` on the customer API at `api` (see [`Engage::api_addr`]), as a
/// client that honours `Retry-After` does: a 503 (a partition restoring, or
/// still applying its latest records) is asked again, for up to 30 s.
pub fn api_get(api: &str, path: &str) -> Option<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(api, path) {
            Some((503, _)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            answer => return answer,
        }
    }
}

/// `text` without ANSI escape sequences (`ESC [ … letter`): engage's text
/// logs are coloured.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET path` over plain HTTP/1.1; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, "")
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub fn http_get_with(addr: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Produces `records` to the inputs of `topics` as fast as the broker takes
/// them; returns how many went to (clickstream, purchases).
pub fn feed(broker: &Broker, topics: &Topics, records: &[engage::cmd::loadgen::synth::Record]) -> (i64, i64) {
    use engage::vocab::InputKind;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("linger.ms", "20").set("queue.buffering.max.messages", "2000000").create().unwrap();
    let (mut clicks, mut buys) = (0, 0);
    for r in records {
        let topic = match r.topic {
            InputKind::Clickstream => {
                clicks += 1;
                &topics.clickstream
            }
            InputKind::Purchases => {
                buys += 1;
                &topics.purchases
            }
            InputKind::Erasures => unreachable!("synth produces events only"),
        };
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(&r.key[..]).payload(&r.value[..]);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    (clicks, buys)
}

/// JSON events as a CSV file's text: a header row with every field (nested
/// objects' fields as `parent.field`, as `engage replay` reads them), one
/// event a row, a cell empty where the event has no such field.
pub fn json_lines_to_csv(lines: &[String]) -> String {
    use serde_json::Value;
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let flat = |v: &Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in v.as_object().expect("a JSON object per line") {
            match v {
                Value::Object(o) => out.extend(o.iter().map(|(k2, v2)| (format!("{k}.{k2}"), cell(v2)))),
                v => out.push((k.clone(), cell(v))),
            }
        }
        out
    };
    let rows: Vec<Vec<(String, String)>> =
        lines.iter().map(|l| flat(&serde_json::from_str(l).expect("a JSON line"))).collect();
    let mut names: Vec<String> = rows.iter().flatten().map(|(k, _)| k.clone()).collect();
    names.sort();
    names.dedup();
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
    };
    let mut text = names.join(",") + "\n";
    for row in &rows {
        let cells: Vec<String> =
            names.iter().map(|n| row.iter().find(|(k, _)| k == n).map_or(String::new(), |(_, v)| quote(v))).collect();
        text += &(cells.join(",") + "\n");
    }
    text
}

/// Waits (at most 60 s) until `engage`'s metrics at `addr` show input
/// records read, and returns how many: the moment to signal it "under load".
pub fn wait_for_records_read(addr: &str, engage: &Engage) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = records_read(addr);
        if read > 0.0 {
            return read;
        }
        assert!(Instant::now() < deadline, "no record consumed:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Input records `engage` at `addr` has read, by its metrics (0 while it
/// does not answer).
pub fn records_read(addr: &str) -> f64 {
    let metrics = http_get(addr, "/metrics").map(|r| r.1).unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("engage_records_in_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The record count in the "stopped cleanly" summary line of `log`.
pub fn summary_records(log: &str) -> i64 {
    let summary = log.lines().find(|l| l.contains("stopped cleanly")).unwrap_or_else(|| panic!("no summary:\n{log}"));
    summary
        .split("records: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {summary}"))
}
