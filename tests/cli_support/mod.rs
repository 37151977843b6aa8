//! Running an `engage` subcommand to its exit, with a deadline, for the
//! command-line tests (tests/cli.rs, tests/topics.rs).
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished `engage` command left behind.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    /// Both streams, for a failure message.
    pub fn output(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `engage args…` (RUST_LOG=info unless `rust_log` says otherwise)
/// until it exits; kills it and fails the test if it is still running after
/// `timeout`.
pub fn engage(args: &[&str], timeout: Duration) -> Finished {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(args)
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engage");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = start + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let finished = Finished {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        took: start.elapsed(),
    };
    assert!(status.is_some(), "engage {args:?} did not exit within {timeout:?}:\n{}", finished.output());
    finished
}

/// Writes `config` to a file in `dir` and returns its path as a string.
pub fn write_config(dir: &Path, config: &str) -> String {
    let path = dir.join("engage.toml");
    std::fs::write(&path, config).unwrap();
    path.display().to_string()
}

/// Sends `signal` (e.g. 2 for SIGINT) to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{signal} {pid}");
}
