//! Admission control: which connections may exist.
//!
//! Three rules, checked as early as the information allows:
//!
//! - the blacklist: a blacklisted IP or IP:port is refused when the inbound
//!   connection is announced, before any handshake; a blacklisted peer id right after
//!   the handshake, and never dialled. Adding an entry closes live connections that
//!   match it.
//! - the [`ConnManager`]: at most `max_peers` peers and `max_connections_per_peer`
//!   connections each; required peers have high priority and are never evicted for
//!   others.
//! - simultaneous dials: when two peers dial each other at once and only one
//!   connection per peer is allowed, each side would refuse the other's connection
//!   and both would be lost. Both sides instead keep the connection dialled by the
//!   peer with the smaller peer id, and close the other.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol, swarm::ConnectionId};
use liquid_p2p_core::{
    Admission, Blacklist, Config, ConnManager, Error, Event, Priority, RefusalReason,
};
use parking_lot::RwLock;

/// The remote socket address of a TCP or QUIC multiaddr.
pub(crate) fn socket_addr(address: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in address.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
            Protocol::Tcp(port) | Protocol::Udp(port) => {
                return ip.map(|ip| SocketAddr::new(ip, port));
            }
            _ => {}
        }
    }
    None
}

fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    peer: PeerId,
    /// Whether this host dialled the connection.
    dialer_is_local: bool,
    remote: Option<SocketAddr>,
}

/// What the behaviour must do after a decision.
#[derive(Debug)]
pub(crate) struct Close {
    pub(crate) peer: PeerId,
    pub(crate) connection: ConnectionId,
}

/// A refusal: the error for the swarm and the event for the application (boxed:
/// refusals are rare and the pair is large).
pub(crate) type Refusal = Box<Refused>;

pub(crate) struct Refused {
    pub(crate) error: Error,
    pub(crate) event: Event,
}

fn refuse(peer: Option<PeerId>, address: Option<&Multiaddr>, reason: String) -> Refusal {
    tracing::debug!(?peer, ?address, %reason, "connection refused");
    Box::new(Refused {
        error: Error::ConnectionRefused {
            reason: reason.clone(),
        },
        event: Event::Refused {
            peer,
            address: address.map(|a| a.to_string()),
            reason,
        },
    })
}

/// The admission state of one behaviour. See the module documentation.
pub(crate) struct Gate {
    local_peer: Option<PeerId>,
    manager: ConnManager,
    blacklist: Arc<RwLock<Blacklist>>,
    required: HashSet<PeerId>,
    connections: HashMap<ConnectionId, ConnInfo>,
    max_connections_per_peer: usize,
}

impl Gate {
    pub(crate) fn new(config: &Config, blacklist: Arc<RwLock<Blacklist>>) -> Self {
        Self {
            local_peer: None,
            manager: ConnManager::from_config(config),
            blacklist,
            required: HashSet::new(),
            connections: HashMap::new(),
            max_connections_per_peer: config.max_connections_per_peer,
        }
    }

    /// Learns the local peer id (needed to break simultaneous-dial ties).
    pub(crate) fn set_local_peer(&mut self, peer: PeerId) {
        self.local_peer = Some(peer);
    }

    fn priority(&self, peer: &PeerId) -> Priority {
        if self.required.contains(peer) {
            Priority::High
        } else {
            Priority::Low
        }
    }

    /// Before any handshake: is the remote address blacklisted?
    pub(crate) fn check_inbound_address(&self, remote: &Multiaddr) -> Result<(), Refusal> {
        let blacklist = self.blacklist.read();
        let blocked = match socket_addr(remote) {
            Some(addr) => blacklist.blocks_addr(addr),
            None => ip_of(remote).is_some_and(|ip| blacklist.blocks_ip(ip)),
        };
        if blocked {
            return Err(refuse(None, Some(remote), "blacklisted address".into()));
        }
        Ok(())
    }

    /// Before dialling: never dial a blacklisted peer, or only blacklisted addresses.
    pub(crate) fn check_dial(
        &self,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<(), Refusal> {
        let blacklist = self.blacklist.read();
        if let Some(p) = peer
            && blacklist.blocks_peer(&p)
        {
            return Err(refuse(peer, None, "blacklisted peer".into()));
        }
        if !addresses.is_empty()
            && addresses
                .iter()
                .all(|a| socket_addr(a).is_some_and(|s| blacklist.blocks_addr(s)))
        {
            return Err(refuse(
                peer,
                addresses.first(),
                "blacklisted address".into(),
            ));
        }
        Ok(())
    }

    /// Right after the handshake: blacklist, limits, simultaneous dials. On success
    /// the connection is tracked and the connections to close are returned.
    pub(crate) fn admit(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        dialer_is_local: bool,
        remote: &Multiaddr,
    ) -> Result<(Vec<Close>, Vec<Event>), Refusal> {
        let remote_socket = socket_addr(remote);
        {
            let blacklist = self.blacklist.read();
            if blacklist.blocks_peer(&peer) {
                return Err(refuse(Some(peer), Some(remote), "blacklisted peer".into()));
            }
            if remote_socket.is_some_and(|s| blacklist.blocks_addr(s)) {
                return Err(refuse(
                    Some(peer),
                    Some(remote),
                    "blacklisted address".into(),
                ));
            }
        }
        let mut closes = Vec::new();
        let mut events = Vec::new();
        match self.manager.admit(peer, self.priority(&peer)) {
            Admission::Accept => {}
            Admission::AcceptEvicting(victim) => {
                let reason = format!("evicted to make room for {peer}");
                for connection in self.manager.evict(&victim) {
                    closes.push(Close {
                        peer: victim,
                        connection,
                    });
                }
                events.push(Event::Evicted {
                    peer: victim,
                    reason,
                });
            }
            Admission::Refuse(RefusalReason::TooManyConnections { .. })
                if self.wins_simultaneous_dial(peer, dialer_is_local) =>
            {
                // Replace the other connection: both sides keep this one.
                for (id, info) in &self.connections {
                    if info.peer == peer && info.dialer_is_local != dialer_is_local {
                        closes.push(Close {
                            peer,
                            connection: *id,
                        });
                    }
                }
                for c in &closes {
                    self.manager.disconnected(&peer, c.connection);
                }
            }
            Admission::Refuse(reason) => {
                return Err(refuse(Some(peer), Some(remote), reason.to_string()));
            }
        }
        self.connections.insert(
            connection,
            ConnInfo {
                peer,
                dialer_is_local,
                remote: remote_socket,
            },
        );
        Ok((closes, events))
    }

    /// With one connection allowed per peer, a connection of the opposite direction
    /// already exists and this one was dialled by the smaller peer id: it wins.
    fn wins_simultaneous_dial(&self, peer: PeerId, dialer_is_local: bool) -> bool {
        let Some(local) = self.local_peer else {
            return false;
        };
        if self.max_connections_per_peer != 1 {
            return false;
        }
        let opposite = self
            .connections
            .values()
            .any(|c| c.peer == peer && c.dialer_is_local != dialer_is_local);
        let dialer = if dialer_is_local { local } else { peer };
        let other = if dialer_is_local { peer } else { local };
        opposite && dialer.to_bytes() < other.to_bytes()
    }

    /// The connection is up (all behaviours accepted it).
    pub(crate) fn established(&mut self, peer: PeerId, connection: ConnectionId) {
        let priority = self.priority(&peer);
        self.manager.connected(peer, connection, priority);
    }

    /// The connection is gone (closed, or denied after `admit`).
    pub(crate) fn closed(&mut self, peer: Option<PeerId>, connection: ConnectionId) {
        let peer = peer.or_else(|| self.connections.get(&connection).map(|c| c.peer));
        self.connections.remove(&connection);
        if let Some(peer) = peer {
            self.manager.disconnected(&peer, connection);
        }
    }

    /// Marks `peer` required or not; demoting may force it out of a full table.
    pub(crate) fn set_required(
        &mut self,
        peer: PeerId,
        required: bool,
    ) -> (Vec<Close>, Vec<Event>) {
        let priority = if required {
            self.required.insert(peer);
            Priority::High
        } else {
            self.required.remove(&peer);
            Priority::Low
        };
        if !self.manager.set_priority(&peer, priority) {
            return (Vec::new(), Vec::new());
        }
        let closes = self
            .manager
            .evict(&peer)
            .into_iter()
            .map(|connection| Close { peer, connection })
            .collect();
        let event = Event::Evicted {
            peer,
            reason: "no longer required and max peers exceeded".into(),
        };
        (closes, vec![event])
    }

    /// Live connections that the blacklist now forbids. They stop counting at once,
    /// like evicted ones, so a reconnect after the entry is removed is not refused
    /// while they finish closing.
    pub(crate) fn blacklisted_connections(&mut self) -> (Vec<Close>, Vec<Event>) {
        let blacklist = self.blacklist.read();
        let mut closes = Vec::new();
        let mut peers = HashSet::new();
        for (id, info) in &self.connections {
            let by_peer = blacklist.blocks_peer(&info.peer);
            if by_peer || info.remote.is_some_and(|s| blacklist.blocks_addr(s)) {
                closes.push(Close {
                    peer: info.peer,
                    connection: *id,
                });
                peers.insert(info.peer);
            }
        }
        drop(blacklist);
        for c in &closes {
            self.closed(Some(c.peer), c.connection);
        }
        let events = peers
            .into_iter()
            .map(|peer| Event::Evicted {
                peer,
                reason: "blacklisted".into(),
            })
            .collect();
        (closes, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_come_from_tcp_and_quic_multiaddrs() {
        let tcp: Multiaddr = "/ip4/192.168.1.2/tcp/8080".parse().expect("addr");
        let quic: Multiaddr = "/ip6/::1/udp/8081/quic-v1".parse().expect("addr");
        assert_eq!(
            socket_addr(&tcp),
            Some("192.168.1.2:8080".parse().expect("sock"))
        );
        assert_eq!(
            socket_addr(&quic),
            Some("[::1]:8081".parse().expect("sock"))
        );
        assert_eq!(
            socket_addr(&"/dns4/example.com/tcp/1".parse().expect("addr")),
            None
        );
    }

    #[test]
    fn both_sides_of_a_simultaneous_dial_keep_the_same_connection() {
        let config = Config::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let (small, large) = if a.to_bytes() < b.to_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().expect("addr");
        // On the small side: its own dial (S→L) came first, then L's dial arrives.
        let mut s = Gate::new(&config, Arc::new(RwLock::new(Blacklist::default())));
        s.set_local_peer(small);
        let sl = ConnectionId::new_unchecked(1);
        s.admit(large, sl, true, &addr)
            .map_err(|r| r.error)
            .expect("first");
        s.established(large, sl);
        let refused = s.admit(large, ConnectionId::new_unchecked(2), false, &addr);
        assert!(refused.is_err(), "L's dial loses on the small side");
        // On the large side: its own dial (L→S) came first, then S's dial arrives.
        let mut l = Gate::new(&config, Arc::new(RwLock::new(Blacklist::default())));
        l.set_local_peer(large);
        let ls = ConnectionId::new_unchecked(1);
        l.admit(small, ls, true, &addr)
            .map_err(|r| r.error)
            .expect("first");
        l.established(small, ls);
        let (closes, _) = l
            .admit(small, ConnectionId::new_unchecked(2), false, &addr)
            .map_err(|r| r.error)
            .expect("S's dial wins on the large side");
        assert_eq!(closes.len(), 1);
        assert_eq!(
            closes[0].connection, ls,
            "the large side closes its own dial"
        );
    }

    #[test]
    fn a_blacklisted_address_is_refused_before_the_handshake() {
        let blacklist = Arc::new(RwLock::new(Blacklist::default()));
        blacklist
            .write()
            .add("10.9.8.7".parse().expect("entry"))
            .expect("add");
        let gate = Gate::new(&Config::default(), blacklist);
        assert!(
            gate.check_inbound_address(&"/ip4/10.9.8.7/tcp/5".parse().expect("addr"))
                .is_err()
        );
        assert!(
            gate.check_inbound_address(&"/ip4/10.9.8.6/tcp/5".parse().expect("addr"))
                .is_ok()
        );
    }
}
