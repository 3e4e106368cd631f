//! [`Control`]: the send path and the application's handle on the behaviour.
//!
//! `send` picks the least-loaded connection of the peer, borrows a pooled stream,
//! writes one frame, flushes and returns the stream. A failed write drops that
//! stream and is retried once on another before the error is returned. Messages
//! sent with `send` may overtake each other (they travel on different streams); an
//! [`ExclusiveStream`] keeps one stream for a burst whose order matters.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId, swarm::ConnectionId};
use liquid_p2p_core::{
    BlacklistEntry, BroadcastFailure, EncodedFrame, Error, PoolStats, PooledStream,
    ProtocolPriority, ReceiveCounts,
};

use crate::{
    broadcast::{BroadcastHandle, MessageId, TopicInbox, TopicStats},
    discovery::DiscoveryHandle,
    events::Events,
    receiver::{Inbox, InboxStats, validate_protocol},
    shared::{Request, Shared, SwarmOpener},
    watchdog::NoProgress,
};

/// Handle for sending, registering protocols and observing the behaviour. Cheap to
/// clone; every clone drives the same behaviour.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Sends one message to `peer` for `protocol`.
    ///
    /// `Ok` means the whole frame was written and flushed to a healthy stream. No
    /// order is kept between messages sent by separate calls; use
    /// [`borrow_stream`](Self::borrow_stream) for ordered bursts.
    ///
    /// Errors: `FrameTooLarge`, `FrameTooLargeForPeer` (beyond the limit the peer
    /// stated in the protocol exchange) or `InvalidProtocol` before anything is
    /// sent;
    /// `NotConnected`; `Timeout` / `PoolExhausted` when no stream of the
    /// protocol's lane frees up in time; `Backpressure` when the peer takes no
    /// byte of the message for `pool.send_timeout` (not retried);
    /// `Write`, `PoolClosed` or `ConnectionStalled` when the retry failed too;
    /// `ShutDown`.
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let payload = payload.as_ref();
        self.shared.check_message(peer, protocol, payload)?;
        let priority = self.shared.registry.priority(protocol);
        let frame = EncodedFrame::new(protocol, payload, self.shared.config.compress_min_size);
        self.send_frame(peer, protocol, priority, &frame).await
    }

    /// Sends one message for `protocol` to each of `peers` at once, the frame
    /// encoded (and compressed) once for all; one result per peer, in the order
    /// of `peers` (a peer named twice gets it twice). Each result is what
    /// [`send`](Self::send) would have returned for that peer: a slow or failing
    /// peer holds up only its own result.
    pub async fn send_to_many(
        &self,
        peers: &[PeerId],
        protocol: &str,
        payload: impl AsRef<[u8]>,
    ) -> Vec<(PeerId, Result<(), Error>)> {
        let payload = payload.as_ref();
        let priority = self.shared.registry.priority(protocol);
        let frame = EncodedFrame::new(protocol, payload, self.shared.config.compress_min_size);
        let sends = peers.iter().map(|&peer| {
            let frame = &frame;
            async move {
                let result = match self.shared.check_message(peer, protocol, payload) {
                    Ok(()) => self.send_frame(peer, protocol, priority, frame).await,
                    Err(e) => Err(e),
                };
                (peer, result)
            }
        });
        futures::future::join_all(sends).await
    }

    /// [`send_to_many`](Self::send_to_many) to every connected peer known to
    /// support `protocol` (from the protocol exchange; a peer whose list is
    /// unknown, such as a stock libp2p node, is left out). No peer: no result.
    pub async fn send_to_all(
        &self,
        protocol: &str,
        payload: impl AsRef<[u8]>,
    ) -> Vec<(PeerId, Result<(), Error>)> {
        let peers = self.peers_supporting(&[protocol]);
        self.send_to_many(&peers, protocol, payload).await
    }

    /// Writes an encoded frame to `peer` on a stream of the protocol's lane,
    /// retried once on another stream (see [`send`](Self::send)).
    async fn send_frame(
        &self,
        peer: PeerId,
        protocol: &str,
        priority: ProtocolPriority,
        frame: &EncodedFrame<'_>,
    ) -> Result<(), Error> {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = async {
                #[cfg(feature = "metrics")]
                let borrow_started = std::time::Instant::now();
                let mut stream = self.borrow_pooled(peer, Some(protocol), priority).await?;
                #[cfg(feature = "metrics")]
                if let Some(metrics) = self.shared.metrics() {
                    metrics.borrowed(borrow_started.elapsed());
                }
                self.shared
                    .write_message(&mut stream, peer, protocol, priority, frame)
                    .await
            }
            .await;
            match result {
                Err(e) if attempt == 1 && is_retryable(&e) => {
                    tracing::debug!(%peer, error = %e, "send failed; retrying on another stream");
                }
                other => break other,
            }
        };
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.shared.metrics() {
            match &result {
                Ok(()) => metrics.send_took(started.elapsed()),
                Err(e) => metrics.send_failed(protocol, e),
            }
        }
        result
    }

    /// Borrows one stream to `peer` for exclusive use: messages written through it
    /// arrive in the order written. Dropping it returns the stream to its pool.
    pub async fn borrow_stream(&self, peer: PeerId) -> Result<ExclusiveStream, Error> {
        self.borrow_stream_with_priority(peer, ProtocolPriority::Normal)
            .await
    }

    /// [`borrow_stream`](Self::borrow_stream), waiting in line for a stream
    /// with `priority` when none is free. The frames written through it go on
    /// the wire with their own protocol's priority.
    pub async fn borrow_stream_with_priority(
        &self,
        peer: PeerId,
        priority: ProtocolPriority,
    ) -> Result<ExclusiveStream, Error> {
        let stream = self.borrow_pooled(peer, None, priority).await?;
        Ok(ExclusiveStream {
            stream,
            shared: Arc::clone(&self.shared),
            peer,
            broken: false,
        })
    }

    /// Registers a local protocol with `Normal` send priority; its messages
    /// arrive in the returned [`Inbox`].
    pub fn register_protocol(&self, protocol: impl Into<String>) -> Result<Inbox, Error> {
        self.register_protocol_with_priority(protocol, ProtocolPriority::Normal)
    }

    /// Registers a local protocol whose messages this host sends with
    /// `priority` (see [`ProtocolPriority`]); its messages arrive in the returned
    /// [`Inbox`].
    ///
    /// Errors: `InvalidProtocol`, `ProtocolAlreadyRegistered`, `ShutDown`.
    pub fn register_protocol_with_priority(
        &self,
        protocol: impl Into<String>,
        priority: ProtocolPriority,
    ) -> Result<Inbox, Error> {
        self.shared.lifecycle.check_open()?;
        let inbox = self.shared.registry.register(protocol.into(), priority)?;
        self.shared.protocols_changed.notify_one();
        Ok(inbox)
    }

    /// Changes the send priority of a registered protocol. Sends that start
    /// afterwards use it; a frame already being written keeps the old one.
    ///
    /// Errors: `ProtocolNotRegistered`, `ShutDown`.
    pub fn set_priority(&self, protocol: &str, priority: ProtocolPriority) -> Result<(), Error> {
        self.shared.lifecycle.check_open()?;
        self.shared.registry.set_priority(protocol, priority)
    }

    /// The send priority of `protocol`: the one it is registered with, `Normal`
    /// for a protocol not registered here.
    pub fn priority(&self, protocol: &str) -> ProtocolPriority {
        self.shared.registry.priority(protocol)
    }

    /// Unregisters a local protocol; later frames for it are counted as unknown.
    pub fn unregister_protocol(&self, protocol: &str) -> Result<(), Error> {
        self.shared.lifecycle.check_open()?;
        self.shared.registry.unregister(protocol)?;
        self.shared.protocols_changed.notify_one();
        Ok(())
    }

    /// Tasks the library runs for this behaviour right now: stream readers,
    /// protocol exchanges, stream opens, refusal reports. For monitoring; 0 once
    /// a host has shut down.
    pub fn running_tasks(&self) -> usize {
        self.shared.lifecycle.running_tasks()
    }

    /// Local protocols, sorted.
    pub fn protocols(&self) -> Vec<String> {
        self.shared.registry.protocols()
    }

    /// Whether `peer` is known to support `protocol` (false if its list is unknown).
    pub fn is_supported(&self, peer: &PeerId, protocol: &str) -> bool {
        self.shared.book.read().is_supported(peer, protocol)
    }

    /// `peer`'s protocols, sorted, if its list is known.
    pub fn peer_protocols(&self, peer: &PeerId) -> Option<Vec<String>> {
        self.shared.book.read().protocols(peer)
    }

    /// Connected peers known to support every protocol in `protocols`.
    pub fn peers_supporting(&self, protocols: &[&str]) -> Vec<PeerId> {
        self.shared.book.read().peers_supporting(protocols)
    }

    /// Counters of each connection to `peer`, one entry per connection (empty if
    /// not connected): all its pools (reserve, shared lane, protocol lanes)
    /// summed; `max` is the connection's stream budget (`pool.max_size`).
    pub fn pool_stats(&self, peer: &PeerId) -> Vec<PoolStats> {
        self.shared.pools.connection_stats(peer)
    }

    /// Counters of every registered protocol's inbox, sorted by protocol: messages
    /// and bytes received, and those waiting for the application.
    pub fn inbox_stats(&self) -> Vec<InboxStats> {
        self.shared.registry.stats()
    }

    /// Counters of every pool to `peer`: for each connection its reserve, its
    /// shared lane and the lane of each protocol sent on it (see [`Lane`]).
    ///
    /// [`Lane`]: crate::Lane
    pub fn lane_stats(&self, peer: &PeerId) -> Vec<PoolStats> {
        self.shared.pools.stats(peer)
    }

    /// Inbound stream counts of `peer`.
    pub fn receive_counts(&self, peer: &PeerId) -> ReceiveCounts {
        self.shared.receive.counts(peer)
    }

    /// Peers with at least one connection.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.shared.pools.peers()
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Remembers an address of `peer`, used for extra connections and dials by peer id.
    pub async fn add_address(&self, peer: PeerId, address: Multiaddr) -> Result<(), Error> {
        self.shared
            .requests
            .send(Request::AddAddress { peer, address })
            .await
            .map_err(|_| Error::ShutDown)
    }

    /// Blacklists a peer id, IP or IP:port (see [`BlacklistEntry`] for the forms).
    /// Live connections that match are closed; later ones are refused. Returns
    /// whether the entry is new.
    pub async fn blacklist_add(&self, entry: BlacklistEntry) -> Result<bool, Error> {
        self.shared.lifecycle.check_open()?;
        let added = self.shared.blacklist.write().add(entry)?;
        if added {
            self.enforce_policy().await?;
        }
        Ok(added)
    }

    /// Removes an entry from the blacklist; returns whether it was listed.
    pub fn blacklist_remove(&self, entry: &BlacklistEntry) -> bool {
        self.shared.blacklist.write().remove(entry)
    }

    /// The blacklist's entries.
    pub fn blacklist(&self) -> Vec<BlacklistEntry> {
        self.shared.blacklist.read().entries()
    }

    /// Makes `peers` the only peers that may connect (`None`: everyone may
    /// again). Connected peers it does not list are disconnected at once
    /// (`Evicted { reason: NotAllowed }`); later ones are refused right after
    /// the handshake (and told `NotAllowed`), and never dialled, required or not.
    ///
    /// # Errors
    ///
    /// `AllowListFull` beyond `max_blacklist_entries` peers (nothing changes);
    /// `ShutDown`.
    pub async fn set_allow_list(
        &self,
        peers: Option<impl IntoIterator<Item = PeerId>>,
    ) -> Result<(), Error> {
        self.shared.lifecycle.check_open()?;
        self.shared.allow_list.write().set(peers)?;
        self.enforce_policy().await
    }

    /// Adds `peer` to the allow-list; returns whether it is new. An inactive
    /// list becomes active with this one peer, so every other connected peer is
    /// disconnected.
    ///
    /// # Errors
    ///
    /// `AllowListFull`; `ShutDown`.
    pub async fn allow_peer(&self, peer: PeerId) -> Result<bool, Error> {
        self.shared.lifecycle.check_open()?;
        let (was_active, added) = {
            let mut list = self.shared.allow_list.write();
            (list.is_active(), list.add(peer)?)
        };
        if !was_active {
            self.enforce_policy().await?;
        }
        Ok(added)
    }

    /// Removes `peer` from the allow-list and disconnects it; returns whether it
    /// was listed. The list stays active (empty, it admits nobody).
    ///
    /// # Errors
    ///
    /// `ShutDown`.
    pub async fn disallow_peer(&self, peer: &PeerId) -> Result<bool, Error> {
        self.shared.lifecycle.check_open()?;
        let removed = self.shared.allow_list.write().remove(peer);
        if removed {
            self.enforce_policy().await?;
        }
        Ok(removed)
    }

    /// Makes `members` the only peers whose messages of the registered
    /// `protocol` are taken (`None`: everyone's again); a frame from anyone else
    /// is dropped, counted (`InboxStats::refused_messages`) and reported
    /// (`Event::NotMember`). Takes effect for the next frame; unregistering the
    /// protocol forgets its members.
    ///
    /// # Errors
    ///
    /// `ProtocolNotRegistered`.
    pub fn set_protocol_members(
        &self,
        protocol: &str,
        members: Option<impl IntoIterator<Item = PeerId>>,
    ) -> Result<(), Error> {
        self.shared
            .registry
            .set_members(protocol, members.map(|m| m.into_iter().collect()))
    }

    /// The members of a registered protocol, sorted, if it has any.
    pub fn protocol_members(&self, protocol: &str) -> Option<Vec<PeerId>> {
        self.shared.registry.members(protocol)
    }

    /// The allow-list's peers, sorted; `None` when it is inactive (everyone may
    /// connect).
    pub fn allow_list(&self) -> Option<Vec<PeerId>> {
        self.shared.allow_list.read().peers()
    }

    async fn enforce_policy(&self) -> Result<(), Error> {
        self.shared
            .requests
            .send(Request::EnforcePolicy)
            .await
            .map_err(|_| Error::ShutDown)
    }

    fn broadcast(&self, topic: &str) -> Result<&BroadcastHandle, Error> {
        self.shared.lifecycle.check_open()?;
        self.shared.broadcast.get().ok_or_else(|| Error::Broadcast {
            topic: topic.to_owned(),
            reason: BroadcastFailure::Disabled,
        })
    }

    /// Subscribes to a gossip topic (see [`chain_topic`](crate::chain_topic) for
    /// naming). Every message that arrives must be judged with
    /// [`GossipMessage::accept`](crate::GossipMessage::accept), `reject` or
    /// `ignore`; only accepted ones are forwarded to other peers.
    ///
    /// # Errors
    ///
    /// `Broadcast` with `Disabled`, `InvalidTopic`, `AlreadySubscribed` or
    /// `TooManyTopics`; `ShutDown`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelled after the swarm task took the call, the node
    /// is subscribed and the inbox lost; `unsubscribe` undoes it.
    pub async fn subscribe(&self, topic: impl Into<String>) -> Result<TopicInbox, Error> {
        let topic = topic.into();
        self.broadcast(&topic)?.subscribe(topic).await
    }

    /// Unsubscribes from a topic; its inbox ends once drained.
    ///
    /// # Errors
    ///
    /// `Broadcast` with `Disabled` or `NotSubscribed`; `ShutDown`.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), Error> {
        self.broadcast(topic)?.unsubscribe(topic.to_owned()).await
    }

    /// Publishes `payload` on `topic` (subscribed or not) to the topic's peers.
    /// Returns the message id: a hash of topic and payload.
    ///
    /// # Errors
    ///
    /// `Broadcast` with `Disabled`, `InvalidTopic`, `TooLarge` (beyond
    /// `max_frame_size`), `Duplicate` (this payload was published on the topic
    /// before), `NoPeers` (no connected peer subscribes to the topic) or
    /// `QueuesFull`; `ShutDown`.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<MessageId, Error> {
        self.broadcast(topic)?
            .publish(topic.to_owned(), payload.into())
            .await
    }

    /// Counters of every subscribed topic, sorted by topic (empty without
    /// broadcast).
    pub fn topic_stats(&self) -> Vec<TopicStats> {
        self.shared
            .broadcast
            .get()
            .map(BroadcastHandle::stats)
            .unwrap_or_default()
    }

    /// Makes `members` the only peers whose gossip on `topic` is taken: a
    /// message authored or forwarded by anyone else is rejected (lowering the
    /// forwarder's score) and reported ([`Event::GossipDropped`](crate::Event)).
    /// `None` takes gossip from everyone again. Takes effect for the next
    /// message.
    ///
    /// # Errors
    ///
    /// `Broadcast` with `Disabled` or `InvalidTopic`; `ShutDown`.
    pub fn set_topic_members(
        &self,
        topic: &str,
        members: Option<impl IntoIterator<Item = PeerId>>,
    ) -> Result<(), Error> {
        let handle = self.broadcast(topic)?;
        crate::broadcast::validate_topic(topic)?;
        handle.set_members(topic, members.map(|m| m.into_iter().collect()));
        Ok(())
    }

    /// The members of `topic`, if it has any (see
    /// [`set_topic_members`](Self::set_topic_members)).
    pub fn topic_members(&self, topic: &str) -> Option<Vec<PeerId>> {
        self.shared.broadcast.get()?.members(topic)
    }

    /// Gossipsub's score of `peer` (`None` if it is not known to gossipsub).
    ///
    /// # Errors
    ///
    /// `Broadcast` with `Disabled`; `ShutDown`.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, Error> {
        self.broadcast("")?.peer_score(peer).await
    }

    fn discovery(&self) -> Result<&DiscoveryHandle, Error> {
        self.shared.lifecycle.check_open()?;
        self.shared
            .discovery
            .get()
            .ok_or_else(|| Error::InvalidConfig {
                reason: "discovery is not enabled on this node".into(),
            })
    }

    /// Serves `chain`: announces this node as one of its nodes and looks for
    /// the others while fewer than `discovery.min_peers` peers are connected.
    /// Returns whether it was new.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` without discovery, for an empty or over-long chain name,
    /// or beyond 64 chains; `ShutDown`.
    pub async fn serve_chain(&self, chain: impl Into<String>) -> Result<bool, Error> {
        self.discovery()?.serve(chain.into()).await
    }

    /// Stops announcing `chain` and looking for its nodes; connections stay.
    /// Returns whether it was served.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` without discovery; `ShutDown`.
    pub async fn stop_serving_chain(&self, chain: &str) -> Result<bool, Error> {
        self.discovery()?.stop_serving(chain).await
    }

    /// The chains this node serves, sorted (empty without discovery).
    pub fn served_chains(&self) -> Vec<String> {
        self.shared
            .discovery
            .get()
            .map(DiscoveryHandle::chains)
            .unwrap_or_default()
    }

    /// Adds a seed for discovery (its address ends in `/p2p/<peer id>`): it is
    /// dialled and put in the routing table. Returns its peer id.
    ///
    /// # Errors
    ///
    /// `MissingPeerId`; `InvalidConfig` without discovery; `ShutDown`.
    pub async fn add_seed(&self, address: Multiaddr) -> Result<PeerId, Error> {
        self.discovery()?.add_seed(address).await
    }

    /// A stream of `protocol`'s lane, or of the shared lane for an ordered burst
    /// (`None`).
    async fn borrow_pooled(
        &self,
        peer: PeerId,
        protocol: Option<&str>,
        priority: ProtocolPriority,
    ) -> Result<PooledStream<SwarmOpener>, Error> {
        self.shared.lifecycle.check_open()?;
        let pools = &self.shared.pools;
        let best = match protocol {
            Some(protocol) => pools.lane(&peer, protocol),
            None => pools.best_pool(&peer),
        }
        .ok_or(Error::NotConnected { peer })?;
        if best.wants_connection {
            // Full queue: a request is already on its way.
            let _ = self
                .shared
                .requests
                .try_send(Request::AddConnection { peer });
        }
        best.pool.borrow_with(priority).await
    }
}

/// Errors after which another stream may succeed.
fn is_retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Write { .. }
            | Error::PoolClosed { .. }
            | Error::ConnectionStalled { .. }
            | Error::StreamOpen { .. }
    )
}

impl Shared {
    /// Rejects a message that may not be sent, before anything touches the network
    /// (counted as a send failure, like those after it).
    fn check_message(&self, peer: PeerId, protocol: &str, payload: &[u8]) -> Result<(), Error> {
        let checked = self.message_allowed(peer, protocol, payload);
        #[cfg(feature = "metrics")]
        if let (Some(metrics), Err(e)) = (self.metrics(), &checked) {
            metrics.send_failed(protocol, e);
        }
        checked
    }

    fn message_allowed(&self, peer: PeerId, protocol: &str, payload: &[u8]) -> Result<(), Error> {
        self.lifecycle.check_open()?;
        validate_protocol(protocol)?;
        let max = self.config.max_frame_size;
        if payload.len() > max {
            return Err(Error::FrameTooLarge {
                size: payload.len(),
                max,
            });
        }
        let book = self.book.read();
        if book.is_known_unsupported(&peer, protocol) {
            return Err(Error::ProtocolUnsupported {
                peer,
                protocol: protocol.to_owned(),
            });
        }
        if let Some(max) = book.limits(&peer).max_frame_size
            && payload.len() > max
        {
            return Err(Error::FrameTooLargeForPeer {
                peer,
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Writes one frame; on any failure (or cancellation) the stream is discarded.
    pub(crate) async fn write_message(
        &self,
        stream: &mut PooledStream<SwarmOpener>,
        peer: PeerId,
        protocol: &str,
        priority: ProtocolPriority,
        frame: &EncodedFrame<'_>,
    ) -> Result<(), Error> {
        let mut write = stream.begin_write();
        let (io, pool) = write.stream_and_pool();
        // Cloned only when the stream writes for another pool than last time.
        io.follow(pool.progress());
        io.set_priority(priority);
        let meter = Arc::clone(io.meter());
        let _in_flight = self.lifecycle.write_started();
        // The write first: it usually completes at once, and the close watch is
        // then never polled (polling it registers with a lock all writers of the
        // connection share).
        tokio::select! {
            biased;
            r = frame.write_to(io) => {
                io.frame_written();
                if let Err(e) = r {
                    // Cut short by our own close of the connection (the watchdog's,
                    // or its pool's): say that, not the muxer's "connection is
                    // closed", whichever of the two the select saw first.
                    if meter.closed().is_cancelled() {
                        return Err(meter.close_error());
                    }
                    if let Some(NoProgress { after }) = NoProgress::of(&e) {
                        return Err(Error::Backpressure {
                            peer,
                            protocol: protocol.to_owned(),
                            after,
                        });
                    }
                    return Err(Error::write(peer, e));
                }
            }
            _ = meter.closed().cancelled() => return Err(meter.close_error()),
        }
        write.finish();
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics() {
            metrics.frame_sent(protocol, frame.len());
        }
        Ok(())
    }
}

/// A pooled stream held for an ordered burst. Messages sent through it arrive in
/// order. Dropping it returns the stream to the pool (or discards it after a
/// failed write).
pub struct ExclusiveStream {
    stream: PooledStream<SwarmOpener>,
    shared: Arc<Shared>,
    peer: PeerId,
    broken: bool,
}

impl std::fmt::Debug for ExclusiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExclusiveStream")
            .field("peer", &self.peer)
            .field("connection", &self.connection())
            .field("broken", &self.broken)
            .finish()
    }
}

impl std::fmt::Debug for SwarmOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmOpener").finish_non_exhaustive()
    }
}

impl ExclusiveStream {
    /// Sends one message on this stream. After an error the stream is unusable
    /// and every later call fails.
    pub async fn send(&mut self, protocol: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        let payload = payload.as_ref();
        self.shared.check_message(self.peer, protocol, payload)?;
        let meter = self.stream.get().meter();
        if meter.closed().is_cancelled() {
            return Err(meter.close_error());
        }
        if self.broken {
            return Err(Error::write(
                self.peer,
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "an earlier write on this exclusive stream failed",
                ),
            ));
        }
        let priority = self.shared.registry.priority(protocol);
        let frame = EncodedFrame::new(protocol, payload, self.shared.config.compress_min_size);
        // Broken until the frame is whole: a send dropped mid-write leaves part of
        // a frame on the stream, and nothing may follow it.
        self.broken = true;
        let result = self
            .shared
            .write_message(&mut self.stream, self.peer, protocol, priority, &frame)
            .await;
        #[cfg(feature = "metrics")]
        if let (Some(metrics), Err(e)) = (self.shared.metrics(), &result) {
            metrics.send_failed(protocol, e);
        }
        self.broken = result.is_err();
        result
    }

    /// The peer this stream goes to.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The connection this stream belongs to.
    pub fn connection(&self) -> ConnectionId {
        self.stream.pool().connection()
    }
}
