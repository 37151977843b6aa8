//! Engine throughput on one core: decode alone, and decode + apply + score,
//! for JSON and protobuf records of the same synthetic traffic; and the
//! cost of the learned purchase probability (`[churn.model]`): decode +
//! apply with and without a model, and one evaluation of the probability
//! beside the snapshot and 90-day expectation it is computed from.
//!
//! `cargo bench --bench engine`, or `scripts/bench-engine` for the summary
//! table with the decode + apply ÷ decode ratio and the model's cost.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use engage::cmd::loadgen::synth::{Record, records};
use engage::config::{CalibrationConfig, Config, PurchaseModelConfig, TrainingSummary};
use engage::decode::{Envelope, decode};
use engage::engine::event::Source;
use engage::engine::store::Store;
use engage::engine::{Engine, Rules};
use engage::vocab::Format;

const EVENTS: usize = 200_000;
const CUSTOMERS: u64 = 20_000;
const START: i64 = 1_767_225_600_000;

fn input(format: Format) -> Vec<Record> {
    // One event every 500 ms of event time: ~28 hours of traffic.
    records(1, EVENTS, CUSTOMERS, START, 500, format)
}

fn bench(c: &mut Criterion) {
    let config = Config::default();
    let limits = config.input.limits();
    let engine = Engine::new(Rules::new(&config));
    let now = START + 10 * 86_400_000;
    for format in [Format::Json, Format::Protobuf] {
        let name = match format {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        };
        let records = input(format);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(EVENTS as u64));
        group.sample_size(10);
        group.bench_function("decode", |b| {
            b.iter(|| {
                for r in &records {
                    let env = Envelope { key: Some(&r.key), require_key: true, timestamp_ms: None, content_type: None };
                    black_box(decode(Some(r.topic), format, &env, &r.value, &limits, now).ok());
                }
            })
        });
        group.bench_function("decode_apply", |b| {
            b.iter_batched(
                Store::new,
                |store| {
                    let partition = store.partition(0);
                    let mut out = Vec::with_capacity(64);
                    for (offset, r) in records.iter().enumerate() {
                        let env =
                            Envelope { key: Some(&r.key), require_key: true, timestamp_ms: None, content_type: None };
                        if let Ok(event) = decode(Some(r.topic), format, &env, &r.value, &limits, now) {
                            let source = Source { topic: r.topic, offset: offset as i64 };
                            engine.apply(&partition, &event, Some(source), &mut out);
                        }
                        out.clear();
                    }
                    store
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

/// A model of the shape `engage fit` writes (its values do not change the
/// cost): every feature weighed, Platt calibration.
fn with_model() -> Config {
    let mut config = Config::default();
    let n = engage::vocab::PURCHASE_FEATURE_COUNT;
    config.churn.model = Some(PurchaseModelConfig {
        horizon: config.churn.horizon,
        features: engage::vocab::PURCHASE_FEATURES.iter().map(|s| s.to_string()).collect(),
        mean: vec![0.5; n],
        scale: vec![1.5; n],
        coefficients: (0..n).map(|i| 0.1 * (i as f64 - 10.0)).collect(),
        intercept: -1.0,
        calibration: CalibrationConfig::Platt { a: 1.1, b: -0.2 },
        training: TrainingSummary::default(),
    });
    config.validate().expect("a valid model");
    config
}

fn bench_model(c: &mut Criterion) {
    let plain = Config::default();
    let modelled = with_model();
    let limits = plain.input.limits();
    let now = START + 10 * 86_400_000;
    let records = input(Format::Json);
    let mut group = c.benchmark_group("model");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    for (name, config) in [("decode_apply_without", &plain), ("decode_apply_with", &modelled)] {
        let engine = Engine::new(Rules::new(config));
        group.bench_function(name, |b| {
            b.iter_batched(
                Store::new,
                |store| {
                    let partition = store.partition(0);
                    let mut out = Vec::with_capacity(64);
                    for (offset, r) in records.iter().enumerate() {
                        let env =
                            Envelope { key: Some(&r.key), require_key: true, timestamp_ms: None, content_type: None };
                        if let Ok(event) = decode(Some(r.topic), Format::Json, &env, &r.value, &limits, now) {
                            let source = Source { topic: r.topic, offset: offset as i64 };
                            engine.apply(&partition, &event, Some(source), &mut out);
                        }
                        out.clear();
                    }
                    store
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // One evaluation: what a score change computes for every customer.
    let engine = Engine::new(Rules::new(&modelled));
    let store = Store::new();
    let partition = store.partition(0);
    let mut out = Vec::new();
    for r in &records {
        let env = Envelope { key: Some(&r.key), require_key: true, timestamp_ms: None, content_type: None };
        if let Ok(event) = decode(Some(r.topic), Format::Json, &env, &r.value, &limits, now) {
            engine.apply(&partition, &event, None, &mut out);
        }
        out.clear();
    }
    let mut states = Vec::new();
    partition.for_each(|_, s| states.push(s.clone()));
    let at = START + 2 * 86_400_000;
    let mut group = c.benchmark_group("p_purchase");
    group.throughput(Throughput::Elements(states.len() as u64));
    group.bench_function("snapshot_value", |b| {
        b.iter(|| {
            for s in &states {
                let snap = engine.snapshot(s, at.max(s.last_seen));
                black_box(engine.value_90d(s, &snap));
            }
        })
    });
    group.bench_function("snapshot_value_probability", |b| {
        b.iter(|| {
            for s in &states {
                let snap = engine.snapshot(s, at.max(s.last_seen));
                let value = engine.value_90d(s, &snap);
                black_box(engine.p_purchase(s, &snap, value));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_model);
criterion_main!(benches);
