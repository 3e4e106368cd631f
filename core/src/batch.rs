//! Small frames from concurrent senders to one lane, written together.
//!
//! At high concurrency every small message on a stream of its own costs one
//! muxer frame, one trip through the connection's task, and one read and
//! wake-up at the receiver. A [`FrameBatcher`] (one per lane of a connection)
//! lets a sender that arrives while another sender of the lane is writing hand
//! its encoded frame over instead of taking a stream of its own: the writing
//! sender, the *leader*, writes every frame queued at that moment in one write
//! and one flush, then tells each sender its result. A batch is what is ready
//! when the leader gets to write: nothing ever waits for more frames, so a lone
//! sender writes alone, as soon as before.
//!
//! The leader is one of the senders, not a writer task of the lane. When its
//! batch is flushed, the lead (and the stream, when the write succeeded)
//! passes to the oldest sender still queued, which writes what queued
//! meanwhile. Every sender therefore returns once its own frame is flushed,
//! and leads at most one batch.
//!
//! What a sender relies on:
//! - **Result.** `Sent` only once the write holding its frame was flushed. A
//!   batch that fails tells each sender whether its frame was already whole in
//!   the stream ([`BatchFailure::maybe_sent`]): such a frame may reach the peer,
//!   so it must not be sent again.
//! - **Order.** Frames are written in the order they were queued; a sender that
//!   waits for its result before sending again keeps its messages in order.
//! - **Cancellation.** A sender dropped while its frame is queued takes the frame
//!   back out, and nothing of it is written. Dropped while leading, its batch's
//!   senders are told the write was cut short, and the lead passes on; a
//!   [`Ticket`] and its [`Batch`] own what they hold, so a leader whose batch
//!   carries other senders' frames can move both into a task of its own and
//!   let the write finish whatever becomes of it (the `liquid-p2p` crate
//!   does).
//! - **Bounds.** A frame over a quarter of the batch size is never batched, and
//!   at most four batches' worth of bytes wait: past that, or while a leader of
//!   another priority writes, [`join`](FrameBatcher::join) declines and the
//!   sender writes on a stream of its own.
//!
//! Hand-written: combining concurrent writers into one write is a small state
//! machine around the lane's stream pool, which no crate we use offers.

use std::{
    collections::VecDeque,
    io, mem,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use libp2p_identity::PeerId;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::{Error, ProtocolPriority};

/// Bytes one batch writes at most, by default: four 16 KiB muxer frames.
pub const DEFAULT_BATCH_BYTES: usize = 64 * 1024;

/// Combines the small frames of one lane's concurrent senders into shared
/// writes (see the module docs). `L` is what the leader writes with and hands
/// on: the lane's pooled stream.
pub struct FrameBatcher<L> {
    inner: Arc<Inner<L>>,
}

/// What a batcher's tickets share with it.
struct Inner<L> {
    state: Mutex<State<L>>,
    /// Frames written by another sender's write, since the batcher was made.
    batched: AtomicU64,
    peer: PeerId,
    max_batch: usize,
}

struct State<L> {
    /// The leader's priority, while some sender leads. No leader: nothing queued.
    leading: Option<ProtocolPriority>,
    /// The queued frames, back to back, in queue order.
    bytes: Vec<u8>,
    queue: VecDeque<Queued<L>>,
    next_id: u64,
    /// The buffers of the last batch written, emptied, for the next batch
    /// taken: a busy lane allocates none per batch.
    spare: Spare<L>,
}

/// A finished batch's buffers, kept for the next (see [`SPARE_BYTES`]).
struct Spare<L> {
    bytes: Vec<u8>,
    frames: Vec<Frame<L>>,
}

/// A batched frame's length and where its result goes (`None`: the leader's).
type Frame<L> = (usize, Option<oneshot::Sender<Turn<L>>>);

/// The largest buffer (of bytes, and of frames) a batcher keeps for its next
/// batch: enough for the batches of small frames that batching is for (64
/// senders' 256 B messages are 16.6 KB, in a buffer of 32 KiB, see
/// [`grow`]), and a bound on what an idle lane holds.
const SPARE_BYTES: usize = 32 * 1024;

/// Makes room for `more` bytes in the queue's buffer: capacities are powers of
/// two from 1 KiB, so a buffer holding up to [`SPARE_BYTES`] is kept (growing
/// by doubling from the first frame's length, one holding 16–32 KiB could land
/// past the bound, and the lane would regrow a buffer from nothing for each
/// such batch).
fn grow(bytes: &mut Vec<u8>, more: usize) {
    let needed = bytes.len().saturating_add(more);
    if needed > bytes.capacity() {
        let capacity = needed
            .checked_next_power_of_two()
            .unwrap_or(needed)
            .max(1024);
        bytes.reserve_exact(capacity - bytes.len());
    }
}

struct Queued<L> {
    id: u64,
    len: usize,
    /// Where its result goes; `None` for the leader's own frame.
    tx: Option<oneshot::Sender<Turn<L>>>,
}

/// What a queued sender learns from [`Ticket::wait`].
#[derive(Debug)]
pub enum Turn<L> {
    /// Its frame was written and flushed.
    Sent,
    /// The write holding its frame failed.
    Failed(BatchFailure),
    /// It leads now: it writes the queue, with this stream when one is handed
    /// on (else it takes one of its own).
    Lead(Option<L>),
}

/// A batch's failure, as one of its senders sees it.
#[derive(Debug, Clone)]
pub struct BatchFailure {
    /// What failed.
    pub error: Error,
    /// The sender's frame was whole in the stream before the failure, and may
    /// reach the peer: sending it again could deliver it twice.
    pub maybe_sent: bool,
}

/// A sender's place in a [`FrameBatcher`], from [`FrameBatcher::join`].
/// Dropping it takes a still-queued frame back out and passes a held lead on.
/// It owns what it needs, so that a leader can move it, with its batch, into
/// a task that finishes the write whatever happens to the sender.
pub struct Ticket<L> {
    batcher: Arc<Inner<L>>,
    id: u64,
    rx: Option<oneshot::Receiver<Turn<L>>>,
    leads: bool,
    /// Its frame left the queue, in a batch.
    taken: bool,
}

/// Frames taken from the queue by their leader: written with
/// [`bytes`](Self::bytes), progress told with [`written`](Self::written),
/// results given out with [`finish`](Self::finish). Dropped unfinished, its
/// senders are told the write was cut short.
pub struct Batch<L> {
    batcher: Arc<Inner<L>>,
    bytes: Vec<u8>,
    frames: Vec<Frame<L>>,
    written: usize,
    finished: bool,
}

impl<L> FrameBatcher<L> {
    /// A batcher for a lane to `peer` whose batches write at most `max_batch`
    /// bytes.
    pub fn new(peer: PeerId, max_batch: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    leading: None,
                    bytes: Vec::new(),
                    queue: VecDeque::new(),
                    next_id: 0,
                    spare: Spare {
                        bytes: Vec::new(),
                        frames: Vec::new(),
                    },
                }),
                batched: AtomicU64::new(0),
                peer,
                max_batch,
            }),
        }
    }

    /// Queues `frame`, of a protocol with `priority`. `None` when it is not
    /// batched (over a quarter of the batch size, the queue full, or a leader
    /// of another priority writing): the sender writes it on a stream of its
    /// own. Otherwise the ticket either [`leads`](Ticket::leads) (nobody else
    /// was writing) or [`wait`](Ticket::wait)s for its turn.
    pub fn join(&self, frame: &[u8], priority: ProtocolPriority) -> Option<Ticket<L>> {
        let inner = &self.inner;
        if frame.len() > inner.max_batch / 4 {
            return None;
        }
        let mut st = inner.state.lock();
        let leads = match st.leading {
            None => true,
            Some(p) if p == priority && st.bytes.len() + frame.len() <= 4 * inner.max_batch => {
                false
            }
            Some(_) => return None,
        };
        let id = st.next_id;
        st.next_id += 1;
        grow(&mut st.bytes, frame.len());
        st.bytes.extend_from_slice(frame);
        let (tx, rx) = if leads {
            st.leading = Some(priority);
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        st.queue.push_back(Queued {
            id,
            len: frame.len(),
            tx,
        });
        drop(st);
        Some(Ticket {
            batcher: Arc::clone(inner),
            id,
            rx,
            leads,
            taken: false,
        })
    }

    /// Frames handed to another sender's write (taken into a batch led by
    /// someone else) since the batcher was made.
    pub fn batched_frames(&self) -> u64 {
        self.inner.batched.load(Ordering::Relaxed)
    }

    /// Frames queued (the leader's own included, until it takes its batch).
    pub fn queued(&self) -> usize {
        self.inner.state.lock().queue.len()
    }
}

impl<L> Inner<L> {
    /// Gives the lead to the oldest queued sender still listening, with
    /// `stream`; with nobody queued, ends the lead and returns `stream`.
    fn pass_on(st: &mut State<L>, mut stream: Option<L>) -> Option<L> {
        while let Some(front) = st.queue.front_mut() {
            let Some(tx) = front.tx.take() else {
                // Only a leader's own frame has no sender, and the leader is
                // the one passing on: not reachable, but never spin on it.
                break;
            };
            match tx.send(Turn::Lead(stream)) {
                Ok(()) => return None,
                Err(turn) => {
                    // Its receiver is gone without the ticket's drop (which
                    // takes its frame out under this lock first): not
                    // reachable, but then take its frame out for it and try
                    // the next.
                    stream = match turn {
                        Turn::Lead(stream) => stream,
                        _ => None,
                    };
                    let id = front.id;
                    Self::remove(st, id);
                }
            }
        }
        st.leading = None;
        st.bytes.clear();
        stream
    }

    /// Takes a queued frame out (its sender gave up). Whether it was there.
    fn remove(st: &mut State<L>, id: u64) -> bool {
        let mut start = 0;
        for (i, q) in st.queue.iter().enumerate() {
            if q.id == id {
                let len = q.len;
                st.bytes.drain(start..start + len);
                st.queue.remove(i);
                return true;
            }
            start += q.len;
        }
        false
    }
}

impl<L> std::fmt::Debug for FrameBatcher<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("FrameBatcher")
            .field("leading", &st.leading)
            .field("queued", &st.queue.len())
            .field("queued_bytes", &st.bytes.len())
            .finish()
    }
}

impl<L> Ticket<L> {
    /// Whether this sender writes (leads) now.
    pub fn leads(&self) -> bool {
        self.leads
    }

    /// Waits until its frame was written ([`Turn::Sent`] or
    /// [`Turn::Failed`]), or until it leads ([`Turn::Lead`]; then
    /// [`leads`](Self::leads) is true). A leading ticket gets `Lead(None)` at
    /// once.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future keeps the ticket's place; dropping the ticket gives
    /// it up (see [`Ticket`]).
    pub async fn wait(&mut self) -> Turn<L> {
        let Some(rx) = self.rx.as_mut() else {
            return Turn::Lead(None);
        };
        let turn = match rx.await {
            Ok(turn) => turn,
            // Every sender is completed or handed the lead before it is dropped;
            // a leader cancelled mid-batch tells its senders through `Batch`'s
            // drop. Not reachable, but say so rather than hang.
            Err(_) => Turn::Failed(BatchFailure {
                error: cut_short(self.batcher.peer),
                maybe_sent: false,
            }),
        };
        self.rx = None;
        match turn {
            Turn::Lead(_) => self.leads = true,
            _ => self.taken = true,
        }
        turn
    }

    /// The leader takes the queued frames, its own first, up to the batch
    /// size (always at least its own).
    pub fn take(&mut self) -> Batch<L> {
        debug_assert!(self.leads, "only the leader takes a batch");
        let batcher = &self.batcher;
        let mut st = batcher.state.lock();
        let mut total = 0;
        let mut frames = mem::take(&mut st.spare.frames);
        while let Some(front) = st.queue.front() {
            if !frames.is_empty() && total + front.len > batcher.max_batch {
                break;
            }
            total += front.len;
            if let Some(q) = st.queue.pop_front() {
                if q.id == self.id {
                    self.taken = true;
                }
                frames.push((q.len, q.tx));
            }
        }
        batcher
            .batched
            .fetch_add(frames.len().saturating_sub(1) as u64, Ordering::Relaxed);
        let bytes = if total == st.bytes.len() {
            let spare = mem::take(&mut st.spare.bytes);
            mem::replace(&mut st.bytes, spare)
        } else {
            let mut rest = mem::take(&mut st.spare.bytes);
            grow(&mut rest, st.bytes.len() - total);
            rest.extend_from_slice(&st.bytes[total..]);
            st.bytes.truncate(total);
            mem::replace(&mut st.bytes, rest)
        };
        Batch {
            batcher: Arc::clone(batcher),
            bytes,
            frames,
            written: 0,
            finished: false,
        }
    }

    /// The leader, done with its batch, passes the lead on with `stream` (give
    /// `None` after a failed write); returns `stream` when nobody is queued.
    pub fn pass_on(&mut self, stream: Option<L>) -> Option<L> {
        debug_assert!(self.leads, "only the leader passes the lead on");
        self.leads = false;
        let mut st = self.batcher.state.lock();
        Inner::pass_on(&mut st, stream)
    }
}

impl<L> Drop for Ticket<L> {
    fn drop(&mut self) {
        if self.taken && !self.leads {
            return;
        }
        let mut st = self.batcher.state.lock();
        if !self.taken {
            Inner::remove(&mut st, self.id);
        }
        if !self.leads {
            // The lead may have been handed over just now, unread.
            if let Some(Ok(Turn::Lead(stream))) = self.rx.as_mut().map(|rx| rx.try_recv()) {
                let _ = Inner::pass_on(&mut st, stream);
            }
            return;
        }
        let _ = Inner::pass_on(&mut st, None);
    }
}

impl<L> Batch<L> {
    /// The frames to write, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Frames in the batch, the leader's own included.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// `n` more bytes went into the stream.
    pub fn written(&mut self, n: usize) {
        self.written += n;
    }

    /// Tells each sender the write's outcome and returns the leader's own:
    /// on failure, each learns whether its frame was whole in the stream by
    /// then.
    pub fn finish(mut self, result: Result<(), Error>) -> Result<(), Box<BatchFailure>> {
        self.finished = true;
        self.complete(&result)
    }

    fn complete(&mut self, result: &Result<(), Error>) -> Result<(), Box<BatchFailure>> {
        let mut own = Ok(());
        let mut end = 0;
        for (len, tx) in self.frames.drain(..) {
            end += len;
            let outcome = match result {
                Ok(()) => Ok(()),
                Err(e) => Err(Box::new(BatchFailure {
                    error: e.clone(),
                    maybe_sent: end <= self.written,
                })),
            };
            match tx {
                Some(tx) => {
                    let _ = tx.send(match outcome {
                        Ok(()) => Turn::Sent,
                        Err(f) => Turn::Failed(*f),
                    });
                }
                None => own = outcome,
            }
        }
        own
    }
}

impl<L> Drop for Batch<L> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.complete(&Err(cut_short(self.batcher.peer)));
        }
        // `complete` emptied `frames`.
        if self.bytes.capacity() <= SPARE_BYTES
            && self.frames.capacity() * mem::size_of::<Frame<L>>() <= SPARE_BYTES
        {
            let mut bytes = mem::take(&mut self.bytes);
            bytes.clear();
            let frames = mem::take(&mut self.frames);
            let mut st = self.batcher.state.lock();
            if st.spare.bytes.capacity() < bytes.capacity() {
                st.spare = Spare { bytes, frames };
            }
        }
    }
}

/// The error of a batch whose leader was dropped mid-write.
fn cut_short(peer: PeerId) -> Error {
    Error::write(
        peer,
        io::Error::new(
            io::ErrorKind::Interrupted,
            "the send writing this message's batch was cancelled",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: ProtocolPriority = ProtocolPriority::Normal;

    fn batcher(max_batch: usize) -> FrameBatcher<&'static str> {
        FrameBatcher::new(PeerId::random(), max_batch)
    }

    fn failed() -> Error {
        Error::write(PeerId::random(), io::ErrorKind::BrokenPipe.into())
    }

    async fn turn<L>(ticket: &mut Ticket<L>) -> Turn<L> {
        tokio::time::timeout(std::time::Duration::from_secs(1), ticket.wait())
            .await
            .expect("the ticket got its turn")
    }

    #[tokio::test]
    async fn a_lone_sender_leads_and_writes_its_frame_alone() {
        let b = batcher(1024);
        let mut t = b.join(b"one", N).expect("batched");
        assert!(t.leads());
        assert!(matches!(turn(&mut t).await, Turn::Lead(None)));
        let batch = t.take();
        assert_eq!(batch.bytes(), b"one");
        assert_eq!(batch.frames(), 1);
        assert!(batch.finish(Ok(())).is_ok());
        assert_eq!(t.pass_on(Some("stream")), Some("stream"));
        drop(t);
        // Nobody leads now: the next sender leads at once.
        assert!(b.join(b"two", N).expect("batched").leads());
    }

    #[tokio::test]
    async fn senders_arriving_while_one_leads_are_written_in_its_batch_in_order() {
        let b = batcher(1024);
        let mut lead = b.join(b"a", N).expect("batched");
        let mut second = b.join(b"bb", N).expect("batched");
        let mut third = b.join(b"ccc", N).expect("batched");
        assert!(!second.leads() && !third.leads());
        let batch = lead.take();
        assert_eq!(batch.bytes(), b"abbccc");
        assert_eq!(batch.frames(), 3);
        assert!(batch.finish(Ok(())).is_ok());
        assert_eq!(b.batched_frames(), 2, "the leader's own is not counted");
        assert!(matches!(turn(&mut second).await, Turn::Sent));
        assert!(matches!(turn(&mut third).await, Turn::Sent));
        assert_eq!(lead.pass_on(Some("stream")), Some("stream"));
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test]
    async fn a_sender_queued_during_a_write_leads_the_next_batch_with_the_stream() {
        let b = batcher(1024);
        let mut lead = b.join(b"a", N).expect("batched");
        let batch = lead.take();
        let mut late = b.join(b"b", N).expect("batched");
        let mut later = b.join(b"c", N).expect("batched");
        assert!(batch.finish(Ok(())).is_ok());
        assert_eq!(lead.pass_on(Some("stream")), None, "handed on");
        assert!(matches!(turn(&mut late).await, Turn::Lead(Some("stream"))));
        assert!(late.leads());
        let batch = late.take();
        assert_eq!(batch.bytes(), b"bc");
        assert!(batch.finish(Ok(())).is_ok());
        assert!(matches!(turn(&mut later).await, Turn::Sent));
        assert_eq!(late.pass_on(Some("stream")), Some("stream"));
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_size_and_the_rest_goes_to_the_next_leader() {
        let b = batcher(8);
        let mut lead = b.join(b"12", N).expect("batched");
        let mut waiting: Vec<_> = (0..4).map(|_| b.join(b"34", N).expect("batched")).collect();
        let batch = lead.take();
        assert_eq!(batch.bytes(), b"12343434", "8 bytes, 4 frames");
        assert!(batch.finish(Ok(())).is_ok());
        assert_eq!(lead.pass_on(Some("s")), None);
        for t in &mut waiting[..3] {
            assert!(matches!(turn(t).await, Turn::Sent));
        }
        let last = &mut waiting[3];
        assert!(matches!(turn(last).await, Turn::Lead(Some("s"))));
        assert_eq!(last.take().bytes(), b"34");
    }

    #[tokio::test]
    async fn a_busy_lane_keeps_one_batch_of_64_small_frames_worth_of_buffer_and_no_more() {
        let b = batcher(DEFAULT_BATCH_BYTES);
        let frame = [7u8; 260];
        for round in 0..3 {
            let mut lead = b.join(&frame, N).expect("batched");
            assert!(lead.leads());
            let mut waiting: Vec<_> = (0..63)
                .map(|_| b.join(&frame, N).expect("batched"))
                .collect();
            let batch = lead.take();
            assert_eq!((batch.frames(), batch.bytes().len()), (64, 64 * 260));
            assert!(batch.finish(Ok(())).is_ok());
            let spare = b.inner.state.lock().spare.bytes.capacity();
            assert!(
                (64 * 260..=SPARE_BYTES).contains(&spare),
                "round {round}: the batch's buffer is kept for the next ({spare} bytes)"
            );
            assert_eq!(lead.pass_on(Some("stream")), Some("stream"));
            for t in &mut waiting {
                assert!(matches!(turn(t).await, Turn::Sent));
            }
        }
        // A batch's buffer past the bound is not kept.
        let big = [1u8; 4096];
        let mut lead = b.join(&big, N).expect("batched");
        let _waiting: Vec<_> = (0..15).map(|_| b.join(&big, N).expect("batched")).collect();
        let batch = lead.take();
        assert_eq!(batch.bytes().len(), DEFAULT_BATCH_BYTES);
        assert!(batch.finish(Ok(())).is_ok());
        assert!(b.inner.state.lock().spare.bytes.capacity() <= SPARE_BYTES);
    }

    #[tokio::test]
    async fn a_failed_write_tells_each_sender_whether_its_frame_was_already_whole() {
        let b = batcher(1024);
        let mut lead = b.join(b"aaaa", N).expect("batched");
        let mut whole = b.join(b"bbbb", N).expect("batched");
        let mut cut = b.join(b"cccc", N).expect("batched");
        let mut unwritten = b.join(b"dddd", N).expect("batched");
        let mut batch = lead.take();
        batch.written(6);
        batch.written(4); // 10 bytes in: a and b whole, c cut
        let own = batch.finish(Err(failed())).expect_err("failed");
        assert!(own.maybe_sent);
        let maybe_sent = |turn: Turn<&str>| match turn {
            Turn::Failed(f) => {
                assert!(matches!(f.error, Error::Write { .. }));
                f.maybe_sent
            }
            other => panic!("expected a failure, got {other:?}"),
        };
        assert!(maybe_sent(turn(&mut whole).await));
        assert!(!maybe_sent(turn(&mut cut).await));
        assert!(!maybe_sent(turn(&mut unwritten).await));
        // A failed write hands on no stream.
        assert_eq!(lead.pass_on(None), None);
    }

    #[tokio::test]
    async fn a_sender_dropped_while_queued_takes_its_frame_back_out() {
        let b = batcher(1024);
        let mut lead = b.join(b"a", N).expect("batched");
        let gone = b.join(b"bb", N).expect("batched");
        let mut stays = b.join(b"c", N).expect("batched");
        drop(gone);
        let batch = lead.take();
        assert_eq!(batch.bytes(), b"ac");
        assert!(batch.finish(Ok(())).is_ok());
        assert!(matches!(turn(&mut stays).await, Turn::Sent));
    }

    #[tokio::test]
    async fn a_leader_dropped_before_its_batch_passes_the_lead_on_without_a_stream() {
        let b = batcher(1024);
        let lead = b.join(b"a", N).expect("batched");
        let mut next = b.join(b"b", N).expect("batched");
        drop(lead);
        assert!(matches!(turn(&mut next).await, Turn::Lead(None)));
        let batch = next.take();
        assert_eq!(
            batch.bytes(),
            b"b",
            "the dropped leader's frame is not written"
        );
    }

    #[tokio::test]
    async fn a_leader_dropped_mid_write_fails_its_batch_and_the_lead_moves_on() {
        let b = batcher(1024);
        let mut lead = b.join(b"aa", N).expect("batched");
        let mut whole = b.join(b"bb", N).expect("batched");
        let mut cut = b.join(b"cc", N).expect("batched");
        let mut batch = lead.take();
        let mut after = b.join(b"dd", N).expect("batched");
        batch.written(4);
        drop(batch);
        drop(lead);
        assert!(matches!(turn(&mut whole).await, Turn::Failed(f) if f.maybe_sent));
        assert!(matches!(turn(&mut cut).await, Turn::Failed(f) if !f.maybe_sent));
        assert!(matches!(turn(&mut after).await, Turn::Lead(None)));
    }

    #[tokio::test]
    async fn a_dropped_ticket_handed_the_lead_passes_it_on() {
        let b = batcher(1024);
        let mut lead = b.join(b"a", N).expect("batched");
        let batch = lead.take();
        let first = b.join(b"b", N).expect("batched");
        let mut second = b.join(b"c", N).expect("batched");
        assert!(batch.finish(Ok(())).is_ok());
        assert_eq!(lead.pass_on(Some("s")), None);
        drop(first);
        assert!(matches!(turn(&mut second).await, Turn::Lead(Some("s"))));
        assert_eq!(second.take().bytes(), b"c", "first's frame was taken out");
    }

    #[test]
    fn large_frames_other_priorities_and_a_full_queue_are_not_batched() {
        let b = batcher(16);
        assert!(b.join(&[0; 5], N).is_none(), "over a quarter of the batch");
        let _lead = b.join(&[0; 4], N).expect("batched");
        assert!(b.join(&[0; 4], ProtocolPriority::High).is_none());
        let queued: Vec<_> = (0..15).map(|_| b.join(&[0; 4], N)).collect();
        assert!(queued.iter().all(Option::is_some), "four batches' worth");
        assert!(b.join(&[0; 4], N).is_none(), "queue full");
        assert!(batcher(0).join(b"x", N).is_none(), "batching off");
    }
}
