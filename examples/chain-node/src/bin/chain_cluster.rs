//! `chain_cluster`: starts four `chain_node` processes on loopback, kills one and
//! restarts it, and shows it reconnect and catch up with the leader.
//!
//! ```text
//! chain_cluster [--seconds N] [--restart-after S] [--block-interval-ms MS]
//!               [--base-port PORT] [--chain-id ID] [--dir PATH]
//!               [--discovery] [--chains 1|2]
//! ```
//!
//! With `--discovery` the nodes find each other from node1 alone (the seed)
//! instead of requiring each other; with `--chains 2` a second chain of four
//! nodes (node5..node8, led by node5) runs on the same cluster, from the same
//! seed, each chain taking blocks, votes and sync only from its own members.
//!
//! 1. Writes four configurations (`node1.toml` .. `node4.toml`) and four fresh
//!    key files into a temporary folder (or `--dir`, which is kept). Every node
//!    listens on `127.0.0.1` (free ports, or `--base-port` .. `+3`) and lists the
//!    other three as required peers; `node1` is the leader.
//! 2. Starts four `chain_node` children (the binary next to this one) and merges
//!    their output: `nodeN | <json line>` on stdout, `nodeN ! <log line>` on
//!    stderr. Its own lines start with `[cluster]`; every second it prints one
//!    progress line, `[table] t=..s | node1 h=.. p=.. up | ...` (tip height,
//!    connected peers, state).
//! 3. After `--restart-after` seconds (default 5) it kills `node3` with SIGKILL,
//!    waits 2 s, and restarts it with the same configuration (same key, same
//!    port). It reports `[cluster] node3 reconnected` once node3 has its three
//!    peers back and `[cluster] node3 caught up` once it is within one block of
//!    the leader.
//! 4. After `--seconds` seconds in all (default 15) it stops every node
//!    (SIGTERM, then SIGKILL after 3 s) and prints a summary.
//!
//! Every node runs with `--stop-on-stdin-eof` on a pipe from the cluster, so no
//! node outlives it. SIGINT or SIGTERM ends the run early (summary included).
//!
//! Exit code 0 only if the leader produced blocks, every node was running at the
//! end and ended within 2 blocks of the leader (and node3, once restarted, caught
//! up); 1 otherwise; 2 for bad arguments.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use liquid_p2p::{
    Config, DiscoveryConfig, PeerId,
    libp2p::{Multiaddr, identity::Keypair},
};
use liquid_p2p_chain_node::{ConfigFile, check_chain_id};
use liquid_p2p_examples::shutdown_signal;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// Nodes of each chain.
const NODES: usize = 4;
/// The node that is killed and restarted (index into the nodes: node3).
const VICTIM: usize = 2;
/// Time between killing the victim and starting it again.
const RESTART_DELAY: Duration = Duration::from_secs(2);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How far behind the leader a node may end.
const MAX_LAG: u64 = 2;

const AFTER_HELP: &str = "\
What it does:
  Writes node1.toml .. node4.toml and fresh key files (a temporary folder, or --dir),
  each node listening on 127.0.0.1 and requiring the other three; node1 leads.
  Starts four chain_node processes (found next to this binary) and merges their
  output: 'nodeN | <json>' on stdout, 'nodeN ! <log>' on stderr, its own lines as
  '[cluster] ...', and every second '[table] t=..s | node1 h=<height> p=<peers> up | ...'.
  After --restart-after seconds it kills node3 (SIGKILL), waits 2 s, restarts it
  with the same config, and reports when it has reconnected and caught up.
  After --seconds in all it stops every node and prints a summary. SIGINT or
  SIGTERM ends the run early. With --dir the configs and keys are kept: run a node
  by hand with `chain_node --config <dir>/node1.toml`.

Exit code: 0 if every node was running at the end within 2 blocks of the leader
(and the leader produced blocks), 1 otherwise, 2 for bad arguments.";

/// Runs a four-node chain on loopback and restarts one node to show it catch up.
#[derive(Debug, Parser)]
#[command(name = "chain_cluster", version, after_help = AFTER_HELP)]
struct Args {
    /// Total run time, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,

    /// When to kill node3 (SIGKILL), in seconds from the start; it is restarted
    /// 2 s later. Must leave time for the restart: seconds > restart-after + 2.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    restart_after: u64,

    /// The leader's block interval, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    block_interval_ms: u64,

    /// Listen on PORT .. PORT+3 instead of free ports.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..=65532))]
    base_port: Option<u16>,

    /// The chain id (names the protocols).
    #[arg(long, default_value = "demo")]
    chain_id: String,

    /// Write the configs and keys here and keep them (default: a temporary
    /// folder, removed at the end).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,

    /// Nodes find each other through discovery, from node1 as the only seed,
    /// instead of listing each other as required peers; each chain's nodes are
    /// its members.
    #[arg(long)]
    discovery: bool,

    /// Chains on the cluster, four nodes each (node1..node4 serve the chain id,
    /// node5..node8 `<chain id>-2`, led by node1 and node5). Two chains imply
    /// --discovery: every node starts from node1, and each chain takes blocks,
    /// votes and sync only from its own members.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    chains: u8,
}

impl Args {
    fn nodes(&self) -> usize {
        NODES * usize::from(self.chains)
    }

    fn discovery(&self) -> bool {
        self.discovery || self.chains > 1
    }

    /// The chain id of chain `c` (0-based).
    fn chain_id(&self, c: usize) -> String {
        if c == 0 {
            self.chain_id.clone()
        } else {
            format!("{}-{}", self.chain_id, c + 1)
        }
    }
}

/// The chain of node `i` (0-based), and its leader.
fn chain_of(i: usize) -> usize {
    i / NODES
}

fn leader_of(i: usize) -> usize {
    chain_of(i) * NODES
}

/// What the cluster knows about one node.
#[derive(Debug)]
struct NodeState {
    name: String,
    config: PathBuf,
    child: Option<Child>,
    /// Incremented at every start; lines of an earlier process are only shown.
    generation: u32,
    height: u64,
    peers: usize,
    restarts: u32,
    /// When the last restart happened, until the node has caught up.
    restarted_at: Option<Instant>,
    reconnected: bool,
    caught_up_after: Option<Duration>,
    /// Exited without being asked to.
    crashed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// One line from a child.
struct Line {
    node: usize,
    generation: u32,
    stream: Stream,
    text: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.seconds <= args.restart_after + RESTART_DELAY.as_secs() {
        eprintln!(
            "chain_cluster: --seconds ({}) must be greater than --restart-after ({}) + 2",
            args.seconds, args.restart_after
        );
        return ExitCode::from(2);
    }
    if let Err(e) = check_chain_id(&args.chain_id) {
        eprintln!("chain_cluster: {e}");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("chain_cluster: {message}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: impl AsRef<str>) {
    println!("[cluster] {}", text.as_ref());
}

/// The `chain_node` binary next to this one.
fn node_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let path = me.with_file_name(format!("chain_node{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build it with `cargo build -p liquid-p2p-chain-node --bin chain_node`",
            path.display()
        ))
    }
}

/// `count` distinct loopback ports that were free a moment ago.
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    // Hold every listener until all are chosen so the ports differ.
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Writes a new ed25519 key file (the host's format) and returns its peer id.
fn write_key(path: &Path) -> Result<PeerId, String> {
    use std::io::Write;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| format!("cannot encode a key: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(key.public().to_peer_id())
}

/// Writes the keys and configs of the nodes; returns the config paths.
fn write_configs(dir: &Path, args: &Args) -> Result<Vec<PathBuf>, String> {
    let nodes = args.nodes();
    let ports = match args.base_port {
        Some(base) => (0..nodes as u16).map(|i| base + i).collect(),
        None => free_ports(nodes)?,
    };
    let mut ids = Vec::new();
    for i in 0..nodes {
        ids.push(write_key(&dir.join(format!("node{}.key", i + 1)))?);
    }
    let address = |i: usize| format!("/ip4/127.0.0.1/tcp/{}", ports[i]);
    let full = |i: usize| format!("{}/p2p/{}", address(i), ids[i]);
    let full_address = |i: usize| {
        full(i)
            .parse::<Multiaddr>()
            .map_err(|e| format!("address of node{}: {e}", i + 1))
    };
    let mut paths = Vec::new();
    for i in 0..nodes {
        let chain = chain_of(i);
        let chain_nodes = || (0..nodes).filter(move |&j| chain_of(j) == chain);
        let leader = i == leader_of(i);
        let file = if args.discovery() {
            ConfigFile {
                name: Some(format!("node{}", i + 1)),
                listen: vec![address(i)],
                key_file: format!("node{}.key", i + 1).into(),
                required_peers: Vec::new(),
                chain_id: args.chain_id(chain),
                leader,
                block_interval_ms: leader.then_some(args.block_interval_ms),
                members: chain_nodes().map(|j| ids[j].to_string()).collect(),
                network: Config::default().with_discovery(
                    DiscoveryConfig::default()
                        .with_enabled(true)
                        .with_seeds(if i == 0 {
                            Vec::new()
                        } else {
                            vec![full_address(0)?]
                        })
                        .with_min_peers(NODES - 1),
                ),
            }
        } else {
            ConfigFile {
                name: Some(format!("node{}", i + 1)),
                listen: vec![address(i)],
                key_file: format!("node{}.key", i + 1).into(),
                required_peers: chain_nodes().filter(|&j| j != i).map(full).collect(),
                chain_id: args.chain_id(chain),
                leader,
                block_interval_ms: leader.then_some(args.block_interval_ms),
                members: Vec::new(),
                network: Config::default(),
            }
        };
        let path = dir.join(format!("node{}.toml", i + 1));
        let text = file.to_toml().map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        say(format!(
            "node{} peer id {} on {}, chain {}{}{}",
            i + 1,
            ids[i],
            address(i),
            args.chain_id(chain),
            if leader { " (leader)" } else { "" },
            if args.discovery() && i == 0 {
                " (seed)"
            } else {
                ""
            }
        ));
        paths.push(path);
    }
    Ok(paths)
}

/// A new, empty working folder.
fn make_dir(args: &Args) -> Result<(PathBuf, bool), String> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!("chain-cluster-{}-{nanos}", std::process::id());
            (std::env::temp_dir().join(name), true)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok((dir, temporary))
}

async fn run(args: Args) -> Result<bool, String> {
    let binary = node_binary()?;
    let (dir, temporary) = make_dir(&args)?;
    say(format!("configs and keys in {}", dir.display()));
    let result = match write_configs(&dir, &args) {
        Ok(configs) => Cluster::new(binary, configs).run(&args).await,
        Err(e) => Err(e),
    };
    if temporary && let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("chain_cluster: cannot remove {}: {e}", dir.display());
    }
    result
}

struct Cluster {
    binary: PathBuf,
    nodes: Vec<NodeState>,
    lines_tx: mpsc::Sender<Line>,
    lines: mpsc::Receiver<Line>,
    start: Instant,
}

impl Cluster {
    fn new(binary: PathBuf, configs: Vec<PathBuf>) -> Self {
        let (lines_tx, lines) = mpsc::channel(1024);
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| NodeState {
                name: format!("node{}", i + 1),
                config,
                child: None,
                generation: 0,
                height: 0,
                peers: 0,
                restarts: 0,
                restarted_at: None,
                reconnected: false,
                caught_up_after: None,
                crashed: false,
            })
            .collect();
        Self {
            binary,
            nodes,
            lines_tx,
            lines,
            start: Instant::now(),
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Starts node `i` and forwards its output.
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(&node.config)
            // The node stops when this pipe closes: it never outlives the cluster.
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        node.generation += 1;
        node.height = 0;
        node.peers = 0;
        node.reconnected = false;
        let generation = node.generation;
        if let Some(out) = child.stdout.take() {
            forward(out, i, generation, Stream::Stdout, self.lines_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(err, i, generation, Stream::Stderr, self.lines_tx.clone());
        }
        say(format!(
            "started {} (pid {})",
            node.name,
            child.id().map_or_else(|| "?".into(), |p| p.to_string())
        ));
        node.child = Some(child);
        Ok(())
    }

    async fn run(mut self, args: &Args) -> Result<bool, String> {
        self.start = Instant::now();
        for i in 0..self.nodes.len() {
            if let Err(e) = self.spawn(i) {
                self.stop_all().await;
                return Err(e);
            }
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
        let kill_at = tokio::time::Instant::now() + Duration::from_secs(args.restart_after);
        let restart_at = kill_at + RESTART_DELAY;
        let mut killed = false;
        let mut restarted = false;
        let mut table = tokio::time::interval(Duration::from_secs(1));
        table.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        table.tick().await;
        let interrupted = loop {
            tokio::select! {
                Some(line) = self.lines.recv() => self.on_line(line),
                _ = table.tick() => {
                    self.check_exits();
                    self.print_table();
                }
                () = tokio::time::sleep_until(kill_at), if !killed => {
                    killed = true;
                    self.kill_victim().await;
                }
                () = tokio::time::sleep_until(restart_at), if killed && !restarted => {
                    restarted = true;
                    self.nodes[VICTIM].restarts += 1;
                    self.nodes[VICTIM].restarted_at = Some(Instant::now());
                    self.spawn(VICTIM)?;
                    say(format!("restarted {} with the same config and key", self.nodes[VICTIM].name));
                }
                () = tokio::time::sleep_until(end) => break false,
                () = shutdown_signal() => break true,
            }
        };
        // Drain what is already queued, then judge the heights as they are now.
        while let Ok(line) = self.lines.try_recv() {
            self.on_line(line);
        }
        self.check_exits();
        self.print_table();
        let heights: Vec<(u64, bool)> = self
            .nodes
            .iter()
            .map(|n| (n.height, n.child.is_some() && !n.crashed))
            .collect();
        say(format!("stopping after {:.1} s", self.elapsed()));
        self.stop_all().await;
        if interrupted {
            say("interrupted");
        }
        Ok(self.summary(&heights, restarted))
    }

    /// Handles one line of a child.
    fn on_line(&mut self, line: Line) {
        let node = &mut self.nodes[line.node];
        match line.stream {
            Stream::Stderr => {
                eprintln!("{} ! {}", node.name, line.text);
                return;
            }
            Stream::Stdout => println!("{} | {}", node.name, line.text),
        }
        if line.generation != node.generation {
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(&line.text) else {
            return;
        };
        let number = |field: &str| value[field].as_u64();
        match value["event"].as_str() {
            Some("started" | "tip" | "synced") => {
                if let Some(height) = number("height") {
                    node.height = height;
                }
            }
            Some("peer_connected" | "peer_disconnected") => {
                if let Some(peers) = number("peers") {
                    node.peers = usize::try_from(peers).unwrap_or(usize::MAX);
                }
            }
            _ => {}
        }
        self.check_restarted(line.node);
    }

    /// Reports when a restarted node has its peers back and has caught up.
    fn check_restarted(&mut self, i: usize) {
        let leader = self.nodes[leader_of(i)].height;
        let node = &mut self.nodes[i];
        let Some(at) = node.restarted_at else {
            return;
        };
        if !node.reconnected && node.peers >= NODES - 1 {
            node.reconnected = true;
            say(format!(
                "{} reconnected: {} peers, {} ms after the restart",
                node.name,
                node.peers,
                at.elapsed().as_millis()
            ));
        }
        if node.caught_up_after.is_none() && leader > 0 && node.height + 1 >= leader {
            let after = at.elapsed();
            node.caught_up_after = Some(after);
            say(format!(
                "{} caught up: height {} (leader {}), {} ms after the restart",
                node.name,
                node.height,
                leader,
                after.as_millis()
            ));
        }
    }

    /// Notices children that exited on their own.
    fn check_exits(&mut self) {
        for node in &mut self.nodes {
            let Some(child) = &mut node.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                say(format!("{} exited unexpectedly ({status})", node.name));
                node.child = None;
                node.crashed = true;
                node.peers = 0;
            }
        }
    }

    async fn kill_victim(&mut self) {
        let leader = self.nodes[leader_of(VICTIM)].height;
        let node = &mut self.nodes[VICTIM];
        let Some(mut child) = node.child.take() else {
            say(format!("{} is not running; nothing to kill", node.name));
            return;
        };
        // SIGKILL on Unix: no chance to say goodbye to its peers.
        if let Err(e) = child.start_kill() {
            say(format!("cannot kill {}: {e}", node.name));
        }
        let _ = child.wait().await;
        node.peers = 0;
        node.caught_up_after = None;
        say(format!(
            "killed {} (SIGKILL) at height {} (leader {}); restarting it in {} s",
            node.name,
            node.height,
            leader,
            RESTART_DELAY.as_secs()
        ));
    }

    fn print_table(&self) {
        let mut line = format!("[table] t={:>4.1}s", self.elapsed());
        for node in &self.nodes {
            let state = if node.child.is_some() {
                "up"
            } else if node.crashed {
                "CRASHED"
            } else {
                "DOWN"
            };
            line.push_str(&format!(
                " | {} h={:<4} p={} {:<4}",
                node.name, node.height, node.peers, state
            ));
        }
        println!("{}", line.trim_end());
    }

    /// Stops every child: SIGTERM, then SIGKILL after [`STOP_GRACE`].
    async fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                terminate(child);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => say(format!("{} exited with {status}", node.name)),
                Ok(Err(e)) => say(format!("cannot wait for {}: {e}", node.name)),
                Err(_) => {
                    say(format!("{} did not stop in time; killing it", node.name));
                    let _ = child.kill().await;
                }
            }
        }
        // The last lines (`stopped`), while the readers finish.
        let drain_until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(line)) = tokio::time::timeout_at(drain_until, self.lines.recv()).await {
            self.on_line(line);
        }
    }

    /// Prints the summary; returns whether the run passed.
    fn summary(&self, heights: &[(u64, bool)], restarted: bool) -> bool {
        let mut passed = true;
        for first in (0..self.nodes.len()).step_by(NODES) {
            let leader = heights[first].0;
            say(format!(
                "summary after {:.1} s: leader {} at height {leader}",
                self.elapsed(),
                self.nodes[first].name
            ));
            if leader == 0 {
                passed = false;
                say("  the leader produced no blocks");
            }
        }
        for (i, (node, &(height, running))) in self.nodes.iter().zip(heights).enumerate() {
            let leader = heights[leader_of(i)].0;
            let lag = leader.saturating_sub(height);
            let mut notes = Vec::new();
            if !running {
                notes.push("not running at the end".to_owned());
            }
            if lag > MAX_LAG {
                notes.push(format!("{lag} blocks behind"));
            }
            if node.restarts > 0 {
                match node.caught_up_after {
                    Some(after) => notes.push(format!(
                        "restarted {}x, caught up {} ms after the restart",
                        node.restarts,
                        after.as_millis()
                    )),
                    None => notes.push(format!("restarted {}x, never caught up", node.restarts)),
                }
            }
            let ok =
                running && lag <= MAX_LAG && (node.restarts == 0 || node.caught_up_after.is_some());
            passed &= ok;
            say(format!(
                "  {:<6} height {:<5} lag {:<3} {} {}",
                node.name,
                height,
                lag,
                if ok { "ok  " } else { "FAIL" },
                notes.join("; ")
            ));
        }
        if !restarted {
            say("  (node3 was not restarted)");
        }
        say(if passed {
            format!("PASS: every node within {MAX_LAG} blocks of its chain's leader")
        } else {
            format!("FAIL: not every node within {MAX_LAG} blocks of a producing leader")
        });
        passed
    }
}

/// Forwards the lines of a child's pipe to the cluster.
fn forward(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    node: usize,
    generation: u32,
    stream: Stream,
    tx: mpsc::Sender<Line>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(text)) = lines.next_line().await {
            let line = Line {
                node,
                generation,
                stream,
                text,
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
}

/// Asks a child to stop: SIGTERM on Unix (through `kill`, to stay free of
/// `unsafe`), SIGKILL elsewhere or if that fails.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            return;
        }
    }
    let _ = child.start_kill();
}
