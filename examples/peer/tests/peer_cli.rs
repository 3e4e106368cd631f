//! Drives the `peer` binary as a script would: two processes on loopback, JSON
//! lines on stdout, commands on stdin.

use std::{
    process::Command,
    time::{Duration, Instant},
};

mod common;

use common::*;

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

    // Protocol changes reach the other peer, and a send to a protocol it no longer
    // supports fails at once.
    a.command("register /liquid/other/1");
    assert_eq!(a.expect_event("registered")["protocol"], "/liquid/other/1");
    let supported = b.expect_event("protocol_supported");
    assert_eq!(supported["peer"], a_id.as_str());
    assert_eq!(supported["protocol"], "/liquid/other/1");
    a.command("unregister /liquid/other/1");
    assert_eq!(
        a.expect_event("unregistered")["protocol"],
        "/liquid/other/1"
    );
    let unsupported = b.expect_event("protocol_unsupported");
    assert_eq!(unsupported["peer"], a_id.as_str());
    assert_eq!(unsupported["protocol"], "/liquid/other/1");
    b.command("send * /liquid/other/1 lost");
    let error = b.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not support")),
        "{error}"
    );

    b.quit();
    let disconnected = a.expect_event("disconnected");
    assert_eq!(disconnected["peer"], b_id.as_str());
    a.quit();
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

#[test]
fn flood_reports_every_send_and_stats_count_what_arrived() {
    let mut a = Peer::start_json(&["--max-backoff-ms", "2000", "--check-interval-ms", "500"]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&["--dial", &a_address]);
    let (_, b_id) = b.listening();
    b.expect("connected to a", |v| {
        v["event"] == "connected" && v["peer"] == a_id.as_str()
    });
    a.expect("connected to b", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });

    b.command("flood * /liquid/chat/1 200 64");
    let done = b.expect_event("flood_done");
    assert_eq!(done["flood"], 1);
    assert_eq!(done["peer"], a_id.as_str());
    assert_eq!(done["count"], 200);
    assert_eq!(done["sent_ok"], 200, "{done}");
    assert_eq!(done["failed"], 0);
    assert_eq!(done["failed_ranges"], serde_json::json!([]));

    // Every numbered message arrives once, with the requested size.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 200 {
        let message = a.expect_event("message");
        let data = message["data"].as_str().expect("data");
        assert_eq!(data.len(), 64, "{data}");
        let (flood, seq) = liquid_p2p_peer::parse_flood_payload(data.as_bytes())
            .unwrap_or_else(|| panic!("not a flood payload: {data}"));
        assert_eq!(flood, 1);
        assert!(seen.insert(seq), "message {seq} delivered twice");
    }
    assert_eq!(seen.last(), Some(&199));

    // The sender's lane may still be opening streams it grew for the flood:
    // ask until the host-wide and per-peer inbound counts are of one instant.
    let deadline = Instant::now() + TIMEOUT;
    let stats = loop {
        a.command("stats");
        let stats = a.expect_event("stats");
        if stats["inbound_streams"] == stats["per_peer"][0]["inbound_streams"] {
            break stats;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats["received_messages"], 200, "{stats}");
    assert_eq!(stats["received_bytes"], 200 * 64);
    assert_eq!(stats["connected_peers"], 1);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["per_peer"][0]["peer"], b_id.as_str());
    let inbound = stats["inbound_streams"].as_u64().expect("inbound_streams");
    assert!(inbound >= 1, "{stats}");
    assert_eq!(stats["per_peer"][0]["inbound_streams"], inbound);
    assert!(stats["tasks"].as_u64().is_some_and(|t| t > 0), "{stats}");

    b.command("stats");
    let stats = b.expect_event("stats");
    let pool = &stats["per_peer"][0]["pools"][0];
    assert!(pool["current"].as_u64().is_some_and(|c| c >= 1), "{stats}");
    assert_eq!(pool["borrowed"], 0, "every stream given back: {stats}");
    assert_eq!(stats["pool_streams"], pool["current"]);

    // A bad flood is an error line, and the peer keeps answering.
    b.command("flood * /liquid/chat/1 many 1");
    let error = b.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid count")),
        "{error}"
    );
    b.quit();
    a.quit();
}

#[test]
fn quiet_messages_counts_without_printing() {
    let mut a = Peer::start_json(&["--quiet-messages"]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&["--dial", &a_address]);
    b.expect("connected to a", |v| {
        v["event"] == "connected" && v["peer"] == a_id.as_str()
    });
    b.command("flood * /liquid/chat/1 50 1000");
    assert_eq!(b.expect_event("flood_done")["sent_ok"], 50);
    // Ask until all 50 are counted; no `message` line may appear meanwhile.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        a.command("stats");
        let line = a.expect("stats or message", |v| {
            v["event"] == "stats" || v["event"] == "message"
        });
        assert_eq!(line["event"], "stats", "printed despite --quiet-messages");
        if line["received_messages"] == 50 {
            assert_eq!(line["received_bytes"], 50_000);
            break;
        }
        assert!(Instant::now() < deadline, "only {line} arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.quit();
    a.quit();
}

#[test]
fn supervisor_flags_are_checked() {
    for args in [
        ["--max-backoff-ms", "999"],
        ["--check-interval-ms", "0"],
        ["--max-backoff-ms", "soon"],
    ] {
        let mut peer = Peer::start(&args);
        let status = peer.wait_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {status}");
    }
}

#[test]
fn a_paused_protocol_queues_its_messages_and_its_sender_hears_backpressure() {
    let mut a = Peer::start_json(&["--queue-len", "4"]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&["--dial", &a_address, "--send-timeout-ms", "300"]);
    b.expect("connected to a", |v| {
        v["event"] == "connected" && v["peer"] == a_id.as_str()
    });
    a.command("pause /liquid/chat/1");
    a.expect_event("paused");
    a.command("pause /not/registered");
    assert!(
        a.expect_event("error")["message"]
            .as_str()
            .is_some_and(|m| m.contains("not registered"))
    );

    // Three small messages wait in the paused inbox.
    b.command("flood * /liquid/chat/1 3 100");
    assert_eq!(b.expect_event("flood_done")["sent_ok"], 3);
    let deadline = Instant::now() + TIMEOUT;
    let line = loop {
        a.command("stats");
        let stats = a.expect_event("stats");
        let line = stats["per_protocol"][0].clone();
        if line["queued_messages"] == 3 {
            break line;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(line["protocol"], "/liquid/chat/1");
    assert_eq!(line["queued_bytes"], 300);
    assert_eq!(line["received_messages"], 3);
    assert_eq!(line["paused"], true);

    // Messages larger than a stream window fill the rest: the sender's writes
    // stop moving and fail with backpressure.
    b.command("flood * /liquid/chat/1 40 600000");
    let warned = b.expect_event("backpressure");
    assert_eq!(warned["peer"], a_id.as_str());
    assert_eq!(warned["protocol"], "/liquid/chat/1");
    assert_eq!(warned["after_ms"], 300);
    let done = b.expect_event("flood_done");
    let sent_ok = done["sent_ok"].as_u64().expect("sent_ok");
    assert!(done["failed"].as_u64().is_some_and(|f| f > 0), "{done}");

    // Resumed: the first three and every acknowledged large one arrive.
    a.command("resume /liquid/chat/1");
    a.expect_event("resumed");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 + sent_ok {
        let message = a.expect_event("message");
        let data = message["data"].as_str().expect("data");
        let id = liquid_p2p_peer::parse_flood_payload(data.as_bytes()).expect("flood payload");
        assert!(seen.insert(id), "{id:?} twice; flood: {done}");
    }
    b.quit();
    a.quit();
}

#[test]
fn priorities_come_from_the_flag_change_at_run_time_and_show_in_stats() {
    let mut a = Peer::start_json(&[
        "--protocol",
        "/votes/1",
        "--protocol",
        "/blocks/1",
        "--priority",
        "/votes/1=high",
        "--priority",
        "/blocks/1=LOW",
    ]);
    a.listening();
    // (protocol, priority) of each `stats.per_protocol` entry, sorted by protocol.
    let priorities = |a: &mut Peer| -> Vec<(String, String)> {
        a.command("stats");
        let stats = a.expect_event("stats");
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        stats["per_protocol"]
            .as_array()
            .expect("per_protocol")
            .iter()
            .map(|l| (text(&l["protocol"]), text(&l["priority"])))
            .collect()
    };
    let pair = |p: &str, l: &str| (p.to_owned(), l.to_owned());
    assert_eq!(
        priorities(&mut a),
        [pair("/blocks/1", "low"), pair("/votes/1", "high")]
    );
    a.command("priority /blocks/1 normal");
    let line = a.expect_event("priority");
    assert_eq!(line["protocol"], "/blocks/1");
    assert_eq!(line["priority"], "normal");
    assert_eq!(
        priorities(&mut a),
        [pair("/blocks/1", "normal"), pair("/votes/1", "high")]
    );
    a.command("priority /not/registered high");
    assert!(
        a.expect_event("error")["message"]
            .as_str()
            .is_some_and(|m| m.contains("not registered")),
    );
    a.command("priority /votes/1 urgent");
    a.expect_event("error");
    a.quit();

    for bad in ["/votes/1", "/votes/1=urgent", "=high"] {
        let mut peer = Peer::start(&["--priority", bad]);
        let status = peer.wait_exit();
        assert_eq!(status.code(), Some(2), "--priority {bad}: {status}");
    }
}

#[test]
fn send_to_a_list_of_peers_prints_one_line_per_peer() {
    let mut a = Peer::start_json(&[]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&[]);
    let (b_address, b_id) = b.listening();
    let mut c = Peer::start_json(&["--dial", &a_address, "--dial", &b_address]);
    // Either may connect first.
    let mut connected = Vec::new();
    while connected.len() < 2 {
        let line = c.expect_event("connected");
        connected.push(line["peer"].as_str().expect("peer").to_owned());
    }
    connected.sort();
    let mut both = vec![a_id.clone(), b_id.clone()];
    both.sort();
    assert_eq!(connected, both);
    c.command(&format!("send {a_id},{b_id} /liquid/chat/1 to both"));
    let mut sent = vec![
        c.expect_event("sent")["peer"]
            .as_str()
            .expect("peer")
            .to_owned(),
        c.expect_event("sent")["peer"]
            .as_str()
            .expect("peer")
            .to_owned(),
    ];
    sent.sort();
    let mut expected = vec![a_id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(sent, expected);
    for receiver in [&mut a, &mut b] {
        assert_eq!(receiver.expect_event("message")["data"], "to both");
    }
    c.quit();
    b.quit();
    a.quit();
}

#[test]
fn gossip_reaches_a_peer_two_hops_away_and_shows_in_stats() {
    const TOPIC: &str = "/chain/cli/blocks";
    let mut a = Peer::start_json(&[]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&["--dial", &a_address]);
    let (b_address, b_id) = b.listening();
    b.expect_event("dialed");
    let mut c = Peer::start_json(&["--dial", &b_address]);
    let (_, c_id) = c.listening();
    c.expect_event("dialed");
    for peer in [&mut a, &mut b] {
        peer.command(&format!("subscribe {TOPIC}"));
        assert_eq!(peer.expect_event("subscribed")["topic"], TOPIC);
    }
    let seen = c.expect_event("topic_subscribed");
    assert_eq!(
        (seen["peer"].as_str(), &seen["topic"]),
        (Some(b_id.as_str()), &TOPIC.into())
    );
    c.command(&format!("subscribe {TOPIC}"));
    assert_eq!(c.expect_event("subscribed")["topic"], TOPIC);
    a.expect("b's subscription", |v| {
        v["event"] == "topic_subscribed" && v["peer"] == b_id.as_str()
    });
    b.expect("c's subscription", |v| {
        v["event"] == "topic_subscribed" && v["peer"] == c_id.as_str()
    });

    a.command(&format!("publish {TOPIC} block  1"));
    let published = a.expect_event("published");
    assert_eq!(published["topic"], TOPIC);
    assert!(published["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(b.expect_event("gossip")["data"], "block  1");
    let gossip = c.expect_event("gossip");
    assert_eq!(gossip["topic"], TOPIC);
    assert_eq!(gossip["data"], "block  1");
    assert_eq!(gossip["from"], a_id.as_str(), "the author");
    assert_eq!(gossip["via"], b_id.as_str(), "forwarded by b");

    c.command("stats");
    let stats = c.expect_event("stats");
    assert_eq!(stats["topics"][0]["topic"], TOPIC);
    assert_eq!(stats["topics"][0]["peers"], 1);
    assert_eq!(stats["topics"][0]["received_messages"], 1);

    // The same payload again is the same message.
    a.command(&format!("publish {TOPIC} block  1"));
    let error = a.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("published before")),
        "{error}"
    );
    c.command(&format!("unsubscribe {TOPIC}"));
    assert_eq!(c.expect_event("unsubscribed")["topic"], TOPIC);
    b.expect("c's unsubscription", |v| v["event"] == "topic_unsubscribed");
    c.quit();
    b.quit();
    a.quit();
}

#[test]
fn only_allowed_peers_connect_and_a_network_key_keeps_outsiders_out() {
    let mut b = Peer::start_json(&[]);
    let (_, b_id) = b.listening();
    let allow_file = temp_key_path("allow");
    std::fs::write(&allow_file, format!("# members\n{b_id}\n")).expect("allow file");
    let psk_file = temp_key_path("psk");
    std::fs::write(
        &psk_file,
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", "ab".repeat(32)),
    )
    .expect("psk file");
    let psk = psk_file.to_str().expect("utf-8 path");
    let mut a = Peer::start_json(&["--allow-file", allow_file.to_str().expect("utf-8 path")]);
    let (a_address, a_id) = a.listening();

    let mut c = Peer::start_json(&["--dial", &a_address]);
    let (_, c_id) = c.listening();
    let refused = a.expect_event("refused");
    assert_eq!(refused["peer"], c_id.as_str());
    assert_eq!(refused["reason"], "not_allowed");
    let failed = c.expect_event("dial_failed");
    assert_eq!(failed["cause"], "refused_by_remote");
    b.command(&format!("dial {a_address}"));
    assert_eq!(b.expect_event("connected")["peer"], a_id.as_str());
    for peer in [c, b, a] {
        let mut peer = peer;
        peer.quit();
    }

    // Private network: same key, connected; no key, no handshake.
    let mut d = Peer::start_json(&["--psk-file", psk]);
    let (d_address, d_id) = d.listening();
    let mut e = Peer::start_json(&["--psk-file", psk, "--dial", &d_address]);
    assert_eq!(e.expect_event("connected")["peer"], d_id.as_str());
    let mut f = Peer::start_json(&["--dial", &d_address]);
    let error = f.expect_event("error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("dial ")),
        "{error}"
    );
    let refused = d.expect_event("refused");
    assert_eq!(refused["stage"], "handshake");
    let _ = std::fs::remove_file(&allow_file);
    let _ = std::fs::remove_file(&psk_file);
    for peer in [f, e, d] {
        let mut peer = peer;
        peer.quit();
    }
}

#[test]
fn a_bad_psk_or_allow_file_stops_the_peer_with_a_clear_error() {
    let bad = temp_key_path("bad-psk");
    std::fs::write(&bad, "not a key\n").expect("write");
    for flag in ["--psk-file", "--allow-file"] {
        let output = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(["--json", flag, bad.to_str().expect("utf-8 path")])
            .output()
            .expect("run peer");
        assert_eq!(output.status.code(), Some(1), "{flag}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    let _ = std::fs::remove_file(&bad);
}

#[test]
fn peers_of_a_chain_find_each_other_through_a_seed() {
    let mut seed = Peer::start_json(&["--chain", "none"]);
    let (seed_address, seed_id) = seed.listening();
    let mut a = Peer::start_json(&[
        "--seed",
        &seed_address,
        "--chain",
        "main",
        "--min-peers",
        "1",
    ]);
    let (_, a_id) = a.listening();
    assert_eq!(a.expect_event("connected")["peer"], seed_id.as_str());
    let mut b = Peer::start_json(&[
        "--seed",
        &seed_address,
        "--chain",
        "main",
        "--min-peers",
        "1",
    ]);
    let (_, b_id) = b.listening();
    let found = b.expect_event("discovered");
    assert_eq!(found["peer"], a_id.as_str());
    assert_eq!(found["chain"], "main");
    b.expect("a connection to a", |v| {
        v["event"] == "connected" && v["peer"] == a_id.as_str()
    });
    a.expect("b's connection", |v| {
        v["event"] == "connected" && v["peer"] == b_id.as_str()
    });
    b.quit();
    a.quit();
    seed.quit();
}

/// A `--config` file in a fresh temporary folder, with `text` in it.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = temp_key_path(name);
    std::fs::create_dir_all(&dir).expect("folder");
    let path = dir.join("peer.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

#[test]
fn a_config_file_sets_the_limits_and_a_flag_overrides_one() {
    // No --json and no --listen flag: both come from the file, as do the
    // protocol, the pool's cap and max_peers.
    let path = config_file(
        "config",
        "json = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nprotocol = [\"/cfg/1\"]\n\
         key_file = \"a.key\"\n\n[config]\nmax_peers = 1\n\n[config.pool]\ninit_size = 2\nmax_size = 7\n",
    );
    let config = path.to_str().expect("utf-8 path");
    let mut a = Peer::start(&["--config", config]);
    let (a_address, a_id) = a.listening();
    assert!(
        path.with_file_name("a.key").exists(),
        "key_file is relative to the file's folder"
    );
    let mut b = Peer::start_json(&["--dial", &a_address]);
    let (_, b_id) = b.listening();
    assert_eq!(a.expect_event("connected")["peer"], b_id.as_str());
    b.command(&format!("send {a_id} /cfg/1 configured"));
    assert_eq!(a.expect_event("message")["data"], "configured");
    a.command("stats");
    let stats = a.expect_event("stats");
    assert_eq!(stats["per_peer"][0]["pools"][0]["max"], 7, "{stats}");

    // max_peers = 1 from the file: a second peer is refused.
    let mut c = Peer::start_json(&["--dial", &a_address]);
    let (_, c_id) = c.listening();
    let refused = a.expect_event("refused");
    assert_eq!(refused["peer"], c_id.as_str());
    assert_eq!(c.expect_event("dial_failed")["cause"], "refused_by_remote");
    for peer in [c, b, a] {
        let mut peer = peer;
        peer.quit();
    }

    // The same file with --max-peers 2: the flag wins, both connect.
    let mut a = Peer::start(&["--config", config, "--max-peers", "2"]);
    let (a_address, a_id) = a.listening();
    let mut b = Peer::start_json(&["--dial", &a_address]);
    let mut c = Peer::start_json(&["--dial", &a_address]);
    for peer in [&mut b, &mut c] {
        assert_eq!(peer.expect_event("connected")["peer"], a_id.as_str());
    }
    a.command("peers");
    let peers = a.expect_event("peers");
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(2), "{peers}");
    for peer in [c, b, a] {
        let mut peer = peer;
        peer.quit();
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_bad_config_file_stops_the_peer_with_an_error_naming_the_key() {
    for (text, key) in [
        ("[config]\nmax_peer = 3\n", "max_peer"),
        (
            "[config.supervisor]\nmax_backoff = \"soon\"\n",
            "max_backoff",
        ),
        ("[config]\nnetwork_key = \"00\"\n", "network_key"),
    ] {
        let path = config_file("bad-config", text);
        let output = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(["--json", "--config", path.to_str().expect("utf-8 path")])
            .output()
            .expect("run peer");
        assert_eq!(output.status.code(), Some(1), "{text}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(line["event"], "error", "{stdout}");
        let message = line["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("--config") && message.contains(key),
            "{text}: {message}"
        );
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
