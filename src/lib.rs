//! engage: a real-time customer-engagement processor. It turns clickstream
//! and purchase events into live engagement scores, lifecycle stages and
//! churn alerts. What it computes and guarantees is described in
//! `docs/model.md`; how to run it, in the README; how to change it, in
//! CONTRIBUTING.md.
//!
//! # Layout
//!
//! The engine knows nothing of Kafka or wire formats: [`engine`] is plain
//! functions over plain data, and Kafka ([`pipeline`], [`durability`],
//! [`kafka`]), files ([`history`]), HTTP ([`http`], [`api`]) and the encodings
//! ([`decode`], [`codec`]) are adapters around it. In the order data flows:
//!
//! - [`vocab`]: the names everything shares: the inputs and their roles,
//!   event types, dimensions, signals, health, wire formats.
//! - [`config`]: TOML + `ENGAGE__…` environment configuration, one file per
//!   section, each with its `validate()`; [`config::Inputs`], the input
//!   topics as data.
//! - [`decode`]: JSON / protobuf / Confluent-framed records → an
//!   [`engine::event::Event`], or a [`decode::DecodeError`] with a stable
//!   dead-letter reason code (`error.rs`). JSON is read by a one-pass scan
//!   (`scan.rs`), serde_json taking what the scan leaves alone (`json.rs`);
//!   protobuf by an in-place wire reader (`protobuf.rs`); CSV rows of
//!   history files become JSON events ([`decode::csv_row`]). Erasure
//!   requests are decoded apart (`erasure.rs`).
//! - [`engine`]: applies events and sweeps, deciding what to publish.
//!   - [`engine::event`]: the compact event the engine consumes; event-time
//!     helpers.
//!   - [`engine::scoring`]: decayed dimensions, composite score, drivers.
//!   - [`engine::lifecycle`]: the four lifecycle stages.
//!   - [`engine::churn`]: BG/NBD P(alive), churn signals and health.
//!   - [`engine::propensity`]: the learned purchase probability: its
//!     features, read from the state and snapshot, and a compiled
//!     `[churn.model]`.
//!   - [`engine::erasure`]: erasure requests, and the cut-off that keeps
//!     an erased customer's earlier events out.
//!   - [`engine::state`]: one customer's compact state (128 bytes, checked
//!     at compile time), exactly-once bookkeeping and its persisted facts;
//!     its sets of distinct days, exact for late events within the
//!     retention (`state/days.rs`).
//!   - [`engine::store`]: customer states in sharded maps, by input partition
//!     (with the partition's bootstrap as-of and its erasures in force).
//!   - [`engine::output`]: score changes, churn alerts and erasure
//!     confirmations, as plain data.
//! - [`codec`]: the wire encodings of what engage writes: outputs (JSON,
//!   protobuf) and the persisted customer state (the changelog's versioned
//!   records, the bootstrap marker).
//! - [`pipeline`]: `engage run`'s consumer loop driving the engine: the
//!   main loop (`mod.rs`), an input record taken up (`record.rs`),
//!   per-record and sweep work (`worker.rs`), event-time alignment of the
//!   event inputs as an N-way merge (`align.rs`), rebalance callbacks
//!   (`rebalance.rs`), what the loop and the callbacks share (`shared.rs`),
//!   liveness and readiness ([`pipeline::Status`]), idle memory release
//!   (`memory.rs`).
//! - [`durability`]: the commit protocol in one place: which offsets may be
//!   committed, state flushes to the changelog, erasure ordering, the
//!   `exactly_once` transaction. Its [`durability::Durability`] states the
//!   invariant; the per-partition [`durability::Ledger`] is the bookkeeping.
//! - [`kafka`]: everything else that talks to Kafka.
//!   - [`kafka::client`]: every client and its properties, in one place.
//!   - [`kafka::sink`]: the producer; every record carries a ticket whose
//!     acknowledgement goes back to the durability protocol.
//!   - [`kafka::changelog`]: restoring a partition's customers (and its
//!     bootstrap as-of) from the changelog on assignment.
//!   - [`kafka::partitioner`]: where the upstream producers put a key
//!     (murmur2, CRC-32).
//!   - co-partitioning check and topic creation (`mod.rs`).
//! - [`http`]: the ops endpoint: `/metrics`, `/healthz`, `/readyz`.
//! - [`api`]: the customer API on its own listener: bearer tokens
//!   (`auth.rs`), TLS (`tls.rs`), requests (`handler.rs`), answers from
//!   local state (`view.rs`), partition owners from the consumer group and
//!   when an owner has caught up (`routing.rs`), one-hop forwarding
//!   (`peers.rs`), slow-client and file-reload helpers (`stall.rs`,
//!   `watch.rs`).
//! - [`telemetry`]: metric names, the Prometheus recorder, the pipeline's
//!   per-record counts (and the run summary read from them), consumer lag
//!   from librdkafka statistics, the periodic population census; every
//!   operational event as one struct writing its log line and its metric
//!   (`events.rs`).
//! - [`history`]: the engine driven from event files (JSONL or CSV), event
//!   time only: the one reader and loop ([`history::drive`]) `replay`,
//!   `fit`, `evaluate` and `bootstrap` share; [`history::cutoffs`], every
//!   customer's features and outcome at cut-offs rolled through a history.
//! - [`charts`]: SVG charts for reports and benchmarks.
//! - [`shutdown`]: SIGTERM / SIGINT handling.
//! - [`clock`]: the wall clock (the engine itself runs on event time), and
//!   times as humans write them.
//! - [`cmd`]: the commands, one file or folder each: [`cmd::run`],
//!   [`cmd::demo`], [`cmd::replay`], [`cmd::bootstrap`], [`cmd::fit`]
//!   (BG/NBD, Gamma-Gamma, and the purchase probability's regression and
//!   calibration), [`cmd::evaluate`], [`cmd::loadgen`] (with the simulated
//!   populations the demo, benchmarks and tests draw from,
//!   [`cmd::loadgen::synth`]), [`cmd::topics`].
//! - [`proto`]: code generated from `proto/engage/v1`.
//!
//! The binary (`main.rs`) parses the command line, sets up logging and
//! dispatches to [`cmd`]; its `allocator.rs` holds the only `unsafe` code,
//! the allocator hooks.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod charts;
pub mod clock;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod decode;
pub mod durability;
pub mod engine;
pub mod history;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod shutdown;
mod sync;
pub mod telemetry;
pub mod vocab;

/// Messages generated from `proto/engage/v1/*.proto` by prost.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/engage.v1.rs"));
}
