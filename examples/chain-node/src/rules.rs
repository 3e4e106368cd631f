//! The chain and the rules a node follows to extend it.

use super::*;

/// What [`Chain::apply`] did with a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The block was next and its parent the tip: appended, followed by `count - 1`
    /// blocks kept aside that now fit.
    Appended {
        /// Blocks appended (at least 1).
        count: u64,
    },
    /// The chain already holds this block.
    Known,
    /// The chain holds a different block at this height (a fork): ignored.
    Conflict {
        /// The height.
        height: u64,
    },
    /// The block is next but its parent is not the tip: refused.
    WrongParent {
        /// The block's height.
        height: u64,
        /// The tip's hash.
        expected: BlockHash,
        /// The block's parent.
        got: BlockHash,
    },
    /// The block is ahead of the tip: kept aside (if there is room); heights
    /// `from..=to` are missing.
    Gap {
        /// The first missing height.
        from: u64,
        /// The last missing height.
        to: u64,
    },
}

/// A chain held in memory, from genesis to the tip, and the blocks received
/// ahead of the tip.
#[derive(Debug, Clone)]
pub struct Chain {
    blocks: Vec<Block>,
    ahead: BTreeMap<u64, Block>,
}

impl Chain {
    /// A chain holding only the genesis block of `chain_id`.
    pub fn new(chain_id: &str) -> Self {
        Self {
            blocks: vec![Block::genesis(chain_id)],
            ahead: BTreeMap::new(),
        }
    }

    /// The last block.
    pub fn tip(&self) -> &Block {
        // Never empty: created with genesis, and blocks are only appended.
        &self.blocks[self.blocks.len() - 1]
    }

    /// The tip's height.
    pub fn height(&self) -> u64 {
        self.tip().height
    }

    /// The block at `height`, if held.
    pub fn get(&self, height: u64) -> Option<&Block> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.blocks.get(h))
    }

    /// Blocks kept aside, ahead of the tip.
    pub fn ahead(&self) -> usize {
        self.ahead.len()
    }

    /// What [`apply`](Self::apply) would do with `block`, without doing it (a
    /// block ahead of the tip is reported as a gap).
    pub fn check(&self, block: &Block) -> Verdict {
        let tip = self.tip();
        if block.height <= tip.height {
            return match self.get(block.height) {
                Some(held) if held.hash == block.hash => Verdict::Known,
                _ => Verdict::Conflict {
                    height: block.height,
                },
            };
        }
        if block.height == tip.height + 1 {
            if block.parent == tip.hash {
                Verdict::Appended { count: 1 }
            } else {
                Verdict::WrongParent {
                    height: block.height,
                    expected: tip.hash,
                    got: block.parent,
                }
            }
        } else {
            Verdict::Gap {
                from: tip.height + 1,
                to: block.height - 1,
            }
        }
    }

    /// Applies the rules to `block`: appends it if it is next and its parent is
    /// the tip (then also the blocks kept aside that follow it), keeps it aside if
    /// it is ahead of the tip, and otherwise leaves the chain unchanged.
    pub fn apply(&mut self, block: Block) -> Verdict {
        let verdict = self.check(&block);
        match verdict {
            Verdict::Appended { .. } => {
                self.blocks.push(block);
                let count = 1 + self.append_ahead();
                Verdict::Appended { count }
            }
            Verdict::Gap { .. } => {
                self.keep_ahead(block);
                verdict
            }
            _ => verdict,
        }
    }

    fn keep_ahead(&mut self, block: Block) {
        if self.ahead.len() >= MAX_PENDING_BLOCKS {
            // Keep the blocks nearest the tip: they are needed first.
            match self.ahead.last_key_value() {
                Some((&highest, _)) if highest > block.height => {
                    self.ahead.remove(&highest);
                }
                _ => return,
            }
        }
        self.ahead.insert(block.height, block);
    }

    /// Appends the blocks kept aside that now follow the tip; drops those that
    /// fell behind it or do not fit.
    fn append_ahead(&mut self) -> u64 {
        let mut count = 0;
        loop {
            let height = self.height();
            // Blocks at or below the tip are no use any more.
            while let Some(entry) = self.ahead.first_entry() {
                if *entry.key() > height {
                    break;
                }
                entry.remove();
            }
            match self.ahead.remove(&(height + 1)) {
                Some(next) if next.parent == self.tip().hash => {
                    self.blocks.push(next);
                    count += 1;
                }
                // Wrong parent: dropped; a sync will bring the right one.
                Some(_) => {}
                None => return count,
            }
        }
    }

    /// Builds the next block on the tip and appends it (the leader's step).
    pub fn produce(&mut self, payload: Vec<u8>) -> Block {
        let tip = self.tip();
        let block = Block::new(tip.height + 1, tip.hash, payload);
        self.blocks.push(block.clone());
        self.append_ahead();
        block
    }

    /// Up to `max` blocks from height `from` on, for a sync answer (empty when
    /// `from` is above the tip).
    pub fn blocks_from(&self, from: u64, max: u32) -> &[Block] {
        let len = self.blocks.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(max as usize).min(len);
        &self.blocks[start..end]
    }
}

/// The sync requests a node has in flight: at most one per peer, forgotten when
/// answered, when the peer disconnects, or after [`SYNC_REQUEST_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct SyncTracker<P> {
    in_flight: HashMap<P, Instant>,
    timeout: Duration,
}

impl<P: Eq + Hash + Clone> Default for SyncTracker<P> {
    fn default() -> Self {
        Self::new(SYNC_REQUEST_TIMEOUT)
    }
}

impl<P: Eq + Hash + Clone> SyncTracker<P> {
    /// A tracker whose requests expire after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            in_flight: HashMap::new(),
            timeout,
        }
    }

    /// Whether a request may be sent to `peer` now; if so it counts as in flight.
    pub fn begin(&mut self, peer: &P, now: Instant) -> bool {
        match self.in_flight.get(peer) {
            Some(sent) if now.saturating_duration_since(*sent) < self.timeout => false,
            _ => {
                self.in_flight.insert(peer.clone(), now);
                true
            }
        }
    }

    /// The answer from `peer` is complete (or the request failed).
    pub fn finish(&mut self, peer: &P) {
        self.in_flight.remove(peer);
    }

    /// Whether a request to `peer` is in flight.
    pub fn is_in_flight(&self, peer: &P, now: Instant) -> bool {
        self.in_flight
            .get(peer)
            .is_some_and(|sent| now.saturating_duration_since(*sent) < self.timeout)
    }
}

/// Whether to ask a peer again after its answer ended: it has more than we do.
pub fn wants_more(our_tip: u64, their_tip: u64) -> bool {
    their_tip > our_tip
}
