//! Group sends: one message to several peers at once, one result per peer.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::{Config, Error, PeerId};

const VOTES: &str = "/test/group/votes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_many_gives_one_result_per_peer_and_send_to_all_reaches_the_supporters() {
    let sender = host(Config::default()).await;
    let mut receivers = Vec::new();
    for supports in [true, true, false] {
        let receiver = host(Config::default()).await;
        let inbox = supports.then(|| {
            receiver
                .control()
                .register_protocol(VOTES)
                .expect("register")
        });
        let id = connect(&sender, &receiver).await;
        receivers.push((receiver, id, inbox));
    }
    let stranger = PeerId::random();
    let (a, b, c) = (receivers[0].1, receivers[1].1, receivers[2].1);

    let results = sender
        .control()
        .send_to_many(&[a, stranger, b, c], VOTES, b"vote 1")
        .await;
    let peers: Vec<_> = results.iter().map(|(peer, _)| *peer).collect();
    assert_eq!(peers, [a, stranger, b, c], "one result per peer, in order");
    assert!(results[0].1.is_ok() && results[2].1.is_ok(), "{results:?}");
    assert!(
        matches!(results[1].1, Err(Error::NotConnected { .. })),
        "{results:?}"
    );
    assert!(
        matches!(&results[3].1, Err(Error::ProtocolUnsupported { peer, .. }) if *peer == c),
        "{results:?}"
    );

    let results = sender.control().send_to_all(VOTES, b"vote 2").await;
    let mut reached: Vec<_> = results.iter().map(|(peer, r)| (*peer, r.is_ok())).collect();
    reached.sort();
    let mut expected = vec![(a, true), (b, true)];
    expected.sort();
    assert_eq!(reached, expected, "every supporter, and only they");

    for (_, _, inbox) in &mut receivers {
        let Some(inbox) = inbox else { continue };
        // Separate sends: either may arrive first.
        let mut got = Vec::new();
        for _ in 0..2 {
            let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
                .await
                .expect("delivered")
                .expect("open");
            got.push(message.payload.to_vec());
        }
        got.sort();
        assert_eq!(got, [b"vote 1".to_vec(), b"vote 2".to_vec()]);
    }
    for (receiver, _, _) in receivers {
        receiver.shutdown().await;
    }
    sender.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_many_to_ten_peers_with_one_down_gives_nine_ok_and_one_typed_error() {
    let sender = host(Config::default()).await;
    let mut receivers = Vec::new();
    for _ in 0..10 {
        let receiver = host(Config::default()).await;
        let inbox = receiver
            .control()
            .register_protocol(VOTES)
            .expect("register");
        let id = connect(&sender, &receiver).await;
        receivers.push((receiver, id, inbox));
    }
    // One of them goes down.
    let (down, down_id, _) = receivers.remove(4);
    down.shutdown().await;
    wait_until(Duration::from_secs(10), || {
        !sender.control().connected_peers().contains(&down_id)
    })
    .await;
    let mut peers: Vec<PeerId> = receivers.iter().map(|(_, id, _)| *id).collect();
    peers.insert(4, down_id);

    let results = sender.control().send_to_many(&peers, VOTES, b"vote").await;
    assert_eq!(results.len(), 10);
    for (i, (peer, result)) in results.iter().enumerate() {
        assert_eq!(*peer, peers[i], "in order");
        if i == 4 {
            assert!(
                matches!(result, Err(Error::NotConnected { peer }) if *peer == down_id),
                "{result:?}"
            );
        } else {
            assert!(result.is_ok(), "peer {i}: {result:?}");
        }
    }
    for (receiver, _, inbox) in &mut receivers {
        let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(&message.payload[..], b"vote");
        assert_eq!(message.peer, sender.local_peer_id());
        receiver.shutdown().await;
    }
    sender.shutdown().await;
}
