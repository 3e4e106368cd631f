//! Blocks, their byte encoding, and the sync messages.

use super::*;

/// A block hash. FNV-1a, 64 bits: **for this example only** — it is not a
/// cryptographic hash and anyone can forge a block with a chosen hash. A real chain
/// uses SHA-256 or BLAKE3 and signs its blocks.
pub type BlockHash = u64;

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `state`.
pub(crate) fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
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
pub(crate) struct Reader<'a> {
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

pub(crate) const TAG_REQUEST: u8 = 0x01;
pub(crate) const TAG_BLOCK: u8 = 0x02;
pub(crate) const TAG_DONE: u8 = 0x03;

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

/// A node's vote for a block: it holds the block `hash` at `height` as part of
/// its chain. Sent to every other node of the chain at once
/// (`send_to_many` on `/chain/<id>/consensus/1`).
///
/// ```text
/// u64 height | u64 hash
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub hash: BlockHash,
}

impl Vote {
    /// The bytes of this vote.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.hash.to_be_bytes());
        out
    }

    /// Decodes one vote (the whole of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader { bytes };
        let vote = Self {
            height: reader.u64()?,
            hash: reader.u64()?,
        };
        reader.finish()?;
        Ok(vote)
    }
}
