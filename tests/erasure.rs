//! Erasure against the real broker (docs/model.md "Erasure"): a request on
//! the erasures topic removes the customer from memory, the changelog, the
//! scores topic (a tombstone) and the HTTP API; confirms it; keeps the
//! customer's earlier events out however late they come, across a restart;
//! and lets later events start a new customer. The first two tests run
//! under both processing guarantees. The second does the same through `kill -9`s: one
//! between an erasure being applied and its changelog record being written
//! (`exactly_once`: its transaction being committed), one as soon as an
//! erasure of the next batch is confirmed, and one while late events are
//! being read; with `exactly_once` the first kill lands with engage frozen
//! while the erasure's three writes sit in an open transaction. A third
//! moves the erased customers' partitions to a second instance, which must
//! keep their late events out; a fourth lets `state.retention` pass in
//! stream time and checks the erasure records are forgotten, through a
//! restart (both at least once: where an erasure is held does not depend
//! on the guarantee).
//!
//! **Data.** 40 customers `u0`…`u39` active on five days starting 20 days
//! ago (`A`), the even ones buying on the third. The runs sweep every
//! second, so every customer slips (and alerts) once its history is read,
//! before any erasure. Erasure requests at `T_e = start + 10 days` for
//! `u0`…`u19`. Then late events from before `T_e` for everyone (`L`: every
//! erased customer gets a click and a purchase, the others a click), and
//! events after `T_e` for `u0`…`u9` (`P`: a new customer each, its click
//! read before its purchase). After a restart, more late events for
//! `u10`…`u19` (`L2`).
//!
//! **Expected.** `engage replay` of the events a customer should keep:
//! `A + L` for `u20`…`u39`, `P` for `u0`…`u9`, nothing for `u10`…`u19`.
//! The final changelog must hold exactly that (active and purchase days,
//! first and latest activity, spend, the five dimension sums and the
//! score), with the erasure kept for the erased ones; the scores topic a
//! tombstone per erased customer, and after it only messages of the new
//! customer (event time after `T_e`, `seq` going on, each score replay's at
//! the same event); the confirmations topic every request, each with the
//! cut-off `T_e`, and for each confirmed customer the erasure already in
//! the changelog (at least once: created after the record could be
//! acknowledged; exactly once: the three writes in one transaction, seen
//! together or not at all after a kill, on topics that carry transaction
//! markers); a slip alert for every customer, and no alert for an erased
//! customer produced after its confirmation unless it came back, never a
//! `reactivated` (the old state back).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, Engage, Topics, http_get, produce, read_topic};
use engage::clock::wall_clock_ms;
use engage::config::Config;
use engage::engine::event::DAY_MS;
use engage::engine::state::CustomerState;
use engage::engine::{Engine, Rules};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;
const CUSTOMERS: usize = 40;
/// `u0`…`u19` are erased; `u0`…`u9` come back after the erasure.
const ERASED: usize = 20;
const RETURNING: usize = 10;

/// The topics of one test, with its erasure topics.
struct Setup {
    broker: Broker,
    t: Topics,
    erasures: String,
    confirmations: String,
    producer: FutureProducer,
    start: i64,
    dir: tempfile::TempDir,
    /// `run.processing_guarantee`.
    guarantee: &'static str,
}

/// One event of the history, and whether the run should keep it.
#[derive(Clone)]
struct Ev {
    id: String,
    customer: usize,
    ts: i64,
    amount: Option<f64>,
}

impl Ev {
    fn json(&self) -> Value {
        let mut v = json!({"event_id": self.id, "customer_id": customer(self.customer), "ts": self.ts});
        match self.amount {
            Some(a) => {
                v["type"] = json!("purchase");
                v["amount"] = json!(a);
            }
            None => v["type"] = json!("page_view"),
        }
        v
    }
}

fn customer(i: usize) -> String {
    format!("u{i}")
}

impl Setup {
    async fn new(prefix: &str, guarantee: &'static str) -> Setup {
        let broker = Broker::start();
        let t = Topics::named(prefix);
        let base = t.clickstream.strip_suffix(".clickstream").unwrap().to_string();
        let (erasures, confirmations) = (format!("{base}.erasures"), format!("{base}.erasures-confirmed"));
        for name in [&t.clickstream, &t.purchases, &erasures] {
            broker.create_topic(name, PARTITIONS).await;
        }
        let producer = broker.producer();
        let start = (wall_clock_ms() - 20 * DAY_MS) / DAY_MS * DAY_MS;
        Setup { broker, t, erasures, confirmations, producer, start, dir: tempfile::tempdir().unwrap(), guarantee }
    }

    fn t_e(&self) -> i64 {
        self.start + 10 * DAY_MS
    }

    /// `A`: five active days each, a purchase on the third for even ones.
    fn history(&self) -> Vec<Ev> {
        let mut out = Vec::new();
        for c in 0..CUSTOMERS {
            for d in 0..5 {
                let ts = self.start + d * DAY_MS + c as i64 * 60_000;
                out.push(Ev { id: format!("a-{c}-{d}"), customer: c, ts, amount: None });
                if d == 2 && c % 2 == 0 {
                    out.push(Ev { id: format!("ap-{c}"), customer: c, ts: ts + 1000, amount: Some(20.0 + c as f64) });
                }
            }
        }
        out
    }

    /// `L`: late events from before `T_e`, both inputs for erased customers.
    fn late(&self) -> Vec<Ev> {
        let mut out = Vec::new();
        for c in 0..CUSTOMERS {
            out.push(Ev { id: format!("l-{c}"), customer: c, ts: self.start + 7 * DAY_MS, amount: None });
            if c < ERASED {
                let ts = self.start + 8 * DAY_MS;
                out.push(Ev { id: format!("lp-{c}"), customer: c, ts, amount: Some(99.0) });
            }
        }
        out
    }

    /// `P`: the returning customers' new life after `T_e`.
    fn post(&self) -> Vec<Ev> {
        let mut out = Vec::new();
        for c in 0..RETURNING {
            let ts = self.t_e() + DAY_MS;
            out.push(Ev { id: format!("p-{c}"), customer: c, ts, amount: None });
            out.push(Ev { id: format!("pp-{c}"), customer: c, ts: ts + DAY_MS, amount: Some(5.0) });
        }
        out
    }

    /// `L2`: more late events for the erased customers who did not return.
    fn late_after_restart(&self) -> Vec<Ev> {
        (RETURNING..ERASED)
            .map(|c| Ev { id: format!("l2-{c}"), customer: c, ts: self.start + 6 * DAY_MS, amount: None })
            .collect()
    }

    async fn send(&self, events: &[Ev]) {
        for e in events {
            let topic = if e.amount.is_some() { &self.t.purchases } else { &self.t.clickstream };
            let key = customer(e.customer);
            produce(&self.producer, topic, Some(key.as_bytes()), e.json().to_string().as_bytes(), &[]).await;
        }
    }

    /// Sends `P`, each new life's click before its purchase, and the
    /// purchases only once the instance at `addr` has read the clicks: the
    /// two inputs are read independently, and the scores published at each
    /// event, compared with replay's, depend on the order they are applied.
    async fn send_post(&self, post: &[Ev], addr: &str, engage: &Engage) {
        let (clicks, purchases): (Vec<Ev>, Vec<Ev>) = post.iter().cloned().partition(|e| e.amount.is_none());
        let before = common::records_read(addr);
        self.send(&clicks).await;
        wait_read(addr, before + clicks.len() as f64, engage);
        self.send(&purchases).await;
    }

    async fn erase(&self, customers: std::ops::Range<usize>) {
        for c in customers {
            let request = json!({"customer_id": customer(c), "request_id": format!("r-{c}"), "ts": self.t_e()});
            let key = customer(c);
            produce(&self.producer, &self.erasures, Some(key.as_bytes()), request.to_string().as_bytes(), &[]).await;
        }
    }

    /// The run's config: sweeps every second, on the wall clock one second
    /// after input stops, so the idle customers slip (and alert) during the
    /// test, as a leaked old state would after its erasure.
    fn config(&self, flush: &str) -> String {
        let config = self
            .t
            .config(
                &self.broker,
                &format!(
                    "processing_guarantee = \"{}\"\nsweep_interval = \"1s\"\nidle_grace = \"1s\"\n\
                     [state]\nflush_interval = \"{flush}\"\n",
                    self.guarantee
                ),
            )
            .replace(
                "[http]\n",
                &format!(
                    "erasures = \"{}\"\nerasure_confirmations = \"{}\"\n\n[http]\n",
                    self.erasures, self.confirmations
                ),
            );
        common::with_api(&config)
    }

    fn start_engage(&self, flush: &str) -> (Engage, String) {
        let engage = Engage::start(self.dir.path(), &self.config(flush));
        let addr = engage.http_addr();
        (engage, addr)
    }

    /// [`Setup::start_engage`] with every output held `linger` ms in the
    /// producer before it is sent: an erasure's changelog record then goes
    /// out only seconds after the erasure, and a kill lands in between.
    fn start_slow_engage(&self, flush: &str, linger: Duration) -> (Engage, String) {
        let config =
            self.config(flush).replacen("[kafka]\n", &format!("[kafka]\n\"linger.ms\" = {}\n", linger.as_millis()), 1);
        let engage = Engage::start(self.dir.path(), &config);
        let addr = engage.http_addr();
        (engage, addr)
    }

    /// Waits until every customer has slipped (an `at_risk` or `dormant`
    /// alert): from then on, an old state that outlived its erasure would
    /// show, as a `reactivated` alert when the customer comes back.
    fn wait_slipped(&self, engage: &Engage) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let slipped: BTreeSet<String> = read_topic(&self.broker, &self.t.alerts, 0, Duration::from_secs(30))
                .iter()
                .map(|r| r.json())
                .filter(|a| a["kind"] == "at_risk" || a["kind"] == "dormant")
                .map(|a| a["customer_id"].as_str().unwrap().to_string())
                .collect();
            if slipped.len() == CUSTOMERS {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {CUSTOMERS} customers slipped:\n{}",
                slipped.len(),
                engage.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// After a kill: every customer in `requested` that a `read_committed`
    /// reader sees confirmed has its erasure record in the changelog, and
    /// with `exactly_once` the record, the scores tombstone and the
    /// confirmation are visible all together or not at all (one
    /// transaction). Returns the customers seen confirmed.
    fn check_after_kill(&self, requested: &[usize]) -> Vec<usize> {
        let changelog = self.changelog();
        let tombstoned: BTreeSet<Vec<u8>> = read_topic(&self.broker, &self.t.scores, 0, Duration::from_secs(30))
            .into_iter()
            .filter(|r| r.value.is_empty())
            .filter_map(|r| r.key)
            .collect();
        let confirmed: BTreeSet<Vec<u8>> = read_topic(&self.broker, &self.confirmations, 0, Duration::from_secs(30))
            .into_iter()
            .filter_map(|r| r.key)
            .collect();
        let mut seen = Vec::new();
        for &c in requested {
            let id = customer(c);
            let recorded = changelog.get(&id).is_some_and(|r| r.1.is_some());
            let is_confirmed = confirmed.contains(id.as_bytes());
            if is_confirmed {
                assert!(recorded, "{id} confirmed but its erasure is not in the changelog");
                seen.push(c);
            }
            if self.guarantee == "exactly_once" {
                let tombstone = tombstoned.contains(id.as_bytes());
                assert!(
                    recorded == is_confirmed && tombstone == is_confirmed,
                    "{id}: erasure record {recorded}, scores tombstone {tombstone}, confirmation {is_confirmed}: \
                     one transaction shows all three or none"
                );
            }
        }
        seen
    }

    /// With `exactly_once`: waits until the changelog, the scores topic and
    /// the confirmations topic each hold records of a transaction still
    /// open (a partition whose last stable offset trails its high
    /// watermark), then freezes `engage` (SIGSTOP) and checks again, so the
    /// kill that follows lands between the erasure's three writes and
    /// their commit.
    fn freeze_inside_transaction(&self, engage: &Engage) {
        let changelog = format!("{}.engage-state", self.t.group);
        let topics = [&changelog, &self.t.scores, &self.confirmations];
        let open = || -> Vec<bool> {
            topics.iter().map(|t| stable_and_high(&self.broker, t).iter().any(|(stable, high)| stable < high)).collect()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while open() != [true; 3] {
            assert!(
                Instant::now() < deadline,
                "no transaction open on {topics:?} ({:?}) after an erasure was applied:\n{}",
                open(),
                engage.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        common::runs::signal(engage.child.id(), "STOP");
        // A second later: a commit already on its way (its markers still
        // being written) would have closed them by now; engage, frozen,
        // cannot.
        std::thread::sleep(Duration::from_secs(1));
        let now = open();
        assert_eq!(now, [true; 3], "the transaction on {topics:?} was committed as engage was frozen: {now:?}");
        println!("engage frozen with the erasure's record, tombstone and confirmation in an open transaction");
    }

    /// Records committed by the group over the three inputs.
    fn committed(&self) -> i64 {
        [&self.t.clickstream, &self.t.purchases, &self.erasures]
            .iter()
            .map(|topic| common::committed(&self.broker, &self.t.group, topic, PARTITIONS))
            .sum()
    }

    fn wait_committed(&self, total: i64, engage: &Engage) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.committed() < total {
            assert!(Instant::now() < deadline, "{total} records not committed:\n{}", engage.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The changelog read to its end: per customer, the state and the
    /// erasure its latest record holds (tombstones remove the customer).
    fn changelog(&self) -> BTreeMap<String, (Option<CustomerState>, Option<engage::proto::Erasure>)> {
        let mut out = BTreeMap::new();
        let topic = format!("{}.engage-state", self.t.group);
        for r in read_topic(&self.broker, &topic, 0, Duration::from_secs(60)) {
            let id = String::from_utf8(r.key.unwrap()).unwrap();
            if r.value.is_empty() {
                out.remove(&id);
                continue;
            }
            let record = engage::proto::CustomerState::decode(&r.value[..]).unwrap();
            let state =
                (!record.dimensions.is_empty()).then(|| engage::codec::state::state_from_proto(&record).unwrap().1);
            out.insert(id, (state, record.erased));
        }
        out
    }

    /// `engage replay` of the events each customer should keep: its as-of
    /// time, each customer's `state.jsonl` line, and each customer's
    /// `scores.jsonl` lines.
    fn expected(&self, kept: &[Ev]) -> Replayed {
        let input = self.dir.path().join("kept.jsonl");
        let lines: Vec<String> = kept.iter().map(|e| e.json().to_string()).collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = self.dir.path().join("replay");
        let output = Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(["replay", "--input"])
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(output.status.success(), "engage replay failed: {}", String::from_utf8_lossy(&output.stderr));
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        let lines = |name: &str| -> Vec<Value> {
            std::fs::read_to_string(out.join(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect()
        };
        let mut scores: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for v in lines("scores.jsonl") {
            scores.entry(v["customer_id"].as_str().unwrap().to_string()).or_default().push(v);
        }
        Replayed {
            as_of: summary["as_of"].as_i64().expect("replay's as-of time"),
            states: lines("state.jsonl")
                .into_iter()
                .map(|v| (v["customer_id"].as_str().unwrap().to_string(), v))
                .collect(),
            scores,
        }
    }

    /// Each confirmation was created after its erasure's changelog record
    /// was acknowledged: at least `linger` (the producer's hold) after the
    /// record was created. (With `exactly_once` they share a transaction
    /// instead.)
    fn check_confirmed_after_record(&self, linger: Duration) {
        let changelog = read_topic(&self.broker, &format!("{}.engage-state", self.t.group), 0, Duration::from_secs(60));
        let confirmations = read_topic(&self.broker, &self.confirmations, ERASED, Duration::from_secs(60));
        for c in 0..ERASED {
            let id = customer(c);
            let mine = |records: &[common::Received]| -> Vec<common::Received> {
                records.iter().filter(|r| r.key.as_deref() == Some(id.as_bytes())).cloned().collect()
            };
            let recorded = mine(&changelog)
                .iter()
                .filter(|r| !r.value.is_empty())
                .find(|r| engage::proto::CustomerState::decode(&r.value[..]).unwrap().erased.is_some())
                .and_then(|r| r.timestamp)
                .unwrap_or_else(|| panic!("{id}: no erasure record in the changelog"));
            let confirmed = mine(&confirmations).iter().filter_map(|r| r.timestamp).min().unwrap();
            assert!(
                confirmed - recorded >= linger.as_millis() as i64,
                "{id}: confirmed {} ms after its erasure record was created, sooner than the record could be \
                 acknowledged ({linger:?} in the producer)",
                confirmed - recorded
            );
        }
    }

    /// With `exactly_once`: the erasure's three writes went out in
    /// transactions. A topic written transactionally holds a commit marker
    /// after each transaction, so its offsets run past the records a
    /// consumer reads; a silent fall-back to plain writes would leave none.
    fn check_transactional(&self) {
        let changelog = format!("{}.engage-state", self.t.group);
        let c: BaseConsumer = self.broker.client_config().create().unwrap();
        for topic in [&self.confirmations, &self.t.scores, &changelog] {
            let records = read_topic(&self.broker, topic, 1, Duration::from_secs(60)).len() as i64;
            let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
            let end: i64 = md.topics()[0]
                .partitions()
                .iter()
                .map(|p| c.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).unwrap().1)
                .sum();
            assert!(end > records, "{topic}: {records} records over {end} offsets: no transaction markers");
        }
    }

    /// Waits until a `read_committed` reader sees a confirmation for one of
    /// `batch`.
    fn wait_confirmed(&self, batch: std::ops::Range<usize>, engage: &Engage) {
        let consumer: BaseConsumer = self
            .broker
            .client_config()
            .set("group.id", common::unique("confirmed"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        // engage creates the confirmations topic as it starts.
        loop {
            let md = consumer.fetch_metadata(Some(&self.confirmations), Duration::from_secs(5)).unwrap();
            let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
            if !partitions.is_empty() {
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    tpl.add_partition_offset(&self.confirmations, p, Offset::Beginning).unwrap();
                }
                consumer.assign(&tpl).unwrap();
                break;
            }
            assert!(Instant::now() < deadline, "no {} topic:\n{}", self.confirmations, engage.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let mine: BTreeSet<String> = batch.clone().map(customer).collect();
        loop {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50))
                && m.key().is_some_and(|k| mine.contains(&*String::from_utf8_lossy(k)))
            {
                return;
            }
            assert!(Instant::now() < deadline, "no erasure of {batch:?} confirmed:\n{}", engage.log());
        }
    }

    /// Everything the module docs promise, on the topics as they are now.
    fn check(&self, everything: &[Ev]) {
        let t_e = self.t_e();
        // What each customer should keep.
        let kept: Vec<Ev> = everything
            .iter()
            .filter(|e| e.customer >= ERASED || (e.customer < RETURNING && e.ts > t_e))
            .cloned()
            .collect();
        let replayed = self.expected(&kept);
        let expected = &replayed.states;
        assert_eq!(expected.len(), CUSTOMERS - (ERASED - RETURNING), "replay holds the kept customers");
        let engine = Engine::new(Rules::new(&Config::default()));

        // The changelog.
        let changelog = self.changelog();
        for c in 0..CUSTOMERS {
            let id = customer(c);
            let (state, erased) = changelog.get(&id).cloned().unwrap_or_else(|| panic!("{id} not in the changelog"));
            if c < ERASED {
                let erased = erased.unwrap_or_else(|| panic!("{id}: the erasure is not in the changelog"));
                assert_eq!(erased.cutoff, t_e, "{id}: cut-off");
            } else {
                assert!(erased.is_none(), "{id} was never erased");
            }
            match (expected.get(&id), state) {
                (None, None) => {}
                (None, Some(s)) => panic!("{id} was erased and never came back, yet the changelog holds {s:?}"),
                (Some(_), None) => panic!("{id}: no state in the changelog"),
                (Some(want), Some(got)) => {
                    let facts = |s: &CustomerState| {
                        (s.active_days as i64, s.purchase_days() as i64, s.first_seen, s.last_seen, s.spend_lifetime())
                    };
                    let i = |k: &str| want[k].as_i64().unwrap();
                    let want_facts = (
                        i("active_days"),
                        i("purchase_days"),
                        i("first_seen"),
                        i("last_seen"),
                        want["spend_lifetime"].as_f64().unwrap(),
                    );
                    assert_eq!(facts(&got), want_facts, "{id}: the run's facts against replay of what it keeps");
                    // The dimension sums and the score too: old activity
                    // leaking into a new life changes them, not the counts.
                    let at = replayed.as_of.max(got.last_seen);
                    let sums = got.raw_at(at, &engine.rules().scoring);
                    for (i, name) in DIMENSION_NAMES.iter().enumerate() {
                        let want = want["dimension_sums"][name].as_f64().unwrap();
                        assert!(
                            (sums[i] - want).abs() <= 1e-5 * sums[i].abs().max(want.abs()).max(1e-3),
                            "{id}: {name} sum {} against replay's {want}",
                            sums[i]
                        );
                    }
                    let score = engine.snapshot(&got, at).score;
                    let want_score = want["score"].as_f64().unwrap();
                    assert!((score - want_score).abs() <= 1e-6, "{id}: score {score} against replay's {want_score}");
                }
            }
        }

        // The confirmations, and the erasure durable for each.
        let confirmations: Vec<Value> = read_topic(&self.broker, &self.confirmations, ERASED, Duration::from_secs(60))
            .iter()
            .map(|r| r.json())
            .collect();
        let requests: BTreeSet<&str> = confirmations.iter().map(|c| c["request_id"].as_str().unwrap()).collect();
        let want: BTreeSet<String> = (0..ERASED).map(|c| format!("r-{c}")).collect();
        assert_eq!(requests, want.iter().map(String::as_str).collect(), "every request confirmed");
        assert!(confirmations.iter().all(|c| c["cutoff"] == t_e), "{confirmations:?}");
        let confirmed_at: BTreeMap<&str, i64> = confirmations
            .iter()
            .map(|c| (c["customer_id"].as_str().unwrap(), c["erased_at"].as_i64().unwrap()))
            .fold(BTreeMap::new(), |mut m, (id, at)| {
                let e = m.entry(id).or_insert(at);
                *e = (*e).min(at);
                m
            });

        // The scores topic: a tombstone per erased customer; after the last
        // one only the new customer, whose score is what a compacted view
        // keeps; nothing from before the erasure produced after it was
        // confirmed.
        let scores = read_topic(&self.broker, &self.t.scores, 1, Duration::from_secs(60));
        for c in 0..ERASED {
            let id = customer(c);
            let mine: Vec<_> = scores.iter().filter(|r| r.key.as_deref() == Some(id.as_bytes())).collect();
            let last_tombstone = mine
                .iter()
                .rposition(|r| r.value.is_empty())
                .unwrap_or_else(|| panic!("{id}: no tombstone on the scores topic"));
            let before_max_seq = mine[..last_tombstone]
                .iter()
                .filter(|r| !r.value.is_empty())
                .map(|r| r.json()["seq"].as_u64().unwrap())
                .max()
                .unwrap_or(0);
            for r in mine[last_tombstone..].iter().filter(|r| !r.value.is_empty()) {
                let v = r.json();
                assert!(c < RETURNING, "{id} never came back, yet scored after its erasure: {v}");
                assert!(v["event_time"].as_i64().unwrap() > t_e, "{id}: a score after the tombstone from before: {v}");
                assert!(v["seq"].as_u64().unwrap() > before_max_seq, "{id}: seq must go on after the erasure: {v}");
            }
            let last = mine.last().unwrap();
            assert_eq!(last.value.is_empty(), c >= RETURNING, "{id}: the compacted view keeps only who came back");
            if c < RETURNING {
                // The new life's scores are replay's for its events alone,
                // as published at the same event (sweep outputs, at other
                // times, have no counterpart).
                let replay_scores = &replayed.scores[&id];
                let matched = mine[last_tombstone..]
                    .iter()
                    .filter(|r| !r.value.is_empty())
                    .map(|r| r.json())
                    .filter_map(|v| {
                        let twin = replay_scores.iter().find(|w| w["event_time"] == v["event_time"])?;
                        Some((v, twin))
                    })
                    .inspect(|(v, twin)| {
                        let (a, b) = (v["score"].as_f64().unwrap(), twin["score"].as_f64().unwrap());
                        assert!((a - b).abs() <= 1e-6, "{id}: published {v} where replay publishes {twin}");
                    })
                    .count();
                assert!(matched > 0, "{id}: no score of its new life at an event replay publishes");
            }
            for v in mine.iter().filter(|r| !r.value.is_empty()).map(|r| r.json()) {
                assert!(
                    v["processed_at"].as_i64().unwrap() <= confirmed_at[id.as_str()]
                        || v["event_time"].as_i64().unwrap() > t_e,
                    "{id}: a score from before the erasure produced after it was confirmed: {v}"
                );
            }
        }

        // Alerts: every customer slipped during the run (the sweeps
        // alert), so an old state kept past its erasure would alert again:
        // no alert for an erased customer produced after its confirmation,
        // except a new life's own slip; never a `reactivated` (a new life
        // is a new customer, not the old one back).
        let alerts: Vec<Value> = read_topic(&self.broker, &self.t.alerts, CUSTOMERS, Duration::from_secs(60))
            .iter()
            .map(|r| r.json())
            .collect();
        let slipped: BTreeSet<&str> = alerts
            .iter()
            .filter(|a| a["kind"] == "at_risk" || a["kind"] == "dormant")
            .map(|a| a["customer_id"].as_str().unwrap())
            .collect();
        assert_eq!(slipped.len(), CUSTOMERS, "every customer slipped and alerted: {slipped:?}");
        for a in &alerts {
            let id = a["customer_id"].as_str().unwrap();
            if let Some(&at) = confirmed_at.get(id) {
                let c: usize = id[1..].parse().unwrap();
                let after = a["processed_at"].as_i64().unwrap() >= at;
                assert!(!after || c < RETURNING, "{id}: an alert after the erasure was confirmed: {a}");
                assert!(
                    !after || a["kind"] != "reactivated",
                    "{id}: reactivated after its erasure was confirmed, so the old state outlived it: {a}"
                );
            }
        }
    }
}

/// What `engage replay` of the kept events wrote.
struct Replayed {
    as_of: i64,
    states: BTreeMap<String, Value>,
    scores: BTreeMap<String, Vec<Value>>,
}

/// The dimensions as `state.jsonl` names them, in the engine's order.
const DIMENSION_NAMES: [&str; 5] = ["attention", "transaction", "social", "loyalty", "satisfaction"];

/// Waits until the instance at `addr` has read `n` records.
fn wait_read(addr: &str, n: f64, engage: &Engage) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = common::records_read(addr);
        if read >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} records not read (read {read}):\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `log` without its terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Per partition of `topic`: (last stable offset, high watermark). The
/// first trails the second while a transaction holding records there is
/// open.
fn stable_and_high(broker: &Broker, topic: &str) -> Vec<(i64, i64)> {
    let committed: BaseConsumer = broker.client_config().set("isolation.level", "read_committed").create().unwrap();
    let uncommitted: BaseConsumer = broker.client_config().set("isolation.level", "read_uncommitted").create().unwrap();
    let t = Duration::from_secs(5);
    let Ok(md) = committed.fetch_metadata(Some(topic), t) else { return Vec::new() };
    md.topics()[0]
        .partitions()
        .iter()
        .filter_map(|p| {
            let stable = committed.fetch_watermarks(topic, p.id(), t).ok()?.1;
            let high = uncommitted.fetch_watermarks(topic, p.id(), t).ok()?.1;
            Some((stable, high))
        })
        .collect()
}

fn status(engage: &Engage, id: &str) -> u16 {
    common::api_get(&engage.api_addr(), &format!("/v1/customers/{id}")).map(|r| r.0).unwrap_or(0)
}

fn stop(mut engage: Engage) -> String {
    let (code, _) = engage.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "engage did not stop cleanly:\n{}", engage.log());
    engage.log()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_removes_the_customer_everywhere_and_keeps_its_past_out() {
    erase_and_restart("at_least_once").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_in_exactly_once_mode_removes_the_customer_everywhere() {
    erase_and_restart("exactly_once").await;
}

/// The first test, under `guarantee`.
async fn erase_and_restart(guarantee: &'static str) {
    let s = Setup::new("erasure", guarantee).await;
    let history = s.history();
    s.send(&history).await;
    // Outputs held a second in the producer: a confirmation that waits for
    // its erasure's changelog record is created at least that long after it.
    // State flushed every second too: each flush waits for the one before
    // it, and flushes more often than the hold pile up, so the stop would
    // take longer than the harness's max.poll.interval.ms (7 s) and lose
    // its last commit (reported to the lead).
    let linger = Duration::from_secs(1);
    let (engage, addr) = s.start_slow_engage("1s", linger);
    wait_read(&addr, history.len() as f64, &engage);
    assert_eq!(status(&engage, "u3"), 200);
    s.wait_slipped(&engage);

    s.erase(0..ERASED).await;
    // A request that cannot be used goes to the dead-letter topic.
    produce(&s.producer, &s.erasures, Some(b"u30"), br#"{"customer_id":"u30"}"#, &[]).await;
    // The new lives begin as soon as the erasures are applied, before they
    // are confirmed: their scores must land after the scores tombstones.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..RETURNING).any(|c| status(&engage, &customer(c)) != 404) {
        assert!(Instant::now() < deadline, "erasures not applied:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(5));
    }
    let post = s.post();
    s.send_post(&post, &addr, &engage).await;
    read_topic(&s.broker, &s.confirmations, ERASED, Duration::from_secs(60));
    assert_eq!(status(&engage, "u13"), 404, "an erased customer is gone from the API");
    assert_eq!(status(&engage, "u30"), 200, "the bad request erased nobody");

    let late = s.late();
    s.send(&late).await;
    wait_read(&addr, (history.len() + ERASED + 1 + late.len() + post.len()) as f64, &engage);
    assert_eq!(status(&engage, "u3"), 200, "a customer who came back after the erasure");
    assert_eq!(status(&engage, "u13"), 404, "late events did not bring it back");
    let log = stop(engage);
    assert!(log.contains("before_erasure: 40"), "every late event of an erased customer ignored:\n{log}");

    // The erasure outlives a restart: the changelog carries it.
    let (engage, addr) = s.start_engage("200ms");
    let late2 = s.late_after_restart();
    s.send(&late2).await;
    wait_read(&addr, late2.len() as f64, &engage);
    assert_eq!(status(&engage, "u13"), 404, "late events after a restart did not bring it back");
    let log = stop(engage);
    assert!(log.contains("before_erasure: 10"), "{log}");

    let dead = read_topic(&s.broker, &s.t.dlq, 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "the bad request dead-lettered");
    assert_eq!(dead[0].header("engage.error"), Some(&b"missing_event_id"[..]));

    let everything: Vec<Ev> = [history, late, post, late2].concat();
    s.check(&everything);
    if guarantee == "at_least_once" {
        s.check_confirmed_after_record(linger);
    } else {
        s.check_transactional();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_survives_kill_minus_nine_at_any_moment() {
    erase_through_kills("at_least_once").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_in_exactly_once_mode_is_all_or_nothing_through_kill_minus_nine() {
    erase_through_kills("exactly_once").await;
}

/// The kill test, under `guarantee`: engage killed (-9) between an erasure
/// and its changelog record (`exactly_once`: its transaction's commit,
/// engage frozen once the record, the tombstone and the confirmation are
/// all in the open transaction),
/// then as soon as an erasure of the next batch is confirmed, then while
/// late events are being read; after each kill the confirmed erasures are
/// durable (and with `exactly_once` each erasure's record, tombstone and
/// confirmation are visible together or not at all); the end is checked
/// as the first test's.
async fn erase_through_kills(guarantee: &'static str) {
    let s = Setup::new("erasure-kill", guarantee).await;
    let history = s.history();
    s.send(&history).await;
    let (engage, _) = s.start_engage("200ms");
    s.wait_committed(history.len() as i64, &engage);
    s.wait_slipped(&engage);
    let mut committed = history.len() as i64;
    // Stopped, not killed: the next instance need not wait for its session
    // to expire.
    stop(engage);

    // Kill right after an erasure is applied, until one kill lands before
    // its changelog record is written (the state dropped in memory, the
    // changelog still holding the customer): at least once, the producer
    // holds each record 3 s; exactly once, the transaction is committed
    // only at the flush, an hour away. So the first attempt should.
    // Batches of five customers.
    let mut in_window = None;
    let mut requested = Vec::new();
    let mut batches = (0..ERASED).step_by(5);
    for first in batches.by_ref() {
        let (mut engage, _) = s.start_slow_engage("1h", Duration::from_secs(3));
        s.erase(first..first + 5).await;
        requested.extend(first..first + 5);
        assert!(engage.wait_for_log("erasure applied", Duration::from_secs(60)), "{}", engage.log());
        if guarantee == "exactly_once" {
            // The kill must land inside the transaction: the record, the
            // tombstone and the confirmation written, none committed.
            s.freeze_inside_transaction(&engage);
        }
        engage.kill9();
        let changelog = s.changelog();
        let log = plain(&engage.log());
        let applied: Vec<usize> = (first..first + 5).filter(|c| log.contains(&format!("request_id=r-{c}"))).collect();
        let unwritten: Vec<usize> =
            applied.iter().copied().filter(|c| changelog.get(&customer(*c)).is_none_or(|r| r.1.is_none())).collect();
        s.check_after_kill(&requested);
        committed += 5;
        if !unwritten.is_empty() {
            println!("kill after erasures {applied:?} were applied; {unwritten:?} not yet in the changelog");
            in_window = Some(unwritten);
            break;
        }
    }
    let in_window = in_window.expect("no kill landed between an erasure and its changelog record");

    // The next batch: the instance killed as soon as one erasure of it is
    // confirmed, the others perhaps not yet.
    let first = batches.next().expect("a batch after the one killed in the window");
    let (mut engage, _) = s.start_engage("200ms");
    s.erase(first..first + 5).await;
    requested.extend(first..first + 5);
    s.wait_confirmed(first..first + 5, &engage);
    engage.kill9();
    let checked = s.check_after_kill(&requested);
    assert!(checked.iter().any(|c| (first..first + 5).contains(c)), "the wait saw a confirmation of {first}..");
    committed += 5;
    println!("after the kill that followed a confirmation, erasures {checked:?} confirmed, each durable");

    // The remaining erasures, and the requests the kills left, all
    // committed by an instance that then stops cleanly.
    let (late, post) = (s.late(), s.post());
    let half = late.len() / 2;
    let (engage, _) = s.start_engage("200ms");
    for first in batches {
        s.erase(first..first + 5).await;
        committed += 5;
    }
    s.wait_committed(committed, &engage);
    stop(engage);
    // Killed once more while late events are being read, then a clean
    // finish. This instance flushes hourly, so nothing it reads can be
    // committed before the kill under either guarantee (an offset needs a
    // flush after it; a transaction ends only at a flush). (A 200 ms flush
    // with outputs lingering a second held nothing back under
    // exactly_once, whose commit sends at once: a kill 200 ms late came
    // after the commit, in a full run.)
    let (mut engage, addr) = s.start_engage("1h");
    let before = common::records_read(&addr);
    s.send(&late[..half]).await;
    wait_read(&addr, before + 1.0, &engage);
    engage.kill9();
    let done = s.committed();
    assert!(
        done < committed + half as i64,
        "the kill came after the late events were committed ({done}): it proves nothing"
    );
    committed += half as i64;
    let (engage, addr) = s.start_engage("200ms");
    s.wait_committed(committed, &engage);
    // The new lives begin after every erasure is done: an event engage
    // reads before the request goes with the customer, whatever its time.
    s.send(&late[half..]).await;
    committed += (late.len() - half) as i64;
    s.wait_committed(committed, &engage);
    s.send_post(&post, &addr, &engage).await;
    committed += post.len() as i64;
    s.wait_committed(committed, &engage);
    stop(engage);
    let (engage, addr) = s.start_engage("200ms");
    let late2 = s.late_after_restart();
    s.send(&late2).await;
    wait_read(&addr, late2.len() as f64, &engage);
    for c in &in_window {
        let want = if *c < RETURNING { 200 } else { 404 };
        assert_eq!(status(&engage, &customer(*c)), want, "u{c}, erased as the instance was killed");
    }
    stop(engage);

    let everything: Vec<Ev> = [history, late, post, late2].concat();
    s.check(&everything);
    if guarantee == "exactly_once" {
        s.check_transactional();
    }
}

/// The erasures applied by one instance, then a second one joining the
/// group and taking some partitions: it restores their erasures from the
/// changelog and keeps out every late event from before them it reads
/// (counted by partition), and the end is checked as the first test's.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_moves_with_its_partition_to_a_new_instance() {
    let s = Setup::new("erasure-move", "at_least_once").await;
    let history = s.history();
    s.send(&history).await;
    let (first, addr) = s.start_engage("200ms");
    wait_read(&addr, history.len() as f64, &first);
    s.wait_slipped(&first);
    s.erase(0..ERASED).await;
    read_topic(&s.broker, &s.confirmations, ERASED, Duration::from_secs(60));
    let mut committed = (history.len() + ERASED) as i64;
    s.wait_committed(committed, &first);

    // A second instance joins the group and takes some of the partitions,
    // restoring their erasures from the changelog.
    let (second, _) = s.start_engage("200ms");
    let deadline = Instant::now() + Duration::from_secs(60);
    let moved = loop {
        let owned = owned_partitions(&second).unwrap_or_default();
        let revoked = plain(&first.log()).contains("partition revoked");
        if !owned.is_empty() && revoked {
            break owned;
        }
        assert!(Instant::now() < deadline, "no partition moved:\n{}\n{}", first.log(), second.log());
        std::thread::sleep(Duration::from_millis(100));
    };

    // Late events from before the erasure, for everyone, and the new lives
    // (each click read before its purchase).
    let (late, post) = (s.late(), s.post());
    s.send(&late).await;
    committed += late.len() as i64;
    s.wait_committed(committed, &first);
    let (clicks, purchases): (Vec<Ev>, Vec<Ev>) = post.iter().cloned().partition(|e| e.amount.is_none());
    for half in [clicks, purchases] {
        s.send(&half).await;
        committed += half.len() as i64;
        s.wait_committed(committed, &first);
    }
    assert_eq!(
        owned_partitions(&second),
        Some(moved.clone()),
        "the partitions stayed where they moved while the events were read"
    );

    // The late events of erased customers that the new owner read: where
    // their records landed.
    let erased_late: BTreeSet<&str> = late.iter().filter(|e| e.customer < ERASED).map(|e| e.id.as_str()).collect();
    let on_moved = [&s.t.clickstream, &s.t.purchases]
        .into_iter()
        .flat_map(|topic| read_topic(&s.broker, topic, 0, Duration::from_secs(30)))
        .filter(|r| moved.contains(&r.partition))
        .filter(|r| erased_late.contains(r.json()["event_id"].as_str().unwrap()))
        .count();
    assert!(on_moved > 0, "no late event of an erased customer on the partitions {moved:?} that moved");
    let log = stop(second);
    assert_eq!(
        before_erasure(&log),
        on_moved as u64,
        "the new owner kept out the {on_moved} late events of erased customers on partitions {moved:?}:\n{log}"
    );
    stop(first);
    println!(
        "partitions {moved:?} moved to a second instance after {ERASED} erasures; it kept out the {on_moved} late \
         events of erased customers it read"
    );

    let everything: Vec<Ev> = [history, late, post].concat();
    s.check(&everything);
}

/// The input partitions `engage` owns, from its log: restored and not
/// revoked since; `None` while an assignment is still being restored.
fn owned_partitions(engage: &Engage) -> Option<BTreeSet<i32>> {
    let mut owned = BTreeSet::new();
    let mut settled = false;
    for line in plain(&engage.log()).lines() {
        if line.contains(" rebalance ") {
            // The assignment is complete once its partitions are restored:
            // `owned=N` counts them.
            let n: Option<usize> =
                line.split("owned=").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
            settled = line.contains("kind=\"assign\"") && n == Some(owned.len());
            continue;
        }
        let Some(p) = line.split("partition=").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok())
        else {
            continue;
        };
        if line.contains("partition assigned: state restored") {
            owned.insert(p);
            settled = false;
        } else if line.contains("partition revoked") {
            owned.remove(&p);
            settled = false;
        }
    }
    settled.then_some(owned)
}

/// Events kept out as before an erasure, from the "stopped cleanly"
/// summary in `log`.
fn before_erasure(log: &str) -> u64 {
    let log = plain(log);
    let summary = log.lines().find(|l| l.contains("stopped cleanly")).unwrap_or_else(|| panic!("no summary:\n{log}"));
    summary
        .split("before_erasure: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no before_erasure count in {summary}"))
}

/// `state.retention` of the retention test: erasures older than this in
/// stream time are forgotten.
const RETENTION_DAYS: i64 = 30;

/// `state.retention` (30 days here) end to end: within it the erasure
/// records keep late events out; events that take stream time past it
/// drop them from memory and the changelog (the customers never erased
/// stay); restored after a restart without them, a late event from before
/// the old cut-off starts a customer from that one event, as documented.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_is_forgotten_after_the_state_retention() {
    let mut s = Setup::new("erasure-retention", "at_least_once").await;
    // Everything 110 days back, and stream time on event time only (no
    // idle grace), so the test moves it past the retention with events.
    s.start = (wall_clock_ms() - 110 * DAY_MS) / DAY_MS * DAY_MS;
    let config = s
        .config("200ms")
        .replace("idle_grace = \"1s\"", "idle_grace = \"1h\"")
        .replace("[state]\n", &format!("[state]\nretention = \"{RETENTION_DAYS}days\"\n"));
    let history = s.history();
    s.send(&history).await;
    let first = Engage::start(s.dir.path(), &config);
    let addr = first.http_addr();
    wait_read(&addr, history.len() as f64, &first);
    s.erase(0..ERASED).await;
    read_topic(&s.broker, &s.confirmations, ERASED, Duration::from_secs(60));
    let late = s.late();
    s.send(&late).await;
    let mut committed = (history.len() + ERASED + late.len()) as i64;
    s.wait_committed(committed, &first);
    assert_eq!(status(&first, "u13"), 404, "within the retention, late events stay out");
    let changelog = s.changelog();
    for c in 0..ERASED {
        let id = customer(c);
        assert!(changelog.get(&id).is_some_and(|r| r.1.is_some()), "{id}: the erasure is in the changelog");
    }

    // Events of the customers who were never erased, on every partition,
    // past the cut-off by more than the retention: stream time moves on,
    // and the erasure records go, from memory and from the changelog.
    let clock: Vec<Ev> = (ERASED..CUSTOMERS)
        .map(|c| Ev { id: format!("k-{c}"), customer: c, ts: s.t_e() + (RETENTION_DAYS + 1) * DAY_MS, amount: None })
        .collect();
    s.send(&clock).await;
    committed += clock.len() as i64;
    s.wait_committed(committed, &first);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let changelog = s.changelog();
        let kept: Vec<usize> = (0..ERASED).filter(|c| changelog.contains_key(&customer(*c))).collect();
        if kept.is_empty() {
            let rest = (ERASED..CUSTOMERS).filter(|c| changelog.get(&customer(*c)).is_some_and(|r| r.0.is_some()));
            assert_eq!(rest.count(), CUSTOMERS - ERASED, "the customers never erased stay");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "erasure records of {kept:?} still in the changelog {RETENTION_DAYS} days after their cut-off:\n{}",
            first.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = stop(first);
    assert_eq!(before_erasure(&log), 2 * ERASED as u64, "every late event of an erased customer kept out:\n{log}");

    // Restored without them: an event from before the old cut-off now
    // starts a customer from that one event (docs/model.md "Erasure").
    let second = Engage::start(s.dir.path(), &config);
    let addr = second.http_addr();
    let late2 = s.late_after_restart();
    s.send(&late2).await;
    wait_read(&addr, late2.len() as f64, &second);
    assert_eq!(status(&second, "u13"), 200, "a late event after the erasure was forgotten starts a customer");
    let log = stop(second);
    assert_eq!(before_erasure(&log), 0, "nothing kept out once the erasures were forgotten:\n{log}");
    let changelog = s.changelog();
    for e in &late2 {
        let id = customer(e.customer);
        let (state, erased) = changelog.get(&id).cloned().unwrap_or_else(|| panic!("{id} not in the changelog"));
        let state = state.unwrap_or_else(|| panic!("{id}: no state"));
        assert!(erased.is_none(), "{id}: the erasure came back");
        assert_eq!((state.active_days, state.first_seen, state.last_seen), (1, e.ts, e.ts), "{id}: only its new event");
    }
    println!(
        "{ERASED} erasure records kept out {} late events, were dropped from the changelog once stream time was \
         {RETENTION_DAYS} days past their cut-off, and stayed forgotten through a restart",
        2 * ERASED
    );
}

/// Not a check: how fast a burst of erasure requests is confirmed (each
/// waits for its own changelog record). `cargo test --release --test
/// erasure -- --ignored --nocapture a_burst`; figure in docs/performance.md.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn a_burst_of_erasures() {
    const BURST: usize = 3_000;
    let s = Setup::new("erasure-burst", "at_least_once").await;
    let (engage, addr) = s.start_engage("1s");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&addr, "/readyz").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "not ready:\n{}", engage.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let producer = s.broker.client_config().set("linger.ms", "5").create::<FutureProducer>().unwrap();
    let requests: Vec<(String, String)> = (0..BURST)
        .map(|c| {
            let request = json!({"customer_id": customer(c), "request_id": format!("r-{c}"), "ts": s.t_e()});
            (customer(c), request.to_string())
        })
        .collect();
    let started = Instant::now();
    let mut sends = Vec::with_capacity(BURST);
    for (key, value) in &requests {
        let record = rdkafka::producer::FutureRecord::to(&s.erasures).key(key).payload(value);
        sends.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    for send in sends {
        send.await.expect("delivered").expect("produced");
    }
    let produced = started.elapsed();
    let confirmations = read_topic(&s.broker, &s.confirmations, BURST, Duration::from_secs(300));
    let confirmed: BTreeSet<_> = confirmations.iter().map(|r| r.key.clone()).collect();
    assert_eq!(confirmed.len(), BURST);
    let metrics = http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default();
    let applied = metrics.lines().find(|l| l.starts_with("engage_erasures_total")).unwrap_or("").to_string();
    // The reader waits a quiet second after the last record.
    let elapsed = started.elapsed() - Duration::from_secs(1);
    println!(
        "{BURST} erasure requests over {PARTITIONS} partitions: produced in {produced:.1?}, all confirmed within \
         {elapsed:.1?} ({:.0} per second); {applied}",
        BURST as f64 / elapsed.as_secs_f64()
    );
    stop(engage);
}
