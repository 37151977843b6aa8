//! engage: a real-time customer-engagement processor. It turns clickstream
//! and purchase events into live engagement scores, lifecycle stages and
//! churn alerts (see `../shared/SPEC.md` and the README).
//!
//! # Layout
//!
//! In the order data flows through them:
//!
//! - [`event`]: the compact event the engine consumes, and event-time helpers.
//! - [`decode`]: JSON / protobuf / Confluent-framed records → [`event::Event`],
//!   or a [`decode::DecodeError`] with a stable dead-letter reason code.
//!   JSON is read by a one-pass scan (`decode/scan.rs`), serde_json taking
//!   the records the scan leaves alone.
//! - [`config`]: TOML + `ENGAGE__…` environment configuration, validated.
//! - [`scoring`]: decayed dimensions, composite score and its drivers (SPEC §5).
//! - [`lifecycle`]: the four lifecycle stages (SPEC §6).
//! - [`churn`]: BG/NBD P(alive), churn signals and health (SPEC §7).
//! - [`state`]: one customer's compact state, exactly-once bookkeeping and its
//!   persisted (changelog) form.
//! - [`store`]: customer states in sharded maps, grouped by input partition.
//! - [`engine`]: applies events and sweeps, deciding what to publish (SPEC §8).
//! - [`output`]: score changes and churn alerts, JSON and protobuf.
//! - [`replay`]: `engage replay`, the engine driven from event files.
//! - [`kafka`]: client configuration, co-partitioning check, topic creation.
//! - [`pipeline`]: `engage run`, the consumer loop driving the engine.
//! - [`sink`]: the idempotent producer and delivery tracking for commits.
//! - [`changelog`]: durable state: flushing changed customers, restoring a
//!   partition's customers on assignment.
//! - [`shutdown`]: SIGTERM / SIGINT handling.
//! - [`telemetry`]: metric names, the Prometheus recorder, consumer lag from
//!   librdkafka statistics and the periodic population census.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the customer API.
//! - [`demo`]: `engage demo`, everything on one machine with no setup.
//! - [`fit`]: `engage fit`, BG/NBD and Gamma-Gamma maximum likelihood.
//! - [`synth`]: deterministic synthetic events for benchmarks and tests.
//! - [`loadgen`]: `engage loadgen`, simulated traffic into the input topics.
//! - [`proto`]: code generated from `proto/engage/v1`.

pub mod clock;
pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod fit;
pub mod http;
pub mod kafka;
pub mod loadgen;
pub mod pipeline;
pub mod replay;
pub mod shutdown;
mod sync;
pub mod synth;
pub mod telemetry;

/// Messages generated from `proto/engage/v1/*.proto` by prost.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/engage.v1.rs"));
}
