//! [`Control`]: the send path and the application's handle on the behaviour.
//!
//! `send` picks the least-loaded connection of the peer, borrows a pooled stream,
//! writes one frame, flushes and returns the stream. A failed write drops that
//! stream and is retried once on another before the error is returned. Small
//! frames of concurrent senders to one lane share writes: a sender that finds
//! its lane being written to queues its frame in the lane's `FrameBatcher`, and
//! the writing sender writes everything queued in one go; a write carrying
//! other senders' frames runs as a task of its own, so that dropping one `send`
//! never cuts another's frame short. Messages
//! sent with `send` may overtake each other (they travel on different streams); an
//! [`ExclusiveStream`] keeps one stream for a burst whose order matters.

use std::sync::Arc;

use futures::AsyncWriteExt;
use libp2p::{Multiaddr, PeerId, swarm::ConnectionId};
use liquid_p2p_core::{
    Batch, BatchFailure, BlacklistEntry, BroadcastFailure, EncodedFrame, Error, PoolStats,
    PooledStream, ProtocolPriority, ReceiveCounts, SendStreamPool, Ticket, Turn,
};

use crate::{
    broadcast::{BroadcastHandle, MessageId, TopicInbox, TopicStats},
    discovery::DiscoveryHandle,
    events::Events,
    receiver::{Inbox, InboxStats, validate_protocol},
    shared::{Request, Shared, SwarmOpener},
    watchdog::{MeteredStream, NoProgress},
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
    /// The frame goes on a stream of `protocol`'s lane on the peer's least-loaded
    /// connection, borrowed from its pool (waiting up to `pool.borrow_timeout`
    /// when all are busy, in line by the protocol's [`ProtocolPriority`]), and
    /// the stream goes back to the pool once the frame is whole. A failed write
    /// discards its stream and is retried once on another stream.
    ///
    /// Small frames (up to a quarter of `pool.batch_bytes`, 16 KiB by default)
    /// of concurrent senders share writes on yamux (TCP) connections: a frame
    /// whose lane is being written to by another `send` of the same priority
    /// is queued, and the sender writing takes every frame queued at that
    /// moment into one write and one flush (see
    /// [`FrameBatcher`](liquid_p2p_core::FrameBatcher)). Nothing waits for
    /// more frames to come, so a lone sender writes at once. `Ok` still means
    /// the write holding this frame was flushed.
    ///
    /// # Errors
    ///
    /// Before anything is sent:
    /// - [`Error::ShutDown`]: the host (or the behaviour) has shut down.
    /// - [`Error::InvalidProtocol`]: `protocol` is empty or longer than 256 bytes.
    /// - [`Error::FrameTooLarge`]: the payload exceeds this host's
    ///   `max_frame_size`.
    /// - [`Error::ProtocolUnsupported`]: the peer's protocol list (from the
    ///   protocol exchange) is known and lacks `protocol`.
    /// - [`Error::FrameTooLargeForPeer`]: the payload exceeds the
    ///   `max_frame_size` the peer stated in the protocol exchange (known from
    ///   [`Event::PeerConnected`](crate::Event::PeerConnected) on; before, the
    ///   peer's receiver resets the stream of a frame too large for it).
    /// - [`Error::NotConnected`]: `peer` has no connection.
    ///
    /// While waiting for a stream:
    /// - [`Error::Timeout`]: no stream of the lane came free within
    ///   `pool.borrow_timeout`.
    /// - [`Error::PoolExhausted`]: `pool.max_waiters` borrowers already wait on
    ///   that connection's lane.
    ///
    /// While writing:
    /// - [`Error::Backpressure`]: the peer took no byte of the message for
    ///   `pool.send_timeout` (its application is not reading `protocol`); the
    ///   stream is reset and the message is not retried.
    /// - [`Error::Write`], [`Error::PoolClosed`], [`Error::ConnectionStalled`]
    ///   or [`Error::StreamOpen`]: the stream or its connection failed, and so did
    ///   the one retry (whose own error, [`Error::NotConnected`] included, is
    ///   the one returned). A write that fails after the frame's last byte was
    ///   handed to the connection may still have reached the peer, so in that
    ///   rare case the retry can deliver the message twice. In a shared write,
    ///   a frame that was already whole in the stream when the write failed is
    ///   not retried: the error is returned, and the message may have arrived.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes cancels this message only.
    /// Dropped while waiting for a stream, or while its frame waits for another
    /// sender's write, it gives up its place in line and nothing was written (a
    /// stream handed to it in that instant goes back to the pool, or on to the
    /// next sender). Once another sender's write has taken its frame, or once
    /// its own write carries other senders' frames, the write goes on without
    /// it (in a task of its own), and the message is sent. Dropped mid-write of
    /// its frame alone, the stream is discarded instead
    /// of going back to the pool: the frame may be partly written, and the
    /// receiver drops that partial frame with its stream; every other message
    /// (sent before on that stream, or on other streams) is unaffected.
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
    ///
    /// ```
    /// # use liquid_p2p::{Error, Host};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Error> {
    /// # let addr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    /// # let (a, b) = (Host::builder().listen_on(addr).build().await?, Host::builder().build().await?);
    /// # let _inbox = a.control().register_protocol("/chain1/votes/1")?;
    /// # let a_id = b.dial(a.listen_addrs()[0].clone()).await?;
    /// let results = b.control().send_to_many(&[a_id], "/chain1/votes/1", b"vote").await;
    /// for (peer, result) in results {
    ///     if let Err(e) = result {
    ///         eprintln!("{peer} missed the vote: {e}");
    ///     }
    /// }
    /// # b.shutdown().await;
    /// # a.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The call itself does not fail: each peer's result carries the errors
    /// [`send`](Self::send) lists, for that peer alone.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels every send not yet finished, each as
    /// dropping [`send`](Self::send) would: a partly written frame is lost with
    /// its stream, nothing else is. Peers whose send had already completed got
    /// the message; which ones is not reported.
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
    ///
    /// A peer is known to support a protocol once its exchange is done, which
    /// [`Event::PeerConnected`](crate::Event::PeerConnected) announces; a peer
    /// connected a moment ago may not be in the list yet.
    ///
    /// # Errors
    ///
    /// As [`send_to_many`](Self::send_to_many): none of its own, one result per
    /// peer.
    ///
    /// # Cancel safety
    ///
    /// As [`send_to_many`](Self::send_to_many).
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
            match self.send_once(peer, protocol, priority, frame).await {
                Err(failure) if attempt == 1 && failure.retry => {
                    tracing::debug!(%peer, error = %failure.error, "send failed; retrying on another stream");
                }
                other => break other.map_err(|failure| failure.error),
            }
        };
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.shared.metrics() {
            match &result {
                Ok(()) => {
                    metrics.frame_sent(protocol, frame.len());
                    metrics.send_took(started.elapsed());
                }
                Err(e) => metrics.send_failed(protocol, e),
            }
        }
        result
    }

    /// One attempt at a send: the frame joins its lane's batch when it can (see
    /// [`FrameBatcher`](liquid_p2p_core::FrameBatcher)), else it is written on
    /// a stream of its own.
    async fn send_once(
        &self,
        peer: PeerId,
        protocol: &str,
        priority: ProtocolPriority,
        frame: &EncodedFrame<'_>,
    ) -> Result<(), SendFailure> {
        let pool = self.pick_pool(peer, Some(protocol))?;
        let ticket = frame
            .contiguous()
            .and_then(|bytes| pool.batcher().join(bytes, priority));
        match ticket {
            Some(ticket) => self.send_batched(&pool, ticket, protocol, priority).await,
            // Boxed, as a lead is (see `send_batched`).
            None => Box::pin(self.send_alone(&pool, peer, protocol, priority, frame)).await,
        }
    }

    /// A frame written on a stream of its own.
    async fn send_alone(
        &self,
        pool: &Arc<SendStreamPool<SwarmOpener>>,
        peer: PeerId,
        protocol: &str,
        priority: ProtocolPriority,
        frame: &EncodedFrame<'_>,
    ) -> Result<(), SendFailure> {
        let mut stream = self.borrow_from(pool, priority).await?;
        self.shared
            .write_message(&mut stream, peer, protocol, priority, frame)
            .await
            .map_err(SendFailure::from)
    }

    /// A frame queued in its lane's batcher: waits for the sender writing it,
    /// or leads, writing everything queued in one write.
    async fn send_batched(
        &self,
        pool: &Arc<SendStreamPool<SwarmOpener>>,
        mut ticket: Ticket<PooledStream<SwarmOpener>>,
        protocol: &str,
        priority: ProtocolPriority,
    ) -> Result<(), SendFailure> {
        let handed = match ticket.wait().await {
            Turn::Sent => {
                #[cfg(feature = "metrics")]
                if let Some(metrics) = self.shared.metrics() {
                    metrics.frame_batched();
                }
                return Ok(());
            }
            Turn::Failed(failure) => return Err(SendFailure::batched(failure, protocol)),
            Turn::Lead(stream) => stream,
        };
        // Boxed: a sender that waits for another's write (the usual case under
        // load) then carries a small future, not the write's.
        Box::pin(self.lead(pool, ticket, handed, protocol, priority)).await
    }

    /// The lead of a batch: writes what is queued on the stream handed on, or
    /// on one of our own (dropping the ticket on an error passes the lead on
    /// to the next sender).
    async fn lead(
        &self,
        pool: &Arc<SendStreamPool<SwarmOpener>>,
        mut ticket: Ticket<PooledStream<SwarmOpener>>,
        handed: Option<PooledStream<SwarmOpener>>,
        protocol: &str,
        priority: ProtocolPriority,
    ) -> Result<(), SendFailure> {
        let mut stream = match handed {
            Some(stream) => stream,
            None => self.borrow_from(pool, priority).await?,
        };
        let mut batch = ticket.take();
        if batch.frames() == 1 {
            // Our frame alone: written here, where dropping this send cuts
            // short nobody else's.
            let written = self
                .shared
                .write_batch(&mut stream, protocol, priority, &mut batch)
                .await;
            return lead_done(ticket, batch, stream, written)
                .map_err(|failure| SendFailure::batched(*failure, protocol));
        }
        // Other senders' frames ride along: their write must not end with this
        // send if it is dropped, so it runs as a task of its own.
        let (done, result) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let leader = protocol.to_owned();
        self.shared
            .lifecycle
            .spawn(tracing::Span::current(), async move {
                let written = shared
                    .write_batch(&mut stream, &leader, priority, &mut batch)
                    .await;
                let _ = done.send(lead_done(ticket, batch, stream, written));
            });
        match result.await {
            Ok(own) => own.map_err(|failure| SendFailure::batched(*failure, protocol)),
            // The runtime dropped the task (it is shutting down): the batch's
            // other senders were told the write was cut short, and so are we.
            Err(_) => Err(SendFailure {
                error: Error::write(
                    pool.peer(),
                    std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the write of this message's batch was stopped",
                    ),
                ),
                retry: false,
            }),
        }
    }

    /// Borrows one stream to `peer` for exclusive use: messages written through it
    /// arrive in the order written. Dropping it returns the stream to its pool.
    ///
    /// The stream comes from the shared lane of the peer's least-loaded
    /// connection and may carry frames of several protocols. Hold it only for
    /// the burst: while it is held, no other sender can use it.
    ///
    /// ```
    /// use liquid_p2p::{Error, Host};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Error> {
    /// let a = Host::builder().listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).build().await?;
    /// let b = Host::builder().build().await?;
    /// let mut blocks = a.control().register_protocol("/chain1/sync/1")?;
    /// let a_id = b.dial(a.listen_addrs()[0].clone()).await?;
    ///
    /// // Three blocks that must arrive in order: one stream for all three.
    /// let mut stream = b.control().borrow_stream(a_id).await?;
    /// for height in 1..=3u32 {
    ///     stream.send("/chain1/sync/1", height.to_be_bytes()).await?;
    /// }
    /// drop(stream); // back to the pool
    ///
    /// for height in 1..=3u32 {
    ///     let block = blocks.recv().await.expect("delivered");
    ///     assert_eq!(block.payload[..], height.to_be_bytes());
    /// }
    /// # b.shutdown().await;
    /// # a.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::ShutDown`]: the host has shut down.
    /// - [`Error::NotConnected`]: `peer` has no connection.
    /// - [`Error::Timeout`]: no stream came free within `pool.borrow_timeout`.
    /// - [`Error::PoolExhausted`]: `pool.max_waiters` borrowers already wait.
    /// - [`Error::PoolClosed`]: the connection closed while waiting.
    /// - [`Error::StreamOpen`]: the stream opened for this borrow failed
    ///   (rather than waiting out `borrow_timeout`, the borrower is told at
    ///   once when no other stream is on its way).
    ///
    /// Unlike [`send`](Self::send), nothing is retried.
    ///
    /// # Cancel safety
    ///
    /// Nothing is written before the stream is handed over: dropping the
    /// future while it waits gives up its place in line, and no message is
    /// affected; a stream handed to it in that instant goes back to the pool.
    pub async fn borrow_stream(&self, peer: PeerId) -> Result<ExclusiveStream, Error> {
        self.borrow_stream_with_priority(peer, ProtocolPriority::Normal)
            .await
    }

    /// [`borrow_stream`](Self::borrow_stream), waiting in line for a stream
    /// with `priority` when none is free. The frames written through it go on
    /// the wire with their own protocol's priority.
    ///
    /// # Errors
    ///
    /// As [`borrow_stream`](Self::borrow_stream).
    ///
    /// # Cancel safety
    ///
    /// As [`borrow_stream`](Self::borrow_stream): dropped while waiting, it
    /// leaves the line and nothing is written.
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
    ///
    /// Every subscription sees every event emitted after it was made, in
    /// order. It buffers `event_queue_len` of them; one that falls further
    /// behind gets [`Event::EventsDropped`](crate::Event::EventsDropped) with
    /// the count it missed, and goes on. A slow subscriber never slows the
    /// network down. Subscribe before the action whose events you want (a
    /// dial, a required peer), or you may miss them.
    ///
    /// ```
    /// use liquid_p2p::{Error, Event, Host};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Error> {
    /// let a = Host::builder().listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).build().await?;
    /// let b = Host::builder().build().await?;
    /// let mut events = a.control().events(); // before the dial: nothing is missed
    ///
    /// b.dial(a.listen_addrs()[0].clone()).await?;
    /// let peer = loop {
    ///     match events.recv().await {
    ///         Some(Event::PeerConnected { peer }) => break peer,
    ///         Some(Event::EventsDropped { count }) => eprintln!("missed {count} events"),
    ///         Some(_) => {} // ConnectionEstablished, PeerProtocols, ...
    ///         None => panic!("the host is gone"),
    ///     }
    /// };
    /// assert_eq!(peer, b.local_peer_id());
    /// // PeerConnected comes after the protocol exchange: b's list is known.
    /// assert_eq!(a.control().peer_protocols(&peer), Some(Vec::new()));
    /// # b.shutdown().await;
    /// # a.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        self.shared.events.subscribe()
    }

    /// Remembers an address of `peer`, used for extra connections and dials by peer id.
    ///
    /// The address goes to the behaviour through its request queue (shared
    /// with the pools' stream opens), which the swarm drains; this waits only
    /// while that queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the behaviour is gone (its swarm was dropped, as a
    /// [`Host`](crate::Host) does when it shuts down).
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room in the queue, the address is not
    /// remembered; once queued, it is. No other state changes.
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
    ///
    /// # Errors
    ///
    /// - [`Error::BlacklistFull`]: the list holds `max_blacklist_entries`
    ///   already (nothing changes).
    /// - [`Error::ShutDown`]: the host has shut down, or the behaviour is gone.
    ///
    /// # Cancel safety
    ///
    /// The entry is listed on the first poll, and new connections that match
    /// are refused from then on. Closing the live ones that match is queued for
    /// the swarm afterwards: dropped before that (while the behaviour's request
    /// queue is full), the entry stays listed but matching connections already
    /// up stay open until the policy is next enforced (another
    /// `blacklist_add` or allow-list change).
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
    /// - [`Error::AllowListFull`]: `peers` holds more than
    ///   `max_blacklist_entries` peers (nothing changes).
    /// - [`Error::ShutDown`]: the host has shut down, or the behaviour is gone.
    ///
    /// # Cancel safety
    ///
    /// The list changes on the first poll, and later connections are judged by
    /// it. Disconnecting the peers it no longer admits is queued for the swarm
    /// afterwards: dropped before that, they stay connected until the policy is
    /// next enforced.
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
    /// - [`Error::AllowListFull`]: the list holds `max_blacklist_entries` peers
    ///   already.
    /// - [`Error::ShutDown`]: the host has shut down, or the behaviour is gone.
    ///
    /// # Cancel safety
    ///
    /// As [`set_allow_list`](Self::set_allow_list): the peer is listed on the
    /// first poll; when this activates the list, disconnecting the others is
    /// queued afterwards, and a drop before that leaves them connected until
    /// the policy is next enforced.
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
    /// was listed. The list stays active (empty, it admits nobody). With the list
    /// inactive (everyone admitted) nothing changes: it returns false and the
    /// peer stays connected.
    ///
    /// # Errors
    ///
    /// [`Error::ShutDown`]: the host has shut down, or the behaviour is gone.
    ///
    /// # Cancel safety
    ///
    /// The peer leaves the list on the first poll, so its later connections are
    /// refused; disconnecting it is queued afterwards, and a drop before that
    /// leaves it connected until the policy is next enforced.
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
    /// [`Error::Broadcast`] with reason
    /// - [`BroadcastFailure::Disabled`]: this node runs no broadcast;
    /// - [`BroadcastFailure::InvalidTopic`]: `topic` is empty or longer than
    ///   [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN) bytes;
    /// - [`BroadcastFailure::AlreadySubscribed`];
    /// - [`BroadcastFailure::TooManyTopics`]: `broadcast.max_topics` reached;
    /// - [`BroadcastFailure::QueuesFull`] or [`BroadcastFailure::Signing`]:
    ///   gossipsub could not announce the subscription;
    ///
    /// or [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe. The call is queued for the swarm task; dropped before
    /// it is queued, nothing happens. Dropped after, the node is subscribed
    /// anyway and the inbox is lost: the topic's messages are all ignored (see
    /// [`TopicInbox`]) and subscribing again fails with `AlreadySubscribed`;
    /// [`unsubscribe`](Self::unsubscribe) undoes it.
    pub async fn subscribe(&self, topic: impl Into<String>) -> Result<TopicInbox, Error> {
        let topic = topic.into();
        self.broadcast(&topic)?.subscribe(topic).await
    }

    /// Unsubscribes from a topic; its inbox ends once drained.
    ///
    /// # Errors
    ///
    /// [`Error::Broadcast`] with [`BroadcastFailure::Disabled`] or
    /// [`BroadcastFailure::NotSubscribed`] (also for a topic name no
    /// subscription could have); [`Error::ShutDown`].
    ///
    /// # Cancel safety
    ///
    /// Dropped before the call is queued for the swarm task, nothing happens;
    /// after, the node unsubscribes anyway.
    pub async fn unsubscribe(&self, topic: &str) -> Result<(), Error> {
        self.broadcast(topic)?.unsubscribe(topic.to_owned()).await
    }

    /// Publishes `payload` on `topic` (subscribed or not) to the topic's peers.
    /// Returns the message id: a hash of topic and payload.
    ///
    /// Gossip needs the topic's peers to be known first: a peer's
    /// subscription arrives shortly after it connects
    /// ([`Event::TopicSubscribed`](crate::Event::TopicSubscribed), or
    /// `peers` in [`topic_stats`](Self::topic_stats) of a subscribed topic),
    /// and until then publishing fails with `NoPeers`.
    ///
    /// ```
    /// use liquid_p2p::{Error, Event, Host};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Error> {
    /// let a = Host::builder().listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).build().await?;
    /// let b = Host::builder().build().await?;
    /// let mut a_blocks = a.control().subscribe("/chain/main/blocks").await?;
    /// let mut b_events = b.control().events();
    /// b.dial(a.listen_addrs()[0].clone()).await?;
    /// // Wait until b knows that a subscribes.
    /// while let Some(event) = b_events.recv().await {
    ///     if matches!(event, Event::TopicSubscribed { ref topic, .. } if topic == "/chain/main/blocks") {
    ///         break;
    ///     }
    /// }
    /// b.control().publish("/chain/main/blocks", b"block 7".to_vec()).await?;
    ///
    /// let message = a_blocks.recv().await.expect("subscribed");
    /// assert_eq!(&message.data()[..], b"block 7");
    /// message.accept(); // valid: forward it to a's other peers
    /// # b.shutdown().await;
    /// # a.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Broadcast`] with reason
    /// - [`BroadcastFailure::Disabled`]: this node runs no broadcast;
    /// - [`BroadcastFailure::InvalidTopic`]: `topic` is empty or too long;
    /// - [`BroadcastFailure::TooLarge`]: the payload exceeds `max_frame_size`
    ///   (checked before the call is queued);
    /// - [`BroadcastFailure::Duplicate`]: this payload was published on the
    ///   topic before (ids are content hashes);
    /// - [`BroadcastFailure::NoPeers`]: no connected peer subscribes to the
    ///   topic;
    /// - [`BroadcastFailure::QueuesFull`]: the send queue of every subscribed
    ///   peer is full;
    /// - [`BroadcastFailure::Signing`]: the message could not be signed;
    ///
    /// or [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// The call is queued for the swarm task. Dropped before that, nothing is
    /// published; after, the message is published anyway and only its id is
    /// lost.
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
    /// [`Error::Broadcast`] with [`BroadcastFailure::Disabled`] (its `topic`
    /// is empty); [`Error::ShutDown`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
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
    /// - [`Error::InvalidConfig`]: this node runs no discovery, the chain name
    ///   is empty or longer than 256 bytes, or the node serves
    ///   [`MAX_CHAINS`](crate::MAX_CHAINS) chains already.
    /// - [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The call first waits for room in the swarm task's queue;
    /// dropped then, nothing changed. Once it has room, the chain is listed in
    /// [`served_chains`](Self::served_chains) and the call queued at once.
    pub async fn serve_chain(&self, chain: impl Into<String>) -> Result<bool, Error> {
        self.discovery()?.serve(chain.into()).await
    }

    /// Stops announcing `chain` and looking for its nodes; connections stay.
    /// Returns whether it was served.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]: this node runs no discovery;
    /// [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`serve_chain`](Self::serve_chain): dropped while it
    /// waits for room in the swarm task's queue, the chain stays served.
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
    /// - [`Error::InvalidConfig`]: this node runs no discovery.
    /// - [`Error::MissingPeerId`]: `address` does not end in `/p2p/<peer id>`.
    /// - [`Error::ShutDown`]: the host has shut down.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the call is queued for the swarm task, nothing happens;
    /// after, the seed is added and dialled anyway.
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
        let pool = self.pick_pool(peer, protocol)?;
        self.borrow_from(&pool, priority).await
    }

    /// The pool of `protocol`'s lane (or the shared lane: `None`) on the
    /// peer's least-loaded connection; asks for another connection when that
    /// one is busy.
    fn pick_pool(
        &self,
        peer: PeerId,
        protocol: Option<&str>,
    ) -> Result<Arc<SendStreamPool<SwarmOpener>>, Error> {
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
        Ok(best.pool)
    }

    /// A stream of `pool`, waiting in line with `priority` when none is free.
    async fn borrow_from(
        &self,
        pool: &Arc<SendStreamPool<SwarmOpener>>,
        priority: ProtocolPriority,
    ) -> Result<PooledStream<SwarmOpener>, Error> {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let stream = pool.borrow_with(priority).await?;
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.shared.metrics() {
            metrics.borrowed(started.elapsed());
        }
        Ok(stream)
    }
}

/// The end of a lead: tells the batch's senders how its write went, passes
/// the lead on (with the stream, if the write left it whole; a failed one is
/// discarded) and returns the leader's own result.
fn lead_done(
    mut ticket: Ticket<PooledStream<SwarmOpener>>,
    batch: Batch<PooledStream<SwarmOpener>>,
    stream: PooledStream<SwarmOpener>,
    written: Result<(), Error>,
) -> Result<(), Box<BatchFailure>> {
    let healthy = written.is_ok();
    let own = batch.finish(written);
    drop(ticket.pass_on(healthy.then_some(stream)));
    own
}

/// Why one attempt at a send failed, and whether another stream may succeed.
struct SendFailure {
    error: Error,
    retry: bool,
}

impl From<Error> for SendFailure {
    fn from(error: Error) -> Self {
        let retry = is_retryable(&error);
        Self { error, retry }
    }
}

impl SendFailure {
    /// A batch's failure as its sender of `protocol` sees it: a frame that was
    /// whole in the stream before the failure may have arrived, and is not
    /// sent again.
    fn batched(failure: BatchFailure, protocol: &str) -> Self {
        let error = match failure.error {
            // The leader named its own protocol.
            Error::Backpressure { peer, after, .. } => Error::Backpressure {
                peer,
                protocol: protocol.to_owned(),
                after,
            },
            other => other,
        };
        Self {
            retry: !failure.maybe_sent && is_retryable(&error),
            error,
        }
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
        self.write(stream, peer, protocol, priority, Writing::Frame(frame))
            .await
    }

    /// Writes a batch of frames in one write and one flush, telling the batch
    /// how far it got; on any failure (or cancellation) the stream is
    /// discarded. `protocol` is the leader's, named in a backpressure error.
    pub(crate) async fn write_batch(
        &self,
        stream: &mut PooledStream<SwarmOpener>,
        protocol: &str,
        priority: ProtocolPriority,
        batch: &mut Batch<PooledStream<SwarmOpener>>,
    ) -> Result<(), Error> {
        let peer = stream.pool().peer();
        self.write(stream, peer, protocol, priority, Writing::Batch(batch))
            .await
    }

    /// One write of a lane's stream: the stream counts for the lane's progress
    /// and writes with `priority`, the host's shutdown waits for it, and the
    /// connection's close cuts it short. The stream goes back to its pool only
    /// if the write succeeded.
    async fn write(
        &self,
        stream: &mut PooledStream<SwarmOpener>,
        peer: PeerId,
        protocol: &str,
        priority: ProtocolPriority,
        what: Writing<'_, '_>,
    ) -> Result<(), Error> {
        let mut guard = stream.begin_write();
        let (io, pool) = guard.stream_and_pool();
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
            r = what.write_to(io) => {
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
        guard.finish();
        Ok(())
    }
}

/// What one write of a pooled stream carries.
enum Writing<'a, 'b> {
    /// One frame, from `send` or an exclusive stream.
    Frame(&'a EncodedFrame<'b>),
    /// The frames of a batch, back to back; the batch learns how many bytes
    /// went in, so that its senders learn whether their frame did.
    Batch(&'a mut Batch<PooledStream<SwarmOpener>>),
}

impl Writing<'_, '_> {
    /// Writes and flushes.
    async fn write_to(self, io: &mut MeteredStream) -> std::io::Result<()> {
        match self {
            Writing::Frame(frame) => frame.write_to(io).await,
            Writing::Batch(batch) => {
                let mut at = 0;
                while at < batch.bytes().len() {
                    let n = io.write(&batch.bytes()[at..]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    at += n;
                    batch.written(n);
                }
                io.flush().await
            }
        }
    }
}

/// A pooled stream held for an ordered burst. Messages sent through it arrive in
/// order. Dropping it returns the stream to the pool (or discards it after a
/// failed write).
///
/// Made by [`Control::borrow_stream`] (see there for an example).
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
    ///
    /// # Errors
    ///
    /// Before anything is sent, leaving the stream usable:
    /// [`Error::ShutDown`], [`Error::InvalidProtocol`],
    /// [`Error::FrameTooLarge`], [`Error::ProtocolUnsupported`] and
    /// [`Error::FrameTooLargeForPeer`], as for [`Control::send`].
    ///
    /// Errors of the stream, after which it is broken:
    /// - [`Error::ConnectionStalled`]: the stall watchdog closed the connection;
    ///   [`Error::PoolClosed`]: the connection closed otherwise.
    /// - [`Error::Backpressure`]: the peer took no byte for `pool.send_timeout`.
    /// - [`Error::Write`]: the write failed, or an earlier one on this stream did
    ///   (`BrokenPipe`).
    ///
    /// Nothing is retried: the order of the burst is only kept on this stream.
    ///
    /// # Cancel safety
    ///
    /// Dropped mid-write, the frame may be partly written: the stream is then
    /// broken, every later `send` fails with `Write`, and dropping the
    /// `ExclusiveStream` discards the stream (it does not go back to the pool).
    /// The receiver loses only the partial frame; messages sent before it
    /// arrive.
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
        if let Some(metrics) = self.shared.metrics() {
            match &result {
                Ok(()) => metrics.frame_sent(protocol, frame.len()),
                Err(e) => metrics.send_failed(protocol, e),
            }
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
