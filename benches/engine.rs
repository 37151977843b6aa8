//! Engine throughput on one core: decode alone, and decode + apply + score,
//! for JSON and protobuf records of the same synthetic traffic.
//!
//! `cargo bench --bench engine`, or `scripts/bench-engine` for the summary
//! table with the decode + apply ÷ decode ratio.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use engage::cmd::loadgen::synth::{Record, records};
use engage::config::Config;
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

criterion_group!(benches, bench);
criterion_main!(benches);
