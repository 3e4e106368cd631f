//! A plain rust-libp2p swarm (not our Host), speaking the documented wire format,
//! writes malformed frames: only the offending stream is reset, the event names the
//! peer, and the connection keeps carrying good frames.

mod common;

use std::time::Duration;

use common::*;
use futures::{AsyncReadExt, AsyncWriteExt};
use liquid_p2p::{
    Config, Event, FrameError, PROTOCOL,
    low_level::codec::{encode_frame, encode_header},
};

const PROTO: &str = "/test/plain/1";

fn bad_frames() -> Vec<(Vec<u8>, FrameError)> {
    let mut flags = Vec::new();
    encode_header(0b10, PROTO, 1, &mut flags);
    flags.push(0);
    let long_proto = vec![0u8, 0x81, 0x02]; // proto_len 257
    let not_utf8 = vec![0u8, 2, 0xc3, 0x28, 0];
    let mut huge = Vec::new();
    encode_header(0, PROTO, 1 << 30, &mut huge);
    vec![
        (flags, FrameError::UnknownFlags(2)),
        (long_proto, FrameError::ProtocolTooLong { len: 257 }),
        (not_utf8, FrameError::ProtocolNotUtf8),
        (
            huge,
            FrameError::TooLarge {
                len: 1 << 30,
                max: 16 << 20,
            },
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_from_a_plain_libp2p_peer_reset_only_their_stream() {
    let host = host(Config::default()).await;
    let mut inbox = host.control().register_protocol(PROTO).expect("register");
    let mut events = host.control().events();
    let (plain_id, mut control) = plain_swarm(host.listen_addrs()[0].clone()).await;
    wait_for(
        &mut events,
        Duration::from_secs(5),
        |e| matches!(e, Event::PeerConnected { peer } if *peer == plain_id),
    )
    .await;

    let mut good = control
        .open_stream(host.local_peer_id(), PROTOCOL)
        .await
        .expect("open a good stream");
    for (frame, expected) in bad_frames() {
        let mut bad = control
            .open_stream(host.local_peer_id(), PROTOCOL)
            .await
            .expect("open");
        bad.write_all(&frame).await.expect("write");
        bad.flush().await.expect("flush");
        let e = wait_for(&mut events, Duration::from_secs(5), |e| {
            matches!(e, Event::ProtocolError { .. })
        })
        .await;
        match e {
            Event::ProtocolError { peer, error, .. } => {
                assert_eq!(peer, plain_id);
                assert_eq!(error, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The host reset the stream: reading it ends (error or EOF) instead of hanging.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("stream was reset");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // The connection and the other stream go on.
        good.write_all(&encode_frame(PROTO, b"still here"))
            .await
            .expect("write");
        good.flush().await.expect("flush");
        let m = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
            .await
            .expect("good frame delivered")
            .expect("open");
        assert_eq!((m.peer, &m.payload[..]), (plain_id, &b"still here"[..]));
    }
    assert_eq!(host.control().connected_peers(), vec![plain_id]);

    // Garbage after a valid frame: the frame is delivered, then the stream is reset.
    let mut s = control
        .open_stream(host.local_peer_id(), PROTOCOL)
        .await
        .expect("open");
    let mut bytes = encode_frame(PROTO, b"valid");
    bytes.extend_from_slice(&[0xff; 12]);
    s.write_all(&bytes).await.expect("write");
    s.flush().await.expect("flush");
    let m = inbox.recv().await.expect("valid frame first");
    assert_eq!(&m.payload[..], b"valid");
    let e = wait_for(&mut events, Duration::from_secs(5), |e| {
        matches!(e, Event::ProtocolError { .. })
    })
    .await;
    assert!(matches!(e, Event::ProtocolError { peer, .. } if peer == plain_id));
    host.shutdown().await;
}
