//! The bandwidth cap (ours; stock Pacific has none): a token bucket per peer connection
//! (one pool replayer: `rbd_mirror_rs_peer_bandwidth_limit`, bytes/s, changed at runtime),
//! shared by every image replayer of that peer, and one per image on top where an image has
//! a cap of its own (`rbd_mirror_rs_image_bandwidth_limit`, or the primary image's metadata
//! key of that name). Bytes are charged as they are read from the primary, the bytes that
//! cross the link: the objects the copy engine reads (full and snapshot syncs) and the
//! journal entries replay takes from the tail (their payload).
//!
//! A charge takes its bytes from the bucket at once, into debt if need be, and the reader
//! then waits until the debt is paid at the limit's rate: concurrent readers queue behind
//! each other's debt, so together they stay at the rate. The bucket holds at most
//! [`BURST`] of the rate. Without a limit a charge is one atomic load: no lock, no timer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::Result;
use crate::PeerContext;

/// What a bucket holds at most: this long at the limit's rate.
pub const BURST: Duration = Duration::from_millis(100);

/// Debts shorter than this are not waited for at once (a timer's resolution is about a
/// millisecond): they stay in the bucket, and a later charge waits for them.
pub const MIN_WAIT: Duration = Duration::from_millis(5);

/// The metadata key of a primary image that caps that image (bytes/s, sizes as
/// `4M`): `rbd image-meta set <image> rbd_mirror_rs_image_bandwidth_limit 4M`.
pub const IMAGE_LIMIT_KEY: &str = "rbd_mirror_rs_image_bandwidth_limit";

/// One token bucket, with what it made readers wait.
#[derive(Debug, Default)]
pub struct Bandwidth {
    /// Bytes per second; 0: no limit.
    limit: AtomicU64,
    bucket: Mutex<Bucket>,
    /// Nanoseconds readers waited on this cap (or on an image cap of this peer), summed.
    waited_nanos: AtomicU64,
    /// Bytes whose reader waited.
    throttled_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Bytes available (negative: owed).
    tokens: f64,
    /// When `tokens` was computed; `None`: full.
    at: Option<Instant>,
}

/// The same bucket (a pool's state in the registry holds its peer's).
impl PartialEq for Bandwidth {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Bandwidth {}

impl Bandwidth {
    /// A bucket of `limit` bytes/s (0: no limit).
    pub fn new(limit: u64) -> Self {
        Bandwidth { limit: AtomicU64::new(limit), ..Default::default() }
    }

    /// The limit in bytes/s (0: none).
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Changes the limit (0: none); a changed limit starts from a full bucket. Readers
    /// already waiting finish their wait.
    pub fn set_limit(&self, limit: u64) {
        if self.limit.swap(limit, Ordering::Relaxed) != limit {
            *self.bucket.lock() = Bucket::default();
        }
    }

    /// Seconds readers waited on the cap, summed over the readers.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }

    /// Bytes whose reader waited on the cap.
    pub fn throttled_bytes(&self) -> u64 {
        self.throttled_bytes.load(Ordering::Relaxed)
    }

    /// Takes `bytes` at `now`; returns how long the reader owes (zero when the bucket had
    /// them, or without a limit).
    fn take(&self, bytes: u64, now: Instant) -> Duration {
        let limit = self.limit();
        if limit == 0 {
            return Duration::ZERO;
        }
        let rate = limit as f64;
        let capacity = rate * BURST.as_secs_f64();
        let mut bucket = self.bucket.lock();
        let tokens = match bucket.at {
            None => capacity,
            Some(at) => {
                (bucket.tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(capacity)
            }
        };
        let left = tokens - bytes as f64;
        *bucket = Bucket { tokens: left, at: Some(now) };
        drop(bucket);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-left / rate).unwrap_or(Duration::MAX)
        }
    }

    fn record(&self, waited: Duration, bytes: u64) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.throttled_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The caps one image replayer reads under: its peer's bucket (shared) and its own.
#[derive(Debug, Clone, Default)]
pub struct ImageBandwidth {
    peer: Option<Arc<Bandwidth>>,
    image: Option<Arc<Bandwidth>>,
}

impl ImageBandwidth {
    /// No cap (tools and tests).
    pub fn unlimited() -> Self {
        ImageBandwidth::default()
    }

    /// Under the peer's bucket and, with `image_limit` > 0, a bucket of the image's own.
    pub fn new(peer: Arc<Bandwidth>, image_limit: u64) -> Self {
        ImageBandwidth {
            peer: Some(peer),
            image: (image_limit > 0).then(|| Arc::new(Bandwidth::new(image_limit))),
        }
    }

    /// The image's own limit in bytes/s (0: none).
    pub fn image_limit(&self) -> u64 {
        self.image.as_ref().map_or(0, |b| b.limit())
    }

    /// Charges `bytes` read from the primary; returns how long the reader should wait now
    /// (zero, or at least [`MIN_WAIT`]; the wait is counted in the peer's metrics).
    pub fn reserve(&self, bytes: u64) -> Duration {
        // The hot path without caps: an atomic load, no clock.
        if self.image.is_none() && self.peer.as_ref().is_none_or(|p| p.limit() == 0) {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let take = |b: &Option<Arc<Bandwidth>>| b.as_ref().map_or(Duration::ZERO, |b| b.take(bytes, now));
        let wait = take(&self.peer).max(take(&self.image));
        if wait < MIN_WAIT {
            return Duration::ZERO;
        }
        if let Some(peer) = self.peer.as_ref().or(self.image.as_ref()) {
            peer.record(wait, bytes);
        }
        wait
    }

    /// Charges `bytes` read from the primary and waits as the caps say.
    pub async fn charge(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The caps of the image replayer of remote image `remote_image_id`: the peer's bucket, and
/// the image's own limit: the primary image's metadata [`IMAGE_LIMIT_KEY`] if set (a bad
/// value is logged and ignored), else `rbd_mirror_rs_image_bandwidth_limit`. Read when a
/// sync or a replay starts.
pub(crate) async fn for_image(ctx: &PeerContext, remote_image_id: &str) -> Result<ImageBandwidth> {
    let mut limit = ctx.config().rbd_mirror_rs_image_bandwidth_limit.0;
    let meta = crate::cls::metadata_list(&ctx.remote_io, remote_image_id).await?;
    if let Some(raw) = meta.get(IMAGE_LIMIT_KEY) {
        let mut probe = crate::MirrorConfig::default();
        match probe.set(IMAGE_LIMIT_KEY, &String::from_utf8_lossy(raw)) {
            Ok(()) => limit = probe.rbd_mirror_rs_image_bandwidth_limit.0,
            Err(e) => tracing::warn!(error = %e, "image-meta {IMAGE_LIMIT_KEY} of the primary image ignored"),
        }
    }
    if limit > 0 {
        tracing::info!(limit_bytes_per_s = limit, "the image's own bandwidth cap");
    }
    Ok(ImageBandwidth::new(ctx.bandwidth.clone(), limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn no_limit_never_waits_nor_counts() {
        let b = Arc::new(Bandwidth::new(0));
        let image = ImageBandwidth::new(b.clone(), 0);
        for _ in 0..1000 {
            assert_eq!(image.reserve(4 * MIB), Duration::ZERO);
        }
        assert_eq!((b.waited(), b.throttled_bytes()), (Duration::ZERO, 0));
        assert_eq!(ImageBandwidth::unlimited().reserve(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn debts_queue_at_the_rate() {
        let b = Bandwidth::new(4 * MIB);
        let t0 = Instant::now();
        // The burst (100 ms = 0.4 MiB) is free; then each MiB costs 250 ms more.
        assert_eq!(b.take(MIB * 4 / 10, t0), Duration::ZERO);
        let w1 = b.take(MIB, t0);
        let w2 = b.take(MIB, t0);
        assert!((w1.as_secs_f64() - 0.25).abs() < 1e-6, "{w1:?}");
        assert!((w2.as_secs_f64() - 0.5).abs() < 1e-6, "{w2:?}");
        // A second later 4 MiB have come back: the 2 MiB debt is paid, the bucket holds
        // at most its burst.
        let w3 = b.take(MIB, t0 + Duration::from_secs(1));
        assert!((w3.as_secs_f64() - (1.0 - 0.4) / 4.0).abs() < 1e-6, "{w3:?}");
    }

    #[test]
    fn a_steady_reader_gets_the_rate() {
        // Simulated: a reader of 4 KiB pieces that waits whenever told to, for 10 s of
        // the rate; it finishes within a burst of 10 s.
        let rate = 4 * MIB;
        let peer = Bandwidth::new(rate);
        let t0 = Instant::now();
        let mut now = t0;
        let total = 10 * rate;
        let mut read = 0;
        while read < total {
            let wait = peer.take(4096, now);
            if wait >= MIN_WAIT {
                now += wait;
            }
            read += 4096;
        }
        let secs = (now - t0).as_secs_f64();
        assert!((secs - (10.0 - BURST.as_secs_f64())).abs() < 0.01, "{secs}");
    }

    #[test]
    fn the_image_cap_and_the_peer_cap_both_hold() {
        let peer = Arc::new(Bandwidth::new(8 * MIB));
        let image = ImageBandwidth::new(peer.clone(), 2 * MIB);
        assert_eq!(image.image_limit(), 2 * MIB);
        // 1 MiB: the image's bucket (0.2 MiB burst) owes 0.4 s, the peer's 0.0225 s.
        let wait = image.reserve(MIB);
        assert!((wait.as_secs_f64() - 0.4).abs() < 0.01, "{wait:?}");
        assert_eq!(peer.throttled_bytes(), MIB);
        assert!(peer.waited() >= Duration::from_millis(390));
        // Another image of the peer without a cap of its own only sees the peer's debt.
        let other = ImageBandwidth::new(peer.clone(), 0);
        let wait = other.reserve(MIB);
        assert!(wait < Duration::from_millis(300), "{wait:?}");
    }

    #[test]
    fn a_changed_limit_applies_from_a_full_bucket() {
        let b = Bandwidth::new(MIB);
        let now = Instant::now();
        assert!(b.take(10 * MIB, now) > Duration::from_secs(9));
        b.set_limit(0);
        assert_eq!(b.take(10 * MIB, now), Duration::ZERO);
        b.set_limit(100 * MIB);
        assert_eq!(b.take(10 * MIB, now), Duration::ZERO, "10 MiB is the new burst");
        assert_eq!(b.limit(), 100 * MIB);
    }
}
