//! librbd's `ManagedLock` as rbd-mirror uses it on `rbd_mirror_leader` and on each
//! `rbd_mirror_instance.<id>` (ceph-formats.md §5.5): an exclusive cls `lock` named
//! `rbd_lock`, tagged `internal`, whose cookie `auto <watch handle>` names the holder's watch
//! on the same object. A lock with another tag or cookie is "held by an external mechanism":
//! never broken. Breaking a lock first blocklists its holder (so a stalled holder cannot
//! write after losing it), as `ManagedLock` does with `blocklist_on_break_lock`.

use std::sync::Arc;

use rados_ffi::{IoCtx, Locker, Rados};
use rbd_types::cls_lock::{parse_managed_lock_cookie, LockOp, MANAGED_LOCK_NAME, MANAGED_LOCK_TAG};
use rbd_types::Encode;

/// What a lock attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Nobody holds it.
    Nobody,
    /// A `ManagedLock` holder (its global id is the instance id).
    Managed(Locker),
    /// Locked by something that is not a `ManagedLock`: left alone.
    External(Locker),
}

/// The `ManagedLock` of one object.
#[derive(Debug, Clone)]
pub(crate) struct ManagedLock {
    io: Arc<IoCtx>,
    oid: String,
}

impl ManagedLock {
    pub(crate) fn new(io: Arc<IoCtx>, oid: impl Into<String>) -> Self {
        ManagedLock { io, oid: oid.into() }
    }

    /// Takes the lock for the watch with handle `watch_handle`: `Ok(true)` when held (also
    /// when already held with this cookie), `Ok(false)` when someone else holds it.
    pub(crate) async fn try_acquire(&self, watch_handle: u64) -> rados_ffi::Result<bool> {
        let op = LockOp::managed_exclusive(watch_handle);
        match self.io.exec_write(&self.oid, "lock", "lock", &op.to_bytes()).await {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(true),
            Err(e) if e.errno() == Some(libc::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Who holds the lock.
    pub(crate) async fn holder(&self) -> rados_ffi::Result<Holder> {
        let lockers = self.io.list_lockers(&self.oid, MANAGED_LOCK_NAME).await?;
        let Some(locker) = lockers.lockers.into_iter().next() else { return Ok(Holder::Nobody) };
        if lockers.tag != MANAGED_LOCK_TAG
            || parse_managed_lock_cookie(&locker.cookie).is_none()
            || !lockers.exclusive
        {
            return Ok(Holder::External(locker));
        }
        Ok(Holder::Managed(locker))
    }

    /// Blocklists `locker` for `blocklist_expire_seconds` (0: the cluster's default) and
    /// breaks its lock. A lock already gone is not an error.
    pub(crate) async fn break_lock(
        &self,
        rados: &Rados,
        locker: &Locker,
        blocklist_expire_seconds: u32,
    ) -> rados_ffi::Result<()> {
        tracing::warn!(oid = %self.oid, client = %locker.client, address = %locker.address,
            "breaking the lock of a holder that stopped answering; blocklisting it");
        rados.blocklist_add(&locker.address, blocklist_expire_seconds).await?;
        match self.io.break_lock(&self.oid, MANAGED_LOCK_NAME, locker).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Releases the lock held through the watch with handle `watch_handle`.
    pub(crate) async fn release(&self, watch_handle: u64) -> rados_ffi::Result<()> {
        let cookie = rbd_types::cls_lock::managed_lock_cookie(watch_handle);
        match self.io.unlock(&self.oid, MANAGED_LOCK_NAME, &cookie).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}
