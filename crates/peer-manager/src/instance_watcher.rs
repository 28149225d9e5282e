//! The instance watcher (stock `InstanceWatcher`, ceph-formats.md §5.5): this daemon as one
//! instance of a pool namespace. It registers in `rbd_mirror_leader`'s omap, creates, watches
//! and locks `rbd_mirror_instance.<instance id>`, and turns the leader's notifications there
//! (image acquire, release, peer image removed) into [`Request`]s for the namespace replayer;
//! each is acked, with stock's `NotifyAckPayload`, once done. A request the leader resends
//! (its notify timed out) while the first is still in progress is answered once, when done.
//! While this instance leads, it answers other instances' sync requests at once (no
//! site-wide sync throttling across instances: each instance throttles its own syncs).
//!
//! [`notify_instance`] is the other direction: the leader's requests to an instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use image_replayer::{cls, LeaderState};
use rados_ffi::{IoCtx, Rados, Watch, WatchEvent, WriteOp};
use rbd_types::cls_rbd::RBD_MIRROR_INSTANCE_PREFIX;
use rbd_types::mirror_notify::{InstanceNotify, NotifyAck};
use rbd_types::{Decode, Encode};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::leader::NOTIFY_TIMEOUT;
use crate::managed_lock::ManagedLock;

/// The request ids of this process's notifications to instances (receivers tell requests
/// apart by sender and id).
static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh request id.
pub(crate) fn next_request_id() -> u64 {
    REQUEST_SEQ.fetch_add(1, Ordering::Relaxed) + 1
}

/// What the leader asks of this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageRequest {
    /// Replay this image.
    Acquire(String),
    /// Stop replaying it (done once stopped).
    Release(String),
    /// The peer removed it: stop, and delete the local non-primary copy.
    PeerImageRemoved(String),
}

/// One request and the means to answer it.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) what: ImageRequest,
    done: Done,
}

impl Request {
    /// Answers the leader: 0 or a negative errno.
    pub(crate) fn complete(self, ret_val: i32) {
        let _ = self.done.tx.send((self.done.key, ret_val));
    }
}

type RequestKey = (u64, u64);

#[derive(Debug)]
struct Done {
    /// (sender's instance id, request id).
    key: RequestKey,
    tx: mpsc::UnboundedSender<(RequestKey, i32)>,
}

/// This daemon registered as an instance of one pool namespace.
pub(crate) struct InstanceWatcher {
    local: Rados,
    io: Arc<IoCtx>,
    watch: Watch,
    lock: ManagedLock,
}

impl std::fmt::Debug for InstanceWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceWatcher")
            .field("instance_id", &self.local.instance_id())
            .finish_non_exhaustive()
    }
}

impl InstanceWatcher {
    /// Registers this daemon (its global id) as an instance of `io`'s pool namespace.
    pub(crate) async fn register(local: Rados, io: Arc<IoCtx>) -> image_replayer::Result<Self> {
        let instance_id = local.instance_id().to_string();
        cls::mirror_instances_add(&io, &instance_id).await?;
        let oid = format!("{RBD_MIRROR_INSTANCE_PREFIX}{instance_id}");
        let mut create = WriteOp::new();
        create.create(false);
        io.operate(&oid, create).await?;
        let watch = io.watch_with_acks(&oid).await?;
        let lock = ManagedLock::new(io.clone(), oid.clone());
        if !lock.try_acquire(watch.handle()).await? {
            return Err(image_replayer::ReplayError::Busy(format!("{oid} is locked by another client")));
        }
        tracing::info!(%instance_id, namespace = %io.namespace(), "registered as an rbd-mirror instance");
        Ok(InstanceWatcher { local, io, watch, lock })
    }

    /// Serves the leader's notifications until `cancel`, then unregisters.
    pub(crate) async fn run(
        mut self,
        requests: mpsc::UnboundedSender<Request>,
        leader: watch::Receiver<LeaderState>,
        cancel: CancellationToken,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(RequestKey, i32)>();
        // Requests in progress → the notification to ack when done.
        let mut in_progress: HashMap<RequestKey, u64> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some((key, ret_val)) = done_rx.recv() => {
                    if let Some(notify_id) = in_progress.remove(&key) {
                        let ack = NotifyAck { instance_id: key.0.to_string(), request_id: key.1, ret_val };
                        self.watch.ack(notify_id, &ack.to_bytes());
                    }
                }
                event = self.watch.next() => match event {
                    Some(WatchEvent::Notify { notify_id, notifier_id, payload }) => {
                        let notify = match InstanceNotify::decode_all(&payload) {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::warn!(error = %e, notifier_id, "instance notification does not decode; acked and ignored");
                                self.watch.ack(notify_id, &[]);
                                continue;
                            }
                        };
                        let Some(request_id) = notify.request_id() else {
                            self.watch.ack(notify_id, &[]);
                            continue;
                        };
                        let key = (notifier_id, request_id);
                        if let Some(first) = in_progress.get_mut(&key) {
                            // A resend of a request in progress: answered once, when done.
                            *first = notify_id;
                            continue;
                        }
                        let what = match notify {
                            InstanceNotify::ImageAcquire { global_image_id, .. } => ImageRequest::Acquire(global_image_id),
                            InstanceNotify::ImageRelease { global_image_id, .. } => ImageRequest::Release(global_image_id),
                            InstanceNotify::PeerImageRemoved { global_image_id, .. } => {
                                ImageRequest::PeerImageRemoved(global_image_id)
                            }
                            InstanceNotify::SyncRequest { sync_id, .. } => {
                                let leads = leader.borrow().leader;
                                let ret_val = if leads {
                                    tokio::spawn(start_sync(self.io.clone(), self.local.instance_id(), notifier_id, sync_id));
                                    0
                                } else {
                                    -libc::ESTALE
                                };
                                let ack = NotifyAck { instance_id: notifier_id.to_string(), request_id, ret_val };
                                self.watch.ack(notify_id, &ack.to_bytes());
                                continue;
                            }
                            InstanceNotify::SyncStart { .. } | InstanceNotify::Unknown(_) => {
                                let ack = NotifyAck { instance_id: notifier_id.to_string(), request_id, ret_val: 0 };
                                self.watch.ack(notify_id, &ack.to_bytes());
                                continue;
                            }
                        };
                        tracing::debug!(?what, notifier_id, request_id, "request from the leader");
                        in_progress.insert(key, notify_id);
                        let request = Request { what, done: Done { key, tx: done_tx.clone() } };
                        if requests.send(request).is_err() {
                            break;
                        }
                    }
                    Some(WatchEvent::Error { errno }) => {
                        // librados may re-establish the watch itself; if it did not, watch
                        // again (and take the instance lock with the new watch's cookie). A
                        // notification missed meanwhile is resent by the leader.
                        tracing::warn!(errno, "instance watch error");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        if self.watch.check().is_err() {
                            if let Err(e) = self.rewatch().await {
                                tracing::error!(error = %e, "cannot watch the instance object again; retrying");
                            }
                        }
                    }
                    None => break,
                },
            }
        }
        self.unregister().await;
    }

    /// Watches the instance object again and moves the instance lock to the new watch.
    async fn rewatch(&mut self) -> rados_ffi::Result<()> {
        let oid = format!("{RBD_MIRROR_INSTANCE_PREFIX}{}", self.local.instance_id());
        let old = self.watch.handle();
        let watch = self.io.watch_with_acks(&oid).await?;
        let _ = self.lock.release(old).await;
        if !self.lock.try_acquire(watch.handle()).await? {
            tracing::warn!(%oid, "the instance lock is held by another client");
        }
        let old = std::mem::replace(&mut self.watch, watch);
        let _ = old.close().await;
        tracing::info!(%oid, "watching the instance object again");
        Ok(())
    }

    /// Releases the instance lock, unwatches, removes the instance object and registration
    /// (a clean shutdown leaves nothing for the leader to break or blocklist).
    async fn unregister(self) {
        let instance_id = self.local.instance_id().to_string();
        if let Err(e) = self.lock.release(self.watch.handle()).await {
            tracing::debug!(error = %e, "releasing the instance lock failed");
        }
        let _ = self.watch.close().await;
        let oid = format!("{RBD_MIRROR_INSTANCE_PREFIX}{instance_id}");
        if let Err(e) = self.io.remove(&oid).await {
            if !e.is_not_found() {
                tracing::debug!(error = %e, "removing the instance object failed");
            }
        }
        if let Err(e) = cls::mirror_instances_remove(&self.io, &instance_id).await {
            tracing::debug!(error = %e, "unregistering the instance failed");
        }
        tracing::info!(%instance_id, namespace = %self.io.namespace(), "unregistered as an rbd-mirror instance");
    }
}

/// Why a request to an instance got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// The notification itself failed (the instance object is gone: `ENOENT`, ...).
    #[error(transparent)]
    Rados(#[from] rados_ffi::RadosError),
    /// Nobody watching the instance object answered (the instance is not there).
    #[error("instance {0} did not answer")]
    NoAnswer(String),
}

/// Sends `notify` (whose request id is `request_id`) to instance `instance_id` of `io`'s
/// namespace and waits for its answer (0 or a negative errno), resending after each
/// timeout up to `attempts` times, as stock's `C_NotifyInstanceRequest`.
pub(crate) async fn notify_instance(
    io: &IoCtx,
    my_instance_id: u64,
    instance_id: &str,
    notify: &InstanceNotify,
    attempts: u32,
) -> Result<i32, NotifyError> {
    let oid = format!("{RBD_MIRROR_INSTANCE_PREFIX}{instance_id}");
    let bytes = notify.to_bytes();
    let request_id = notify.request_id().unwrap_or_default();
    let me = my_instance_id.to_string();
    for _ in 0..attempts.max(1) {
        let reply = io.notify(&oid, &bytes, NOTIFY_TIMEOUT).await?;
        let answer = reply.acks.iter().find_map(|(_, _, payload)| {
            let ack = NotifyAck::decode_all(payload).ok()?;
            (ack.instance_id == me && ack.request_id == request_id).then_some(ack.ret_val)
        });
        if let Some(ret_val) = answer {
            return Ok(ret_val);
        }
        if reply.timeouts.is_empty() {
            break;
        }
    }
    Err(NotifyError::NoAnswer(instance_id.to_owned()))
}

/// Answers an instance's sync request as the leader: `SYNC_START` (its ack comes when the
/// sync is done, possibly long after: resent like stock until answered).
async fn start_sync(io: Arc<IoCtx>, my_instance_id: u64, requester: u64, sync_id: String) {
    let notify = InstanceNotify::SyncStart { request_id: next_request_id(), sync_id: sync_id.clone() };
    match notify_instance(&io, my_instance_id, &requester.to_string(), &notify, u32::MAX).await {
        Ok(_) => tracing::debug!(%sync_id, requester, "sync finished"),
        Err(e) => tracing::debug!(%sync_id, requester, error = %e, "sync start not answered"),
    }
}
