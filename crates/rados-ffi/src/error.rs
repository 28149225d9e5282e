//! The one error type of the crate: what failed (operation), on what (cluster, pool,
//! object or image) and the negative errno librados or librbd returned.

use std::fmt;
use std::time::Duration;

/// Result of every fallible call in this crate.
pub type Result<T, E = RadosError> = std::result::Result<T, E>;

/// An error from librados / librbd, with the context needed to act on it.
#[derive(Debug, thiserror::Error)]
pub enum RadosError {
    /// A call returned a negative errno. `errno` is stored positive (`ENOENT`, not `-ENOENT`).
    #[error("{op} {target}: {}", Errno(*errno))]
    Call {
        /// The librados/librbd operation, e.g. `"rados_aio_read"` or `"omap_get_vals"`.
        op: &'static str,
        /// What it acted on: `cluster site-b`, `pool mirror/ns`, `object mirror/rbd_mirroring`.
        target: String,
        /// Positive errno.
        errno: i32,
    },
    /// Connecting was refused by cephx: wrong key, unknown client or missing caps.
    #[error(
        "connect to {target}: authentication failed: {} \
         (check the key or keyring of this client id and its mon caps)",
        Errno(*errno)
    )]
    Authentication {
        /// `cluster <name>` and the client name.
        target: String,
        /// Positive errno (EACCES or EPERM).
        errno: i32,
    },
    /// No monitor answered in time.
    #[error(
        "connect to {target}: no monitor answered within {}s (mon_host {mon_host}); \
         is the cluster up and reachable?",
        timeout.as_secs_f32()
    )]
    ConnectTimeout {
        /// `cluster <name>` and the client name.
        target: String,
        /// The monitors tried, as configured.
        mon_host: String,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// A monitor command failed; `status` is the monitor's own message (`outs`).
    #[error("mon command '{prefix}' on {target}: {}: {status}", Errno(*errno))]
    MonCommand {
        /// The command's `prefix`.
        prefix: String,
        /// `cluster <name>`.
        target: String,
        /// Positive errno.
        errno: i32,
        /// The status text the monitor returned.
        status: String,
    },
    /// A string handed to C contained a NUL byte.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// Which argument.
        what: &'static str,
        /// The offending value (lossy).
        value: String,
    },
    /// A reply from the cluster could not be understood.
    #[error("{op} {target}: malformed reply: {detail}")]
    BadReply {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: String,
        /// What was wrong.
        detail: String,
    },
}

impl RadosError {
    /// The positive errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RadosError::Call { errno, .. }
            | RadosError::Authentication { errno, .. }
            | RadosError::MonCommand { errno, .. } => Some(*errno),
            RadosError::ConnectTimeout { .. } => Some(libc::ETIMEDOUT),
            RadosError::Nul { .. } => Some(libc::EINVAL),
            RadosError::BadReply { .. } => Some(libc::EIO),
        }
    }

    /// True for `ENOENT` (object, key, image or pool not found).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// Displays an errno as `ENOENT (No such file or directory)`.
pub(crate) struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EIO => "EIO",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EINVAL => "EINVAL",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::ERANGE => "ERANGE",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOTCONN => "ENOTCONN",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::ECANCELED => "ECANCELED",
            libc::EDQUOT => "EDQUOT",
            // Ceph reports a blocklisted client as ESHUTDOWN.
            libc::ESHUTDOWN => "ESHUTDOWN/EBLOCKLISTED",
            _ => "",
        };
        let text = std::io::Error::from_raw_os_error(self.0).to_string();
        // io::Error appends " (os error N)"; keep just the description.
        let text = text.split(" (os error").next().unwrap_or(&text);
        // What the OSDs mean by these (a write to a full pool, see `IoCtx::open`).
        let text = match self.0 {
            libc::EDQUOT => format!("{text}: pool full, its quota reached (ceph osd pool get-quota)"),
            libc::ENOSPC => format!("{text}: pool or cluster full (ceph df)"),
            libc::EPERM => format!("{text}: usually this client's caps (ceph auth get)"),
            _ => text.to_owned(),
        };
        if name.is_empty() {
            write!(f, "errno {} ({text})", self.0)
        } else {
            write!(f, "{name} ({text})")
        }
    }
}

/// Turns a librados/librbd return code into a `Result`, keeping non-negative values.
pub(crate) fn check(ret: i32, op: &'static str, target: impl FnOnce() -> String) -> Result<i32> {
    if ret < 0 {
        Err(RadosError::Call { op, target: target(), errno: -ret })
    } else {
        Ok(ret)
    }
}

/// A C string from a Rust one, refusing interior NULs.
pub(crate) fn cstring(what: &'static str, value: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(value).map_err(|_| RadosError::Nul { what, value: value.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_display_names_the_constant() {
        let e = RadosError::Call {
            op: "rados_aio_read",
            target: "object mirror/foo".into(),
            errno: libc::ENOENT,
        };
        assert_eq!(e.to_string(), "rados_aio_read object mirror/foo: ENOENT (No such file or directory)");
        assert!(e.is_not_found());
    }

    #[test]
    fn a_full_pool_is_named() {
        let e = RadosError::Call {
            op: "write_op_operate",
            target: "object mirror/x".into(),
            errno: libc::EDQUOT,
        };
        assert_eq!(
            e.to_string(),
            "write_op_operate object mirror/x: EDQUOT (Disk quota exceeded: pool full, its quota \
             reached (ceph osd pool get-quota))"
        );
        assert!(Errno(libc::ENOSPC).to_string().contains("pool or cluster full"));
        assert!(Errno(libc::EPERM)
            .to_string()
            .starts_with("EPERM (Operation not permitted: usually this client's caps"));
    }

    #[test]
    fn check_keeps_positive_values() {
        assert_eq!(check(7, "x", String::new).unwrap(), 7);
        assert_eq!(check(-5, "x", || "y".into()).unwrap_err().errno(), Some(5));
    }

    #[test]
    fn cstring_refuses_nul() {
        assert!(matches!(cstring("oid", "a\0b"), Err(RadosError::Nul { .. })));
    }
}
