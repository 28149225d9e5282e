//! librados / librbd aio completions as futures, and the one way blocking C calls run.
//!
//! An aio call gets a boxed context holding a oneshot sender and the operation's *payload*
//! (its buffers and out-parameters). The box is handed to librados as the callback argument,
//! so the payload has a stable address for as long as the C side may write to it. The C
//! callback takes the box back, reads the return value, releases the completion and sends
//! `(ret, payload)` to the future. If the future was dropped meanwhile, the send fails and the
//! payload is freed in the callback: nothing ever blocks a runtime thread waiting for an op,
//! and nothing is freed while librados could still touch it.

use std::ffi::{c_int, c_void};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::sync::{oneshot, Semaphore};

use crate::error::{RadosError, Result};
use crate::sys::{librados, librbd};

/// The future of one aio operation: resolves to librados' return value and the payload.
pub(crate) struct Aio<P> {
    rx: oneshot::Receiver<(c_int, P)>,
    op: &'static str,
}

impl<P> Future for Aio<P> {
    type Output = Result<(c_int, P)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let op = self.op;
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.map_err(|_| RadosError::Call {
                op,
                target: "(completion dropped without a result)".into(),
                errno: libc::ECANCELED,
            })
        })
    }
}

struct Ctx<P, C> {
    tx: Option<oneshot::Sender<(c_int, P)>>,
    payload: Option<P>,
    /// Set right after the completion is created, before the operation is submitted.
    completion: Option<C>,
}

/// Which library's completion type an aio call uses.
pub(crate) trait CompletionKind: Copy + Send + 'static {
    /// Creates a completion whose complete-callback runs [`run_erased`] with `arg`.
    ///
    /// # Safety
    /// `arg` must be a leaked `Box<Erased>` that stays valid until the callback runs or the
    /// completion is released unused.
    unsafe fn create(arg: *mut c_void) -> Result<Self>;
    /// Return value of the completed operation.
    ///
    /// # Safety
    /// `self` must be a live completion whose operation has completed.
    unsafe fn return_value(self) -> c_int;
    /// Releases the caller's reference.
    ///
    /// # Safety
    /// `self` must be a live completion not released before.
    unsafe fn release(self);
}

/// A librados completion handle.
#[derive(Clone, Copy)]
pub(crate) struct RadosCompletion(pub(crate) librados::rados_completion_t);

/// A librbd completion handle.
#[derive(Clone, Copy)]
pub(crate) struct RbdCompletion(pub(crate) librbd::rbd_completion_t);

// SAFETY: completion handles are opaque pointers that librados/librbd allow to be used and
// released from any thread; the crate only passes them between the submitting thread and the
// single completion callback.
unsafe impl Send for RadosCompletion {}
// SAFETY: as for RadosCompletion.
unsafe impl Send for RbdCompletion {}

impl CompletionKind for RadosCompletion {
    unsafe fn create(arg: *mut c_void) -> Result<Self> {
        let mut c: librados::rados_completion_t = std::ptr::null_mut();
        // SAFETY: out-pointer is valid; `arg` validity is the caller's contract.
        let ret = unsafe { librados::rados_aio_create_completion2(arg, Some(rados_trampoline), &mut c) };
        crate::error::check(ret, "rados_aio_create_completion2", String::new)?;
        Ok(RadosCompletion(c))
    }
    unsafe fn return_value(self) -> c_int {
        // SAFETY: caller guarantees a live, completed completion.
        unsafe { librados::rados_aio_get_return_value(self.0) }
    }
    unsafe fn release(self) {
        // SAFETY: caller guarantees a live completion released once.
        unsafe { librados::rados_aio_release(self.0) }
    }
}

impl CompletionKind for RbdCompletion {
    unsafe fn create(arg: *mut c_void) -> Result<Self> {
        let mut c: librbd::rbd_completion_t = std::ptr::null_mut();
        // SAFETY: out-pointer is valid; `arg` validity is the caller's contract.
        let ret = unsafe { librbd::rbd_aio_create_completion(arg, Some(rbd_trampoline), &mut c) };
        crate::error::check(ret, "rbd_aio_create_completion", String::new)?;
        Ok(RbdCompletion(c))
    }
    unsafe fn return_value(self) -> c_int {
        // SAFETY: caller guarantees a live, completed completion; rbd returns ssize_t.
        unsafe { librbd::rbd_aio_get_return_value(self.0) as c_int }
    }
    unsafe fn release(self) {
        // SAFETY: caller guarantees a live completion released once.
        unsafe { librbd::rbd_aio_release(self.0) }
    }
}

/// The boxed callback argument: a type-erased "finish" function plus the typed context.
struct Erased {
    finish: unsafe fn(*mut c_void),
    ctx: *mut c_void,
}

unsafe extern "C" fn rados_trampoline(_c: librados::rados_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the `Box<Erased>` leaked by `submit`; librados calls the complete
    // callback exactly once per completion.
    unsafe { run_erased(arg) }
}

unsafe extern "C" fn rbd_trampoline(_c: librbd::rbd_completion_t, arg: *mut c_void) {
    // SAFETY: as for `rados_trampoline`.
    unsafe { run_erased(arg) }
}

unsafe fn run_erased(arg: *mut c_void) {
    // SAFETY: see the trampolines: `arg` is a leaked `Box<Erased>` reclaimed exactly once.
    let erased = unsafe { Box::from_raw(arg.cast::<Erased>()) };
    // SAFETY: `finish` was instantiated for the concrete context type behind `ctx`.
    unsafe { (erased.finish)(erased.ctx) }
}

/// Submits one aio operation.
///
/// `payload` owns every buffer and out-parameter the operation writes to. `start` receives a
/// pointer to the payload at its final (boxed) address and the completion, and must return
/// the C call's return value; it must not keep any reference beyond the pointers it passes to C.
///
/// # Safety
/// `start` must only hand librados pointers into `*payload` (or data it owns until return),
/// and must submit at most one operation using the completion.
pub(crate) unsafe fn submit<P, C>(
    op: &'static str,
    payload: P,
    target: impl FnOnce() -> String,
    start: impl FnOnce(*mut P, C) -> c_int,
) -> Result<Aio<P>>
where
    P: Send + 'static,
    C: CompletionKind,
{
    let (tx, rx) = oneshot::channel();
    let ctx = Box::into_raw(Box::new(Ctx::<P, C> { tx: Some(tx), payload: Some(payload), completion: None }));
    let erased = Box::into_raw(Box::new(Erased { finish: finish::<P, C>, ctx: ctx.cast() }));
    // SAFETY: `erased` stays valid until the callback reclaims it, or until we reclaim it
    // below when submission fails (then no callback will run).
    let completion = match unsafe { C::create(erased.cast()) } {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: no completion exists, so nothing else references the boxes.
            unsafe {
                drop(Box::from_raw(erased));
                drop(Box::from_raw(ctx));
            }
            return Err(e);
        }
    };
    // SAFETY: `ctx` is valid and not yet shared with C (the op is not submitted yet).
    let payload_ptr = unsafe {
        (*ctx).completion = Some(completion);
        match (*ctx).payload.as_mut() {
            Some(p) => p as *mut P,
            None => std::ptr::null_mut(),
        }
    };
    let ret = start(payload_ptr, completion);
    if ret < 0 {
        // Not submitted: the callback will never run; reclaim everything here.
        // SAFETY: `completion` is live and unused; the boxes are ours again.
        unsafe {
            completion.release();
            drop(Box::from_raw(erased));
            drop(Box::from_raw(ctx));
        }
        return Err(RadosError::Call { op, target: target(), errno: -ret });
    }
    // From here on `ctx` belongs to the callback; never touch it again.
    Ok(Aio { rx, op })
}

unsafe fn finish<P: Send + 'static, C: CompletionKind>(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `Box<Ctx<P, C>>` leaked by `submit`, reclaimed only here.
    let mut ctx = unsafe { Box::from_raw(ctx.cast::<Ctx<P, C>>()) };
    let Some(completion) = ctx.completion.take() else {
        return;
    };
    // SAFETY: we are in the completion's callback: the op has completed, and librados/librbd
    // hold their own reference for the duration of the callback, so releasing ours is allowed.
    let ret = unsafe { completion.return_value() };
    // SAFETY: released exactly once, after reading the return value.
    unsafe { completion.release() };
    if let (Some(tx), Some(payload)) = (ctx.tx.take(), ctx.payload.take()) {
        // A dropped future only means nobody wants the result; the payload is freed here.
        let _ = tx.send((ret, payload));
    }
}

/// How many blocking C calls may run at once. A slow OSD or monitor must not be able to
/// occupy tokio's whole blocking pool, which other subsystems (file I/O, DNS) share.
pub const MAX_BLOCKING_CALLS: usize = 32;

fn blocking_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(MAX_BLOCKING_CALLS))
}

/// Blocking C calls ([`blocking`]) and teardowns ([`teardown`]) under way on the blocking
/// pool: what a process that exits now would leave inside librados.
static CALLS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static TEARDOWNS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one call in `counter` for as long as it lives (dropped at its end, also by a panic).
struct InFlight(&'static AtomicUsize);

impl InFlight {
    fn new(counter: &'static AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Blocking librados calls under way (a connection being made, a pool lookup, ...).
pub fn blocking_calls_in_flight() -> usize {
    CALLS_IN_FLIGHT.load(Ordering::SeqCst)
}

/// Teardowns under way (`rados_shutdown` of a dropped cluster handle, which joins its
/// threads, and the like): a process must not exit during one (librados' static
/// destructors would run beside it).
pub fn teardowns_in_flight() -> usize {
    TEARDOWNS_IN_FLIGHT.load(Ordering::SeqCst)
}

/// Runs a blocking C call on tokio's blocking pool, bounded by [`MAX_BLOCKING_CALLS`].
/// Panics inside `f` are propagated to the caller.
pub(crate) async fn blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let _slot = blocking_slots().acquire().await;
    let counted = InFlight::new(&CALLS_IN_FLIGHT);
    let f = move || {
        let _counted = counted;
        f()
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("blocking librados call was cancelled: {e}"),
    }
}

/// Runs teardown code (close, destroy, shutdown) that may block: on the blocking pool when
/// called from inside a tokio runtime, inline otherwise. Used by `Drop` impls.
pub(crate) fn teardown(f: impl FnOnce() + Send + 'static) {
    let counted = InFlight::new(&TEARDOWNS_IN_FLIGHT);
    let f = move || {
        let _counted = counted;
        f()
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            drop(handle.spawn_blocking(f));
        }
        Err(_) => f(),
    }
}
