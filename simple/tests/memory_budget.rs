//! Inbound memory is bounded in bytes: a peer that sends 16 MiB frames as fast as
//! it can, on many streams, to a protocol nobody reads, gets the receiver to hold
//! no more than the protocol's byte budget plus a stated slack, while another
//! protocol keeps flowing. Alone in its binary, so that the process's RSS is this
//! test's.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use futures::AsyncWriteExt;
use liquid_p2p::{Config, PROTOCOL, low_level::codec::encode_header};
use tokio::time::Instant;

const UNREAD: &str = "/test/memory/unread";
const READ: &str = "/test/memory/read";
const FRAME: usize = 16 << 20;
const BUDGET: usize = 64 << 20;
/// Streams the peer writes on at once.
const STREAMS: usize = 16;
/// Beyond the budget: the streams' receive windows (256 KiB each), a frame's
/// read buffer growing ahead of its bytes (1 MiB), the allocator's own.
const SLACK: usize = 32 << 20;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_frames_nobody_reads_hold_at_most_the_budget_and_others_flow() {
    let receiver = host(
        Config::default()
            .with_max_frame_size(FRAME)
            .with_inbox_byte_budget(BUDGET),
    )
    .await;
    let _unread = receiver
        .control()
        .register_protocol(UNREAD)
        .expect("register");
    let mut read = receiver
        .control()
        .register_protocol(READ)
        .expect("register");
    let witness = host(Config::default()).await;
    let to = connect(&witness, &receiver).await;
    let (_, control) = plain_swarm(receiver.listen_addrs()[0].clone()).await;

    // One payload for every write: the sender's own memory does not grow.
    let payload: Arc<Vec<u8>> = Arc::new(vec![0x5a; FRAME]);
    let mut header = Vec::new();
    encode_header(0, UNREAD, FRAME, &mut header);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();

    let flooders: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (mut control, payload, header) =
                (control.clone(), Arc::clone(&payload), header.clone());
            let peer = receiver.local_peer_id();
            tokio::spawn(async move {
                let Ok(mut stream) = control.open_stream(peer, PROTOCOL).await else {
                    return;
                };
                loop {
                    if stream.write_all(&header).await.is_err()
                        || stream.write_all(&payload).await.is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();

    // The other protocol flows meanwhile, and the receiver's memory is sampled.
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(8);
    let mut delivered = 0u32;
    while Instant::now() < until {
        witness
            .control()
            .send(to, READ, delivered.to_le_bytes())
            .await
            .expect("the read protocol is not held up");
        let message = tokio::time::timeout(Duration::from_secs(5), read.recv())
            .await
            .expect("the read protocol's message arrives")
            .expect("open");
        assert_eq!(&message.payload[..], delivered.to_le_bytes());
        delivered += 1;
        peak = peak.max(rss_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = receiver
        .control()
        .inbox_stats()
        .into_iter()
        .find(|s| s.protocol == UNREAD)
        .expect("stats");
    let grown = peak.saturating_sub(before);
    println!(
        "unread protocol holds {} MiB in {} messages; RSS grew by {} MiB at most",
        held.queued_bytes >> 20,
        held.queued_messages,
        grown >> 20
    );
    assert!(
        held.queued_bytes >= BUDGET / 2,
        "the peer filled the budget: {held:?}"
    );
    assert!(held.queued_bytes <= BUDGET, "{held:?}");
    assert!(
        grown <= BUDGET + SLACK,
        "RSS grew by {} MiB: more than the budget ({} MiB) + slack ({} MiB)",
        grown >> 20,
        BUDGET >> 20,
        SLACK >> 20
    );
    for flooder in flooders {
        flooder.abort();
    }
    receiver.shutdown().await;
    witness.shutdown().await;
}
