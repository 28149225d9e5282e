//! Pool-level mirroring configuration through public librbd: mode, mirror uuid, site name,
//! peers and their credentials (what `rbd mirror pool info` shows), and the pool's RBD
//! namespaces (each has a mirroring configuration of its own).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::completion::blocking;
use crate::error::{cstring, RadosError, Result};
use crate::rbd::c_values;
use crate::rbd::image::sized_string;
use crate::sys::librbd;
use crate::{IoCtx, Rados};
use rbd_types::{MirrorMode, MirrorPeerDirection};

/// One peer site of a pool, as `rbd mirror pool info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorPeerSite {
    /// The peer record's uuid (local to this pool).
    pub uuid: String,
    /// Replication direction.
    pub direction: MirrorPeerDirection,
    /// The peer's site name, also the cluster name used to reach it.
    pub site_name: String,
    /// The peer pool's mirror uuid, once a daemon has seen it ("" before).
    pub mirror_uuid: String,
    /// The client the daemon authenticates as at the peer (`client.rbd-mirror-peer`).
    pub client_name: String,
    /// When the peer's daemon last pinged this pool.
    pub last_seen: Option<SystemTime>,
}

/// Monitor addresses and key stored for a peer (config-key `rbd/mirror/peer/<uuid>`).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PeerAttributes {
    /// `mon_host` attribute, if set.
    pub mon_host: Option<String>,
    /// `key` attribute, if set. Never printed by `Debug`.
    pub key: Option<String>,
    /// Every other attribute.
    pub other: BTreeMap<String, String>,
}

impl std::fmt::Debug for PeerAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAttributes")
            .field("mon_host", &self.mon_host)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("other", &self.other)
            .finish()
    }
}

fn pool_target(io: &IoCtx) -> String {
    format!("pool {}", io.pool_name())
}

/// Splits a buffer of NUL-terminated strings.
fn split_nul(buf: &[c_char], count: usize) -> Vec<String> {
    let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
    bytes.split(|&b| b == 0).take(count).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// The NUL-terminated names at the start of a zero-filled buffer, up to the first empty one
/// (an unterminated tail is dropped).
fn packed_names(buf: &[c_char]) -> Vec<String> {
    let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    // The piece after the last NUL is not a complete name.
    parts.pop();
    parts.into_iter().take_while(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

impl IoCtx {
    /// The pool's mirroring mode.
    pub async fn mirror_mode(&self) -> Result<MirrorMode> {
        let h = self.handle.clone();
        let target = pool_target(self);
        blocking(move || {
            let mut mode: librbd::rbd_mirror_mode_t = 0;
            // SAFETY: live ioctx (Arc held); valid out-pointer.
            let ret = unsafe { librbd::rbd_mirror_mode_get(h.raw, &mut mode) };
            crate::error::check(ret, "rbd_mirror_mode_get", || target.clone())?;
            c_values::mirror_mode(mode, "rbd_mirror_mode_get", &target)
        })
        .await
    }

    /// The pool's mirror uuid ("" when mirroring is disabled).
    pub async fn mirror_uuid(&self) -> Result<String> {
        let h = self.handle.clone();
        let target = pool_target(self);
        blocking(move || {
            sized_string("rbd_mirror_uuid_get", &target, |buf, len| {
                // SAFETY: live ioctx; `buf` has `*len` bytes.
                unsafe { librbd::rbd_mirror_uuid_get(h.raw, buf, len) }
            })
        })
        .await
    }

    /// The pool's peer sites.
    pub async fn mirror_peer_sites(&self) -> Result<Vec<MirrorPeerSite>> {
        let h = self.handle.clone();
        let target = pool_target(self);
        blocking(move || {
            let mut max: c_int = 8;
            for _ in 0..8 {
                let zeroed = librbd::rbd_mirror_peer_site_t {
                    uuid: std::ptr::null_mut(),
                    direction: 0,
                    site_name: std::ptr::null_mut(),
                    mirror_uuid: std::ptr::null_mut(),
                    client_name: std::ptr::null_mut(),
                    last_seen: 0,
                };
                let mut peers = vec![zeroed; max.max(1) as usize];
                let mut n = peers.len() as c_int;
                // SAFETY: live ioctx; `peers` has `n` entries.
                let ret = unsafe { librbd::rbd_mirror_peer_site_list(h.raw, peers.as_mut_ptr(), &mut n) };
                if ret == -libc::ERANGE {
                    max = n.max(max * 2);
                    continue;
                }
                crate::error::check(ret, "rbd_mirror_peer_site_list", || target.clone())?;
                let n = n.clamp(0, peers.len() as c_int);
                let s = |p: *mut c_char| {
                    if p.is_null() {
                        String::new()
                    } else {
                        // SAFETY: librbd filled NUL-terminated strings, valid until cleanup.
                        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                    }
                };
                let out = peers
                    .iter()
                    .take(n as usize)
                    .map(|p| {
                        Ok(MirrorPeerSite {
                            uuid: s(p.uuid),
                            direction: c_values::peer_direction(
                                p.direction,
                                "rbd_mirror_peer_site_list",
                                &target,
                            )?,
                            site_name: s(p.site_name),
                            mirror_uuid: s(p.mirror_uuid),
                            client_name: s(p.client_name),
                            last_seen: (p.last_seen > 0)
                                .then(|| UNIX_EPOCH + Duration::from_secs(p.last_seen as u64)),
                        })
                    })
                    .collect::<Result<Vec<_>>>();
                // SAFETY: frees the strings librbd allocated for the `n` filled entries.
                unsafe { librbd::rbd_mirror_peer_site_list_cleanup(peers.as_mut_ptr(), n) };
                return out;
            }
            Err(RadosError::BadReply {
                op: "rbd_mirror_peer_site_list",
                target,
                detail: "peer count kept growing".into(),
            })
        })
        .await
    }

    /// The RBD namespaces of the pool (`rbd namespace ls`), not counting the default one;
    /// empty for a pool without any (or without RBD). Whatever namespace this I/O context is
    /// on, librbd lists the pool's.
    pub async fn rbd_namespaces(&self) -> Result<Vec<String>> {
        let h = self.handle.clone();
        let target = pool_target(self);
        blocking(move || {
            let mut len: usize = 256;
            for _ in 0..10 {
                let mut buf = vec![0 as c_char; len.max(1)];
                let mut want = buf.len();
                // SAFETY: live ioctx; `buf` has `want` bytes and librbd writes at most that.
                let ret = unsafe { librbd::rbd_namespace_list(h.raw, buf.as_mut_ptr(), &mut want) };
                if ret == -libc::ERANGE {
                    len = want.max(len * 2);
                    continue;
                }
                crate::error::check(ret, "rbd_namespace_list", || target.clone())?;
                // NUL-terminated names, then the zeroes the buffer was filled with (a name is
                // never empty).
                return Ok(packed_names(&buf));
            }
            Err(RadosError::BadReply {
                op: "rbd_namespace_list",
                target,
                detail: "buffer size kept growing".into(),
            })
        })
        .await
    }

    /// The stored attributes of a peer (`mon_host`, `key`): how to reach it.
    pub async fn mirror_peer_attributes(&self, peer_uuid: &str) -> Result<PeerAttributes> {
        let h = self.handle.clone();
        let target = format!("{} peer {peer_uuid}", pool_target(self));
        let c_uuid = cstring("peer uuid", peer_uuid)?;
        blocking(move || {
            let (mut klen, mut vlen) = (1024usize, 4096usize);
            for _ in 0..8 {
                let mut keys = vec![0 as c_char; klen];
                let mut vals = vec![0 as c_char; vlen];
                let mut count: usize = 0;
                let (mut kl, mut vl) = (klen, vlen);
                // SAFETY: live ioctx; buffers of the stated sizes.
                let ret = unsafe {
                    librbd::rbd_mirror_peer_site_get_attributes(
                        h.raw,
                        c_uuid.as_ptr(),
                        keys.as_mut_ptr(),
                        &mut kl,
                        vals.as_mut_ptr(),
                        &mut vl,
                        &mut count,
                    )
                };
                if ret == -libc::ERANGE {
                    klen = kl.max(klen * 2);
                    vlen = vl.max(vlen * 2);
                    continue;
                }
                if ret == -libc::ENOENT {
                    return Ok(PeerAttributes::default());
                }
                crate::error::check(ret, "rbd_mirror_peer_site_get_attributes", || target.clone())?;
                let ks = split_nul(keys.get(..kl.min(keys.len())).unwrap_or_default(), count);
                let vs = split_nul(vals.get(..vl.min(vals.len())).unwrap_or_default(), count);
                let mut attrs = PeerAttributes::default();
                for (k, v) in ks.into_iter().zip(vs) {
                    match k.as_str() {
                        "mon_host" => attrs.mon_host = Some(v),
                        "key" => attrs.key = Some(v),
                        _ => {
                            attrs.other.insert(k, v);
                        }
                    }
                }
                return Ok(attrs);
            }
            Err(RadosError::BadReply {
                op: "rbd_mirror_peer_site_get_attributes",
                target,
                detail: "size kept growing".into(),
            })
        })
        .await
    }
}

impl Rados {
    /// This cluster's mirroring site name (`rbd mirror pool info` "Site Name"); defaults to
    /// the cluster fsid when never set.
    pub async fn mirror_site_name(&self) -> Result<String> {
        let h = self.handle.clone();
        let target = format!("cluster {}", self.cluster_name());
        blocking(move || {
            sized_string("rbd_mirror_site_name_get", &target, |buf, len| {
                // SAFETY: connected cluster (Arc held); `buf` has `*len` bytes.
                unsafe { librbd::rbd_mirror_site_name_get(h.raw, buf, len) }
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_nul_takes_count_strings() {
        let buf: Vec<c_char> = b"mon_host\0key\0".iter().map(|&b| b as c_char).collect();
        assert_eq!(split_nul(&buf, 2), vec!["mon_host", "key"]);
        assert_eq!(split_nul(&buf, 1), vec!["mon_host"]);
    }

    #[test]
    fn packed_names_stop_at_the_first_empty_one() {
        let buf: Vec<c_char> = b"ns1\0ns2\0\0\0".iter().map(|&b| b as c_char).collect();
        assert_eq!(packed_names(&buf), vec!["ns1", "ns2"]);
        let cut: Vec<c_char> = b"ns1\0ns".iter().map(|&b| b as c_char).collect();
        assert_eq!(packed_names(&cut), vec!["ns1"]);
        assert!(packed_names(&[0, 0]).is_empty());
        assert!(packed_names(&[]).is_empty());
    }
}
