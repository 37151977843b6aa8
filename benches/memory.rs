//! Resident memory per customer (docs/model.md "Customer state and retention" target: ≤ 256 bytes including map
//! overhead, at 1 M customers). Applies a few events to each of N customers
//! through the engine and reports the growth in RSS divided by N.
//!
//! `cargo bench --bench memory [-- CUSTOMERS] [--long-lived]` (default
//! 1 000 000 customers). By default each customer is active on 3
//! consecutive days, a fifth of them buying on the third. `--long-lived`
//! spreads 8 active days over 175 days instead, day 25 arriving last, 150
//! days late, and a fifth of the customers buy on four of those days (the
//! late one included): every customer then holds older days out of line,
//! and a buyer older purchase days too.

use std::borrow::Cow;

use engage::config::Config;
use engage::engine::event::{Event, EventKind, Source};
use engage::engine::store::Store;
use engage::engine::{Engine, Rules};
use engage::vocab::{ClickKind, InputKind};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm rss");
    pages * 4096
}

fn main() {
    let customers: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let long_lived = std::env::args().any(|a| a == "--long-lived");
    // (day, kind index, buys): the order events arrive in.
    let days: &[(i64, usize, bool)] = if long_lived {
        &[
            (0, 0, true),
            (50, 1, false),
            (75, 0, false),
            (100, 1, true),
            (125, 0, false),
            (150, 1, false),
            (175, 2, true),
            (25, 0, true),
        ]
    } else {
        &[(0, 0, false), (1, 1, false), (2, 2, true)]
    };
    let engine = Engine::new(Rules::new(&Config::default()));
    let store = Store::new();
    // Spread over 12 partitions, as a real instance would hold them.
    let partitions: Vec<_> = (0..12).map(|p| store.partition(p)).collect();
    let mut out = Vec::new();
    let start = 1_767_225_600_000i64;
    let kinds = [ClickKind::PageView, ClickKind::ProductView, ClickKind::AddToCart];
    let before = rss_bytes();
    let mut id = String::new();
    for c in 0..customers {
        id.clear();
        use std::fmt::Write;
        let _ = write!(id, "cust-{c:09}");
        let p = &partitions[c % partitions.len()];
        for (i, &(day, kind, buys)) in days.iter().enumerate() {
            let event = Event {
                event_id: Cow::Owned(format!("{c}-{i}")),
                customer_id: Cow::Borrowed(&id),
                ts_ms: start + (c as i64 % 86_400) * 1000 + day * 86_400_000,
                kind: if buys && c % 5 == 0 {
                    EventKind::Purchase { amount: 30.0, loyalty_member: false, coupon_used: false }
                } else {
                    EventKind::Click { kind: kinds[kind], rating: None }
                },
            };
            let source = Source { topic: InputKind::Clickstream, offset: (c * days.len() + i) as i64 };
            engine.apply(p, &event, Some(source), &mut out);
            out.clear();
        }
    }
    let after = rss_bytes();
    let held = store.customers();
    assert_eq!(held, customers);
    // Every day should count once, the late one included.
    let first = partitions[0].get("cust-000000000").expect("customer 0");
    let bought = days.iter().filter(|d| d.2).count();
    let per = (after - before) as f64 / held as f64;
    println!("customers: {held}{}", if long_lived { " (long-lived)" } else { "" });
    println!("state struct: {} bytes", std::mem::size_of::<engage::engine::state::CustomerState>());
    println!("rss growth: {:.1} MiB", (after - before) as f64 / (1 << 20) as f64);
    println!(
        "days counted (customer 0): active {} of {}, purchase {} of {bought}",
        first.active_days,
        days.len(),
        first.purchase_days()
    );
    println!("rss per customer: {per:.1} bytes (target <= 256)");
}
