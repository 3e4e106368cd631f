//! Delivery accounting: every message of a measurement carries its sender's id and
//! a sequence number, the sender books each send that returned `Ok`, the receiver
//! books each message it got, and after the run the two books are compared.
//!
//! Without it a mode that silently lost messages would only show a lower rate, and
//! one that delivered a message twice (a retry after a write that did get through)
//! would show a higher one. Both peers run in this process, so one [`Ledger`] is
//! shared by both sides of a measurement.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

/// Bytes at the start of every payload: sender id (u32) and sequence number (u64),
/// little-endian.
pub const HEADER: usize = 12;

/// A payload of `len` random bytes (from `seed`) with room for the header.
/// Random rather than constant, so that no layer can gain by compressing it.
pub fn random_payload(len: usize, seed: u64) -> Vec<u8> {
    let mut payload = vec![0; len.max(HEADER)];
    StdRng::seed_from_u64(seed).fill_bytes(&mut payload);
    payload
}

/// A growable set of sequence numbers.
#[derive(Debug, Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `i`; `false` if it was already there.
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Members of `self` that are not in `other`.
    fn count_missing_from(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// One sender's books.
#[derive(Debug, Default)]
struct Book {
    /// Sequence numbers handed out (the next one to use).
    issued: AtomicU64,
    /// Sends that returned `Ok`.
    confirmed: Mutex<Bits>,
    /// Messages the receiver got.
    received: Mutex<Bits>,
    /// Copies received beyond the first.
    duplicates: AtomicU64,
}

/// The books of one measurement: who sent what, who got what.
#[derive(Debug)]
pub struct Ledger {
    books: Vec<Book>,
    lossy: bool,
    messages: AtomicU64,
    bytes: AtomicU64,
    malformed: AtomicU64,
}

impl Ledger {
    /// Books for `senders` senders (ids `0..senders`). A `lossy` mode may lose
    /// messages by design; a loss is then reported but is no failure.
    pub fn new(senders: usize, lossy: bool) -> Self {
        Self {
            books: (0..senders.max(1)).map(|_| Book::default()).collect(),
            lossy,
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    /// Writes `sender`'s next sequence number into `payload`'s header; returns it.
    ///
    /// # Panics
    ///
    /// If `sender` has no book or the payload is shorter than [`HEADER`]: both are
    /// mistakes in the measurement itself, not in the mode measured.
    pub fn stamp(&self, sender: usize, payload: &mut [u8]) -> u64 {
        let seq = self.books[sender].issued.fetch_add(1, Ordering::AcqRel);
        payload[..4].copy_from_slice(&(sender as u32).to_le_bytes());
        payload[4..HEADER].copy_from_slice(&seq.to_le_bytes());
        seq
    }

    /// Books a send of `sender` that returned `Ok`.
    pub fn confirm(&self, sender: usize, seq: u64) {
        lock(&self.books[sender].confirmed).insert(seq);
    }

    /// Books a message the receiver got.
    pub fn record(&self, payload: &[u8]) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let Some((sender, seq)) = header(payload) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A sequence number not yet handed out was never sent: not a message of
        // this measurement.
        match self.books.get(sender) {
            Some(book) if seq < book.issued.load(Ordering::Acquire) => {
                if !lock(&book.received).insert(seq) {
                    book.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Books a round trip whose reply was not the request sent.
    pub fn wrong_reply(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages and payload bytes received so far (every copy counts).
    pub fn received(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Sends that returned `Ok` so far.
    pub fn confirmed(&self) -> u64 {
        self.books.iter().map(|b| lock(&b.confirmed).count()).sum()
    }

    /// The two books compared.
    pub fn delivery(&self) -> Delivery {
        let mut d = Delivery {
            lossy: self.lossy,
            received: self.messages.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            ..Delivery::default()
        };
        for book in &self.books {
            let confirmed = lock(&book.confirmed).clone();
            let received = lock(&book.received).clone();
            d.sent += confirmed.count();
            d.lost += confirmed.count_missing_from(&received);
            d.unconfirmed += received.count_missing_from(&confirmed);
            d.duplicated += book.duplicates.load(Ordering::Relaxed);
        }
        d
    }
}

/// The books hold plain counts: one a panicking thread left behind is still right.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The (sender, sequence number) of a payload.
pub fn header(payload: &[u8]) -> Option<(usize, u64)> {
    let sender = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(4..HEADER)?.try_into().ok()?);
    Some((sender as usize, seq))
}

/// What became of a measurement's messages, counted after the senders stopped and
/// the receiver drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Sends that returned `Ok`.
    pub sent: u64,
    /// Messages received, every copy counted.
    pub received: u64,
    /// Sends that returned `Ok` and never arrived.
    pub lost: u64,
    /// Copies received beyond the first.
    pub duplicated: u64,
    /// Messages that arrived although their send failed or was cut off (allowed:
    /// a failed send may have got through).
    pub unconfirmed: u64,
    /// Messages that were never sent, and round trips answered with another
    /// message.
    pub malformed: u64,
    /// Whether the mode may lose messages by design.
    pub lossy: bool,
}

impl Delivery {
    /// A lost message (in a mode that must not lose any), a duplicate or a
    /// malformed message: the measurement cannot be trusted.
    pub fn failed(&self) -> bool {
        self.duplicated > 0 || self.malformed > 0 || (self.lost > 0 && !self.lossy)
    }

    /// Adds another measurement's counts (for totals over runs).
    pub fn add(&mut self, other: &Delivery) {
        self.sent += other.sent;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.unconfirmed += other.unconfirmed;
        self.malformed += other.malformed;
        self.lossy |= other.lossy;
    }

    /// `ok`, `lossy (x % lost)` or `FAILED (what)`.
    pub fn verdict(&self) -> String {
        let mut faults = Vec::new();
        if self.lost > 0 && !self.lossy {
            faults.push(format!("{} lost", self.lost));
        }
        if self.duplicated > 0 {
            faults.push(format!("{} duplicated", self.duplicated));
        }
        if self.malformed > 0 {
            faults.push(format!("{} malformed", self.malformed));
        }
        if !faults.is_empty() {
            format!("FAILED ({})", faults.join(", "))
        } else if self.lossy {
            let share = if self.sent > 0 {
                100.0 * self.lost as f64 / self.sent as f64
            } else {
                0.0
            };
            format!("lossy ({share:.1} % lost)")
        } else {
            "ok".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(ledger: &Ledger, sender: usize, payload: &mut [u8], delivered: usize) -> u64 {
        let seq = ledger.stamp(sender, payload);
        ledger.confirm(sender, seq);
        for _ in 0..delivered {
            ledger.record(payload);
        }
        seq
    }

    #[test]
    fn every_message_delivered_once_is_ok() {
        let ledger = Ledger::new(2, false);
        let mut payload = random_payload(256, 1);
        for i in 0..1000 {
            send(&ledger, i % 2, &mut payload, 1);
        }
        let d = ledger.delivery();
        assert_eq!(
            (d.sent, d.received, d.lost, d.duplicated),
            (1000, 1000, 0, 0)
        );
        assert!(!d.failed());
        assert_eq!(d.verdict(), "ok");
    }

    #[test]
    fn a_lost_message_fails_a_lossless_mode_only() {
        for lossy in [false, true] {
            let ledger = Ledger::new(1, lossy);
            let mut payload = random_payload(64, 2);
            for i in 0..100 {
                send(&ledger, 0, &mut payload, usize::from(i != 37));
            }
            let d = ledger.delivery();
            assert_eq!((d.sent, d.received, d.lost), (100, 99, 1));
            assert_eq!(d.failed(), !lossy);
        }
    }

    #[test]
    fn a_duplicate_fails_even_a_lossy_mode() {
        let ledger = Ledger::new(1, true);
        let mut payload = random_payload(64, 3);
        for i in 0..100 {
            send(&ledger, 0, &mut payload, if i == 5 { 2 } else { 1 });
        }
        let d = ledger.delivery();
        assert_eq!((d.received, d.duplicated), (101, 1));
        assert!(d.failed());
        assert_eq!(d.verdict(), "FAILED (1 duplicated)");
    }

    #[test]
    fn a_delivered_failed_send_is_unconfirmed_not_a_fault() {
        let ledger = Ledger::new(1, false);
        let mut payload = random_payload(64, 4);
        ledger.stamp(0, &mut payload);
        ledger.record(&payload);
        let d = ledger.delivery();
        assert_eq!((d.sent, d.unconfirmed, d.lost), (0, 1, 0));
        assert!(!d.failed());
    }

    #[test]
    fn messages_never_sent_are_malformed() {
        let ledger = Ledger::new(1, false);
        let mut payload = random_payload(64, 5);
        // Not stamped: sequence number 0 was never issued.
        payload[..HEADER].fill(0);
        ledger.record(&payload);
        // An unknown sender.
        payload[..4].copy_from_slice(&7u32.to_le_bytes());
        ledger.record(&payload);
        // Too short to carry a header.
        ledger.record(&[1, 2, 3]);
        let d = ledger.delivery();
        assert_eq!(d.malformed, 3);
        assert!(d.failed());
    }

    #[test]
    fn random_payloads_differ_by_seed_and_keep_their_length() {
        let (a, b) = (random_payload(256, 1), random_payload(256, 2));
        assert_eq!(a.len(), 256);
        assert_ne!(a, b);
        assert_eq!(random_payload(256, 1), a);
        assert_eq!(random_payload(0, 1).len(), HEADER);
    }
}
