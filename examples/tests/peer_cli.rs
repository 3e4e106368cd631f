//! Drives the `peer` binary as a script would: two processes on loopback, JSON
//! lines on stdout, commands on stdin.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(20);
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// A running `peer` process; killed when dropped.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Peer {
    fn start(args: &[&str]) -> Self {
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

    fn start_json(extra: &[&str]) -> Self {
        let mut args = vec!["--json", "--listen", LISTEN];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// The next raw line, within the timeout.
    fn next_line(&mut self, deadline: Instant) -> String {
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
    fn expect(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
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

    fn expect_event(&mut self, event: &str) -> Value {
        self.expect(event, |v| v["event"] == event)
    }

    /// The peer id, from the first `listening` line.
    fn listening(&mut self) -> (String, String) {
        let line = self.expect_event("listening");
        let address = line["address"].as_str().expect("address").to_owned();
        let id = address
            .rsplit_once("/p2p/")
            .map(|(_, id)| id.to_owned())
            .unwrap_or_else(|| panic!("no /p2p/ suffix: {address}"));
        (address, id)
    }

    fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush command");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "peer did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn quit(&mut self) {
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

#[test]
fn two_peers_chat_over_json_lines() {
    let mut a = Peer::start_json(&[]);
    let (a_address, a_id) = a.listening();

    let mut b = Peer::start_json(&["--dial", &a_address]);
    let (_, b_id) = b.listening();

    let dialed = b.expect_event("dialed");
    assert_eq!(dialed["peer"], a_id.as_str());
    let connected = a.expect_event("connected");
    assert_eq!(connected["peer"], b_id.as_str());
    let connected = b.expect_event("connected");
    assert_eq!(connected["peer"], a_id.as_str());

    b.command("send * /liquid/chat/1 hello");
    let sent = b.expect_event("sent");
    assert_eq!(sent["peer"], a_id.as_str());
    assert_eq!(sent["protocol"], "/liquid/chat/1");
    let message = a.expect_event("message");
    assert_eq!(message["peer"], b_id.as_str());
    assert_eq!(message["protocol"], "/liquid/chat/1");
    assert_eq!(message["data"], "hello");

    // The text is the rest of the line, spaces included; one peer by id.
    b.command(&format!("send {a_id} /liquid/chat/1 two  words"));
    let message = a.expect_event("message");
    assert_eq!(message["data"], "two  words");

    // A bad command is reported and the peer keeps answering.
    b.command("frobnicate now");
    let error = b.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("frobnicate")),
        "{error}"
    );
    b.command("peers");
    let peers = b.expect_event("peers");
    assert_eq!(peers["peers"], serde_json::json!([a_id]));

    // Unregistered protocols are reported as events on the receiver.
    a.command("register /liquid/other/1");
    assert_eq!(a.expect_event("registered")["protocol"], "/liquid/other/1");
    a.command("unregister /liquid/other/1");
    assert_eq!(
        a.expect_event("unregistered")["protocol"],
        "/liquid/other/1"
    );
    b.command("send * /liquid/other/1 lost");
    b.expect_event("sent");
    let unknown = a.expect_event("unknown_protocol");
    assert_eq!(unknown["peer"], b_id.as_str());
    assert_eq!(unknown["protocol"], "/liquid/other/1");

    b.quit();
    let disconnected = a.expect_event("disconnected");
    assert_eq!(disconnected["peer"], b_id.as_str());
    a.quit();
}

fn temp_key_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "liquid-peer-{name}-{}-{nanos}.key",
        std::process::id()
    ))
}

#[test]
fn key_file_keeps_the_peer_id_across_restarts() {
    let path = temp_key_path("identity");
    let key_file = path.to_str().expect("utf-8 temp path");
    assert!(!path.exists());

    let mut first = Peer::start_json(&["--key-file", key_file]);
    let (_, first_id) = first.listening();
    first.quit();
    assert!(path.exists(), "key file created");

    let mut second = Peer::start_json(&["--key-file", key_file]);
    let (_, second_id) = second.listening();
    second.quit();
    assert_eq!(first_id, second_id);

    let mut other = Peer::start_json(&[]);
    let (_, other_id) = other.listening();
    other.quit();
    assert_ne!(first_id, other_id, "without --key-file the key is fresh");

    let _ = std::fs::remove_file(&path);
}

#[cfg(unix)]
#[test]
fn end_of_stdin_keeps_running_until_sigterm() {
    let mut peer = Peer::start_json(&[]);
    peer.listening();
    drop(peer.stdin.take());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        peer.child.try_wait().expect("try_wait").is_none(),
        "peer exited at end of stdin"
    );
    let status = Command::new("kill")
        .args(["-TERM", &peer.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let status = peer.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}");
}

#[test]
fn human_output_without_json() {
    let mut peer = Peer::start(&["--listen", LISTEN]);
    let line = peer.next_line(Instant::now() + TIMEOUT);
    assert!(
        line.starts_with("listening on /ip4/127.0.0.1/tcp/"),
        "{line}"
    );
    peer.command("peers");
    let line = peer.next_line(Instant::now() + TIMEOUT);
    assert_eq!(line, "no connected peers");
    peer.command("send * /liquid/chat/1 hi");
    let line = peer.next_line(Instant::now() + TIMEOUT);
    assert!(line.starts_with("error: "), "{line}");
    peer.quit();
}
