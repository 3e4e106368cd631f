//! `peer`: one liquid-p2p node driven from the command line, for trying the
//! library by hand and for scripts and tests.
//!
//! It listens, dials, registers protocols and prints what happens on stdout: one
//! JSON object per line with `--json`, readable lines otherwise. Commands are read
//! from stdin, one per line. Logs go to stderr (`RUST_LOG`, default `warn`).
//!
//! ```text
//! peer [--listen MULTIADDR]... [--key-file PATH] [--dial MULTIADDR]...
//!      [--required MULTIADDR]... [--protocol ID]... [--json]
//!      [--max-backoff-ms MS] [--check-interval-ms MS] [--quiet-messages]
//!      [--queue-len N] [--send-timeout-ms MS] [--priority PROTOCOL=LEVEL]...
//!      [--allow PEER_ID]... [--allow-file PATH] [--psk-file PATH] [--max-peers N]
//!      [--seed MULTIADDR]... [--chain ID]... [--min-peers N] [--config FILE.toml]
//!      [--ping-timeout-ms MS] [--flood-publish]
//! ```

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

mod metrics;

use clap::Parser;
use futures::StreamExt;
use liquid_p2p::{Error, Event, Host, Inbox, PeerId, ProtocolPriority, libp2p::Multiaddr};
use liquid_p2p_examples::shutdown_signal;
use liquid_p2p_peer::{
    Command, DEFAULT_PROTOCOL, Output, PeerFile, ProtocolLine, Stats, flood_payload, parse_command,
    to_ranges,
};
use tokio::sync::{mpsc, watch};

/// Sends of one `flood` in flight at once, per recipient.
const FLOOD_IN_FLIGHT: usize = 16;

/// The chain a peer with `--seed` and no `--chain` serves.
const DEFAULT_CHAIN: &str = "default";

/// Listen address used when no `--listen` is given.
const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

const AFTER_HELP: &str = "\
Commands (stdin, one per line):
  send <peer-id[,peer-id...]|*> <protocol> <text...>
                                          send the rest of the line to those peers (one
                                          sent or error line each); * = every connected peer
  register <protocol>                     start receiving <protocol>
  unregister <protocol>                   stop receiving <protocol>
  pause <protocol>                        stop taking <protocol>'s messages (a slow consumer)
  resume <protocol>                       take them again
  priority <protocol> <high|normal|low>   send priority of a registered <protocol>
  dial <multiaddr>                        connect to a peer
  peers                                   list connected peers
  stats                                   pool, inbound-stream, task and received counts
  flood <peer-id|*> <protocol> <count> <size>
                                          send <count> numbered messages of <size> bytes
                                          (payload flood:<n>:<seq>:...) in the background;
                                          one flood_done line per recipient
  subscribe <topic>                       receive <topic>'s gossip (printed as gossip lines,
                                          each accepted and so forwarded)
  unsubscribe <topic>                     stop receiving <topic>
  publish <topic> <text...>               gossip the rest of the line on <topic>
  score <peer-id>                         this node's gossipsub score of the peer
  quit                                    shut down gracefully and exit 0
A bad command prints an error and the peer keeps running. At the end of stdin the
peer keeps running until SIGINT (Ctrl-C) or SIGTERM, which also shut it down
gracefully.

Output (--json): one JSON object per line, with an \"event\" field: listening,
connected, disconnected, message, error, peers, sent, registered, unregistered,
paused, resumed, priority, backpressure, dialed, stats, flood_done, subscribed,
unsubscribed, published, gossip, gossip_score, and every other host event in snake_case
(connection_established, connection_closed, dial_failed, stream_refused,
protocol_error, unknown_protocol, connection_stalled, connection_silent, events_dropped,
topic_subscribed, topic_unsubscribed, gossip_dropped, gossip_peer_slow, gossip_peer_graylisted, not_member,
discovered).";

/// A liquid-p2p peer: listens, dials and exchanges messages, driven from stdin.
#[derive(Debug, Parser)]
#[command(name = "peer", version, after_help = AFTER_HELP)]
struct Args {
    /// Settings file (TOML): every setting of these flags, and under [config]
    /// every field of liquid_p2p::Config (see examples/peer/peer.toml). Flags
    /// win over the file; a list flag (--listen, --dial, --required,
    /// --protocol, --seed, --chain) replaces the file's list, --allow or
    /// --allow-file replaces its allow-list, --priority overrides the file's
    /// level of the same protocol.
    #[arg(long = "config", value_name = "FILE.toml")]
    config: Option<PathBuf>,

    /// Address to listen on (repeatable). Default: /ip4/127.0.0.1/tcp/0.
    /// /tcp/.. uses TCP + noise + yamux, /udp/../quic-v1 uses QUIC (in a build
    /// with the `quic` feature, the default).
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,

    /// File holding the identity key: created (mode 0600) if missing, reused
    /// otherwise, so the peer id survives restarts. Default: a fresh key.
    #[arg(long = "key-file", value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Peer to dial at start (repeatable). With a /p2p/<id> suffix the remote must
    /// prove that identity. /dns4/<name>/.. addresses are resolved by the system
    /// (in a build with the `dns` feature, the default).
    #[arg(long = "dial", value_name = "MULTIADDR")]
    dial: Vec<Multiaddr>,

    /// Peer that must stay connected (repeatable; the address must end in
    /// /p2p/<id>). It is dialled at start and redialled whenever it disconnects or a
    /// dial fails, on a capped Fibonacci schedule (1, 1, 2, 3, 5 … s, at most 60 s).
    #[arg(long = "required", value_name = "MULTIADDR")]
    required: Vec<Multiaddr>,

    /// Protocol to receive (repeatable). Default: /liquid/chat/1.
    #[arg(long = "protocol", value_name = "ID")]
    protocol: Vec<String>,

    /// Print one JSON object per line on stdout instead of readable text.
    #[arg(long)]
    json: bool,

    /// Longest wait between redials of a required peer, in milliseconds
    /// (supervisor.max_backoff; at least 1000). Default: 60000.
    #[arg(long = "max-backoff-ms", value_name = "MS", value_parser = clap::value_parser!(u64).range(1000..))]
    max_backoff_ms: Option<u64>,

    /// How often due redials are swept for even when nothing happened, in
    /// milliseconds (supervisor.check_interval; at least 1). Default: 5000.
    #[arg(long = "check-interval-ms", value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    check_interval_ms: Option<u64>,

    /// Do not print a line per received message; only count them (see `stats`).
    /// For heavy traffic.
    #[arg(long = "quiet-messages")]
    quiet_messages: bool,

    /// Messages each protocol's inbox holds (handler_queue_len; at least 1).
    /// Default: 256.
    #[arg(long = "queue-len", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    queue_len: Option<u64>,

    /// A send whose peer takes no byte of it for this long fails with
    /// backpressure, in milliseconds (pool.send_timeout; at least 1).
    /// Default: 60000.
    #[arg(long = "send-timeout-ms", value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    send_timeout_ms: Option<u64>,

    /// Send priority of a protocol, `high`, `normal` or `low` (repeatable), applied
    /// whenever PROTOCOL is registered (by --protocol or `register`). Default:
    /// normal.
    #[arg(long = "priority", value_name = "PROTOCOL=LEVEL", value_parser = parse_priority)]
    priority: Vec<(String, ProtocolPriority)>,

    /// Peer allowed to connect (repeatable). With any --allow or --allow-file,
    /// only the listed peers may connect: others are refused right after the
    /// handshake (`refused` with reason `not_allowed`) and never dialled.
    #[arg(long = "allow", value_name = "PEER_ID")]
    allow: Vec<PeerId>,

    /// File of allowed peer ids, one a line (blank lines and lines starting
    /// with # are skipped); joins --allow.
    #[arg(long = "allow-file", value_name = "PATH")]
    allow_file: Option<PathBuf>,

    /// Private network key: libp2p's swarm.key format, or the 64 hex digits of
    /// the key alone. Only nodes with the same key complete a handshake; the
    /// peer then runs TCP only (QUIC cannot carry the key).
    #[arg(long = "psk-file", value_name = "PATH")]
    psk_file: Option<PathBuf>,

    /// Discovery seed (repeatable; the address must end in /p2p/<id>): the peer
    /// joins the network's DHT through it and looks for the nodes of its
    /// chains (--chain; `default` if none is given).
    #[arg(long = "seed", value_name = "MULTIADDR")]
    seed: Vec<Multiaddr>,

    /// A chain this peer serves (repeatable): it announces itself as one of its
    /// nodes and, with discovery on (--seed or --chain), dials the others
    /// while fewer than --min-peers of them are connected.
    #[arg(long = "chain", value_name = "ID")]
    chain: Vec<String>,

    /// Nodes of its chains discovery keeps connected (discovery.min_peers).
    /// Default: 4.
    #[arg(long = "min-peers", value_name = "N", value_parser = clap::value_parser!(u64).range(0..=100_000))]
    min_peers: Option<u64>,

    /// Most peers connected at once (max_peers; at least 1). Default: 20.
    #[arg(long = "max-peers", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_peers: Option<u64>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100;
    /// port 0 picks one). Prints a `metrics` line with the URL before the
    /// `listening` lines.
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,

    /// Send this node's gossip to every connected peer of the topic
    /// (broadcast.flood_publish), not only to its mesh.
    #[arg(long = "flood-publish")]
    flood_publish: bool,

    /// A connection with no sign of life (answered ping, byte read) for the
    /// ping interval (2 s) plus this is closed (ping_timeout). Default: 5000.
    #[arg(long = "ping-timeout-ms", value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    ping_timeout_ms: Option<u64>,
}

/// The allow-list from `--allow` and `--allow-file`; `None` when neither is given.
fn allow_list(args: &Args) -> Result<Option<HashSet<PeerId>>, String> {
    let mut peers: HashSet<PeerId> = args.allow.iter().copied().collect();
    if let Some(path) = &args.allow_file {
        peers.extend(read_allow_file("--allow-file", path)?);
    } else if args.allow.is_empty() {
        return Ok(None);
    }
    Ok(Some(peers))
}

/// The peer ids of an allow file (`what` names where its path came from).
fn read_allow_file(what: &str, path: &std::path::Path) -> Result<Vec<PeerId>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    liquid_p2p_peer::parse_peer_list(&text).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// `flags` when any were given, else `file`.
fn flags_or_file<T>(flags: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flags.is_empty() { file } else { flags }
}

/// A `--priority` value: `PROTOCOL=LEVEL`.
fn parse_priority(value: &str) -> Result<(String, ProtocolPriority), String> {
    let (protocol, level) = value
        .rsplit_once('=')
        .ok_or_else(|| format!("`{value}`: expected PROTOCOL=LEVEL"))?;
    if protocol.is_empty() {
        return Err(format!("`{value}`: the protocol is empty"));
    }
    let level = level.parse().map_err(|e| format!("`{value}`: {e}"))?;
    Ok((protocol.to_owned(), level))
}

/// Messages received on every registered protocol since start.
#[derive(Debug, Default)]
struct Received {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// What the command loop and the inbox tasks share.
#[derive(Debug)]
struct Node {
    host: Arc<Host>,
    printer: Printer,
    received: Arc<Received>,
    quiet_messages: bool,
    /// Floods started so far; the next one gets this number + 1.
    floods: AtomicU64,
    /// Registered protocols, each with the switch its inbox task follows:
    /// `true` while paused.
    inboxes: parking_lot::Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Send priorities from `--priority`, applied when a protocol is registered.
    priorities: HashMap<String, ProtocolPriority>,
}

impl Node {
    /// Registers `protocol` with its `--priority` (normal if none).
    fn register(&self, protocol: &str) -> Result<Inbox, Error> {
        let priority = self.priorities.get(protocol).copied().unwrap_or_default();
        self.host
            .control()
            .register_protocol_with_priority(protocol, priority)
    }
}

/// Writes output lines to stdout, one whole line at a time, flushed.
#[derive(Debug, Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, output: &Output) {
        let line = output.render(self.json);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout is not a reason to stop the node.
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    liquid_p2p_examples::init_stderr_tracing("warn");
    let file = match &args.config {
        Some(path) => match PeerFile::load(path) {
            Ok(file) => file,
            Err(e) => {
                Printer { json: args.json }.print(&Output::error(e.to_string()));
                return ExitCode::FAILURE;
            }
        },
        None => PeerFile::default(),
    };
    let printer = Printer {
        json: args.json || file.json,
    };
    match run(args, file, printer).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            printer.print(&Output::error(message));
            ExitCode::FAILURE
        }
    }
}

/// Runs the peer with the settings of `file` under those of `args` (defaults,
/// then the file, then the flags).
async fn run(args: Args, file: PeerFile, printer: Printer) -> Result<(), String> {
    let mut config = file.config;
    if let Some(ms) = args.max_backoff_ms {
        config.supervisor.max_backoff = Duration::from_millis(ms);
    }
    if let Some(ms) = args.check_interval_ms {
        config.supervisor.check_interval = Duration::from_millis(ms);
    }
    if let Some(n) = args.queue_len {
        config.handler_queue_len = usize::try_from(n).map_err(|e| format!("--queue-len: {e}"))?;
    }
    if let Some(ms) = args.send_timeout_ms {
        config.pool.send_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_peers {
        config.max_peers = usize::try_from(n).map_err(|e| format!("--max-peers: {e}"))?;
    }
    if args.flood_publish {
        config.broadcast.flood_publish = true;
    }
    if let Some(ms) = args.ping_timeout_ms {
        config.ping_timeout = Duration::from_millis(ms);
    }
    if let Some(list) = allow_list(&args)? {
        config.allow_list = Some(list);
    } else if let Some(path) = &file.allow_file {
        let mut list = config.allow_list.take().unwrap_or_default();
        list.extend(read_allow_file("allow_file", path)?);
        config.allow_list = Some(list);
    }
    if !args.seed.is_empty() || !args.chain.is_empty() {
        let discovery = &mut config.discovery;
        discovery.enabled = true;
        discovery.seeds = flags_or_file(args.seed.clone(), std::mem::take(&mut discovery.seeds));
        discovery.chains = flags_or_file(args.chain.clone(), std::mem::take(&mut discovery.chains));
        if discovery.chains.is_empty() {
            discovery.chains = vec![DEFAULT_CHAIN.to_owned()];
        }
    }
    if let Some(n) = args.min_peers {
        config.discovery.min_peers = usize::try_from(n).map_err(|e| format!("--min-peers: {e}"))?;
    }
    if let Some((what, path)) = args
        .psk_file
        .as_ref()
        .map(|path| ("--psk-file", path))
        .or(file.psk_file.as_ref().map(|path| ("psk_file", path)))
    {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
        let key = liquid_p2p::NetworkKey::from_key_file(&text)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        config.network_key = Some(key);
    }
    let metrics = match args.metrics.or(file.metrics) {
        Some(address) => Some(metrics::Endpoint::bind(address).await?),
        None => None,
    };
    #[cfg(feature = "metrics")]
    let mut registry = liquid_p2p::prometheus_client::registry::Registry::default();
    let builder = Host::builder().config(config);
    #[cfg(feature = "metrics")]
    let builder = match &metrics {
        Some(_) => builder.metrics(&mut registry),
        None => builder,
    };
    #[cfg(not(feature = "metrics"))]
    let _: Option<metrics::Endpoint> = metrics;
    let mut builder = builder;
    if let Some(path) = args.key_file.as_ref().or(file.key_file.as_ref()) {
        builder = builder.key_file(path);
    }
    let listen = flags_or_file(args.listen, file.listen);
    let listen = if listen.is_empty() {
        vec![
            DEFAULT_LISTEN
                .parse()
                .map_err(|e| format!("default listen address: {e}"))?,
        ]
    } else {
        listen
    };
    for address in listen {
        builder = builder.listen_on(address);
    }
    let host = Arc::new(
        builder
            .build()
            .await
            .map_err(|e| format!("cannot start: {e}"))?,
    );
    #[cfg(feature = "metrics")]
    if let Some(endpoint) = metrics {
        printer.print(&Output::Metrics {
            url: endpoint.url().to_owned(),
        });
        endpoint.serve(registry);
    }

    // Register before announcing the listen addresses: once a script sees
    // `listening`, messages for these protocols are delivered.
    let mut protocols = flags_or_file(args.protocol, file.protocol);
    if protocols.is_empty() {
        protocols.push(DEFAULT_PROTOCOL.to_owned());
    }
    let mut seen = HashSet::new();
    protocols.retain(|p| seen.insert(p.clone()));
    let node = Arc::new(Node {
        host: Arc::clone(&host),
        printer,
        received: Arc::default(),
        quiet_messages: args.quiet_messages || file.quiet_messages,
        floods: AtomicU64::new(0),
        inboxes: parking_lot::Mutex::default(),
        // The file's levels, then the flags' over them.
        priorities: file.priority.into_iter().chain(args.priority).collect(),
    });
    for protocol in &protocols {
        let inbox = node
            .register(protocol)
            .map_err(|e| format!("cannot register protocol `{protocol}`: {e}"))?;
        spawn_inbox(&node, inbox);
    }

    // Subscribe before reading the addresses: an address not yet in the snapshot
    // is then reported by an event. The events of the addresses bound during
    // `build` happened before any subscription could exist.
    let events = host.control().events();
    let announced: HashSet<String> = host.listen_addrs().iter().map(|a| a.to_string()).collect();
    let mut in_order: Vec<&String> = announced.iter().collect();
    in_order.sort();
    for address in in_order {
        printer.print(&Output::Listening {
            address: address.clone(),
        });
    }
    let event_task = tokio::spawn(print_events(events, announced, printer));
    // Required peers are added once the events are subscribed to: added in the
    // builder, the first connection (and its `connected` line) could happen
    // before the subscription and never be printed.
    for address in flags_or_file(args.required, file.required) {
        host.add_required_peer(address)
            .await
            .map_err(|e| format!("cannot start: {e}"))?;
    }

    for address in flags_or_file(args.dial, file.dial) {
        let host = Arc::clone(&host);
        tokio::spawn(async move { dial(&host, address, printer).await });
    }

    let mut lines = read_stdin();
    let commands = async {
        while let Some(line) = lines.recv().await {
            match parse_command(&line) {
                Ok(None) => {}
                Ok(Some(Command::Quit)) => return,
                Ok(Some(command)) => execute(&node, command).await,
                Err(e) => printer.print(&Output::error(e)),
            }
        }
        // End of stdin: keep serving until a signal arrives.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = commands => tracing::debug!("quit command"),
        () = shutdown_signal() => tracing::debug!("signal"),
    }
    host.shutdown().await;
    event_task.abort();
    Ok(())
}

/// Counts, and unless `--quiet-messages` prints, every message of `inbox` until
/// its protocol is unregistered; takes none while the protocol is paused.
fn spawn_inbox(node: &Node, mut inbox: Inbox) {
    let received = Arc::clone(&node.received);
    let printer = node.printer;
    let quiet = node.quiet_messages;
    let (switch, mut paused) = watch::channel(false);
    node.inboxes
        .lock()
        .insert(inbox.protocol().to_owned(), switch);
    tokio::spawn(async move {
        loop {
            if *paused.borrow_and_update() {
                if paused.changed().await.is_err() {
                    // Unregistered while paused: nothing more will be taken.
                    return;
                }
                continue;
            }
            // The switch first: a pause that came before a message wins even if
            // the task wakes for both at once.
            let message = tokio::select! {
                biased;
                changed = paused.changed() => {
                    if changed.is_err() {
                        // Unregistered: take what is left, unpaused.
                        while let Some(message) = inbox.recv().await {
                            take(&received, printer, quiet, &message);
                        }
                        return;
                    }
                    continue;
                }
                message = inbox.recv() => message,
            };
            let Some(message) = message else { return };
            take(&received, printer, quiet, &message);
        }
    });
}

/// Counts one message taken from an inbox and prints it unless `quiet`.
fn take(received: &Received, printer: Printer, quiet: bool, message: &liquid_p2p::Message) {
    received.messages.fetch_add(1, Ordering::Relaxed);
    let bytes = u64::try_from(message.payload.len()).unwrap_or(u64::MAX);
    received.bytes.fetch_add(bytes, Ordering::Relaxed);
    if !quiet {
        printer.print(&Output::message(
            message.peer,
            &message.protocol,
            &message.payload,
        ));
    }
}

/// `pause` / `resume`: flips the switch `protocol`'s inbox task follows. The
/// `paused` line follows the pause, the `resumed` line comes before the first
/// message taken again, so a script reads them in order.
fn set_paused(node: &Node, protocol: String, pause: bool) {
    let inboxes = node.inboxes.lock();
    let Some(switch) = inboxes.get(&protocol) else {
        let verb = if pause { "pause" } else { "resume" };
        node.printer
            .print(&Output::error(format!("{verb} {protocol}: not registered")));
        return;
    };
    if pause {
        switch.send_replace(true);
        node.printer.print(&Output::Paused { protocol });
    } else {
        node.printer.print(&Output::Resumed {
            protocol: protocol.clone(),
        });
        switch.send_replace(false);
    }
}

/// The `backpressure` line for a send that failed for lack of room at the
/// receiver.
fn backpressure(error: &Error) -> Option<Output> {
    match error {
        Error::Backpressure {
            peer,
            protocol,
            after,
        } => Some(Output::Backpressure {
            peer: peer.to_string(),
            protocol: protocol.clone(),
            after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        }),
        _ => None,
    }
}

async fn print_events(
    mut events: liquid_p2p::Events,
    mut announced: HashSet<String>,
    printer: Printer,
) {
    while let Some(event) = events.recv().await {
        if let Event::Listening { address } = &event
            && announced.remove(&address.to_string())
        {
            continue;
        }
        printer.print(&Output::from_event(&event));
    }
}

async fn dial(host: &Host, address: Multiaddr, printer: Printer) {
    match host.dial(address.clone()).await {
        Ok(peer) => printer.print(&Output::Dialed {
            peer: peer.to_string(),
        }),
        Err(e) => printer.print(&Output::error(format!("dial {address}: {e}"))),
    }
}

async fn execute(node: &Node, command: Command) {
    let host = &*node.host;
    let printer = node.printer;
    match command {
        Command::Send {
            target,
            protocol,
            text,
        } => {
            let peers = target.peers(|| host.control().connected_peers());
            if peers.is_empty() {
                printer.print(&Output::error("send: no connected peers"));
                return;
            }
            let results = host
                .control()
                .send_to_many(&peers, &protocol, text.as_bytes())
                .await;
            for (peer, result) in results {
                match result {
                    Ok(()) => printer.print(&Output::Sent {
                        peer: peer.to_string(),
                        protocol: protocol.clone(),
                    }),
                    Err(e) => {
                        printer.print(&Output::error(format!("send to {peer}: {e}")));
                        if let Some(line) = backpressure(&e) {
                            printer.print(&line);
                        }
                    }
                }
            }
        }
        Command::Register(protocol) => match node.register(&protocol) {
            Ok(inbox) => {
                spawn_inbox(node, inbox);
                printer.print(&Output::Registered { protocol });
            }
            Err(e) => printer.print(&Output::error(format!("register {protocol}: {e}"))),
        },
        Command::Unregister(protocol) => match host.control().unregister_protocol(&protocol) {
            Ok(()) => {
                // Its inbox task takes what is left and ends.
                node.inboxes.lock().remove(&protocol);
                printer.print(&Output::Unregistered { protocol });
            }
            Err(e) => printer.print(&Output::error(format!("unregister {protocol}: {e}"))),
        },
        Command::Pause(protocol) => set_paused(node, protocol, true),
        Command::Resume(protocol) => set_paused(node, protocol, false),
        Command::Priority { protocol, priority } => {
            match host.control().set_priority(&protocol, priority) {
                Ok(()) => printer.print(&Output::Priority {
                    protocol,
                    priority: priority.to_string(),
                }),
                Err(e) => printer.print(&Output::error(format!("priority {protocol}: {e}"))),
            }
        }
        Command::Dial(address) => dial(host, address, printer).await,
        Command::Peers => {
            let mut peers: Vec<String> = host
                .control()
                .connected_peers()
                .iter()
                .map(|p| p.to_string())
                .collect();
            peers.sort();
            printer.print(&Output::Peers { peers });
        }
        Command::Stats => {
            let peers = host
                .control()
                .connected_peers()
                .into_iter()
                .map(|peer| {
                    (
                        peer,
                        host.control().pool_stats(&peer),
                        host.control().receive_counts(&peer),
                    )
                })
                .collect();
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            let per_protocol = {
                let inboxes = node.inboxes.lock();
                host.control()
                    .inbox_stats()
                    .into_iter()
                    .map(|stats| {
                        let paused = inboxes.get(&stats.protocol).is_some_and(|s| *s.borrow());
                        ProtocolLine::new(stats, paused)
                    })
                    .collect()
            };
            printer.print(&Output::Stats(
                Stats::new(
                    peers,
                    host.inbound_stream_count(),
                    tasks,
                    node.received.messages.load(Ordering::Relaxed),
                    node.received.bytes.load(Ordering::Relaxed),
                )
                .with_protocols(per_protocol)
                .with_topics(host.control().topic_stats()),
            ));
        }
        Command::Flood {
            target,
            protocol,
            count,
            size,
        } => {
            let peers = target.peers(|| host.control().connected_peers());
            if peers.is_empty() {
                printer.print(&Output::error("flood: no connected peers"));
                return;
            }
            let number = node.floods.fetch_add(1, Ordering::Relaxed) + 1;
            for peer in peers {
                let host = Arc::clone(&node.host);
                let protocol = protocol.clone();
                tokio::spawn(async move {
                    let (done, backpressure) =
                        flood(&host, number, peer, protocol, count, size).await;
                    if let Some(line) = backpressure {
                        printer.print(&line);
                    }
                    printer.print(&done);
                });
            }
        }
        Command::Subscribe(topic) => match host.control().subscribe(topic.clone()).await {
            Ok(inbox) => {
                spawn_topic(node, inbox);
                printer.print(&Output::Subscribed { topic });
            }
            Err(e) => printer.print(&Output::error(format!("subscribe {topic}: {e}"))),
        },
        Command::Unsubscribe(topic) => match host.control().unsubscribe(&topic).await {
            Ok(()) => printer.print(&Output::Unsubscribed { topic }),
            Err(e) => printer.print(&Output::error(format!("unsubscribe {topic}: {e}"))),
        },
        Command::Publish { topic, text } => match host.control().publish(&topic, text).await {
            Ok(id) => printer.print(&Output::Published {
                topic,
                id: id.to_string(),
            }),
            Err(e) => printer.print(&Output::error(format!("publish {topic}: {e}"))),
        },
        Command::Score(peer) => match host.control().gossip_score(peer).await {
            Ok(score) => printer.print(&Output::GossipScore {
                peer: peer.to_string(),
                score: score.map(liquid_p2p_peer::Score),
            }),
            Err(e) => printer.print(&Output::error(format!("score {peer}: {e}"))),
        },
        Command::Quit => {}
    }
}

/// Prints (unless `--quiet-messages`) and accepts every message of a topic
/// until it is unsubscribed.
fn spawn_topic(node: &Node, mut inbox: liquid_p2p::TopicInbox) {
    let printer = node.printer;
    let quiet = node.quiet_messages;
    tokio::spawn(async move {
        while let Some(message) = inbox.recv().await {
            if !quiet {
                printer.print(&Output::gossip(&message));
            }
            message.accept();
        }
    });
}

/// Sends messages `0..count` of flood `number` to `peer`, [`FLOOD_IN_FLIGHT`] at
/// a time, and reports which sends failed, with a `backpressure` line for the
/// first send that failed for lack of room at the receiver.
async fn flood(
    host: &Host,
    number: u64,
    peer: PeerId,
    protocol: String,
    count: u64,
    size: usize,
) -> (Output, Option<Output>) {
    let started = Instant::now();
    let mut results = futures::stream::iter(0..count)
        .map(|seq| {
            let protocol = protocol.as_str();
            async move {
                let result = host
                    .control()
                    .send(peer, protocol, flood_payload(number, seq, size))
                    .await;
                (seq, result)
            }
        })
        .buffer_unordered(FLOOD_IN_FLIGHT);
    let mut failed = Vec::new();
    let mut first_error = None;
    let mut first_backpressure = None;
    while let Some((seq, result)) = results.next().await {
        if let Err(e) = result {
            failed.push(seq);
            first_error.get_or_insert_with(|| e.to_string());
            if first_backpressure.is_none() {
                first_backpressure = backpressure(&e);
            }
        }
    }
    drop(results);
    failed.sort_unstable();
    let failed_count = u64::try_from(failed.len()).unwrap_or(u64::MAX);
    let done = Output::FloodDone {
        flood: number,
        peer: peer.to_string(),
        protocol,
        count,
        size,
        sent_ok: count.saturating_sub(failed_count),
        failed: failed_count,
        failed_ranges: to_ranges(&failed),
        first_error,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    (done, first_backpressure)
}

/// Lines of stdin, read on a plain thread: a blocking read of tokio's stdin
/// cannot be cancelled and would hold up the exit after `quit` or a signal.
fn read_stdin() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match stdin.read_until(b'\n', &mut buffer) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer).into_owned();
                        if tx.blocking_send(line).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read stdin; ignoring it");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stdin reader; commands are ignored");
    }
    rx
}
