//! The pure parts of the `chain_node` example: its configuration file, blocks and
//! their byte encoding, the sync messages, the rules a node follows to extend its
//! chain, and the JSON lines it prints. Nothing here touches the network, so all of
//! it is unit tested.
//!
//! # Configuration (TOML)
//!
//! ```toml
//! name = "node1"                      # optional; default: the file name without extension
//! listen = ["/ip4/127.0.0.1/tcp/4101"]
//! key_file = "node1.key"              # created if missing; relative to the config file
//! required_peers = ["/ip4/127.0.0.1/tcp/4102/p2p/12D3Koo..."]
//! chain_id = "demo"                   # [A-Za-z0-9._-], 1 to 64 characters
//! leader = true                       # default false
//! block_interval_ms = 500             # leader only; default 500
//! ```
//!
//! The chain is kept in memory only: a restarted node starts from genesis and
//! catches up from its peers.
//!
//! # Protocols and wire format
//!
//! Both protocols are named after the chain: `/chain/<id>/consensus/1` and
//! `/chain/<id>/sync/1`. Integers are big-endian.
//!
//! A block:
//!
//! ```text
//! u64 height | u64 parent hash | u64 hash | u32 payload_len (<= 1 MiB) | payload
//! ```
//!
//! The hash is checked when a block is decoded. `consensus/1` carries one block
//! per message (the leader sends each new block to every connected peer). Every
//! `sync/1` message starts with a tag byte:
//!
//! ```text
//! 0x01 Request  u64 from_height | u32 max_blocks     "send me your blocks from here"
//! 0x02 Block    <block>                              one block of an answer
//! 0x03 Done     u64 tip_height  | u32 blocks_sent    end of an answer
//! ```
//!
//! An answer (the `Block`s in height order, then `Done`) is written through one
//! exclusive stream, so it arrives in order. Bytes that do not decode are an
//! [`DecodeError`]: the node logs it and skips the message.
//!
//! # Rules
//!
//! [`Chain::apply`] takes a block whose height is the next one and whose parent is
//! the tip ([`Verdict::Appended`]); refuses one whose parent is not the tip
//! ([`Verdict::WrongParent`]); ignores one it already has ([`Verdict::Known`]) or
//! that contradicts it ([`Verdict::Conflict`]); and keeps (a bounded number of)
//! blocks ahead of the tip aside, reporting the [`Verdict::Gap`] so the node asks a
//! peer for the missing range. [`SyncTracker`] keeps at most one sync request in
//! flight per peer.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::Hash,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use liquid_p2p::{PeerId, libp2p::Multiaddr, libp2p::multiaddr::Protocol};
use serde::{Deserialize, Serialize};

/// Block interval of a leader whose configuration does not set one.
pub const DEFAULT_BLOCK_INTERVAL_MS: u64 = 500;
/// Largest payload a block may carry.
pub const MAX_PAYLOAD_LEN: usize = 1024 * 1024;
/// Most blocks sent in one sync answer; a node further behind asks again.
pub const MAX_SYNC_BATCH: u32 = 512;
/// Most blocks ahead of the tip kept aside while a gap is being filled.
pub const MAX_PENDING_BLOCKS: usize = 256;
/// How long a sync request may stay unanswered before another may be sent to the
/// same peer.
pub const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// The configuration file as written: what `chain_node --config` reads and
/// `chain_cluster` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The node's name in its output. Default: the config file's stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Addresses to listen on (may be empty: the node only dials out).
    pub listen: Vec<String>,
    /// The identity key: created if missing, reused otherwise.
    pub key_file: PathBuf,
    /// Peers kept connected, each address ending in `/p2p/<peer id>`.
    #[serde(default)]
    pub required_peers: Vec<String>,
    /// Names the chain and its protocols.
    pub chain_id: String,
    /// Whether this node produces blocks.
    #[serde(default)]
    pub leader: bool,
    /// Time between blocks, for the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_interval_ms: Option<u64>,
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's name in its output.
    pub name: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// The identity key file (relative paths resolved against the config's folder).
    pub key_file: PathBuf,
    /// Required peers.
    pub required_peers: Vec<Multiaddr>,
    /// The chain id.
    pub chain_id: String,
    /// Whether this node produces blocks.
    pub leader: bool,
    /// Time between blocks, for the leader.
    pub block_interval: Duration,
}

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigFile {
    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError(format!("cannot write TOML: {e}")))
    }
}

impl NodeConfig {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into());
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, &name, base).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and checks TOML text. `default_name` is used when the file sets no
    /// `name`; a relative `key_file` is resolved against `base_dir`.
    pub fn parse(text: &str, default_name: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim_end().to_owned()))?;
        Self::from_file(file, default_name, base_dir)
    }

    /// Checks a parsed configuration.
    pub fn from_file(
        file: ConfigFile,
        default_name: &str,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let name = file.name.unwrap_or_else(|| default_name.to_owned());
        if name.is_empty() {
            return Err(ConfigError("`name` must not be empty".into()));
        }
        check_chain_id(&file.chain_id)?;
        let listen = file
            .listen
            .iter()
            .map(|a| {
                Multiaddr::from_str(a)
                    .map_err(|e| ConfigError(format!("`listen`: invalid multiaddr `{a}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let required_peers = file
            .required_peers
            .iter()
            .map(|a| parse_peer_address(a).map(|(address, _)| address))
            .collect::<Result<Vec<_>, _>>()?;
        let interval_ms = file.block_interval_ms.unwrap_or(DEFAULT_BLOCK_INTERVAL_MS);
        if !(10..=3_600_000).contains(&interval_ms) {
            return Err(ConfigError(format!(
                "`block_interval_ms` must be between 10 and 3600000, not {interval_ms}"
            )));
        }
        if file.key_file.as_os_str().is_empty() {
            return Err(ConfigError("`key_file` must not be empty".into()));
        }
        let key_file = if file.key_file.is_relative() {
            base_dir.join(&file.key_file)
        } else {
            file.key_file
        };
        Ok(Self {
            name,
            listen,
            key_file,
            required_peers,
            chain_id: file.chain_id,
            leader: file.leader,
            block_interval: Duration::from_millis(interval_ms),
        })
    }
}

/// A chain id names protocols: 1 to 64 characters from `[A-Za-z0-9._-]`.
pub fn check_chain_id(id: &str) -> Result<(), ConfigError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError(format!(
            "`chain_id` must be 1 to 64 characters from [A-Za-z0-9._-], not `{id}`"
        )))
    }
}

/// Parses a required peer's address, which must end in `/p2p/<peer id>`.
pub fn parse_peer_address(text: &str) -> Result<(Multiaddr, PeerId), ConfigError> {
    let address = Multiaddr::from_str(text)
        .map_err(|e| ConfigError(format!("`required_peers`: invalid multiaddr `{text}`: {e}")))?;
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((address, peer)),
        _ => Err(ConfigError(format!(
            "`required_peers`: `{text}` must end in /p2p/<peer id>"
        ))),
    }
}

/// The protocol ids of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProtocols {
    /// `/chain/<id>/consensus/1`: new blocks from the leader.
    pub consensus: String,
    /// `/chain/<id>/sync/1`: requests for blocks and their answers.
    pub sync: String,
}

impl ChainProtocols {
    /// The protocols of chain `chain_id`.
    pub fn new(chain_id: &str) -> Self {
        Self {
            consensus: format!("/chain/{chain_id}/consensus/1"),
            sync: format!("/chain/{chain_id}/sync/1"),
        }
    }
}

// ---------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------

/// A block hash. FNV-1a, 64 bits: **for this example only** — it is not a
/// cryptographic hash and anyone can forge a block with a chosen hash. A real chain
/// uses SHA-256 or BLAKE3 and signs its blocks.
pub type BlockHash = u64;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        state ^= u64::from(*byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// The hash of a block's fields (example only; see [`BlockHash`]).
pub fn block_hash(height: u64, parent: BlockHash, payload: &[u8]) -> BlockHash {
    let mut state = fnv1a(FNV_OFFSET, b"liquid-chain-example/1");
    state = fnv1a(state, &height.to_be_bytes());
    state = fnv1a(state, &parent.to_be_bytes());
    state = fnv1a(state, &(payload.len() as u64).to_be_bytes());
    fnv1a(state, payload)
}

/// A hash as 16 hexadecimal digits.
pub fn hash_hex(hash: BlockHash) -> String {
    format!("{hash:016x}")
}

/// One block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Height: 0 for genesis.
    pub height: u64,
    /// The hash of the block at `height - 1` (0 for genesis).
    pub parent: BlockHash,
    /// Application data.
    pub payload: Vec<u8>,
    /// [`block_hash`] of the fields above.
    pub hash: BlockHash,
}

/// Why bytes from the network were not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended early.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        got: usize,
    },
    /// Bytes after the end of the message.
    TrailingBytes(usize),
    /// The payload is larger than [`MAX_PAYLOAD_LEN`].
    PayloadTooLarge(usize),
    /// The hash does not match the fields.
    BadHash {
        /// The height of the block.
        height: u64,
    },
    /// An unknown sync message tag.
    UnknownTag(u8),
    /// An empty message.
    Empty,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, got } => {
                write!(f, "truncated: needed {needed} bytes, got {got}")
            }
            Self::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
            Self::PayloadTooLarge(n) => {
                write!(f, "payload of {n} bytes exceeds {MAX_PAYLOAD_LEN}")
            }
            Self::BadHash { height } => write!(f, "block {height}: hash does not match"),
            Self::UnknownTag(t) => write!(f, "unknown sync message tag 0x{t:02x}"),
            Self::Empty => f.write_str("empty message"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads big-endian integers off the front of a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                got: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

impl Block {
    /// A block with its hash computed.
    pub fn new(height: u64, parent: BlockHash, payload: Vec<u8>) -> Self {
        let hash = block_hash(height, parent, &payload);
        Self {
            height,
            parent,
            payload,
            hash,
        }
    }

    /// The genesis block of chain `chain_id`: the same on every node.
    pub fn genesis(chain_id: &str) -> Self {
        Self::new(0, 0, format!("genesis of {chain_id}").into_bytes())
    }

    /// Appends the encoding of this block to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.parent.to_be_bytes());
        out.extend_from_slice(&self.hash.to_be_bytes());
        // Blocks are built locally with payloads far below u32::MAX.
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The encoding of this block (the payload of a `consensus/1` message).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let height = reader.u64()?;
        let parent = reader.u64()?;
        let hash = reader.u64()?;
        let len = reader.u32()? as usize;
        if len > MAX_PAYLOAD_LEN {
            return Err(DecodeError::PayloadTooLarge(len));
        }
        let payload = reader.take(len)?.to_vec();
        let block = Self::new(height, parent, payload);
        if block.hash != hash {
            return Err(DecodeError::BadHash { height });
        }
        Ok(block)
    }

    /// Decodes one block (the whole of `bytes`) and checks its hash.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader { bytes };
        let block = Self::read(&mut reader)?;
        reader.finish()?;
        Ok(block)
    }
}

/// One message on `/chain/<id>/sync/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// Asks for blocks from height `from` on, at most `max`.
    Request {
        /// The first height wanted.
        from: u64,
        /// The most blocks wanted.
        max: u32,
    },
    /// One block of an answer.
    Block(Block),
    /// The end of an answer.
    Done {
        /// The answering node's tip height.
        tip: u64,
        /// How many blocks the answer carried.
        sent: u32,
    },
}

const TAG_REQUEST: u8 = 0x01;
const TAG_BLOCK: u8 = 0x02;
const TAG_DONE: u8 = 0x03;

impl SyncMessage {
    /// The bytes of this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Request { from, max } => {
                out.push(TAG_REQUEST);
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(&max.to_be_bytes());
            }
            Self::Block(block) => {
                out.push(TAG_BLOCK);
                block.encode_into(&mut out);
            }
            Self::Done { tip, sent } => {
                out.push(TAG_DONE);
                out.extend_from_slice(&tip.to_be_bytes());
                out.extend_from_slice(&sent.to_be_bytes());
            }
        }
        out
    }

    /// Decodes one message (the whole of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let mut reader = Reader { bytes: rest };
        let message = match tag {
            TAG_REQUEST => Self::Request {
                from: reader.u64()?,
                max: reader.u32()?,
            },
            TAG_BLOCK => Self::Block(Block::read(&mut reader)?),
            TAG_DONE => Self::Done {
                tip: reader.u64()?,
                sent: reader.u32()?,
            },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        reader.finish()?;
        Ok(message)
    }
}

// ---------------------------------------------------------------------------
// The chain and its rules
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Every line `chain_node` prints on stdout: one JSON object each, whose `event`
/// field is the variant name in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeOutput {
    /// The node is up.
    Started {
        /// Its name.
        node: String,
        /// Its peer id.
        peer_id: String,
        /// The chain.
        chain_id: String,
        /// Whether it produces blocks.
        leader: bool,
        /// Its listen addresses, ending in `/p2p/<id>`.
        listen: Vec<String>,
        /// Its tip height (0: genesis).
        height: u64,
    },
    /// The tip moved.
    Tip {
        /// The node.
        node: String,
        /// The new tip's height.
        height: u64,
        /// The new tip's hash (16 hex digits).
        hash: String,
    },
    /// A sync request was sent.
    SyncRequest {
        /// The node.
        node: String,
        /// To whom.
        peer: String,
        /// The first height asked for.
        from_height: u64,
        /// Why: `connected`, `protocol_supported`, `gap`, `more`,
        /// `events_dropped` or `retry`.
        reason: String,
    },
    /// An answer to a sync request ended.
    Synced {
        /// The node.
        node: String,
        /// The peer that answered.
        from: String,
        /// Blocks of the answer that were appended.
        blocks: u64,
        /// The tip height after the answer.
        height: u64,
        /// The peer's tip height.
        peer_height: u64,
    },
    /// A peer is connected.
    PeerConnected {
        /// The node.
        node: String,
        /// The peer.
        peer: String,
        /// Peers connected now.
        peers: usize,
    },
    /// A peer's last connection closed.
    PeerDisconnected {
        /// The node.
        node: String,
        /// The peer.
        peer: String,
        /// Peers connected now.
        peers: usize,
    },
    /// The node is shutting down.
    Stopped {
        /// The node.
        node: String,
        /// Its tip height.
        height: u64,
    },
}

impl NodeOutput {
    /// One JSON object, without a newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                "{{\"event\":\"error\",\"message\":{}}}",
                serde_json::Value::String(format!("cannot render output: {e}"))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_address(port: u16) -> String {
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", PeerId::random())
    }

    #[test]
    fn config_parses_every_field_and_resolves_the_key_file() {
        let required = peer_address(4102);
        let text = format!(
            r#"
            name = "alpha"
            listen = ["/ip4/127.0.0.1/tcp/4101"]
            key_file = "keys/alpha.key"
            required_peers = ["{required}"]
            chain_id = "demo-1"
            leader = true
            block_interval_ms = 250
            "#
        );
        let config = NodeConfig::parse(&text, "ignored", Path::new("/etc/chain")).unwrap();
        assert_eq!(config.name, "alpha");
        assert_eq!(
            config.listen,
            vec!["/ip4/127.0.0.1/tcp/4101".parse().unwrap()]
        );
        assert_eq!(config.key_file, Path::new("/etc/chain/keys/alpha.key"));
        assert_eq!(config.required_peers, vec![required.parse().unwrap()]);
        assert_eq!(config.chain_id, "demo-1");
        assert!(config.leader);
        assert_eq!(config.block_interval, Duration::from_millis(250));
    }

    #[test]
    fn config_defaults() {
        let text = r#"
            listen = []
            key_file = "/abs/n.key"
            chain_id = "c"
        "#;
        let config = NodeConfig::parse(text, "node7", Path::new("/x")).unwrap();
        assert_eq!(config.name, "node7");
        assert_eq!(config.key_file, Path::new("/abs/n.key"));
        assert!(config.required_peers.is_empty());
        assert!(!config.leader);
        assert_eq!(
            config.block_interval,
            Duration::from_millis(DEFAULT_BLOCK_INTERVAL_MS)
        );
    }

    #[test]
    fn config_errors_are_reported() {
        let base =
            |extra: &str| format!("listen = []\nkey_file = \"k\"\nchain_id = \"c\"\n{extra}");
        let err = |text: &str| NodeConfig::parse(text, "n", Path::new(".")).unwrap_err().0;
        assert!(err("listen = []\nchain_id = \"c\"").contains("key_file"));
        assert!(err(&base("colour = 3")).contains("colour"));
        assert!(
            err(&base("required_peers = [\"/ip4/127.0.0.1/tcp/1\"]")).contains("/p2p/<peer id>")
        );
        assert!(err(&base("required_peers = [\"nonsense\"]")).contains("invalid multiaddr"));
        assert!(err(&base("block_interval_ms = 0")).contains("block_interval_ms"));
        assert!(err(&base("leader = \"yes\"")).contains("leader"));
        let bad_id = "listen = []\nkey_file = \"k\"\nchain_id = \"a/b\"";
        assert!(err(bad_id).contains("chain_id"));
        assert!(err("listen = [\"/nope\"]\nkey_file = \"k\"\nchain_id = \"c\"").contains("listen"));
    }

    #[test]
    fn config_file_round_trips_through_toml() {
        let file = ConfigFile {
            name: Some("node3".into()),
            listen: vec!["/ip4/127.0.0.1/tcp/4103".into()],
            key_file: "node3.key".into(),
            required_peers: vec![peer_address(4101), peer_address(4102)],
            chain_id: "demo".into(),
            leader: false,
            block_interval_ms: None,
        };
        let text = file.to_toml().unwrap();
        assert_eq!(toml::from_str::<ConfigFile>(&text).unwrap(), file);
        NodeConfig::parse(&text, "x", Path::new(".")).unwrap();
    }

    #[test]
    fn protocols_are_named_by_chain() {
        let p = ChainProtocols::new("demo");
        assert_eq!(p.consensus, "/chain/demo/consensus/1");
        assert_eq!(p.sync, "/chain/demo/sync/1");
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn block_encoding_round_trips_and_checks_the_hash() {
        let genesis = Block::genesis("demo");
        let block = Block::new(1, genesis.hash, b"hello".to_vec());
        let bytes = block.encode();
        assert_eq!(bytes.len(), 28 + 5);
        assert_eq!(Block::decode(&bytes).unwrap(), block);
        let empty = Block::new(2, block.hash, Vec::new());
        assert_eq!(Block::decode(&empty.encode()).unwrap(), empty);

        // Any change to a field breaks the hash.
        let mut tampered = bytes.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            Block::decode(&tampered),
            Err(DecodeError::BadHash { height: 1 })
        );
        assert!(matches!(
            Block::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Block::decode(&long), Err(DecodeError::TrailingBytes(1)));
        let mut huge = bytes[..24].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Block::decode(&huge),
            Err(DecodeError::PayloadTooLarge(_))
        ));
        assert!(Block::decode(&[]).is_err());
    }

    #[test]
    fn genesis_depends_only_on_the_chain_id() {
        assert_eq!(Block::genesis("a"), Block::genesis("a"));
        assert_ne!(Block::genesis("a").hash, Block::genesis("b").hash);
        assert_eq!(Block::genesis("a").height, 0);
    }

    #[test]
    fn sync_messages_round_trip() {
        let block = Block::new(7, 42, b"x".to_vec());
        for message in [
            SyncMessage::Request { from: 5, max: 100 },
            SyncMessage::Block(block),
            SyncMessage::Done { tip: 9, sent: 3 },
        ] {
            assert_eq!(SyncMessage::decode(&message.encode()).unwrap(), message);
        }
        assert_eq!(SyncMessage::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(SyncMessage::decode(&[9]), Err(DecodeError::UnknownTag(9)));
        assert!(SyncMessage::decode(&[TAG_DONE, 1, 2]).is_err());
        let mut long = SyncMessage::Request { from: 1, max: 1 }.encode();
        long.push(0);
        assert_eq!(
            SyncMessage::decode(&long),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            let _ = Block::decode(&bytes);
            let _ = SyncMessage::decode(&bytes);
        }
    }

    /// A chain of `n` blocks after genesis, built by a leader.
    fn leader_chain(n: u64) -> Chain {
        let mut chain = Chain::new("demo");
        for i in 1..=n {
            chain.produce(format!("block {i}").into_bytes());
        }
        chain
    }

    #[test]
    fn the_next_block_with_the_right_parent_is_accepted() {
        let leader = leader_chain(3);
        let mut follower = Chain::new("demo");
        assert_eq!(follower.tip(), leader.get(0).unwrap());
        for h in 1..=3 {
            let block = leader.get(h).unwrap().clone();
            assert_eq!(follower.apply(block), Verdict::Appended { count: 1 });
            assert_eq!(follower.height(), h);
        }
        assert_eq!(follower.tip(), leader.tip());
        // Again: already known.
        assert_eq!(
            follower.apply(leader.get(2).unwrap().clone()),
            Verdict::Known
        );
    }

    #[test]
    fn a_block_with_the_wrong_parent_is_refused() {
        let leader = leader_chain(2);
        let mut follower = Chain::new("demo");
        follower.apply(leader.get(1).unwrap().clone());
        let forged = Block::new(2, 0xdead_beef, b"fork".to_vec());
        assert_eq!(
            follower.apply(forged),
            Verdict::WrongParent {
                height: 2,
                expected: leader.get(1).unwrap().hash,
                got: 0xdead_beef,
            }
        );
        assert_eq!(follower.height(), 1);
        // A different block at a height already held is a conflict, not a change.
        let other = Block::new(1, leader.get(0).unwrap().hash, b"other".to_vec());
        assert_eq!(follower.apply(other), Verdict::Conflict { height: 1 });
        assert_eq!(follower.tip(), leader.get(1).unwrap());
        // Another chain's genesis is not ours.
        assert_eq!(
            Chain::new("other").apply(leader.get(1).unwrap().clone()),
            Verdict::WrongParent {
                height: 1,
                expected: Block::genesis("other").hash,
                got: leader.get(0).unwrap().hash,
            }
        );
    }

    #[test]
    fn a_block_ahead_of_the_tip_is_a_gap_and_fits_once_the_gap_is_filled() {
        let leader = leader_chain(6);
        let mut follower = Chain::new("demo");
        follower.apply(leader.get(1).unwrap().clone());
        assert_eq!(
            follower.apply(leader.get(4).unwrap().clone()),
            Verdict::Gap { from: 2, to: 3 }
        );
        assert_eq!(
            follower.apply(leader.get(5).unwrap().clone()),
            Verdict::Gap { from: 2, to: 4 }
        );
        assert_eq!(follower.height(), 1);
        assert_eq!(follower.ahead(), 2);
        // The sync answer fills the gap; the kept blocks follow.
        assert_eq!(
            follower.apply(leader.get(2).unwrap().clone()),
            Verdict::Appended { count: 1 }
        );
        assert_eq!(
            follower.apply(leader.get(3).unwrap().clone()),
            Verdict::Appended { count: 3 }
        );
        assert_eq!(follower.height(), 5);
        assert_eq!(follower.ahead(), 0);
        assert_eq!(follower.tip(), leader.get(5).unwrap());
        assert_eq!(
            follower.check(leader.get(6).unwrap()),
            Verdict::Appended { count: 1 }
        );
    }

    #[test]
    fn blocks_kept_aside_are_bounded_and_nearest_first() {
        let leader = leader_chain(MAX_PENDING_BLOCKS as u64 + 10);
        let mut follower = Chain::new("demo");
        for h in (2..=leader.height()).rev() {
            follower.apply(leader.get(h).unwrap().clone());
        }
        assert_eq!(follower.ahead(), MAX_PENDING_BLOCKS);
        assert_eq!(
            follower.apply(leader.get(1).unwrap().clone()),
            Verdict::Appended {
                count: MAX_PENDING_BLOCKS as u64 + 1
            }
        );
    }

    #[test]
    fn sync_answers_are_capped_and_start_where_asked() {
        let leader = leader_chain(10);
        let heights = |from, max| -> Vec<u64> {
            leader
                .blocks_from(from, max)
                .iter()
                .map(|b| b.height)
                .collect()
        };
        assert_eq!(heights(8, 100), vec![8, 9, 10]);
        assert_eq!(heights(3, 2), vec![3, 4]);
        assert!(heights(11, 5).is_empty());
        assert!(heights(u64::MAX, u32::MAX).is_empty());
        assert_eq!(heights(0, 1), vec![0]);
    }

    #[test]
    fn one_sync_request_in_flight_per_peer() {
        let start = Instant::now();
        let mut tracker = SyncTracker::new(Duration::from_secs(3));
        assert!(tracker.begin(&"a", start));
        assert!(!tracker.begin(&"a", start + Duration::from_secs(1)));
        assert!(tracker.begin(&"b", start));
        assert!(tracker.is_in_flight(&"a", start));
        // Answered: may ask again.
        tracker.finish(&"a");
        assert!(!tracker.is_in_flight(&"a", start));
        assert!(tracker.begin(&"a", start + Duration::from_secs(1)));
        // Unanswered for too long: may ask again.
        assert!(tracker.begin(&"b", start + Duration::from_secs(3)));
        assert!(wants_more(3, 5));
        assert!(!wants_more(5, 5));
        assert!(!wants_more(6, 5));
    }

    #[test]
    fn output_lines_are_json_with_an_event_field() {
        let line = NodeOutput::Tip {
            node: "node1".into(),
            height: 3,
            hash: hash_hex(0xab),
        }
        .to_json();
        assert_eq!(
            line,
            r#"{"event":"tip","node":"node1","height":3,"hash":"00000000000000ab"}"#
        );
        let line = NodeOutput::Synced {
            node: "node3".into(),
            from: "peer".into(),
            blocks: 12,
            height: 20,
            peer_height: 20,
        }
        .to_json();
        let back: NodeOutput = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, NodeOutput::Synced { blocks: 12, .. }));
        assert!(line.starts_with(r#"{"event":"synced","#));
    }
}
