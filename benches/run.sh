#!/usr/bin/env bash
# benches/run.sh — the whole benchmark in one command (issue 20): stock rbd-mirror and
# rbd-mirror-rs on the same lab (tests/lab/lab.sh, which must already be up), in one run, with
# the same workloads; every figure with the ratios ours/stock and ours/raw. Not part of CI's
# pass/fail. It runs, one after the other, each with both daemons:
#  1. benches/live_lag.sh: time from `rbd mirror image enable` to up+replaying; live lag
#     p50/p99/max at a steady BENCH_RATE (1,000) 4 KiB writes/s on a journal-mode image
#     (sentinel writes acknowledged on site-a -> readable on site-b; goal p99 <= 100 ms);
#  2. benches/journal_replay.sh: replay of a BENCH_BACKLOG (256 MiB) backlog of 4K random
#     writes: entries/s, catch-up, CPU per entry, peak RSS; site-b's raw 4K random write rate;
#  3. benches/snapshot_sync.sh: full sync of BENCH_IMAGE_SIZE (1 GiB) and a 10 % incremental
#     snapshot sync: time, CPU per GiB, peak RSS, detection of a new mirror snapshot; site-b's
#     raw 4M sequential write rate;
#  4. here: the ceiling of this machine for a sync: a filled BENCH_IMAGE_SIZE image read on
#     site-a (rbd bench 4M sequential reads) while as much is written on site-b (4M sequential
#     writes), both at once, no daemon running: ceiling = bytes / the time both took;
# then benches/report.py: the table (printed, and summary.{tsv,md}) and plot.svg (live lag CDF,
# journal replay throughput over time, stock and ours side by side), all in
# benches/results/run-<UTC time>/ with each bench's own TSV. ~13 min with the defaults (load 5-12).
# Each bench removes its images and stops its daemon, also on failure (their exit traps); so
# does this script for its own.
#
# usage: benches/run.sh                                  (from any directory; the lab must be up)
#        BENCH_BACKLOG=32M BENCH_IMAGE_SIZE=256M BENCH_SECS=15 benches/run.sh     (quick, ~5 min)
# Environment:
#   BENCH_DAEMONS="stock ours"  which daemons, in this order
#   BENCH_BACKLOG=256M       journal backlog (journal_replay.sh; its raw bench writes as much)
#   BENCH_IMAGE_SIZE=1G      snapshot_sync.sh's image and the ceiling's
#   BENCH_RATE=1000 BENCH_SECS=60   live_lag.sh's write rate and duration
#   BENCH_ONLY="lag replay snapshot ceiling"   a subset of the steps (default all)
#   BENCH_RESULTS            parent directory of the run's (default benches/results)
#   BENCH_LABEL              appended to the run's directory name (e.g. "quick")
#   RBD_MIRROR_RS_BIN        our daemon (default ${CARGO_TARGET_DIR:-<repo>/target}/release/
#                            rbd-mirror-rs, built with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_INSTANCE  which lab (0..3, as tests/lab/lab.sh; default 0)
# Exit status: 0 when every bench ran and every check (checksums, sentinels) passed; 3 when a
# bench reported a failed check or failed (the table is still written); 1 on any other error.
set -euo pipefail
BENCH=run
source "$(dirname "$(readlink -f "$0")")/lib.sh"

DAEMONS=${BENCH_DAEMONS:-stock ours}
BACKLOG=${BENCH_BACKLOG:-256M}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-1G}
ONLY=${BENCH_ONLY:-lag replay snapshot ceiling}
DIR=${BENCH_RESULTS:-$REPO/benches/results}/run-$STAMP${BENCH_LABEL:+-$BENCH_LABEL}
OUT=$DIR/run.tsv
SUMMARY=$DIR/summary.txt

check_lab rbd rados jq awk timeout sha256sum numfmt getconf "$PY"
SIZE_BYTES=$(numfmt --from=iec "$IMAGE_SIZE") || die "BENCH_IMAGE_SIZE=$IMAGE_SIZE is not a size"
mkdir -p "$DIR"
daemon_bench "$DAEMONS"   # finds (or builds) our binary once; the benches get it below
export RBD_MIRROR_RS_BIN=${OURS_BIN:-${RBD_MIRROR_RS_BIN:-}}
export BENCH_DAEMONS=$DAEMONS
load() { cut -d' ' -f1-3 /proc/loadavg; }
rec meta machine "$(nproc)" cpus "$(uname -r); lab $STATE; ours ${OURS_BIN:--} (repo at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')); stock $(rbd-mirror --version 2>/dev/null | awk '{ print $3 }')"
rec meta load_start "$(load)" loadavg "/proc/loadavg at the start"

FAILED=0
T_START=$(now)
# step NAME SCRIPT [VAR=VALUE...]: runs a bench with its TSV in DIR; a failure is recorded
step() {
  local name=$1 script=$2 rc t0; shift 2
  [[ " $ONLY " == *" $name "* ]] || { log "skipping $name (BENCH_ONLY)"; return 0; }
  log "==== $script ($(date -u +%TZ), load $(load))"
  t0=$(now)
  # the copy to the log ignores INT and TERM: a Ctrl-C or a kill of the process group must not
  # take it away while the bench still writes (its exit trap cleaning up)
  set +e
  env "$@" "$REPO/benches/$script" > >(trap '' INT TERM; exec tee "$DIR/${script%.sh}.log") 2>&1
  rc=$?
  wait   # for the copy to the log (bash >= 5.1 waits for a process substitution too)
  set -e
  # 130: the bench was interrupted (lib.sh's INT/TERM trap) and has cleaned up; so stop here
  ((rc != 130)) || die "$script interrupted"
  rec meta "${name}_rc" "$rc" exit "$script: $(calc "$(now) - $t0" 0) s, load after $(load)"
  ((rc == 0)) || { FAILED=1; log "WARNING: $script exited $rc (see $DIR/${script%.sh}.log)"; }
}

step lag live_lag.sh BENCH_OUT="$DIR/live_lag.tsv" BENCH_SAMPLES="$WORK"
step replay journal_replay.sh BENCH_OUT="$DIR/journal_replay.tsv" BENCH_SERIES="$WORK/series.tsv" \
  BENCH_BACKLOG="$BACKLOG" BENCH_RAW_TOTAL="$BACKLOG"
step snapshot snapshot_sync.sh BENCH_OUT="$DIR/snapshot_sync.tsv" BENCH_IMAGE_SIZE="$IMAGE_SIZE"

# ---- the ceiling of this machine for a sync ------------------------------------------------------
if [[ " $ONLY " == *" ceiling "* ]]; then
  log "==== sync ceiling: $IMAGE_SIZE read on site-a while as much is written on site-b ($(date -u +%TZ), load $(load))"
  "$LAB" mirror-stop all >&2
  src=ceilbench-src-$(printf '%04x%04x' $RANDOM $RANDOM); dst=ceilbench-dst-$(printf '%04x%04x' $RANDOM $RANDOM)
  CREATED+=("site-a $src" "site-b $dst")
  rbdc site-a create "$POOL/$src" --size "$IMAGE_SIZE" --image-feature layering,exclusive-lock,object-map,fast-diff >/dev/null
  rbdc site-b create "$POOL/$dst" --size "$IMAGE_SIZE" --image-feature layering,exclusive-lock,object-map,fast-diff >/dev/null
  bench_4m site-a "$src" seq "$IMAGE_SIZE" >/dev/null
  t0=$(now)
  bench_4m site-a "$src" seq "$IMAGE_SIZE" read >"$WORK/ceil.read" &
  rpid=$!
  bench_4m site-b "$dst" seq "$IMAGE_SIZE" write >"$WORK/ceil.write" || die "the ceiling's site-b write failed"
  wait "$rpid" || die "the ceiling's site-a read failed"
  secs=$(calc "$(now) - $t0")
  ceiling=$(calc "$SIZE_BYTES / 1048576 / $secs" 1)
  rec ceiling sync_ceiling "$ceiling" MiB/s "$IMAGE_SIZE read on site-a and written on site-b at once (rbd bench 4M seq, 16 threads each, no daemon) in ${secs}s"
  rec ceiling site_a_read "$(cat "$WORK/ceil.read")" MiB/s "rbd bench --io-type read --io-size 4M --io-pattern seq, during the site-b write"
  rec ceiling site_b_write "$(cat "$WORK/ceil.write")" MiB/s "rbd bench --io-type write --io-size 4M --io-pattern seq, during the site-a read"
  log "sync ceiling: $ceiling MiB/s ($IMAGE_SIZE in ${secs}s; read $(cat "$WORK/ceil.read"), write $(cat "$WORK/ceil.write") MiB/s)"
  cleanup_image site-a "$src"; cleanup_image site-b "$dst"
fi

rec meta load_end "$(load)" loadavg "/proc/loadavg at the end"
rec meta duration "$(calc "$(now) - $T_START" 0)" s "the whole run"
[[ -f $WORK/series.tsv ]] && cp "$WORK/series.tsv" "$DIR/replay_series.tsv"

# ---- report --------------------------------------------------------------------------------------
title="rbd-mirror-rs vs stock rbd-mirror, $(date -u +%F\ %H:%MZ), $(nproc) CPUs, load $(awk -F'\t' '$2 == "load_start" { print $3 }' "$OUT") -> $(load)"
{
  echo "$title"
  echo "kernel $(awk -F'\t' '$2 == "machine" { print $5 }' "$OUT")"
  echo "journal backlog $BACKLOG of 4K random writes; live lag ${BENCH_RATE:-1000} writes/s for ${BENCH_SECS:-60}s; snapshot sync of $IMAGE_SIZE + ${BENCH_CHANGE:-10} %; run took $(calc "$(now) - $T_START" 0) s"
  echo
  "$PY" "$REPO/benches/report.py" "$DIR" "$WORK" "$title"
  echo
  echo "raw = site-b alone (no daemon): rbd bench 4K random writes/s for the journal, 4M sequential MiB/s for the syncs;"
  echo "  the ceiling: site-a reading and site-b writing 4M sequentially at once. Each bench's TSV, log and notes: $DIR"
  ((FAILED == 0)) || echo "FAILED: a bench reported a failed check or failed (see the *_rc rows of run.tsv and the logs)"
} | tee "$SUMMARY"
[[ -f $DIR/plot.svg ]] && log "plot: $DIR/plot.svg"
((FAILED == 0)) || exit 3
