//! Test harness for integration tests against a real Kafka-protocol broker:
//! tansu, started per test on a free loopback port (or an existing cluster
//! from `ENGAGE_TEST_BOOTSTRAP=host:port`), random topic names per test,
//! and the `engage` binary run as a child process.
#![allow(dead_code)]

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

/// A running broker (killed on drop) or an external one.
pub struct Broker {
    pub bootstrap: String,
    child: Option<Child>,
    /// A broker that keeps its data on disk: (tansu binary, working dir).
    persistent: Option<(String, PathBuf)>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

impl Broker {
    /// Whether this broker keeps its data across [`Broker::restart`].
    pub fn is_persistent(&self) -> bool {
        self.persistent.is_some()
    }

    /// The broker process id, when this harness started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn start() -> Broker {
        if let Ok(b) = std::env::var("ENGAGE_TEST_BOOTSTRAP") {
            return Broker { bootstrap: b, child: None, persistent: None };
        }
        let out =
            Command::new(repo_root().join("scripts/install-broker")).output().expect("run scripts/install-broker");
        assert!(out.status.success(), "install-broker: {}", String::from_utf8_lossy(&out.stderr));
        let tansu = String::from_utf8(out.stdout).unwrap().trim().to_string();
        for _attempt in 0..5 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&tansu)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tansu");
            let broker = Broker { bootstrap: format!("127.0.0.1:{port}"), child: Some(child), persistent: None };
            if broker.wait_ready(Duration::from_secs(20)) {
                return broker;
            }
        }
        panic!("tansu did not become ready");
    }

    /// A tansu built with SQLite storage (`tansu`, the binary) keeping its
    /// data in `dir/engage.db`, so it survives [`Broker::restart`].
    pub fn start_persistent(tansu: &str, dir: &Path) -> Broker {
        let port = free_port();
        let mut broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            child: None,
            persistent: Some((tansu.to_string(), dir.to_path_buf())),
        };
        broker.spawn_persistent();
        broker
    }

    fn spawn_persistent(&mut self) {
        let (tansu, dir) = self.persistent.clone().expect("a persistent broker");
        let url = format!("tcp://{}", self.bootstrap);
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://engage.db"])
            .current_dir(&dir)
            .stdout(std::fs::File::create(dir.join("broker.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("broker.log")).unwrap())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let log = || {
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("{}{}", read("broker.out"), read("broker.log"))
        };
        // After a kill, the SQLite-backed broker may take a while to serve.
        assert!(self.wait_ready(Duration::from_secs(120)), "persistent tansu did not become ready:\n{}", log());
    }

    /// Kills the broker (SIGKILL) and, after `down`, starts it again on the
    /// same port and data.
    pub fn restart(&mut self, down: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(down);
        self.spawn_persistent();
    }

    fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.bootstrap).is_ok() {
                let c: BaseConsumer = self.client_config().create().unwrap();
                match c.fetch_metadata(None, Duration::from_secs(2)) {
                    Ok(_) => return true,
                    Err(e) if self.persistent.is_some() => eprintln!("broker not ready yet: {e}"),
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(100));
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
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = admin.create_topics([&t], &AdminOptions::new()).await.unwrap();
        r[0].as_ref().expect("topic created");
    }

    pub fn producer(&self) -> FutureProducer {
        self.client_config().set("linger.ms", "0").create().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
    pub async fn create(broker: &Broker, partitions: i32) -> Topics {
        let p = unique("t");
        let t = Topics {
            clickstream: format!("{p}.clickstream"),
            purchases: format!("{p}.purchases"),
            scores: format!("{p}.scores"),
            alerts: format!("{p}.alerts"),
            dlq: format!("{p}.dlq"),
            group: format!("{p}.group"),
        };
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
    out
}

/// The committed offset of `group` on `topic`'s partitions (sum over partitions).
pub fn committed(broker: &Broker, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = broker.client_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // A broker that is restarting or loading its groups answers with an
    // error for a while: report nothing committed, callers poll again.
    let Ok(c) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else { return 0 };
    c.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum()
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
        let mut child = Command::new(binary)
            .args(global_args)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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

/// A free loopback address for engage's HTTP endpoint.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `GET path` over plain HTTP/1.1; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Produces `records` to the inputs of `topics` as fast as the broker takes
/// them; returns how many went to (clickstream, purchases).
pub fn feed(broker: &Broker, topics: &Topics, records: &[engage::synth::Record]) -> (i64, i64) {
    use engage::engine::event::InputTopic;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> =
        broker.client_config().set("linger.ms", "20").set("queue.buffering.max.messages", "2000000").create().unwrap();
    let (mut clicks, mut buys) = (0, 0);
    for r in records {
        let topic = match r.topic {
            InputTopic::Clickstream => {
                clicks += 1;
                &topics.clickstream
            }
            InputTopic::Purchases => {
                buys += 1;
                &topics.purchases
            }
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
