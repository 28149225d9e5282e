//! `DrError`: what stops a DR command for a pool or an image.

use rados_ffi::RadosError;

/// Why a DR operation failed, with what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum DrError {
    /// A librados / librbd call failed.
    #[error(transparent)]
    Rados(#[from] RadosError),
    /// A cls or replayer helper failed.
    #[error(transparent)]
    Replay(#[from] image_replayer::ReplayError),
    /// The primary's journal could not be read.
    #[error("journal of {image}: {source}")]
    Journal {
        /// `pool/image`.
        image: String,
        /// What failed.
        #[source]
        source: journal_reader::tail::TailError,
    },
    /// The pool has no mirroring, or no peer this site receives from.
    #[error("pool {pool}: {reason}")]
    Pool {
        /// Pool name.
        pool: String,
        /// What is missing.
        reason: String,
    },
    /// The image's roles or state forbid the step.
    #[error("{image}: {reason}")]
    Image {
        /// `pool/image` (or the global id when there is no name).
        image: String,
        /// What was found.
        reason: String,
    },
    /// Waiting for the secondary to catch up took too long.
    #[error("{image}: not caught up after {waited_secs} s: {last}")]
    Timeout {
        /// `pool/image`.
        image: String,
        /// Seconds waited.
        waited_secs: u64,
        /// The last observation.
        last: String,
    },
}

/// Results of this crate.
pub type Result<T, E = DrError> = std::result::Result<T, E>;
