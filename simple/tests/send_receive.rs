//! End-to-end send and receive paths between real hosts over TCP on loopback.

mod common;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Error, Event, Lane, PoolConfig, StreamScope};

const PROTO: &str = "/test/data/1";

/// Size class of message `i`: mostly small, every 100th is 1 MiB.
fn size_of(i: usize) -> usize {
    match i % 100 {
        0 => 1 << 20,
        n if n % 3 == 0 => 0,
        n if n % 3 == 1 => 1,
        _ => 1024,
    }
}

/// Payload of message `seq` from `task`: the two ids, then bytes derived from them.
fn payload(task: usize, seq: usize) -> Vec<u8> {
    let size = size_of(seq);
    if size < 8 {
        return vec![task as u8; size];
    }
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(&(task as u32).to_le_bytes());
    p.extend_from_slice(&(seq as u32).to_le_bytes());
    p.extend((8..size).map(|i| (i ^ task ^ seq) as u8));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_sending_ten_thousand_mixed_messages_deliver_each_exactly_once() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 625; // 10,000 in all
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;

    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            let control = b.control().clone();
            tokio::spawn(async move {
                for seq in 0..PER_TASK {
                    control
                        .send(a_id, PROTO, payload(task, seq))
                        .await
                        .expect("send");
                }
            })
        })
        .collect();

    let mut seen = HashSet::new();
    let mut small = [0usize; 2];
    let mut per_task_small = vec![0usize; TASKS];
    for _ in 0..TASKS * PER_TASK {
        let m = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
            .await
            .expect("message arrives")
            .expect("inbox open");
        assert_eq!(m.peer, b.local_peer_id());
        assert_eq!(&*m.protocol, PROTO);
        let p = &m.payload[..];
        if p.len() < 8 {
            small[p.len()] += 1;
            if let Some(&task) = p.first() {
                per_task_small[task as usize] += 1;
            }
            continue;
        }
        let task = u32::from_le_bytes(p[0..4].try_into().unwrap()) as usize;
        let seq = u32::from_le_bytes(p[4..8].try_into().unwrap()) as usize;
        assert_eq!(p, &payload(task, seq)[..], "content intact");
        assert!(
            seen.insert((task, seq)),
            "message ({task}, {seq}) delivered twice"
        );
    }
    for s in senders {
        s.await.expect("sender");
    }
    let expected_large = (0..PER_TASK).filter(|&i| size_of(i) >= 8).count() * TASKS;
    let expected_zero = (0..PER_TASK).filter(|&i| size_of(i) == 0).count() * TASKS;
    let expected_one = (0..PER_TASK).filter(|&i| size_of(i) == 1).count();
    assert_eq!(seen.len(), expected_large);
    assert_eq!(small[0], expected_zero);
    assert!(
        per_task_small.iter().all(|&n| n == expected_one),
        "{per_task_small:?}"
    );
    assert!(inbox.try_recv().is_none(), "no extra message");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_through_one_exclusive_borrow_arrive_in_order() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let mut noise_inbox = a
        .control()
        .register_protocol("/test/noise/1")
        .expect("register");
    tokio::spawn(async move { while noise_inbox.recv().await.is_some() {} });
    let a_id = connect(&b, &a).await;
    // Other traffic at the same time, on other streams.
    let noise = {
        let control = b.control().clone();
        tokio::spawn(async move {
            for i in 0..500u32 {
                control
                    .send(a_id, "/test/noise/1", i.to_le_bytes())
                    .await
                    .expect("noise");
            }
        })
    };
    let reader = tokio::spawn(async move {
        for expected in 0..2_000u32 {
            let m = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
                .await
                .expect("arrives")
                .expect("open");
            assert_eq!(
                u32::from_le_bytes(m.payload[..4].try_into().unwrap()),
                expected
            );
        }
    });
    let mut stream = b.control().borrow_stream(a_id).await.expect("borrow");
    for i in 0..2_000u32 {
        let body = vec![(i % 251) as u8; (i as usize * 37) % 3000];
        let mut msg = i.to_le_bytes().to_vec();
        msg.extend(body);
        stream.send(PROTO, msg).await.expect("ordered send");
    }
    drop(stream);
    reader.await.expect("all arrived in order");
    noise.await.expect("noise sender");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_small_senders_are_batched_and_each_message_arrives_once() {
    const TASKS: usize = 64;
    const PER_TASK: u32 = 300;
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let reader =
        tokio::spawn(async move { receive_each_tagged_once(&mut inbox, TASKS, PER_TASK).await });
    let senders = spawn_tagged_senders(b.control(), a_id, PROTO, TASKS, PER_TASK);
    for s in senders {
        s.await.expect("sender");
    }
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("every message arrived")
        .expect("reader");
    let batched = batched_frames(&b.control().lane_stats(&a_id));
    assert!(batched > 0, "64 senders never shared a write");
    let per_connection = batched_frames(&b.control().pool_stats(&a_id));
    assert_eq!(per_connection, batched, "pool_stats sums the lanes");
    eprintln!("{batched} of {} frames batched", TASKS * PER_TASK as usize);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_sends_cancelled_at_random_lose_no_confirmed_message_and_duplicate_none() {
    const TASKS: usize = 32;
    const PER_TASK: u32 = 300;
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let received = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(message) = inbox.recv().await {
                let (task, seq) = tag_of(&message.payload);
                assert!(
                    received.lock().insert((task, seq)),
                    "{task}/{seq} arrived twice"
                );
            }
        })
    };
    let senders: Vec<_> = (0..TASKS)
        .map(|task| {
            let control = b.control().clone();
            tokio::spawn(async move {
                let mut confirmed = Vec::new();
                for seq in 0..PER_TASK {
                    let payload = tagged(task, seq);
                    // Every third send is given almost no time: it is dropped
                    // while queued, while leading, or not at all.
                    let limit = match seq % 3 {
                        0 => Duration::from_micros(u64::from(seq % 50)),
                        _ => Duration::from_secs(10),
                    };
                    match tokio::time::timeout(limit, control.send(a_id, PROTO, payload)).await {
                        Ok(Ok(())) => confirmed.push(seq),
                        Ok(Err(e)) => panic!("send failed: {e}"),
                        Err(_) if seq % 3 != 0 => panic!("{task}/{seq} took over 10 s"),
                        Err(_) => {}
                    }
                }
                confirmed
            })
        })
        .collect();
    let mut confirmed = HashSet::new();
    for (task, s) in senders.into_iter().enumerate() {
        for seq in s.await.expect("sender") {
            confirmed.insert((task, seq));
        }
    }
    assert!(confirmed.len() >= TASKS * PER_TASK as usize * 2 / 3);
    wait_until(Duration::from_secs(10), || {
        confirmed.is_subset(&received.lock())
    })
    .await;
    // Cancelled sends may have arrived too, each only once (the reader checks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reader.is_finished(), "the reader saw no duplicate");
    reader.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_64_concurrent_senders_a_protocol_lane_grows_to_its_cap_and_never_past_it() {
    // Every message on a stream of its own (batched, the senders would share
    // one stream and the lane would not need to grow).
    let pool = PoolConfig::default()
        .with_init_size(2)
        .with_max_size(8)
        .with_batch_bytes(0);
    let config = Config::default().with_pool(pool);
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while inbox.recv().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let senders: Vec<_> = (0..64)
        .map(|_| {
            let control = b.control().clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    control
                        .send(a_id, PROTO, vec![7u8; 4096])
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    // One protocol: its lane may hold 3/4 of the connection's 8 streams.
    let lane = Lane::Protocol(PROTO.into());
    let mut peak = 0;
    let mut reached_cap = false;
    while !senders.iter().all(|s| s.is_finished()) {
        for s in b.control().pool_stats(&a_id) {
            assert!(s.current + s.opening <= s.max, "budget exceeded: {s:?}");
        }
        for s in b.control().lane_stats(&a_id) {
            if s.lane == lane {
                peak = peak.max(s.current + s.opening);
                reached_cap |= s.current == s.max;
                assert!(s.current + s.opening <= s.max, "cap exceeded: {s:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert!(reached_cap, "the lane grew to its cap (peak {peak})");
    assert_eq!(peak, 6);
    wait_until(Duration::from_secs(10), || {
        received.load(Ordering::Relaxed) == 6_400
    })
    .await;
    reader.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_connections_to_one_peer_load_spreads_over_both_pools() {
    let config = Config::default().with_max_connections_per_peer(2);
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    b.dial(a.listen_addrs()[0].clone())
        .await
        .expect("second dial");
    wait_until(Duration::from_secs(5), || {
        b.control().pool_stats(&a_id).len() == 2
    })
    .await;

    let senders: Vec<_> = (0..32)
        .map(|_| {
            let control = b.control().clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    control
                        .send(a_id, PROTO, vec![1u8; 16 * 1024])
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    let mut per_connection = std::collections::HashMap::new();
    for _ in 0..32 * 50 {
        let m = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("arrives")
            .expect("open");
        *per_connection.entry(m.connection).or_insert(0usize) += 1;
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert_eq!(per_connection.len(), 2, "both connections carried messages");
    assert!(
        per_connection.values().all(|&n| n >= 32 * 50 / 10),
        "neither connection is starved: {per_connection:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_closes_its_pool_and_receive_streams_and_others_go_on() {
    let pool = PoolConfig::default().with_init_size(1).with_max_size(1);
    let config = Config::default()
        .with_pool(pool)
        .with_max_connections_per_peer(2);
    // Room for a second inbound stream per connection: the sender's lane for
    // PROTO replaces the burst stream, and the receiver may see the new stream
    // before the reset of the old one.
    let a = host(
        config
            .clone()
            .with_max_inbound_streams_per_connection(Some(2)),
    )
    .await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    b.dial(a.listen_addrs()[0].clone())
        .await
        .expect("second dial");
    wait_until(Duration::from_secs(5), || {
        let s = b.control().pool_stats(&a_id);
        s.len() == 2 && s.iter().all(|p| p.idle == 1)
    })
    .await;
    // Both streams used once, so the receiver tracks one inbound stream per connection.
    let mut first = b.control().borrow_stream(a_id).await.expect("borrow 1");
    let mut second = b.control().borrow_stream(a_id).await.expect("borrow 2");
    assert_ne!(first.connection(), second.connection());
    first.send(PROTO, b"one").await.expect("send on first");
    second.send(PROTO, b"two").await.expect("send on second");
    for _ in 0..2 {
        inbox.recv().await.expect("delivered");
    }
    wait_until(Duration::from_secs(5), || {
        a.control().receive_counts(&b.local_peer_id()).streams == 2
    })
    .await;
    // The receiver's own ids of the two connections.
    let tracked_before: Vec<_> = a
        .control()
        .receive_counts(&b.local_peer_id())
        .per_connection
        .into_iter()
        .map(|(c, _)| c)
        .collect();

    // A sender waits: both streams are lent out.
    let waiting = {
        let control = b.control().clone();
        tokio::spawn(async move { control.send(a_id, PROTO, b"after close").await })
    };
    wait_until(Duration::from_secs(5), || {
        b.control()
            .pool_stats(&a_id)
            .iter()
            .map(|s| s.waiters)
            .sum::<usize>()
            == 1
    })
    .await;
    let closing = first.connection();
    let survivor = second.connection();
    let mut events = b.control().events();
    b.close_connection(closing).await.expect("close");
    wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::ConnectionClosed { connection, remaining: 1, .. } if *connection == closing)
    })
    .await;

    // The exclusive stream of the closed connection fails with a typed error.
    let err = first
        .send(PROTO, b"lost?")
        .await
        .expect_err("connection closed");
    assert!(
        matches!(err, Error::PoolClosed { .. } | Error::Write { .. }),
        "{err}"
    );
    // (A busy pool may already have dialled a replacement connection.)
    let pools = b.control().pool_stats(&a_id);
    assert!(pools.iter().all(|s| s.connection != closing), "{pools:?}");
    assert!(pools.iter().any(|s| s.connection == survivor), "{pools:?}");
    // The receiver forgot the closed connection's stream and kept the other.
    wait_until(Duration::from_secs(5), || {
        let now = a
            .control()
            .receive_counts(&b.local_peer_id())
            .per_connection;
        let kept: Vec<_> = now
            .iter()
            .filter(|(c, _)| tracked_before.contains(c))
            .collect();
        kept.len() == 1 && kept[0].1 == 1
    })
    .await;
    // The waiter is served by the surviving connection once its stream returns.
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("waiter finishes")
        .expect("task")
        .expect("waiter's message sent on the surviving connection");
    let m = inbox.recv().await.expect("delivered");
    assert_eq!(&m.payload[..], b"after close");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_inbound_cap_refuses_excess_streams_and_loses_no_acknowledged_message() {
    let receiver_config = Config::default().with_max_inbound_streams_per_peer(Some(4));
    let a = host(receiver_config).await;
    // Opens 10 streams at once: the eager pool, so that the cap is hit at connect.
    let b =
        host(Config::default().with_pool(PoolConfig::default().with_open_at_connect(true))).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let mut events = a.control().events();
    let a_id = connect(&b, &a).await;
    let refused = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::StreamRefused { .. })
    })
    .await;
    match refused {
        Event::StreamRefused {
            peer, limit, scope, ..
        } => {
            assert_eq!(peer, b.local_peer_id());
            assert_eq!((limit, scope), (4, StreamScope::Peer));
        }
        other => panic!("unexpected {other:?}"),
    }
    wait_until(Duration::from_secs(5), || {
        a.control().receive_counts(&b.local_peer_id()).refused >= 6
    })
    .await;
    assert_eq!(a.control().receive_counts(&b.local_peer_id()).streams, 4);

    let mut ok = 0;
    let mut failed = 0;
    for i in 0..300u32 {
        match b.control().send(a_id, PROTO, i.to_le_bytes()).await {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(
                    matches!(e, Error::Write { .. } | Error::StreamOpen { .. }),
                    "{e}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        ok >= 250,
        "traffic goes on over the accepted streams: {ok} ok, {failed} failed"
    );
    let mut got = 0;
    while got < ok {
        tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("every acknowledged message arrives")
            .expect("open");
        got += 1;
    }
    assert!(a.control().receive_counts(&b.local_peer_id()).streams <= 4);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sends_fail_locally_with_typed_errors() {
    let config = Config::default().with_max_frame_size(1024);
    let a = host(config.clone()).await;
    let b = host(config).await;
    let stranger = liquid_p2p::PeerId::random();
    assert!(matches!(
        b.control().send(stranger, PROTO, b"x").await,
        Err(Error::NotConnected { peer }) if peer == stranger
    ));
    let a_id = connect(&b, &a).await;
    let before = b.control().pool_stats(&a_id);
    assert!(matches!(
        b.control().send(a_id, PROTO, vec![0u8; 1025]).await,
        Err(Error::FrameTooLarge {
            size: 1025,
            max: 1024
        })
    ));
    assert!(matches!(
        b.control().send(a_id, &"p".repeat(257), b"x").await,
        Err(Error::InvalidProtocol { len: 257 })
    ));
    assert!(matches!(
        b.control().send(a_id, "", b"x").await,
        Err(Error::InvalidProtocol { len: 0 })
    ));
    // a registered nothing, and b knows it from the exchange: fail fast.
    assert!(matches!(
        b.control().send(a_id, PROTO, b"x").await,
        Err(Error::ProtocolUnsupported { peer, ref protocol }) if peer == a_id && protocol == PROTO
    ));
    let after = b.control().pool_stats(&a_id);
    assert_eq!(before[0].borrowed, after[0].borrowed);
    assert_eq!(after[0].borrowed, 0, "no stream was borrowed");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_for_an_unregistered_protocol_are_counted_and_skipped() {
    // `a` unregisters a protocol but (push delayed) `b` still believes it is there,
    // so `b` sends to it: the frame reaches a host with no handler for it.
    let a = host(Config::default().with_protocol_push_delay(Duration::from_secs(30))).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let _gone = a
        .control()
        .register_protocol("/nobody/1")
        .expect("register");
    let mut events = a.control().events();
    let a_id = connect(&b, &a).await;
    wait_until(Duration::from_secs(5), || {
        b.control().is_supported(&a_id, "/nobody/1")
    })
    .await;
    a.control()
        .unregister_protocol("/nobody/1")
        .expect("unregister");
    let mut stream = b.control().borrow_stream(a_id).await.expect("borrow");
    stream.send("/nobody/1", b"lost").await.expect("send");
    stream.send(PROTO, b"kept").await.expect("send");
    drop(stream);
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::UnknownProtocol { .. })
    })
    .await;
    assert!(
        matches!(e, Event::UnknownProtocol { ref protocol, count: 1, .. } if protocol == "/nobody/1")
    );
    let m = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("the stream goes on")
        .expect("open");
    assert_eq!(&m.payload[..], b"kept");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_events_follow_first_and_last_connection_and_shutdown_is_final() {
    let config = Config::default().with_max_connections_per_peer(2);
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut a_events = a.control().events();
    let a_id = connect(&b, &a).await;
    wait_for(
        &mut a_events,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerConnected { peer } if *peer == b.local_peer_id()),
    )
    .await;
    b.dial(a.listen_addrs()[0].clone())
        .await
        .expect("second dial");
    wait_for(&mut a_events, Duration::from_secs(5), |e| {
        matches!(e, Event::ConnectionEstablished { connections: 2, .. })
    })
    .await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    // The new protocol reaches b by a push before b may send to it.
    wait_until(Duration::from_secs(2), || {
        b.control().is_supported(&a_id, PROTO)
    })
    .await;
    b.control().send(a_id, PROTO, b"bye").await.expect("send");
    inbox.recv().await.expect("delivered");

    b.shutdown().await;
    let e = wait_for(&mut a_events, Duration::from_secs(5), |e| {
        matches!(
            e,
            Event::PeerConnected { .. } | Event::PeerDisconnected { .. }
        )
    })
    .await;
    assert_eq!(
        e,
        Event::PeerDisconnected {
            peer: b.local_peer_id()
        }
    );
    assert!(a.control().connected_peers().is_empty());
    assert!(matches!(
        b.control().send(a_id, PROTO, b"x").await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.dial(a.listen_addrs()[0].clone()).await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.control().register_protocol("/x/1"),
        Err(Error::ShutDown)
    ));
    b.shutdown().await; // idempotent
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_makes_the_host_dial_one_more_connection_up_to_the_maximum() {
    // Every message on a stream of its own: batched, the senders would share
    // one stream, and whether the pool ever looks busy would be down to timing.
    let pool = PoolConfig::default()
        .with_init_size(2)
        .with_max_size(4)
        .with_batch_bytes(0);
    let config = Config::default()
        .with_pool(pool)
        .with_max_connections_per_peer(2);
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    assert_eq!(b.control().pool_stats(&a_id).len(), 1);
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let control = b.control().clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    control
                        .send(a_id, PROTO, vec![3u8; 8 * 1024])
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    let drain = tokio::spawn(async move { while inbox.recv().await.is_some() {} });
    let mut most = 0;
    while !senders.iter().all(|s| s.is_finished()) {
        most = most.max(b.control().pool_stats(&a_id).len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for s in senders {
        s.await.expect("sender");
    }
    assert_eq!(most, 2, "a second connection was added, and no third");
    drain.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_full_inbox_when_the_connection_closes_are_still_delivered() {
    // An inbox of 2 that nobody reads yet: the reader holds the third message,
    // waiting for room, when the sender closes the connection.
    let receiver_config = Config::default().with_handler_queue_len(2);
    let a = host(receiver_config).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let mut stream = b.control().borrow_stream(a_id).await.expect("borrow");
    for i in 0u8..5 {
        stream.send(PROTO, [i]).await.expect("send");
    }
    // All five are on their way; give the reader time to fill the inbox and block.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    b.disconnect(a_id).await.expect("disconnect");
    wait_until(Duration::from_secs(5), || {
        a.control().connected_peers().is_empty()
    })
    .await;
    let mut got = Vec::new();
    while got.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(1), inbox.recv()).await {
            Ok(Some(m)) => got.push(m.payload[0]),
            _ => break,
        }
    }
    assert_eq!(
        got,
        vec![0, 1, 2, 3, 4],
        "every message that arrived before the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_stats_count_what_arrived_and_what_waits_for_the_application() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let _other = a
        .control()
        .register_protocol("/test/other")
        .expect("register");
    let a_id = connect(&b, &a).await;
    for i in 0..5u8 {
        b.control()
            .send(a_id, PROTO, vec![i; 100])
            .await
            .expect("send");
    }
    let stats_of = || {
        a.control()
            .inbox_stats()
            .into_iter()
            .find(|s| s.protocol == PROTO)
            .expect("registered")
    };
    wait_until(Duration::from_secs(5), || stats_of().received_messages == 5).await;
    let stats = stats_of();
    assert_eq!(
        (
            stats.received_bytes,
            stats.queued_messages,
            stats.queued_bytes
        ),
        (500, 5, 500)
    );
    for _ in 0..2 {
        inbox.recv().await.expect("message");
    }
    inbox.try_recv().expect("a third");
    let stats = stats_of();
    assert_eq!((stats.queued_messages, stats.queued_bytes), (2, 200));
    assert_eq!(stats.received_messages, 5, "received counts arrivals");
    let all = a.control().inbox_stats();
    assert_eq!(
        all.iter().map(|s| s.protocol.as_str()).collect::<Vec<_>>(),
        vec![PROTO, "/test/other"],
        "every registered protocol, sorted"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_send_dropped_mid_write_breaks_the_stream_for_later_sends() {
    // An inbox of 1 nobody reads: the reader stops, the stream's window fills,
    // and a large write cannot finish.
    let a = host(Config::default().with_handler_queue_len(1)).await;
    let b = host(Config::default()).await;
    let _inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let mut stream = b.control().borrow_stream(a_id).await.expect("borrow");
    stream.send(PROTO, [0u8]).await.expect("first message");
    stream.send(PROTO, [1u8]).await.expect("second message");
    let big = vec![7u8; 4 << 20];
    let cut = tokio::time::timeout(Duration::from_millis(300), stream.send(PROTO, &big)).await;
    assert!(cut.is_err(), "the write could not finish: nobody reads");
    // Part of a frame may be on the stream: nothing may follow it.
    let after = stream.send(PROTO, [2u8]).await;
    assert!(matches!(after, Err(Error::Write { .. })), "{after:?}");
    drop(stream);
    a.shutdown().await;
    b.shutdown().await;
}
