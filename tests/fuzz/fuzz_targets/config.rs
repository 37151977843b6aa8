//! Any text through the config loader: never a panic, and every secret
//! `[kafka]` property of a loaded config shows as "[redacted]" in its debug
//! dump (what engage logs).
#![no_main]

use engage::config::{Config, KafkaConfig};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(config) => {
            let dump = format!("{config:?}");
            for key in config.kafka.properties.keys().filter(|k| KafkaConfig::is_secret(k)) {
                assert!(dump.contains(&format!("{key:?}: \"[redacted]\"")), "secret {key:?} not redacted in {dump}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
