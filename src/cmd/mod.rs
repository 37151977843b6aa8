//! The commands, one file (or folder) each. Each has its `Args` (its part
//! of the command line) and a `run` that `main.rs` dispatches to; the
//! library functions behind them (`evaluate`, `bootstrap`, …) are public for
//! the tests and the benchmarks.

pub mod bootstrap;
pub mod demo;
pub mod evaluate;
pub mod fit;
pub mod loadgen;
pub mod replay;
pub mod run;
pub mod topics;
