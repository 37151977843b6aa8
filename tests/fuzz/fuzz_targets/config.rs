//! Any text through the config loader: never a panic, and every secret
//! `[kafka]` property of a loaded config shows as "[redacted]" in its debug
//! dump (what engage logs).
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check_config(data));
