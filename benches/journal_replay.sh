#!/usr/bin/env bash
# benches/journal_replay.sh — journal-mode backlog replay, stock rbd-mirror vs rbd-mirror-rs,
# on the project lab (tests/lab/lab.sh, which must already be up), in one run.
#
# For each daemon (stock, ours):
#  1. stop every rbd-mirror of the lab; create mirror/bench-<daemon>-<rand> on site-a (1G,
#     layering,exclusive-lock,object-map,fast-diff,journaling), enable journal mirroring;
#  2. start the daemon at site-b, wait for `rbd mirror image status` = up+replaying (the empty
#     image's initial sync is done), stop it;
#  3. write the backlog on site-a (rbd bench 4K rand write, 16 threads, BENCH_BACKLOG bytes);
#  4. start the daemon, time until it has caught up (below); CPU (utime+stime), VmRSS sampled
#     every 0.5 s, VmHWM;
#  5. `rbd export | sha256sum` of both copies, repeated on site-b until equal (bounded);
#  6. stop the daemon, delete both copies.
# Then site-b's raw 4K random write rate on a scratch image (no journaling, no daemon running).
# Prints a table and the ratios; one TSV row per daemon/measure in benches/results/.
#
# usage: benches/journal_replay.sh            (from any directory; the lab must be up)
# Environment:
#   BENCH_BACKLOG=256M       backlog written while the daemon is stopped (e.g. 32M: quick run)
#   BENCH_RAW_TOTAL=256M     --io-total of the raw site-b reference bench
#   BENCH_DAEMONS="stock ours"   which daemons, in this order
#   BENCH_IMAGE_SIZE=1G      size of the bench images
#   BENCH_TIMEOUT=900        seconds allowed for one catch-up
#   BENCH_WAIT=300           seconds allowed for up+replaying after the initial sync
#   BENCH_POLL=0.5           seconds between two looks at the journal commit positions
#   BENCH_VERIFY=600         seconds to keep checking site-b after the commit position caught
#                            up, until it equals site-a (tells "late" from "wrong" data)
#   RBD_MIRROR_RS_BIN        our daemon (default <repo>/target/release/rbd-mirror-rs, built
#                            with `cargo build --release -p daemon` when missing)
#   RBD_MIRROR_LAB_INSTANCE  which lab (0..3, as tests/lab/lab.sh; default 0)
#   RBD_MIRROR_LAB_DIR       lab state (default as lab.sh: /tmp/rbd-mirror-rs-lab, or
#                            /tmp/rbd-mirror-rs-lab<N> for instance N > 0)
#   BENCH_OUT                TSV path (default benches/results/journal_replay-<UTC date>.tsv)
#   BENCH_SERIES             file to append the replay's progress to, one line per look at the
#                            peer's commit position: daemon, seconds since mirror-start, tag,
#                            entry_tid (for benches/report.py's throughput plot; default none)
#
# Signals, and their limits:
#  * commit catch-up = the site-b peer's journal client on site-a (id = site-b's pool mirror
#    uuid, from `rbd mirror pool info` on site-a) has a commit position >= the one the primary's
#    own client ("") had once the backlog was written (`rbd journal status`, every BENCH_POLL s).
#    A daemon writes its commit position only every so often (stock:
#    rbd_mirror_journal_commit_age = 5 s; ours: 1 s), so this is late by up to that plus a poll.
#    (The rbd-mirror asok perf counters the shared lab's bench.sh uses are stock-only; this
#    cluster-side signal measures both daemons alike.)
#  * catch-up = the commit catch-up if site-b's export, started right then, equals site-a's;
#    otherwise (the daemon committed positions before its writes landed; flagged MISMATCH/late)
#    the start of the first 2 s span, after the commit catch-up, in which the daemon used < 5%
#    of a CPU and after which site-b's export equals site-a's (checked again at each idle span;
#    a replica that never matches within BENCH_VERIFY is MISMATCH). That estimate is good to ~2 s;
#    the one export in between (~3 s CPU per GiB) competes with the daemon on the lab's CPUs.
#  * entries = primary's last entry_tid - the peer's commit position after the initial sync
#    (same tag; all entries of the tag + 1 if the tag changed), from `rbd journal status`;
#    BACKLOG/4K (one AioWrite event per 4K write) is in the TSV too. entries/s = entries /
#    catch-up, measured from `lab.sh mirror-start`, so daemon start-up is included.
#  * CPU = utime+stime (/proc/PID/stat, CLK_TCK) at catch-up minus right after mirror-start;
#    peak RSS = max(VmHWM at catch-up, VmRSS every 0.5 s); the daemon process is fresh for the
#    replay, so these cover its start-up + replay (+ the verifying exports if MISMATCH/late).
# Exit status: 0 when all ran and every checksum matched; 3 on a checksum mismatch or a daemon
# that failed to catch up (the figures are still printed); 1 on any other error.
set -euo pipefail
BENCH=journal_replay
source "$(dirname "$(readlink -f "$0")")/lib.sh"

BACKLOG=${BENCH_BACKLOG:-256M}
RAW_TOTAL=${BENCH_RAW_TOTAL:-256M}
DAEMONS=${BENCH_DAEMONS:-stock ours}
IMAGE_SIZE=${BENCH_IMAGE_SIZE:-1G}
CATCHUP_TIMEOUT=${BENCH_TIMEOUT:-900}
WAIT=${BENCH_WAIT:-300}
POLL=${BENCH_POLL:-0.5}
VERIFY=${BENCH_VERIFY:-600}
IDLE_WINDOW=2
FEATURES=layering,exclusive-lock,object-map,fast-diff,journaling
OUT=${BENCH_OUT:-$REPO/benches/results/journal_replay-$STAMP.tsv}
SERIES=${BENCH_SERIES:-}

# ---- preconditions -----------------------------------------------------------------------------
check_lab rbd rados jq awk timeout sha256sum numfmt getconf
PEER_UUID=$(rbdc site-a mirror pool info "$POOL" --format json |
  jq -r '.peers[] | select(.site_name == "site-b") | .mirror_uuid')
[[ -n $PEER_UUID && $PEER_UUID != null ]] || die "site-a has no site-b peer with a mirror uuid (peering incomplete?)"
BACKLOG_BYTES=$(numfmt --from=iec "$BACKLOG") || die "BENCH_BACKLOG=$BACKLOG is not a size"
EXPECTED=$((BACKLOG_BYTES / 4096))
((EXPECTED > 0)) || die "BENCH_BACKLOG=$BACKLOG is smaller than one 4K write"

daemon_bench "$DAEMONS"

# ---- helpers -------------------------------------------------------------------------------------
# rbd bench 4K random writes, 16 threads: prints the ops/sec rbd bench reports at the end
bench_write() {  # site image total
  rbdc "$1" bench --io-type write --io-size 4K --io-pattern rand --io-threads 16 \
    --io-total "$3" "$POOL/$2" >"$WORK/bench.txt" 2>&1 || { cat "$WORK/bench.txt" >&2; die "rbd bench on $1 failed"; }
  awk '/^elapsed:/ { for (i = 1; i < NF; i++) if ($i == "ops/sec:") v = $(i + 1) } END { if (v == "") exit 1; print v }' \
    "$WORK/bench.txt" || die "cannot parse rbd bench output: $(cat "$WORK/bench.txt")"
}
# newest commit position of a journal client on site-a's primary as "tag entry", or "none"
position() {  # image client-id
  rbdc site-a journal status --pool "$POOL" --image "$1" --format json |
    jq -r --arg id "$2" '[.registered_clients[] | select(.id == $id)] |
      if length == 0 then "unregistered" else
        (.[0].commit_position.object_positions | if length == 0 then "none" else
          (max_by([.tag_tid, .entry_tid]) | "\(.tag_tid) \(.entry_tid)") end) end'
}
pos_ge() {  # "t e" "t e": first >= second?
  local a=($1) b=($2)
  [[ ${a[0]} =~ ^[0-9]+$ ]] || return 1
  ((a[0] > b[0] || (a[0] == b[0] && a[1] >= b[1])))
}
# wait_idle PID END: until the daemon used < 5% of a CPU over IDLE_WINDOW s; prints when that began
wait_idle() {
  local a b ta
  while ((SECONDS < $2)) && [[ -d /proc/$1 ]]; do
    ta=$(now); a=$(cpu_ticks "$1") || return 1; sleep "$IDLE_WINDOW"; b=$(cpu_ticks "$1") || return 1
    if awk -v d=$((b - a)) -v hz="$HZ" -v w="$IDLE_WINDOW" 'BEGIN { exit !(d <= 0.05 * hz * w) }'; then
      echo "$ta"; return 0
    fi
  done
  return 1
}
image_state() { rbdc site-b mirror image status "$POOL/$1" --format json 2>/dev/null | jq -r '.state // empty'; }

# ---- one daemon --------------------------------------------------------------------------------
FAILED=0
declare -A R   # R[daemon.measure]
run_daemon() {
  local d=$1 img pid t0 t1 c0 c1 p0 target pos entries tag0 e0 t_first= pos_first=
  img=bench-$d-$(printf '%04x%04x' $RANDOM $RANDOM)
  log "== $d: image $POOL/$img, backlog $BACKLOG"
  "$LAB" mirror-stop all >&2
  CREATED+=("site-a $img" "site-b $img")
  rbdc site-a create "$POOL/$img" --size "$IMAGE_SIZE" --image-feature "$FEATURES" >/dev/null
  rbdc site-a mirror image enable "$POOL/$img" journal >/dev/null

  # 2. initial sync of the empty image, then stop the daemon
  start_daemon "$d" >/dev/null
  local end=$((SECONDS + WAIT))
  until [[ $(image_state "$img") == up+replaying ]]; do
    if ((SECONDS >= end)); then
      log "ERROR: $d: site-b $POOL/$img not up+replaying after ${WAIT}s (state: $(image_state "$img"))"
      log_tail; FAILED=1; "$LAB" mirror-stop site-b >&2; return 0
    fi
    sleep 1
  done
  "$LAB" mirror-stop site-b >&2
  p0=$(position "$img" "$PEER_UUID")
  log "$d: initial sync done; peer $PEER_UUID commit position: $p0"

  # 3. backlog on site-a while no daemon runs
  local wiops; wiops=$(bench_write site-a "$img" "$BACKLOG")
  target=$(position "$img" "")
  [[ $target =~ ^[0-9]+\ [0-9]+$ ]] || die "$d: primary's own journal client has no position ($target)"
  read -r tag0 e0 <<<"$target"
  case $p0 in
    unregistered) die "$d: the site-b peer ($PEER_UUID) is not registered in $img's journal" ;;
    none) entries=$((e0 + 1)) ;;       # never committed: every entry of the tag is replayed
    *) local pt pe; read -r pt pe <<<"$p0"
       if ((pt == tag0)); then entries=$((e0 - pe)); else entries=$((e0 + 1)); fi ;;
  esac
  ((entries > 0)) || die "$d: nothing to replay (primary $target, peer $p0)"
  log "$d: wrote $BACKLOG on site-a at $wiops ops/s; primary position $target; entries to replay $entries (BACKLOG/4K = $EXPECTED)"

  local sa; sa=$(sha site-a "$img")   # the primary no longer changes

  # 4. replay: (a) until the peer's commit position reaches the primary's
  t0=$(now); pid=$(start_daemon "$d"); c0=$(cpu_ticks "$pid")
  start_rss_sampler "$pid"
  local caught=0 last=$p0 hwm
  end=$(awk -v t="$t0" -v w="$CATCHUP_TIMEOUT" 'BEGIN { printf "%d", t + w }')
  while :; do
    [[ -d /proc/$pid ]] || { log "ERROR: $d daemon (pid $pid) exited during replay"; break; }
    pos=$(position "$img" "$PEER_UUID") || pos=unreadable
    t1=$(now)
    if [[ $pos =~ ^[0-9]+\ [0-9]+$ && $pos != "$last" && -z $t_first ]]; then t_first=$t1; pos_first=$pos; fi
    [[ -z $SERIES || ! $pos =~ ^[0-9]+\ [0-9]+$ ]] || printf '%s\t%s\t%s\n' "$d" "$(calc "$t1 - $t0")" "${pos/ /$'\t'}" >>"$SERIES"
    last=$pos
    if pos_ge "$pos" "$target"; then caught=1; break; fi
    (($(date +%s) < end)) || { log "ERROR: $d did not catch up within ${CATCHUP_TIMEOUT}s (peer position $pos, target $target)"; break; }
    sleep "$POLL"
  done
  local c1=$c0 hwm1=0
  [[ -d /proc/$pid ]] && { c1=$(cpu_ticks "$pid"); hwm1=$(kib "$pid" VmHWM); }

  # 4. (b) + 5. the data: site-b's export must equal site-a's (daemon still running). If it does
  # not right away, the daemon committed positions before its writes landed: wait (cheaply) for
  # the daemon to go idle, export again, and repeat; catch-up is then the start of that idle span.
  local sb t2 t_idle= c2=$c1 hwm=$hwm1 exports=0 sum=MISMATCH verified=0 c_done t_done
  end=$((SECONDS + VERIFY))
  while :; do
    sb=$(sha site-b "$img") || sb=export-failed; t2=$(now); exports=$((exports + 1))
    [[ $sa == "$sb" ]] && { verified=1; break; }
    ((exports > 1)) || log "!!!!!!!! $d: CHECKSUM MISMATCH right after the commit position reached the primary's (site-a $sa, site-b $sb); waiting for the daemon to go idle !!!!!!!!"
    ((caught == 1 && SECONDS < end)) || break
    t_idle=$(wait_idle "$pid" "$end") || break
  done
  [[ -d /proc/$pid ]] && { c2=$(cpu_ticks "$pid"); hwm=$(kib "$pid" VmHWM); }
  local note="rbd export | sha256sum: site-a $sa, site-b $sb"
  if ((verified == 1 && exports == 1)); then
    sum=match; t_done=$t1; c_done=$c1; hwm=$hwm1     # the data was there when the commit said so
  elif ((verified == 1)); then
    sum=MISMATCH/late; t_done=$t_idle; c_done=$c2; FAILED=1
    note+="; equal only on export $exports: daemon idle from $(calc "$t_idle - $t1" 1)s after the commit position said caught up (export ended $(calc "$t2 - $t1" 1)s after)"
    log "!!!!!!!! $d: site-b equal to site-a only on export $exports; the daemon went idle $(calc "$t_idle - $t1" 1)s after its commit position reached the primary's: it commits positions before its writes land !!!!!!!!"
  else
    t_done=$t1; c_done=$c1; FAILED=1
    note+="; still different after $exports exports over ${VERIFY}s"
    log "!!!!!!!! $d: CHECKSUM MISMATCH: site-a $sa site-b $sb, still different after $exports exports over ${VERIFY}s !!!!!!!!"
  fi
  stop_rss_sampler "$hwm"
  local secs cpu
  secs=$(calc "$t_done - $t0"); cpu=$(calc "($c_done - $c0) / $HZ" 2)
  R[$d.entries]=$entries; R[$d.secs]=$secs; R[$d.cpu]=$cpu; R[$d.rss]=$(calc "$RSS_MAX / 1024" 1)
  R[$d.caught]=$caught; R[$d.sum]=$sum
  R[$d.rate]=$(calc "$entries / $secs" 1); R[$d.us]=$(calc "($c_done - $c0) / $HZ * 1000000 / $entries" 1)
  if [[ -n $t_first ]]; then R[$d.first]=$(calc "$t_first - $t0" 1); else R[$d.first]=-; fi
  rec "$d" primary_write_rate "$wiops" ops/s "site-a rbd bench 4K rand write 16 threads --io-total $BACKLOG, no daemon running"
  rec "$d" entries "$entries" entries "journal positions: primary $target, peer before $p0 (BACKLOG/4K = $EXPECTED)"
  rec "$d" caught_up "$caught" bool "peer commit position reached $target (last seen $last)"
  rec "$d" catch_up_commit "$(calc "$t1 - $t0")" s "lab.sh mirror-start -> peer commit position >= primary's (poll ${POLL}s)"
  rec "$d" catch_up "$secs" s "= catch_up_commit if site-b's export then matched, else start of the daemon's idle span before the matching export"
  rec "$d" first_commit "${R[$d.first]}" s "lab.sh mirror-start -> first change of the peer commit position ($pos_first)"
  rec "$d" replay_rate "${R[$d.rate]}" entries/s "entries / catch_up"
  rec "$d" cpu "$cpu" cpu-s "utime+stime, mirror-start -> catch_up"
  rec "$d" cpu_per_entry "${R[$d.us]}" us/entry "cpu / entries"
  rec "$d" peak_rss "${R[$d.rss]}" MiB "max(VmRSS every 0.5s, VmHWM) of the fresh daemon process"
  rec "$d" vmhwm "$(calc "$hwm / 1024" 1)" MiB "VmHWM at catch_up"
  rec "$d" checksum "$sum" - "$note"
  ((caught == 1)) || { FAILED=1; log_tail; }
  log "$d: caught up=$caught in ${secs}s (commit position: $(calc "$t1 - $t0")s), ${R[$d.rate]} entries/s, cpu ${cpu}s (${R[$d.us]} us/entry), peak RSS ${R[$d.rss]} MiB, checksum $sum"

  # 6. stop, clean up
  "$LAB" mirror-stop site-b >&2
  cleanup_image site-a "$img"; cleanup_image site-b "$img"
}

for d in $DAEMONS; do
  case $d in stock | ours) run_daemon "$d" ;; *) die "unknown daemon '$d' in BENCH_DAEMONS (stock, ours)" ;; esac
done

# ---- raw reference on site-b --------------------------------------------------------------------
"$LAB" mirror-stop all >&2
RAW_IMG=bench-raw-$(printf '%04x%04x' $RANDOM $RANDOM)
CREATED+=("site-b $RAW_IMG")
rbdc site-b create "$POOL/$RAW_IMG" --size "$IMAGE_SIZE" --image-feature layering >/dev/null
RAW=$(bench_write site-b "$RAW_IMG" "$RAW_TOTAL")
cleanup_image site-b "$RAW_IMG"
rec raw site_b_write_rate "$RAW" ops/s "site-b rbd bench --io-type write --io-size 4K --io-pattern rand --io-threads 16 --io-total $RAW_TOTAL (layering only, no daemon)"
log "raw site-b 4K random write: $RAW ops/s"

# ---- report --------------------------------------------------------------------------------------
echo
echo "journal replay of a $BACKLOG backlog of 4K random writes ($(date -u +%F\ %TZ), lab $STATE)"
printf '%-6s %9s %11s %11s %8s %12s %13s %15s %9s\n' daemon entries catch-up_s entries/s cpu_s cpu_us/entry peak_RSS_MiB checksum caught_up
for d in $DAEMONS; do
  [[ -n ${R[$d.secs]:-} ]] || { printf '%-6s %9s\n' "$d" "(failed before replay)"; continue; }
  printf '%-6s %9s %11s %11s %8s %12s %13s %15s %9s\n' "$d" "${R[$d.entries]}" "${R[$d.secs]}" "${R[$d.rate]}" \
    "${R[$d.cpu]}" "${R[$d.us]}" "${R[$d.rss]}" "${R[$d.sum]}" "$([[ ${R[$d.caught]} == 1 ]] && echo yes || echo NO)"
done
printf '%-6s %9s %11s %11s\n' raw - - "$RAW"
echo
if [[ -n ${R[ours.secs]:-} ]]; then
  echo "ours / raw site-b write rate: $(calc "${R[ours.rate]} / $RAW" 3)  (goal >= 0.9)"
  echo "ours CPU per entry:           ${R[ours.us]} us  (goal <= 15)"
  echo "ours peak RSS during replay:  ${R[ours.rss]} MiB  (goal <= 48)"
  rec ratio ours_over_raw_rate "$(calc "${R[ours.rate]} / $RAW" 3)" x "goal >= 0.9"
fi
if [[ -n ${R[ours.secs]:-} && -n ${R[stock.secs]:-} ]]; then
  echo "ours / stock: entries/s $(calc "${R[ours.rate]} / ${R[stock.rate]}" 2)x, catch-up s $(calc "${R[ours.secs]} / ${R[stock.secs]}" 2)x," \
    "CPU/entry $(calc "${R[ours.us]} / ${R[stock.us]}" 2)x, peak RSS $(calc "${R[ours.rss]} / ${R[stock.rss]}" 2)x"
  echo "stock / raw site-b write rate: $(calc "${R[stock.rate]} / $RAW" 3)"
  for m in rate secs us rss; do rec ratio "ours_over_stock_$m" "$(calc "${R[ours.$m]} / ${R[stock.$m]}" 3)" x ""; done
fi
echo "catch-up = lab.sh mirror-start until the peer's journal commit position on site-a reached the primary's"
echo "  (late by up to the daemon's commit age, stock 5 s, ours 1 s, + ${POLL}s poll) and site-b's export equalled"
echo "  site-a's; MISMATCH/late: the data landed after the commit position: timed to when the daemon went idle."
echo "results: $OUT"
((FAILED == 0)) || { log "FAILED: a daemon did not catch up or a checksum mismatched (see above)"; exit 3; }
