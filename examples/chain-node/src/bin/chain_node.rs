//! `chain_node`: a small replicated chain node that embeds a liquid-p2p [`Host`] the
//! way a blockchain node would.
//!
//! ```text
//! chain_node --config node1.toml [--stop-on-stdin-eof]
//! ```
//!
//! The configuration (TOML; see `liquid_p2p_chain_node` for every field)
//! names the listen addresses, the key file, the required peers (kept connected
//! and redialled by the host), the chain id, whether this node is the leader and
//! the leader's block interval. The chain lives in memory only: a restarted node
//! starts from genesis and catches up from its peers.
//!
//! A gossip topic and two protocols, named after the chain, each read by its own
//! task:
//!
//! - `/chain/<id>/blocks` (gossip): the leader builds a block every
//!   `block_interval_ms` and publishes it. A node checks every block before it
//!   is forwarded: one that extends its tip, is known, or is ahead of its tip (a
//!   gap, kept aside while the node asks the sender for the missing range) is
//!   accepted; one that does not decode is rejected; a fork is ignored.
//! - `/chain/<id>/consensus/1`: whenever its tip moves, a node votes for it,
//!   sending the vote to every node of the chain at once
//!   ([`Control::send_to_all`]: encoded once, one result per peer); a block
//!   with more than two thirds of the chain's votes prints a `quorum` line.
//! - `/chain/<id>/sync/1`: `Request { from, max }` asks a peer for its blocks from
//!   height `from`; the peer answers with the blocks it has, one message each, then
//!   `Done { tip, sent }`, all through one exclusive stream
//!   ([`Control::borrow_stream`]) so they arrive in order. A node asks every peer
//!   that connects, and asks again while the peer's tip is ahead of its own.
//!
//! Peers come from `required_peers` (kept connected by the host), or from
//! discovery: with `[network.discovery]` `enabled` and `seeds`, the node joins
//! the DHT through them and dials the other nodes of its chain. `[network]` is
//! the host's `liquid_p2p::Config`, read through its serde form. With `members`, the host takes the chain's blocks,
//! votes and sync messages from those peers only.
//!
//! The byte encodings (hand-written, big-endian) are documented in
//! `liquid_p2p_chain_node`. Bytes from the network that do not decode are
//! logged and skipped. The block hash is FNV-1a: for this example only, not a
//! cryptographic hash.
//!
//! The leader waits for its first sync answer (at most
//! [`LEADER_STARTUP_WAIT`]) before producing, so that a restarted leader first
//! learns the chain its peers hold.
//!
//! Output: one JSON object per line on stdout, with an `event` field: `started`,
//! `tip` (`height`, `hash`) whenever the tip moves, `sync_request`, `synced`
//! (`from`, `blocks`, `height`, `peer_height`), `quorum` (`height`, `hash`,
//! `votes`), `discovered` (`peer`), `peer_connected` / `peer_disconnected`
//! (`peer`, `peers`), `stopped`; every line also names the `node`. Logs go to stderr (`RUST_LOG`, default `warn,chain_node=info`). Exit
//! code 0 after SIGINT/SIGTERM (or the end of stdin with `--stop-on-stdin-eof`),
//! 1 if the node cannot start, 2 for bad arguments or configuration.

use liquid_p2p_examples::shutdown_signal;
use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use liquid_p2p::{
    BroadcastFailure, Control, Error, Event, GossipMessage, Host, Inbox, Message, PeerId,
    TopicInbox,
};
use liquid_p2p_chain_node::{
    Block, Chain, ChainProtocols, DecodeError, MAX_SYNC_BATCH, NodeConfig, NodeOutput, SyncMessage,
    SyncTracker, Verdict, Vote, VoteTally, hash_hex, wants_more,
};
use tokio::sync::Notify;

/// How long a leader waits for its first sync answer before producing blocks.
const LEADER_STARTUP_WAIT: Duration = Duration::from_millis(1500);
/// Wait before sending a failed sync request once more.
const SYNC_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Messages handled in one go before the tip is reported (a sync answer moves the
/// tip many times; one `tip` line per batch is enough).
const BATCH: usize = 64;

const AFTER_HELP: &str = "\
Configuration (TOML):
  name = \"node1\"                   # optional; default: the file name without extension
  listen = [\"/ip4/127.0.0.1/tcp/4101\"]
  key_file = \"node1.key\"           # created if missing; relative to the config file
  required_peers = [\"/ip4/127.0.0.1/tcp/4102/p2p/12D3Koo...\"]
  chain_id = \"demo\"
  leader = true                    # default false
  block_interval_ms = 500          # leader only; default 500
  members = [\"12D3Koo...\"]         # optional: the chain's nodes
  [network]                        # optional: every field of liquid_p2p::Config
  max_peers = 30
  [network.discovery]              # optional: find the chain's nodes
  enabled = true                   # serves chain_id
  seeds = [\"/ip4/127.0.0.1/tcp/4101/p2p/12D3Koo...\"]
  min_peers = 3                    # default 4

Gossip topic /chain/<chain_id>/blocks (new blocks from the leader), protocols
/chain/<chain_id>/consensus/1 (votes, to every node at once) and
/chain/<chain_id>/sync/1 (block requests and ordered answers).

Output: one JSON object per line on stdout (started, tip, sync_request, synced,
quorum, discovered, peer_connected, peer_disconnected, stopped), logs on stderr
(RUST_LOG).
SIGINT or SIGTERM shuts the node down gracefully (exit 0).";

/// A replicated chain node on liquid-p2p: a leader produces blocks, followers
/// replicate them and catch up after a restart.
#[derive(Debug, Parser)]
#[command(name = "chain_node", version, after_help = AFTER_HELP)]
struct Args {
    /// The node's configuration file (TOML).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,

    /// Also shut down when stdin reaches its end. `chain_cluster` starts its nodes
    /// with this and a pipe, so they never outlive it, even if it is killed.
    #[arg(long)]
    stop_on_stdin_eof: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    liquid_p2p_examples::init_stderr_tracing("warn,chain_node=info");
    let config = match NodeConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("chain_node: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, args.stop_on_stdin_eof).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chain_node: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes one output line to stdout, whole and flushed.
fn print(output: &NodeOutput) {
    let line = output.to_json();
    let mut stdout = std::io::stdout().lock();
    // A closed stdout is not a reason to stop the node.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Locks a mutex; a panic in another task does not make the chain unreadable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The state every task of the node shares.
struct Node {
    name: String,
    control: Control,
    protocols: ChainProtocols,
    chain: Mutex<Chain>,
    sync: Mutex<SyncState>,
    /// Woken by the first sync answer (the leader waits for it).
    first_answer: Notify,
    /// The chain's members; empty: everyone.
    members: Vec<PeerId>,
    /// This node.
    local: PeerId,
    votes: Mutex<VoteTally<PeerId>>,
}

/// Sync requests in flight, and the blocks each answer has appended so far.
#[derive(Default)]
struct SyncState {
    tracker: SyncTracker<PeerId>,
    appended: HashMap<PeerId, u64>,
}

/// Why a sync request is sent (shown in the `sync_request` line).
#[derive(Debug, Clone, Copy)]
enum SyncReason {
    Connected,
    ProtocolSupported,
    Gap,
    More,
    EventsDropped,
    Retry,
}

impl SyncReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::ProtocolSupported => "protocol_supported",
            Self::Gap => "gap",
            Self::More => "more",
            Self::EventsDropped => "events_dropped",
            Self::Retry => "retry",
        }
    }
}

async fn run(config: NodeConfig, stop_on_stdin_eof: bool) -> Result<(), String> {
    let protocols = ChainProtocols::new(&config.chain_id);
    // Protocols are registered in the builder, so the first peer already learns
    // them in the protocol exchange and no early block is skipped as unknown.
    let mut builder = Host::builder()
        .config(config.network.clone())
        .key_file(&config.key_file)
        .register_protocol(protocols.consensus.as_str())
        .register_protocol(protocols.sync.as_str());
    for address in &config.listen {
        builder = builder.listen_on(address.clone());
    }
    for address in &config.required_peers {
        builder = builder.required_peer(address.clone());
    }
    let host = builder
        .build()
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    // Subscribe before anything else: a required peer may already be connecting.
    let events = host.control().events();
    let taken = |protocol: &str| {
        host.take_inbox(protocol)
            .ok_or_else(|| format!("no inbox for {protocol}"))
    };
    let consensus = taken(&protocols.consensus)?;
    let sync = taken(&protocols.sync)?;
    let control = host.control();
    let blocks = control
        .subscribe(protocols.blocks.as_str())
        .await
        .map_err(|e| format!("cannot subscribe to the blocks: {e}"))?;
    if !config.members.is_empty() {
        // Only the chain's nodes may send it blocks, votes and sync messages.
        let members = || config.members.iter().copied();
        control
            .set_topic_members(&protocols.blocks, Some(members()))
            .and_then(|()| control.set_protocol_members(&protocols.consensus, Some(members())))
            .and_then(|()| control.set_protocol_members(&protocols.sync, Some(members())))
            .map_err(|e| format!("cannot set the chain's members: {e}"))?;
    }

    let node = Arc::new(Node {
        name: config.name.clone(),
        control: control.clone(),
        protocols,
        chain: Mutex::new(Chain::new(&config.chain_id)),
        sync: Mutex::new(SyncState::default()),
        first_answer: Notify::new(),
        members: config.members.clone(),
        local: host.local_peer_id(),
        votes: Mutex::new(VoteTally::default()),
    });
    print(&NodeOutput::Started {
        node: node.name.clone(),
        peer_id: host.local_peer_id().to_string(),
        chain_id: config.chain_id.clone(),
        leader: config.leader,
        listen: host.listen_addrs().iter().map(|a| a.to_string()).collect(),
        height: node.height(),
    });
    tracing::info!(
        node = %node.name,
        peer_id = %host.local_peer_id(),
        leader = config.leader,
        "started"
    );

    let mut tasks = vec![
        tokio::spawn(Arc::clone(&node).blocks_task(blocks)),
        tokio::spawn(Arc::clone(&node).consensus_task(consensus)),
        tokio::spawn(Arc::clone(&node).sync_task(sync)),
        tokio::spawn(Arc::clone(&node).events_task(events)),
    ];
    // Peers that connected before the subscription: their event is gone.
    for peer in host.control().connected_peers() {
        node.request_sync(peer, SyncReason::Connected);
    }
    if config.leader {
        tasks.push(tokio::spawn(
            Arc::clone(&node).leader_task(config.block_interval),
        ));
    }

    if stop_on_stdin_eof {
        tokio::select! {
            () = shutdown_signal() => {}
            () = stdin_closed() => tracing::info!("stdin closed"),
        }
    } else {
        shutdown_signal().await;
    }
    tracing::info!(node = %node.name, "shutting down");
    for task in &tasks {
        task.abort();
    }
    print(&NodeOutput::Stopped {
        node: node.name.clone(),
        height: node.height(),
    });
    host.shutdown().await;
    Ok(())
}

impl Node {
    fn height(&self) -> u64 {
        lock(&self.chain).height()
    }

    fn tip(&self) -> (u64, u64) {
        let chain = lock(&self.chain);
        (chain.height(), chain.tip().hash)
    }

    fn print_tip(&self, (height, hash): (u64, u64)) {
        print(&NodeOutput::Tip {
            node: self.name.clone(),
            height,
            hash: hash_hex(hash),
        });
    }

    /// Whether `peer` should get messages of `protocol`: yes if it announced the
    /// protocol, or if its list is unknown (its protocol exchange failed; it then
    /// skips frames it does not handle). A peer whose list lacks the protocol is
    /// left out; it is asked again when it announces it (`ProtocolSupported`).
    fn supports(&self, peer: &PeerId, protocol: &str) -> bool {
        self.control
            .peer_protocols(peer)
            .is_none_or(|list| list.iter().any(|p| p == protocol))
    }

    /// Asks `peer` for the blocks after our tip, unless a request to it is in
    /// flight.
    fn request_sync(self: &Arc<Self>, peer: PeerId, reason: SyncReason) {
        if !self.supports(&peer, &self.protocols.sync) {
            return;
        }
        if !lock(&self.sync).tracker.begin(&peer, Instant::now()) {
            tracing::debug!(%peer, ?reason, "sync request already in flight");
            return;
        }
        let from = self.height() + 1;
        print(&NodeOutput::SyncRequest {
            node: self.name.clone(),
            peer: peer.to_string(),
            from_height: from,
            reason: reason.as_str().into(),
        });
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let request = SyncMessage::Request {
                from,
                max: MAX_SYNC_BATCH,
            };
            if let Err(e) = node
                .control
                .send(peer, &node.protocols.sync, request.encode())
                .await
            {
                log_send_error(&peer, "sync request", &e);
                lock(&node.sync).tracker.finish(&peer);
                // A connection that closed under the request (say, the loser of
                // a simultaneous dial) while the peer stays connected: once more.
                let transient = !matches!(
                    e,
                    Error::NotConnected { .. }
                        | Error::ProtocolUnsupported { .. }
                        | Error::ShutDown
                );
                if transient && !matches!(reason, SyncReason::Retry) {
                    tokio::time::sleep(SYNC_RETRY_DELAY).await;
                    if node.control.connected_peers().contains(&peer) {
                        node.request_sync(peer, SyncReason::Retry);
                    }
                }
            }
        });
    }

    /// Reads the blocks topic: new blocks, gossiped. A block is forwarded only
    /// if it is valid (it decodes, its hash matches, and it extends our chain,
    /// is known, or is ahead of our tip); undecodable ones are rejected (the
    /// sender's gossip score drops), forks ignored.
    async fn blocks_task(self: Arc<Self>, mut inbox: TopicInbox) {
        while let Some(message) = inbox.recv().await {
            let before = self.tip();
            let gap = self.on_block(message);
            let after = self.tip();
            if after != before {
                self.print_tip(after);
                self.vote(after);
            }
            if let Some(peer) = gap {
                self.request_sync(peer, SyncReason::Gap);
            }
        }
        tracing::debug!("unsubscribed from the blocks");
    }

    /// Applies one gossiped block and gives gossipsub its verdict; returns the
    /// peer to sync from if the block showed a gap.
    fn on_block(&self, message: GossipMessage) -> Option<PeerId> {
        let peer = message.from();
        let block = match Block::decode(message.data()) {
            Ok(block) => block,
            Err(e) => {
                log_decode_error(&peer, message.topic(), &e);
                message.reject();
                return None;
            }
        };
        let height = block.height;
        let verdict = lock(&self.chain).apply(block);
        match verdict {
            Verdict::Appended { count } => {
                tracing::debug!(%peer, height, count, "block appended");
                message.accept();
                None
            }
            Verdict::Known => {
                message.accept();
                None
            }
            Verdict::Gap { from, to } => {
                tracing::info!(%peer, height, from, to, "block ahead of the tip; syncing");
                message.accept();
                Some(peer)
            }
            Verdict::WrongParent { expected, got, .. } => {
                tracing::warn!(
                    %peer,
                    height,
                    expected = %hash_hex(expected),
                    got = %hash_hex(got),
                    "block refused: its parent is not our tip"
                );
                message.ignore();
                None
            }
            Verdict::Conflict { height } => {
                tracing::warn!(%peer, height, "block refused: we hold another block at this height");
                message.ignore();
                None
            }
        }
    }

    /// The chain's size for a quorum: its members, or the connected peers that
    /// speak its consensus protocol and this node.
    fn chain_size(&self) -> usize {
        if self.members.is_empty() {
            self.control
                .peers_supporting(&[self.protocols.consensus.as_str()])
                .len()
                + 1
        } else {
            self.members.len()
        }
    }

    /// Votes for our new tip: counted here, and sent to every node of the chain
    /// at once (one encoding, one result per peer).
    fn vote(self: &Arc<Self>, (height, hash): (u64, u64)) {
        let vote = Vote { height, hash };
        self.count_vote(self.local, vote);
        let node = Arc::clone(self);
        tokio::spawn(async move {
            let results = node
                .control
                .send_to_all(&node.protocols.consensus, vote.encode())
                .await;
            for (peer, result) in results {
                if let Err(e) = result {
                    log_send_error(&peer, "vote", &e);
                }
            }
        });
    }

    fn count_vote(&self, voter: PeerId, vote: Vote) {
        let size = self.chain_size();
        let reached = lock(&self.votes).record(voter, vote, size);
        if let Some(votes) = reached {
            print(&NodeOutput::Quorum {
                node: self.name.clone(),
                height: vote.height,
                hash: hash_hex(vote.hash),
                votes,
            });
        }
    }

    /// Reads `/chain/<id>/consensus/1`: the other nodes' votes.
    async fn consensus_task(self: Arc<Self>, mut inbox: Inbox) {
        while let Some(message) = inbox.recv().await {
            match Vote::decode(&message.payload) {
                Ok(vote) => self.count_vote(message.peer, vote),
                Err(e) => log_decode_error(&message.peer, &message.protocol, &e),
            }
        }
        tracing::debug!("consensus protocol unregistered");
    }

    /// Reads `/chain/<id>/sync/1`: requests from peers and answers to ours.
    async fn sync_task(self: Arc<Self>, mut inbox: Inbox) {
        while let Some(first) = inbox.recv().await {
            let before = self.tip();
            let mut finished = Vec::new();
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(message) = next.take() {
                if let Some(done) = self.on_sync(message) {
                    finished.push(done);
                }
                handled += 1;
                if handled < BATCH {
                    next = inbox.try_recv();
                }
            }
            let after = self.tip();
            if after != before {
                self.print_tip(after);
                self.vote(after);
            }
            for (peer, blocks, peer_height) in finished {
                print(&NodeOutput::Synced {
                    node: self.name.clone(),
                    from: peer.to_string(),
                    blocks,
                    height: after.0,
                    peer_height,
                });
                self.first_answer.notify_one();
                if wants_more(self.height(), peer_height) {
                    self.request_sync(peer, SyncReason::More);
                }
            }
        }
        tracing::debug!("sync protocol unregistered");
    }

    /// Handles one sync message; returns `(peer, blocks appended, peer's tip)` when
    /// it ends an answer.
    fn on_sync(self: &Arc<Self>, message: Message) -> Option<(PeerId, u64, u64)> {
        let peer = message.peer;
        let decoded = match SyncMessage::decode(&message.payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                log_decode_error(&peer, &message.protocol, &e);
                return None;
            }
        };
        match decoded {
            SyncMessage::Request { from, max } => {
                self.answer(peer, from, max);
                None
            }
            SyncMessage::Block(block) => {
                let height = block.height;
                match lock(&self.chain).apply(block) {
                    Verdict::Appended { count } => {
                        *lock(&self.sync).appended.entry(peer).or_default() += count;
                    }
                    Verdict::Known | Verdict::Gap { .. } => {}
                    other => tracing::warn!(%peer, height, ?other, "sync block refused"),
                }
                None
            }
            SyncMessage::Done { tip, sent } => {
                let mut sync = lock(&self.sync);
                sync.tracker.finish(&peer);
                let appended = sync.appended.remove(&peer).unwrap_or(0);
                tracing::debug!(%peer, tip, sent, appended, "sync answer complete");
                Some((peer, appended, tip))
            }
        }
    }

    /// Answers a sync request: the blocks we hold from `from` on (at most
    /// `max`, capped), then `Done`, in order through one exclusive stream.
    fn answer(self: &Arc<Self>, peer: PeerId, from: u64, max: u32) {
        let (blocks, tip) = {
            let chain = lock(&self.chain);
            (
                chain.blocks_from(from, max.min(MAX_SYNC_BATCH)).to_vec(),
                chain.height(),
            )
        };
        tracing::debug!(%peer, from, count = blocks.len(), "answering sync request");
        let node = Arc::clone(self);
        // On its own task: the sync inbox keeps being read while we write, so two
        // nodes answering each other cannot block each other.
        tokio::spawn(async move {
            let protocol = node.protocols.sync.as_str();
            let result = async {
                let mut stream = node.control.borrow_stream(peer).await?;
                let sent = u32::try_from(blocks.len()).unwrap_or(u32::MAX);
                for block in blocks {
                    stream
                        .send(protocol, SyncMessage::Block(block).encode())
                        .await?;
                }
                stream
                    .send(protocol, SyncMessage::Done { tip, sent }.encode())
                    .await
            }
            .await;
            if let Err(e) = result {
                log_send_error(&peer, "sync answer", &e);
            }
        });
    }

    /// Follows host events: syncs with every peer that connects.
    async fn events_task(self: Arc<Self>, mut events: liquid_p2p::Events) {
        while let Some(event) = events.recv().await {
            match event {
                Event::PeerConnected { peer } => {
                    print(&NodeOutput::PeerConnected {
                        node: self.name.clone(),
                        peer: peer.to_string(),
                        peers: self.control.connected_peers().len(),
                    });
                    self.request_sync(peer, SyncReason::Connected);
                }
                Event::PeerDisconnected { peer } => {
                    {
                        let mut sync = lock(&self.sync);
                        sync.tracker.finish(&peer);
                        sync.appended.remove(&peer);
                    }
                    print(&NodeOutput::PeerDisconnected {
                        node: self.name.clone(),
                        peer: peer.to_string(),
                        peers: self.control.connected_peers().len(),
                    });
                }
                // A peer that registers the chain after it connected (or whose
                // list we learned late) is synced with now.
                Event::ProtocolSupported { peer, protocol } if protocol == self.protocols.sync => {
                    self.request_sync(peer, SyncReason::ProtocolSupported);
                }
                Event::EventsDropped { count } => {
                    // A connect may have been missed: ask everyone.
                    tracing::warn!(count, "missed host events; syncing with every peer");
                    for peer in self.control.connected_peers() {
                        self.request_sync(peer, SyncReason::EventsDropped);
                    }
                }
                Event::PeerDiscovered { peer, .. } => print(&NodeOutput::Discovered {
                    node: self.name.clone(),
                    peer: peer.to_string(),
                }),
                Event::RedialScheduled {
                    peer,
                    attempt,
                    delay,
                } => {
                    tracing::info!(%peer, attempt, ?delay, "required peer unreachable; redial scheduled");
                }
                other => tracing::debug!(event = ?other, "host event"),
            }
        }
    }

    /// The leader: a block every `interval`, sent to every connected peer.
    async fn leader_task(self: Arc<Self>, interval: Duration) {
        // Learn the peers' chain first, should this leader have been restarted.
        let _ = tokio::time::timeout(LEADER_STARTUP_WAIT, self.first_answer.notified()).await;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let block = {
                let mut chain = lock(&self.chain);
                let height = chain.height() + 1;
                chain.produce(format!("block {height} by {} at {unix_ms}", self.name).into_bytes())
            };
            self.print_tip((block.height, block.hash));
            self.vote((block.height, block.hash));
            match self
                .control
                .publish(&self.protocols.blocks, block.encode())
                .await
            {
                Ok(_) => {}
                // Nobody subscribed yet: followers sync when they connect.
                Err(Error::Broadcast {
                    reason: BroadcastFailure::NoPeers,
                    ..
                }) => tracing::debug!(height = block.height, "no subscriber for the block yet"),
                Err(e) => tracing::warn!(height = block.height, error = %e, "block not published"),
            }
        }
    }
}

fn log_send_error(peer: &PeerId, what: &str, error: &Error) {
    match error {
        // The peer left meanwhile; it syncs when it is back.
        Error::NotConnected { .. } | Error::ProtocolUnsupported { .. } | Error::ShutDown => {
            tracing::debug!(%peer, %error, "{what} not sent");
        }
        _ => tracing::warn!(%peer, %error, "{what} not sent"),
    }
}

fn log_decode_error(peer: &PeerId, protocol: &str, error: &DecodeError) {
    tracing::warn!(%peer, protocol, %error, "undecodable message skipped");
}

/// Resolves when stdin reaches its end (or cannot be read). Read on a plain
/// thread: a blocking read of tokio's stdin would hold up the exit.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buffer = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(std::io::Read::read(&mut stdin, &mut buffer), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = rx.await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch stdin");
            std::future::pending::<()>().await;
        }
    }
}
