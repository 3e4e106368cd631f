//! Failed dials, listens and key files come back as typed errors a caller can
//! match on (the kind of failure, the address, the operating system's error kind),
//! over real TCP sockets on loopback.

mod common;

use std::{io, net::TcpListener};

use common::*;
use liquid_p2p::{
    Config, DialFailure, Error, Host, PeerId,
    libp2p::{Multiaddr, multiaddr::Protocol},
};

/// A loopback port held by a socket that never listens: a connection to it is
/// refused, and no other test can take the port while the socket lives.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = socket.local_addr().expect("address").port();
    (socket, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_to_a_closed_port_fails_with_a_transport_cause_and_the_os_words() {
    let a = host(Config::default()).await;
    let (_held, port) = refusing_port();
    match a.dial(tcp_address(port)).await {
        Err(Error::Dial {
            cause: DialFailure::Transport,
            reason,
        }) => assert!(!reason.is_empty(), "the transport's words are kept"),
        other => panic!("expected a transport dial failure, got {other:?}"),
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_meets_another_peer_id_fails_as_wrong_peer() {
    let a = host(Config::default()).await;
    let b = host(Config::default()).await;
    let mut address = b.listen_addrs()[0].clone();
    address.pop();
    let address = address.with(Protocol::P2p(PeerId::random()));
    assert!(
        matches!(
            a.dial(address).await,
            Err(Error::Dial {
                cause: DialFailure::WrongPeer,
                ..
            })
        ),
        "a dial must prove the peer id its address names"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_fails_with_the_address_and_the_os_error_kind() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let a = host(Config::default()).await;
    match a.listen_on(tcp_address(port)).await {
        Err(Error::Listen { address, source }) => {
            assert_eq!(address, tcp_address(port));
            assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{source}");
        }
        other => panic!("expected a listen error, got {other:?}"),
    }
    let memory: Multiaddr = "/memory/1234".parse().expect("address");
    match a.listen_on(memory.clone()).await {
        Err(Error::Listen { address, source }) => {
            assert_eq!(address, memory);
            assert_eq!(source.kind(), io::ErrorKind::Unsupported, "{source}");
        }
        other => panic!("expected an unsupported address, got {other:?}"),
    }
    // The same from the builder, before the host runs.
    match Host::builder().listen_on(tcp_address(port)).build().await {
        Err(Error::Listen { source, .. }) => {
            assert_eq!(source.kind(), io::ErrorKind::AddrInUse, "{source}");
        }
        other => panic!("expected a listen error, got {other:?}"),
    }
    drop(taken);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_that_is_not_a_key_is_invalid_data() {
    let path = std::env::temp_dir().join(format!(
        "liquid-p2p-errors-{}-{}.key",
        std::process::id(),
        PeerId::random()
    ));
    std::fs::write(&path, b"not a protobuf key").expect("write");
    let built = Host::builder().key_file(&path).build().await;
    let _ = std::fs::remove_file(&path);
    match built {
        Err(Error::KeyFile {
            path: named,
            source,
        }) => {
            assert_eq!(named, path);
            assert_eq!(source.kind(), io::ErrorKind::InvalidData, "{source}");
        }
        other => panic!("expected a key file error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_peer_address_without_a_peer_id_is_refused_with_the_address() {
    let a = host(Config::default()).await;
    let address = tcp_address(9);
    match a.add_required_peer(address.clone()).await {
        Err(Error::MissingPeerId { address: named }) => assert_eq!(named, address),
        other => panic!("expected MissingPeerId, got {other:?}"),
    }
    a.shutdown().await;
}
