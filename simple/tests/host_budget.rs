//! The byte budget all inboxes share (`host_inbox_byte_budget`): a reader
//! waiting for its room sleeps, and a dropped inbox gives its messages' room
//! back. Alone in its binary, so that the process's CPU time is this test's.

mod common;

use std::time::Duration;

use common::*;
use liquid_p2p::Config;

const A: &str = "/test/host-budget/a";
const B: &str = "/test/host-budget/b";
/// The budget of one inbox and of all of them.
const ROOM: usize = 128 * 1024;

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("command")
        .1
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15, in clock ticks of 1/100 s.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waiting_for_the_hosts_room_sleeps_and_a_dropped_inbox_gives_it_back() {
    // A's three unread 40 KiB messages leave no room in the host's 128 KiB
    // for B's 16 KiB one; A's own inbox is the whole budget too.
    let receiver = host(
        Config::default()
            .with_max_frame_size(64 * 1024)
            .with_inbox_byte_budget(ROOM)
            .with_host_inbox_byte_budget(ROOM),
    )
    .await;
    let sender = host(Config::default()).await;
    let inbox_a = receiver.control().register_protocol(A).expect("register A");
    let mut inbox_b = receiver.control().register_protocol(B).expect("register B");
    let to = connect(&sender, &receiver).await;
    for seq in 0..4u8 {
        sender
            .control()
            .send(to, A, vec![seq; 40 * 1024])
            .await
            .expect("send A");
    }
    let queued_a = || {
        receiver
            .control()
            .inbox_stats()
            .into_iter()
            .find(|s| s.protocol == A)
            .map_or(0, |s| s.queued_bytes)
    };
    wait_until(Duration::from_secs(5), || queued_a() >= 3 * 40 * 1024).await;

    // B's frame is larger than the reader's buffer: its reader claims room in
    // both budgets before reading it, and B's inbox has room, the host none.
    sender
        .control()
        .send(to, B, vec![1u8; 16 * 1024])
        .await
        .expect("send B");
    let before = cpu_time();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), inbox_b.recv())
            .await
            .is_err(),
        "B waits: A's messages fill the host's budget"
    );
    let spent = cpu_time() - before;
    assert!(
        spent < Duration::from_millis(400),
        "the waiting reader sleeps: the process used {spent:?} of CPU in 1 s"
    );

    drop(inbox_a);
    let message = tokio::time::timeout(Duration::from_secs(5), inbox_b.recv())
        .await
        .expect("B arrives once A's inbox is gone")
        .expect("open");
    assert_eq!(message.payload.len(), 16 * 1024);
    wait_until(Duration::from_secs(5), || queued_a() == 0).await;
    receiver.shutdown().await;
    sender.shutdown().await;
}
