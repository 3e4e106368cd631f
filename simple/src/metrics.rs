//! Prometheus metrics (feature `metrics`), in the node's own
//! `prometheus-client` registry, under the prefix `liquid_`.
//!
//! Two kinds:
//! - **Recorded** as things happen: sends (frames, bytes, failures, borrow wait
//!   and send duration), and every [`Event`] the library emits (refusals,
//!   evictions, dial failures, redials, stalls, protocol errors, refused inbound
//!   streams, exchange failures, gossip drops, discoveries). Events are counted
//!   when emitted, before any subscriber's queue, so a slow subscriber does not
//!   make them miss.
//! - **Collected** at scrape time from the state the library keeps anyway (the
//!   same figures as `pool_stats`, `inbox_stats`, `topic_stats`): pool gauges per
//!   peer, inbound streams, inbox depths and counters per protocol, topics.
//!   Nothing is counted twice, and an unscraped registry costs nothing for them.
//!
//! Label cardinality is bounded: at most [`MAX_PEER_LABELS`] peers and
//! [`MAX_PROTOCOL_LABELS`] sent protocols get a label of their own; the rest
//! are summed under `other`. Topics are bounded by `broadcast.max_topics`,
//! registered protocols by the application.
//!
//! libp2p-metrics records the swarm's own events and the bandwidth, and gossipsub
//! its own figures, when [`HostBuilder::metrics`](crate::HostBuilder::metrics)
//! is used; a node with its own swarm attaches libp2p-metrics itself.
//!
//! Hand-written here: only the mapping of our state and events onto
//! `prometheus-client` types, which no crate can know.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Weak},
    time::Duration,
};

use liquid_p2p_core::{Error, Event, PoolStats};
use parking_lot::RwLock;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{Control, shared::Shared};

/// Peers that get a label of their own in the per-peer pool gauges; the others
/// are summed under `peer="other"`.
pub const MAX_PEER_LABELS: usize = 64;

/// Protocols that get a label of their own in the send counters; frames of
/// further protocols count under `protocol="other"`.
pub const MAX_PROTOCOL_LABELS: usize = 128;

/// The label value that sums what is beyond the label caps.
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

/// Where events were dropped ([`Event::EventsDropped`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum EventQueue {
    /// The queue the behaviour returns to the node's swarm.
    Swarm,
    /// A subscription taken with `Control::events`.
    Subscriber,
}

impl EventQueue {
    fn as_str(self) -> &'static str {
        match self {
            EventQueue::Swarm => "swarm",
            EventQueue::Subscriber => "subscriber",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: &'static str,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendFailureLabel {
    protocol: String,
    error: &'static str,
}

/// The metrics recorded as things happen; the collected ones are read from
/// [`Shared`] at each scrape ([`StateCollector`]).
#[derive(Debug)]
pub(crate) struct Metrics {
    sent_frames: Family<ProtocolLabel, Counter>,
    sent_bytes: Family<ProtocolLabel, Counter>,
    batched_frames: Counter,
    send_failures: Family<SendFailureLabel, Counter>,
    /// Protocols with a label of their own in the send counters.
    labelled_protocols: RwLock<HashSet<String>>,
    borrow_wait: Histogram,
    send_duration: Histogram,
    connections_established: Counter,
    connections_closed: Counter,
    refusals: Family<RefusalLabel, Counter>,
    evictions: Family<ReasonLabel, Counter>,
    dial_failures: Family<ReasonLabel, Counter>,
    redials: Counter,
    required_given_up: Counter,
    stalls: Counter,
    silent: Counter,
    protocol_errors: Counter,
    streams_refused: Family<ReasonLabel, Counter>,
    exchange_failures: Family<ReasonLabel, Counter>,
    gossip_dropped: Family<ReasonLabel, Counter>,
    gossip_slow: Counter,
    graylisted: Counter,
    discovered: Counter,
    events_dropped: Family<QueueLabel, Counter>,
}

impl Metrics {
    /// Registers the recorded metrics under `registry` (already prefixed).
    fn register(registry: &mut Registry) -> Self {
        // 2 µs to ~67 s: past `pool.borrow_timeout` and `pool.send_timeout`'s
        // defaults, so slow sends do not pile up in the last bucket.
        let latency = || Histogram::new(exponential_buckets(0.000_002, 2.0, 26));
        let metrics = Metrics {
            sent_frames: Family::default(),
            sent_bytes: Family::default(),
            send_failures: Family::default(),
            labelled_protocols: RwLock::new(HashSet::new()),
            borrow_wait: latency(),
            send_duration: latency(),
            connections_established: Counter::default(),
            connections_closed: Counter::default(),
            refusals: Family::default(),
            evictions: Family::default(),
            dial_failures: Family::default(),
            redials: Counter::default(),
            required_given_up: Counter::default(),
            stalls: Counter::default(),
            silent: Counter::default(),
            batched_frames: Counter::default(),
            protocol_errors: Counter::default(),
            streams_refused: Family::default(),
            exchange_failures: Family::default(),
            gossip_dropped: Family::default(),
            gossip_slow: Counter::default(),
            graylisted: Counter::default(),
            discovered: Counter::default(),
            events_dropped: Family::default(),
        };
        let m = &metrics;
        registry.register(
            "sent_frames",
            "Frames written and flushed (send returned Ok), per application protocol",
            m.sent_frames.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Bytes of the frames counted by sent_frames (as written: header and payload, compressed if it was)",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        registry.register(
            "send_failures",
            "Sends that returned an error, per protocol and error kind",
            m.send_failures.clone(),
        );
        registry.register_with_unit(
            "borrow_wait",
            "Time a send waited for a stream of its lane",
            Unit::Seconds,
            m.borrow_wait.clone(),
        );
        registry.register_with_unit(
            "send_duration",
            "Time from a send's call to its frame flushed (including its one retry)",
            Unit::Seconds,
            m.send_duration.clone(),
        );
        registry.register(
            "connections_established",
            "Liquid connections confirmed by admission",
            m.connections_established.clone(),
        );
        registry.register(
            "connections_closed",
            "Liquid connections closed",
            m.connections_closed.clone(),
        );
        registry.register(
            "refusals",
            "Connections refused, per reason and admission stage",
            m.refusals.clone(),
        );
        registry.register(
            "evictions",
            "Connected peers disconnected by policy, per reason",
            m.evictions.clone(),
        );
        registry.register(
            "dial_failures",
            "Outgoing dials that failed (or whose connection did not last), per cause",
            m.dial_failures.clone(),
        );
        registry.register(
            "redials_scheduled",
            "Redials of required peers scheduled after a failure",
            m.redials.clone(),
        );
        registry.register(
            "required_peers_given_up",
            "Required peers given up after max_attempts failed dials",
            m.required_given_up.clone(),
        );
        registry.register(
            "frames_batched",
            "Frames written by another sender's write to the same lane, together with its own",
            m.batched_frames.clone(),
        );
        registry.register(
            "connection_stalls",
            "Connections the watchdog closed because writes made no progress",
            m.stalls.clone(),
        );
        registry.register(
            "connections_silent",
            "Connections the liveness check closed: no answered ping and no byte read for ping_interval + ping_timeout",
            m.silent.clone(),
        );
        registry.register(
            "protocol_errors",
            "Inbound frames that broke the wire format (the stream was reset)",
            m.protocol_errors.clone(),
        );
        registry.register(
            "inbound_streams_refused",
            "Inbound streams refused by a cap, per scope",
            m.streams_refused.clone(),
        );
        registry.register(
            "exchange_failures",
            "Protocol-list exchanges that failed, per kind",
            m.exchange_failures.clone(),
        );
        registry.register(
            "gossip_dropped",
            "Reports of gossip not delivered to a topic inbox, per reason",
            m.gossip_dropped.clone(),
        );
        registry.register(
            "gossip_peer_slow_dropped",
            "Gossip messages gossipsub dropped for peers whose send queue was full",
            m.gossip_slow.clone(),
        );
        registry.register(
            "gossip_peers_graylisted",
            "Times a connected peer's gossip score fell below the graylist threshold",
            m.graylisted.clone(),
        );
        registry.register(
            "peers_discovered",
            "Nodes of a served chain found by discovery",
            m.discovered.clone(),
        );
        registry.register(
            "events_dropped",
            "Events dropped because their reader fell behind, per queue (the node's swarm, or a subscription)",
            m.events_dropped.clone(),
        );
        metrics
    }

    /// The label of `protocol` in the send counters.
    fn protocol_label(&self, protocol: &str) -> ProtocolLabel {
        if self.labelled_protocols.read().contains(protocol) {
            return ProtocolLabel {
                protocol: protocol.to_owned(),
            };
        }
        let mut labelled = self.labelled_protocols.write();
        let protocol = if labelled.contains(protocol) || labelled.len() < MAX_PROTOCOL_LABELS {
            labelled.insert(protocol.to_owned());
            protocol
        } else {
            OTHER
        };
        ProtocolLabel {
            protocol: protocol.to_owned(),
        }
    }

    /// A frame of `bytes` bytes was written and flushed for `protocol`.
    pub(crate) fn frame_sent(&self, protocol: &str, bytes: usize) {
        let label = self.protocol_label(protocol);
        self.sent_frames.get_or_create(&label).inc();
        self.sent_bytes.get_or_create(&label).inc_by(bytes as u64);
    }

    /// A frame was written by another sender's write (batched).
    pub(crate) fn frame_batched(&self) {
        self.batched_frames.inc();
    }

    /// A send for `protocol` failed with `error`.
    pub(crate) fn send_failed(&self, protocol: &str, error: &Error) {
        let label = SendFailureLabel {
            protocol: self.protocol_label(protocol).protocol,
            error: error_kind(error),
        };
        self.send_failures.get_or_create(&label).inc();
    }

    /// A send waited `wait` for its stream.
    pub(crate) fn borrowed(&self, wait: Duration) {
        self.borrow_wait.observe(wait.as_secs_f64());
    }

    /// A send took `took` from its call to its frame flushed.
    pub(crate) fn send_took(&self, took: Duration) {
        self.send_duration.observe(took.as_secs_f64());
    }

    /// `count` events were dropped from `queue`.
    pub(crate) fn events_dropped(&self, queue: EventQueue, count: u64) {
        let queue = queue.as_str();
        self.events_dropped
            .get_or_create(&QueueLabel { queue })
            .inc_by(count);
    }

    /// Counts what `event` reports.
    pub(crate) fn record(&self, event: &Event) {
        match event {
            Event::ConnectionEstablished { .. } => {
                self.connections_established.inc();
            }
            Event::ConnectionClosed { .. } => {
                self.connections_closed.inc();
            }
            Event::Refused {
                reason,
                stage,
                count,
                ..
            } => {
                let label = RefusalLabel {
                    reason: reason.kind(),
                    stage: stage.as_str(),
                };
                self.refusals.get_or_create(&label).inc_by(*count);
            }
            Event::Evicted { reason, .. } => {
                let reason = reason.kind();
                self.evictions.get_or_create(&ReasonLabel { reason }).inc();
            }
            Event::DialFailed { cause, .. } => {
                let reason = cause.kind();
                self.dial_failures
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            Event::RedialScheduled { .. } => {
                self.redials.inc();
            }
            Event::RequiredPeerGaveUp { .. } => {
                self.required_given_up.inc();
            }
            Event::ConnectionStalled { .. } => {
                self.stalls.inc();
            }
            Event::ConnectionSilent { .. } => {
                self.silent.inc();
            }
            Event::ProtocolError { .. } => {
                self.protocol_errors.inc();
            }
            Event::StreamRefused { scope, .. } => {
                let reason = scope.as_str();
                self.streams_refused
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            Event::ProtocolExchangeFailed { reason, .. } => {
                let reason = reason.kind();
                self.exchange_failures
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            Event::GossipDropped { reason, .. } => {
                let reason = reason.as_str();
                self.gossip_dropped
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            Event::GossipPeerSlow { dropped, .. } => {
                self.gossip_slow.inc_by(*dropped);
            }
            Event::GossipPeerGraylisted { .. } => {
                self.graylisted.inc();
            }
            Event::PeerDiscovered { .. } => {
                self.discovered.inc();
            }
            _ => {}
        }
    }
}

/// A short name of a send error's kind, for the `error` label.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::NotConnected { .. } => "not_connected",
        Error::Timeout { .. } => "timeout",
        Error::PoolExhausted { .. } => "pool_exhausted",
        Error::Backpressure { .. } => "backpressure",
        Error::Write { .. } => "write",
        Error::PoolClosed { .. } => "pool_closed",
        Error::ConnectionStalled { .. } => "connection_stalled",
        Error::StreamOpen { .. } => "stream_open",
        Error::FrameTooLarge { .. } | Error::FrameTooLargeForPeer { .. } => "frame_too_large",
        Error::ProtocolUnsupported { .. } => "protocol_unsupported",
        Error::InvalidProtocol { .. } => "invalid_protocol",
        Error::ShutDown => "shut_down",
        _ => OTHER,
    }
}

/// Registers the library's metrics in `registry` (under `liquid_`) and returns
/// the recorder for `shared`; the collected ones read `shared` at each scrape
/// while it lives.
pub(crate) fn register(registry: &mut Registry, shared: &Arc<Shared>) -> Arc<Metrics> {
    let registry = registry.sub_registry_with_prefix("liquid");
    let metrics = Arc::new(Metrics::register(registry));
    registry.register_collector(Box::new(StateCollector {
        shared: Arc::downgrade(shared),
    }));
    metrics
}

/// Reads the gauges and counters the library keeps anyway, at scrape time.
#[derive(Debug)]
struct StateCollector {
    shared: Weak<Shared>,
}

/// The pool counters of one peer's connections, summed.
#[derive(Default)]
struct PoolSums {
    connections: u64,
    streams: u64,
    idle: u64,
    borrowed: u64,
    waiters: u64,
    opening: u64,
}

impl PoolSums {
    fn add(&mut self, stats: &PoolStats) {
        self.connections += 1;
        self.streams += stats.current as u64;
        self.idle += stats.idle as u64;
        self.borrowed += stats.borrowed as u64;
        self.waiters += stats.waiters as u64;
        self.opening += stats.opening as u64;
    }

    fn merge(&mut self, other: &PoolSums) {
        self.connections += other.connections;
        self.streams += other.streams;
        self.idle += other.idle;
        self.borrowed += other.borrowed;
        self.waiters += other.waiters;
        self.opening += other.opening;
    }
}

/// Reads one of [`PoolSums`]' figures.
type PoolField = fn(&PoolSums) -> u64;

/// One metric of a collected family: name, help, type, and its rows.
struct Rows<'a, L> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    rows: Vec<(L, u64)>,
}

impl<L: EncodeLabelSet> Rows<'_, L> {
    fn gauge(self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode(encoder, MetricType::Gauge, |value, e| {
            ConstGauge::new(value as i64).encode(e)
        })
    }

    fn counter(self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode(encoder, MetricType::Counter, |value, e| {
            ConstCounter::new(value).encode(e)
        })
    }

    fn encode(
        self,
        encoder: &mut DescriptorEncoder,
        kind: MetricType,
        value: impl Fn(u64, prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        for (labels, v) in &self.rows {
            value(*v, metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// Encodes one metric without labels.
fn scalar(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(metric),
        _ => ConstGauge::new(value as i64).encode(metric),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let control = Control::new(shared);
        let e = &mut encoder;

        // Pools, per peer (bounded), summed over the peer's connections.
        let mut per_peer: BTreeMap<String, PoolSums> = BTreeMap::new();
        let mut other = PoolSums::default();
        let peers = control.connected_peers();
        let mut peer_names: Vec<String> = peers.iter().map(ToString::to_string).collect();
        peer_names.sort();
        peer_names.truncate(MAX_PEER_LABELS);
        let labelled: HashSet<&str> = peer_names.iter().map(String::as_str).collect();
        for peer in &peers {
            let name = peer.to_string();
            let mut sums = PoolSums::default();
            for stats in control.pool_stats(peer) {
                sums.add(&stats);
            }
            if labelled.contains(name.as_str()) {
                per_peer.insert(name, sums);
            } else {
                other.merge(&sums);
            }
        }
        if other.connections > 0 {
            per_peer.insert(OTHER.to_owned(), other);
        }
        let rows = |f: fn(&PoolSums) -> u64| -> Vec<(PeerLabel, u64)> {
            per_peer
                .iter()
                .map(|(peer, sums)| (PeerLabel { peer: peer.clone() }, f(sums)))
                .collect()
        };
        scalar(
            e,
            "connected_peers",
            "Peers with at least one liquid connection",
            MetricType::Gauge,
            peers.len() as u64,
        )?;
        let gauges: [(&str, &str, PoolField); 6] = [
            (
                "pool_connections",
                "Connections to the peer that have pools",
                |s| s.connections,
            ),
            (
                "pool_streams",
                "Open send streams to the peer (idle + borrowed)",
                |s| s.streams,
            ),
            ("pool_idle_streams", "Send streams ready to borrow", |s| {
                s.idle
            }),
            ("pool_borrowed_streams", "Send streams lent out", |s| {
                s.borrowed
            }),
            ("pool_waiters", "Senders waiting for a stream", |s| {
                s.waiters
            }),
            ("pool_opening_streams", "Send streams being opened", |s| {
                s.opening
            }),
        ];
        for (name, help, f) in gauges {
            Rows {
                name,
                help,
                unit: None,
                rows: rows(f),
            }
            .gauge(e)?;
        }

        // Inbound streams.
        scalar(
            e,
            "inbound_streams",
            "Inbound message streams being read",
            MetricType::Gauge,
            control.shared().receive.total() as u64,
        )?;

        // Registered protocols' inboxes.
        let inboxes = control.inbox_stats();
        let per_protocol = |f: &dyn Fn(&crate::InboxStats) -> u64| -> Vec<(ProtocolLabel, u64)> {
            inboxes
                .iter()
                .map(|s| {
                    let label = ProtocolLabel {
                        protocol: s.protocol.clone(),
                    };
                    (label, f(s))
                })
                .collect()
        };
        Rows {
            name: "received_frames",
            help: "Frames received for a registered protocol",
            unit: None,
            rows: per_protocol(&|s| s.received_messages),
        }
        .counter(e)?;
        Rows {
            name: "received",
            help: "Payload bytes of the frames counted by received_frames",
            unit: Some(Unit::Bytes),
            rows: per_protocol(&|s| s.received_bytes),
        }
        .counter(e)?;
        Rows {
            name: "inbox_queued_messages",
            help: "Messages waiting for the application, per protocol",
            unit: None,
            rows: per_protocol(&|s| s.queued_messages as u64),
        }
        .gauge(e)?;
        Rows {
            name: "inbox_queued",
            help: "Payload bytes waiting for the application, per protocol",
            unit: Some(Unit::Bytes),
            rows: per_protocol(&|s| s.queued_bytes as u64),
        }
        .gauge(e)?;
        Rows {
            name: "not_member_frames",
            help: "Frames dropped because their sender is not a member of the protocol",
            unit: None,
            rows: per_protocol(&|s| s.refused_messages),
        }
        .counter(e)?;
        scalar(
            e,
            "unknown_protocol_frames",
            "Frames skipped because no handler is registered for their protocol",
            MetricType::Counter,
            control.shared().unknown_protocol_frames(),
        )?;

        // Gossip topics (bounded by broadcast.max_topics).
        let topics = control.topic_stats();
        let per_topic = |f: &dyn Fn(&crate::TopicStats) -> u64| -> Vec<(TopicLabel, u64)> {
            topics
                .iter()
                .map(|s| {
                    let label = TopicLabel {
                        topic: s.topic.clone(),
                    };
                    (label, f(s))
                })
                .collect()
        };
        Rows {
            name: "topic_peers",
            help: "Connected peers subscribed to the topic",
            unit: None,
            rows: per_topic(&|s| s.peers as u64),
        }
        .gauge(e)?;
        Rows {
            name: "topic_received_messages",
            help: "Gossip messages delivered to the topic's inbox",
            unit: None,
            rows: per_topic(&|s| s.received_messages),
        }
        .counter(e)?;
        Rows {
            name: "topic_received",
            help: "Payload bytes of the gossip messages delivered to the topic's inbox",
            unit: Some(Unit::Bytes),
            rows: per_topic(&|s| s.received_bytes),
        }
        .counter(e)?;
        Rows {
            name: "topic_queued_messages",
            help: "Gossip messages in the topic's inbox",
            unit: None,
            rows: per_topic(&|s| s.queued_messages as u64),
        }
        .gauge(e)?;
        Rows {
            name: "topic_dropped_messages",
            help: "Gossip messages not delivered: inbox full or sender not a member",
            unit: None,
            rows: per_topic(&|s| s.dropped_messages),
        }
        .counter(e)?;
        Rows {
            name: "topic_rejected_messages",
            help: "Gossip messages the application rejected",
            unit: None,
            rows: per_topic(&|s| s.rejected_messages),
        }
        .counter(e)?;

        scalar(
            e,
            "discovery_served_chains",
            "Chains this node serves and looks for peers of",
            MetricType::Gauge,
            control.served_chains().len() as u64,
        )?;
        Ok(())
    }
}
