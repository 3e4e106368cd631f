//! Counting votes: when a block has the votes of two thirds of the chain.

use std::collections::{BTreeMap, HashSet};

use super::*;

/// Heights whose votes are kept; older ones are forgotten.
pub const VOTE_WINDOW: u64 = 64;

/// The votes received per block, over the last [`VOTE_WINDOW`] heights.
#[derive(Debug, Clone)]
pub struct VoteTally<P> {
    /// Per height and hash: who voted for it, and whether its quorum was reported.
    votes: BTreeMap<u64, BTreeMap<BlockHash, (HashSet<P>, bool)>>,
}

impl<P> Default for VoteTally<P> {
    fn default() -> Self {
        Self {
            votes: BTreeMap::new(),
        }
    }
}

/// Votes needed among `nodes` for a quorum: more than two thirds.
pub fn quorum(nodes: usize) -> usize {
    nodes * 2 / 3 + 1
}

impl<P: Eq + std::hash::Hash + Clone> VoteTally<P> {
    /// Records `voter`'s vote; returns the number of votes for that block when
    /// this vote gives it a quorum of `nodes` for the first time. Votes more
    /// than [`VOTE_WINDOW`] below the highest height seen are ignored.
    pub fn record(&mut self, voter: P, vote: Vote, nodes: usize) -> Option<usize> {
        let top = self.votes.keys().next_back().copied().unwrap_or(0);
        if vote.height + VOTE_WINDOW <= top {
            return None;
        }
        let (voters, reported) = self
            .votes
            .entry(vote.height)
            .or_default()
            .entry(vote.hash)
            .or_default();
        voters.insert(voter);
        let count = voters.len();
        let reached = !*reported && count >= quorum(nodes);
        if reached {
            *reported = true;
        }
        let top = top.max(vote.height);
        while let Some((&low, _)) = self.votes.first_key_value() {
            if low + VOTE_WINDOW > top {
                break;
            }
            self.votes.remove(&low);
        }
        reached.then_some(count)
    }
}
