//! Futures that wake their task together, once all of them can make progress.
//!
//! A replay window runs one object operation per RADOS object, a few hundred at once, and
//! each completes on a librados callback thread. Woken for each, the replayer's task runs
//! once per completion (and its runtime thread unparks whenever one finds it parked) for
//! nothing it can use: the window is done, and its entries committable, only when the last
//! one completes. Futures wrapped by one [`WakeBatch`] hold their wake-ups back until every
//! future of the batch still running has one, then pass them all on at once: one wake-up of
//! the task per window. A future that completes counts as woken, so the rest never wait for
//! it.
//!
//! It only ever delays a wake-up until every other future of the batch has woken too, so a
//! batch must only hold futures that finish on their own (I/O), never one that waits for
//! something the task itself does later.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;

/// A group of futures whose wake-ups are passed on together; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct WakeBatch {
    state: Arc<Mutex<BatchState>>,
}

#[derive(Debug, Default)]
struct BatchState {
    /// Futures of the batch that have not completed (nor been dropped).
    running: usize,
    /// Wake-ups held back, one per running future that has one.
    held: Vec<Waker>,
}

impl BatchState {
    /// The held wake-ups, when every running future has one.
    fn release(&mut self) -> Vec<Waker> {
        if !self.held.is_empty() && self.held.len() >= self.running {
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }
}

impl WakeBatch {
    /// An empty batch.
    pub fn new() -> WakeBatch {
        WakeBatch::default()
    }

    /// `future` (boxed, say), made a member of the batch.
    pub fn wrap<F: Future + Unpin>(&self, future: F) -> Batched<F> {
        self.state.lock().running += 1;
        Batched { future, state: self.state.clone(), running: true }
    }
}

/// A future of a [`WakeBatch`].
pub struct Batched<F> {
    future: F,
    state: Arc<Mutex<BatchState>>,
    running: bool,
}

impl<F> std::fmt::Debug for Batched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").field("running", &self.running).finish_non_exhaustive()
    }
}

impl<F> Batched<F> {
    /// The future no longer runs: the others stop waiting for it.
    fn leave(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        let wake = {
            let mut state = self.state.lock();
            state.running = state.running.saturating_sub(1);
            state.release()
        };
        wake.into_iter().for_each(Waker::wake);
    }
}

impl<F: Future + Unpin> Future for Batched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let held = Waker::from(Arc::new(HeldWaker { state: self.state.clone(), task: cx.waker().clone() }));
        match Pin::new(&mut self.future).poll(&mut Context::from_waker(&held)) {
            Poll::Ready(out) => {
                self.leave();
                Poll::Ready(out)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> Drop for Batched<F> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The waker a batched future sees: holds the real one back until the batch is released.
struct HeldWaker {
    state: Arc<Mutex<BatchState>>,
    task: Waker,
}

impl Wake for HeldWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wake = {
            let mut state = self.state.lock();
            state.held.push(self.task.clone());
            state.release()
        };
        wake.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream::{FuturesUnordered, StreamExt};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::oneshot;

    /// Counts the wake-ups of the task polling the batch.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The waker of a test task, and its wake-up counter.
    fn test_task() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    /// Polls `set` until it is pending, then forgets the task's wake-ups so far
    /// (`FuturesUnordered` wakes its task itself when it yields after polling every member).
    fn poll_all<F: Future>(
        set: &mut FuturesUnordered<F>,
        cx: &mut Context<'_>,
        counter: &CountingWaker,
    ) -> Vec<F::Output> {
        let mut out = Vec::new();
        while let Poll::Ready(Some(v)) = set.poll_next_unpin(cx) {
            out.push(v);
        }
        counter.0.store(0, Ordering::SeqCst);
        out
    }

    #[test]
    fn the_task_is_woken_once_all_running_futures_have_woken() {
        let (counter, waker) = test_task();
        let mut cx = Context::from_waker(&waker);
        let batch = WakeBatch::new();
        let mut set = FuturesUnordered::new();
        let mut senders = Vec::new();
        for i in 0..5u32 {
            let (tx, rx) = oneshot::channel::<u32>();
            senders.push(tx);
            set.push(batch.wrap(Box::pin(async move { rx.await.map(|v| v + i) })));
        }
        assert!(poll_all(&mut set, &mut cx, &counter).is_empty());
        let mut senders = senders.into_iter();
        for tx in senders.by_ref().take(4) {
            tx.send(10).unwrap_or_default();
        }
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "four of five done: no wake-up yet");
        senders.next().map(|tx| tx.send(10));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "the last one wakes the task, once");
        let mut got: Vec<_> = poll_all(&mut set, &mut cx, &counter).into_iter().map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, vec![10, 11, 12, 13, 14]);
    }

    #[test]
    fn a_future_that_completes_or_is_dropped_is_not_waited_for() {
        let (counter, waker) = test_task();
        let mut cx = Context::from_waker(&waker);
        let batch = WakeBatch::new();
        let mut set = FuturesUnordered::new();
        let (tx_a, rx_a) = oneshot::channel::<u32>();
        let (_tx_b, rx_b) = oneshot::channel::<u32>();
        set.push(batch.wrap(Box::pin(async move { rx_a.await.ok() })));
        let mut stuck = batch.wrap(Box::pin(async move { rx_b.await.ok() }));
        assert!(poll_all(&mut set, &mut cx, &counter).is_empty());
        assert!(Pin::new(&mut stuck).poll(&mut cx).is_pending());
        tx_a.send(1).unwrap_or_default();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0, "held: the other future still runs");
        drop(stuck);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1, "released when the other one is dropped");
        assert_eq!(poll_all(&mut set, &mut cx, &counter), vec![Some(1)]);
    }

    #[test]
    fn a_future_that_waits_again_is_waited_for_again() {
        let (counter, waker) = test_task();
        let mut cx = Context::from_waker(&waker);
        let batch = WakeBatch::new();
        let mut set: FuturesUnordered<Batched<Pin<Box<dyn Future<Output = u32>>>>> = FuturesUnordered::new();
        let (tx1, rx1) = oneshot::channel::<u32>();
        let (tx2, rx2) = oneshot::channel::<u32>();
        let (tx3, rx3) = oneshot::channel::<u32>();
        // Two steps, as an object operation after its object map update.
        set.push(batch.wrap(Box::pin(async move { rx1.await.unwrap_or(0) + rx2.await.unwrap_or(0) })));
        set.push(batch.wrap(Box::pin(async move { rx3.await.unwrap_or(0) })));
        assert!(poll_all(&mut set, &mut cx, &counter).is_empty());
        tx1.send(1).unwrap_or_default();
        tx3.send(3).unwrap_or_default();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll_all(&mut set, &mut cx, &counter),
            vec![3],
            "the two-step one waits on its second step"
        );
        tx2.send(2).unwrap_or_default();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_all(&mut set, &mut cx, &counter), vec![3]);
    }
}
