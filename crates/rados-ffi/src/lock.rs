//! Advisory object locks (cls `lock`) as librados' C API exposes them: who holds a lock (with
//! its tag, which `ManagedLock` checks), breaking and releasing one, and blocklisting a
//! dead holder. Taking a lock with a tag has no C call: callers send the cls `lock.lock`
//! method themselves (`rbd_types::cls_lock::LockOp`) through [`IoCtx::exec_write`].

use std::ffi::{c_char, CString};

use crate::completion::blocking;
use crate::error::{check, cstring, Result};
use crate::{IoCtx, Rados};

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locker {
    /// The holder's entity, `client.<global id>`.
    pub client: String,
    /// The holder's cookie.
    pub cookie: String,
    /// The holder's address, as `rados_blocklist_add` takes it (`ip:port/nonce`).
    pub address: String,
}

impl Locker {
    /// The holder's global id (`client.4123` → 4123).
    pub fn global_id(&self) -> Option<u64> {
        self.client.strip_prefix("client.")?.parse().ok()
    }
}

/// The holders of a lock and its type and tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lockers {
    /// Exclusive (else shared).
    pub exclusive: bool,
    /// The lock's tag.
    pub tag: String,
    /// Who holds it (empty: nobody).
    pub lockers: Vec<Locker>,
}

/// Splits librados' NUL-separated string list (`len` bytes, each entry NUL-terminated).
fn nul_list(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl IoCtx {
    /// The holders of lock `name` on `oid` (none when the object or the lock does not exist).
    pub async fn list_lockers(&self, oid: &str, name: &str) -> Result<Lockers> {
        let (c_oid, c_name) = (cstring("object name", oid)?, cstring("lock name", name)?);
        let handle = self.handle.clone();
        let target = self.object_target(oid);
        blocking(move || {
            let mut sizes = [256usize; 4];
            loop {
                let (mut tag, mut clients, mut cookies, mut addrs) =
                    (vec![0u8; sizes[0]], vec![0u8; sizes[1]], vec![0u8; sizes[2]], vec![0u8; sizes[3]]);
                let mut lens = sizes;
                let mut exclusive: std::ffi::c_int = 0;
                // SAFETY: live ioctx kept by `handle`; each buffer is as long as its length
                // argument says; librados writes at most that many bytes and sets the lengths.
                let ret = unsafe {
                    crate::sys::librados::rados_list_lockers(
                        handle.raw,
                        c_oid.as_ptr(),
                        c_name.as_ptr(),
                        &mut exclusive,
                        tag.as_mut_ptr().cast::<c_char>(),
                        &mut lens[0],
                        clients.as_mut_ptr().cast::<c_char>(),
                        &mut lens[1],
                        cookies.as_mut_ptr().cast::<c_char>(),
                        &mut lens[2],
                        addrs.as_mut_ptr().cast::<c_char>(),
                        &mut lens[3],
                    )
                };
                if ret == -(libc::ERANGE as isize) {
                    // Buffers too short: librados said how long they must be.
                    sizes = [0, 1, 2, 3].map(|i| lens[i].max(sizes[i]) + 1);
                    continue;
                }
                if ret == -(libc::ENOENT as isize) {
                    return Ok(Lockers::default());
                }
                check(i32::try_from(ret).unwrap_or(-libc::EIO), "rados_list_lockers", || target.clone())?;
                let take =
                    |buf: &[u8], len: usize| nul_list(buf.get(..len.min(buf.len())).unwrap_or_default());
                let tags = take(&tag, lens[0]);
                let (clients, cookies, addrs) =
                    (take(&clients, lens[1]), take(&cookies, lens[2]), take(&addrs, lens[3]));
                let lockers = clients
                    .into_iter()
                    .zip(cookies)
                    .zip(addrs)
                    .map(|((client, cookie), address)| Locker { client, cookie, address })
                    .collect();
                return Ok(Lockers {
                    exclusive: exclusive != 0,
                    tag: tags.into_iter().next().unwrap_or_default(),
                    lockers,
                });
            }
        })
        .await
    }

    /// Breaks `locker`'s hold of lock `name` on `oid` (`ENOENT` when it no longer holds it).
    pub async fn break_lock(&self, oid: &str, name: &str, locker: &Locker) -> Result<()> {
        let (c_oid, c_name) = (cstring("object name", oid)?, cstring("lock name", name)?);
        let (c_client, c_cookie) = (cstring("locker", &locker.client)?, cstring("cookie", &locker.cookie)?);
        let handle = self.handle.clone();
        let target = self.object_target(oid);
        blocking(move || {
            // SAFETY: live ioctx kept by `handle`; valid NUL-terminated strings.
            let ret = unsafe {
                crate::sys::librados::rados_break_lock(
                    handle.raw,
                    c_oid.as_ptr(),
                    c_name.as_ptr(),
                    c_client.as_ptr(),
                    c_cookie.as_ptr(),
                )
            };
            check(ret, "rados_break_lock", || target).map(|_| ())
        })
        .await
    }

    /// Releases this client's hold (`cookie`) of lock `name` on `oid`.
    pub async fn unlock(&self, oid: &str, name: &str, cookie: &str) -> Result<()> {
        let (c_oid, c_name, c_cookie) =
            (cstring("object name", oid)?, cstring("lock name", name)?, cstring("cookie", cookie)?);
        let handle = self.handle.clone();
        let target = self.object_target(oid);
        blocking(move || {
            // SAFETY: live ioctx kept by `handle`; valid NUL-terminated strings.
            let ret = unsafe {
                crate::sys::librados::rados_unlock(
                    handle.raw,
                    c_oid.as_ptr(),
                    c_name.as_ptr(),
                    c_cookie.as_ptr(),
                )
            };
            check(ret, "rados_unlock", || target).map(|_| ())
        })
        .await
    }
}

impl Rados {
    /// Blocklists client address `address` (`ip:port/nonce`) for `expire_seconds` (0: the
    /// cluster's default), as `ManagedLock` does before breaking a dead holder's lock.
    pub async fn blocklist_add(&self, address: &str, expire_seconds: u32) -> Result<()> {
        let c_addr: CString = cstring("client address", address)?;
        let handle = self.handle.clone();
        let target = format!("cluster {}: blocklist {address}", self.handle.name);
        blocking(move || {
            let mut c_addr = c_addr.into_bytes_with_nul();
            // SAFETY: connected cluster kept by `handle`; a NUL-terminated writable copy of the
            // address (the C API takes `char *` but does not keep it).
            let ret = unsafe {
                crate::sys::librados::rados_blocklist_add(
                    handle.raw,
                    c_addr.as_mut_ptr().cast::<c_char>(),
                    expire_seconds,
                )
            };
            check(ret, "rados_blocklist_add", || target).map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_separated_lists() {
        assert_eq!(nul_list(b"client.1\0client.22\0"), ["client.1", "client.22"]);
        assert!(nul_list(b"").is_empty());
        let l =
            Locker { client: "client.4123".into(), cookie: "auto 1".into(), address: "1.2.3.4:0/5".into() };
        assert_eq!(l.global_id(), Some(4123));
    }
}
