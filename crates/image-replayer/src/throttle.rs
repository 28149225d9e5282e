//! A bound on concurrent work whose size changes at runtime, as the stock daemon's
//! `Throttler` (`rbd_mirror_concurrent_image_syncs` applies without a restart). Shrinking
//! takes effect as permits come back: permits in use are never revoked.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The slots of one kind of work (e.g. a pool's image syncs).
#[derive(Debug)]
pub struct Throttle {
    semaphore: Arc<Semaphore>,
    size: Mutex<usize>,
}

impl Throttle {
    /// `size` slots (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Throttle { semaphore: Arc::new(Semaphore::new(size)), size: Mutex::new(size) }
    }

    /// Waits for a slot; it is given back when the permit drops.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.semaphore.clone().acquire_owned().await
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        *self.size.lock()
    }

    /// Changes the number of slots (at least one). Growing frees slots at once; shrinking
    /// takes free slots at once and the rest as they are given back.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let mut current = self.size.lock();
        if size > *current {
            self.semaphore.add_permits(size - *current);
        } else if size < *current {
            let excess = *current - size;
            let taken = self.semaphore.forget_permits(excess);
            if let Some(rest) = u32::try_from(excess - taken).ok().filter(|r| *r > 0) {
                let semaphore = self.semaphore.clone();
                tokio::spawn(async move {
                    if let Ok(p) = semaphore.acquire_many_owned(rest).await {
                        p.forget();
                    }
                });
            }
        }
        *current = size;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn resizes_up_at_once_and_down_as_slots_come_back() {
        let t = Throttle::new(2);
        let a = t.acquire().await.unwrap();
        let b = t.acquire().await.unwrap();
        assert_eq!(t.semaphore.available_permits(), 0);
        t.resize(3);
        let c = t.acquire().await.unwrap();
        // Down to 1 while 3 are in use: nothing is revoked, and no new slot until two return.
        t.resize(1);
        assert_eq!(t.size(), 1);
        drop(a);
        drop(b);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(t.semaphore.available_permits(), 0);
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(t.semaphore.available_permits(), 1);
        t.resize(0);
        assert_eq!(t.size(), 1, "at least one slot");
    }
}
