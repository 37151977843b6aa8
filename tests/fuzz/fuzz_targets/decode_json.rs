//! Any bytes through the JSON decoder: never a panic; a decoded event keeps
//! every promise validation makes.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(engage::vocab::Format::Json, data));
