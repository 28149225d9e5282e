#!/usr/bin/env bash
# benches/live_lag.sh — live replication lag of a journal-mode image under a steady write load,
# and the time from `rbd mirror image enable` to up+replaying, stock rbd-mirror vs rbd-mirror-rs,
# on the project lab (tests/lab/lab.sh, which must already be up), in one run (issue 20).
#
# For each daemon (stock, ours):
#  1. stop every rbd-mirror of the lab; create mirror/lagbench-<daemon>-<rand> on site-a
#     (BENCH_IMAGE_SIZE, layering,exclusive-lock,object-map,fast-diff,journaling); start the
#     daemon at site-b;
#  2. enable: t0 = just before `rbd mirror image enable <img> journal` on site-a; done = site-b's
#     `rbd mirror image status` says up+replaying (polled every BENCH_POLL s);
#  3. live lag: benches/live_lag.py writes BENCH_RATE 4 KiB writes a second for BENCH_SECS s on
#     site-a, every BENCH_EVERY-th a sentinel (a counter in block 0), while it reads block 0 of
#     site-b's copy (with librados, from its first data object) every millisecond; lag of a sentinel =
#     when it was first readable on site-b - when librbd acknowledged its write on site-a (same
#     host, same clock); p50/p99/max over the sentinels (goal p99 <= 100 ms). The last sentinel
#     is the one site-a's block 0 holds after the writes (the last ones issued may land before
#     the one issued before them: "overtaken", no lag). Daemon CPU (% of one core) from the
#     first write until site-b had the last sentinel, and peak RSS;
#  4. stop the daemon, delete both copies.
# Prints a table; one TSV row per daemon/measure in benches/results/ and, with BENCH_SAMPLES=DIR,
# each daemon's sentinel samples in DIR/lag-<daemon>.tsv (for benches/plot.py).
#
# usage: benches/live_lag.sh            (from any directory; the lab must be up)
# Environment:
#   BENCH_DAEMONS="stock ours"  which daemons, in this order
#   BENCH_RATE=1000          writes a second on site-a
#   BENCH_SECS=60            seconds of writing per daemon
#   BENCH_EVERY=10           every n-th write is a sentinel (100 sentinels a second at 1,000/s)
#   BENCH_IMAGE_SIZE=1G      size of the image (the other writes land at random in it)
#   BENCH_WAIT=300           seconds allowed for up+replaying after the enable
#   BENCH_POLL=0.25          seconds between two looks at the image's mirror status
#   BENCH_SAMPLES            directory for the per-sentinel samples (default: not kept)
#   RBD_MIRROR_RS_BIN        our daemon (default <repo>/target/release/rbd-mirror-rs, built
#                            with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_INSTANCE  which lab (0..3, as tests/lab/lab.sh; default 0)
#   BENCH_OUT                TSV path (default benches/results/live_lag-<UTC date>.tsv)
# Exit status: 0 when all ran and the replica followed (sentinels not readable 60 s after the
# writes are counted as "missing", their lag as at least that: a slow daemon, not a failure);
# 3 when a daemon did not reach up+replaying, a write failed or the replica was stuck (sentinels
# missing and none became readable after the writes ended); 1 on any other error.
set -euo pipefail
BENCH=live_lag
source "$(dirname "$(readlink -f "$0")")/lib.sh"

DAEMONS=${BENCH_DAEMONS:-stock ours}
RATE=${BENCH_RATE:-1000}
SECS=${BENCH_SECS:-60}
EVERY=${BENCH_EVERY:-10}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-1G}
WAIT=${BENCH_WAIT:-300}
POLL=${BENCH_POLL:-0.25}
SAMPLES=${BENCH_SAMPLES:-}
FEATURES=layering,exclusive-lock,object-map,fast-diff,journaling
OUT=${BENCH_OUT:-$REPO/benches/results/live_lag-$STAMP.tsv}
LAG_PY=$REPO/benches/live_lag.py

check_lab rbd jq awk timeout getconf "$PY"
"$PY" -c 'import rados, rbd' 2>/dev/null || die "python3-rbd missing ($PY cannot import rbd; apt-get install python3-rbd)"
[[ -z $SAMPLES ]] || mkdir -p "$SAMPLES"
daemon_bench "$DAEMONS"

image_state() { rbdc site-b mirror image status "$POOL/$1" --format json 2>/dev/null | jq -r '.state // empty'; }
kv() { sed -nE "s/.*(^| )$2=([^ ]*).*/\\2/p" <<<"$1"; }   # summary key

FAILED=0
declare -A R   # R[daemon.measure]
run_daemon() {
  local d=$1 img pid t0 st end c0 c1 t1 t2 hwm line samples=$WORK/lag-$1.tsv
  img=lagbench-$d-$(printf '%04x%04x' $RANDOM $RANDOM)
  log "== $d: image $POOL/$img, $RATE writes/s for ${SECS}s"
  "$LAB" mirror-stop all >&2
  CREATED+=("site-a $img" "site-b $img")
  rbdc site-a create "$POOL/$img" --size "$IMAGE_SIZE" --image-feature "$FEATURES" >/dev/null
  pid=$(start_daemon "$d")
  start_rss_sampler "$pid"

  # enable -> up+replaying
  t0=$(now)
  rbdc site-a mirror image enable "$POOL/$img" journal >/dev/null
  end=$((SECONDS + WAIT))
  while st=$(image_state "$img"); [[ $st != up+replaying ]]; do
    if ((SECONDS >= end)); then
      log "ERROR: $d: site-b $POOL/$img not up+replaying after ${WAIT}s (state: $st)"
      log_tail; FAILED=1; stop_rss_sampler 0; "$LAB" mirror-stop site-b >&2; return 0
    fi
    sleep "$POLL"
  done
  R[$d.enable]=$(calc "$(now) - $t0" 2)
  rec "$d" enable_to_replaying "${R[$d.enable]}" s "rbd mirror image enable journal (empty image, daemon running) -> site-b status up+replaying (poll ${POLL}s)"
  log "$d: up+replaying ${R[$d.enable]}s after the enable"

  # live lag under a steady load
  c0=$(cpu_ticks "$pid"); t1=$(now)
  # (no timeout(1): it would put live_lag.py in a process group of its own, out of reach of a
  # Ctrl-C; the program bounds itself with alarm(2))
  local rc=0
  line=$("$PY" "$LAG_PY" "$(conf site-a)" "$(conf site-b)" "$POOL" "$img" "$SECS" "$RATE" "$EVERY" "$samples") || rc=$?
  # killed by SIGINT or SIGTERM (a Ctrl-C, a kill of the process group): stop, cleaning up (bash
  # itself would carry on: it ignores a SIGINT its foreground child did not die of)
  ((rc != 130 && rc != 143)) || exit 130
  ((rc == 0)) || { log "ERROR: $d: live_lag.py failed (exit $rc)"; line=; }
  t2=$(now)
  if [[ -d /proc/$pid ]]; then c1=$(cpu_ticks "$pid"); hwm=$(kib "$pid" VmHWM); else
    log "ERROR: $d daemon (pid $pid) exited during the load"; c1=$c0; hwm=0; FAILED=1; fi
  stop_rss_sampler "$hwm"
  [[ -n $SAMPLES && -f $samples ]] && cp "$samples" "$SAMPLES/lag-$d.tsv"
  log "$d: $line"
  if [[ -z $line ]]; then FAILED=1; "$LAB" mirror-stop site-b >&2; return 0; fi
  local m
  for m in write_rate write_lat_p50_ms write_lat_p99_ms failed sentinels overtaken missing stuck lag_p50_ms lag_p99_ms lag_max_ms drain_s reads; do
    R[$d.$m]=$(kv "$line" "$m")
  done
  R[$d.cpu]=$(calc "($c1 - $c0) / $HZ / ($t2 - $t1) * 100" 2)
  R[$d.rss]=$(calc "$RSS_MAX / 1024" 1)
  ((${R[$d.failed]:-1} == 0 && ${R[$d.stuck]:-1} == 0)) || { FAILED=1; log "ERROR: $d: ${R[$d.failed]:-?} writes failed; stuck=${R[$d.stuck]:-?}: ${R[$d.missing]:-?} sentinels not readable on site-b ${R[$d.drain_s]:-?}s after the writes, none after the writes"; }
  ((${R[$d.missing]:-0} == 0)) || log "$d: ${R[$d.missing]} sentinels not yet readable on site-b ${R[$d.drain_s]}s after the writes ended (still progressing: slow, not stuck); percentiles marked >= are lower bounds"
  rec "$d" lag_p50 "${R[$d.lag_p50_ms]}" ms "sentinel acknowledged on site-a -> readable on site-b; ${R[$d.sentinels]} sentinels (every ${EVERY}th write); >= : a lower bound (sentinels missing)"
  rec "$d" lag_missing "${R[$d.missing]}" sentinels "not readable on site-b ${R[$d.drain_s]}s after the writes ended (lag counted as at least that); stuck=${R[$d.stuck]}; ${R[$d.overtaken]:-0} overtaken on site-a itself (the last issued, landed before the one issued before them: no lag)"
  rec "$d" lag_p99 "${R[$d.lag_p99_ms]}" ms "goal <= 100"
  rec "$d" lag_max "${R[$d.lag_max_ms]}" ms ""
  rec "$d" lag_write_rate "${R[$d.write_rate]}" writes/s "achieved on site-a (target $RATE, 4 KiB, aio, <= ${LAG_INFLIGHT:-128} in flight); ${R[$d.failed]} failed"
  rec "$d" lag_write_latency_p50 "${R[$d.write_lat_p50_ms]}" ms "site-a librbd write latency (journaling), p99 ${R[$d.write_lat_p99_ms]} ms"
  rec "$d" lag_cpu "${R[$d.cpu]}" "%core" "daemon utime+stime from the first write until the replica had the last sentinel or the drain ended ($(calc "$t2 - $t1" 1) s; $(calc "($c1 - $c0) / $HZ" 2) cpu-s)"
  rec "$d" lag_peak_rss "${R[$d.rss]}" MiB "max(VmRSS every 0.5s, VmHWM), daemon start -> end of the load"
  log "$d: lag p50 ${R[$d.lag_p50_ms]} ms, p99 ${R[$d.lag_p99_ms]} ms, max ${R[$d.lag_max_ms]} ms at ${R[$d.write_rate]} writes/s; CPU ${R[$d.cpu]} % of a core, peak RSS ${R[$d.rss]} MiB"

  "$LAB" mirror-stop site-b >&2
  cleanup_image site-a "$img"; cleanup_image site-b "$img"
}

rec meta load "$(cut -d' ' -f1-3 /proc/loadavg)" loadavg "at the start; $(nproc) CPUs"
for d in $DAEMONS; do run_daemon "$d"; done
rec meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)" loadavg "at the end"

# ---- report --------------------------------------------------------------------------------------
echo
echo "live lag at $RATE writes/s for ${SECS}s, journal mode ($(date -u +%F\ %TZ), lab $STATE, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-6s %10s %10s %10s %10s %10s %10s %10s %10s\n' daemon enable_s lag_p50 lag_p99 lag_max writes/s missing cpu_% peak_MiB
for d in $DAEMONS; do
  printf '%-6s %10s %10s %10s %10s %10s %10s %10s %10s\n' "$d" "${R[$d.enable]:--}" "${R[$d.lag_p50_ms]:--}" "${R[$d.lag_p99_ms]:--}" \
    "${R[$d.lag_max_ms]:--}" "${R[$d.write_rate]:--}" "${R[$d.missing]:--}" "${R[$d.cpu]:--}" "${R[$d.rss]:--}"
done
echo "lag = sentinel write acknowledged on site-a -> first read of it (or a later one) on site-b, ms; goal p99 <= 100"
echo "results: $OUT"
((FAILED == 0)) || { log "FAILED: a daemon did not replay, a write failed or a sentinel never arrived (see above)"; exit 3; }
