//! Broadcast: gossip topics over libp2p-gossipsub, the application as validator.
//!
//! [`Broadcast`] is a `NetworkBehaviour` around `libp2p::gossipsub::Behaviour`
//! (v1.1, peer scoring on, signed messages, message ids by content hash so one
//! payload published twice is one message). Gossipsub does the mesh, IHAVE /
//! IWANT, scoring and wire format; this module adds what gossipsub leaves to
//! its user, and what a chain node needs from it:
//!
//! - **A verdict for every message, with a deadline.** Every message waits in
//!   gossipsub's cache, not forwarded, until the application calls
//!   [`GossipMessage::accept`], [`reject`](GossipMessage::reject) (which lowers
//!   the forwarder's score) or [`ignore`](GossipMessage::ignore). Gossipsub
//!   itself waits forever; here a message without a verdict after
//!   `broadcast.validation_timeout`, or dropped without one, is ignored.
//! - **Bounded topic inboxes**, in messages (`handler_queue_len`) and bytes
//!   (`inbox_byte_budget`, counted in `host_inbox_byte_budget` with the
//!   protocols' inboxes). Gossip cannot push back on its sender, so a message
//!   that does not fit is ignored and reported ([`Event::GossipDropped`]).
//! - **Topic membership**: with members set for a topic
//!   ([`Control::set_topic_members`](crate::Control::set_topic_members)), gossip
//!   authored or forwarded by anyone else is rejected.
//! - **Subscribed peers per topic**, as events and in [`TopicStats`].
//! - **Publishing to the mesh.** A node's own messages go to its mesh peers
//!   (`mesh_n` to `mesh_n_high`), not to every connected peer as gossipsub's
//!   flood publishing would (`broadcast.flood_publish` turns it back on): a
//!   publisher flooding 50 peers at 100 messages a second fell seconds behind
//!   on a loaded machine (docs/SCALE.md, finding 2).
//!
//! The application reaches it through [`Control`](crate::Control)
//! (`subscribe`, `publish`, ...): the calls go to the swarm task through a
//! bounded queue, since gossipsub lives there.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use libp2p::{
    PeerId,
    gossipsub::{
        self, IdentTopic, MessageAcceptance, MessageAuthenticity, PeerScoreParams,
        PeerScoreThresholds, PublishError, SubscriptionError, TopicHash, TopicScoreParams,
        ValidationMode,
    },
    identity::Keypair,
    swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm},
};
use liquid_p2p_core::{BroadcastFailure, Config, Error, Event, GossipDrop};
use parking_lot::RwLock;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, Sleep},
};

use crate::{control::Control, delegate::delegate_connections, events::EventBus, receiver::Room};

pub use libp2p::gossipsub::MessageId;

/// The prefix of broadcast's gossipsub protocols: `/liquid/meshsub/1.1.0` and
/// `/liquid/meshsub/1.0.0`. Not gossipsub's own `/meshsub/…`, so a node's own
/// gossipsub in the same swarm (through `HostBuilder::behaviour`) stays a
/// separate network; a stock gossipsub configured with this prefix joins ours.
pub const GOSSIP_PROTOCOL_PREFIX: &str = "/liquid/meshsub";

/// Calls from [`Control`] queued for the swarm task.
const COMMAND_QUEUE_LEN: usize = 256;
/// The longest topic name.
pub const MAX_TOPIC_LEN: usize = 256;
/// Topics remembered per connected peer (for `subscribes_under`).
const MAX_TOPICS_PER_PEER: usize = 64;
/// Room in one gossipsub RPC beside the payload: topic, signature, key, ids
/// and control messages.
const RPC_OVERHEAD: usize = 64 * 1024;

/// Penalty weight of a rejected message (gossipsub's P4, applied squared):
/// one rejection costs the forwarder 5 points at the topic weight 0.5, two cost
/// 20, crossing the gossip threshold (-10).
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;

/// The topic name for `name` messages of chain `chain`: `/chain/<chain>/<name>`
/// (for example `/chain/main/blocks`), so a node serving several chains keeps
/// their traffic and membership apart.
pub fn chain_topic(chain: &str, name: &str) -> String {
    format!("/chain/{chain}/{name}")
}

/// A message received on a subscribed topic, waiting for the application's
/// verdict. Dropping it without one ignores it (as does
/// `broadcast.validation_timeout` passing).
#[derive(Debug)]
pub struct GossipMessage {
    topic: Arc<str>,
    origin: Option<PeerId>,
    from: PeerId,
    data: Bytes,
    id: MessageId,
    verdicts: Option<mpsc::UnboundedSender<Verdict>>,
}

impl GossipMessage {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The peer that published it (messages are signed; gossipsub checked the
    /// signature).
    pub fn origin(&self) -> Option<PeerId> {
        self.origin
    }

    /// The peer that forwarded it to this node.
    pub fn from(&self) -> PeerId {
        self.from
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Its id: a hash of topic and payload.
    pub fn id(&self) -> &MessageId {
        &self.id
    }

    /// Valid: forward it to the topic's other peers.
    pub fn accept(mut self) {
        self.judge(MessageAcceptance::Accept);
    }

    /// Invalid: do not forward it, and lower the score of the peer that sent it.
    pub fn reject(mut self) {
        self.judge(MessageAcceptance::Reject);
    }

    /// Neither: do not forward it, no penalty (for example a block already
    /// known by other means).
    pub fn ignore(mut self) {
        self.judge(MessageAcceptance::Ignore);
    }

    fn judge(&mut self, acceptance: MessageAcceptance) {
        if let Some(verdicts) = self.verdicts.take() {
            // The behaviour may be gone (shut down): nothing left to forward.
            let _ = verdicts.send(Verdict {
                id: self.id.clone(),
                from: self.from,
                acceptance,
            });
        }
    }
}

impl Drop for GossipMessage {
    fn drop(&mut self) {
        self.judge(MessageAcceptance::Ignore);
    }
}

/// The application's verdict on one message.
#[derive(Debug)]
struct Verdict {
    id: MessageId,
    from: PeerId,
    acceptance: MessageAcceptance,
}

/// The messages of one subscribed topic. `None` from [`recv`](Self::recv) once
/// the topic is unsubscribed (or the node shut down) and the queue drained.
///
/// It holds `handler_queue_len` messages and `inbox_byte_budget` bytes; what
/// does not fit is ignored (not forwarded) and reported once per overflow
/// (`GossipDropped { reason: InboxFull }`). Dropping the inbox does not
/// unsubscribe: the messages it held are ignored and give their room back,
/// and the topic's later messages are all ignored as when it is full, so call
/// [`Control::unsubscribe`](crate::Control::unsubscribe) when done.
#[derive(Debug)]
pub struct TopicInbox {
    topic: String,
    rx: mpsc::Receiver<GossipMessage>,
    meter: Arc<TopicMeter>,
}

impl TopicInbox {
    /// The next message; `None` once the topic is unsubscribed (or the
    /// [`Broadcast`] behaviour is gone, as a host's is after it shuts down) and
    /// the queue drained. Judge each message
    /// ([`GossipMessage::accept`], `reject`, `ignore`) soon:
    /// it is forwarded only once accepted.
    ///
    /// # Errors
    ///
    /// None: the end of the inbox is `None`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it took no message, and no
    /// message is lost; the next call returns it.
    pub async fn recv(&mut self) -> Option<GossipMessage> {
        let message = self.rx.recv().await?;
        self.meter.taken(message.data.len());
        Some(message)
    }

    /// A message if one is queued.
    pub fn try_recv(&mut self) -> Option<GossipMessage> {
        let message = self.rx.try_recv().ok()?;
        self.meter.taken(message.data.len());
        Some(message)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for TopicInbox {
    /// Queued messages nobody will read are ignored (as each message dropped
    /// unjudged is) and give their room in the byte budgets back.
    fn drop(&mut self) {
        self.rx.close();
        while self.try_recv().is_some() {}
    }
}

/// Counters of one subscribed topic, from
/// [`Control::topic_stats`](crate::Control::topic_stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Connected peers subscribed to it.
    pub peers: usize,
    /// Messages delivered to the inbox since subscribing.
    pub received_messages: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages in the inbox.
    pub queued_messages: usize,
    /// Their bytes.
    pub queued_bytes: usize,
    /// Messages not delivered: the inbox was full, or too many awaited a
    /// verdict.
    pub dropped_messages: u64,
    /// Messages rejected because their author or forwarder is not a member.
    pub rejected_messages: u64,
}

/// The counters and byte budget of one subscribed topic.
#[derive(Debug)]
struct TopicMeter {
    topic: String,
    peers: AtomicUsize,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
    queued_messages: AtomicUsize,
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    rejected: AtomicU64,
    inbox: Room,
    host: Arc<Room>,
}

impl TopicMeter {
    /// Claims room for a message of `bytes` in both budgets.
    fn claim(&self, bytes: usize) -> bool {
        if !self.inbox.try_claim(bytes) {
            return false;
        }
        if !self.host.try_claim(bytes) {
            self.inbox.remove(bytes);
            return false;
        }
        true
    }

    fn release(&self, bytes: usize) {
        self.inbox.remove(bytes);
        self.host.remove(bytes);
    }

    fn queued(&self, bytes: usize) {
        self.received_messages.fetch_add(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.queued_messages.fetch_add(1, Ordering::Relaxed);
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A message counted by `queued` did not go in after all.
    fn unqueued(&self, bytes: usize) {
        self.release(bytes);
        self.received_messages.fetch_sub(1, Ordering::Relaxed);
        self.received_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
        self.queued_messages.fetch_sub(1, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn taken(&self, bytes: usize) {
        self.release(bytes);
        self.queued_messages.fetch_sub(1, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn stats(&self) -> TopicStats {
        TopicStats {
            topic: self.topic.clone(),
            peers: self.peers.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            queued_messages: self.queued_messages.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            dropped_messages: self.dropped.load(Ordering::Relaxed),
            rejected_messages: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// What [`Control`] reads and writes without the swarm task.
#[derive(Debug, Default)]
struct Tables {
    /// The meters of subscribed topics.
    topics: RwLock<HashMap<String, Arc<TopicMeter>>>,
    /// Topics with members: only their gossip is taken.
    members: RwLock<HashMap<String, Arc<HashSet<PeerId>>>>,
    /// The topics each connected peer subscribes to (at most
    /// [`MAX_TOPICS_PER_PEER`] each), for discovery to tell a chain's nodes.
    peer_topics: RwLock<HashMap<PeerId, HashSet<String>>>,
}

enum Command {
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<TopicInbox, Error>>,
    },
    Unsubscribe {
        topic: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<MessageId, Error>>,
    },
    PeerScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
}

/// [`Control`]'s way to the broadcast behaviour.
#[derive(Debug, Clone)]
pub(crate) struct BroadcastHandle {
    commands: mpsc::Sender<Command>,
    tables: Arc<Tables>,
    max_size: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe { topic, .. } => write!(f, "Subscribe({topic})"),
            Command::Unsubscribe { topic, .. } => write!(f, "Unsubscribe({topic})"),
            Command::Publish { topic, data, .. } => {
                write!(f, "Publish({topic}, {} bytes)", data.len())
            }
            Command::PeerScore { peer, .. } => write!(f, "PeerScore({peer})"),
        }
    }
}

fn failure(topic: &str, reason: BroadcastFailure) -> Error {
    Error::Broadcast {
        topic: topic.to_owned(),
        reason,
    }
}

pub(crate) fn validate_topic(topic: &str) -> Result<(), Error> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(failure(topic, BroadcastFailure::InvalidTopic));
    }
    Ok(())
}

impl BroadcastHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| Error::ShutDown)?;
        answer.await.map_err(|_| Error::ShutDown)
    }

    pub(crate) async fn subscribe(&self, topic: String) -> Result<TopicInbox, Error> {
        validate_topic(&topic)?;
        self.call(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    pub(crate) async fn unsubscribe(&self, topic: String) -> Result<(), Error> {
        self.call(|reply| Command::Unsubscribe { topic, reply })
            .await?
    }

    pub(crate) async fn publish(&self, topic: String, data: Vec<u8>) -> Result<MessageId, Error> {
        validate_topic(&topic)?;
        if data.len() > self.max_size {
            return Err(failure(
                &topic,
                BroadcastFailure::TooLarge {
                    size: data.len(),
                    limit: self.max_size,
                },
            ));
        }
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    pub(crate) async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, Error> {
        self.call(|reply| Command::PeerScore { peer, reply }).await
    }

    pub(crate) fn stats(&self) -> Vec<TopicStats> {
        let mut list: Vec<_> = self
            .tables
            .topics
            .read()
            .values()
            .map(|meter| meter.stats())
            .collect();
        list.sort_by(|a, b| a.topic.cmp(&b.topic));
        list
    }

    pub(crate) fn set_members(&self, topic: &str, members: Option<HashSet<PeerId>>) {
        let mut table = self.tables.members.write();
        match members {
            Some(members) => {
                table.insert(topic.to_owned(), Arc::new(members));
            }
            None => {
                table.remove(topic);
            }
        }
    }

    /// Whether `peer` subscribes to a topic starting with `prefix`.
    pub(crate) fn subscribes_under(&self, peer: &PeerId, prefix: &str) -> bool {
        self.tables
            .peer_topics
            .read()
            .get(peer)
            .is_some_and(|topics| topics.iter().any(|t| t.starts_with(prefix)))
    }

    pub(crate) fn members(&self, topic: &str) -> Option<Vec<PeerId>> {
        self.tables
            .members
            .read()
            .get(topic)
            .map(|members| members.iter().copied().collect())
    }
}

/// A topic this node subscribes to.
#[derive(Debug)]
struct LocalTopic {
    name: Arc<str>,
    queue: mpsc::Sender<GossipMessage>,
    meter: Arc<TopicMeter>,
    /// A message was dropped for lack of room and none fit since (reported once).
    overflowing: bool,
}

/// A message delivered to the application and not yet judged.
#[derive(Debug)]
struct Pending {
    from: PeerId,
    deadline: Instant,
}

/// The broadcast `NetworkBehaviour`. A [`Host`](crate::Host) runs one unless
/// `broadcast.enabled` is false; a node with its own swarm adds it next to the
/// liquid [`Behaviour`](crate::Behaviour):
///
/// ```
/// use libp2p::swarm::NetworkBehaviour;
/// use liquid_p2p::{Behaviour, Broadcast, Config, Error};
///
/// #[derive(NetworkBehaviour)]
/// #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
/// struct Node {
///     liquid: Behaviour,
///     broadcast: Broadcast,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Error> {
/// let key = libp2p::identity::Keypair::generate_ed25519();
/// let (liquid, control) = Behaviour::new(key.public().to_peer_id(), Config::default())?;
/// let broadcast = Broadcast::new(&key, &control)?;
/// let _node = Node { liquid, broadcast };
/// // Once the swarm runs: control.subscribe("/chain/main/blocks").await?
/// # Ok(())
/// # }
/// ```
pub struct Broadcast {
    gossipsub: gossipsub::Behaviour,
    commands: mpsc::Receiver<Command>,
    verdicts: mpsc::UnboundedReceiver<Verdict>,
    verdict_tx: mpsc::UnboundedSender<Verdict>,
    tables: Arc<Tables>,
    events: EventBus,
    host_room: Arc<Room>,
    topics: HashMap<TopicHash, LocalTopic>,
    pending: HashMap<MessageId, Pending>,
    /// Pending messages in the order of their deadlines (all deadlines are
    /// `validation_timeout` after arrival, so arrival order is deadline order).
    deadlines: VecDeque<(Instant, MessageId)>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Each heartbeat, connected peers' scores are compared with the graylist
    /// threshold, so that a peer whose gossip is ignored is reported.
    score_check: Option<tokio::time::Interval>,
    score_check_period: Duration,
    graylist_threshold: f64,
    /// Connected peers below the graylist threshold (reported once each time
    /// they fall below).
    graylisted: HashSet<PeerId>,
    queue_len: usize,
    topic_byte_budget: usize,
    max_pending: usize,
    max_topics: usize,
    validation_timeout: Duration,
    max_size: usize,
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("topics", &self.topics.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Gossipsub's settings for `config`.
fn gossipsub_config(config: &Config) -> Result<gossipsub::Config, Error> {
    let b = &config.broadcast;
    gossipsub::ConfigBuilder::default()
        .protocol_id_prefix(GOSSIP_PROTOCOL_PREFIX)
        .heartbeat_interval(b.heartbeat_interval)
        .heartbeat_initial_delay(b.heartbeat_interval)
        .mesh_n(b.mesh_n)
        .mesh_n_low(b.mesh_n_low)
        .mesh_n_high(b.mesh_n_high)
        // Gossipsub wants fewer outbound mesh peers than `D_lo`, and at most `D / 2`.
        .mesh_outbound_min((b.mesh_n / 2).min(b.mesh_n_low.saturating_sub(1)))
        .flood_publish(b.flood_publish)
        .max_transmit_size(config.max_frame_size.saturating_add(RPC_OVERHEAD))
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(content_id)
        .build()
        .map_err(|e| Error::InvalidConfig {
            reason: format!("broadcast: {e}"),
        })
}

/// A message's id: SHA-256 of its topic and payload, so the same payload
/// published twice (by one node or two) is one message.
fn content_id(message: &gossipsub::Message) -> MessageId {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(message.topic.as_str().as_bytes());
    hash.update([0]);
    hash.update(&message.data);
    MessageId::from(hash.finalize().to_vec())
}

/// Scoring: gossipsub's defaults, except two penalties that an honest node
/// incurs:
///
/// - peers sharing an IP are not penalised (a chain's nodes often share a data
///   centre, NAT or test machine; membership, not IP diversity, keeps strangers
///   out);
/// - no behaviour penalty (P7), whose commonest cause is a broken IWANT
///   promise: a peer advertised a message (IHAVE), we asked for it, and it did
///   not arrive within 3 s. Under load that is an honest peer being slow, and
///   the penalty is quadratic: at 100 nodes and 100 messages a second the
///   publisher broke hundreds of promises, its score fell to -1,000,000 at up
///   to 16 receivers at once, below the graylist threshold, and they ignored
///   everything it sent, silently (docs/SCALE.md, finding 2). A peer that
///   lies in its IHAVEs costs us at most gossipsub's per-heartbeat IHAVE and
///   IWANT caps; invalid messages still cost their forwarder (P4).
fn score_params() -> PeerScoreParams {
    PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        ..PeerScoreParams::default()
    }
}

/// Scoring of one topic: rejected messages cost the forwarder
/// ([`INVALID_MESSAGE_WEIGHT`]); quiet mesh peers do not (chain traffic comes
/// in bursts, so gossipsub's mesh-delivery penalties would prune honest peers).
fn topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.5,
        ..TopicScoreParams::default()
    }
}

impl Broadcast {
    /// A broadcast behaviour signing with `keypair` (the swarm's), driven
    /// through `control` (of the liquid behaviour in the same swarm) and using
    /// its configuration. One per `control`.
    pub fn new(keypair: &Keypair, control: &Control) -> Result<Self, Error> {
        Self::build(
            keypair,
            control,
            #[cfg(feature = "metrics")]
            None,
        )
    }

    /// [`new`](Self::new), with gossipsub's own metrics registered in
    /// `registry` (feature `metrics`) under the prefix `gossipsub_`
    /// (`gossipsub_heartbeat_duration`, `gossipsub_mesh_peer_counts`, ...).
    #[cfg(feature = "metrics")]
    pub fn with_metrics(
        keypair: &Keypair,
        control: &Control,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Self, Error> {
        Self::build(keypair, control, Some(registry))
    }

    pub(crate) fn build(
        keypair: &Keypair,
        control: &Control,
        #[cfg(feature = "metrics")] registry: Option<&mut prometheus_client::registry::Registry>,
    ) -> Result<Self, Error> {
        let shared = control.shared();
        let config = &shared.config;
        let authenticity = MessageAuthenticity::Signed(keypair.clone());
        let gossip_config = gossipsub_config(config)?;
        let gossipsub = gossipsub::Behaviour::new(authenticity, gossip_config).map_err(|e| {
            Error::InvalidConfig {
                reason: format!("broadcast: {e}"),
            }
        })?;
        #[cfg(feature = "metrics")]
        let gossipsub = match registry {
            Some(registry) => gossipsub.with_metrics(
                registry.sub_registry_with_prefix("gossipsub"),
                gossipsub::MetricsConfig::default(),
            ),
            None => gossipsub,
        };
        let mut gossipsub = gossipsub;
        let thresholds = PeerScoreThresholds::default();
        let graylist_threshold = thresholds.graylist_threshold;
        gossipsub
            .with_peer_score(score_params(), thresholds)
            .map_err(|e| Error::InvalidConfig {
                reason: format!("broadcast scoring: {e}"),
            })?;
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
        let tables = Arc::new(Tables::default());
        let handle = BroadcastHandle {
            commands: commands_tx,
            tables: Arc::clone(&tables),
            max_size: config.max_frame_size,
        };
        if shared.broadcast.set(handle).is_err() {
            return Err(Error::InvalidConfig {
                reason: "this control drives a broadcast behaviour already".into(),
            });
        }
        let (verdict_tx, verdicts) = mpsc::unbounded_channel();
        Ok(Self {
            gossipsub,
            commands,
            verdicts,
            verdict_tx,
            tables,
            events: shared.events.clone(),
            host_room: shared.registry.host_room(),
            topics: HashMap::new(),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            timer: None,
            score_check: None,
            score_check_period: config.broadcast.heartbeat_interval,
            graylist_threshold,
            graylisted: HashSet::new(),
            queue_len: config.handler_queue_len,
            topic_byte_budget: config.effective_inbox_byte_budget(),
            max_pending: config.broadcast.max_pending_validations,
            max_topics: config.broadcast.max_topics,
            validation_timeout: config.broadcast.validation_timeout,
            max_size: config.max_frame_size,
        })
    }

    /// Gossipsub itself, for what this wrapper does not offer (mesh peers,
    /// explicit peers). Subscribe and publish through [`Control`], not here:
    /// topics subscribed here have no inbox, and their messages are ignored.
    pub fn gossipsub(&mut self) -> &mut gossipsub::Behaviour {
        &mut self.gossipsub
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }

    fn run(&mut self, command: Command) {
        match command {
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::Unsubscribe { topic, reply } => {
                let _ = reply.send(self.unsubscribe(&topic));
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(&topic, data));
            }
            Command::PeerScore { peer, reply } => {
                let _ = reply.send(self.gossipsub.peer_score(&peer));
            }
        }
    }

    fn subscribe(&mut self, topic: String) -> Result<TopicInbox, Error> {
        let ident = IdentTopic::new(topic.clone());
        let hash = ident.hash();
        if self.topics.contains_key(&hash) {
            return Err(failure(&topic, BroadcastFailure::AlreadySubscribed));
        }
        if self.topics.len() >= self.max_topics {
            return Err(failure(
                &topic,
                BroadcastFailure::TooManyTopics {
                    limit: self.max_topics,
                },
            ));
        }
        self.gossipsub
            .subscribe(&ident)
            .map_err(|e| subscribe_failure(&topic, e))?;
        if let Err(e) = self.gossipsub.set_topic_params(ident, topic_score_params()) {
            tracing::warn!(%topic, error = e, "topic scoring not set");
        }
        let peers = self.peers_of(&hash);
        let meter = Arc::new(TopicMeter {
            topic: topic.clone(),
            peers: AtomicUsize::new(peers),
            received_messages: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            queued_messages: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inbox: Room::new(self.topic_byte_budget),
            host: Arc::clone(&self.host_room),
        });
        let (tx, rx) = mpsc::channel(self.queue_len);
        self.tables
            .topics
            .write()
            .insert(topic.clone(), Arc::clone(&meter));
        self.topics.insert(
            hash,
            LocalTopic {
                name: Arc::from(topic.as_str()),
                queue: tx,
                meter: Arc::clone(&meter),
                overflowing: false,
            },
        );
        tracing::debug!(%topic, peers, "subscribed");
        Ok(TopicInbox { topic, rx, meter })
    }

    fn unsubscribe(&mut self, topic: &str) -> Result<(), Error> {
        let ident = IdentTopic::new(topic);
        if self.topics.remove(&ident.hash()).is_none() {
            return Err(failure(topic, BroadcastFailure::NotSubscribed));
        }
        self.tables.topics.write().remove(topic);
        self.gossipsub.unsubscribe(&ident);
        tracing::debug!(%topic, "unsubscribed");
        Ok(())
    }

    fn publish(&mut self, topic: &str, data: Vec<u8>) -> Result<MessageId, Error> {
        let size = data.len();
        self.gossipsub
            .publish(IdentTopic::new(topic), data)
            .map_err(|e| {
                failure(
                    topic,
                    match e {
                        PublishError::Duplicate => BroadcastFailure::Duplicate,
                        PublishError::NoPeersSubscribedToTopic => BroadcastFailure::NoPeers,
                        PublishError::MessageTooLarge => BroadcastFailure::TooLarge {
                            size,
                            limit: self.max_size,
                        },
                        PublishError::AllQueuesFull(peers) => {
                            BroadcastFailure::QueuesFull { peers }
                        }
                        PublishError::SigningError(_) | PublishError::TransformFailed(_) => {
                            BroadcastFailure::Signing
                        }
                    },
                )
            })
    }

    /// A message arrived: membership, room, then the inbox.
    fn on_message(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        let Some(topic) = self.topics.get_mut(&message.topic) else {
            // Subscribed through `gossipsub()` directly: nobody to judge it.
            self.gossipsub
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            return;
        };
        let origin = message.source;
        let members = self.tables.members.read().get(&*topic.name).cloned();
        if let Some(members) = members {
            let member = |peer: Option<PeerId>| peer.is_some_and(|p| members.contains(&p));
            if !member(Some(from)) || !member(origin) {
                topic.meter.rejected.fetch_add(1, Ordering::Relaxed);
                let event = Event::GossipDropped {
                    topic: topic.name.to_string(),
                    from,
                    origin,
                    reason: GossipDrop::NotMember,
                };
                self.gossipsub.report_message_validation_result(
                    &id,
                    &from,
                    MessageAcceptance::Reject,
                );
                self.emit(event);
                return;
            }
        }
        let size = message.data.len();
        let drop = if self.pending.len() >= self.max_pending {
            Some(GossipDrop::TooManyPending)
        } else if !topic.meter.claim(size) {
            Some(GossipDrop::InboxFull)
        } else {
            let gossip = GossipMessage {
                topic: Arc::clone(&topic.name),
                origin,
                from,
                data: Bytes::from(message.data),
                id: id.clone(),
                verdicts: Some(self.verdict_tx.clone()),
            };
            // Counted before it is queued: the application may take it at once.
            topic.meter.queued(size);
            match topic.queue.try_send(gossip) {
                Ok(()) => None,
                Err(refused) => {
                    // Reported as ignored below, once.
                    refused.into_inner().verdicts = None;
                    topic.meter.unqueued(size);
                    Some(GossipDrop::InboxFull)
                }
            }
        };
        if let Some(reason) = drop {
            topic.meter.dropped.fetch_add(1, Ordering::Relaxed);
            let first = !topic.overflowing;
            topic.overflowing = true;
            let event = Event::GossipDropped {
                topic: topic.name.to_string(),
                from,
                origin,
                reason,
            };
            self.gossipsub
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            if first {
                tracing::debug!(topic = %topic.name, %reason, "gossip dropped");
                self.emit(event);
            }
            return;
        }
        topic.overflowing = false;
        let deadline = Instant::now() + self.validation_timeout;
        self.pending.insert(id.clone(), Pending { from, deadline });
        self.deadlines.push_back((deadline, id));
        // Judged messages leave `pending` at once but their deadlines only
        // when due: drop those now and then, so the queue stays within twice
        // the pending limit whatever the message rate.
        if self.deadlines.len() > self.max_pending.saturating_mul(2) {
            let pending = &self.pending;
            self.deadlines.retain(|(_, id)| pending.contains_key(id));
        }
    }

    fn on_verdict(&mut self, verdict: Verdict) {
        if self.pending.remove(&verdict.id).is_some() {
            self.gossipsub.report_message_validation_result(
                &verdict.id,
                &verdict.from,
                verdict.acceptance,
            );
        }
    }

    /// Ignores messages whose deadline passed; returns when the next one is due.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some((deadline, id)) = self.deadlines.front() {
            if *deadline > now {
                return Some(*deadline);
            }
            let id = id.clone();
            self.deadlines.pop_front();
            if let Some(pending) = self.pending.remove(&id) {
                if pending.deadline <= now {
                    tracing::trace!(%id, "no verdict in time: ignored");
                    self.gossipsub.report_message_validation_result(
                        &id,
                        &pending.from,
                        MessageAcceptance::Ignore,
                    );
                } else {
                    self.pending.insert(id, pending);
                }
            }
        }
        None
    }

    /// Reports connected peers whose score fell below the graylist threshold:
    /// gossipsub then ignores all they send, and says nothing.
    fn check_scores(&mut self) {
        let mut fallen = Vec::new();
        let mut below = HashSet::new();
        for (peer, _) in self.gossipsub.all_peers() {
            let Some(score) = self.gossipsub.peer_score(peer) else {
                return;
            };
            if score < self.graylist_threshold {
                below.insert(*peer);
                if !self.graylisted.contains(peer) {
                    fallen.push((*peer, score));
                }
            }
        }
        self.graylisted = below;
        for (peer, score) in fallen {
            tracing::warn!(%peer, score, "gossip peer graylisted: its gossip is ignored");
            self.emit(Event::GossipPeerGraylisted { peer });
        }
    }

    /// Connected peers subscribed to `topic`.
    fn peers_of(&self, topic: &TopicHash) -> usize {
        self.gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&topic))
            .count()
    }

    /// Recounts the subscribed peers of every local topic.
    fn count_peers(&self) {
        for (hash, local) in &self.topics {
            local
                .meter
                .peers
                .store(self.peers_of(hash), Ordering::Relaxed);
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        #[cfg(feature = "metrics")]
        self.events.record_libp2p(&event);
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_message(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic } => {
                {
                    let mut peer_topics = self.tables.peer_topics.write();
                    let topics = peer_topics.entry(peer_id).or_default();
                    if topics.len() < MAX_TOPICS_PER_PEER {
                        topics.insert(topic.as_str().to_owned());
                    }
                }
                self.count_peers();
                self.emit(Event::TopicSubscribed {
                    peer: peer_id,
                    topic: topic.into_string(),
                });
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                if let Some(topics) = self.tables.peer_topics.write().get_mut(&peer_id) {
                    topics.remove(topic.as_str());
                }
                self.count_peers();
                self.emit(Event::TopicUnsubscribed {
                    peer: peer_id,
                    topic: topic.into_string(),
                });
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::trace!(peer = %peer_id, "peer does not speak gossipsub");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                tracing::debug!(peer = %peer_id, ?failed_messages, "gossip peer too slow");
                let dropped = failed_messages
                    .priority
                    .saturating_add(failed_messages.non_priority);
                self.emit(Event::GossipPeerSlow {
                    peer: peer_id,
                    dropped: u64::try_from(dropped).unwrap_or(u64::MAX),
                });
            }
        }
    }
}

fn subscribe_failure(topic: &str, e: SubscriptionError) -> Error {
    failure(
        topic,
        match e {
            SubscriptionError::NotAllowed => BroadcastFailure::InvalidTopic,
            SubscriptionError::PublishError(PublishError::AllQueuesFull(peers)) => {
                BroadcastFailure::QueuesFull { peers }
            }
            SubscriptionError::PublishError(_) => BroadcastFailure::Signing,
        },
    )
}

impl NetworkBehaviour for Broadcast {
    type ConnectionHandler = <gossipsub::Behaviour as NetworkBehaviour>::ConnectionHandler;
    /// Its events reach the swarm through the liquid behaviour's (and
    /// [`Control::events`]), with the rest.
    type ToSwarm = std::convert::Infallible;

    delegate_connections!(gossipsub);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // Gossipsub forgets a peer's topics silently when its last connection
        // closes; they are reported here as unsubscribed.
        let gone = match event {
            FromSwarm::ConnectionClosed(closed) if closed.remaining_established == 0 => self
                .gossipsub
                .all_peers()
                .find(|(peer, _)| **peer == closed.peer_id)
                .map(|(peer, topics)| (*peer, topics.into_iter().cloned().collect::<Vec<_>>())),
            _ => None,
        };
        self.gossipsub.on_swarm_event(event);
        if let Some((peer, topics)) = gone {
            self.graylisted.remove(&peer);
            self.tables.peer_topics.write().remove(&peer);
            self.count_peers();
            for topic in topics {
                self.emit(Event::TopicUnsubscribed {
                    peer,
                    topic: topic.into_string(),
                });
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Poll::Ready(Some(command)) = self.commands.poll_recv(cx) {
            self.run(command);
        }
        while let Poll::Ready(Some(verdict)) = self.verdicts.poll_recv(cx) {
            self.on_verdict(verdict);
        }
        loop {
            match self.gossipsub.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_gossip(event),
                Poll::Ready(action) => {
                    return Poll::Ready(
                        action.map_out(|_| unreachable!("events are matched by the arm above")),
                    );
                }
                Poll::Pending => break,
            }
        }
        let period = self.score_check_period;
        let check = self.score_check.get_or_insert_with(|| {
            let mut check = tokio::time::interval(period);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            check
        });
        if check.poll_tick(cx).is_ready() {
            self.check_scores();
            // Registers the next tick's waker.
            if let Some(check) = self.score_check.as_mut() {
                let _ = check.poll_tick(cx);
            }
        }
        let now = Instant::now();
        match self.expire(now) {
            Some(next) => {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                if timer.deadline() != next {
                    timer.as_mut().reset(next);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    // Due already: come back at once to expire it.
                    cx.waker().wake_by_ref();
                }
            }
            None => self.timer = None,
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use liquid_p2p_core::BroadcastConfig;

    use super::*;

    #[test]
    fn broken_promises_cost_no_score_and_the_parameters_are_valid() {
        let params = score_params();
        assert_eq!(params.behaviour_penalty_weight, 0.0);
        params.validate().expect("valid score parameters");
        topic_score_params()
            .validate()
            .expect("valid topic parameters");
    }

    #[test]
    fn own_messages_go_to_the_mesh_unless_flooding_is_asked_for() {
        let mesh_only = gossipsub_config(&Config::default()).expect("valid");
        assert!(!mesh_only.flood_publish());
        let flooding =
            Config::default().with_broadcast(BroadcastConfig::default().with_flood_publish(true));
        assert!(gossipsub_config(&flooding).expect("valid").flood_publish());
    }
}
