//! Graceful shutdown: frames being written finish and arrive, pools and connections
//! close, the peer sees the disconnect, and every later call fails with `ShutDown`.

mod common;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use common::*;
use liquid_p2p::{
    Config, Error, Event, Host,
    libp2p::{
        Multiaddr, PeerId,
        core::{Endpoint, transport::PortUse},
        swarm::{
            ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
            THandlerOutEvent, ToSwarm, dummy,
        },
    },
};

const PROTO: &str = "/test/shutdown/1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_frame_being_written_finish_and_then_refuses_everything() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    let mut a_events = a.control().events();
    let a_id = connect(&b, &a).await;

    let big = vec![0xabu8; 8 << 20];
    let sending = {
        let control = b.control().clone();
        let big = big.clone();
        tokio::spawn(async move { control.send(a_id, PROTO, big).await })
    };
    // Shut down while the 8 MiB frame is on its way.
    wait_until(Duration::from_secs(5), || {
        b.control().pool_stats(&a_id).iter().any(|s| s.borrowed > 0)
    })
    .await;
    b.shutdown().await;
    sending
        .await
        .expect("task")
        .expect("the frame accepted before the shutdown was written");
    let m = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("delivered")
        .expect("open");
    assert!(m.payload == big, "the whole frame arrived intact");
    wait_for(
        &mut a_events,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerDisconnected { peer } if *peer == b.local_peer_id()),
    )
    .await;

    // Every later call is refused with a typed error.
    assert!(matches!(
        b.control().send(a_id, PROTO, b"x").await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.control().borrow_stream(a_id).await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.control().register_protocol("/x/1"),
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.control().unregister_protocol(PROTO),
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.dial(a.listen_addrs()[0].clone()).await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(b.dial_peer(a_id).await, Err(Error::ShutDown)));
    assert!(matches!(
        b.add_required_peer(a.listen_addrs()[0].clone()).await,
        Err(Error::ShutDown)
    ));
    assert!(matches!(
        b.control()
            .blacklist_add(a_id.to_string().parse().expect("entry"))
            .await,
        Err(Error::ShutDown)
    ));
    assert!(b.control().pool_stats(&a_id).is_empty(), "pools closed");
    assert!(b.control().connected_peers().is_empty());
    b.shutdown().await; // again: nothing happens
    a.shutdown().await;
}

/// `shutdown` returns only after every task the library spawned for the host
/// has ended: stream readers, exchanges, stream opens, the push loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_every_task_of_the_host_has_ended() {
    let a = host(Config::default()).await;
    let peers = [host(Config::default()).await, host(Config::default()).await];
    let mut inbox = a.control().register_protocol(PROTO).expect("register");
    for peer in &peers {
        let a_id = connect(peer, &a).await;
        for i in 0..20u32 {
            peer.control()
                .send(a_id, PROTO, i.to_le_bytes())
                .await
                .expect("sent");
        }
    }
    for _ in 0..40 {
        tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("delivered")
            .expect("open");
    }
    // Readers of the peers' inbound streams, at least, are running.
    let control = a.control();
    assert!(
        control.running_tasks() >= 2,
        "{} tasks",
        control.running_tasks()
    );
    a.shutdown().await;
    assert_eq!(control.running_tasks(), 0, "every task ended");
    for peer in peers {
        peer.shutdown().await;
    }
}

/// A node behaviour that reports an event every time the swarm polls it.
struct Chatty(u64);

impl NetworkBehaviour for Chatty {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = u64;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<u64, THandlerInEvent<Self>>> {
        self.0 += 1;
        Poll::Ready(ToSwarm::GenerateEvent(self.0))
    }
}

/// The node took its behaviour's events and stopped reading them: the swarm waits
/// for it (nothing is dropped) while the host runs, but `shutdown` still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_while_the_node_leaves_its_behaviours_events_unread() {
    let host = Host::builder()
        .behaviour(|_| Chatty(0))
        .build()
        .await
        .expect("host");
    let mut events = host.take_behaviour_events().expect("events");
    // The first events arrive in order: none was dropped.
    for expected in 1..=3u64 {
        assert_eq!(events.recv().await, Some(expected));
    }
    // The queue fills (1,024 places) and stays full: the swarm waits on it.
    wait_until(Duration::from_secs(5), || {
        events.len() == events.max_capacity()
    })
    .await;
    tokio::time::timeout(Duration::from_secs(5), host.shutdown())
        .await
        .expect("shutdown ends");
    drop(events);
}
