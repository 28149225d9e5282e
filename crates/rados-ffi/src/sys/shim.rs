//! Declarations of `cxx/rados_shim.cc` (hand-written: the shim is ours, a dozen C-ABI
//! functions over librados' C++ API). Handles other than the two opaque types are the C
//! API's, from [`super::librados`].

use std::os::raw::{c_char, c_int};

use super::librados::{rados_completion_t, rados_ioctx_t};

/// A `librados::ObjectWriteOperation` and the first error met while building it.
#[repr(C)]
pub struct rmrs_write_op {
    _opaque: [u8; 0],
}

/// A `ceph::bufferlist` filled by [`rmrs_aio_read`].
#[repr(C)]
pub struct rmrs_buffer {
    _opaque: [u8; 0],
}

/// One part of a write: bytes `from..from + len` of `buffer` (shared), or, when `buffer` is
/// null, `len` bytes at `data` (copied).
#[repr(C)]
pub struct rmrs_part {
    pub buffer: *const rmrs_buffer,
    pub data: *const c_char,
    pub from: usize,
    pub len: usize,
}

extern "C" {
    pub fn rmrs_write_op_new() -> *mut rmrs_write_op;
    pub fn rmrs_write_op_free(w: *mut rmrs_write_op);
    pub fn rmrs_write_op_create(w: *mut rmrs_write_op, exclusive: c_int);
    pub fn rmrs_write_op_write_parts(
        w: *mut rmrs_write_op,
        offset: u64,
        parts: *const rmrs_part,
        count: usize,
    );
    pub fn rmrs_write_op_write_full(w: *mut rmrs_write_op, data: *const c_char, len: usize);
    pub fn rmrs_write_op_append(w: *mut rmrs_write_op, data: *const c_char, len: usize);
    pub fn rmrs_write_op_zero(w: *mut rmrs_write_op, offset: u64, len: u64);
    pub fn rmrs_write_op_truncate(w: *mut rmrs_write_op, size: u64);
    pub fn rmrs_write_op_remove(w: *mut rmrs_write_op);
    pub fn rmrs_write_op_assert_exists(w: *mut rmrs_write_op);
    pub fn rmrs_write_op_omap_set(
        w: *mut rmrs_write_op,
        keys: *const *const c_char,
        vals: *const *const c_char,
        lens: *const usize,
        count: usize,
    );
    pub fn rmrs_write_op_omap_rm_keys(w: *mut rmrs_write_op, keys: *const *const c_char, count: usize);
    pub fn rmrs_write_op_omap_clear(w: *mut rmrs_write_op);
    pub fn rmrs_write_op_setxattr(
        w: *mut rmrs_write_op,
        name: *const c_char,
        value: *const c_char,
        len: usize,
    );
    pub fn rmrs_write_op_rmxattr(w: *mut rmrs_write_op, name: *const c_char);
    pub fn rmrs_write_op_exec(
        w: *mut rmrs_write_op,
        cls: *const c_char,
        method: *const c_char,
        input: *const c_char,
        len: usize,
    );
    pub fn rmrs_aio_write_op_operate(
        io: rados_ioctx_t,
        c: rados_completion_t,
        oid: *const c_char,
        w: *mut rmrs_write_op,
    ) -> c_int;

    pub fn rmrs_buffer_new() -> *mut rmrs_buffer;
    pub fn rmrs_buffer_free(b: *mut rmrs_buffer);
    pub fn rmrs_buffer_length(b: *const rmrs_buffer) -> usize;
    pub fn rmrs_buffer_data(b: *mut rmrs_buffer) -> *const c_char;
    pub fn rmrs_aio_read(
        io: rados_ioctx_t,
        c: rados_completion_t,
        oid: *const c_char,
        offset: u64,
        len: usize,
        out: *mut rmrs_buffer,
    ) -> c_int;
}
