// rados_shim.cc: the few librados C++ API calls rados-ffi needs where the C API copies data
// in a way that costs memory or CPU on the replay paths. Everything else goes through the C
// API (src/sys). Each function is a thin C-ABI wrapper: no exception crosses it, handles are
// the C API's (rados_ioctx_t, rados_completion_t) or the opaque types defined here.
//
// Why:
//  - rados_write_op_write() copies the caller's bytes with bufferlist::append(const char*),
//    which rounds every copy up to a page plus a header: 8 KiB held for each 4 KiB write.
//    Here a write's bytes are copied once into a buffer of exactly their size.
//  - rados_aio_read() receives into librados' own buffer, then copies into the caller's, and
//    a write copies again. Here a read keeps librados' received buffer (rmrs_buffer) and a
//    write op can send parts of it as they are: no copy of the data in this process.
#include <rados/librados.hpp>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <set>
#include <map>
#include <string>
#include <sys/uio.h>

namespace {

// A write op and the first error met while building it (reported by operate).
struct WriteOp {
  librados::ObjectWriteOperation op;
  int error = 0;
};

// The C++ API takes completions as librados::AioCompletion, a wrapper of the same
// AioCompletionImpl a rados_completion_t points to, whose destructor releases it. The caller
// (Rust) owns the C handle and releases it itself, so the wrapper is built in place and never
// destroyed: it is one pointer, and the C++ calls below only read that pointer.
struct BorrowedCompletion {
  alignas(librados::AioCompletion) unsigned char storage[sizeof(librados::AioCompletion)];
  librados::AioCompletion *get(rados_completion_t c) {
    return ::new (storage) librados::AioCompletion(
        reinterpret_cast<librados::AioCompletionImpl *>(c));
  }
};

// bufferlist lengths are 32-bit: a larger length fails the op instead of wrapping.
unsigned len32(size_t len) {
  if (len > std::numeric_limits<unsigned>::max()) throw std::length_error("longer than 4 GiB");
  return static_cast<unsigned>(len);
}

template <typename F> void build(WriteOp *w, F f) noexcept {
  if (w->error != 0) return;
  try {
    f(w->op);
  } catch (const std::bad_alloc &) {
    w->error = -ENOMEM;
  } catch (...) {
    w->error = -EINVAL;
  }
}

}  // namespace

struct rmrs_write_op : WriteOp {};
struct rmrs_buffer {
  ceph::bufferlist bl;
};
struct rmrs_part {  // see rmrs_write_op_write_parts
  const rmrs_buffer *buffer;
  const char *data;
  size_t from;
  size_t len;
};

extern "C" {

rmrs_write_op *rmrs_write_op_new() noexcept {
  try {
    return new rmrs_write_op();
  } catch (...) {
    return nullptr;
  }
}

void rmrs_write_op_free(rmrs_write_op *w) noexcept { delete w; }

void rmrs_write_op_create(rmrs_write_op *w, int exclusive) noexcept {
  build(w, [&](auto &op) { op.create(exclusive != 0); });
}

// One write at `offset` of the concatenated parts: a part with a buffer is bytes
// [from, from + len) of it, shared (librados counts the reference); a part without is `len`
// bytes at `data`, copied. Consecutive copied parts share one buffer of exactly their size.
void rmrs_write_op_write_parts(rmrs_write_op *w, uint64_t offset, const rmrs_part *parts,
                               size_t count) noexcept {
  build(w, [&](auto &op) {
    ceph::bufferlist bl;
    size_t i = 0;
    while (i < count) {
      if (parts[i].buffer != nullptr) {
        const ceph::bufferlist &src = parts[i].buffer->bl;
        if (parts[i].from > src.length() || parts[i].len > src.length() - parts[i].from) {
          throw std::out_of_range("write part outside its buffer");
        }
        ceph::bufferlist part;
        part.substr_of(src, len32(parts[i].from),
                       len32(parts[i].len));
        bl.claim_append(part);
        i++;
        continue;
      }
      size_t end = i, len = 0;
      while (end < count && parts[end].buffer == nullptr) len += parts[end++].len;
      if (len != 0) {
        ceph::bufferptr bp = ceph::buffer::create(len32(len));
        size_t at = 0;
        for (; i < end; i++) {
          if (parts[i].len != 0) std::memcpy(bp.c_str() + at, parts[i].data, parts[i].len);
          at += parts[i].len;
        }
        bl.push_back(std::move(bp));
      }
      i = end;
    }
    op.write(offset, bl);
  });
}

void rmrs_write_op_write_full(rmrs_write_op *w, const char *data, size_t len) noexcept {
  build(w, [&](auto &op) {
    ceph::bufferlist bl;
    bl.push_back(ceph::buffer::copy(data, len32(len)));
    op.write_full(bl);
  });
}

void rmrs_write_op_append(rmrs_write_op *w, const char *data, size_t len) noexcept {
  build(w, [&](auto &op) {
    ceph::bufferlist bl;
    bl.push_back(ceph::buffer::copy(data, len32(len)));
    op.append(bl);
  });
}

void rmrs_write_op_zero(rmrs_write_op *w, uint64_t offset, uint64_t len) noexcept {
  build(w, [&](auto &op) { op.zero(offset, len); });
}

void rmrs_write_op_truncate(rmrs_write_op *w, uint64_t size) noexcept {
  build(w, [&](auto &op) { op.truncate(size); });
}

void rmrs_write_op_remove(rmrs_write_op *w) noexcept {
  build(w, [&](auto &op) { op.remove(); });
}

void rmrs_write_op_assert_exists(rmrs_write_op *w) noexcept {
  build(w, [&](auto &op) { op.assert_exists(); });
}

void rmrs_write_op_omap_set(rmrs_write_op *w, const char *const *keys, const char *const *vals,
                            const size_t *lens, size_t count) noexcept {
  build(w, [&](auto &op) {
    std::map<std::string, ceph::bufferlist> m;
    for (size_t i = 0; i < count; i++) {
      ceph::bufferlist v;
      v.append(vals[i], len32(lens[i]));
      m[keys[i]] = std::move(v);
    }
    op.omap_set(m);
  });
}

void rmrs_write_op_omap_rm_keys(rmrs_write_op *w, const char *const *keys, size_t count) noexcept {
  build(w, [&](auto &op) {
    std::set<std::string> s;
    for (size_t i = 0; i < count; i++) s.insert(keys[i]);
    op.omap_rm_keys(s);
  });
}

void rmrs_write_op_omap_clear(rmrs_write_op *w) noexcept {
  build(w, [&](auto &op) { op.omap_clear(); });
}

void rmrs_write_op_setxattr(rmrs_write_op *w, const char *name, const char *value,
                            size_t len) noexcept {
  build(w, [&](auto &op) {
    ceph::bufferlist v;
    v.append(value, len32(len));
    op.setxattr(name, v);
  });
}

void rmrs_write_op_rmxattr(rmrs_write_op *w, const char *name) noexcept {
  build(w, [&](auto &op) { op.rmxattr(name); });
}

void rmrs_write_op_exec(rmrs_write_op *w, const char *cls, const char *method, const char *input,
                        size_t len) noexcept {
  build(w, [&](auto &op) {
    ceph::bufferlist in;
    in.append(input, len32(len));
    op.exec(cls, method, in);
  });
}

// Starts `w` on object `oid` with the ioctx's write snapshot context (as
// rados_aio_write_op_operate does). Returns the build error, if any, without starting.
int rmrs_aio_write_op_operate(rados_ioctx_t io, rados_completion_t c, const char *oid,
                              rmrs_write_op *w) noexcept {
  if (w->error != 0) return w->error;
  try {
    librados::IoCtx ioctx;
    librados::IoCtx::from_rados_ioctx_t(io, ioctx);
    BorrowedCompletion completion;
    return ioctx.aio_operate(oid, completion.get(c), &w->op);
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EINVAL;
  }
}

rmrs_buffer *rmrs_buffer_new() noexcept { return new (std::nothrow) rmrs_buffer(); }

void rmrs_buffer_free(rmrs_buffer *b) noexcept { delete b; }

size_t rmrs_buffer_length(const rmrs_buffer *b) noexcept { return b->bl.length(); }

// The buffer's bytes in one piece (joined first if librados received them in several);
// null if that fails. Valid until the buffer is freed or read into again.
const char *rmrs_buffer_data(rmrs_buffer *b) noexcept {
  try {
    if (b->bl.length() == 0) return "";
    return b->bl.c_str();
  } catch (...) {
    return nullptr;
  }
}

// Reads `len` bytes at `offset` of `oid` (at the ioctx's read snapshot) into `out`, replacing
// its content when the read completes. `out` must live until then.
int rmrs_aio_read(rados_ioctx_t io, rados_completion_t c, const char *oid, uint64_t offset,
                  size_t len, rmrs_buffer *out) noexcept {
  try {
    librados::IoCtx ioctx;
    librados::IoCtx::from_rados_ioctx_t(io, ioctx);
    BorrowedCompletion completion;
    out->bl.clear();
    return ioctx.aio_read(oid, completion.get(c), &out->bl, len, offset);
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EINVAL;
  }
}

}  // extern "C"
