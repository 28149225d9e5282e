#!/usr/bin/python3
"""Image IO the rbd CLI cannot issue, for tests and fixture capture.

Uses librbd through Debian's python3-rbd (a dependency of ceph-common) and, for write-same
and compare-and-write (absent from Pacific's python binding), librbd's C API via ctypes.

usage: rbdio.py CLUSTER CONF POOL IMAGE OP [ARGS...]
  write OFFSET LENGTH SEED      pattern bytes (i * 7 + SEED) & 0xff
  discard OFFSET LENGTH
  write-zeroes OFFSET LENGTH
  write-same OFFSET LENGTH      a 512-byte pattern (256 x 0xab, 256 x 0xcd) repeated
  compare-and-write OFFSET      compares 512 bytes with what is there, writes a pattern
  resize SIZE
"""
import ctypes
import os
import sys

import rados
import rbd

UNIT = b"\xab" * 256 + b"\xcd" * 256


def pattern(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


class CImage:
    """An image opened through librbd's C API (for calls the python binding lacks)."""

    def __init__(self, cluster, conf, pool, image, client="client.admin"):
        self.lrados = ctypes.CDLL("librados.so.2")
        self.lrbd = ctypes.CDLL("librbd.so.1")
        self.lrbd.rbd_writesame.restype = ctypes.c_ssize_t
        self.lrbd.rbd_compare_and_write.restype = ctypes.c_ssize_t
        self.cluster, self.io, self.img = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        self._ok(self.lrados.rados_create2(ctypes.byref(self.cluster), cluster.encode(), client.encode(), ctypes.c_uint64(0)), "rados_create2")
        self._ok(self.lrados.rados_conf_read_file(self.cluster, conf.encode()), "rados_conf_read_file")
        self._ok(self.lrados.rados_connect(self.cluster), "rados_connect")
        self._ok(self.lrados.rados_ioctx_create(self.cluster, pool.encode(), ctypes.byref(self.io)), "rados_ioctx_create")
        self._ok(self.lrbd.rbd_open(self.io, image.encode(), ctypes.byref(self.img), None), "rbd_open")

    @staticmethod
    def _ok(r, what):
        if r < 0:
            sys.exit(f"rbdio: {what} failed: {os.strerror(-r)}")

    def write_same(self, offset, length, unit=UNIT):
        r = self.lrbd.rbd_writesame(self.img, ctypes.c_uint64(offset), ctypes.c_size_t(length), unit, ctypes.c_size_t(len(unit)), 0)
        self._ok(r, "rbd_writesame")

    def compare_and_write(self, offset, cmp, data):
        mismatch = ctypes.c_uint64(0)
        r = self.lrbd.rbd_compare_and_write(self.img, ctypes.c_uint64(offset), ctypes.c_size_t(len(cmp)), cmp, data, ctypes.byref(mismatch), 0)
        self._ok(r, "rbd_compare_and_write")

    def close(self):
        self.lrbd.rbd_close(self.img)
        self.lrados.rados_ioctx_destroy(self.io)
        self.lrados.rados_shutdown(self.cluster)


def main(argv):
    if len(argv) < 6:
        sys.exit(__doc__)
    cluster, conf, pool, image, op, args = argv[1], argv[2], argv[3], argv[4], argv[5], [int(a, 0) for a in argv[6:]]
    if op in ("write-same", "compare-and-write"):
        img = CImage(cluster, conf, pool, image)
        try:
            if op == "write-same":
                img.write_same(args[0], args[1])
            else:
                with rados.Rados(conffile=conf, name="client.admin", clustername=cluster) as c, c.open_ioctx(pool) as io:
                    with rbd.Image(io, image, read_only=True) as ro:
                        current = ro.read(args[0], 512)
                img.compare_and_write(args[0], current, pattern(512, 99))
        finally:
            img.close()
        return
    with rados.Rados(conffile=conf, name="client.admin", clustername=cluster) as c, c.open_ioctx(pool) as io:
        with rbd.Image(io, image) as img:
            if op == "write":
                img.write(pattern(args[1], args[2]), args[0])
            elif op == "discard":
                img.discard(args[0], args[1])
            elif op == "write-zeroes":
                img.write_zeroes(args[0], args[1])
            elif op == "resize":
                img.resize(args[0])
            else:
                sys.exit(f"rbdio: unknown op {op}\n{__doc__}")
            img.flush()


if __name__ == "__main__":
    main(sys.argv)
