#!/usr/bin/env bash
# benches/image_copy.sh — the image-copy engine alone (copy_image, full sync) on the project lab
# (tests/lab/lab.sh, which must already be up), without a daemon: a filled image of
# BENCH_IMAGE_SIZE on site-a (layering,exclusive-lock,object-map,fast-diff, rbd bench 4M seq
# writes, one snapshot) is copied BENCH_RUNS times into a fresh image on site-b by
# crates/image-replayer/examples/copy_bench.rs (the daemon's allocator settings, 2 runtime
# threads), under `perf stat` (instructions, task-clock, page faults) when perf can count.
# The first copy is checked: `rbd export | sha256sum` of the snapshot and of site-b's copy.
# One TSV row per run in benches/results/image_copy-<UTC date>.tsv; also site-b's raw 4M
# sequential write bandwidth (rbd bench, 16 threads) for the ratio.
#
# Environment: BENCH_IMAGE_SIZE=1G, BENCH_RUNS=3, BENCH_CONCURRENCY=8, BENCH_OUT,
# BENCH_KEEP_SRC=1 (keep the source image, printed) and BENCH_SRC_IMAGE=<it> (reuse it),
# BENCH_RAW=1 (0 skips the raw bandwidth), COPY_BENCH_BIN (default: cargo build --release
# --example copy_bench into $CARGO_TARGET_DIR or <repo>/target), RBD_MIRROR_LAB_INSTANCE/DIR.
# Exit status: 0 ok, 3 checksum mismatch, 1 other error.
set -euo pipefail
BENCH=image_copy
source "$(dirname "$(readlink -f "$0")")/lib.sh"

SIZE=${BENCH_IMAGE_SIZE:-1G}
RUNS=${BENCH_RUNS:-3}
CONC=${BENCH_CONCURRENCY:-8}
FEATURES=layering,exclusive-lock,object-map,fast-diff
OUT=${BENCH_OUT:-$REPO/benches/results/image_copy-$STAMP.tsv}

check_lab rbd jq awk timeout sha256sum numfmt
SIZE_BYTES=$(numfmt --from=iec "$SIZE")
GIB=$(calc "$SIZE_BYTES / 1073741824" 6)

BIN=${COPY_BENCH_BIN:-}
if [[ -z $BIN ]]; then
  (cd "$REPO" && cargo build --release -p image-replayer --example copy_bench >&2) || die "build failed"
  BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/copy_bench
fi
PERF=()
if perf stat -e instructions true >/dev/null 2>&1; then
  PERF=(perf stat -x, -e instructions,task-clock,page-faults -o "$WORK/perf.csv")
fi

mkdir -p "$(dirname "$OUT")"
printf 'run\tconcurrency\tsecs\tMiB/s\tcpu_s\tcpu_s_per_GiB\tpeak_rss_MiB\tinstructions\tpage_faults\tchecksum\n' >"$OUT"

if [[ -n ${BENCH_SRC_IMAGE:-} ]]; then
  SRC=$BENCH_SRC_IMAGE   # kept from an earlier run (BENCH_KEEP_SRC=1); must have snapshot s
else
  SRC=copybench-src-$(printf '%04x%04x' $RANDOM $RANDOM)
  [[ ${BENCH_KEEP_SRC:-0} == 1 ]] || CREATED+=("site-a $SRC")
  log "source site-a:$POOL/$SRC ($SIZE, filled, snapshot s)"
  rbdc site-a create "$POOL/$SRC" --size "$SIZE" --image-feature "$FEATURES" >/dev/null
  bench_4m site-a "$SRC" seq "$SIZE" >/dev/null
  rbdc site-a snap create --no-progress "$POOL/$SRC@s" >/dev/null
fi
SRC_ID=$(rbdc site-a info --format json "$POOL/$SRC" | jq -r .id)
SNAP_ID=$(rbdc site-a snap ls --format json "$POOL/$SRC" | jq -r '.[] | select(.name == "s") | .id')
SRC_SUM=

FAILED=0
for ((r = 1; r <= RUNS; r++)); do
  DST=copybench-dst-$(printf '%04x%04x' $RANDOM $RANDOM)
  CREATED+=("site-b $DST")
  rbdc site-b create "$POOL/$DST" --size "$SIZE" --image-feature "$FEATURES" >/dev/null
  DST_ID=$(rbdc site-b info --format json "$POOL/$DST" | jq -r .id)
  rm -f "$WORK/perf.csv"
  line=$("${PERF[@]}" "$BIN" "$(conf site-a)" "$(conf site-b)" "$POOL" "$SRC_ID" "$DST_ID" "$SNAP_ID" "$CONC") ||
    die "copy_bench failed"
  secs=$(sed -E 's/.*secs=([0-9.]+).*/\1/' <<<"$line")
  cpu=$(sed -E 's/.*cpu_s=([0-9.]+).*/\1/' <<<"$line")
  rss=$(sed -E 's/.*maxrss_kib=([0-9]+).*/\1/' <<<"$line")
  ins=-; pf=-
  if [[ -f $WORK/perf.csv ]]; then
    ins=$(awk -F, '$3 ~ /^instructions/ { print $1 }' "$WORK/perf.csv")
    pf=$(awk -F, '$3 ~ /^page-faults/ { print $1 }' "$WORK/perf.csv")
  fi
  sum=-
  if ((r == 1)); then
    [[ -n $SRC_SUM ]] || SRC_SUM=$(sha site-a "$SRC@s")
    dsum=$(sha site-b "$DST")
    if [[ $dsum == "$SRC_SUM" ]]; then sum=match; else sum=MISMATCH; FAILED=1; fi
  fi
  mibs=$(calc "$GIB * 1024 / $secs" 1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$CONC" "$secs" "$mibs" "$cpu" "$(calc "$cpu / $GIB" 3)" \
    "$(calc "$rss / 1024" 1)" "$ins" "$pf" "$sum" | tee -a "$OUT"
  cleanup_image site-b "$DST"
done

if [[ ${BENCH_RAW:-1} == 1 ]]; then
  RAW=copybench-raw-$(printf '%04x%04x' $RANDOM $RANDOM)
  CREATED+=("site-b $RAW")
  rbdc site-b create "$POOL/$RAW" --size "$SIZE" --image-feature "$FEATURES" >/dev/null
  raw=$(bench_4m site-b "$RAW" seq "$SIZE")
  printf 'raw\t16\t-\t%s\t-\t-\t-\t-\t-\t-\n' "$raw" | tee -a "$OUT"
fi
log "results: $OUT"
[[ ${BENCH_KEEP_SRC:-0} == 1 && -z ${BENCH_SRC_IMAGE:-} ]] && log "source kept: BENCH_SRC_IMAGE=$SRC (remove it with rbd snap purge + rm)"
((FAILED == 0)) || { log "FAILED: checksum mismatch"; exit 3; }
