# benches/lib.sh — what the bench scripts share, sourced by each of them right after
# `set -euo pipefail` and `BENCH=<script name>` (the prefix of its messages and of its work
# directory). Sets PATH, REPO, LAB, the lab's state directory (RBD_MIRROR_LAB_DIR, from
# RBD_MIRROR_LAB_INSTANCE as tests/lab/lab.sh chooses it; exported), STATE, POOL, STAMP and WORK
# (a fresh directory under /tmp, removed on exit); defines the helpers below and the exit trap,
# which removes the images listed in CREATED ("site image") and, once `daemon_bench` was called,
# stops the RSS sampler and the site-b daemon.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$HOME/.cargo/bin:$PATH
unset CEPH_ARGS CEPH_CONF

REPO=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
LAB=$REPO/tests/lab/lab.sh
if [[ -z ${RBD_MIRROR_LAB_DIR:-} ]]; then
  i=${RBD_MIRROR_LAB_INSTANCE:-0}
  if [[ $i == 0 ]]; then RBD_MIRROR_LAB_DIR=/tmp/rbd-mirror-rs-lab; else RBD_MIRROR_LAB_DIR=/tmp/rbd-mirror-rs-lab$i; fi
fi
export RBD_MIRROR_LAB_DIR
STATE=$RBD_MIRROR_LAB_DIR
POOL=mirror
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d "/tmp/$BENCH.XXXXXX")

log() { echo "$BENCH: $*" >&2; }
die() { echo "$BENCH: ERROR: $*" >&2; exit 1; }
conf() { echo "$STATE/$1/$1.conf"; }
rbdc() { local s=$1; shift; timeout 600 rbd --cluster "$s" -c "$(conf "$s")" "$@"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
now() { date +%s.%N; }
sha() { rbdc "$1" export --no-progress "$POOL/$2" - | sha256sum | cut -d' ' -f1; }   # site image

# ---- cleanup: images we created, the daemon we started, the RSS sampler -----------------------
CREATED=()      # "site image"
SAMPLER=
DAEMON_BENCH=0
cleanup_image() {  # site image: best effort, each step bounded
  local s=$1 img=$2
  rbdc "$s" info "$POOL/$img" >/dev/null 2>&1 || return 0
  rbdc "$s" mirror image disable --force "$POOL/$img" >/dev/null 2>&1 || true
  rbdc "$s" snap purge --no-progress "$POOL/$img" >/dev/null 2>&1 || true
  rbdc "$s" rm --no-progress "$POOL/$img" >/dev/null 2>&1 ||
    log "WARNING: could not remove $s:$POOL/$img (remove it by hand)"
}
on_exit() {
  local rc=$? e
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
  if ((DAEMON_BENCH == 1)); then
    "$LAB" mirror-stop site-b >/dev/null 2>&1 || log "WARNING: lab.sh mirror-stop site-b failed"
  fi
  for e in "${CREATED[@]}"; do cleanup_image $e; done
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# check_lab TOOL...: the tools are installed, the lab's two sites answer for the pool
check_lab() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || die "$t not found"; done
  [[ -f $(conf site-a) && -f $(conf site-b) ]] || die "no lab at $STATE (start it with: $LAB up)"
  rbdc site-a mirror pool info "$POOL" >/dev/null 2>&1 || die "site-a pool $POOL unreachable (lab down?)"
  rbdc site-b mirror pool info "$POOL" >/dev/null 2>&1 || die "site-b pool $POOL unreachable (lab down?)"
}

# rbd bench of 4M writes (or IO_TYPE, e.g. read): prints the bandwidth rbd bench reports at the
# end, in MiB/s (its last line reads "elapsed: 3  ops: 256  ops/sec: 80  bytes/sec: 320 MiB/s");
# two may run at once on different images
bench_4m() {  # site image pattern total [io-type]
  local f=$WORK/bench-$1-$2.txt
  rbdc "$1" bench --io-type "${5:-write}" --io-size 4M --io-pattern "$3" --io-threads 16 \
    --io-total "$4" "$POOL/$2" >"$f" 2>&1 || { cat "$f" >&2; die "rbd bench on $1 failed"; }
  awk '/^elapsed:/ { for (i = 1; i < NF; i++) if ($i == "bytes/sec:") { v = $(i + 1); u = $(i + 2) } }
    END { if (v == "") exit 1
          m = (u ~ /^GiB/) ? 1024 : (u ~ /^MiB/) ? 1 : (u ~ /^KiB/) ? 1 / 1024 : 1 / 1048576
          printf "%.1f\n", v * m }' \
    "$f" || die "cannot parse rbd bench output: $(cat "$f")"
}

# ---- benches of a daemon at site-b (stock rbd-mirror or ours) ----------------------------------
# daemon_bench DAEMONS: checks the daemon names (stock, ours), finds our binary (OURS_BIN:
# RBD_MIRROR_RS_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/rbd-mirror-rs, built when
# missing) when "ours"
# is among them, sets HZ, PIDFILE, DLOG, starts OUT (a TSV for `rec`) and makes the exit trap
# stop the site-b daemon.
daemon_bench() {
  local d
  for d in $1; do [[ $d == stock || $d == ours ]] || die "unknown daemon '$d' in BENCH_DAEMONS (stock, ours)"; done
  if [[ " $1 " == *" ours "* ]]; then
    if [[ -n ${RBD_MIRROR_RS_BIN:-} ]]; then
      OURS_BIN=$(readlink -f "$RBD_MIRROR_RS_BIN") || die "RBD_MIRROR_RS_BIN=$RBD_MIRROR_RS_BIN not found"
      [[ -x $OURS_BIN ]] || die "RBD_MIRROR_RS_BIN=$RBD_MIRROR_RS_BIN is not an executable file"
    else
      local target=${CARGO_TARGET_DIR:-$REPO/target}
      OURS_BIN=$target/release/rbd-mirror-rs
      if [[ ! -x $OURS_BIN ]]; then
        log "building $OURS_BIN (cargo build --release -p daemon)"
        (cd "$REPO" && CARGO_TARGET_DIR=$target cargo build --release -p daemon >&2) || die "build failed"
      fi
    fi
  fi
  HZ=$(getconf CLK_TCK)
  PIDFILE=$STATE/site-b/run/rbd-mirror.b.pid
  DLOG=$STATE/site-b/log/client.rbd-mirror.b.log
  DAEMON_BENCH=1
  mkdir -p "$(dirname "$OUT")"
  printf 'daemon\tmeasure\tvalue\tunit\tnote\n' >"$OUT"
}
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT"; }
daemon_pid() {
  local pid exe
  [[ -f $PIDFILE ]] || return 1
  read -r pid exe <"$PIDFILE"
  [[ -d /proc/$pid ]] || return 1
  echo "$pid"
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }   # utime+stime
kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }          # pid field
start_daemon() {  # stock|ours: starts it at site-b, prints its pid
  if [[ $1 == ours ]]; then
    RBD_MIRROR_LAB_MIRROR_BIN=$OURS_BIN CEPH_LAB_MIRROR_BIN= "$LAB" mirror-start site-b >&2
  else
    RBD_MIRROR_LAB_MIRROR_BIN= CEPH_LAB_MIRROR_BIN= "$LAB" mirror-start site-b >&2
  fi
  local pid want; pid=$(daemon_pid) || die "$1 daemon did not start; see $DLOG"
  want=$([[ $1 == ours ]] && echo "$OURS_BIN" || readlink -f "$(command -v rbd-mirror)")
  [[ $(readlink -f "/proc/$pid/exe") == "$want" ]] ||
    die "site-b daemon pid $pid runs $(readlink -f "/proc/$pid/exe"), not $want"
  echo "$pid"
}
log_tail() { log "last lines of $DLOG:"; tail -n 25 "$DLOG" 2>/dev/null | sed 's/^/    /' >&2 || true; }
# start_rss_sampler PID: VmRSS every 0.5 s while PID lives, the maximum in $WORK/rss.max
start_rss_sampler() {
  local pid=$1
  ( max=0; while [[ -d /proc/$pid ]]; do
      v=$(kib "$pid" VmRSS 2>/dev/null) || break; ((${v:-0} > max)) && max=$v && echo "$max" >"$WORK/rss.max"
      sleep 0.5
    done ) &
  SAMPLER=$!
}
# stop_rss_sampler HWM: stops the sampler; RSS_MAX = max(sampled VmRSS, HWM), in KiB
stop_rss_sampler() {
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  RSS_MAX=$(cat "$WORK/rss.max" 2>/dev/null || echo 0); rm -f "$WORK/rss.max"
  (($1 > RSS_MAX)) && RSS_MAX=$1
  return 0
}

# ---- a dedicated pool on both sites, and images made in one python3-rbd process ------------------
PY=/usr/bin/python3   # Debian's python: python3-rbd lives there
cephc() { local s=$1; shift; timeout 120 ceph --cluster "$s" -c "$(conf "$s")" --connect-timeout 15 "$@"; }
delete_pool() {  # site pool: best effort
  cephc "$1" osd pool ls 2>/dev/null | grep -qx "$2" || return 0
  cephc "$1" osd pool rm "$2" "$2" --yes-i-really-really-mean-it >/dev/null 2>&1 ||
    log "WARNING: could not delete pool $2 on $1 (remove it by hand)"
}
# setup_pool POOL PG_NUM: (re)creates POOL on both sites, mirroring in image mode, peered as
# lab.sh peers `mirror` (bootstrap create on site-a, import --direction rx-tx on site-b)
setup_pool() {
  local s p=$1 pg=$2
  [[ $p != "$POOL" ]] || die "a bench's dedicated pool must not be the lab's pool $POOL"
  for s in site-a site-b; do
    delete_pool "$s" "$p"
    cephc "$s" osd pool create "$p" "$pg" "$pg" >/dev/null 2>&1 || die "$s: cannot create pool $p"
    rbdc "$s" pool init "$p"
    rbdc "$s" mirror pool enable "$p" image --site-name "$s"
  done
  rbdc site-a mirror pool peer bootstrap create --site-name site-a "$p" >"$WORK/token"
  rbdc site-b mirror pool peer bootstrap import --site-name site-b --direction rx-tx "$p" "$WORK/token"
  local end=$((SECONDS + 60))
  until [[ $(rbdc site-a mirror pool info "$p" --format json | jq '.peers | length') -ge 1 ]]; do
    ((SECONDS < end)) || die "site-a's pool $p has no peer 60 s after the bootstrap import"
    sleep 1
  done
}
# images_py: writes $WORK/images.py, one python3-rbd process for the image work on a site:
#   images.py create|enable|trickle SITE CONF POOL N [args]: N images jNNNN (journaling) and
#   sNNNN alternately; `create SIZE FILL` (thin, FILL random bytes at 0), `enable` (journal or
#   snapshot mode after the name; prints "first <time>" and "last <time>"), `trickle SECS
#   INTERVAL` (a 4 KiB write per image per second, a mirror snapshot of the s images every
#   INTERVAL s). SCALE_THREADS threads (default 8).
images_py() {
  "$PY" -c 'import rados, rbd' 2>/dev/null || die "python3-rbd missing ($PY cannot import rbd; apt-get install python3-rbd)"
  cat >"$WORK/images.py" <<'PY'
import os, random, sys, time
from concurrent.futures import ThreadPoolExecutor
import rados, rbd
cmd, site, conf, pool, n = sys.argv[1:6]
n = int(n)
names = [("j%04d" if i % 2 == 0 else "s%04d") % (i // 2) for i in range(n)]
L, X, O, F, J = (rbd.RBD_FEATURE_LAYERING, rbd.RBD_FEATURE_EXCLUSIVE_LOCK, rbd.RBD_FEATURE_OBJECT_MAP,
                 rbd.RBD_FEATURE_FAST_DIFF, rbd.RBD_FEATURE_JOURNALING)
with rados.Rados(clustername=site, conffile=conf) as cluster, cluster.open_ioctx(pool) as io:
    # librbd calls release the GIL: a few threads overlap their round trips
    threads = int(os.environ.get("SCALE_THREADS", "8"))
    def run(f):
        with ThreadPoolExecutor(threads) as ex:
            for _ in ex.map(f, names):
                pass
    if cmd == "create":
        size, fill = int(sys.argv[6]), int(sys.argv[7])
        data = os.urandom(fill)
        def create(name):
            feats = L | X | O | F | (J if name[0] == "j" else 0)
            rbd.RBD().create(io, name, size, old_format=False, features=feats)
            if fill:
                with rbd.Image(io, name) as im:
                    im.write(data, 0)
        run(create)
    elif cmd == "enable":
        def enable(name):
            mode = rbd.RBD_MIRROR_IMAGE_MODE_JOURNAL if name[0] == "j" else rbd.RBD_MIRROR_IMAGE_MODE_SNAPSHOT
            with rbd.Image(io, name) as im:
                im.mirror_image_enable(mode)
        print("first %.3f" % time.time(), flush=True)
        run(enable)
        print("last %.3f" % time.time(), flush=True)
    elif cmd == "trickle":
        secs, interval = int(sys.argv[6]), int(sys.argv[7])
        imgs = [(name, rbd.Image(io, name)) for name in names]
        size = imgs[0][1].size()
        writes = snaps = 0
        t0 = time.time()
        for tick in range(1, secs + 1):
            for name, im in imgs:
                im.write(os.urandom(4096), random.randrange(size // 4096) * 4096)
                writes += 1
                if name[0] == "s" and tick % interval == 0:
                    im.mirror_image_create_snapshot()
                    snaps += 1
            time.sleep(max(0.0, t0 + tick - time.time()))
        for _, im in imgs:
            im.close()
        print("writes %d snapshots %d" % (writes, snaps), flush=True)
PY
}
