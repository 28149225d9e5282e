//! librbd through its public C API: read-only images, snapshots, diffs, and the pool's and
//! images' mirroring configuration and status.
//!
//! Public librbd refuses writes to non-primary images (ceph-formats.md §8.2), so nothing
//! here writes image data: the replayers write data objects through [`crate::IoCtx`].

mod admin;
mod image;
mod mirror;

pub use admin::*;
pub use image::*;
pub use mirror::*;
