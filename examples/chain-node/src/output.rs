//! The JSON lines a node prints.

use super::*;

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
    /// A block has the votes of more than two thirds of the chain's nodes.
    Quorum {
        /// The node.
        node: String,
        /// The block's height.
        height: u64,
        /// The block's hash (16 hex digits).
        hash: String,
        /// Votes for it so far (this node's included).
        votes: usize,
    },
    /// Discovery found another node of the chain.
    Discovered {
        /// The node.
        node: String,
        /// The node found.
        peer: String,
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
