//! The replayer's one error type: what failed, on which image, and why; and its bounded
//! [`ErrorKind`], which statuses, the registry and metrics carry.

use journal_reader::tail::TailError;
use rados_ffi::RadosError;
use rbd_types::encoding::DecodeError;

/// Why an image replayer stopped or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A RADOS / librbd call failed (the error names the call and its target).
    #[error(transparent)]
    Rados(#[from] RadosError),
    /// Reading the remote journal failed (corrupt entry, client unregistered, ...).
    #[error(transparent)]
    Journal(#[from] TailError),
    /// Bytes from the cluster did not decode.
    #[error("decoding {what}: {source}")]
    Decode {
        /// What was being decoded, with its object.
        what: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// Something this build does not replay yet.
    #[error("{0}")]
    Unsupported(String),
    /// A snapshot or image that replay relies on is gone.
    #[error("{0}")]
    NotFound(String),
    /// The local image or the primary is in a state that forbids replay (a local image of
    /// the same name that is not this one, another mirroring mode, a split brain, ...).
    #[error("{0}")]
    Conflict(String),
    /// The pool's peer records do not say who we are to the peer.
    #[error("{0}")]
    Peer(String),
    /// Data from the cluster is outside what Ceph writes (layout, extents, journal clients).
    #[error("{0}")]
    Invalid(String),
    /// The step was stopped by a shutdown before it completed.
    #[error("{0}")]
    Stopped(String),
    /// A race with another writer that a later attempt resolves.
    #[error("{0}")]
    Busy(String),
    /// A broken internal invariant (a bug): the image stops, nothing is committed past it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The kind of a [`ReplayError`]: a small, fixed set, fit for a metric label or a status
/// field (the error's text says the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// [`ReplayError::Rados`].
    Rados,
    /// [`ReplayError::Journal`].
    Journal,
    /// [`ReplayError::Decode`].
    Decode,
    /// [`ReplayError::Unsupported`].
    Unsupported,
    /// [`ReplayError::NotFound`].
    NotFound,
    /// [`ReplayError::Conflict`].
    Conflict,
    /// [`ReplayError::Peer`].
    Peer,
    /// [`ReplayError::Invalid`].
    Invalid,
    /// [`ReplayError::Stopped`].
    Stopped,
    /// [`ReplayError::Busy`].
    Busy,
    /// [`ReplayError::Internal`].
    Internal,
}

impl ErrorKind {
    /// Every kind, in order.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Rados,
        ErrorKind::Journal,
        ErrorKind::Decode,
        ErrorKind::Unsupported,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Peer,
        ErrorKind::Invalid,
        ErrorKind::Stopped,
        ErrorKind::Busy,
        ErrorKind::Internal,
    ];

    /// The label value (`rados`, `journal`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Rados => "rados",
            ErrorKind::Journal => "journal",
            ErrorKind::Decode => "decode",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Peer => "peer",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Stopped => "stopped",
            ErrorKind::Busy => "busy",
            ErrorKind::Internal => "internal",
        }
    }
}

impl ReplayError {
    /// A decode error with its context.
    pub fn decode(what: impl Into<String>, source: DecodeError) -> Self {
        ReplayError::Decode { what: what.into(), source }
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReplayError::Rados(_) => ErrorKind::Rados,
            ReplayError::Journal(_) => ErrorKind::Journal,
            ReplayError::Decode { .. } => ErrorKind::Decode,
            ReplayError::Unsupported(_) => ErrorKind::Unsupported,
            ReplayError::NotFound(_) => ErrorKind::NotFound,
            ReplayError::Conflict(_) => ErrorKind::Conflict,
            ReplayError::Peer(_) => ErrorKind::Peer,
            ReplayError::Invalid(_) => ErrorKind::Invalid,
            ReplayError::Stopped(_) => ErrorKind::Stopped,
            ReplayError::Busy(_) => ErrorKind::Busy,
            ReplayError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Result of the replayer's fallible steps.
pub type Result<T, E = ReplayError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_labels() {
        let labels: std::collections::BTreeSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), ErrorKind::ALL.len());
        assert_eq!(ReplayError::NotFound("x".into()).kind(), ErrorKind::NotFound);
        assert_eq!(ReplayError::Internal("x".into()).to_string(), "internal error: x");
    }
}
