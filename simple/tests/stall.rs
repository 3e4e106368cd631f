//! What the stall watchdog (in our muxer) closes and what it leaves alone: an
//! application that does not read its inbox is backpressure, never a stall; a
//! transport whose socket takes no byte for `stall_timeout` is closed as stalled.
//! Apart from the heavy-load tests of `watchdog.rs`, so that a busy machine does
//! not starve the relay of the frozen-transport test.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Error, Event, PoolConfig};
use tokio::time::Instant;

const PROTO: &str = "/test/stall/1";
const SENDERS: usize = 32;
const STALL: Duration = Duration::from_secs(2);
/// The frozen-transport test's stall timeout: longer, so that a machine busy with
/// other tests does not keep a host from reading its socket for that long while
/// the relay still works.
const FROZEN_STALL: Duration = Duration::from_secs(5);

fn load_config() -> Config {
    Config::default().with_stall_timeout(STALL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_nobody_reads_is_backpressure_not_a_stall() {
    // The receiver does not read its inbox: its queue fills, its streams stop
    // being read and flow control blocks the sender's writes. The transport
    // still moves (the receiver's yamux reads its socket), so this is a slow
    // application: its sender gets `Backpressure`, the connection stays.
    let config = load_config()
        .with_handler_queue_len(1)
        .with_pool(PoolConfig::default().with_send_timeout(STALL / 2));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let a_id = connect(&b, &a).await;
    let mut events = b.control().events();
    let mut a_events = a.control().events();
    let stuck = {
        let control = b.control().clone();
        tokio::spawn(async move {
            let payload = vec![1u8; 1 << 20];
            let mut sent = 0;
            loop {
                match control.send(a_id, PROTO, &payload).await {
                    Ok(()) => sent += 1,
                    Err(e) => return (sent, e),
                }
            }
        })
    };
    let (sent, err) = tokio::time::timeout(STALL * 3, stuck)
        .await
        .expect("the sender hears of it")
        .expect("task");
    assert!(
        matches!(&err, Error::Backpressure { protocol, .. } if protocol == PROTO),
        "{err}"
    );
    // Three stall timeouts without a close.
    tokio::time::sleep(STALL * 3).await;
    for events in [&mut events, &mut a_events] {
        while let Some(e) = events.try_recv() {
            assert!(
                !matches!(
                    e,
                    Event::ConnectionStalled { .. } | Event::ConnectionClosed { .. }
                ),
                "{e:?}"
            );
        }
    }
    assert_eq!(b.control().connected_peers(), vec![a_id]);
    // Every acknowledged message is there once the application reads.
    for _ in 0..sent {
        tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("acknowledged message delivered")
            .expect("inbox open");
    }
    b.control()
        .send(a_id, PROTO, b"after")
        .await
        .expect("the connection still carries messages");
    a.shutdown().await;
    b.shutdown().await;
}

/// Two hosts, `b` connected to `a` through a freezable relay, and `SENDERS` tasks
/// of `b` streaming 1 MiB messages to `a` until a send fails (with that error).
/// Long pings and send timeout: what the tests wait for is the transport's
/// stall or close, not a dead-peer check or a backpressure error.
struct Frozen {
    a: liquid_p2p::Host,
    b: liquid_p2p::Host,
    a_id: liquid_p2p::PeerId,
    frozen: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<Error>>,
    events: liquid_p2p::Events,
}

async fn streaming_through_a_relay() -> Frozen {
    let config = Config::default()
        .with_stall_timeout(FROZEN_STALL)
        .with_ping_interval(Duration::from_secs(60))
        .with_pool(PoolConfig::default().with_send_timeout(Duration::from_secs(60)));
    let a = host(config.clone()).await;
    let b = host(config).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    tokio::spawn(async move { while inbox.recv().await.is_some() {} });
    let (a_id, frozen) = connect_through_relay(&b, &a).await;
    let events = b.control().events();
    // Enough senders that what they may write when the relay freezes (a stream
    // window, 256 KiB, each) is more than the kernel buffers take: bytes then
    // wait for the socket. The streams are opened while the relay still works.
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let control = b.control().clone();
            tokio::spawn(async move {
                let payload = vec![1u8; 1 << 20];
                loop {
                    if let Err(e) = control.send(a_id, PROTO, &payload).await {
                        return e;
                    }
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), || {
        b.control()
            .pool_stats(&a_id)
            .iter()
            .any(|s| s.borrowed >= SENDERS)
    })
    .await;
    Frozen {
        a,
        b,
        a_id,
        frozen,
        senders,
        events,
    }
}

impl Frozen {
    /// Every sender got a typed error of the connection's end: a write under way
    /// may see the closed stream, and a sender waiting for a new stream its failed
    /// open, before the behaviour has heard why.
    async fn senders_released(&mut self) {
        for sender in self.senders.drain(..) {
            let err = tokio::time::timeout(Duration::from_secs(5), sender)
                .await
                .expect("blocked sender released")
                .expect("task");
            assert!(
                matches!(
                    err,
                    Error::ConnectionStalled { .. }
                        | Error::NotConnected { .. }
                        | Error::Write { .. }
                        | Error::StreamOpen { .. }
                        | Error::PoolClosed { .. }
                ),
                "{err}"
            );
        }
    }

    async fn shut_down(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_stops_moving_bytes_is_closed_as_stalled() {
    let mut run = streaming_through_a_relay().await;
    // No stall while the relay works (on a machine so busy that a host does not
    // read its socket for `FROZEN_STALL`, there would be one: seen once in four
    // runs with two busy loops and a build beside the suite).
    while let Some(e) = run.events.try_recv() {
        assert!(!matches!(e, Event::ConnectionStalled { .. }), "{e:?}");
    }
    run.frozen.store(true, Ordering::Relaxed);
    let e = wait_for(&mut run.events, FROZEN_STALL * 3, |e| {
        matches!(e, Event::ConnectionStalled { .. })
    })
    .await;
    assert!(matches!(e, Event::ConnectionStalled { peer, .. } if peer == run.a_id));
    run.senders_released().await;
    assert_eq!(run.b.inbound_stream_count(), 0);
    run.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_neither_end_can_read_still_ends() {
    // Data queued behind a relay that reads nothing either way: closing the
    // connection means writing what is queued, then GoAway, which never goes
    // through. The close is given up after `stall_timeout` of no progress (or
    // the stall rule ends it first), and the connection is reported closed.
    let mut run = streaming_through_a_relay().await;
    run.frozen.store(true, Ordering::Relaxed);
    let connection = run.b.control().pool_stats(&run.a_id)[0].connection;
    let closing_at = Instant::now();
    run.b
        .close_connection(connection)
        .await
        .expect("close requested");
    wait_for(
        &mut run.events,
        FROZEN_STALL * 3,
        |e| matches!(e, Event::ConnectionClosed { connection: c, .. } if *c == connection),
    )
    .await;
    let took = closing_at.elapsed();
    assert!(
        took <= FROZEN_STALL + Duration::from_secs(3),
        "the close took {took:?}"
    );
    run.senders_released().await;
    assert!(run.b.control().pool_stats(&run.a_id).is_empty());
    run.shut_down().await;
}
