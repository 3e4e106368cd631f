//! Admission control: which connections may exist.
//!
//! Five rules, checked as early as the information allows:
//!
//! - per-address shares: an inbound connection needs a handshake slot (in all, per
//!   IP, per /24 or /64, with a reserved share for required peers' addresses) when
//!   it is announced, and after its handshake it must stay within the established
//!   connections allowed per IP and per subnet (loopback and required peers
//!   excepted unless configured), so one address cannot lock the others out.
//! - the allow-list, when active: a peer it does not list is refused right after
//!   the handshake and never dialled; removing a peer closes its connections.
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
//!
//! Every refusal is a typed [`Refusal`] with its stage; the behaviour reports it
//! (aggregated) and, after the handshake, may tell the remote why (refusal.rs).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol, swarm::ConnectionId};
use liquid_p2p_core::{
    AddressScope, Admission, AdmissionConfig, AdmissionStage, AllowList, Blacklist, BlacklistMatch,
    Config, ConnManager, Error, Event, EvictionReason, PeerLimit, Priority, Refusal, RefusalReason,
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

/// The remote IP address of a multiaddr (IPv4-mapped IPv6 as IPv4).
pub(crate) fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a).to_canonical()),
        _ => None,
    })
}

/// The /24 (IPv4) or /64 (IPv6) an address belongs to.
fn subnet_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, _] = a.octets();
            IpAddr::V4([a, b, c, 0].into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Inbound connections in their handshake: in all, per IP and per subnet.
#[derive(Debug, Default)]
struct PendingTable {
    by_connection: HashMap<ConnectionId, Option<IpAddr>>,
    per_ip: HashMap<IpAddr, usize>,
    per_subnet: HashMap<IpAddr, usize>,
}

impl PendingTable {
    fn count(map: &HashMap<IpAddr, usize>, key: IpAddr) -> usize {
        map.get(&key).copied().unwrap_or(0)
    }

    /// Which limit a new handshake from `ip` would break, if any.
    fn check(
        &self,
        ip: Option<IpAddr>,
        reserved: bool,
        limits: &AdmissionConfig,
    ) -> Option<RefusalReason> {
        let total = self.by_connection.len();
        if reserved {
            // Required peers' addresses may use the reserved share, and are not
            // held to the per-address limits an attacker on their subnet exhausts.
            return (total >= limits.max_pending).then_some(RefusalReason::PendingLimit {
                scope: AddressScope::All,
                limit: limits.max_pending,
            });
        }
        let open = limits.max_pending - limits.reserved_pending;
        if total >= open {
            return Some(RefusalReason::PendingLimit {
                scope: AddressScope::All,
                limit: open,
            });
        }
        let ip = ip?;
        if Self::count(&self.per_ip, ip) >= limits.max_pending_per_ip {
            return Some(RefusalReason::PendingLimit {
                scope: AddressScope::Ip,
                limit: limits.max_pending_per_ip,
            });
        }
        if Self::count(&self.per_subnet, subnet_of(ip)) >= limits.max_pending_per_subnet {
            return Some(RefusalReason::PendingLimit {
                scope: AddressScope::Subnet,
                limit: limits.max_pending_per_subnet,
            });
        }
        None
    }

    fn insert(&mut self, connection: ConnectionId, ip: Option<IpAddr>) {
        if self.by_connection.insert(connection, ip).is_some() {
            return;
        }
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_insert(0) += 1;
            *self.per_subnet.entry(subnet_of(ip)).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, connection: ConnectionId) {
        let Some(Some(ip)) = self.by_connection.remove(&connection) else {
            return;
        };
        for (map, key) in [
            (&mut self.per_ip, ip),
            (&mut self.per_subnet, subnet_of(ip)),
        ] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
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

/// A refused connection, for the swarm (the error) and the reporter.
pub(crate) type Refused = Box<Refusal>;

fn refuse(
    stage: AdmissionStage,
    reason: RefusalReason,
    peer: Option<PeerId>,
    address: Option<&Multiaddr>,
) -> Refused {
    tracing::debug!(?peer, ?address, %reason, %stage, "connection refused");
    Box::new(Refusal {
        stage,
        reason,
        peer,
        ip: address.and_then(ip_of),
        address: address.cloned(),
    })
}

/// The error the swarm gets for a refusal.
pub(crate) fn refusal_error(refusal: &Refusal) -> Error {
    Error::ConnectionRefused {
        reason: refusal.reason,
    }
}

/// The allow-list `config` starts with (validated: within its bound).
fn allow_list(config: &Config) -> AllowList {
    let mut list = AllowList::new(config.max_blacklist_entries);
    if list.set(config.allow_list.clone()).is_err() {
        // `Config::validate` refuses such a list; keep the bound anyway.
        let _ = list.set(Some(Vec::new()));
    }
    list
}

/// The admission state of one behaviour. See the module documentation.
pub(crate) struct Gate {
    local_peer: Option<PeerId>,
    manager: ConnManager,
    blacklist: Arc<RwLock<Blacklist>>,
    /// When active, the only peers that may connect.
    allow: Arc<RwLock<AllowList>>,
    required: HashSet<PeerId>,
    /// IP addresses known for required peers: their handshakes may use the
    /// reserved share of the pending slots.
    required_ips: HashMap<PeerId, HashSet<IpAddr>>,
    connections: HashMap<ConnectionId, ConnInfo>,
    pending: PendingTable,
    limits: AdmissionConfig,
    max_connections_per_peer: usize,
    connections_per_ip: usize,
    connections_per_subnet: usize,
}

impl Gate {
    pub(crate) fn new(config: &Config, blacklist: Arc<RwLock<Blacklist>>) -> Self {
        Self {
            local_peer: None,
            manager: ConnManager::from_config(config),
            blacklist,
            allow: Arc::new(RwLock::new(allow_list(config))),
            required: HashSet::new(),
            required_ips: HashMap::new(),
            connections: HashMap::new(),
            pending: PendingTable::default(),
            limits: config.admission.clone(),
            max_connections_per_peer: config.max_connections_per_peer,
            connections_per_ip: config.connections_per_ip(),
            connections_per_subnet: config.connections_per_subnet(),
        }
    }

    /// Remembers an address of `peer`; a required peer's IP gets the reserved
    /// share of handshake slots.
    pub(crate) fn address_known(&mut self, peer: PeerId, address: &Multiaddr) {
        if self.required.contains(&peer)
            && let Some(ip) = ip_of(address)
        {
            let ips = self.required_ips.entry(peer).or_default();
            // A peer lists a handful of addresses; bounded like the address book.
            if ips.len() < 16 {
                ips.insert(ip);
            }
        }
    }

    fn is_required_ip(&self, ip: IpAddr) -> bool {
        self.required_ips.values().any(|ips| ips.contains(&ip))
    }

    /// The allow-list, shared with [`Control`](crate::Control).
    pub(crate) fn allow_list(&self) -> Arc<RwLock<AllowList>> {
        Arc::clone(&self.allow)
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

    /// Before any handshake: is the remote address blacklisted, and is there a
    /// handshake slot for it? On success the slot is taken until
    /// [`pending_done`](Self::pending_done).
    pub(crate) fn check_inbound(
        &mut self,
        connection: ConnectionId,
        remote: &Multiaddr,
        check_blacklist: bool,
    ) -> Result<(), Refused> {
        if check_blacklist {
            let blacklist = self.blacklist.read();
            let blocked = match socket_addr(remote) {
                Some(addr) => blacklist.blocks_addr(addr),
                None => ip_of(remote).is_some_and(|ip| blacklist.blocks_ip(ip)),
            };
            if blocked {
                return Err(refuse(
                    AdmissionStage::Pending,
                    RefusalReason::Blacklisted(BlacklistMatch::Address),
                    None,
                    Some(remote),
                ));
            }
        }
        let ip = ip_of(remote);
        let reserved = ip.is_some_and(|ip| self.is_required_ip(ip));
        if let Some(reason) = self.pending.check(ip, reserved, &self.limits) {
            return Err(refuse(AdmissionStage::Pending, reason, None, Some(remote)));
        }
        self.pending.insert(connection, ip);
        Ok(())
    }

    /// The inbound connection left its handshake (established, failed or denied).
    pub(crate) fn pending_done(&mut self, connection: ConnectionId) {
        self.pending.remove(connection);
    }

    /// Handshakes in progress.
    #[cfg(test)]
    fn pending_count(&self) -> usize {
        self.pending.by_connection.len()
    }

    /// Before dialling: never dial a blacklisted peer, or only blacklisted addresses.
    pub(crate) fn check_dial(
        &self,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
    ) -> Result<(), Refused> {
        if let Some(p) = peer
            && !self.allow.read().allows(&p)
        {
            return Err(refuse(
                AdmissionStage::Dial,
                RefusalReason::NotAllowed,
                peer,
                None,
            ));
        }
        let blacklist = self.blacklist.read();
        if let Some(p) = peer
            && blacklist.blocks_peer(&p)
        {
            return Err(refuse(
                AdmissionStage::Dial,
                RefusalReason::Blacklisted(BlacklistMatch::Peer),
                peer,
                None,
            ));
        }
        if !addresses.is_empty()
            && addresses
                .iter()
                .all(|a| socket_addr(a).is_some_and(|s| blacklist.blocks_addr(s)))
        {
            return Err(refuse(
                AdmissionStage::Dial,
                RefusalReason::Blacklisted(BlacklistMatch::Address),
                peer,
                addresses.first(),
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
    ) -> Result<(Vec<Close>, Vec<Event>), Refused> {
        if !dialer_is_local {
            self.pending_done(connection);
        }
        let remote_socket = socket_addr(remote);
        let refused = |reason| {
            refuse(
                AdmissionStage::Established,
                reason,
                Some(peer),
                Some(remote),
            )
        };
        if !self.allow.read().allows(&peer) {
            return Err(refused(RefusalReason::NotAllowed));
        }
        {
            let blacklist = self.blacklist.read();
            if blacklist.blocks_peer(&peer) {
                return Err(refused(RefusalReason::Blacklisted(BlacklistMatch::Peer)));
            }
            if remote_socket.is_some_and(|s| blacklist.blocks_addr(s)) {
                return Err(refused(RefusalReason::Blacklisted(BlacklistMatch::Address)));
            }
        }
        if !dialer_is_local
            && !self.required.contains(&peer)
            && let Some(reason) = self.address_limit(remote)
        {
            return Err(refused(reason));
        }
        let mut closes = Vec::new();
        let mut events = Vec::new();
        match self.manager.admit(peer, self.priority(&peer)) {
            Admission::Accept => {}
            Admission::AcceptEvicting(victim) => {
                for connection in self.manager.evict(&victim) {
                    closes.push(Close {
                        peer: victim,
                        connection,
                    });
                }
                events.push(Event::Evicted {
                    peer: victim,
                    reason: EvictionReason::MadeRoomFor { peer },
                });
            }
            Admission::Refuse(PeerLimit::TooManyConnections { .. })
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
            Admission::Refuse(limit) => {
                return Err(refused(RefusalReason::PeerLimit(limit)));
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

    /// Which per-address limit a new inbound connection from `remote` would break.
    fn address_limit(&self, remote: &Multiaddr) -> Option<RefusalReason> {
        let ip = ip_of(remote)?;
        if ip.is_loopback() && !self.limits.limit_loopback {
            return None;
        }
        let subnet = subnet_of(ip);
        let (mut same_ip, mut same_subnet) = (0, 0);
        for info in self.connections.values() {
            let Some(other) = info.remote.map(|s| s.ip().to_canonical()) else {
                continue;
            };
            if info.dialer_is_local || self.required.contains(&info.peer) {
                continue;
            }
            same_ip += usize::from(other == ip);
            same_subnet += usize::from(subnet_of(other) == subnet);
        }
        if same_ip >= self.connections_per_ip {
            return Some(RefusalReason::AddressLimit {
                scope: AddressScope::Ip,
                limit: self.connections_per_ip,
            });
        }
        (same_subnet >= self.connections_per_subnet).then_some(RefusalReason::AddressLimit {
            scope: AddressScope::Subnet,
            limit: self.connections_per_subnet,
        })
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

    /// Stops counting every connection to `peer` at once (the host is closing
    /// them), like an evicted peer's: a reconnect is not refused while they finish
    /// closing. Returns them.
    pub(crate) fn closing(&mut self, peer: PeerId) -> Vec<ConnectionId> {
        let connections: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, info)| info.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for c in &connections {
            self.closed(Some(peer), *c);
        }
        connections
    }

    /// The connection is gone (closed, failed in its handshake, or denied).
    pub(crate) fn closed(&mut self, peer: Option<PeerId>, connection: ConnectionId) {
        self.pending_done(connection);
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
            self.required_ips.remove(&peer);
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
            reason: EvictionReason::NoLongerRequired,
        };
        (closes, vec![event])
    }

    /// Live connections that the blacklist or the allow-list now forbids. They
    /// stop counting at once, like evicted ones, so a reconnect after the entry
    /// is removed is not refused while they finish closing.
    pub(crate) fn forbidden_connections(&mut self) -> (Vec<Close>, Vec<Event>) {
        let blacklist = self.blacklist.read();
        let allow = self.allow.read();
        let mut closes = Vec::new();
        let mut peers = HashMap::new();
        for (id, info) in &self.connections {
            let reason = if !allow.allows(&info.peer) {
                EvictionReason::NotAllowed
            } else if blacklist.blocks_peer(&info.peer)
                || info.remote.is_some_and(|s| blacklist.blocks_addr(s))
            {
                EvictionReason::Blacklisted
            } else {
                continue;
            };
            closes.push(Close {
                peer: info.peer,
                connection: *id,
            });
            peers.insert(info.peer, reason);
        }
        drop((blacklist, allow));
        for c in &closes {
            self.closed(Some(c.peer), c.connection);
        }
        let events = peers
            .into_iter()
            .map(|(peer, reason)| Event::Evicted { peer, reason })
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
            .map_err(|r| r.reason)
            .expect("first");
        s.established(large, sl);
        let refused = s.admit(large, ConnectionId::new_unchecked(2), false, &addr);
        assert!(refused.is_err(), "L's dial loses on the small side");
        // On the large side: its own dial (L→S) came first, then S's dial arrives.
        let mut l = Gate::new(&config, Arc::new(RwLock::new(Blacklist::default())));
        l.set_local_peer(large);
        let ls = ConnectionId::new_unchecked(1);
        l.admit(small, ls, true, &addr)
            .map_err(|r| r.reason)
            .expect("first");
        l.established(small, ls);
        let (closes, _) = l
            .admit(small, ConnectionId::new_unchecked(2), false, &addr)
            .map_err(|r| r.reason)
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
        let mut gate = Gate::new(&Config::default(), blacklist);
        let refused = gate
            .check_inbound(
                ConnectionId::new_unchecked(1),
                &"/ip4/10.9.8.7/tcp/5".parse().expect("addr"),
                true,
            )
            .expect_err("blacklisted");
        assert_eq!(
            (refused.stage, refused.reason),
            (
                AdmissionStage::Pending,
                RefusalReason::Blacklisted(BlacklistMatch::Address)
            )
        );
        assert!(
            gate.check_inbound(
                ConnectionId::new_unchecked(2),
                &"/ip4/10.9.8.6/tcp/5".parse().expect("addr"),
                true
            )
            .is_ok()
        );
    }

    fn addr(ip: &str, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/tcp/{port}").parse().expect("addr")
    }

    #[test]
    fn one_address_gets_its_share_of_handshake_slots_and_others_still_get_in() {
        let mut gate = Gate::new(&Config::default(), Arc::default());
        let limits = AdmissionConfig::default();
        let mut id = 0;
        let mut next = || {
            id += 1;
            ConnectionId::new_unchecked(id)
        };
        for port in 0..limits.max_pending_per_ip {
            gate.check_inbound(next(), &addr("10.0.0.2", port as u16), true)
                .expect("within the per-address share");
        }
        let refused = gate
            .check_inbound(next(), &addr("10.0.0.2", 9999), true)
            .expect_err("one more from the same IP");
        assert_eq!(
            refused.reason,
            RefusalReason::PendingLimit {
                scope: AddressScope::Ip,
                limit: limits.max_pending_per_ip
            }
        );
        // The same /24 may take up to its own limit, then it is refused too.
        for n in 3..=4 {
            for port in 0..limits.max_pending_per_ip {
                let result =
                    gate.check_inbound(next(), &addr(&format!("10.0.0.{n}"), port as u16), true);
                if n == 3 {
                    result.expect("subnet still has room");
                } else {
                    assert_eq!(
                        result.expect_err("subnet full").reason,
                        RefusalReason::PendingLimit {
                            scope: AddressScope::Subnet,
                            limit: limits.max_pending_per_subnet
                        }
                    );
                }
            }
        }
        gate.check_inbound(next(), &addr("192.168.7.1", 1), true)
            .expect("another address gets in");
        assert_eq!(gate.pending_count(), limits.max_pending_per_subnet + 1);
        // A finished handshake gives its slot back.
        gate.pending_done(ConnectionId::new_unchecked(1));
        gate.check_inbound(next(), &addr("10.0.0.2", 9999), true)
            .expect("a slot came back");
    }

    #[test]
    fn the_reserved_share_of_handshake_slots_is_kept_for_required_peers() {
        let mut gate = Gate::new(&Config::default(), Arc::default());
        let limits = AdmissionConfig::default();
        let open = limits.max_pending - limits.reserved_pending;
        // Many attackers, each within its per-address share, fill the open slots.
        for i in 0..open {
            let ip = format!("10.{}.{}.1", i / 200, i % 200);
            gate.check_inbound(ConnectionId::new_unchecked(i), &addr(&ip, 1), true)
                .expect("open slot");
        }
        let refused = gate
            .check_inbound(
                ConnectionId::new_unchecked(10_000),
                &addr("172.16.0.1", 1),
                true,
            )
            .expect_err("open slots are gone");
        assert_eq!(
            refused.reason,
            RefusalReason::PendingLimit {
                scope: AddressScope::All,
                limit: open
            }
        );
        let required = PeerId::random();
        let _ = gate.set_required(required, true);
        gate.address_known(required, &addr("172.16.0.9", 4001));
        for i in 0..limits.reserved_pending {
            gate.check_inbound(
                ConnectionId::new_unchecked(20_000 + i),
                &addr("172.16.0.9", 5000 + i as u16),
                true,
            )
            .expect("a required peer's address uses the reserved share");
        }
        assert!(
            gate.check_inbound(
                ConnectionId::new_unchecked(30_000),
                &addr("172.16.0.9", 1),
                true
            )
            .is_err(),
            "the total stays bounded"
        );
    }

    #[test]
    fn established_connections_per_address_are_capped_except_loopback_and_required_peers() {
        let config = Config::default()
            .with_admission(AdmissionConfig::default().with_max_connections_per_ip(Some(2)));
        let mut gate = Gate::new(&config, Arc::default());
        gate.set_local_peer(PeerId::random());
        let admit = |gate: &mut Gate, id: usize, ip: &str| {
            let peer = PeerId::random();
            let c = ConnectionId::new_unchecked(id);
            let result = gate.admit(peer, c, false, &addr(ip, 1000 + id as u16));
            if result.is_ok() {
                gate.established(peer, c);
            }
            result.map(|_| ()).map_err(|r| r.reason)
        };
        assert!(admit(&mut gate, 1, "10.0.0.5").is_ok());
        assert!(admit(&mut gate, 2, "10.0.0.5").is_ok());
        assert_eq!(
            admit(&mut gate, 3, "10.0.0.5"),
            Err(RefusalReason::AddressLimit {
                scope: AddressScope::Ip,
                limit: 2
            })
        );
        assert!(admit(&mut gate, 4, "10.0.0.6").is_ok(), "another IP");
        for id in 5..10 {
            assert!(
                admit(&mut gate, id, "127.0.0.1").is_ok(),
                "loopback is exempt"
            );
        }
        let required = PeerId::random();
        let _ = gate.set_required(required, true);
        assert!(
            gate.admit(
                required,
                ConnectionId::new_unchecked(11),
                false,
                &addr("10.0.0.5", 7)
            )
            .is_ok(),
            "a required peer is not held to the per-address limit"
        );
    }
}
