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
//!   does not complete the exchange within `exchange_timeout` (for example a libp2p
//!   node that does not speak it) is reported with `ProtocolExchangeFailed` and kept,
//!   its list unknown: sends to it are not failed early.
//! - Changes: `register_protocol` / `unregister_protocol` wake the push task, which
//!   waits `protocol_push_delay` so that a burst of changes goes out as one push, then
//!   sends the current list to every announced peer; the response refreshes that
//!   peer's list too. A failed push is retried once, never more.

use std::sync::{Arc, Weak};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};
use liquid_p2p_core::{
    Error, Event,
    exchange::{ExchangeError, read_protocol_list, write_protocol_list},
};
use tokio::sync::Notify;

use crate::{behaviour::Shared, protocol::EXCHANGE_PROTOCOL};

/// Attempts of one exchange or push while the peer stays connected.
const ATTEMPTS: usize = 2;

#[derive(Debug)]
enum Failure {
    Open(Error),
    Wire(ExchangeError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Open(e) => write!(f, "{e}"),
            Failure::Wire(e) => write!(f, "{e}"),
        }
    }
}

/// Sends our list to `peer` on one of its connections and returns its list.
async fn request(shared: &Shared, peer: PeerId) -> Result<Vec<String>, Failure> {
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
    let _ = stream.close().await;
    Ok(list)
}

/// Up to [`ATTEMPTS`] requests within `exchange_timeout`.
async fn request_with_retry(shared: &Shared, peer: PeerId) -> Result<Vec<String>, String> {
    let attempts = async {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match request(shared, peer).await {
                Ok(list) => return Ok(list),
                Err(Failure::Open(Error::NotConnected { .. })) => {
                    return Err("disconnected".to_owned());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(shared.config.exchange_timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {:?}",
            shared.config.exchange_timeout
        )),
    }
}

/// The exchange on a peer's first connection, then `PeerConnected`.
pub(crate) async fn exchange_with(shared: Arc<Shared>, peer: PeerId) {
    match request_with_retry(&shared, peer).await {
        Ok(list) => shared.protocols_received(peer, list),
        Err(reason) => {
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
        }
    }
    shared.announce(peer);
}

/// Answers one inbound exchange stream: read the peer's list, send ours.
pub(crate) async fn respond(shared: &Shared, peer: PeerId, mut stream: Stream) {
    let exchange = async {
        let list = read_protocol_list(&mut stream, shared.config.max_protocols_per_peer).await?;
        shared.protocols_received(peer, list);
        write_protocol_list(&mut stream, &shared.registry.protocols()).await?;
        let _ = stream.close().await;
        Ok::<_, ExchangeError>(())
    };
    let reason = match tokio::time::timeout(shared.config.exchange_timeout, exchange).await {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("incomplete after {:?}", shared.config.exchange_timeout),
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
        if s.check_open().is_err() {
            return;
        }
        // Changes during this pause are absorbed into this push (one stored wake-up
        // may cause one more push after it).
        tokio::time::sleep(s.config.protocol_push_delay).await;
        for peer in s.announced_peers() {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                match request_with_retry(&s, peer).await {
                    Ok(list) => s.protocols_received(peer, list),
                    Err(reason) => tracing::debug!(%peer, %reason, "protocol push failed"),
                }
            });
        }
    }
}
