#!/usr/bin/env bash
# benches/snapshot_sync.sh — snapshot-mode sync of one image by an rbd-mirror daemon at site-b,
# on the project lab (tests/lab/lab.sh, which must already be up). Modelled on journal_replay.sh.
#
# For each daemon (BENCH_DAEMONS, default "stock ours": the stock rbd-mirror, then rbd-mirror-rs):
#  1. stop every rbd-mirror of the lab; create mirror/snapbench-<daemon>-<rand> on site-a
#     (BENCH_IMAGE_SIZE, layering,exclusive-lock,object-map,fast-diff) and fill it completely
#     (rbd bench 4M sequential writes); start the daemon at site-b;
#  2. full sync: t0 = `rbd mirror image enable <img> snapshot` on site-a (which takes the first
#     primary mirror snapshot); done = site-b has a non-primary mirror snapshot, complete, of
#     that primary snapshot id (`rbd snap ls --all` on site-b, every BENCH_POLL s);
#  3. incremental sync: BENCH_CHANGE (default 10 %) of the image rewritten at random
#     (rbd bench 4M random writes, whole objects), then t1 = `rbd mirror image snapshot`;
#     done = the complete non-primary snapshot of that new primary snapshot on site-b;
#  4. `rbd export | sha256sum` of site-a's HEAD (unchanged since the snapshot) and site-b's HEAD
#     (= the complete non-primary snapshot; rbd export cannot name mirror snapshots); CPU (utime+stime of the daemon, /proc) during each sync, peak
#     RSS (VmRSS every 0.5 s, VmHWM);
#  5. detection, 3 times: `rbd mirror image snapshot` of the unchanged image, then the time until
#     site-b has a non-primary snapshot (complete or not) of it (polled every 50 ms); median;
#  6. stop the daemon, delete both copies.
# Then site-b's raw bandwidth: rbd bench --io-type write --io-size 4M --io-pattern seq
# (BENCH_IMAGE_SIZE) on a scratch image, no daemon running.
# Prints a table and ratios; one TSV row per daemon/measure in benches/results/.
#
# usage: benches/snapshot_sync.sh            (from any directory; the lab must be up)
# Environment:
#   BENCH_DAEMONS="stock ours"  which daemons, in this order ("ours" alone, "stock" alone)
#   BENCH_IMAGE_SIZE=1G      size of the bench image (filled completely)
#   BENCH_CHANGE=10          percent of the image rewritten before the incremental sync
#   BENCH_TIMEOUT=900        seconds allowed for one sync
#   BENCH_POLL=0.5           seconds between two looks at site-b's snapshots
#   RBD_MIRROR_RS_BIN        our daemon (default <repo>/target/release/rbd-mirror-rs, built
#                            with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_DIR       lab state (default /tmp/rbd-mirror-rs-lab; see
#                            RBD_MIRROR_LAB_INSTANCE in tests/lab/lab.sh)
#   BENCH_OUT                TSV path (default benches/results/snapshot_sync-<UTC date>.tsv)
# Exit status: 0 when all ran and every checksum matched; 3 on a mismatch or a sync that did not
# finish (the figures are still printed); 1 on any other error.
set -euo pipefail
BENCH=snapshot_sync
source "$(dirname "$(readlink -f "$0")")/lib.sh"

DAEMONS=${BENCH_DAEMONS:-stock ours}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-1G}
CHANGE=${BENCH_CHANGE:-10}
TIMEOUT=${BENCH_TIMEOUT:-900}
POLL=${BENCH_POLL:-0.5}
FEATURES=layering,exclusive-lock,object-map,fast-diff
OUT=${BENCH_OUT:-$REPO/benches/results/snapshot_sync-$STAMP.tsv}

# ---- preconditions -----------------------------------------------------------------------------
check_lab rbd jq awk timeout sha256sum numfmt getconf
SIZE_BYTES=$(numfmt --from=iec "$IMAGE_SIZE") || die "BENCH_IMAGE_SIZE=$IMAGE_SIZE is not a size"
OBJECTS=$(((SIZE_BYTES + (4 << 20) - 1) >> 22))
CHANGE_OBJECTS=$((OBJECTS * CHANGE / 100))
((CHANGE_OBJECTS > 0)) || die "BENCH_CHANGE=$CHANGE% of $OBJECTS objects is nothing"

daemon_bench "$DAEMONS"

# ---- helpers -------------------------------------------------------------------------------------
# id of site-a's newest primary mirror snapshot of the image
primary_snap() {
  rbdc site-a snap ls --all --format json "$POOL/$1" |
    jq -r '[.[] | select(.namespace.type == "mirror" and .namespace.state == "primary")] | max_by(.id) | .id // empty'
}
# name of site-b's complete non-primary snapshot of primary snapshot $2, if any
synced_snap() {  # image primary-snap-id
  rbdc site-b snap ls --all --format json "$POOL/$1" 2>/dev/null |
    jq -r --argjson p "$2" '[.[] | select(.namespace.type == "mirror" and .namespace.state == "non-primary"
      and .namespace.primary_snap_id == $p and .namespace.complete == true)] | .[0].name // empty' 2>/dev/null || true
}

# seconds from T0 until site-b has a non-primary snapshot (complete or not) of primary snapshot
# $2: how long the daemon took to notice the new primary snapshot and start on it
seen_after() {  # image primary-snap-id t0
  local end; end=$(awk -v t="$3" 'BEGIN { printf "%d", t + 60 }')
  while (($(date +%s) < end)); do
    if rbdc site-b snap ls --all --format json "$POOL/$1" 2>/dev/null |
      jq -e --argjson p "$2" 'any(.[]; .namespace.primary_snap_id == $p)' >/dev/null 2>&1; then
      calc "$(now) - $3"; return
    fi
    sleep 0.05
  done
  echo -
}

# wait_synced DAEMON IMAGE PID T0 PRIMARY_SNAP PHASE: sets R[daemon.phase.*]
wait_synced() {
  local d=$1 img=$2 pid=$3 t0=$4 psnap=$5 ph=$6 c0=$7 name= t1 end
  end=$(awk -v t="$t0" -v w="$TIMEOUT" 'BEGIN { printf "%d", t + w }')
  while :; do
    [[ -d /proc/$pid ]] || { log "ERROR: $d daemon (pid $pid) exited during the $ph sync"; break; }
    name=$(synced_snap "$img" "$psnap"); t1=$(now)
    [[ -n $name ]] && break
    (($(date +%s) < end)) || { log "ERROR: $d: $ph sync not done within ${TIMEOUT}s"; break; }
    sleep "$POLL"
  done
  local c1=$c0
  [[ -d /proc/$pid ]] && c1=$(cpu_ticks "$pid")
  R[$d.$ph.done]=$([[ -n $name ]] && echo 1 || echo 0)
  R[$d.$ph.secs]=$(calc "$t1 - $t0")
  R[$d.$ph.cpu]=$(calc "($c1 - $c0) / $HZ" 2)
  R[$d.$ph.snap]=$name
}

# ---- one daemon --------------------------------------------------------------------------------
FAILED=0
declare -A R   # R[daemon.phase.measure]
run_daemon() {
  local d=$1 img pid t0 c0 psnap sa sb note
  img=snapbench-$d-$(printf '%04x%04x' $RANDOM $RANDOM)
  log "== $d: image $POOL/$img ($IMAGE_SIZE, filled)"
  "$LAB" mirror-stop all >&2
  CREATED+=("site-a $img" "site-b $img")
  rbdc site-a create "$POOL/$img" --size "$IMAGE_SIZE" --image-feature "$FEATURES" >/dev/null
  bench_4m site-a "$img" seq "$IMAGE_SIZE" >/dev/null

  pid=$(start_daemon "$d")
  start_rss_sampler "$pid"

  # full sync
  c0=$(cpu_ticks "$pid"); t0=$(now)
  rbdc site-a mirror image enable "$POOL/$img" snapshot >/dev/null
  psnap=$(primary_snap "$img"); [[ -n $psnap ]] || die "$d: no primary mirror snapshot after enable"
  wait_synced "$d" "$img" "$pid" "$t0" "$psnap" full "$c0"
  log "$d: full sync done=${R[$d.full.done]} in ${R[$d.full.secs]}s, cpu ${R[$d.full.cpu]}s"

  # incremental sync of CHANGE % random whole-object rewrites
  if [[ ${R[$d.full.done]} == 1 ]]; then
    bench_4m site-a "$img" rand "$((CHANGE_OBJECTS * 4))M" >/dev/null
    c0=$(cpu_ticks "$pid" 2>/dev/null || echo 0); t0=$(now)
    rbdc site-a mirror image snapshot "$POOL/$img" >/dev/null
    psnap=$(primary_snap "$img")
    wait_synced "$d" "$img" "$pid" "$t0" "$psnap" incr "$c0"
    log "$d: incremental sync done=${R[$d.incr.done]} in ${R[$d.incr.secs]}s, cpu ${R[$d.incr.cpu]}s"
  else
    R[$d.incr.done]=0; R[$d.incr.secs]=-; R[$d.incr.cpu]=-; FAILED=1; log_tail
  fi

  # detection: an unchanged image's new mirror snapshot, from the end of `rbd mirror image
  # snapshot` (the snapshot exists, librbd has notified the header) until site-b has its
  # non-primary snapshot; the median of 3 (polling `rbd snap ls` every 50 ms adds ~0.1 s)
  R[$d.detect]=-
  if [[ ${R[$d.incr.done]} == 1 ]]; then
    local tries=() i
    for i in 1 2 3; do
      rbdc site-a mirror image snapshot "$POOL/$img" >/dev/null; t0=$(now)
      psnap=$(primary_snap "$img")
      tries+=("$(seen_after "$img" "$psnap" "$t0")")
      wait_synced "$d" "$img" "$pid" "$t0" "$psnap" detect "$c0"
    done
    R[$d.detect]=$(printf '%s\n' "${tries[@]}" | sort -g | sed -n 2p)
    rec "$d" detection "${R[$d.detect]}" s "new primary mirror snapshot -> site-b non-primary snapshot exists; tries ${tries[*]} (median)"
    log "$d: detection ${tries[*]} s (median ${R[$d.detect]})"
  fi

  local hwm=0
  [[ -d /proc/$pid ]] && hwm=$(kib "$pid" VmHWM)
  stop_rss_sampler "$hwm"
  R[$d.rss]=$(calc "$RSS_MAX / 1024" 1)

  R[$d.sum]=-
  if [[ ${R[$d.incr.done]} == 1 ]]; then
    # (rbd export takes user-namespace snapshot names only: site-b's HEAD is what the complete
    # non-primary snapshot holds, site-a's HEAD has not changed since its primary snapshot)
    sa=$(sha site-a "$img"); sb=$(sha site-b "$img") || sb=export-failed
    if [[ $sa == "$sb" ]]; then R[$d.sum]=match; else R[$d.sum]=MISMATCH; FAILED=1; fi
    note="rbd export | sha256sum: site-a HEAD $sa, site-b HEAD (at ${R[$d.incr.snap]}) $sb"
    rec "$d" checksum "${R[$d.sum]}" - "$note"
  else
    FAILED=1; log_tail
  fi
  local gib_full gib_incr
  gib_full=$(calc "$SIZE_BYTES / 1073741824" 6); gib_incr=$(calc "$CHANGE_OBJECTS * 4 / 1024" 6)
  for ph in full incr; do
    local gib=$gib_full; [[ $ph == incr ]] && gib=$gib_incr
    if [[ ${R[$d.$ph.done]} == 1 ]]; then
      R[$d.$ph.mibs]=$(calc "$gib * 1024 / ${R[$d.$ph.secs]}" 1)
      R[$d.$ph.cpug]=$(calc "${R[$d.$ph.cpu]} / $gib" 2)
    else
      R[$d.$ph.mibs]=-; R[$d.$ph.cpug]=-
    fi
    rec "$d" "${ph}_sync" "${R[$d.$ph.secs]}" s "enable/mirror snapshot -> complete non-primary snapshot on site-b (poll ${POLL}s); done=${R[$d.$ph.done]}"
    rec "$d" "${ph}_rate" "${R[$d.$ph.mibs]}" MiB/s "$gib GiB / ${ph}_sync"
    rec "$d" "${ph}_cpu" "${R[$d.$ph.cpu]}" cpu-s "daemon utime+stime during the sync"
    rec "$d" "${ph}_cpu_per_gib" "${R[$d.$ph.cpug]}" cpu-s/GiB "of data synced"
  done
  rec "$d" peak_rss "${R[$d.rss]}" MiB "max(VmRSS every 0.5s, VmHWM), daemon start -> end of both syncs"

  "$LAB" mirror-stop site-b >&2
  cleanup_image site-a "$img"; cleanup_image site-b "$img"
}

for d in $DAEMONS; do run_daemon "$d"; done

# ---- raw reference on site-b --------------------------------------------------------------------
"$LAB" mirror-stop all >&2
RAW_IMG=snapbench-raw-$(printf '%04x%04x' $RANDOM $RANDOM)
CREATED+=("site-b $RAW_IMG")
rbdc site-b create "$POOL/$RAW_IMG" --size "$IMAGE_SIZE" --image-feature "$FEATURES" >/dev/null
RAW_MIBS=$(bench_4m site-b "$RAW_IMG" seq "$IMAGE_SIZE")
cleanup_image site-b "$RAW_IMG"
rec raw site_b_write_bandwidth "$RAW_MIBS" MiB/s "site-b rbd bench --io-type write --io-size 4M --io-pattern seq --io-threads 16 --io-total $IMAGE_SIZE, no daemon"
log "raw site-b 4M sequential write: $RAW_MIBS MiB/s"

# ---- report --------------------------------------------------------------------------------------
echo
echo "snapshot-mode sync of a $IMAGE_SIZE image, then $CHANGE % ($CHANGE_OBJECTS objects) rewritten ($(date -u +%F\ %TZ), lab $STATE)"
printf '%-6s %10s %10s %12s %10s %10s %12s %13s %9s\n' daemon full_s full_MiB/s full_cpu_s/GiB incr_s incr_MiB/s incr_cpu_s/GiB peak_RSS_MiB checksum
for d in $DAEMONS; do
  printf '%-6s %10s %10s %12s %10s %10s %12s %13s %9s\n' "$d" "${R[$d.full.secs]:--}" "${R[$d.full.mibs]:--}" \
    "${R[$d.full.cpug]:--}" "${R[$d.incr.secs]:--}" "${R[$d.incr.mibs]:--}" "${R[$d.incr.cpug]:--}" "${R[$d.rss]:--}" "${R[$d.sum]:--}"
done
printf '%-6s %10s %10s\n' raw - "$RAW_MIBS"
echo
for d in $DAEMONS; do echo "$d detection of a new mirror snapshot (median of 3): ${R[$d.detect]:--} s"; done
for d in $DAEMONS; do
  if [[ ${R[$d.full.mibs]:--} != - ]]; then
    echo "$d full sync / raw site-b bandwidth: $(calc "${R[$d.full.mibs]} / $RAW_MIBS" 3)"
    rec ratio "${d}_full_over_raw" "$(calc "${R[$d.full.mibs]} / $RAW_MIBS" 3)" x ""
  fi
done
if [[ ${R[ours.full.mibs]:--} != - && ${R[stock.full.mibs]:--} != - ]]; then
  echo "ours / stock: full sync s $(calc "${R[ours.full.secs]} / ${R[stock.full.secs]}" 2)x, peak RSS $(calc "${R[ours.rss]} / ${R[stock.rss]}" 2)x"
  for m in full.secs incr.secs full.cpug rss; do
    [[ ${R[ours.$m]:--} != - && ${R[stock.$m]:--} != - ]] &&
      rec ratio "ours_over_stock_${m/./_}" "$(calc "${R[ours.$m]} / ${R[stock.$m]}" 3)" x ""
  done
fi
echo "sync time = 'rbd mirror image enable' (full) or 'rbd mirror image snapshot' (incremental) on site-a until"
echo "  site-b lists a complete non-primary mirror snapshot of that primary snapshot (poll ${POLL}s)."
echo "results: $OUT"
((FAILED == 0)) || { log "FAILED: a sync did not finish or a checksum mismatched (see above)"; exit 3; }
