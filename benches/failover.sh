#!/usr/bin/env bash
# benches/failover.sh — planned failover of a pool's images: `rbd-mirror-rs failover --planned`
# against the serial shell loop operators write (per image: `rbd mirror image demote` on the
# primary, `rbd mirror image status` polled on the secondary until the demotion is replayed,
# `rbd mirror image promote` there), in one run on the project lab (issue 18). The lab must be up.
#
# For each count N of BENCH_COUNTS (default "10 100"):
#  1. a dedicated pool BENCH_POOL (default `failover`), created and peered on both sites (and
#     deleted at the end, also on failure); N images made on site-a (half journal, half snapshot
#     mode, BENCH_IMAGE_SIZE, BENCH_FILL written at offset 0), our daemon started at both
#     sites, mirroring enabled; wait until site-b shows all N up+replaying;
#  2. the loop fails the N images over from site-a to site-b, one after the other, polling
#     every BENCH_POLL s (timed from its first demote to its last promote);
#  3. wait until site-a's daemon replays all N from site-b (up+replaying at site-a);
#  4. `rbd-mirror-rs failover --pool <pool> --planned` run with site-a's conf fails them back
#     (--parallel BENCH_PARALLEL; the whole process timed); every image must then be primary on
#     site-a (`rbd info`).
# Both directions are driven by our daemon (site-b's replays a->b for the loop, site-a's b->a
# for ours): what differs is the tool. Prints a table with the ratio loop/ours and the goals
# (ours <= 10 s for 10 images, >= 5x faster than the loop at 100); TSV and summary under
# benches/results/failover-<UTC time>.{tsv,txt}.
#
# usage: benches/failover.sh                          (from any directory; the lab must be up)
#        BENCH_COUNTS=10 benches/failover.sh           (quick)
# Environment:
#   BENCH_COUNTS="10 100"   image counts, one run each
#   BENCH_IMAGE_SIZE=32M    size of each image (thin)
#   BENCH_FILL=64K          bytes written at offset 0 of each before mirroring
#   BENCH_PARALLEL=8        ours' --parallel (its default)
#   BENCH_POLL=1            the loop's status polling interval, seconds
#   BENCH_TIMEOUT=1800      seconds allowed for each wait (all replaying, one image's demotion)
#   BENCH_POOL=failover     the dedicated pool
#   BENCH_PG_NUM=16         its placement groups
#   RBD_MIRROR_RS_BIN       our binary (default <repo>/target/release/rbd-mirror-rs, built
#                           with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_INSTANCE which lab (0..3, as tests/lab/lab.sh; default 0)
#   BENCH_OUT               TSV path (default benches/results/failover-<UTC time>.tsv)
# Exit status: 0 when every failover completed; 3 when one did not (figures still printed);
# 1 on any other error.
set -euo pipefail
BENCH=failover
source "$(dirname "$(readlink -f "$0")")/lib.sh"

COUNTS=${BENCH_COUNTS:-10 100}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-32M}
FILL=${BENCH_FILL:-64K}
PARALLEL=${BENCH_PARALLEL:-8}
POLL=${BENCH_POLL:-1}
TIMEOUT=${BENCH_TIMEOUT:-1800}
FPOOL=${BENCH_POOL:-failover}
PG_NUM=${BENCH_PG_NUM:-16}
OUT=${BENCH_OUT:-$REPO/benches/results/failover-$STAMP.tsv}
SUMMARY=${OUT%.tsv}.txt

check_lab rbd ceph jq awk timeout numfmt "$PY"
SIZE_BYTES=$(numfmt --from=iec "$IMAGE_SIZE") || die "BENCH_IMAGE_SIZE=$IMAGE_SIZE is not a size"
FILL_BYTES=$(numfmt --from=iec "$FILL") || die "BENCH_FILL=$FILL is not a size"
for n in $COUNTS; do [[ $n =~ ^[0-9]+$ ]] && ((n >= 2)) || die "BENCH_COUNTS: $n is not a count >= 2"; done
daemon_bench ours

failover_cleanup() {
  "$LAB" mirror-stop site-a >/dev/null 2>&1 || log "WARNING: lab.sh mirror-stop site-a failed"
  "$LAB" mirror-stop site-b >/dev/null 2>&1 || log "WARNING: lab.sh mirror-stop site-b failed"
  delete_pool site-a "$FPOOL"; delete_pool site-b "$FPOOL"
}
failover_exit() { local rc=$?; failover_cleanup; (exit "$rc"); on_exit; }
trap failover_exit EXIT

images_py
py() { timeout "$TIMEOUT" "$PY" "$WORK/images.py" "$1" site-a "$(conf site-a)" "$FPOOL" "${@:2}"; }
names() { awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf (i % 2 ? "s%04d\n" : "j%04d\n"), int(i / 2) }'; }
# states SITE: that site's images by their local status state ({"up+replaying": N, ...})
states() {
  rbdc "$1" mirror pool status "$FPOOL" --verbose --format json 2>/dev/null |
    jq -c '[.images[]?.state] | group_by(.) | map({(.[0]): length}) | add // {}' || echo '{}'
}
wait_replaying() {  # site n: until all n images are up+replaying there; prints the seconds
  local t0; t0=$(now)
  until (($(states "$1" | jq '."up+replaying" // 0') >= $2)); do
    (($(calc "$(now) - $t0" 0) < TIMEOUT)) || die "$1: not all $2 images up+replaying after ${TIMEOUT}s: $(states "$1")"
    sleep 1
  done
  calc "$(now) - $t0" 1
}
primaries() {  # site names...: how many of these images are primary there (`rbd info`)
  local s=$1 img k=0; shift
  for img in "$@"; do
    [[ $(rbdc "$s" info "$FPOOL/$img" --format json 2>/dev/null | jq -r '.mirroring.primary') == true ]] && k=$((k + 1))
  done
  echo "$k"
}
start_daemons() {
  local s
  for s in site-a site-b; do
    RBD_MIRROR_LAB_MIRROR_BIN=$OURS_BIN CEPH_LAB_MIRROR_BIN= "$LAB" mirror-start "$s" >&2
  done
}

# the operators' loop: one image after the other, from site-a to site-b
shell_loop() {  # names...
  local img st t0
  for img in "$@"; do
    rbdc site-a mirror image demote "$FPOOL/$img" >/dev/null
    t0=$(now)
    while :; do
      st=$(rbdc site-b mirror image status "$FPOOL/$img" --format json 2>/dev/null | jq -r '.state // ""')
      if [[ $st == up+unknown || $st == up+stopped ]] &&
        rbdc site-b mirror image promote "$FPOOL/$img" >/dev/null 2>&1; then
        break
      fi
      (($(calc "$(now) - $t0" 0) < TIMEOUT)) || { log "ERROR: loop: $img not promotable on site-b after ${TIMEOUT}s ($st)"; return 1; }
      sleep "$POLL"
    done
  done
}

FAILED=0
declare -A R
rec meta machine "$(nproc)" cpus "$(uname -r); lab $STATE; ours $OURS_BIN (repo at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')); load $(cut -d' ' -f1-3 /proc/loadavg)"

for n in $COUNTS; do
  log "== $n images (half journal, half snapshot mode) in pool $FPOOL"
  "$LAB" mirror-stop site-a >&2; "$LAB" mirror-stop site-b >&2
  setup_pool "$FPOOL" "$PG_NUM"
  py create "$n" "$SIZE_BYTES" "$FILL_BYTES" || die "creating the images failed"
  start_daemons
  py enable "$n" >/dev/null || die "enabling mirroring failed"
  log "$n: all up+replaying at site-b $(wait_replaying site-b "$n") s after the enables"
  mapfile -t imgs < <(names "$n")

  t=$(now)
  if shell_loop "${imgs[@]}"; then
    R[$n.loop]=$(calc "$(now) - $t" 1)
    rec loop "failover_${n}_secs" "${R[$n.loop]}" s "site-a -> site-b, serial: demote, status every ${POLL}s, promote"
    log "$n: shell loop: ${R[$n.loop]} s"
  else
    FAILED=1; R[$n.loop]=failed; rec loop "failover_${n}_secs" failed s "see the log"
    continue
  fi
  log "$n: all up+replaying at site-a (from site-b) $(wait_replaying site-a "$n") s after the loop"

  t=$(now)
  set +e
  "$OURS_BIN" --cluster site-a -c "$(conf site-a)" --id admin failover --pool "$FPOOL" --planned \
    --parallel "$PARALLEL" --format json >"$WORK/ours.json" 2>"$WORK/ours.err"
  rc=$?
  set -e
  R[$n.ours]=$(calc "$(now) - $t" 1)
  p=$(primaries site-a "${imgs[@]}")
  if ((rc != 0 || p != n)); then
    FAILED=1
    log "ERROR: ours exited $rc, $p of $n images primary on site-a; stderr: $(tail -5 "$WORK/ours.err")"
  fi
  slowest=$(jq '[.images[]?.seconds] | max // 0' "$WORK/ours.json" 2>/dev/null || echo '?')
  rec ours "failover_${n}_secs" "${R[$n.ours]}" s "site-b -> site-a, rbd-mirror-rs failover --planned --parallel $PARALLEL (exit $rc, $p/$n primary after; slowest image ${slowest}s)"
  R[$n.ratio]=$(calc "${R[$n.loop]} / ${R[$n.ours]}" 1)
  rec ratio "loop_over_ours_$n" "${R[$n.ratio]}" x ""
  log "$n: ours: ${R[$n.ours]} s (exit $rc, slowest image ${slowest}s): ${R[$n.ratio]}x faster than the loop"
  "$LAB" mirror-stop site-a >&2; "$LAB" mirror-stop site-b >&2
  delete_pool site-a "$FPOOL"; delete_pool site-b "$FPOOL"
done

{
  echo "planned failover, $(date -u +%F\ %TZ), lab $STATE, $(nproc) CPUs, load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-7s %10s %10s %12s\n' images loop_s ours_s loop/ours
  for n in $COUNTS; do printf '%-7s %10s %10s %12s\n' "$n" "${R[$n.loop]:--}" "${R[$n.ours]:--}" "${R[$n.ratio]:--}"; done
  echo "(loop: serial demote / status every ${POLL}s / promote, site-a -> site-b; ours: rbd-mirror-rs failover --planned --parallel $PARALLEL, site-b -> site-a)"
  echo "goals: ours <= 10 s for 10 images; >= 5x faster than the loop at 100"
  echo "results: $OUT"
} | tee "$SUMMARY"
((FAILED == 0)) || { log "FAILED: a failover did not complete (see above)"; exit 3; }
