#!/usr/bin/python3
"""Live replication lag of a journal-mode image, for benches/live_lag.sh.

usage: live_lag.py CONF_A CONF_B POOL IMAGE SECS RATE EVERY SAMPLES

A writer on site-a (cluster "site-a", CONF_A) issues RATE 4 KiB writes a second, paced to a
schedule, for SECS seconds, to POOL/IMAGE (the primary; journaling, mirrored in journal mode),
at most LAG_INFLIGHT (env, 128) at a time. Every EVERY-th write is a sentinel: block 0
rewritten with MAGIC, a counter k = 1, 2, ... and the time it was issued; the other writes go
to random 4 KiB blocks after block 0. A sentinel's acknowledged time is when librbd completed
its write (the aio completion callback).

A reader on site-b (cluster "site-b", CONF_B) opens the non-primary copy read-only (to find its
data objects' prefix) and reads the first 24 bytes of block 0 from its first data object with
librados in a loop, every POLL_MS (env LAG_POLL_MS, 1) milliseconds, in a process of its own;
the first time it reads a counter >= k, sentinel k is readable on site-b (a later sentinel
overwrites an earlier one: seeing k+2 means k's write has landed too).

lag(k) = readable(k) - acknowledged(k), in milliseconds. Writes SAMPLES (one line per sentinel:
k, acknowledged time, readable time, lag ms; "-" for never seen) and prints one summary line
of key=value pairs: writes issued and failed, the achieved write rate, the primary's write
latency p50/p99, sentinels overtaken, seen and missing, lag p50/p99/max (nearest rank), the
number of reads. After the writer stops, it reads block 0 of site-a: the primary's final
sentinel, the last one the replica can show (two sentinels in flight at once may land in either
order, so the last ones issued may be "overtaken" on the primary itself: no lag is measured for
them). The reader keeps going until that sentinel is readable on site-b or DRAIN (env
LAG_DRAIN_S, 60) seconds have passed; sentinels not seen by then are "missing": their
lag is at least (the reader's end - acknowledged), and a percentile on or above such a lower
bound is printed as ">=value". "stuck=1": sentinels are missing and none became readable after
the writes ended (the replica stopped following, not merely slow).
Exit status 0, or 1 on a setup error; the caller judges the figures. SIGALRM ends a run that
takes more than 3 x SECS + DRAIN + 120 s (a hung cluster).
"""
import os
import random
import select
import signal
import struct
import sys
import threading
import time
import traceback

import rados
import rbd

BLOCK = 4096
MAGIC = b"RBDLAG01"
HEAD = struct.Struct("<8sQd")  # magic, counter, issue time


def pct(sorted_values, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def fmt(v):
    return "-" if v is None else "%.2f" % v


def reader(conf_b, pool, image, poll, drain, stop_fd, out):
    """Reads block 0 of site-b's copy until the writer's last sentinel is readable (the writer
    sends its count when done) or DRAIN s after that; reports to OUT."""
    signal.alarm(int(drain * 2 + 600))   # (alarms are not inherited across fork)
    site_b = rados.Rados(clustername="site-b", conffile=conf_b)
    site_b.connect()
    io_b = site_b.open_ioctx(pool)
    with rbd.Image(io_b, image, read_only=True) as replica:
        # block 0 is the first data object's first bytes: read with librados, so that no
        # librbd state of a read-only open (object map, cache, header refreshes) can hide it
        block0 = "%s.%016x" % (replica.stat()["block_name_prefix"], 0)
    out.write("ready\n")
    out.flush()
    firsts = []         # (k, time) when a counter k > the last one was first read
    last = reads = errors = 0
    total = deadline = None
    while total is None or (last < total and time.time() < deadline):
        if total is None and select.select([stop_fd], [], [], 0)[0]:
            total = int(os.read(stop_fd, 64).decode().strip() or "0")
            deadline = time.time() + drain
        try:
            data = io_b.read(block0, HEAD.size, 0)
        except rados.ObjectNotFound:
            data = b""
        except rados.Error:
            errors += 1
            time.sleep(poll)
            continue
        t = time.time()
        reads += 1
        if len(data) == HEAD.size:
            magic, k, _ = HEAD.unpack(data)
            if magic == MAGIC and k > last:
                firsts.append((k, t))
                last = k
        time.sleep(poll)
    io_b.close()
    site_b.shutdown()
    out.write("reads %d errors %d end %.6f\n" % (reads, errors, time.time()))
    for k, t in firsts:
        out.write("%d %.6f\n" % (k, t))
    out.close()


def main(argv):
    if len(argv) != 9:
        sys.exit(__doc__)
    conf_a, conf_b, pool, image = argv[1:5]
    secs, rate, every = float(argv[5]), int(argv[6]), int(argv[7])
    samples_path = argv[8]
    max_inflight = int(os.environ.get("LAG_INFLIGHT", "128"))
    poll = float(os.environ.get("LAG_POLL_MS", "1")) / 1000.0
    drain = float(os.environ.get("LAG_DRAIN_S", "60"))
    if rate <= 0 or every <= 0 or secs <= 0:
        sys.exit("live_lag.py: SECS, RATE and EVERY must be positive")

    # Ctrl-C or a kill ends both processes at once (Python's own SIGINT handling waits for the
    # main thread, which may be blocked in librbd); the shell that started them cleans up
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # a bound on the whole run, as timeout(1) would give: SIGALRM ends it (the reader sets its own)
    signal.alarm(int(secs * 3 + drain + 120))
    # the reader is its own process (forked before any librados thread exists), so that the
    # writer's pacing and completions never delay its reads, nor it the writer
    to_reader_r, to_reader_w = os.pipe()
    from_reader_r, from_reader_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(to_reader_w)
        os.close(from_reader_r)
        code = 1
        try:
            reader(conf_b, pool, image, poll, drain, to_reader_r, os.fdopen(from_reader_w, "w"))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(to_reader_r)
    os.close(from_reader_w)
    from_reader = os.fdopen(from_reader_r)
    if from_reader.readline().strip() != "ready":
        sys.exit("live_lag.py: the site-b reader did not start")

    site_a = rados.Rados(clustername="site-a", conffile=conf_a)
    site_a.connect()
    io_a = site_a.open_ioctx(pool)
    primary = rbd.Image(io_a, image)
    blocks = primary.size() // BLOCK
    if blocks < 2:
        sys.exit("live_lag.py: the image is smaller than two 4 KiB blocks")

    acked = {}          # k -> acknowledged time
    latencies = []      # primary write latency, ms
    state = {"inflight": 0, "failed": 0}
    cv = threading.Condition()

    def done_cb(k, t_issue):
        def cb(completion):
            t = time.time()
            with cv:
                if completion.get_return_value() < 0:
                    state["failed"] += 1
                else:
                    latencies.append((t - t_issue) * 1000.0)
                    if k:
                        acked[k] = t
                state["inflight"] -= 1
                cv.notify_all()
        return cb

    filler = os.urandom(BLOCK)
    pad = b"\0" * (BLOCK - HEAD.size)

    total = int(secs * rate)
    sentinels = 0
    stalls = 0
    t0 = time.time()
    for i in range(total):
        delay = t0 + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        with cv:
            if state["inflight"] >= max_inflight:
                stalls += 1
                while state["inflight"] >= max_inflight:
                    cv.wait()
            state["inflight"] += 1
        t_issue = time.time()
        if i % every == 0:
            sentinels += 1
            k = sentinels
            primary.aio_write(HEAD.pack(MAGIC, k, t_issue) + pad, 0, done_cb(k, t_issue))
        else:
            k = 0
            primary.aio_write(filler, random.randrange(1, blocks) * BLOCK, done_cb(0, t_issue))
    with cv:
        while state["inflight"] > 0:
            cv.wait()
    t_end = time.time()
    # The sentinel the primary ended with: two sentinels in flight at once may land in either
    # order (librbd acknowledged them out of order), so the last one issued may have been
    # overwritten by the one before it on site-a itself. A sentinel above the primary's final
    # one is "overtaken": the replica cannot show it, and has no lag for it.
    magic, final, _ = HEAD.unpack(primary.read(0, HEAD.size))
    if magic != MAGIC or not 0 < final <= sentinels:
        sys.exit("live_lag.py: site-a's block 0 holds no sentinel of this run after the writes")

    primary.close()
    io_a.close()
    site_a.shutdown()

    # the reader's findings: "reads N errors N", then "k t" when a counter k was first read
    os.write(to_reader_w, b"%d\n" % final)
    os.close(to_reader_w)
    seen = {}
    reads, read_errors, reader_end = from_reader.readline().split()[1::2]
    reader_end = float(reader_end)
    last, last_seen = 0, None
    for line in from_reader:
        k, t = line.split()
        k, t = min(int(k), final), float(t)
        for j in range(last + 1, k + 1):
            seen[j] = t
        last, last_seen = max(last, k), t
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit("live_lag.py: the site-b reader failed")

    # lags: (ms, exact); a sentinel not readable when the reader stopped has a lag of at
    # least (reader's end - acknowledged): a lower bound
    lags = []
    with open(samples_path, "w") as f:
        f.write("k\tacknowledged\treadable\tlag_ms\n")
        for k in range(1, sentinels + 1):
            a, s = acked.get(k), seen.get(k)
            if k > final:
                f.write("%d\t%s\t-\t-\n" % (k, "-" if a is None else "%.6f" % a))
            elif a is not None and s is not None:
                lag = (s - a) * 1000.0
                lags.append((lag, True))
                f.write("%d\t%.6f\t%.6f\t%.3f\n" % (k, a, s, lag))
            else:
                if a is not None:
                    lags.append(((reader_end - a) * 1000.0, False))
                f.write("%d\t%s\t%s\t-\n" % (k, "-" if a is None else "%.6f" % a, "-" if s is None else "%.6f" % s))
    lags.sort()
    bounds = [v for v, exact in lags if not exact]
    values = [v for v, _ in lags]

    def lag_fmt(v):
        # exact unless a lower bound sorts at or below it (then the true figure is >= it)
        if v is None:
            return "-"
        return (">=" if bounds and bounds[0] <= v else "") + "%.2f" % v

    missing = final - len(seen)
    # stuck: sentinels missing and not one new sentinel readable after the writes ended
    stuck = int(missing > 0 and (last_seen is None or last_seen < t_end))
    latencies.sort()
    print(
        "writes=%d failed=%d write_secs=%.3f write_rate=%.1f write_lat_p50_ms=%s write_lat_p99_ms=%s "
        "stalls=%d sentinels=%d overtaken=%d seen=%d missing=%d stuck=%d lag_p50_ms=%s lag_p99_ms=%s "
        "lag_max_ms=%s drain_s=%.1f reads=%d read_errors=%d"
        % (total, state["failed"], t_end - t0, total / (t_end - t0), fmt(pct(latencies, 50)), fmt(pct(latencies, 99)),
           stalls, sentinels, sentinels - final, len(seen), missing, stuck, lag_fmt(pct(values, 50)), lag_fmt(pct(values, 99)),
           lag_fmt(values[-1] if values else None), reader_end - t_end, int(reads), int(read_errors)),
        flush=True,
    )

if __name__ == "__main__":
    main(sys.argv)
