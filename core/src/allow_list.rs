//! `AllowList`: when active, the only peers a host connects with.
//!
//! A chain whose members are known (validators, a consortium) lists their peer
//! ids; any other peer is refused right after the handshake (it is told
//! [`RemoteRefusal::NotAllowed`](crate::RemoteRefusal::NotAllowed)) and never
//! dialled. Inactive (the default), every peer may connect, subject to the other
//! limits. The list is bounded by `max_entries`.

use std::collections::HashSet;

use libp2p_identity::PeerId;

use crate::error::Error;

/// The peers allowed to connect, when the list is active.
///
/// ```
/// use liquid_p2p_core::{AllowList, PeerId};
///
/// let (member, stranger) = (PeerId::random(), PeerId::random());
/// let mut list = AllowList::new(16);
/// assert!(list.allows(&stranger), "inactive: everyone");
/// list.set(Some(vec![member]))?;
/// assert!(list.allows(&member) && !list.allows(&stranger));
/// # Ok::<(), liquid_p2p_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    peers: Option<HashSet<PeerId>>,
    max_entries: usize,
}

impl AllowList {
    /// An inactive list that may hold up to `max_entries` peers once active.
    pub fn new(max_entries: usize) -> Self {
        Self {
            peers: None,
            max_entries,
        }
    }

    /// Whether the list is active (only its peers may connect).
    pub fn is_active(&self) -> bool {
        self.peers.is_some()
    }

    /// Whether `peer` may connect: always when inactive, else if listed.
    pub fn allows(&self, peer: &PeerId) -> bool {
        self.peers.as_ref().is_none_or(|peers| peers.contains(peer))
    }

    /// Makes `peers` the list (`None` deactivates it). Fails, changing nothing,
    /// with more than `max_entries` distinct peers.
    pub fn set(&mut self, peers: Option<impl IntoIterator<Item = PeerId>>) -> Result<(), Error> {
        let peers = match peers {
            Some(peers) => {
                let set: HashSet<PeerId> = peers.into_iter().collect();
                if set.len() > self.max_entries {
                    return Err(Error::AllowListFull {
                        limit: self.max_entries,
                    });
                }
                Some(set)
            }
            None => None,
        };
        self.peers = peers;
        Ok(())
    }

    /// Adds `peer`, activating the list if it was not; returns whether it is new.
    pub fn add(&mut self, peer: PeerId) -> Result<bool, Error> {
        let peers = self.peers.get_or_insert_with(HashSet::new);
        if peers.contains(&peer) {
            return Ok(false);
        }
        if peers.len() >= self.max_entries {
            return Err(Error::AllowListFull {
                limit: self.max_entries,
            });
        }
        Ok(peers.insert(peer))
    }

    /// Removes `peer` (the list stays active, possibly empty); returns whether
    /// it was listed.
    pub fn remove(&mut self, peer: &PeerId) -> bool {
        self.peers.as_mut().is_some_and(|peers| peers.remove(peer))
    }

    /// The listed peers, sorted; `None` when inactive.
    pub fn peers(&self) -> Option<Vec<PeerId>> {
        self.peers.as_ref().map(|peers| {
            let mut list: Vec<_> = peers.iter().copied().collect();
            list.sort();
            list
        })
    }

    /// The most peers the list holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_allows_everyone_and_an_empty_active_list_nobody() {
        let peer = PeerId::random();
        let mut list = AllowList::new(4);
        assert!(!list.is_active() && list.allows(&peer));
        assert_eq!(list.peers(), None);
        list.set(Some(Vec::new())).expect("set");
        assert!(list.is_active() && !list.allows(&peer));
        assert_eq!(list.peers(), Some(Vec::new()));
        list.set(None::<Vec<PeerId>>).expect("unset");
        assert!(list.allows(&peer));
    }

    #[test]
    fn adding_activates_removing_keeps_it_active_and_the_bound_holds() {
        let peers: Vec<_> = (0..3).map(|_| PeerId::random()).collect();
        let mut list = AllowList::new(2);
        assert!(matches!(list.add(peers[0]), Ok(true)));
        assert!(list.is_active() && list.allows(&peers[0]) && !list.allows(&peers[1]));
        assert!(matches!(list.add(peers[0]), Ok(false)));
        assert!(matches!(list.add(peers[1]), Ok(true)));
        assert!(matches!(
            list.add(peers[2]),
            Err(Error::AllowListFull { limit: 2 })
        ));
        assert!(matches!(
            list.set(Some(peers.clone())),
            Err(Error::AllowListFull { limit: 2 })
        ));
        assert!(list.allows(&peers[1]), "a failed set changes nothing");
        assert!(list.remove(&peers[0]) && !list.remove(&peers[0]));
        assert!(list.is_active() && !list.allows(&peers[0]));
    }
}
