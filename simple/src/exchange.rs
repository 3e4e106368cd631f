//! The protocol exchange: peers learn which application protocols each other
//! supports, and hear about changes without polling.
//!
//! A dedicated protocol, `/liquid/protocol-exchange/1.0.0`, rather than identify:
//! identify's list mixes transport protocols with application ones, has no way to
//! say "this is my whole list" before the host announces the peer, and pushes every
//! change at once with no coalescing. Here, one stream carries one request (the
//! sender's full list) and one response (the responder's full list), in the format of
//! [`liquid_p2p_core::exchange`]. The sender's identity is the connection's.
//!
//! - First connection: the host that sees the connection come up sends its list and
//!   reads the peer's; both hosts do this, so each learns the other's list from the
//!   response to its own request. Only then is `PeerConnected` emitted. A peer that
//!   does not speak the exchange, or does not complete it within
//!   `exchange_timeout` (for example a stock libp2p node), is reported with
//!   `ProtocolExchangeFailed` and kept, its list unknown: sends to it are not
//!   failed early. A connection that breaks during the exchange (a host that
//!   refuses us right after the handshake) is not announced at all: the
//!   application hears of no peer that came and went.
//! - A list a peer sends on its own (its request, or a push) is applied at most
//!   once per `protocol_push_delay` per peer; lists arriving faster replace each
//!   other while they wait, so a peer pushing without pause cannot flood the
//!   application with events.
//! - Limits: a response ends with the responder's `max_frame_size` (see
//!   [`liquid_p2p_core::exchange`]), so each host learns the other's from the
//!   response to its own request and refuses a larger payload before sending it
//!   (`FrameTooLargeForPeer`). A peer of an older version states none; nothing
//!   is refused early then, and its receiver resets a stream with a frame too
//!   large for it (`ProtocolError`).
//! - Changes: `register_protocol` / `unregister_protocol` wake the push task, which
//!   waits `protocol_push_delay` so that a burst of changes goes out as one push, then
//!   sends the current list to every announced peer; the response refreshes that
//!   peer's list too. A failed push is retried once, never more.

use std::sync::{Arc, Weak};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use liquid_p2p_core::{
    Error, Event, ExchangeFailure, StreamOpenFailure,
    exchange::{
        ExchangeError, PeerLimits, read_limits, read_protocol_list, write_protocol_list,
        write_response,
    },
};
use tokio::sync::Notify;

use crate::{protocol::EXCHANGE_PROTOCOL, shared::Shared};

/// Attempts of one exchange or push while the peer stays connected.
const ATTEMPTS: usize = 2;
/// After an exchange broke, how long to wait for the swarm to report the
/// connection closed before deciding the peer is still here (and trying again on
/// the connection it has now).
const BROKEN_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
/// How often an exchanged peer whose connection is not admitted yet is looked
/// at again.
const ANNOUNCE_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug)]
enum Failure {
    Open(Error),
    Wire(ExchangeError),
}

impl Failure {
    /// What the application is told if this ends the exchange.
    fn reported(self) -> ExchangeFailure {
        match self {
            Failure::Open(Error::StreamOpen { reason, .. }) => ExchangeFailure::Open(reason),
            // Pool closed, not connected, shut down: the connection went away.
            Failure::Open(_) => ExchangeFailure::Open(StreamOpenFailure::ConnectionClosed),
            Failure::Wire(e) => ExchangeFailure::List(e),
        }
    }
}

/// Sends our list to `peer` on one of its connections and returns its list and
/// limits.
async fn request(shared: &Shared, peer: PeerId) -> Result<(Vec<String>, PeerLimits), Failure> {
    let Some(best) = shared.pools.best_pool(&peer) else {
        return Err(Failure::Open(Error::NotConnected { peer }));
    };
    let mut stream = shared
        .open_stream(peer, best.pool.connection(), EXCHANGE_PROTOCOL)
        .await
        .map_err(Failure::Open)?;
    write_protocol_list(&mut stream, &shared.registry.protocols())
        .await
        .map_err(|e| Failure::Wire(e.into()))?;
    let list = read_protocol_list(&mut stream, shared.config.max_protocols_per_peer)
        .await
        .map_err(Failure::Wire)?;
    // Up to the end of the stream, which the responder closes.
    let limits = read_limits(&mut stream).await.map_err(Failure::Wire)?;
    let _ = stream.close().await;
    Ok((list, limits))
}

/// Why an exchange did not give a list.
enum Outcome {
    /// The peer left.
    Disconnected,
    /// The peer does not speak the exchange, or did not answer in time: a stock
    /// peer, kept with its list unknown.
    NotSpoken(ExchangeFailure),
    /// The stream broke (reset, I/O error): the connection may be closing.
    Broken(ExchangeFailure),
}

/// Up to [`ATTEMPTS`] requests within `exchange_timeout`.
async fn request_with_retry(
    shared: &Shared,
    peer: PeerId,
) -> Result<(Vec<String>, PeerLimits), Outcome> {
    let attempts = async {
        let mut last = Outcome::Disconnected;
        for _ in 0..ATTEMPTS {
            match request(shared, peer).await {
                Ok(list) => return Ok(list),
                Err(Failure::Open(Error::NotConnected { .. })) => {
                    return Err(Outcome::Disconnected);
                }
                Err(Failure::Open(Error::StreamOpen {
                    reason: StreamOpenFailure::Unsupported,
                    ..
                })) => return Err(Outcome::NotSpoken(ExchangeFailure::NotSpoken)),
                Err(e) => last = Outcome::Broken(e.reported()),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(shared.config.exchange_timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(Outcome::NotSpoken(ExchangeFailure::TimedOut {
            after: shared.config.exchange_timeout,
        })),
    }
}

/// The exchange on a peer's first connection, then `PeerConnected`.
pub(crate) async fn exchange_with(shared: Arc<Shared>, peer: PeerId) {
    let deadline = tokio::time::Instant::now() + shared.config.exchange_timeout;
    let reason = loop {
        match request_with_retry(&shared, peer).await {
            Ok((list, limits)) => {
                shared.protocols_received(peer, list, Some(limits));
                announce_when_admitted(&shared, peer, deadline).await;
                return;
            }
            Err(Outcome::NotSpoken(reason)) => break reason,
            Err(Outcome::Disconnected | Outcome::Broken(_))
                if tokio::time::Instant::now() < deadline =>
            {
                // The connection broke under the exchange: refused or lost (the
                // swarm reports it closed a moment later, and the peer is not
                // announced), or replaced by the other connection of a
                // simultaneous dial, which gets no exchange of its own: go on
                // there. That one may not have its pools yet (it is admitted
                // after it is established), so look again until the deadline
                // rather than give up at the first look: a peer given up here
                // would never be announced (seen in the chain cluster test).
                tokio::time::sleep(BROKEN_GRACE).await;
                if shared.lifecycle.is_shut_down() {
                    return;
                }
            }
            Err(Outcome::Disconnected) => return,
            Err(Outcome::Broken(reason)) => break reason,
        }
    };
    {
        let mut book = shared.book.write();
        if shared.pools.best_pool(&peer).is_none() {
            return; // the peer left during the exchange: nothing to announce
        }
        book.mark_unknown(peer);
    }
    tracing::info!(%peer, %reason, "protocol exchange failed; keeping the peer with an unknown list");
    shared
        .events
        .emit(Event::ProtocolExchangeFailed { peer, reason });
    announce_when_admitted(&shared, peer, deadline).await;
}

/// Announces `peer` once it has a pool. The connection the exchange ran on can
/// close just as the other connection of a simultaneous dial comes up, which
/// gets no exchange of its own and has no pool until it is admitted: a peer
/// not announced in that moment would never be (seen in the chain cluster
/// test: a node synced with a restarted peer but never reported it
/// connected). Gives up at `deadline`, or once the peer has no connection at
/// all (a new one starts its own exchange).
async fn announce_when_admitted(shared: &Shared, peer: PeerId, deadline: tokio::time::Instant) {
    while !shared.announce(peer) {
        if tokio::time::Instant::now() >= deadline
            || shared.lifecycle.is_shut_down()
            || !shared.connections.has_peer(&peer)
        {
            return;
        }
        tokio::time::sleep(ANNOUNCE_RETRY).await;
    }
}

/// Answers one inbound exchange stream: read the peer's list, send ours.
pub(crate) async fn respond(shared: &Arc<Shared>, peer: PeerId, mut stream: Stream) {
    let exchange = async {
        let list = read_protocol_list(&mut stream, shared.config.max_protocols_per_peer).await?;
        shared.list_pushed(peer, list);
        let limits = PeerLimits::with_max_frame_size(shared.config.max_frame_size);
        write_response(&mut stream, &shared.registry.protocols(), &limits).await?;
        let _ = stream.close().await;
        Ok::<_, ExchangeError>(())
    };
    let reason = match tokio::time::timeout(shared.config.exchange_timeout, exchange).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => ExchangeFailure::List(e),
        Err(_) => ExchangeFailure::TimedOut {
            after: shared.config.exchange_timeout,
        },
    };
    // Dropping the stream resets it; the connection and the peer's list stay.
    tracing::debug!(%peer, %reason, "inbound protocol exchange failed");
    shared
        .events
        .emit(Event::ProtocolExchangeFailed { peer, reason });
}

/// Pushes the local list to every announced peer after each burst of changes.
pub(crate) async fn push_loop(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        changed.notified().await;
        let Some(s) = shared.upgrade() else { return };
        if s.lifecycle.check_open().is_err() {
            return;
        }
        // Changes during this pause are absorbed into this push (one stored wake-up
        // may cause one more push after it).
        tokio::time::sleep(s.config.protocol_push_delay).await;
        for peer in s.announced_peers() {
            let task = Arc::clone(&s);
            let span = tracing::debug_span!("protocol_push", %peer);
            s.lifecycle.spawn(span, async move {
                let s = task;
                match request_with_retry(&s, peer).await {
                    Ok((list, limits)) => s.protocols_received(peer, list, Some(limits)),
                    Err(Outcome::NotSpoken(reason) | Outcome::Broken(reason)) => {
                        tracing::debug!(%peer, %reason, "protocol push failed");
                    }
                    Err(Outcome::Disconnected) => {}
                }
            });
        }
    }
}
