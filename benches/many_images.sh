#!/usr/bin/env bash
# benches/many_images.sh — scale: one daemon at site-b mirroring many small images (half journal,
# half snapshot mode), stock rbd-mirror vs rbd-mirror-rs, then ours as 2 and 3 instances; on the
# project lab (tests/lab/lab.sh, which must already be up), in one run (issue 16).
#
# Everything happens in a dedicated pool, BENCH_POOL (default `scale`), created and peered by
# this script on both sites (`rbd mirror pool enable <pool> image`, `rbd mirror pool peer
# bootstrap create` on site-a, `import --direction rx-tx` on site-b, as lab.sh peers `mirror`)
# and deleted at the end, also on failure (exit trap); pool `mirror` is not touched.
#
# For each daemon (BENCH_DAEMONS, default "stock ours"), each alone at site-b:
#  1. stop every rbd-mirror at site-b; delete the pool on both sites if left over, create it on
#     both, peer it;
#  2. create BENCH_IMAGES images on site-a, mirroring off: jNNNN (layering, exclusive-lock,
#     object-map, fast-diff, journaling) and sNNNN (the same without journaling), alternately,
#     BENCH_IMAGE_SIZE each, thin, BENCH_FILL bytes written at offset 0 of each (so the initial
#     syncs copy something); one python3-rbd process (librbd's Python binding, from the
#     python3-rbd package ceph-common depends on): `rbd create` one by one costs a process
#     and a cluster connection per image;
#  3. start the daemon at site-b; wait until its admin socket shows it leading the pool's
#     replayer (`rbd mirror status`: pool_replayers[pool].leader), so start-up is not counted;
#  4. enable mirroring image by image, alternately `journal` and `snapshot` (the pool is in
#     image mode: a per-image mode needs `rbd mirror image enable <img> <mode>`; pool mode
#     would make every journaling image journal-mirrored and cannot give snapshot mode), in
#     one python3-rbd process (Image.mirror_image_enable), in the background;
#     time to all replaying = from just before the first enable until site-b's
#     `rbd mirror pool status <pool> --verbose --format json` shows every image
#     `up+replaying` (polled every BENCH_POLL s; an image whose status was written by a daemon
#     no longer running is `down+...`; the summary's states are not used: Pacific counts an
#     image there as `unknown` while its peer site, site-a, has no status for it).
#     It includes the enabling itself (enable_secs: site-a's own work, the same for both
#     daemons) and the initial syncs of the small images. CPU and VmHWM of that phase too.
#  5. BENCH_SETTLE s, then idle for BENCH_IDLE s: daemon CPU (utime+stime from /proc/PID/stat
#     over the window, % of one core), VmRSS at the end, VmHWM;
#  6. trickle for BENCH_TRICKLE s: BENCH_TRICKLE_IMAGES images (half j, half s) written from one
#     python3-rbd process on site-a: a 4 KiB write at a random offset every second to each, and
#     every BENCH_SNAP_INTERVAL s a mirror snapshot of each snapshot-mode one
#     (Image.mirror_image_create_snapshot); daemon CPU and RSS over that window; the image
#     states after it.
#  The pool of the last daemon is kept for the next phase.
# Then ours as BENCH_INSTANCES (default "2 3") instances at site-b (BENCH_MULTI_DAEMONS,
# default "ours"; "stock ours" runs stock's instances too, on the images already replicated):
#  7. stop every rbd-mirror at site-b; t0; start instances 1..k (`lab.sh mirror-start site-b`
#     with RBD_MIRROR_LAB_MIRROR_INSTANCE=2..k for the others); time until every image is
#     up+replaying again (the statuses the stopped daemons wrote read down+...); each
#     instance's share = `.pool_replayers[] | select(.pool == <pool>) | .image_replayers |
#     length` from its admin socket (<lab>/site-b/run/client.rbd-mirror.b{,2,3}.asok), at that
#     moment; the first instance started may take every image before the others register,
#     the leader then moves some: settled = from the start until the shares (all images
#     up+replaying, shares summing to the images) were first what they then stayed for
#     BENCH_STABLE s; then an idle window of BENCH_MULTI_IDLE s: each instance's CPU and RSS,
#     the shares again.
# Every TSV row carries /proc/loadavg at the time it was written: other work on the machine
# shows there. Prints a table and ratios ours/stock; TSV and the printed summary in
# benches/results/many_images-<UTC time>.{tsv,txt}.
#
# usage: benches/many_images.sh            (from any directory; the lab must be up)
#        BENCH_IMAGES=50 BENCH_IDLE=20 BENCH_TRICKLE=20 benches/many_images.sh   (quick)
# Environment:
#   BENCH_IMAGES=1000          images (half journal, half snapshot mode)
#   BENCH_IMAGE_SIZE=32M       size of each (thin)
#   BENCH_FILL=64K             bytes written at offset 0 of each image before mirroring (0: none)
#   BENCH_DAEMONS="stock ours" single-instance runs, in this order
#   BENCH_INSTANCES="2 3"      instance counts of the multi-instance phase ("" skips it)
#   BENCH_MULTI_DAEMONS=ours   daemons of the multi-instance phase ("stock ours": both)
#   BENCH_SETTLE=10            seconds between all replaying and the idle window
#   BENCH_IDLE=60              idle window, seconds
#   BENCH_TRICKLE=60           trickle window, seconds
#   BENCH_TRICKLE_IMAGES=10    images written during the trickle
#   BENCH_SNAP_INTERVAL=10     seconds between two mirror snapshots of a snapshot-mode image
#   BENCH_MULTI_IDLE=30        idle window of the multi-instance runs, seconds
#   BENCH_TIMEOUT=1800         seconds allowed for all images to be replaying
#   BENCH_POLL=1               seconds between two looks at the pool status
#   BENCH_POOL=scale           the dedicated pool (created and deleted on both sites)
#   BENCH_PG_NUM=16            its placement groups
#   BENCH_THREADS=8            threads of the python3-rbd process creating and enabling images
#   BENCH_STABLE=30            multi-instance runs: seconds the shares must stay the same
#   BENCH_OURS_ARGS=           more arguments for ours, every run (e.g.
#                              "--rbd_mirror_journal_poll_age=5": stock's default)
#   BENCH_MULTI_ARGS=          more arguments for every instance of the multi-instance runs
#                              (e.g. "--rbd_mirror_image_policy_migration_throttle=10": the
#                              leader maps every image to the instances it knows, often only
#                              itself right after a start, and moves an image to a newer
#                              instance only once it has been mapped that long, 300 s by default)
#   RBD_MIRROR_RS_BIN          our daemon (default <repo>/target/release/rbd-mirror-rs, built
#                              with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_INSTANCE    which lab (0..3, as tests/lab/lab.sh; default 0)
#   RBD_MIRROR_LAB_DIR         lab state (default as lab.sh)
#   BENCH_OUT                  TSV path (default benches/results/many_images-<UTC date>.tsv;
#                              the summary goes beside it, .txt)
# Exit status: 0 when all ran and every image was replaying in each run; 3 when some run did
# not get all images replaying (the figures are still printed); 1 on any other error.
set -euo pipefail
BENCH=many_images
source "$(dirname "$(readlink -f "$0")")/lib.sh"

IMAGES=${BENCH_IMAGES:-1000}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-32M}
FILL=${BENCH_FILL:-64K}
DAEMONS=${BENCH_DAEMONS:-stock ours}
INSTANCES=${BENCH_INSTANCES-2 3}
MULTI_DAEMONS=${BENCH_MULTI_DAEMONS:-ours}
SETTLE=${BENCH_SETTLE:-10}
IDLE=${BENCH_IDLE:-60}
TRICKLE=${BENCH_TRICKLE:-60}
TRICKLE_IMAGES=${BENCH_TRICKLE_IMAGES:-10}
SNAP_INTERVAL=${BENCH_SNAP_INTERVAL:-10}
MULTI_IDLE=${BENCH_MULTI_IDLE:-30}
TIMEOUT=${BENCH_TIMEOUT:-1800}
POLL=${BENCH_POLL:-1}
SPOOL=${BENCH_POOL:-scale}
PG_NUM=${BENCH_PG_NUM:-16}
THREADS=${BENCH_THREADS:-8}
OURS_ARGS=${BENCH_OURS_ARGS:-}
MULTI_ARGS=${BENCH_MULTI_ARGS:-}
STABLE=${BENCH_STABLE:-30}
OUT=${BENCH_OUT:-$REPO/benches/results/many_images-$STAMP.tsv}
SUMMARY=${OUT%.tsv}.txt

# ---- preconditions -------------------------------------------------------------------------------
check_lab rbd ceph jq awk timeout numfmt getconf "$PY"
[[ $SPOOL != "$POOL" ]] || die "BENCH_POOL must not be the lab's pool $POOL"
SIZE_BYTES=$(numfmt --from=iec "$IMAGE_SIZE") || die "BENCH_IMAGE_SIZE=$IMAGE_SIZE is not a size"
FILL_BYTES=$(numfmt --from=iec "$FILL") || die "BENCH_FILL=$FILL is not a size"
((IMAGES >= 2 && TRICKLE_IMAGES <= IMAGES && FILL_BYTES <= SIZE_BYTES)) ||
  die "need BENCH_IMAGES >= 2, BENCH_TRICKLE_IMAGES <= BENCH_IMAGES, BENCH_FILL <= BENCH_IMAGE_SIZE"
for d in $MULTI_DAEMONS; do [[ $d == stock || $d == ours ]] || die "unknown daemon '$d' in BENCH_MULTI_DAEMONS"; done
for k in $INSTANCES; do [[ $k =~ ^[2-9]$ ]] || die "BENCH_INSTANCES: $k is not 2..9"; done

daemon_bench "$DAEMONS $MULTI_DAEMONS"
# our TSV: lib.sh's columns plus the load average of the machine when the row was written
printf 'daemon\tmeasure\tvalue\tunit\tloadavg\tnote\n' >"$OUT"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
rec() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(loadavg)" "$5" >>"$OUT"; }

# ---- cleanup: the pool on both sites, the trickle writer; then lib.sh's (stops site-b's daemons)
TRICKLER=
scale_cleanup() {
  if [[ -n $TRICKLER ]]; then kill "$TRICKLER" 2>/dev/null || true; fi
  "$LAB" mirror-stop site-b >/dev/null 2>&1 || log "WARNING: lab.sh mirror-stop site-b failed"
  delete_pool site-a "$SPOOL"; delete_pool site-b "$SPOOL"
}
scale_exit() { local rc=$?; scale_cleanup; (exit "$rc"); on_exit; }
trap scale_exit EXIT

# ---- helpers -------------------------------------------------------------------------------------
asok() { echo "$STATE/site-b/run/client.rbd-mirror.b$([[ $1 == 1 ]] || echo "$1").asok"; }
inst_pid() {  # k: pid of site-b's instance k
  local f pid _exe
  f=$STATE/site-b/run/rbd-mirror.b$([[ $1 == 1 ]] || echo "$1").pid
  [[ -f $f ]] || return 1
  read -r pid _exe <"$f"; [[ -d /proc/$pid ]] || return 1
  echo "$pid"
}
# this instance's pool replayer of SPOOL ({} while it has none or does not answer)
pool_replayer() {
  timeout 20 ceph --admin-daemon "$(asok "$1")" rbd mirror status --format json 2>/dev/null |
    jq -c --arg p "$SPOOL" '[.pool_replayers[]? | select(.pool == $p)][0] // {}' 2>/dev/null || echo '{}'
}
share() { pool_replayer "$1" | jq '.image_replayers // [] | length'; }
# site-b's images by local status state ({"up+replaying": N, ...}). Not the summary's states:
# Pacific's summary counts an image whose peer site (site-a, no daemon there) has no status as
# "unknown", whatever site-b's own status is.
states() {
  rbdc site-b mirror pool status "$SPOOL" --verbose --format json 2>/dev/null |
    jq -c '[.images[]?.state] | group_by(.) | map({(.[0]): length}) | add // {}' || echo '{}'
}
nreplaying() { jq '."up+replaying" // 0' <<<"$1"; }
pct() { calc "($2 - $1) / $HZ / $3 * 100" 2; }     # ticks0 ticks1 seconds: % of one core
mib() { calc "${1:-0} / 1024" 1; }


images_py
py() { SCALE_THREADS=$THREADS timeout "$TIMEOUT" "$PY" "$WORK/images.py" "$1" site-a "$(conf site-a)" "$SPOOL" "${@:2}"; }

# wait_all T0 PROC: until every image is replaying (and the background PROC, if any, is done);
# prints the seconds since T0, or "timeout"; the last states in $WORK/states
wait_all() {
  local t0=$1 bg=${2:-} st
  while :; do
    st=$(states); echo "$st" >"$WORK/states"
    if (($(nreplaying "$st") >= IMAGES)) && { [[ -z $bg ]] || ! kill -0 "$bg" 2>/dev/null; }; then
      calc "$(now) - $t0"; return 0
    fi
    if (($(calc "$(now) - $t0" 0) >= TIMEOUT)); then echo timeout; return 0; fi
    sleep "$POLL"
  done
}
# window D SECS PID...: CPU % of one core and RSS of each PID over SECS s; rows under D
window() {
  local d=$1 w=$2 what=$3; shift 3
  local -a pids=("$@") c0 c1
  local i t0 t1
  for i in "${!pids[@]}"; do c0[i]=$(cpu_ticks "${pids[i]}"); done
  t0=$(now); sleep "$w"; t1=$(now)
  local secs; secs=$(calc "$t1 - $t0" 1)
  for i in "${!pids[@]}"; do
    [[ -d /proc/${pids[i]} ]] || { log "ERROR: $d: pid ${pids[i]} exited during the $what window"; FAILED=1; continue; }
    c1[i]=$(cpu_ticks "${pids[i]}")
    local tag=$d; ((${#pids[@]} == 1)) || tag=$d.i$((i + 1))
    R[$tag.${what}_cpu]=$(pct "${c0[i]}" "${c1[i]}" "$secs")
    R[$tag.${what}_rss]=$(mib "$(kib "${pids[i]}" VmRSS)")
    R[$tag.${what}_hwm]=$(mib "$(kib "${pids[i]}" VmHWM)")
    rec "$tag" "${what}_cpu" "${R[$tag.${what}_cpu]}" "%core" "utime+stime over ${secs}s ($what window), % of one core"
    rec "$tag" "${what}_rss" "${R[$tag.${what}_rss]}" MiB "VmRSS at the end of the $what window"
    rec "$tag" "${what}_hwm" "${R[$tag.${what}_hwm]}" MiB "VmHWM at the end of the $what window"
    log "$tag: $what ${secs}s: CPU ${R[$tag.${what}_cpu]} % of a core, VmRSS ${R[$tag.${what}_rss]} MiB, VmHWM ${R[$tag.${what}_hwm]} MiB (load $(loadavg))"
  done
}

FAILED=0
declare -A R
rec meta images "$IMAGES" images "half journal (jNNNN), half snapshot (sNNNN) mode, $IMAGE_SIZE each, $FILL written at offset 0"
rec meta machine "$(nproc)" cpus "$(uname -r); lab $STATE; ours $([[ -n ${OURS_BIN:-} ]] && echo "$OURS_BIN" || echo -) (repo at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')); ours' extra args: ${OURS_ARGS:-none}; multi-instance extra args: ${MULTI_ARGS:-none}"

# ---- one daemon alone ------------------------------------------------------------------------------
run_daemon() {
  local d=$1 pid t c0 c1 tc st end
  log "== $d alone at site-b: $IMAGES images in pool $SPOOL"
  "$LAB" mirror-stop site-b >&2
  setup_pool "$SPOOL" "$PG_NUM"
  t=$(now); py create "$IMAGES" "$SIZE_BYTES" "$FILL_BYTES" || die "creating the images failed"
  R[$d.create]=$(calc "$(now) - $t" 1)
  rec "$d" create_secs "${R[$d.create]}" s "python3-rbd: $IMAGES x create $IMAGE_SIZE + write $FILL at 0, one process, $THREADS threads"
  log "$d: $IMAGES images created on site-a in ${R[$d.create]}s"

  t=$(now); pid=$(RBD_MIRROR_LAB_MIRROR_ARGS=$([[ $d == ours ]] && echo "$OURS_ARGS") start_daemon "$d")
  end=$((SECONDS + 120))
  until [[ $(pool_replayer 1 | jq -r '.leader // false') == true ]]; do
    ((SECONDS < end)) || die "$d: no pool replayer of $SPOOL leading 120 s after start"
    sleep 0.5
  done
  rec "$d" ready_secs "$(calc "$(now) - $t" 1)" s "lab.sh mirror-start -> admin socket shows the pool replayer of $SPOOL leading"
  c0=$(cpu_ticks "$pid")

  py enable "$IMAGES" >"$WORK/enable.out" &
  local bg=$!
  until grep -q '^first ' "$WORK/enable.out" 2>/dev/null; do
    kill -0 "$bg" 2>/dev/null || { wait "$bg" || true; die "enabling failed: $(cat "$WORK/enable.out")"; }
    sleep 0.1
  done
  local t0; t0=$(awk '/^first / { print $2 }' "$WORK/enable.out")
  tc=$(wait_all "$t0" "$bg")
  wait "$bg" || die "$d: enabling mirroring failed"
  local tl; tl=$(awk '/^last / { print $2 }' "$WORK/enable.out")
  st=$(cat "$WORK/states"); c1=$(cpu_ticks "$pid")
  R[$d.enable]=$(calc "$tl - $t0" 1); R[$d.all]=$tc
  rec "$d" enable_secs "${R[$d.enable]}" s "first -> last Image.mirror_image_enable on site-a (alternately journal, snapshot; $THREADS threads)"
  if [[ $tc == timeout ]]; then
    FAILED=1; log "ERROR: $d: not all $IMAGES images replaying after ${TIMEOUT}s: $st"; log_tail
    rec "$d" all_replaying timeout s "states $st"
  else
    R[$d.cpu_sync]=$(calc "($c1 - $c0) / $HZ" 1)
    rec "$d" all_replaying "$tc" s "first enable -> site-b pool status --verbose: all $IMAGES up+replaying (poll ${POLL}s)"
    rec "$d" all_after_last_enable "$(calc "$tc - (${tl} - ${t0})" 1)" s "last enable -> all replaying"
    rec "$d" sync_cpu "${R[$d.cpu_sync]}" cpu-s "utime+stime, daemon ready -> all replaying"
    log "$d: all $IMAGES replaying ${tc}s after the first enable (enabling took ${R[$d.enable]}s), CPU ${R[$d.cpu_sync]}s"
  fi
  R[$d.hwm_sync]=$(mib "$(kib "$pid" VmHWM)")
  rec "$d" sync_hwm "${R[$d.hwm_sync]}" MiB "VmHWM when all replaying"
  rec "$d" states_all "$st" - "site-b image states then"

  sleep "$SETTLE"
  window "$d" "$IDLE" idle "$pid"
  rec "$d" states_idle "$(states)" - "after the idle window"

  py trickle "$TRICKLE_IMAGES" "$TRICKLE" "$SNAP_INTERVAL" >"$WORK/trickle.out" &
  TRICKLER=$!
  window "$d" "$TRICKLE" trickle "$pid"
  wait "$TRICKLER" || { log "ERROR: the trickle writer failed"; FAILED=1; }
  TRICKLER=
  st=$(states)
  rec "$d" trickle_io "$(cat "$WORK/trickle.out")" - "$TRICKLE_IMAGES images, 4K/s each, a mirror snapshot of the snapshot-mode ones every ${SNAP_INTERVAL}s"
  rec "$d" states_trickle "$st" - "after the trickle"
  (($(nreplaying "$st") >= IMAGES)) || { log "WARNING: $d: after the trickle: $st"; }
  "$LAB" mirror-stop site-b >&2
}

for d in $DAEMONS; do run_daemon "$d"; done

# ---- several instances -----------------------------------------------------------------------------
run_multi() {  # daemon k
  local d=$1 k=$2 i t0 tc tag=$1-x$2 st
  log "== $d as $k instances at site-b, the $IMAGES images already replicated"
  "$LAB" mirror-stop site-b >&2
  st=$(states)
  (($(nreplaying "$st") == 0)) || log "WARNING: with no daemon, site-b still shows up+replaying images: $st"
  local bin='' args=$MULTI_ARGS; [[ $d == ours ]] && bin=$OURS_BIN && args="$OURS_ARGS $MULTI_ARGS"
  t0=$(now)
  for ((i = 1; i <= k; i++)); do
    RBD_MIRROR_LAB_MIRROR_INSTANCE=$([[ $i == 1 ]] || echo "$i") RBD_MIRROR_LAB_MIRROR_BIN=$bin CEPH_LAB_MIRROR_BIN='' \
      RBD_MIRROR_LAB_MIRROR_ARGS=$args \
      "$LAB" mirror-start site-b >&2
  done
  local -a pids=()
  local p
  for ((i = 1; i <= k; i++)); do p=$(inst_pid "$i") || die "$d: instance $i did not start"; pids+=("$p"); done
  # until all up+replaying (t_all, the shares then), and then until the shares (summing to
  # IMAGES, all up+replaying) have not changed for STABLE s (t_settled: when they first were so)
  local t_all='' sh_all='' t_set='' sh_last='' since='' tn n sum
  while :; do
    st=$(states); n=$(nreplaying "$st"); tn=$(now)
    local shares=(); for ((i = 1; i <= k; i++)); do shares+=("$(share "$i")"); done
    local sh; sh=$(IFS=/; echo "${shares[*]}"); sum=$(IFS=+; echo $((${shares[*]})))
    if ((n >= IMAGES)); then
      [[ -n $t_all ]] || { t_all=$(calc "$tn - $t0"); sh_all=$sh; log "$tag: all $IMAGES up+replaying ${t_all}s after the start; shares $sh"; }
      if ((sum == IMAGES)) && [[ $sh == "$sh_last" ]]; then
        if (($(calc "$tn - $since" 0) >= STABLE)); then t_set=$(calc "$since - $t0"); break; fi
      elif ((sum == IMAGES)); then sh_last=$sh; since=$tn
      else sh_last=
      fi
    else sh_last=
    fi
    if (($(calc "$tn - $t0" 0) >= TIMEOUT)); then break; fi
    sleep "$POLL"
  done
  R[$tag.all]=${t_all:-timeout}; R[$tag.share]=${sh_all:--}; R[$tag.settled]=${t_set:-timeout}; R[$tag.share2]=${sh_last:--}
  if [[ -z $t_set ]]; then
    FAILED=1; log "ERROR: $tag: no steady split of all $IMAGES up+replaying images within ${TIMEOUT}s: states $st, shares $sh"
  fi
  rec "$tag" all_replaying "${R[$tag.all]}" s "start of instance 1 (all $k started one after the other) -> all $IMAGES up+replaying"
  rec "$tag" share_at_all "${R[$tag.share]}" images "admin socket image_replayers of pool $SPOOL, instances 1..$k, when all up+replaying"
  rec "$tag" settled "${R[$tag.settled]}" s "start -> the shares below first seen (all up+replaying, summing to $IMAGES), unchanged for ${STABLE}s after"
  rec "$tag" share_settled "${R[$tag.share2]}" images "admin socket image_replayers of pool $SPOOL, instances 1..$k"
  log "$tag: settled ${R[$tag.settled]}s after the start: shares ${R[$tag.share2]}"
  window "$tag" "$MULTI_IDLE" idle "${pids[@]}"
  local shares=(); for ((i = 1; i <= k; i++)); do shares+=("$(share "$i")"); done
  R[$tag.share3]=$(IFS=/; echo "${shares[*]}")
  local leaders=(); for ((i = 1; i <= k; i++)); do leaders+=("$(pool_replayer "$i" | jq -r 'if .leader == null then "?" else .leader end')"); done
  rec "$tag" share_after_idle "${R[$tag.share3]}" images "the same after the ${MULTI_IDLE}s idle window; leader flags $(IFS=/; echo "${leaders[*]}")"
  rec "$tag" states_idle "$(states)" - "after the idle window"
  log "$tag: share after ${MULTI_IDLE}s: ${R[$tag.share3]} (leader flags $(IFS=/; echo "${leaders[*]}"))"
  "$LAB" mirror-stop site-b >&2
}
if [[ -n $INSTANCES ]]; then
  for d in $MULTI_DAEMONS; do for k in $INSTANCES; do run_multi "$d" "$k"; done; done
fi

# ---- report --------------------------------------------------------------------------------------
v() { echo "${R[$1]:--}"; }
{
  echo "many images: $IMAGES images (half journal, half snapshot), $IMAGE_SIZE, pool $SPOOL ($(date -u +%F\ %TZ), lab $STATE, $(nproc) CPUs, shared machine: load at the end $(loadavg))"
  printf '%-6s %8s %8s %11s %9s %10s %9s %9s %11s %10s %10s\n' daemon create_s enable_s all_repl_s sync_cpu_s sync_hwm idle_cpu% idle_rss idle_hwm trickle_cpu% trickle_rss
  for d in $DAEMONS; do
    printf '%-6s %8s %8s %11s %9s %10s %9s %9s %11s %10s %10s\n' "$d" "$(v "$d.create")" "$(v "$d.enable")" "$(v "$d.all")" \
      "$(v "$d.cpu_sync")" "$(v "$d.hwm_sync")" "$(v "$d.idle_cpu")" "$(v "$d.idle_rss")" "$(v "$d.idle_hwm")" "$(v "$d.trickle_cpu")" "$(v "$d.trickle_rss")"
  done
  echo "(all_repl_s: first enable -> all replaying, enabling included; CPU in % of one core; RSS/HWM in MiB)"
  if [[ -n $INSTANCES ]]; then
    echo
    printf '%-10s %11s %14s %10s %14s %s\n' instances all_repl_s share_at_all settled_s share_settled "idle CPU % / RSS MiB per instance"
    for d in $MULTI_DAEMONS; do for k in $INSTANCES; do
      local_tag=$d-x$k; per=()
      for ((i = 1; i <= k; i++)); do per+=("$(v "$local_tag.i$i.idle_cpu")/$(v "$local_tag.i$i.idle_rss")"); done
      printf '%-10s %11s %14s %10s %14s %s\n' "$local_tag" "$(v "$local_tag.all")" "$(v "$local_tag.share")" "$(v "$local_tag.settled")" "$(v "$local_tag.share2")" "${per[*]}"
    done; done
  fi
  if [[ -n ${R[ours.idle_cpu]:-} ]]; then
    echo
    echo "ours idle CPU: ${R[ours.idle_cpu]} % of a core (goal < 2); idle RSS ${R[ours.idle_rss]} MiB, VmHWM ${R[ours.idle_hwm]} MiB (goal < 200)"
  fi
  if [[ -n ${R[ours.idle_cpu]:-} && -n ${R[stock.idle_cpu]:-} ]]; then
    r() { if [[ -n ${R[ours.$1]:-} && -n ${R[stock.$1]:-} && ${R[stock.$1]} != timeout && ${R[ours.$1]} != timeout ]] &&
      awk -v s="${R[stock.$1]}" 'BEGIN { exit !(s > 0) }'; then calc "${R[ours.$1]} / ${R[stock.$1]}" 2; else echo -; fi; }
    echo "ours / stock: all replaying $(r all)x, sync CPU $(r cpu_sync)x, idle CPU $(r idle_cpu)x, idle RSS $(r idle_rss)x," \
      "trickle CPU $(r trickle_cpu)x, trickle RSS $(r trickle_rss)x"
    for m in all cpu_sync idle_cpu idle_rss idle_hwm trickle_cpu trickle_rss; do rec ratio "ours_over_stock_$m" "$(r "$m")" x ""; done
  fi
  echo "results: $OUT"
} | tee "$SUMMARY"
((FAILED == 0)) || { log "FAILED: some run did not get all images replaying, or a daemon exited (see above)"; exit 3; }
