//! `Blacklist`: peers and addresses the host refuses to talk to.
//!
//! An entry bans a peer id, a whole IP (IPv4 or IPv6), or one IP:port. Entries are
//! usually written by an operator in a configuration file, so their text form is
//! strict: a typo such as `192.168.1.256` or `1.2.3.4:99999` is an error, never an
//! entry silently ignored while the operator believes the address is banned.
//!
//! Addresses are compared in canonical form: an IPv4-mapped IPv6 address
//! (`::ffff:1.2.3.4`, as a dual-stack socket reports an IPv4 peer) is the IPv4
//! address it carries, so banning `1.2.3.4` also bans it when it arrives over IPv6.
//! The list is bounded by `max_entries`.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use libp2p_identity::PeerId;

use crate::error::Error;

/// How much of a rejected entry an error repeats; the rest is cut, so a whole
/// file pasted on one line does not end up in a log line.
const MAX_ECHOED_CHARS: usize = 64;

/// One banned peer or address.
///
/// Its text form, accepted by [`FromStr`] and written by [`Display`](fmt::Display):
///
/// | form | entry |
/// |---|---|
/// | `12D3KooW…` (base58 peer id) | [`Peer`](Self::Peer) |
/// | `192.168.1.2`, `::3`, `[::2]` | [`Ip`](Self::Ip) |
/// | `192.168.1.2:8080`, `[::1]:8081` | [`Socket`](Self::Socket) |
///
/// ```
/// use liquid_p2p_core::BlacklistEntry;
///
/// let entry: BlacklistEntry = "[::1]:8081".parse()?;
/// assert_eq!(entry.to_string().parse::<BlacklistEntry>()?, entry);
/// assert!("192.168.1.256".parse::<BlacklistEntry>().is_err());
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BlacklistEntry {
    /// Every connection of this peer, whatever its address.
    Peer(PeerId),
    /// Every connection from or to this IP, whatever the port.
    Ip(IpAddr),
    /// Connections from or to this exact IP and port.
    Socket(SocketAddr),
}

impl BlacklistEntry {
    /// The entry in the form it is stored and compared in: IPv4-mapped IPv6
    /// addresses become IPv4, and an IPv6 socket loses its flow label and scope id,
    /// which the text form cannot carry and which say nothing about who the peer is.
    pub fn canonical(self) -> Self {
        match self {
            Self::Peer(_) => self,
            Self::Ip(ip) => Self::Ip(ip.to_canonical()),
            Self::Socket(addr) => Self::Socket(canonical_socket(addr)),
        }
    }
}

fn canonical_socket(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl fmt::Display for BlacklistEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(peer) => write!(f, "{peer}"),
            // An IPv6 address without a port is written bare, as in `::3`.
            Self::Ip(ip) => write!(f, "{ip}"),
            // The canonical form of an IPv6 socket has no scope id, so this is
            // `[addr]:port`, which `from_str` reads back.
            Self::Socket(addr) => write!(f, "{}", canonical_socket(*addr)),
        }
    }
}

impl FromStr for BlacklistEntry {
    type Err = Error;

    /// Parses one of the forms listed on [`BlacklistEntry`], into its
    /// [canonical](Self::canonical) form. Surrounding whitespace is not trimmed: the
    /// text must be exactly an entry.
    fn from_str(text: &str) -> Result<Self, Error> {
        parse(text)
            .map(Self::canonical)
            .map_err(|reason| Error::InvalidBlacklistEntry {
                entry: text.chars().take(MAX_ECHOED_CHARS).collect(),
                reason,
            })
    }
}

/// Parses an entry; the error is the reason given to the operator.
fn parse(text: &str) -> Result<BlacklistEntry, String> {
    const IPV6_WITH_PORT: &str = "an IPv6 address with a port is written [address]:port";
    if text.is_empty() {
        return Err("the entry is empty".into());
    }
    if let Some(bracketed) = text.strip_prefix('[') {
        let Some((host, rest)) = bracketed.split_once(']') else {
            return Err("'[' opens an IPv6 address but no ']' closes it".into());
        };
        let ip = host
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("'{host}' between brackets is not an IPv6 address"))?;
        if rest.is_empty() {
            return Ok(BlacklistEntry::Ip(IpAddr::V6(ip)));
        }
        let Some(port) = rest.strip_prefix(':') else {
            return Err("only ':port' may follow ']'".into());
        };
        return Ok(BlacklistEntry::Socket(SocketAddr::new(
            IpAddr::V6(ip),
            parse_port(port)?,
        )));
    }
    // Bare IPv4 or IPv6 address. An unbracketed `::1:80` is the IPv6 address
    // `::1:80`, never `::1` port 80: only brackets give an IPv6 address a port.
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(BlacklistEntry::Ip(ip));
    }
    // Base58 has no '.' nor ':', so text with either was meant as an address.
    if let Some((host, port)) = text.rsplit_once(':') {
        if !host.contains('.') {
            return Err(format!("not an IPv6 address ({IPV6_WITH_PORT})"));
        }
        let ip = host
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("'{host}' is not an IPv4 address (and {IPV6_WITH_PORT})"))?;
        return Ok(BlacklistEntry::Socket(SocketAddr::new(
            IpAddr::V4(ip),
            parse_port(port)?,
        )));
    }
    if text.contains('.') {
        return Err("not an IPv4 address (four numbers from 0 to 255, as in 192.168.1.2)".into());
    }
    text.parse::<PeerId>()
        .map(BlacklistEntry::Peer)
        .map_err(|e| format!("not an IP address, an IP:port nor a base58 peer id ({e})"))
}

/// A port as the operator wrote it: decimal digits only (no sign, no space), 1 to
/// 65535. Port 0 is refused: no connection comes from it, so an entry naming it
/// would ban nothing while looking as if it did.
fn parse_port(text: &str) -> Result<u16, String> {
    let invalid = || format!("port '{text}' is not a number from 1 to 65535");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

/// The banned peers and addresses, at most `max_entries` of them.
///
/// An address is banned when its IP or exactly its IP:port is listed; IPv4-mapped
/// IPv6 addresses (`::ffff:1.2.3.4`) are treated as the IPv4 address they carry,
/// both when stored and when matched.
///
/// ```
/// use liquid_p2p_core::{Blacklist, BlacklistEntry};
///
/// let mut blacklist = Blacklist::default();
/// blacklist.add("10.0.0.7".parse()?)?;
/// assert!(blacklist.blocks_addr("10.0.0.7:4001".parse().expect("address")));
/// assert!(blacklist.blocks_addr("[::ffff:10.0.0.7]:4001".parse().expect("address")));
/// assert!(!blacklist.blocks_addr("10.0.0.8:4001".parse().expect("address")));
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blacklist {
    /// Canonical entries. Ordered, so [`entries`](Blacklist::entries) lists them the
    /// same way every time (peers, then IPs, then sockets).
    entries: BTreeSet<BlacklistEntry>,
    max_entries: usize,
}

impl Default for Blacklist {
    /// An empty blacklist holding at most 4096 entries, the default of
    /// [`Config::max_blacklist_entries`](crate::Config::max_blacklist_entries).
    fn default() -> Self {
        Self::new(4096)
    }
}

impl Blacklist {
    /// An empty blacklist holding at most `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: BTreeSet::new(),
            max_entries,
        }
    }

    /// Bans `entry`. Returns `false` if it was already banned (also when the list is
    /// full: re-adding an entry never fails), and [`Error::BlacklistFull`] when a new
    /// entry would exceed `max_entries`.
    pub fn add(&mut self, entry: BlacklistEntry) -> Result<bool, Error> {
        let entry = entry.canonical();
        if self.entries.contains(&entry) {
            return Ok(false);
        }
        if self.entries.len() >= self.max_entries {
            return Err(Error::BlacklistFull {
                limit: self.max_entries,
            });
        }
        Ok(self.entries.insert(entry))
    }

    /// Lifts the ban of `entry`. Returns `false` if it was not banned. Only this
    /// exact entry goes: removing an IP leaves the bans of its IP:ports in place.
    pub fn remove(&mut self, entry: &BlacklistEntry) -> bool {
        self.entries.remove(&entry.canonical())
    }

    /// Whether `entry` (in canonical form) is listed.
    pub fn contains(&self, entry: &BlacklistEntry) -> bool {
        self.entries.contains(&entry.canonical())
    }

    /// Whether the peer is banned by id.
    pub fn blocks_peer(&self, peer: &PeerId) -> bool {
        self.entries.contains(&BlacklistEntry::Peer(*peer))
    }

    /// Whether a connection from or to `addr` is banned: its IP, or exactly its IP
    /// and port, is listed. IPv4-mapped IPv6 addresses match as IPv4.
    pub fn blocks_addr(&self, addr: SocketAddr) -> bool {
        let addr = canonical_socket(addr);
        self.entries.contains(&BlacklistEntry::Ip(addr.ip()))
            || self.entries.contains(&BlacklistEntry::Socket(addr))
    }

    /// Whether the whole IP is banned, for when the port is not known (an address
    /// to dial without a port, for instance). Bans of single IP:ports do not count.
    pub fn blocks_ip(&self, ip: IpAddr) -> bool {
        self.entries
            .contains(&BlacklistEntry::Ip(ip.to_canonical()))
    }

    /// The entries, in canonical form: peers, then IPs, then IP:ports, each sorted.
    pub fn entries(&self) -> Vec<BlacklistEntry> {
        self.entries.iter().copied().collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is banned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most entries the list holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV6;

    use proptest::prelude::*;

    use super::*;

    fn entry(text: &str) -> BlacklistEntry {
        match text.parse() {
            Ok(e) => e,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn sock(text: &str) -> SocketAddr {
        match text.parse() {
            Ok(a) => a,
            Err(e) => panic!("{text:?} is a socket address: {e}"),
        }
    }

    fn ip(text: &str) -> IpAddr {
        match text.parse() {
            Ok(a) => a,
            Err(e) => panic!("{text:?} is an IP address: {e}"),
        }
    }

    fn rejection(text: &str) -> String {
        match text.parse::<BlacklistEntry>() {
            Ok(e) => panic!("{text:?} should be rejected, parsed as {e:?}"),
            Err(Error::InvalidBlacklistEntry { entry, reason }) => {
                assert_eq!(entry, text);
                reason
            }
            Err(other) => panic!("{text:?}: unexpected error {other:?}"),
        }
    }

    #[test]
    fn an_ipv4_address_is_an_ip_entry() {
        assert_eq!(entry("192.168.1.2"), BlacklistEntry::Ip(ip("192.168.1.2")));
    }

    #[test]
    fn an_ipv4_address_with_a_port_is_a_socket_entry() {
        assert_eq!(
            entry("192.168.1.2:8080"),
            BlacklistEntry::Socket(sock("192.168.1.2:8080"))
        );
    }

    #[test]
    fn a_bracketed_ipv6_address_with_a_port_is_a_socket_entry() {
        assert_eq!(
            entry("[::1]:8081"),
            BlacklistEntry::Socket(sock("[::1]:8081"))
        );
    }

    #[test]
    fn a_bracketed_ipv6_address_without_a_port_is_an_ip_entry() {
        assert_eq!(entry("[::2]"), BlacklistEntry::Ip(ip("::2")));
    }

    #[test]
    fn a_bare_ipv6_address_is_an_ip_entry() {
        assert_eq!(entry("::3"), BlacklistEntry::Ip(ip("::3")));
        assert_eq!(
            entry("2001:db8::1:80"),
            BlacklistEntry::Ip(ip("2001:db8::1:80")),
            "without brackets the last group is part of the address, not a port"
        );
    }

    #[test]
    fn a_base58_peer_id_is_a_peer_entry() {
        let peer = PeerId::random();
        assert_eq!(entry(&peer.to_base58()), BlacklistEntry::Peer(peer));
        let fixed = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert_eq!(entry(fixed).to_string(), fixed);
    }

    #[test]
    fn ipv4_mapped_addresses_parse_as_ipv4() {
        assert_eq!(entry("::ffff:1.2.3.4"), entry("1.2.3.4"));
        assert_eq!(entry("[::ffff:1.2.3.4]"), entry("1.2.3.4"));
        assert_eq!(entry("[::ffff:1.2.3.4]:80"), entry("1.2.3.4:80"));
    }

    #[test]
    fn malformed_entries_are_rejected_with_a_reason() {
        for text in [
            "",
            "hello",
            "192.168.1.256",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.4:99999",
            "1.2.3.4:0",
            "1.2.3.4:",
            "1.2.3.4:+80",
            "1.2.3.4: 80",
            "1.2.3.4:80:90",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:65536",
            "[1.2.3.4]",
            "[1.2.3.4]:80",
            "[fe80::1%2]:80",
            "[]",
            "::1::2",
            "::1:99999",
            " 1.2.3.4",
            "1.2.3.4 ",
            "12D3KooW",
            "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SAx",
            "/ip4/1.2.3.4/tcp/80",
        ] {
            let reason = rejection(text);
            assert!(!reason.is_empty(), "{text:?} rejected without a reason");
        }
    }

    #[test]
    fn rejection_reasons_point_at_the_mistake() {
        assert!(rejection("").contains("empty"));
        assert!(rejection("1.2.3.4:99999").contains("port '99999'"));
        assert!(rejection("[::1").contains("']'"));
        assert!(rejection("192.168.1.256").contains("IPv4"));
        assert!(rejection("::1::2").contains("[address]:port"));
        assert!(rejection("hello").contains("peer id"));
    }

    #[test]
    fn a_long_rejected_entry_is_echoed_cut() {
        let text = "é".repeat(1000);
        match text.parse::<BlacklistEntry>() {
            Err(Error::InvalidBlacklistEntry { entry, .. }) => {
                assert_eq!(entry.chars().count(), MAX_ECHOED_CHARS);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_form_round_trips_through_display() {
        let peer = PeerId::random().to_base58();
        for text in [
            "192.168.1.2",
            "192.168.1.2:8080",
            "[::1]:8081",
            "::2",
            "::3",
            "2001:db8::7",
            "[2001:db8::7]:65535",
            "0.0.0.0",
            peer.as_str(),
        ] {
            assert_eq!(entry(text).to_string(), text);
        }
        // A bracketed IPv6 without port is written bare, and reads back the same.
        assert_eq!(entry("[::2]").to_string(), "::2");
    }

    #[test]
    fn display_of_a_non_canonical_entry_is_still_parseable() {
        let scoped = SocketAddr::V6(SocketAddrV6::new(ip6("fe80::1"), 80, 7, 3));
        let entry = BlacklistEntry::Socket(scoped);
        assert_eq!(entry.to_string(), "[fe80::1]:80");
        assert_eq!(
            entry.to_string().parse::<BlacklistEntry>().ok(),
            Some(entry.canonical())
        );
    }

    fn ip6(text: &str) -> Ipv6Addr {
        match text.parse() {
            Ok(a) => a,
            Err(e) => panic!("{text:?} is an IPv6 address: {e}"),
        }
    }

    #[test]
    fn an_ip_entry_blocks_every_port_of_that_ip() {
        let mut b = Blacklist::default();
        assert_eq!(b.add(entry("10.0.0.1")).ok(), Some(true));
        assert!(b.blocks_addr(sock("10.0.0.1:1")));
        assert!(b.blocks_addr(sock("10.0.0.1:65535")));
        assert!(b.blocks_ip(ip("10.0.0.1")));
        assert!(!b.blocks_addr(sock("10.0.0.2:1")));
    }

    #[test]
    fn a_socket_entry_blocks_only_that_port() {
        let mut b = Blacklist::default();
        assert_eq!(b.add(entry("[2001:db8::1]:4001")).ok(), Some(true));
        assert!(b.blocks_addr(sock("[2001:db8::1]:4001")));
        assert!(!b.blocks_addr(sock("[2001:db8::1]:4002")));
        assert!(
            !b.blocks_ip(ip("2001:db8::1")),
            "one port does not ban the IP"
        );
    }

    #[test]
    fn ipv4_and_ipv6_entries_do_not_match_each_other_except_when_mapped() {
        let mut b = Blacklist::default();
        assert!(b.add(entry("::1")).is_ok());
        assert!(!b.blocks_addr(sock("127.0.0.1:80")));
        assert!(b.blocks_addr(sock("[::1]:80")));
    }

    #[test]
    fn an_ipv4_mapped_address_matches_its_ipv4_entries() {
        let mut b = Blacklist::default();
        assert!(b.add(entry("1.2.3.4")).is_ok());
        assert!(b.add(entry("5.6.7.8:9000")).is_ok());
        assert!(b.blocks_addr(sock("[::ffff:1.2.3.4]:1234")));
        assert!(b.blocks_ip(ip("::ffff:1.2.3.4")));
        assert!(b.blocks_addr(sock("[::ffff:5.6.7.8]:9000")));
        assert!(!b.blocks_addr(sock("[::ffff:5.6.7.8]:9001")));
    }

    #[test]
    fn an_entry_added_in_mapped_form_matches_plain_ipv4() {
        let mut b = Blacklist::default();
        let mapped = Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped();
        assert_eq!(
            b.add(BlacklistEntry::Ip(IpAddr::V6(mapped))).ok(),
            Some(true)
        );
        assert!(b.blocks_addr(sock("1.2.3.4:80")));
        assert_eq!(b.add(entry("1.2.3.4")).ok(), Some(false), "same entry");
        assert_eq!(b.entries(), vec![entry("1.2.3.4")]);
        assert!(b.remove(&BlacklistEntry::Ip(IpAddr::V6(mapped))));
        assert!(b.is_empty());
    }

    #[test]
    fn a_peer_entry_blocks_only_that_peer() {
        let (banned, other) = (PeerId::random(), PeerId::random());
        let mut b = Blacklist::default();
        assert!(b.add(BlacklistEntry::Peer(banned)).is_ok());
        assert!(b.blocks_peer(&banned));
        assert!(!b.blocks_peer(&other));
        assert!(!b.blocks_addr(sock("1.2.3.4:5")));
    }

    #[test]
    fn adding_twice_reports_the_entry_was_present() {
        let mut b = Blacklist::default();
        assert_eq!(b.add(entry("1.2.3.4:80")).ok(), Some(true));
        assert_eq!(b.add(entry("1.2.3.4:80")).ok(), Some(false));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn removing_lifts_only_that_entry() {
        let mut b = Blacklist::default();
        assert!(b.add(entry("1.2.3.4")).is_ok());
        assert!(b.add(entry("1.2.3.4:80")).is_ok());
        assert!(b.remove(&entry("1.2.3.4")));
        assert!(!b.remove(&entry("1.2.3.4")), "already removed");
        assert!(b.blocks_addr(sock("1.2.3.4:80")));
        assert!(!b.blocks_addr(sock("1.2.3.4:81")));
        assert!(b.contains(&entry("1.2.3.4:80")));
    }

    #[test]
    fn the_list_refuses_new_entries_beyond_its_limit() {
        let mut b = Blacklist::new(2);
        assert!(b.add(entry("1.1.1.1")).is_ok());
        assert!(b.add(entry("2.2.2.2")).is_ok());
        assert!(matches!(
            b.add(entry("3.3.3.3")),
            Err(Error::BlacklistFull { limit: 2 })
        ));
        assert_eq!(
            b.add(entry("1.1.1.1")).ok(),
            Some(false),
            "re-adding is no growth"
        );
        assert_eq!((b.len(), b.max_entries()), (2, 2));
        assert!(b.remove(&entry("1.1.1.1")));
        assert_eq!(b.add(entry("3.3.3.3")).ok(), Some(true), "room again");
        assert_eq!(Blacklist::default().max_entries(), 4096);
    }

    #[test]
    fn entries_are_listed_peers_then_ips_then_sockets() {
        let peer = PeerId::random();
        let mut b = Blacklist::default();
        for e in [
            entry("[::1]:80"),
            entry("9.9.9.9"),
            BlacklistEntry::Peer(peer),
            entry("1.1.1.1:1"),
            entry("::5"),
        ] {
            assert!(b.add(e).is_ok());
        }
        assert_eq!(
            b.entries(),
            vec![
                BlacklistEntry::Peer(peer),
                entry("9.9.9.9"),
                entry("::5"),
                entry("1.1.1.1:1"),
                entry("[::1]:80"),
            ]
        );
        let listed: Vec<String> = b.entries().iter().map(ToString::to_string).collect();
        let reread: Vec<BlacklistEntry> = listed.iter().map(|t| entry(t)).collect();
        assert_eq!(reread, b.entries());
    }

    #[test]
    fn blacklist_errors_read_as_sentences() {
        assert_eq!(
            Error::BlacklistFull { limit: 4096 }.to_string(),
            "blacklist full: limit of 4096 entries reached"
        );
        let err = "1.2.3.4:99999".parse::<BlacklistEntry>().err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(
                "invalid blacklist entry \"1.2.3.4:99999\": \
                 port '99999' is not a number from 1 to 65535"
                    .to_string()
            )
        );
    }

    fn any_entry() -> impl Strategy<Value = BlacklistEntry> {
        prop_oneof![
            // Peer ids are random keys; the byte strategy only drives the count.
            any::<u8>().prop_map(|_| BlacklistEntry::Peer(PeerId::random())),
            any::<IpAddr>().prop_map(BlacklistEntry::Ip),
            (any::<IpAddr>(), 1..=u16::MAX)
                .prop_map(|(ip, port)| BlacklistEntry::Socket(SocketAddr::new(ip, port))),
        ]
    }

    proptest! {
        #[test]
        fn any_entry_round_trips_through_its_text_form(e in any_entry()) {
            let text = e.to_string();
            prop_assert_eq!(text.parse::<BlacklistEntry>().ok(), Some(e.canonical()));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<BlacklistEntry>();
        }

        #[test]
        fn parsing_address_like_text_never_panics(text in "[\\[\\]:.0-9a-f%]{0,30}") {
            if let Ok(e) = text.parse::<BlacklistEntry>() {
                prop_assert_eq!(e.to_string().parse::<BlacklistEntry>().ok(), Some(e));
            }
        }
    }
}
