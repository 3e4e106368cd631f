//! Protocol exchange between real hosts, and with a plain rust-libp2p swarm that
//! speaks only the documented wire formats.

mod common;

use std::time::Duration;

use common::*;
use futures::{AsyncWriteExt, StreamExt};
use liquid_p2p::{
    Config, EXCHANGE_PROTOCOL, Error, Event, ExchangeFailure, Host, PROTOCOL,
    libp2p::{Multiaddr, identity::Keypair},
    low_level::codec::encode_frame,
    low_level::exchange::{read_protocol_list, write_protocol_list},
};

/// The scenario of the Go original's host test, on real TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_requiring_each_other_exchange_protocols_and_messages() {
    init_tracing();
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (ida, idb) = (ka.public().to_peer_id(), kb.public().to_peer_id());
    let (pa, pb) = (free_port(), free_port());
    let build = |key: Keypair, port: u16, other: Multiaddr| async move {
        Host::builder()
            .keypair(key)
            .listen_on(format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"))
            .required_peer(other)
            .build()
            .await
            .expect("host")
    };
    // Started together: both dial at once.
    let (a, b) = tokio::join!(
        build(ka, pa, address(pb, idb)),
        build(kb, pb, address(pa, ida))
    );
    let (mut ea, mut eb) = (a.control().events(), b.control().events());
    for (host, events, other) in [(&a, &mut ea, idb), (&b, &mut eb, ida)] {
        if !host.control().connected_peers().contains(&other)
            || host.control().peer_protocols(&other).is_none()
        {
            wait_for(
                events,
                Duration::from_secs(10),
                |e| matches!(e, Event::PeerConnected { peer } if *peer == other),
            )
            .await;
        }
    }
    // Simultaneous dials end in one working connection each way.
    wait_until(Duration::from_secs(5), || {
        a.control().pool_stats(&idb).len() == 1 && b.control().pool_stats(&ida).len() == 1
    })
    .await;

    let mut ia = a.control().register_protocol("/test").expect("register");
    let mut ib = b.control().register_protocol("/test").expect("register");
    // Pushes go out within `protocol_push_delay`; the wait allows a loaded
    // machine far more.
    for (events, other) in [(&mut ea, idb), (&mut eb, ida)] {
        wait_for(events, Duration::from_secs(10), |e| {
            matches!(e, Event::ProtocolSupported { peer, protocol } if *peer == other && protocol == "/test")
        })
        .await;
    }
    a.control()
        .send(idb, "/test", b"ping")
        .await
        .expect("a to b");
    b.control()
        .send(ida, "/test", b"pong")
        .await
        .expect("b to a");
    assert_eq!(&ib.recv().await.expect("at b").payload[..], b"ping");
    assert_eq!(&ia.recv().await.expect("at a").payload[..], b"pong");

    b.control()
        .unregister_protocol("/test")
        .expect("unregister");
    wait_for(&mut ea, Duration::from_secs(10), |e| {
        matches!(e, Event::ProtocolUnsupported { peer, protocol } if *peer == idb && protocol == "/test")
    })
    .await;
    let before = a.control().pool_stats(&idb)[0].clone();
    assert!(matches!(
        a.control().send(idb, "/test", b"x").await,
        Err(Error::ProtocolUnsupported { peer, .. }) if peer == idb
    ));
    assert_eq!(
        a.control().pool_stats(&idb)[0].borrowed,
        before.borrowed,
        "no stream touched"
    );

    b.shutdown().await;
    wait_for(
        &mut ea,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerDisconnected { peer } if *peer == idb),
    )
    .await;
    assert!(
        a.control().peer_protocols(&idb).is_none(),
        "the book entry is cleared"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_changes_makes_at_most_two_pushes_and_ends_right() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let c = host(Config::default()).await;
    connect(&b, &a).await;
    connect(&c, &a).await;
    let (mut eb, mut ec) = (b.control().events(), c.control().events());
    let a_id = a.local_peer_id();
    for (host, events) in [(&b, &mut eb), (&c, &mut ec)] {
        if host.control().peer_protocols(&a_id).is_none() {
            wait_for(events, Duration::from_secs(5), |e| {
                matches!(e, Event::PeerConnected { .. })
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while eb.try_recv().is_some() {}
    while ec.try_recv().is_some() {}

    let mut inboxes = Vec::new();
    for i in 0..5 {
        inboxes.push(
            a.control()
                .register_protocol(format!("/burst/{i}"))
                .expect("register"),
        );
    }
    a.control()
        .unregister_protocol("/burst/0")
        .expect("unregister");
    a.control()
        .unregister_protocol("/burst/1")
        .expect("unregister");
    a.control()
        .unregister_protocol("/burst/2")
        .expect("unregister");
    a.control()
        .register_protocol("/burst/0")
        .expect("register again");
    a.control()
        .unregister_protocol("/burst/4")
        .expect("unregister");
    let expected = vec!["/burst/0".to_owned(), "/burst/3".to_owned()];
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (host, events) in [(&b, &mut eb), (&c, &mut ec)] {
        assert_eq!(
            host.control().peer_protocols(&a_id),
            Some(expected.clone()),
            "within a second"
        );
        let mut pushes = 0;
        while let Some(e) = events.try_recv() {
            if matches!(e, Event::PeerProtocols { peer, .. } if peer == a_id) {
                pushes += 1;
            }
        }
        assert!(
            (1..=2).contains(&pushes),
            "{pushes} pushes for a burst of ten changes"
        );
    }
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_exchanges_is_kept_with_an_unknown_list_and_reported() {
    let host = host(Config::default().with_exchange_timeout(Duration::from_secs(1))).await;
    let mut events = host.control().events();
    let (plain, mut control) = plain_swarm(host.listen_addrs()[0].clone()).await;
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::ProtocolExchangeFailed { .. })
    })
    .await;
    match e {
        Event::ProtocolExchangeFailed { peer, reason } => {
            assert_eq!(peer, plain);
            // It refuses the exchange protocol in its negotiation.
            assert_eq!(reason, ExchangeFailure::NotSpoken);
        }
        _ => unreachable!(),
    }
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerConnected { peer } if *peer == plain),
    )
    .await;
    assert_eq!(
        host.control().peer_protocols(&plain),
        None,
        "unknown, not empty"
    );
    // Sends are not failed early; the peer accepts message streams. Every stream
    // is taken at once and kept: libp2p-stream resets a stream that arrives while
    // the one before still waits in its channel of one place, and the host's
    // reserve opens several.
    let mut incoming = control.accept(PROTOCOL).expect("accept");
    let (streams, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(stream) = incoming.next().await {
            if streams.send(stream).is_err() {
                return;
            }
        }
    });
    host.control()
        .send(plain, "/anything/1", b"hi")
        .await
        .expect("not failed fast");
    let (from, _stream) = tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await
        .expect("stream arrives")
        .expect("open");
    assert_eq!(from, host.local_peer_id());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_swarm_learns_the_protocol_list_and_delivers_a_message() {
    let host = host(Config::default()).await;
    let mut inbox = host
        .control()
        .register_protocol("/chain/7/consensus/1")
        .expect("register");
    let (plain, mut control) = plain_swarm(host.listen_addrs()[0].clone()).await;
    // The exchange, by hand: our (empty) list, then the host's.
    let mut s = control
        .open_stream(host.local_peer_id(), EXCHANGE_PROTOCOL)
        .await
        .expect("exchange stream");
    write_protocol_list(&mut s, &[]).await.expect("write list");
    let list = read_protocol_list(&mut s, 64).await.expect("host's list");
    assert_eq!(list, vec!["/chain/7/consensus/1".to_owned()]);
    // A message, by hand: one frame on a message stream.
    let mut m = control
        .open_stream(host.local_peer_id(), PROTOCOL)
        .await
        .expect("message stream");
    m.write_all(&encode_frame("/chain/7/consensus/1", b"block 9"))
        .await
        .expect("write");
    m.flush().await.expect("flush");
    let msg = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!((msg.peer, &msg.payload[..]), (plain, &b"block 9"[..]));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_registered_in_the_builder_are_known_when_the_first_peer_connects() {
    let a = Host::builder()
        .listen_on(TCP.parse().expect("addr"))
        .register_protocol("/early/1")
        .build()
        .await
        .expect("host");
    let b = host(Config::default()).await;
    let mut events = b.control().events();
    let a_id = b.dial(a.listen_addrs()[0].clone()).await.expect("dial");
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerConnected { peer } if *peer == a_id),
    )
    .await;
    assert!(
        b.control().is_supported(&a_id, "/early/1"),
        "known before PeerConnected"
    );
    b.control()
        .send(a_id, "/early/1", b"first")
        .await
        .expect("send");
    let mut inbox = a.take_inbox("/early/1").expect("registered by the builder");
    assert_eq!(
        &inbox.recv().await.expect("delivered").payload[..],
        b"first"
    );
    assert!(a.take_inbox("/early/1").is_none(), "taken once");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_beyond_the_limit_the_peer_stated_is_refused_before_it_is_sent() {
    const LIMIT: usize = 64 * 1024;
    let small = host(Config::default().with_max_frame_size(LIMIT)).await;
    let mut inbox = small
        .control()
        .register_protocol("/limits/1")
        .expect("register");
    let big = host(Config::default()).await;
    let mut events = big.control().events();
    let to = connect(&big, &small).await;
    // The peer's list can arrive first with its own request; its limit comes
    // with the response to ours, before `PeerConnected`.
    wait_for(
        &mut events,
        Duration::from_secs(10),
        |e| matches!(e, Event::PeerConnected { peer } if *peer == to),
    )
    .await;
    let e = big
        .control()
        .send(to, "/limits/1", vec![1u8; LIMIT + 1])
        .await
        .expect_err("beyond the peer's limit");
    assert!(
        matches!(e, Error::FrameTooLargeForPeer { peer, size, max } if peer == to && size == LIMIT + 1 && max == LIMIT),
        "{e}"
    );
    // Up to the limit goes through, and the refused one cost the connection nothing.
    big.control()
        .send(to, "/limits/1", vec![2u8; LIMIT])
        .await
        .expect("within the peer's limit");
    let message = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!(message.payload.len(), LIMIT);
    small.shutdown().await;
    big.shutdown().await;
}

/// A responder of an older version ends its response after the list: its list is
/// taken, its limits are unknown, and nothing is reported as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_without_limits_is_a_complete_exchange() {
    let host = host(Config::default()).await;
    let mut events = host.control().events();
    let (plain, _control, mut incoming) =
        plain_swarm_accepting(host.listen_addrs()[0].clone(), &[EXCHANGE_PROTOCOL]).await;
    let mut requests = incoming.pop().expect("exchange streams");
    tokio::spawn(async move {
        while let Some((_, mut s)) = requests.next().await {
            if read_protocol_list(&mut s, 64).await.is_ok() {
                let _ = write_protocol_list(&mut s, &["/older/1".to_owned()]).await;
                let _ = s.close().await;
            }
        }
    });
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::PeerConnected { peer } if *peer == plain)
            || matches!(e, Event::ProtocolExchangeFailed { peer, .. } if *peer == plain)
    })
    .await;
    assert!(matches!(e, Event::PeerConnected { .. }), "{e:?}");
    assert_eq!(
        host.control().peer_protocols(&plain),
        Some(vec!["/older/1".to_owned()])
    );
    host.shutdown().await;
}
