//! The `peer` process harness shared by the CLI tests.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// A running `peer` process; killed when dropped.
pub struct Peer {
    /// The process.
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Peer {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start peer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn start_json(extra: &[&str]) -> Self {
        let mut args = vec!["--json", "--listen", LISTEN];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// The next raw line, within the timeout.
    pub fn next_line(&mut self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => panic!("no line from peer ({e:?}); seen so far: {:#?}", self.seen),
        }
    }

    /// Reads JSON lines until one satisfies `wanted`; every line must be one JSON
    /// object with an `event` field.
    pub fn expect(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if Instant::now() >= deadline {
                panic!("timed out waiting for {what}; seen: {:#?}", self.seen);
            }
            let line = self.next_line(deadline);
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
            assert!(value.is_object(), "not an object: {line}");
            assert!(value["event"].is_string(), "no event field: {line}");
            if wanted(&value) {
                return value;
            }
        }
    }

    pub fn expect_event(&mut self, event: &str) -> Value {
        self.expect(event, |v| v["event"] == event)
    }

    /// The peer id, from the first `listening` line.
    pub fn listening(&mut self) -> (String, String) {
        let line = self.expect_event("listening");
        let address = line["address"].as_str().expect("address").to_owned();
        let id = address
            .rsplit_once("/p2p/")
            .map(|(_, id)| id.to_owned())
            .unwrap_or_else(|| panic!("no /p2p/ suffix: {address}"));
        (address, id)
    }

    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush command");
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "peer did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn quit(&mut self) {
        self.command("quit");
        let status = self.wait_exit();
        assert!(status.success(), "quit exited with {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_key_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "liquid-peer-{name}-{}-{nanos}.key",
        std::process::id()
    ))
}
