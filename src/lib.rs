//! engage: a real-time customer-engagement processor. It turns clickstream
//! and purchase events into live engagement scores, lifecycle stages and
//! churn alerts. What it computes and guarantees is described in
//! `docs/model.md`; how to run it, in the README.
//!
//! # Layout
//!
//! The engine knows nothing of Kafka: [`engine`] is plain functions over
//! plain data, and Kafka ([`pipeline`]), files ([`replay`]) and HTTP
//! ([`http`]) are adapters around it. In the order data flows:
//!
//! - [`config`]: TOML + `ENGAGE__…` environment configuration, one file per
//!   section, each with its `validate()`.
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
//!   - [`engine::erasure`]: erasure requests, and the cut-off that keeps
//!     an erased customer's earlier events out.
//!   - [`engine::state`]: one customer's compact state, exactly-once
//!     bookkeeping and its persisted (changelog) form; its sets of
//!     distinct days, exact for late events within the retention
//!     (`state/days.rs`).
//!   - [`engine::store`]: customer states in sharded maps, by input partition
//!     (with the partition's bootstrap as-of).
//!   - [`engine::output`]: score changes and churn alerts, JSON and protobuf.
//! - [`pipeline`]: `engage run`, the consumer loop driving the engine:
//!   the main loop (`mod.rs`), per-record and sweep work (`worker.rs`),
//!   event-time alignment of the two inputs (`align.rs`), the commit path
//!   shared with the callbacks (`shared.rs`), rebalance callbacks
//!   (`rebalance.rs`), idle memory release (`memory.rs`).
//! - [`kafka`]: everything that talks to Kafka besides the consumer loop.
//!   - [`kafka::client`]: every client and its properties, in one place.
//!   - [`kafka::partitioner`]: where the upstream producers put a key
//!     (murmur2, CRC-32).
//!   - co-partitioning check and topic creation (`mod.rs`).
//!   - [`kafka::sink`]: the idempotent (or transactional) producer.
//!   - [`kafka::progress`]: which offsets may be committed: the heart of
//!     the at-least-once guarantee.
//!   - [`kafka::changelog`]: durable state: flushing changed customers,
//!     restoring a partition's customers (and its bootstrap as-of) on
//!     assignment.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the customer API.
//! - [`telemetry`]: metric names, the Prometheus recorder, consumer lag from
//!   librdkafka statistics and the periodic population census.
//! - [`shutdown`]: SIGTERM / SIGINT handling.
//! - [`clock`]: the wall clock (the engine itself runs on event time).
//!
//! The other commands, each an adapter or a tool:
//!
//! - [`replay`]: `engage replay`, the engine driven from event files
//!   (JSONL or CSV; the one reader `fit`, `evaluate` and `bootstrap` share).
//! - [`bootstrap`]: `engage bootstrap`, customers' state from history
//!   written into the changelog for `engage run` to restore.
//! - [`fit`]: `engage fit`, BG/NBD and Gamma-Gamma maximum likelihood.
//! - [`evaluate`]: `engage evaluate`, the engine's predictions at a
//!   calibration end judged against what customers did in a holdout.
//! - [`demo`]: `engage demo`, everything on one machine with no setup.
//! - [`loadgen`]: `engage loadgen`, simulated traffic into the input topics.
//! - [`synth`]: deterministic synthetic events for benchmarks and tests.
//! - [`proto`]: code generated from `proto/engage/v1`.
//!
//! The binary (`main.rs`) parses the command line and calls these; its
//! `allocator.rs` holds the only `unsafe` code, the allocator hooks.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

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
