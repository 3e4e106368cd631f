//! The behaviour's life: whether it still runs, the tasks it spawned and the
//! frames being written, so that shutdown can stop new work and wait for the old.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use liquid_p2p_core::Error;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Shutdown flag, spawned tasks and writes in flight. Lock-free.
pub(crate) struct Lifecycle {
    shut_down: AtomicBool,
    /// Frames being written right now, across all connections.
    writes_in_flight: AtomicUsize,
    writes_done: Notify,
    /// Every task the library spawns for this behaviour; shutdown waits for them.
    tasks: TaskTracker,
}

/// A frame being written; shutdown waits for these.
pub(crate) struct WriteInFlight<'a>(&'a Lifecycle);

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        if self.0.writes_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.writes_done.notify_waiters();
        }
    }
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self {
            shut_down: AtomicBool::new(false),
            writes_in_flight: AtomicUsize::new(0),
            writes_done: Notify::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Runs `task` on the runtime, tracked (see [`tasks_finished`]) and inside
    /// `span` (which names the peer and connection), so its logs carry them.
    ///
    /// [`tasks_finished`]: Self::tasks_finished
    pub(crate) fn spawn<F>(&self, span: tracing::Span, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task.instrument(span));
    }

    /// Tasks running now.
    pub(crate) fn running_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every spawned task has ended, or `grace` has passed; returns
    /// how many are still running. No task is spawned after the shutdown began
    /// that does not end on its own: their streams and connections are closing.
    pub(crate) async fn tasks_finished(&self, grace: Duration) -> usize {
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.tasks.len()
    }

    /// `ShutDown` once the shutdown began.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        Ok(())
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Marks the shutdown begun: from now on `check_open` fails.
    pub(crate) fn begin_shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
    }

    /// Counts a frame as being written until the guard drops.
    pub(crate) fn write_started(&self) -> WriteInFlight<'_> {
        self.writes_in_flight.fetch_add(1, Ordering::AcqRel);
        WriteInFlight(self)
    }

    /// Waits until no frame is being written, or `grace` has passed.
    pub(crate) async fn writes_finished(&self, grace: Duration) {
        let wait = async {
            loop {
                let done = self.writes_done.notified();
                if self.writes_in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
    }
}
