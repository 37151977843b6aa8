//! Any bytes through the protobuf decoder (plain and Confluent-framed):
//! never a panic; a decoded event keeps every promise validation makes.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(engage::vocab::Format::Protobuf, data));
