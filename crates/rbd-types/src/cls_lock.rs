//! The cls `lock` arguments the daemon sends itself: librados' C API takes a lock without a
//! *tag*, but librbd's `ManagedLock` (which stock rbd-mirror uses for `rbd_mirror_leader` and
//! the instance objects) only recognises locks tagged `internal` with a cookie
//! `auto <watch handle>`: anything else is "locked by an external mechanism" and never broken.

use bytes::Bytes;

use crate::encoding::{Encode, Encoder, UTime};

/// The lock name `ManagedLock` uses (`RBD_LOCK_NAME`).
pub const MANAGED_LOCK_NAME: &str = "rbd_lock";
/// The tag `ManagedLock` puts on its locks (`WATCHER_LOCK_TAG`).
pub const MANAGED_LOCK_TAG: &str = "internal";

/// The cookie of a `ManagedLock` held through the watch with handle `watch_handle`.
pub fn managed_lock_cookie(watch_handle: u64) -> String {
    format!("auto {watch_handle}")
}

/// The watch handle in a `ManagedLock` cookie, `None` when it is not one.
pub fn parse_managed_lock_cookie(cookie: &str) -> Option<u64> {
    cookie.strip_prefix("auto ")?.parse().ok()
}

/// `cls_lock_lock_op` (`ENCODE_START(1, 1)`): the input of cls `lock.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOp {
    /// Lock name.
    pub name: String,
    /// Exclusive (`LOCK_EXCLUSIVE = 1`) or shared (2).
    pub exclusive: bool,
    /// The holder's cookie.
    pub cookie: String,
    /// The lock's tag.
    pub tag: String,
    /// Free text.
    pub description: String,
    /// 0: never expires.
    pub duration: UTime,
    /// `LOCK_FLAG_MAY_RENEW = 1`, `LOCK_FLAG_MUST_RENEW = 2`.
    pub flags: u8,
}

impl LockOp {
    /// An exclusive `ManagedLock` for the watch with handle `watch_handle`.
    pub fn managed_exclusive(watch_handle: u64) -> LockOp {
        LockOp {
            name: MANAGED_LOCK_NAME.into(),
            exclusive: true,
            cookie: managed_lock_cookie(watch_handle),
            tag: MANAGED_LOCK_TAG.into(),
            description: String::new(),
            duration: UTime::default(),
            flags: 0,
        }
    }

    /// The encoded input.
    pub fn input(&self) -> Bytes {
        self.to_bytes()
    }
}

impl Encode for LockOp {
    fn encode(&self, e: &mut Encoder) {
        e.envelope(1, 1, |e| {
            e.string(&self.name);
            e.u8(if self.exclusive { 1 } else { 2 });
            e.string(&self.cookie);
            e.string(&self.tag);
            e.string(&self.description);
            e.utime(self.duration);
            e.u8(self.flags);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_lock_op_bytes() {
        let op = LockOp::managed_exclusive(94_000_001);
        let b = op.input();
        let mut want = vec![1u8, 1];
        let body: Vec<u8> = [
            &[8, 0, 0, 0][..],
            b"rbd_lock",
            &[1],
            &[13, 0, 0, 0],
            b"auto 94000001",
            &[8, 0, 0, 0],
            b"internal",
            &[0, 0, 0, 0],
            &[0; 8],
            &[0],
        ]
        .concat();
        want.extend_from_slice(&(body.len() as u32).to_le_bytes());
        want.extend_from_slice(&body);
        assert_eq!(&b[..], &want[..]);
        assert_eq!(parse_managed_lock_cookie("auto 94000001"), Some(94_000_001));
        assert_eq!(parse_managed_lock_cookie("internal 1"), None);
        assert_eq!(parse_managed_lock_cookie("auto x"), None);
    }
}
