//! librbd through its public C API: read-only images, snapshots, diffs, and the pool's and
//! images' mirroring configuration and status.
//!
//! Public librbd refuses writes to non-primary images (ceph-formats.md §8.2): the replayers
//! write a secondary image's data objects through [`crate::IoCtx`]. `admin` (create, remove,
//! read-write handles) is for primary images: sync points, tests and DR tooling.

mod admin;
mod c_values;
mod image;
mod mirror;

pub use admin::*;
pub use image::*;
pub use mirror::*;
