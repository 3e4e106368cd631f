//! Broadcast over gossipsub: delivery, the application's verdict before
//! forwarding, content-hash ids, topic membership and bounded inboxes.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::{
    BroadcastConfig, BroadcastFailure, Config, Error, Event, GossipDrop, GossipMessage, Host,
    PeerId, TopicInbox,
};

const TOPIC: &str = "/chain/test/blocks";
const WAIT: Duration = Duration::from_secs(10);
/// Long enough for a message that is going to arrive to arrive: many
/// heartbeats of the test configuration.
const QUIET: Duration = Duration::from_millis(1500);

fn config() -> Config {
    Config::default().with_broadcast(
        BroadcastConfig::default()
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_validation_timeout(Duration::from_millis(400)),
    )
}

async fn next(inbox: &mut TopicInbox) -> GossipMessage {
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .expect("gossip arrives in time")
        .expect("inbox open")
}

/// Waits until `host` sees `peers` subscribed peers on `TOPIC`, then for the
/// meshes to form (a few heartbeats).
async fn wait_for_peers(host: &Host, peers: usize) {
    wait_until(WAIT, || {
        host.control()
            .topic_stats()
            .iter()
            .any(|t| t.topic == TOPIC && t.peers == peers)
    })
    .await;
}

/// Three hosts in a line, a — b — c, each subscribed to `TOPIC`, meshes formed.
async fn line() -> ([Host; 3], [TopicInbox; 3], [PeerId; 3]) {
    let (a, b, c) = (
        host(config()).await,
        host(config()).await,
        host(config()).await,
    );
    let mut inboxes = Vec::new();
    for h in [&a, &b, &c] {
        inboxes.push(h.control().subscribe(TOPIC).await.expect("subscribe"));
    }
    connect(&a, &b).await;
    connect(&b, &c).await;
    wait_for_peers(&a, 1).await;
    wait_for_peers(&b, 2).await;
    wait_for_peers(&c, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = [a.local_peer_id(), b.local_peer_id(), c.local_peer_id()];
    let inboxes: [TopicInbox; 3] = inboxes.try_into().expect("three");
    ([a, b, c], inboxes, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_forwarded_only_after_the_application_accepts_it() {
    let ([a, b, c], [_, mut b_in, mut c_in], [a_id, b_id, _]) = line().await;

    a.control()
        .publish(TOPIC, b"block 1")
        .await
        .expect("publish");
    let at_b = next(&mut b_in).await;
    assert_eq!(at_b.data().as_ref(), b"block 1");
    assert_eq!((at_b.origin(), at_b.from()), (Some(a_id), a_id));
    assert_eq!(at_b.topic(), TOPIC);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        c_in.try_recv().is_none(),
        "not forwarded before b's verdict"
    );
    at_b.accept();
    let at_c = next(&mut c_in).await;
    assert_eq!(at_c.data().as_ref(), b"block 1");
    assert_eq!((at_c.origin(), at_c.from()), (Some(a_id), b_id));
    at_c.accept();

    // Rejected: never forwarded, and the forwarder's score drops.
    a.control()
        .publish(TOPIC, b"bad block")
        .await
        .expect("publish");
    let bad = next(&mut b_in).await;
    assert_eq!(bad.data().as_ref(), b"bad block");
    bad.reject();
    tokio::time::sleep(QUIET).await;
    assert!(
        c_in.try_recv().is_none(),
        "a rejected message is not forwarded"
    );
    let score = b.control().gossip_score(a_id).await.expect("score");
    assert!(
        score.is_some_and(|s| s < 0.0),
        "score of a after a rejection: {score:?}"
    );

    // Ids are content hashes: the same payload again is the same message.
    let again = a.control().publish(TOPIC, b"block 1").await;
    assert!(
        matches!(
            &again,
            Err(Error::Broadcast {
                reason: BroadcastFailure::Duplicate,
                ..
            })
        ),
        "{again:?}"
    );
    let again = c.control().publish(TOPIC, b"block 1").await;
    assert!(
        matches!(
            &again,
            Err(Error::Broadcast {
                reason: BroadcastFailure::Duplicate,
                ..
            })
        ),
        "a node that received a payload cannot publish it as new: {again:?}"
    );
    for h in [c, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_a_verdict_in_time_is_ignored() {
    let ([a, b, c], [_, mut b_in, mut c_in], _) = line().await;

    a.control().publish(TOPIC, b"slow").await.expect("publish");
    let held = next(&mut b_in).await;
    // The validation timeout (400 ms) passes; a late accept changes nothing.
    tokio::time::sleep(Duration::from_millis(900)).await;
    held.accept();
    tokio::time::sleep(QUIET).await;
    assert!(c_in.try_recv().is_none(), "ignored after the deadline");

    // Dropped without a verdict: ignored at once, nothing leaks.
    a.control()
        .publish(TOPIC, b"dropped")
        .await
        .expect("publish");
    drop(next(&mut b_in).await);
    a.control().publish(TOPIC, b"fine").await.expect("publish");
    next(&mut b_in).await.accept();
    let at_c = next(&mut c_in).await;
    assert_eq!(at_c.data().as_ref(), b"fine", "only the accepted one");
    for h in [c, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_from_non_members_is_rejected_and_reported() {
    let ([a, b, c], [_, mut b_in, mut c_in], [a_id, b_id, _]) = line().await;
    let mut c_events = c.control().events();
    // c takes the topic only from b: a's messages reach c through b, but a is
    // not a member.
    c.control()
        .set_topic_members(TOPIC, Some([b_id]))
        .expect("members");
    assert_eq!(c.control().topic_members(TOPIC), Some(vec![b_id]));

    a.control()
        .publish(TOPIC, b"from a")
        .await
        .expect("publish");
    next(&mut b_in).await.accept();
    let dropped = wait_for(&mut c_events, WAIT, |e| {
        matches!(e, Event::GossipDropped { .. })
    })
    .await;
    assert_eq!(
        dropped,
        Event::GossipDropped {
            topic: TOPIC.into(),
            from: b_id,
            origin: Some(a_id),
            reason: GossipDrop::NotMember,
        }
    );
    assert!(c_in.try_recv().is_none());
    let stats = c.control().topic_stats();
    assert_eq!(
        (stats[0].rejected_messages, stats[0].received_messages),
        (1, 0)
    );

    // Membership changes take effect for the next message.
    c.control()
        .set_topic_members(TOPIC, Some([a_id, b_id]))
        .expect("members");
    a.control()
        .publish(TOPIC, b"from a, member")
        .await
        .expect("publish");
    next(&mut b_in).await.accept();
    assert_eq!(next(&mut c_in).await.data().as_ref(), b"from a, member");
    for h in [c, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_topic_inbox_drops_and_reports_once() {
    let small = || config().with_handler_queue_len(2);
    let (a, b) = (host(small()).await, host(small()).await);
    let _a_in = a.control().subscribe(TOPIC).await.expect("subscribe");
    let mut b_in = b.control().subscribe(TOPIC).await.expect("subscribe");
    let mut b_events = b.control().events();
    connect(&a, &b).await;
    wait_for_peers(&a, 1).await;
    for i in 0..5 {
        a.control()
            .publish(TOPIC, format!("message {i}"))
            .await
            .expect("publish");
    }
    wait_for(&mut b_events, WAIT, |e| {
        matches!(
            e,
            Event::GossipDropped {
                reason: GossipDrop::InboxFull,
                ..
            }
        )
    })
    .await;
    wait_until(WAIT, || {
        b.control()
            .topic_stats()
            .first()
            .is_some_and(|t| t.dropped_messages == 3)
    })
    .await;
    let stats = &b.control().topic_stats()[0];
    assert_eq!((stats.received_messages, stats.queued_messages), (2, 2));
    assert_eq!(next(&mut b_in).await.data().as_ref(), b"message 0");
    assert_eq!(next(&mut b_in).await.data().as_ref(), b"message 1");
    assert_eq!(b.control().topic_stats()[0].queued_bytes, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let more = b_events.try_recv();
    assert!(
        !matches!(more, Some(Event::GossipDropped { .. })),
        "reported once per overflow: {more:?}"
    );

    // Room again: the next message is delivered.
    a.control().publish(TOPIC, b"after").await.expect("publish");
    assert_eq!(next(&mut b_in).await.data().as_ref(), b"after");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_reported_and_calls_fail_with_typed_reasons() {
    let (a, b) = (host(config()).await, host(config()).await);
    let mut a_events = a.control().events();
    connect(&a, &b).await;
    let b_id = b.local_peer_id();

    let nobody = a.control().publish(TOPIC, b"x").await;
    assert!(
        matches!(
            &nobody,
            Err(Error::Broadcast {
                reason: BroadcastFailure::NoPeers,
                ..
            })
        ),
        "{nobody:?}"
    );
    let mut b_in = b.control().subscribe(TOPIC).await.expect("subscribe");
    let twice = b.control().subscribe(TOPIC).await;
    assert!(
        matches!(
            &twice,
            Err(Error::Broadcast {
                reason: BroadcastFailure::AlreadySubscribed,
                ..
            })
        ),
        "{twice:?}"
    );
    let event = wait_for(&mut a_events, WAIT, |e| {
        matches!(e, Event::TopicSubscribed { .. })
    })
    .await;
    assert_eq!(
        event,
        Event::TopicSubscribed {
            peer: b_id,
            topic: TOPIC.into()
        }
    );
    // Publishing without subscribing (fanout) reaches subscribers.
    a.control()
        .publish(TOPIC, b"fanout")
        .await
        .expect("publish");
    assert_eq!(next(&mut b_in).await.data().as_ref(), b"fanout");

    let big = vec![0u8; config().max_frame_size + 1];
    let too_large = a.control().publish(TOPIC, big).await;
    assert!(
        matches!(
            &too_large,
            Err(Error::Broadcast {
                reason: BroadcastFailure::TooLarge { .. },
                ..
            })
        ),
        "{too_large:?}"
    );
    let invalid = a.control().subscribe("").await;
    assert!(
        matches!(
            &invalid,
            Err(Error::Broadcast {
                reason: BroadcastFailure::InvalidTopic,
                ..
            })
        ),
        "{invalid:?}"
    );

    b.control().unsubscribe(TOPIC).await.expect("unsubscribe");
    wait_for(
        &mut a_events,
        WAIT,
        |e| matches!(e, Event::TopicUnsubscribed { peer, .. } if *peer == b_id),
    )
    .await;
    assert!(
        tokio::time::timeout(WAIT, b_in.recv())
            .await
            .expect("ends")
            .is_none(),
        "the inbox ends after unsubscribing"
    );
    let not = b.control().unsubscribe(TOPIC).await;
    assert!(
        matches!(
            &not,
            Err(Error::Broadcast {
                reason: BroadcastFailure::NotSubscribed,
                ..
            })
        ),
        "{not:?}"
    );

    let off =
        host(Config::default().with_broadcast(BroadcastConfig::default().with_enabled(false)))
            .await;
    let disabled = off.control().subscribe(TOPIC).await;
    assert!(
        matches!(
            &disabled,
            Err(Error::Broadcast {
                reason: BroadcastFailure::Disabled,
                ..
            })
        ),
        "{disabled:?}"
    );
    for h in [off, b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_gossip_is_ignored_for_its_score_is_reported() {
    // Gossipsub ignores everything a peer below its graylist threshold sends,
    // and says nothing; rejected messages put a peer there.
    let (a, b) = (host(config()).await, host(config()).await);
    let _a_in = a.control().subscribe(TOPIC).await.expect("subscribe");
    let mut b_in = b.control().subscribe(TOPIC).await.expect("subscribe");
    let a_id = connect(&b, &a).await;
    wait_for_peers(&a, 1).await;
    wait_for_peers(&b, 1).await;
    let mut events = b.control().events();
    // Rejected until they stop arriving: b then ignores a.
    for n in 0..50 {
        a.control()
            .publish(TOPIC, format!("bad block {n}"))
            .await
            .expect("publish");
        match tokio::time::timeout(QUIET, b_in.recv()).await {
            Ok(Some(bad)) => bad.reject(),
            _ => break,
        }
    }
    wait_for(
        &mut events,
        WAIT,
        |e| matches!(e, Event::GossipPeerGraylisted { peer } if *peer == a_id),
    )
    .await;
    // (Rejections decay: a's score climbs back above the threshold within
    // seconds, and its gossip is taken again.)
    for h in [b, a] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_topic_inbox_gives_the_room_of_its_messages_back() {
    let (a, b) = (host(config()).await, host(config()).await);
    let _a_in = a.control().subscribe(TOPIC).await.expect("subscribe");
    let b_in = b.control().subscribe(TOPIC).await.expect("subscribe");
    connect(&a, &b).await;
    wait_for_peers(&a, 1).await;
    for i in 0..2 {
        a.control()
            .publish(TOPIC, format!("message {i}"))
            .await
            .expect("publish");
    }
    let queued = || {
        b.control()
            .topic_stats()
            .first()
            .map_or((0, 0), |t| (t.queued_messages, t.queued_bytes))
    };
    wait_until(WAIT, || queued().0 == 2).await;
    drop(b_in);
    assert_eq!(queued(), (0, 0), "nothing held for an inbox nobody reads");
    for h in [b, a] {
        h.shutdown().await;
    }
}
