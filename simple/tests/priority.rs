//! Send priorities end to end: a lower-priority writer pauses between slices
//! while a higher one writes, yet a higher-priority protocol whose receiver stopped
//! reading holds nothing back, and a frame cut into slices arrives whole and in
//! order.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::*;
use liquid_p2p::{Config, Error, Host, Inbox, PeerId, PoolConfig, ProtocolPriority};

const URGENT: &str = "/test/priority/urgent";
const BULK: &str = "/test/priority/bulk";

/// A payload that names its sequence number and can be checked byte by byte.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ seq) as u8).collect();
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    bytes
}

fn check(bytes: &[u8], len: usize) -> u64 {
    assert_eq!(bytes.len(), len, "length");
    let seq = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    assert!(
        bytes == payload(seq, len).as_slice(),
        "message {seq} arrived damaged"
    );
    seq
}

/// A receiver with inboxes for URGENT and BULK, and a sender (with
/// `sender_config`) connected to it that sends URGENT as `High` and BULK as
/// `Low`.
struct Pair {
    receiver: Host,
    sender: Host,
    to: PeerId,
    urgent_inbox: Inbox,
    bulk_inbox: Inbox,
}

impl Pair {
    async fn new(sender_config: Config) -> Self {
        let receiver = host(Config::default()).await;
        let sender = host(sender_config).await;
        let register = |protocol| receiver.control().register_protocol(protocol);
        let urgent_inbox = register(URGENT).expect("register");
        let bulk_inbox = register(BULK).expect("register");
        for (protocol, priority) in [
            (URGENT, ProtocolPriority::High),
            (BULK, ProtocolPriority::Low),
        ] {
            sender
                .control()
                .register_protocol_with_priority(protocol, priority)
                .expect("register");
        }
        let to = connect(&sender, &receiver).await;
        Self {
            receiver,
            sender,
            to,
            urgent_inbox,
            bulk_inbox,
        }
    }

    async fn shut_down(self) {
        self.receiver.shutdown().await;
        self.sender.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_protocol_nobody_reads_holds_back_no_lower_one() {
    let mut pair = Pair::new(
        Config::default()
            .with_pool(PoolConfig::default().with_send_timeout(Duration::from_secs(1))),
    )
    .await;
    // The receiver never reads URGENT.
    let (control, to) = (pair.sender.control().clone(), pair.to);

    // 8 tasks send URGENT until their streams' windows are shut and a send
    // fails for lack of room.
    let stop = Arc::new(AtomicBool::new(false));
    let urgent_sent = Arc::new(AtomicU64::new(0));
    let urgent: Vec<_> = (0..8)
        .map(|_| {
            let (control, stop, sent) =
                (control.clone(), Arc::clone(&stop), Arc::clone(&urgent_sent));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match control.send(to, URGENT, vec![7u8; 60 * 1024]).await {
                        Ok(()) => sent.fetch_add(1, Ordering::Relaxed),
                        Err(Error::Backpressure { .. } | Error::Timeout { .. }) => return,
                        Err(e) => panic!("urgent send failed with {e}"),
                    };
                }
            })
        })
        .collect();
    // Until the urgent writers are stuck waiting for room.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = urgent_sent.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }

    // Low-priority messages still go: a writer waiting for room is not writing.
    const COUNT: u64 = 50;
    for seq in 0..COUNT {
        control
            .send(to, BULK, payload(seq, 32 * 1024))
            .await
            .unwrap_or_else(|e| {
                panic!("bulk message {seq} held back by stuck urgent writers: {e}")
            });
    }
    let mut seen = vec![false; COUNT as usize];
    for _ in 0..COUNT {
        let message = tokio::time::timeout(Duration::from_secs(10), pair.bulk_inbox.recv())
            .await
            .expect("bulk message delivered")
            .expect("inbox open");
        let seq = check(&message.payload, 32 * 1024);
        assert!(
            !std::mem::replace(&mut seen[seq as usize], true),
            "{seq} twice"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in urgent {
        task.await.expect("urgent sender");
    }
    pair.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_burst_of_large_and_small_frames_paused_for_urgent_traffic_arrives_whole_and_in_order()
 {
    const LARGE: usize = 1 << 20;
    const SMALL: usize = 256;
    const COUNT: u64 = 24;
    let mut pair = Pair::new(Config::default()).await;
    let (control, to) = (pair.sender.control().clone(), pair.to);

    // Urgent traffic the whole time, so the burst's writer keeps pausing.
    let stop = Arc::new(AtomicBool::new(false));
    let urgent = tokio::spawn({
        let (control, stop) = (control.clone(), Arc::clone(&stop));
        async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                control
                    .send(to, URGENT, payload(sent, SMALL))
                    .await
                    .expect("urgent send");
                sent += 1;
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            sent
        }
    });

    let size = |seq: u64| if seq.is_multiple_of(2) { LARGE } else { SMALL };
    let mut burst = control
        .borrow_stream_with_priority(to, ProtocolPriority::Low)
        .await
        .expect("borrow");
    for seq in 0..COUNT {
        if seq == COUNT / 2 {
            // Changed at run time: later frames go with the new priority.
            control
                .set_priority(BULK, ProtocolPriority::Normal)
                .expect("set priority");
            assert_eq!(control.priority(BULK), ProtocolPriority::Normal);
        }
        burst
            .send(BULK, payload(seq, size(seq)))
            .await
            .expect("burst send");
    }
    drop(burst);
    for expected in 0..COUNT {
        let message = tokio::time::timeout(Duration::from_secs(20), pair.bulk_inbox.recv())
            .await
            .expect("burst message delivered")
            .expect("inbox open");
        assert_eq!(
            check(&message.payload, size(expected)),
            expected,
            "order kept"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let urgent_sent = urgent.await.expect("urgent sender");
    assert!(urgent_sent > 0);
    for _ in 0..urgent_sent {
        let message = tokio::time::timeout(Duration::from_secs(10), pair.urgent_inbox.recv())
            .await
            .expect("urgent message delivered")
            .expect("inbox open");
        check(&message.payload, SMALL);
    }
    assert!(
        pair.urgent_inbox.try_recv().is_none(),
        "no urgent message beyond those sent"
    );
    pair.shut_down().await;
}
