//! `chain_cluster` end to end: four `chain_node` processes on loopback; node3 is
//! killed with SIGKILL, restarted with the same config, reconnects and catches up
//! with the leader. (The pure parts — config, encoding, sync rules — are unit
//! tested in `examples/chain-node/src/`.)

#![cfg(unix)]

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` at most `TIMEOUT`; on timeout asks it to stop (SIGTERM, so
/// it stops its nodes), then kills it.
fn wait_bounded(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The JSON line of a node (`nodeN | {...}`), if `line` is one.
fn node_event<'a>(line: &'a str, node: &str) -> Option<Value> {
    let json: &'a str = line.strip_prefix(node)?.strip_prefix(" | ")?;
    serde_json::from_str(json).ok()
}

/// Runs `chain_cluster` with `args`; returns its exit status, its stdout, a
/// failure context (stdout and the end of stderr) and how long it took.
fn run_cluster(args: &[&str]) -> (std::process::ExitStatus, String, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chain_cluster"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chain_cluster");
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child);
    let elapsed = started.elapsed();
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let context = || {
        format!(
            "--- stdout ---\n{stdout}\n--- stderr (last 4000 bytes) ---\n{}",
            {
                let start = stderr.len().saturating_sub(4000);
                let start = (start..stderr.len())
                    .find(|&i| stderr.is_char_boundary(i))
                    .unwrap_or(stderr.len());
                &stderr[start..]
            }
        )
    };
    let status = status.unwrap_or_else(|| panic!("no exit within {TIMEOUT:?}\n{}", context()));
    eprintln!("chain_cluster {} took {elapsed:.1?}", args.join(" "));
    let context = context();
    (status, stdout, context, elapsed)
}

#[test]
fn node3_is_killed_restarted_and_catches_up_with_the_leader() {
    let (status, stdout, context, elapsed) =
        run_cluster(&["--seconds", "12", "--restart-after", "4"]);
    let context = || context.clone();
    assert!(status.success(), "exit status {status}\n{}", context());

    let lines: Vec<&str> = stdout.lines().collect();
    let find = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{}", context()))
    };
    let killed = find("[cluster] killed node3 (SIGKILL)");
    let restarted = find("[cluster] restarted node3");
    let reconnected = find("[cluster] node3 reconnected: 3 peers");
    let caught_up = find("[cluster] node3 caught up");
    assert!(killed < restarted, "{}", context());
    assert!(
        restarted < reconnected && restarted < caught_up,
        "{}",
        context()
    );

    // The restarted process starts from genesis and fills its chain by sync.
    let after: Vec<Value> = lines[restarted..]
        .iter()
        .filter_map(|l| node_event(l, "node3"))
        .collect();
    assert!(
        after
            .iter()
            .any(|v| v["event"] == "started" && v["height"] == 0),
        "node3 did not start again from genesis\n{}",
        context()
    );
    let synced: u64 = after
        .iter()
        .filter(|v| v["event"] == "synced")
        .filter_map(|v| v["blocks"].as_u64())
        .sum();
    assert!(
        synced > 0,
        "node3 appended no blocks by sync\n{}",
        context()
    );
    // The others saw it leave and come back.
    for other in ["node1", "node2", "node4"] {
        let events: Vec<Value> = lines[killed..]
            .iter()
            .filter_map(|l| node_event(l, other))
            .collect();
        let gone = events
            .iter()
            .position(|v| v["event"] == "peer_disconnected")
            .unwrap_or_else(|| panic!("{other} did not see node3 leave\n{}", context()));
        assert!(
            events[gone..]
                .iter()
                .any(|v| v["event"] == "peer_connected"),
            "{other} did not see node3 come back\n{}",
            context()
        );
    }

    // Every node ended within 2 blocks of the leader, node3 included.
    let stopped = |node: &str| -> u64 {
        lines
            .iter()
            .filter_map(|l| node_event(l, node))
            .filter(|v| v["event"] == "stopped")
            .filter_map(|v| v["height"].as_u64())
            .next_back()
            .unwrap_or_else(|| panic!("no stopped line from {node}\n{}", context()))
    };
    let leader = stopped("node1");
    // 12 s at one block per 500 ms, minus start-up: well above 10.
    assert!(leader >= 10, "leader only reached {leader}\n{}", context());
    for node in ["node2", "node3", "node4"] {
        let height = stopped(node);
        assert!(
            height + 2 >= leader,
            "{node} ended at {height}, leader at {leader}\n{}",
            context()
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("[cluster] PASS")),
        "{}",
        context()
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "took {elapsed:?}\n{}",
        context()
    );
}

#[test]
fn two_chains_found_from_one_seed_keep_to_their_members_and_reach_quorum() {
    let (status, stdout, context, _) =
        run_cluster(&["--seconds", "12", "--restart-after", "4", "--chains", "2"]);
    let context = || context.clone();
    assert!(status.success(), "exit status {status}\n{}", context());
    let lines: Vec<&str> = stdout.lines().collect();
    let events =
        |node: &str| -> Vec<Value> { lines.iter().filter_map(|l| node_event(l, node)).collect() };
    let chains = [
        ["node1", "node2", "node3", "node4"],
        ["node5", "node6", "node7", "node8"],
    ];
    let peer_id = |node: &str| -> String {
        events(node)
            .iter()
            .find(|v| v["event"] == "started")
            .and_then(|v| v["peer_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no started line from {node}\n{}", context()))
    };
    for (c, chain) in chains.iter().enumerate() {
        let ids: Vec<String> = chain.iter().map(|n| peer_id(n)).collect();
        let leader_tips: Vec<(u64, String)> = events(chain[0])
            .iter()
            .filter(|v| v["event"] == "tip")
            .filter_map(|v| Some((v["height"].as_u64()?, v["hash"].as_str()?.to_owned())))
            .collect();
        assert!(
            leader_tips.len() >= 10,
            "chain {c}: leader tips {leader_tips:?}\n{}",
            context()
        );
        for node in chain {
            let events = events(node);
            // Its chain only: every tip it reports is its leader's block at
            // that height.
            for v in events.iter().filter(|v| v["event"] == "tip") {
                let (height, hash) = (v["height"].as_u64(), v["hash"].as_str());
                let leaders = leader_tips
                    .iter()
                    .find(|(h, _)| Some(*h) == height)
                    .map(|(_, hash)| hash.as_str());
                assert!(
                    leaders.is_none() || leaders == hash,
                    "{node}: tip {v} is not its leader's block\n{}",
                    context()
                );
            }
            // Votes of its members reached two thirds.
            assert!(
                events.iter().any(|v| v["event"] == "quorum"),
                "{node} saw no quorum\n{}",
                context()
            );
            // It looked for, and found, nodes of its own chain only.
            for v in events.iter().filter(|v| v["event"] == "discovered") {
                let found = v["peer"].as_str().unwrap_or_default();
                assert!(
                    ids.iter().any(|id| id == found),
                    "{node} discovered {found}, not of its chain\n{}",
                    context()
                );
            }
        }
        assert!(
            chain
                .iter()
                .skip(1)
                .any(|n| events(n).iter().any(|v| v["event"] == "discovered")),
            "chain {c}: nobody was found by discovery\n{}",
            context()
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[cluster] node3 caught up")),
        "{}",
        context()
    );
}
