//! Required peers and dead-peer detection with real processes: `kill -9`, restart
//! with the same key, and `SIGSTOP`.

#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn port_of(address: &str) -> String {
    let mut parts = address.split('/');
    while let Some(p) = parts.next() {
        if p == "tcp" {
            return parts.next().expect("port").to_owned();
        }
    }
    panic!("no tcp port in {address}");
}

fn signal(peer: &Peer, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &peer.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn a_killed_required_peer_is_seen_at_once_and_reconnected_soon_after_it_restarts() {
    let key = temp_key_path("required-b");
    let key_arg = key.to_str().expect("utf-8 path");
    let mut b = Peer::start_json(&["--key-file", key_arg]);
    let (b_address, b_id) = b.listening();
    let port = port_of(&b_address);
    let mut a = Peer::start_json(&["--required", &b_address]);
    a.expect("connected to b", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });

    let killed = Instant::now();
    signal(&b, "-KILL");
    let _ = b.wait_exit();
    a.expect("disconnect", |v| {
        v["event"] == "disconnected" && v["peer"] == b_id.as_str()
    });
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "seen after {:?}",
        killed.elapsed()
    );
    // The immediate redial fails: the schedule starts.
    a.expect("redial", |v| {
        v["event"] == "redial_scheduled" && v["attempt"] == 1
    });

    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut b = Peer::start(&["--json", "--listen", &listen, "--key-file", key_arg]);
    let (_, same_id) = b.listening();
    let restarted = Instant::now();
    assert_eq!(same_id, b_id, "same key, same peer id");
    a.expect("reconnect", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "reconnected {:?} after the restart",
        restarted.elapsed()
    );
    a.quit();
    b.quit();
    let _ = std::fs::remove_file(key);
}

#[test]
fn a_stopped_peer_is_reported_disconnected_within_ping_interval_plus_timeout() {
    let mut b = Peer::start_json(&[]);
    let (b_address, b_id) = b.listening();
    let mut a = Peer::start_json(&["--dial", &b_address]);
    a.expect("connected to b", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });

    signal(&b, "-STOP");
    let stopped = Instant::now();
    a.expect("disconnect", |v| {
        v["event"] == "disconnected" && v["peer"] == b_id.as_str()
    });
    let took = stopped.elapsed();
    signal(&b, "-CONT");
    // Defaults: ping every 2 s, 5 s timeout.
    assert!(
        took <= Duration::from_secs(8),
        "silent peer seen after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(4),
        "reported before a ping could time out: {took:?}"
    );
    a.quit();
}
