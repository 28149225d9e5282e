//! Watches on RADOS objects, delivered as an async stream of [`WatchEvent`]s.

use std::ffi::{c_int, c_void, CString};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cluster::SendPtr;
use crate::completion::{blocking, teardown};
use crate::error::{check, cstring, Result};
use crate::ioctx::{IoCtxHandle, WatchEvent};
use crate::sys::librados;

/// Seconds without a heartbeat after which the OSD drops the watch (librados' default is 30).
const WATCH_TIMEOUT_SECS: u32 = 30;

/// State the C callbacks use; boxed, freed only after unwatch + `rados_watch_flush`.
struct WatchCtx {
    events: mpsc::UnboundedSender<WatchEvent>,
    io: librados::rados_ioctx_t,
    oid: CString,
    /// The consumer acks each notification itself ([`Watch::ack`]), with a payload.
    manual_ack: bool,
}

/// A registered watch. Events arrive through [`Watch::next`]. Notifications are acknowledged
/// (with an empty reply) as they arrive, so a notifier never waits on a slow consumer;
/// a watch made with [`crate::IoCtx::watch_with_acks`] leaves each ack, with its reply
/// payload, to the consumer ([`Watch::ack`]).
///
/// Dropping the watch unregisters it on the blocking pool; [`Watch::close`] does the same
/// and waits for it.
pub struct Watch {
    events: mpsc::UnboundedReceiver<WatchEvent>,
    cookie: u64,
    oid: CString,
    ctx: *mut WatchCtx,
    io: Arc<IoCtxHandle>,
    target: String,
    closed: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("target", &self.target).field("cookie", &self.cookie).finish()
    }
}

// SAFETY: `ctx` is only dereferenced by librados' callback threads (through its own copy of the
// pointer) and freed by teardown after unwatch + flush; the Watch itself never dereferences it.
unsafe impl Send for Watch {}
// SAFETY: through `&Watch` only `check` (`rados_watch_check`, thread-safe in librados) and
// `Debug` are reachable; `ctx` is never dereferenced by the Watch, and the event receiver
// is only used through `&mut self`.
unsafe impl Sync for Watch {}

unsafe extern "C" fn on_notify(
    arg: *mut c_void,
    notify_id: u64,
    cookie: u64,
    notifier_id: u64,
    data: *mut c_void,
    data_len: usize,
) {
    // SAFETY: `arg` is the WatchCtx registered with this watch; it is freed only after
    // unwatch and rados_watch_flush, which waits for running callbacks.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    let payload = if data.is_null() || data_len == 0 {
        Bytes::new()
    } else {
        // SAFETY: librados passes `data_len` readable bytes valid during the callback.
        Bytes::copy_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), data_len) })
    };
    if !ctx.manual_ack {
        // SAFETY: the ioctx outlives the watch (the Watch holds its Arc until after flush);
        // the ack is queued by librados without blocking.
        unsafe {
            librados::rados_notify_ack(ctx.io, ctx.oid.as_ptr(), notify_id, cookie, std::ptr::null(), 0)
        };
    }
    let _ = ctx.events.send(WatchEvent::Notify { notify_id, notifier_id, payload });
}

unsafe extern "C" fn on_error(arg: *mut c_void, _cookie: u64, err: c_int) {
    // SAFETY: as in `on_notify`.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    let _ = ctx.events.send(WatchEvent::Error { errno: err.abs() });
}

impl Watch {
    pub(crate) async fn start(
        io: Arc<IoCtxHandle>,
        oid: &str,
        target: String,
        manual_ack: bool,
    ) -> Result<Watch> {
        let c_oid = cstring("object name", oid)?;
        let c_oid_kept = c_oid.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        // Held as `SendPtr` across the await below so the future stays `Send`.
        let ctx = SendPtr(Box::into_raw(Box::new(WatchCtx {
            events: tx,
            io: io.raw,
            oid: c_oid.clone(),
            manual_ack,
        })));
        let ctx_ptr = SendPtr(ctx.0);
        let io2 = io.clone();
        let t = target.clone();
        let registered = blocking(move || {
            let ctx_ptr = ctx_ptr;
            let mut cookie: u64 = 0;
            // SAFETY: live ioctx (Arc held); `ctx` valid until freed after unwatch + flush.
            let ret = unsafe {
                librados::rados_watch3(
                    io2.raw,
                    c_oid.as_ptr(),
                    &mut cookie,
                    Some(on_notify),
                    Some(on_error),
                    WATCH_TIMEOUT_SECS,
                    ctx_ptr.0.cast(),
                )
            };
            check(ret, "rados_watch3", || t).map(|_| cookie)
        })
        .await;
        match registered {
            Ok(cookie) => {
                Ok(Watch { events: rx, cookie, oid: c_oid_kept, ctx: ctx.0, io, target, closed: false })
            }
            Err(e) => {
                // SAFETY: registration failed, so no callback can reference `ctx`.
                drop(unsafe { Box::from_raw(ctx.0) });
                Err(e)
            }
        }
    }

    /// The next event, or `None` once the watch is closed.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// The next event if one is already there: `Pending` if none, `Ready(None)` once the
    /// watch is closed.
    pub fn try_next(&mut self) -> std::task::Poll<Option<WatchEvent>> {
        match self.events.try_recv() {
            Ok(event) => std::task::Poll::Ready(Some(event)),
            Err(mpsc::error::TryRecvError::Empty) => std::task::Poll::Pending,
            Err(mpsc::error::TryRecvError::Disconnected) => std::task::Poll::Ready(None),
        }
    }

    /// The watch handle (cookie): what `ManagedLock` puts in its lock cookies.
    pub fn handle(&self) -> u64 {
        self.cookie
    }

    /// Acknowledges notification `notify_id` with `payload` (for a watch made with
    /// [`crate::IoCtx::watch_with_acks`]; the notifier sees the payload among its acks).
    pub fn ack(&self, notify_id: u64, payload: &[u8]) {
        let len = c_int::try_from(payload.len()).unwrap_or(0);
        let oid = &self.oid;
        // SAFETY: live ioctx (Arc held) and cookie; librados copies the payload and queues
        // the ack without blocking.
        unsafe {
            librados::rados_notify_ack(
                self.io.raw,
                oid.as_ptr(),
                notify_id,
                self.cookie,
                payload.as_ptr().cast(),
                len,
            )
        };
    }

    /// Checks the watch is still registered: `Ok(ms since last confirmed)` or the error that
    /// broke it (then re-watch).
    pub fn check(&self) -> Result<u64> {
        // SAFETY: live ioctx and cookie; a cheap local check.
        let ret = unsafe { librados::rados_watch_check(self.io.raw, self.cookie) };
        Ok(check(ret, "rados_watch_check", || self.target.clone())? as u64)
    }

    /// Unregisters the watch and waits until no callback can run any more.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        let (io, cookie, ctx, target) =
            (self.io.clone(), self.cookie, SendPtr(self.ctx), self.target.clone());
        blocking(move || unwatch(io, cookie, ctx, &target)).await
    }
}

fn unwatch(io: Arc<IoCtxHandle>, cookie: u64, ctx: SendPtr<WatchCtx>, target: &str) -> Result<()> {
    // SAFETY: live ioctx; cookie from rados_watch3.
    let ret = unsafe { librados::rados_unwatch2(io.raw, cookie) };
    // SAFETY: live cluster; waits for every queued watch/notify callback.
    unsafe { librados::rados_watch_flush(io.cluster.raw) };
    // SAFETY: no callback can run for this watch any more (unwatched and flushed).
    drop(unsafe { Box::from_raw(ctx.0) });
    check(ret, "rados_unwatch2", || target.to_owned())?;
    Ok(())
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (io, cookie, ctx, target) =
            (self.io.clone(), self.cookie, SendPtr(self.ctx), self.target.clone());
        teardown(move || {
            if let Err(e) = unwatch(io, cookie, ctx, &target) {
                tracing::debug!(error = %e, "unwatch on drop failed");
            }
        });
    }
}
