//! `ProtocolBook`: which application protocols each connected peer supports, and
//! the limits it stated in the exchange.
//!
//! Filled by the protocol exchange on a peer's first connection and by its pushes
//! afterwards; emptied when the peer's last connection closes. A peer whose
//! exchange failed is `Unknown`: nothing is known to be unsupported, so sends to it
//! are not failed early.

use std::collections::{BTreeSet, HashMap};

use libp2p_identity::PeerId;

use crate::exchange::PeerLimits;

/// A difference between a peer's old and new list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolChange {
    /// The peer now supports this protocol.
    Supported(String),
    /// The peer no longer supports this protocol.
    Unsupported(String),
}

#[derive(Debug, Clone)]
enum Entry {
    Unknown,
    Known(BTreeSet<String>),
}

/// Per-peer protocol lists. See the module documentation.
#[derive(Debug, Default)]
pub struct ProtocolBook {
    peers: HashMap<PeerId, Entry>,
    /// Only for peers that stated any.
    limits: HashMap<PeerId, PeerLimits>,
}

impl ProtocolBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the limits `peer` stated (see [`PeerLimits`]).
    pub fn set_limits(&mut self, peer: PeerId, limits: PeerLimits) {
        if limits == PeerLimits::default() {
            self.limits.remove(&peer);
        } else {
            self.limits.insert(peer, limits);
        }
    }

    /// The limits `peer` stated; empty if it stated none.
    pub fn limits(&self, peer: &PeerId) -> PeerLimits {
        self.limits.get(peer).copied().unwrap_or_default()
    }

    /// Records `peer`'s full list; returns every difference from the previous one.
    pub fn update(
        &mut self,
        peer: PeerId,
        protocols: impl IntoIterator<Item = String>,
    ) -> Vec<ProtocolChange> {
        let new: BTreeSet<String> = protocols.into_iter().collect();
        let old = match self.peers.insert(peer, Entry::Known(new.clone())) {
            Some(Entry::Known(old)) => old,
            _ => BTreeSet::new(),
        };
        let mut changes: Vec<_> = new
            .difference(&old)
            .map(|p| ProtocolChange::Supported(p.clone()))
            .collect();
        changes.extend(
            old.difference(&new)
                .map(|p| ProtocolChange::Unsupported(p.clone())),
        );
        changes
    }

    /// Marks `peer`'s list unknown (its exchange failed), unless a list already arrived.
    pub fn mark_unknown(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_insert(Entry::Unknown);
    }

    /// Forgets `peer` (its last connection closed).
    pub fn remove(&mut self, peer: &PeerId) {
        self.limits.remove(peer);
        self.peers.remove(peer);
    }

    /// Whether `peer` is known to support `protocol`.
    pub fn is_supported(&self, peer: &PeerId, protocol: &str) -> bool {
        matches!(self.peers.get(peer), Some(Entry::Known(list)) if list.contains(protocol))
    }

    /// Whether `peer`'s list is known and lacks `protocol`.
    pub fn is_known_unsupported(&self, peer: &PeerId, protocol: &str) -> bool {
        matches!(self.peers.get(peer), Some(Entry::Known(list)) if !list.contains(protocol))
    }

    /// Whether `peer` is known to support a protocol starting with `prefix`.
    pub fn supports_prefix(&self, peer: &PeerId, prefix: &str) -> bool {
        matches!(
            self.peers.get(peer),
            Some(Entry::Known(list)) if list
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                .next()
                .is_some_and(|p| p.starts_with(prefix))
        )
    }

    /// `peer`'s list, if known.
    pub fn protocols(&self, peer: &PeerId) -> Option<Vec<String>> {
        match self.peers.get(peer) {
            Some(Entry::Known(list)) => Some(list.iter().cloned().collect()),
            _ => None,
        }
    }

    /// Peers known to support every protocol in `protocols`.
    pub fn peers_supporting(&self, protocols: &[&str]) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Known(list) if protocols.iter().all(|p| list.contains(*p))))
            .map(|(p, _)| *p)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn every_difference_is_reported_including_a_push_that_empties_the_list() {
        let mut book = ProtocolBook::new();
        let peer = PeerId::random();
        assert_eq!(
            book.update(peer, s(&["/a", "/b"])),
            vec![
                ProtocolChange::Supported("/a".into()),
                ProtocolChange::Supported("/b".into())
            ]
        );
        assert_eq!(
            book.update(peer, s(&["/b", "/c"])),
            vec![
                ProtocolChange::Supported("/c".into()),
                ProtocolChange::Unsupported("/a".into())
            ]
        );
        assert_eq!(
            book.update(peer, Vec::new()),
            vec![
                ProtocolChange::Unsupported("/b".into()),
                ProtocolChange::Unsupported("/c".into())
            ]
        );
        assert!(book.is_known_unsupported(&peer, "/b"));
    }

    #[test]
    fn unknown_peers_are_neither_supported_nor_known_unsupported() {
        let mut book = ProtocolBook::new();
        let peer = PeerId::random();
        book.mark_unknown(peer);
        assert!(!book.is_supported(&peer, "/a"));
        assert!(!book.is_known_unsupported(&peer, "/a"));
        assert_eq!(book.protocols(&peer), None);
        book.update(peer, s(&["/a"]));
        book.mark_unknown(peer);
        assert!(book.is_supported(&peer, "/a"), "a known list is kept");
        book.remove(&peer);
        assert!(!book.is_supported(&peer, "/a"));
    }

    #[test]
    fn peers_supporting_needs_every_protocol() {
        let mut book = ProtocolBook::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        book.update(a, s(&["/x", "/y"]));
        book.update(b, s(&["/x"]));
        let mut both = book.peers_supporting(&["/x"]);
        both.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(both, expected);
        assert_eq!(book.peers_supporting(&["/x", "/y"]), vec![a]);
    }
    #[test]
    fn a_prefix_matches_only_protocols_that_start_with_it() {
        let mut book = ProtocolBook::new();
        let peer = PeerId::random();
        assert!(!book.supports_prefix(&peer, "/chain/a/"), "unknown peer");
        book.update(
            peer,
            vec![
                "/chain/ab/x".into(),
                "/chain/a/blocks/1".into(),
                "/z".into(),
            ],
        );
        assert!(book.supports_prefix(&peer, "/chain/a/"));
        assert!(book.supports_prefix(&peer, "/chain/ab/"));
        assert!(!book.supports_prefix(&peer, "/chain/b/"));
        assert!(!book.supports_prefix(&peer, "/chain/a/c"));
    }
}
