//! Registration in the mgr's service map (`ceph service dump`), as the stock rbd-mirror
//! daemon does it (ceph-formats.md §5.8): `rados_service_register` once per connection, then
//! `rados_service_update_status` whenever the daemon's status changes.
//!
//! Once registered, librados' MgrClient keeps beaconing the registration for the lifetime of
//! the cluster handle; the mgr drops the daemon from the map some time after the handle is
//! shut down (`mgr_service_beacon_grace`).

use crate::completion::blocking;
use crate::error::{check, RadosError, Result};
use crate::sys::librados;
use crate::Rados;

/// Encodes a string map the way librados' service calls take it: `key\0value\0...` and an
/// empty key (one more NUL) at the end. Keys must be non-empty (an empty key ends the list)
/// and nothing may contain a NUL.
fn encode_dict(op: &'static str, target: &str, pairs: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() + 1);
    for (k, v) in pairs {
        if k.is_empty() {
            return Err(RadosError::Call {
                op,
                target: format!("{target} (empty key in the key/value list)"),
                errno: libc::EINVAL,
            });
        }
        for (what, s) in [("service map key", k), ("service map value", v)] {
            if s.as_bytes().contains(&0) {
                return Err(RadosError::Nul { what, value: (*s).to_owned() });
            }
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
    }
    out.push(0);
    Ok(out)
}

impl Rados {
    /// Registers this connection as daemon `daemon` of service `service` in the mgr's service
    /// map, with static `metadata` (`rados_service_register`). Allowed once per connection
    /// (librados answers `EEXIST` after that); reserved service names (`osd`, `mon`, `mds`,
    /// `mgr`) are refused with `EINVAL`. The daemon appears in `ceph service dump` once the
    /// mgr has received its first report.
    pub async fn service_register(
        &self,
        service: &str,
        daemon: &str,
        metadata: &[(&str, &str)],
    ) -> Result<()> {
        let target = format!("cluster {} service {service}.{daemon}", self.handle.name);
        let c_service = crate::error::cstring("service name", service)?;
        let c_daemon = crate::error::cstring("daemon name", daemon)?;
        let dict = encode_dict("rados_service_register", &target, metadata)?;
        let handle = self.handle.clone();
        blocking(move || {
            // SAFETY: connected cluster (Arc held); valid C strings; `dict` is a key/value
            // list terminated by an empty key, which librados parses and copies.
            let ret = unsafe {
                librados::rados_service_register(
                    handle.raw,
                    c_service.as_ptr(),
                    c_daemon.as_ptr(),
                    dict.as_ptr().cast(),
                )
            };
            check(ret, "rados_service_register", || target).map(drop)
        })
        .await
    }

    /// Replaces this daemon's mutable status in the service map (`rados_service_update_status`;
    /// the stock rbd-mirror sends one key, `json`). Needs [`Rados::service_register`] first.
    pub async fn service_update_status(&self, status: &[(&str, &str)]) -> Result<()> {
        let target = format!("cluster {} service status", self.handle.name);
        let dict = encode_dict("rados_service_update_status", &target, status)?;
        let handle = self.handle.clone();
        blocking(move || {
            // SAFETY: connected cluster (Arc held); `dict` is a key/value list terminated by
            // an empty key, which librados parses and copies.
            let ret = unsafe { librados::rados_service_update_status(handle.raw, dict.as_ptr().cast()) };
            check(ret, "rados_service_update_status", || target).map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicts_are_nul_separated_and_terminated() {
        let d = encode_dict("op", "t", &[("foo", "bar"), ("this", "that")]).unwrap();
        assert_eq!(d, b"foo\0bar\0this\0that\0\0");
        assert_eq!(encode_dict("op", "t", &[]).unwrap(), b"\0");
        assert_eq!(encode_dict("op", "t", &[("k", "")]).unwrap(), b"k\0\0\0");
        assert_eq!(encode_dict("op", "t", &[("", "v")]).unwrap_err().errno(), Some(libc::EINVAL));
        assert!(matches!(encode_dict("op", "t", &[("k", "a\0b")]), Err(RadosError::Nul { .. })));
    }
}
