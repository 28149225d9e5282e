//! The replayer's one error type: what failed, on which image, and why.

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
    /// The image is not in a state replay can proceed from.
    #[error("{0}")]
    State(String),
}

impl ReplayError {
    /// A decode error with its context.
    pub fn decode(what: impl Into<String>, source: DecodeError) -> Self {
        ReplayError::Decode { what: what.into(), source }
    }
}

/// Result of the replayer's fallible steps.
pub type Result<T, E = ReplayError> = std::result::Result<T, E>;
