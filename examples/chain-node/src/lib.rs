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
//! members = ["12D3Koo...", "12D3Koo..."]  # optional: the chain's nodes, this one included
//!
//! # Optional: the host's settings, every field of liquid_p2p::Config (README,
//! # "Defaults"), durations as "5s" or "250ms"; left out, the defaults.
//! [network]
//! max_peers = 30
//!
//! [network.discovery]                 # optional: find the chain's nodes
//! enabled = true                      # serves chain_id (added to `chains`)
//! seeds = ["/ip4/127.0.0.1/tcp/4101/p2p/12D3Koo..."]
//! min_peers = 3                       # default 4
//! ```
//!
//! Files of earlier versions had `seeds`, `discovery` and `min_peers` at the top
//! level; they are now `[network.discovery]` `seeds`, `enabled` and `min_peers`
//! (a file with the old keys is refused with a message that says so). Seeds
//! without `enabled = true` are refused too.
//!
//! With `members`, only those peers may send the chain its blocks, votes and sync
//! messages (others are dropped by the host), and a quorum is two thirds of them;
//! without, of the connected peers that speak the chain's protocols.
//!
//! The chain is kept in memory only: a restarted node starts from genesis and
//! catches up from its peers.
//!
//! # Protocols and wire format
//!
//! A gossip topic and two protocols, named after the chain:
//! `/chain/<id>/blocks` (gossip), `/chain/<id>/consensus/1` and
//! `/chain/<id>/sync/1`. Integers are big-endian.
//!
//! A block:
//!
//! ```text
//! u64 height | u64 parent hash | u64 hash | u32 payload_len (<= 1 MiB) | payload
//! ```
//!
//! The hash is checked when a block is decoded. The leader publishes each new
//! block on `/chain/<id>/blocks`; a node forwards a gossiped block only once it
//! has checked it (see `chain_node`). `consensus/1` carries votes, each sent to
//! every node of the chain at once (`send_to_all`), one message per vote:
//!
//! ```text
//! u64 height | u64 hash                              "I hold this block"
//! ```
//!
//! Every `sync/1` message starts with a tag byte:
//!
//! ```text
//! 0x01 Request  u64 from_height | u32 max_blocks     "send me your blocks from here"
//! 0x02 Block    <block>                              one block of an answer
//! 0x03 Done     u64 tip_height  | u32 blocks_sent    end of an answer
//! ```
//!
//! An answer (the `Block`s in height order, then `Done`) is written through one
//! exclusive stream, so it arrives in order. Bytes that do not decode are an
//! [`DecodeError`]: the node logs it and skips the message (a gossiped block that
//! does not decode is rejected, which lowers its sender's gossip score).
//!
//! # Rules
//!
//! [`Chain::apply`] takes a block whose height is the next one and whose parent is
//! the tip ([`Verdict::Appended`]); refuses one whose parent is not the tip
//! ([`Verdict::WrongParent`]); ignores one it already has ([`Verdict::Known`]) or
//! that contradicts it ([`Verdict::Conflict`]); and keeps (a bounded number of)
//! blocks ahead of the tip aside, reporting the [`Verdict::Gap`] so the node asks a
//! peer for the missing range. [`SyncTracker`] keeps at most one sync request in
//! flight per peer. [`VoteTally`] counts the votes per block and reports the
//! first time one has more than two thirds of the chain ([`quorum`]).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    hash::Hash,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use liquid_p2p::{Config, PeerId, libp2p::Multiaddr, libp2p::multiaddr::Protocol};
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

mod block;
mod config;
mod output;
mod rules;
mod votes;

pub use block::*;
pub use config::*;
pub use output::*;
pub use rules::*;
pub use votes::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_round_trip_and_a_quorum_is_reported_once() {
        let vote = Vote {
            height: 7,
            hash: 0xdead_beef,
        };
        assert_eq!(Vote::decode(&vote.encode()), Ok(vote));
        assert!(Vote::decode(&vote.encode()[..15]).is_err());
        let mut long = vote.encode();
        long.push(0);
        assert_eq!(Vote::decode(&long), Err(DecodeError::TrailingBytes(1)));

        assert_eq!((quorum(4), quorum(3), quorum(1)), (3, 3, 1));
        let mut tally = VoteTally::default();
        assert_eq!(tally.record("a", vote, 4), None);
        assert_eq!(tally.record("a", vote, 4), None, "one vote per voter");
        let other = Vote { hash: 1, ..vote };
        assert_eq!(
            tally.record("b", other, 4),
            None,
            "a vote for another block"
        );
        assert_eq!(tally.record("b", vote, 4), None);
        assert_eq!(tally.record("c", vote, 4), Some(3));
        assert_eq!(tally.record("d", vote, 4), None, "reported once");
        // Far older heights are forgotten, and late votes for them ignored.
        let late = Vote {
            height: 7 + VOTE_WINDOW,
            hash: 2,
        };
        assert_eq!(tally.record("a", late, 1), Some(1));
        assert_eq!(tally.record("e", vote, 1), None);
    }

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
            members: Vec::new(),
            network: Config::default(),
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
    fn the_network_table_is_a_liquid_config_and_discovery_serves_the_chain() {
        let seed = peer_address(4101);
        let text = format!(
            r#"
            listen = []
            key_file = "k"
            chain_id = "demo"
            members = ["{member}"]

            [network]
            max_peers = 30
            dial_timeout = "3s"

            [network.discovery]
            enabled = true
            seeds = ["{seed}"]
            min_peers = 3
            "#,
            member = PeerId::random(),
        );
        let config = NodeConfig::parse(&text, "n", Path::new(".")).unwrap();
        assert_eq!(config.network.max_peers, 30);
        assert_eq!(config.network.dial_timeout, Duration::from_secs(3));
        let discovery = &config.network.discovery;
        assert!(discovery.enabled);
        assert_eq!(discovery.seeds, vec![seed.parse().unwrap()]);
        assert_eq!(discovery.chains, vec!["demo".to_owned()]);
        assert_eq!(discovery.min_peers, 3);
        assert_eq!(config.members.len(), 1);

        let file = ConfigFile {
            name: None,
            listen: Vec::new(),
            key_file: "k".into(),
            required_peers: Vec::new(),
            chain_id: "demo".into(),
            leader: false,
            block_interval_ms: None,
            members: Vec::new(),
            network: config.network.clone(),
        };
        let written = file.to_toml().unwrap();
        assert_eq!(toml::from_str::<ConfigFile>(&written).unwrap(), file);
    }

    #[test]
    fn network_errors_name_the_field_and_old_keys_say_where_they_went() {
        let base =
            |extra: &str| format!("listen = []\nkey_file = \"k\"\nchain_id = \"c\"\n{extra}");
        let err = |text: &str| NodeConfig::parse(text, "n", Path::new(".")).unwrap_err().0;
        assert!(err(&base("[network]\nmax_peer = 3")).contains("max_peer"));
        assert!(
            err(&base("[network.pool]\nborrow_timeout = \"later\"")).contains("borrow_timeout")
        );
        assert!(err(&base("[network]\nmax_peers = 0")).contains("max_peers"));
        let old = err(&base(&format!("seeds = [\"{}\"]", peer_address(1))));
        assert!(old.contains("[network.discovery] seeds"), "{old}");
        let seeds_only = base(&format!(
            "[network.discovery]\nseeds = [\"{}\"]",
            peer_address(1)
        ));
        assert!(err(&seeds_only).contains("enabled"));
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
