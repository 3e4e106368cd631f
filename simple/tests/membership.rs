//! Membership: the allow-list (who may connect), protocol members (whose frames
//! are taken) and the private network key (who can even complete a handshake).

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use liquid_p2p::{
    AdmissionStage, Config, DialFailure, Error, Event, EvictionReason, RefusalReason,
    RemoteRefusal, low_level::NetworkKey,
};

const WAIT: Duration = Duration::from_secs(10);
const VOTES: &str = "/test/members/votes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_peers_connect_and_a_removed_one_is_disconnected() {
    let (b, c) = (host(Config::default()).await, host(Config::default()).await);
    let (b_id, c_id) = (b.local_peer_id(), c.local_peer_id());
    let a = host(Config::default().with_allow_list(Some(HashSet::from([b_id])))).await;
    let a_id = a.local_peer_id();
    assert_eq!(a.control().allow_list(), Some(vec![b_id]));
    let mut a_events = a.control().events();
    let mut c_events = c.control().events();

    connect(&b, &a).await;
    // A stranger is refused right after its handshake, and told why.
    let _ = c.dial(a.listen_addrs()[0].clone()).await;
    let refused = wait_for(&mut a_events, WAIT, |e| matches!(e, Event::Refused { .. })).await;
    assert!(
        matches!(
            refused,
            Event::Refused {
                peer: Some(p),
                reason: RefusalReason::NotAllowed,
                stage: AdmissionStage::Established,
                ..
            } if p == c_id
        ),
        "{refused:?}"
    );
    let failed = wait_for(&mut c_events, WAIT, |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await;
    assert!(
        matches!(
            failed,
            Event::DialFailed {
                cause: DialFailure::RefusedByRemote(RemoteRefusal::NotAllowed),
                ..
            }
        ),
        "{failed:?}"
    );
    wait_until(WAIT, || !a.control().connected_peers().contains(&c_id)).await;
    // And never dialled.
    let dial = a.dial(c.listen_addrs()[0].clone()).await;
    assert!(
        matches!(
            dial,
            Err(Error::Dial {
                cause: DialFailure::RefusedLocally(RefusalReason::NotAllowed),
                ..
            })
        ),
        "{dial:?}"
    );

    // Removed at run time: disconnected at once.
    assert!(a.control().disallow_peer(&b_id).await.expect("disallow"));
    let evicted = wait_for(&mut a_events, WAIT, |e| matches!(e, Event::Evicted { .. })).await;
    assert_eq!(
        evicted,
        Event::Evicted {
            peer: b_id,
            reason: EvictionReason::NotAllowed
        }
    );
    wait_until(WAIT, || {
        a.control().connected_peers().is_empty() && !b.control().connected_peers().contains(&a_id)
    })
    .await;

    // Added at run time: welcome.
    assert!(a.control().allow_peer(c_id).await.expect("allow"));
    let back = c.dial(a.listen_addrs()[0].clone()).await.expect("dial");
    assert_eq!(back, a_id);
    wait_until(WAIT, || a.control().connected_peers() == [c_id]).await;

    // Deactivated: everyone again.
    a.control()
        .set_allow_list(None::<Vec<_>>)
        .await
        .expect("unset");
    assert_eq!(a.control().allow_list(), None);
    connect(&b, &a).await;
    for h in [c, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_a_protocol_are_taken_only_from_its_members() {
    let a = host(Config::default()).await;
    let (b, c) = (host(Config::default()).await, host(Config::default()).await);
    let mut inbox = a.control().register_protocol(VOTES).expect("register");
    let (b_id, c_id) = (b.local_peer_id(), c.local_peer_id());
    let a_id = connect(&b, &a).await;
    connect(&c, &a).await;
    let mut events = a.control().events();
    a.control()
        .set_protocol_members(VOTES, Some([b_id]))
        .expect("members");
    assert_eq!(a.control().protocol_members(VOTES), Some(vec![b_id]));

    c.control()
        .send(a_id, VOTES, b"c votes")
        .await
        .expect("written");
    let refused = wait_for(&mut events, WAIT, |e| matches!(e, Event::NotMember { .. })).await;
    assert_eq!(
        refused,
        Event::NotMember {
            peer: c_id,
            protocol: VOTES.into(),
            count: 1
        }
    );
    b.control()
        .send(a_id, VOTES, b"b votes")
        .await
        .expect("sent");
    let message = next_message(&mut inbox, WAIT).await;
    assert_eq!(
        (message.peer, &message.payload[..]),
        (b_id, &b"b votes"[..])
    );
    let stats = &a.control().inbox_stats()[0];
    assert_eq!((stats.received_messages, stats.refused_messages), (1, 1));
    assert!(
        a.control().connected_peers().contains(&c_id),
        "a non-member's frames are dropped, its connection stays"
    );

    // Open again: c's next message is taken.
    a.control()
        .set_protocol_members(VOTES, None::<Vec<_>>)
        .expect("open");
    c.control()
        .send(a_id, VOTES, b"c again")
        .await
        .expect("sent");
    let message = next_message(&mut inbox, WAIT).await;
    assert_eq!(
        (message.peer, &message.payload[..]),
        (c_id, &b"c again"[..])
    );
    let unknown = a
        .control()
        .set_protocol_members("/not/registered", Some([b_id]));
    assert!(
        matches!(unknown, Err(Error::ProtocolNotRegistered { .. })),
        "{unknown:?}"
    );
    for h in [c, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_key_no_handshake_completes() {
    let key = NetworkKey::new([7; 32]);
    let private = || Config::default().with_network_key(Some(key));
    let a = host(private()).await;
    let b = host(private()).await;
    let mut inbox = a.control().register_protocol(VOTES).expect("register");
    let a_id = connect(&b, &a).await;
    b.control()
        .send(a_id, VOTES, b"inside")
        .await
        .expect("sent");
    let message = next_message(&mut inbox, WAIT).await;
    assert_eq!(&message.payload[..], b"inside");

    let mut events = a.control().events();
    for outsider_config in [
        Config::default(),
        Config::default().with_network_key(Some(NetworkKey::new([8; 32]))),
    ] {
        let outsider = host(outsider_config).await;
        let dial = outsider.dial(a.listen_addrs()[0].clone()).await;
        assert!(
            matches!(
                dial,
                Err(Error::Dial {
                    cause: DialFailure::Transport,
                    ..
                })
            ),
            "{dial:?}"
        );
        // The outsider's bytes fail noise or multistream-select (garbage once
        // decrypted), or, split unluckily, leave the reader waiting for the rest
        // of a length it read from garbage until the handshake deadline.
        let refused = wait_for(&mut events, WAIT, |e| matches!(e, Event::Refused { .. })).await;
        assert!(
            matches!(
                refused,
                Event::Refused {
                    reason: RefusalReason::HandshakeFailed | RefusalReason::HandshakeTimeout { .. },
                    stage: AdmissionStage::Handshake,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(a.control().connected_peers(), [b.local_peer_id()]);
        outsider.shutdown().await;
    }
    // With a key the transport is TCP only: QUIC cannot carry the pnet layer.
    // (Without the `quic` feature there is no QUIC to leave out.)
    let quic = a.listen_on(QUIC.parse().expect("address")).await;
    assert!(
        matches!(
            quic,
            Err(Error::Listen { .. } | Error::TransportNotBuilt { .. })
        ),
        "{quic:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}
