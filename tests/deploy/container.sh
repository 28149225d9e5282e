#!/usr/bin/env bash
# tests/deploy/container.sh — the container image of rbd-mirror-rs, built here and run against
# the project's lab as a container runtime would run it.
#
#   1. builds the image with deploy/container/build.sh (release binary; RBD_MIRROR_RS_BINARY
#      gives another one)
#   2. checks its configuration (`podman image inspect`): non-root user 167:167, entrypoint
#      /usr/bin/rbd-mirror, and its content: the binary, the rbd-mirror link, the ceph user,
#      the ceph CLI (cephadm runs `ceph --version` in an image), /var/lib/ceph owned by 167:167
#      (cephadm reads the uid/gid with `stat -c '%u %g' /var/lib/ceph`), --version and --help
#   3. runs the image's entrypoint under chroot on `podman image mount` of the image, with the
#      host network (as cephadm's --net=host), /etc/ceph, /var/run/ceph and /var/log/ceph
#      bind-mounted from a work directory as cephadm mounts them (a minimal ceph.conf with the
#      site-b fsid and mon_host, and ceph.client.rbd-mirror.b.keyring, 0600 owned by 167:167):
#      A. as the image's user 167:167, with the stock unit's arguments
#         `-f --cluster ceph --id rbd-mirror.b --setuser ceph --setgroup ceph`: a 64 MiB
#         journal-mirrored image of random data on site-a must reach up+replaying at
#         site-b with equal `rbd export | sha256sum`; admin socket and log file in the
#         mounted directories; SIGTERM ends it with status 0
#      B. as root, with cephadm's argument line (src/cephadm/cephadm, Pacific 16.2.15:
#         get_container + get_daemon_args, `--default-log-to-file=false` etc.) and environment:
#         the daemon must accept the line, drop to 167:167
#         itself and replay the journal of what `rbd bench` wrote on site-a since A stopped.
#   (`podman run` itself is not used: on the machine this was written on the OCI runtimes
#   cannot start containers (setrlimit without CAP_SYS_RESOURCE); the chroot gives the same
#   filesystem, user, arguments, environment and network.)
#
# Runs against the lab instance RBD_MIRROR_LAB_INSTANCE (default 0, state RBD_MIRROR_LAB_DIR
# as tests/lab/lab.sh), which it brings up if needed (lab.sh up) and leaves up; it stops the
# site-b rbd-mirror (lab.sh mirror-stop site-b) since one daemon per site may run. Root only.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
unset CEPH_ARGS CEPH_CONF

export RBD_MIRROR_LAB_INSTANCE=${RBD_MIRROR_LAB_INSTANCE:-0}
LAB=tests/lab/lab.sh
TIMEOUT=${RBD_MIRROR_LAB_TIMEOUT:-120}
POOL=mirror
CEPH_ID=167   # the image's ceph uid and gid

# cephadm's argument line for an rbd-mirror daemon (Pacific 16.2.15, src/cephadm/cephadm:
# get_container: ['-n', 'client.rbd-mirror.<id>', '-f'] + get_daemon_args). Ceph's option parser
# reads `--default-<option>=<value>` as a new default for <option> (src/common/config.cc,
# md_config_t::parse_option); the last element is one argument with a trailing space.
CEPHADM_ARGS=(-n client.rbd-mirror.b -f --setuser ceph --setgroup ceph
  --default-log-to-file=false --default-log-to-stderr=true '--default-log-stderr-prefix=debug ')

passed=0
ok()   { passed=$((passed + 1)); echo "container.sh: ok: $*"; }
fail() { echo "container.sh: FAIL: $*" >&2; exit 1; }
step() { printf '\n==== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
note() { echo "container.sh: $*"; }

((EUID == 0)) || fail "must run as root (podman image mount, chroot, bind mounts)"
for t in podman jq rbd ceph chroot mount; do
  command -v "$t" >/dev/null || [[ $t == podman ]] || fail "$t not found"
done

# ---- cleanup: the daemon we started, our mounts (innermost first), the image mount, our
# rbd images, the work directory. Each failure is reported; none hides the test's verdict.
DAEMON_PID=
MOUNTS=()
IMAGE_ID=
MNT=
WORK=
RBD_IMAGE=
cleanup() {
  local rc=$? i
  set +e
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  fi
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" || { echo "container.sh: cleanup: umount ${MOUNTS[i]} failed; lazy unmount" >&2; umount -l "${MOUNTS[i]}"; }
  done
  if [[ -n $MNT ]]; then
    podman image unmount "$IMAGE_ID" >/dev/null || echo "container.sh: cleanup: podman image unmount $IMAGE_ID failed" >&2
  fi
  if [[ -n $RBD_IMAGE ]]; then
    rbdc site-b mirror image disable --force "$POOL/$RBD_IMAGE" >/dev/null 2>&1
    rbdc site-b rm --no-progress "$POOL/$RBD_IMAGE" >/dev/null 2>&1 \
      || echo "container.sh: cleanup: could not remove $POOL/$RBD_IMAGE at site-b" >&2
    rbdc site-a rm --no-progress "$POOL/$RBD_IMAGE" >/dev/null 2>&1 \
      || echo "container.sh: cleanup: could not remove $POOL/$RBD_IMAGE at site-a" >&2
  fi
  [[ -n $WORK ]] && rm -rf "$WORK"
  ((rc == 0)) || echo "container.sh: FAILED (exit $rc) after $passed checks" >&2
  exit "$rc"
}
trap cleanup EXIT

# ---- the lab ------------------------------------------------------------------------
step "lab (instance $RBD_MIRROR_LAB_INSTANCE)"
t_start=$SECONDS
"$LAB" up
"$LAB" mirror-stop site-b
STATE=$("$LAB" dir)
conf_of() { echo "$STATE/$1/$1.conf"; }
rbdc()  { local s=$1; shift; timeout "$TIMEOUT" rbd --cluster "$s" -c "$(conf_of "$s")" "$@"; }
cephc() { local s=$1; shift; timeout "$TIMEOUT" ceph --cluster "$s" -c "$(conf_of "$s")" --connect-timeout 15 "$@"; }
eval "$("$LAB" env site-b)"
unset CEPH_CONF   # lab.sh env exports it; every call here names its conf
SITE_B_IP=127.0.$RBD_MIRROR_LAB_INSTANCE.2
METRICS_ADDR=$SITE_B_IP:$((26 + RBD_MIRROR_LAB_INSTANCE))287   # as lab.sh mirror-start
[[ -r $RBD_MIRROR_LAB_MIRROR_KEYRING ]] || fail "no site-b rbd-mirror keyring at $RBD_MIRROR_LAB_MIRROR_KEYRING"

# ---- build ---------------------------------------------------------------------------
step "build (deploy/container/build.sh)"
t0=$SECONDS
build_args=()
[[ -n ${RBD_MIRROR_RS_BINARY:-} ]] && build_args=(--binary "$RBD_MIRROR_RS_BINARY")
IMAGE_ID=$(deploy/container/build.sh "${build_args[@]}" | tail -n 1)
[[ $IMAGE_ID =~ ^[0-9a-f]{64}$ ]] || fail "build.sh printed no image id (got '$IMAGE_ID')"
note "image ${IMAGE_ID:0:12} built in $((SECONDS - t0))s"

# ---- image configuration ------------------------------------------------------------
step "image configuration (podman image inspect)"
cfg=$(podman image inspect --format '{{json .Config}}' "$IMAGE_ID")
user=$(jq -r '.User // ""' <<<"$cfg")
[[ $user == "$CEPH_ID:$CEPH_ID" ]] || fail "image user is '$user', want $CEPH_ID:$CEPH_ID"
ok "runs as $user (non-root) by default"
mapfile -t ENTRYPOINT < <(jq -r '.Entrypoint // [] | .[]' <<<"$cfg")
[[ ${ENTRYPOINT[*]} == /usr/bin/rbd-mirror ]] || fail "entrypoint is '${ENTRYPOINT[*]}', want /usr/bin/rbd-mirror"
ok "entrypoint ${ENTRYPOINT[*]}"
mapfile -t IMAGE_ENV < <(jq -r '.Env // [] | .[]' <<<"$cfg")
workdir=$(jq -r '.WorkingDir // "/"' <<<"$cfg"); workdir=${workdir:-/}
tags=$(podman image inspect --format '{{join .RepoTags " "}}' "$IMAGE_ID")
label_version=$(jq -r '.Labels["org.opencontainers.image.version"] // ""' <<<"$cfg")
[[ " $tags " == *" localhost/rbd-mirror-rs:$label_version "* && " $tags " == *" localhost/rbd-mirror-rs:latest "* ]] \
  || fail "tags '$tags' lack localhost/rbd-mirror-rs:$label_version and :latest"
ok "tagged $tags"

# ---- image content ------------------------------------------------------------------
step "image content (podman image mount)"
MNT=$(podman image mount "$IMAGE_ID")
[[ -d $MNT/usr/bin ]] || fail "podman image mount gave '$MNT'"
note "mounted at $MNT"
[[ -x $MNT/usr/bin/rbd-mirror-rs && ! -L $MNT/usr/bin/rbd-mirror-rs ]] || fail "no /usr/bin/rbd-mirror-rs binary"
[[ $(readlink "$MNT/usr/bin/rbd-mirror") == rbd-mirror-rs ]] || fail "/usr/bin/rbd-mirror is not a link to rbd-mirror-rs"
ok "/usr/bin/rbd-mirror-rs, /usr/bin/rbd-mirror -> rbd-mirror-rs"
[[ $(awk -F: '$1 == "ceph" {print $3 ":" $4}' "$MNT/etc/passwd") == "$CEPH_ID:$CEPH_ID" ]] || fail "no ceph user $CEPH_ID:$CEPH_ID in /etc/passwd"
for d in var/lib/ceph var/log/ceph run/ceph; do
  [[ $(stat -c '%u %g' "$MNT/$d") == "$CEPH_ID $CEPH_ID" ]] || fail "/$d is not owned by $CEPH_ID:$CEPH_ID"
done
ok "ceph user $CEPH_ID:$CEPH_ID owns /var/lib/ceph, /var/log/ceph, /run/ceph"

# mounts a runtime gives a container: /proc, /dev, /sys (read-only)
bind() {  # bind SRC TARGET [ro]
  mount --bind "$1" "$2"; MOUNTS+=("$2")
  [[ ${3:-} == ro ]] && mount -o remount,bind,ro "$2"
  return 0
}
mount -t proc proc "$MNT/proc"; MOUNTS+=("$MNT/proc")
bind /dev "$MNT/dev"
bind /sys "$MNT/sys" ro

# in_image USER ENV... -- ARGS...: a process of the image as a runtime starts it (the image's
# environment and working directory, nothing of ours). It execs: call it only in a subshell,
# $(...) or with &, where the pid of the job is then the pid of the process.
in_image() {
  local spec=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
  exec env -i "${IMAGE_ENV[@]}" HOSTNAME="$(hostname)" HOME=/ "${envs[@]}" \
    chroot --userspec="$spec" "$MNT" /bin/sh -c 'cd "$0" && exec "$@"' "$workdir" "$@"
}
out=$(in_image "$user" -- "${ENTRYPOINT[@]}" --version) || fail "--version failed: $out"
[[ $out == "rbd-mirror-rs $label_version" ]] || fail "--version printed '$out', want 'rbd-mirror-rs $label_version'"
ok "--version: $out"
out=$(in_image "$user" -- "${ENTRYPOINT[@]}" --help) || fail "--help failed: $out"
if ! grep -q '^Usage:' <<<"$out" || ! grep -q -- '--setuser' <<<"$out"; then fail "--help printed no usage: $out"; fi
ok "--help"
out=$(in_image "$user" -- stat -c '%u %g' /var/lib/ceph) || fail "stat in the image failed: $out"
[[ $out == "$CEPH_ID $CEPH_ID" ]] || fail "stat of /var/lib/ceph in the image gives '$out'"
ok "cephadm's uid/gid probe (stat -c '%u %g' /var/lib/ceph): $out"
out=$(in_image "$user" -- ceph --version) || fail "ceph --version in the image failed: $out"
[[ $out == "ceph version 16.2."* ]] || fail "ceph --version in the image printed '$out'"
ok "cephadm's image probe (ceph --version): $out"

# ---- what cephadm mounts: /etc/ceph, /var/run/ceph, /var/log/ceph ---------------------
WORK=$(mktemp -d /var/tmp/rbd-mirror-rs-container-test.XXXXXX)
mkdir -m 0755 "$WORK/etc-ceph"
mkdir -m 0770 "$WORK/run" "$WORK/log"
printf '# minimal ceph.conf for %s (as cephadm writes it)\n[global]\n\tfsid = %s\n\tmon_host = %s\n' \
  "$RBD_MIRROR_LAB_FSID" "$RBD_MIRROR_LAB_FSID" "$RBD_MIRROR_LAB_MON_HOST" >"$WORK/etc-ceph/ceph.conf"
cp "$RBD_MIRROR_LAB_MIRROR_KEYRING" "$WORK/etc-ceph/ceph.client.rbd-mirror.b.keyring"
chmod 0600 "$WORK"/etc-ceph/*
chown "$CEPH_ID:$CEPH_ID" "$WORK"/etc-ceph/* "$WORK/run" "$WORK/log"
bind "$WORK/etc-ceph" "$MNT/etc/ceph"
bind "$WORK/run" "$MNT/run/ceph"      # /var/run is a link to /run in the image
bind "$WORK/log" "$MNT/var/log/ceph"
# rbd-mirror's default admin socket: $run_dir/$cluster-$name.$pid.$cctid.asok
ASOK_GLOB='ceph-client.rbd-mirror.b.*.asok'

# ---- a journal-mirrored image on site-a ---------------------------------------------
step "site-a: a 64 MiB journal-mirrored image"
RBD_IMAGE=container-$$-$RANDOM
SPEC=$POOL/$RBD_IMAGE
# random content (rbd bench writes one byte value, the same in every run: its buffer is
# memset with an unseeded rand()), through librbd with journaling on
head -c 64M /dev/urandom | rbdc site-a import --no-progress \
  --image-feature layering,exclusive-lock,journaling - "$SPEC"
rbdc site-a mirror image enable "$SPEC" journal >/dev/null
note "created $SPEC with 64 MiB of random data"

# sha256 of an image's content; empty when it cannot be read (yet)
export_sha() {
  local sum
  sum=$(set -o pipefail; rbdc "$1" export --no-progress "$SPEC" - 2>/dev/null | sha256sum | cut -d' ' -f1) || return 0
  echo "$sum"
}
status_of() { rbdc site-b mirror image status "$SPEC" --format json 2>/dev/null | jq -r '"\(.state) \(.description)"'; }

# wait_replicated LABEL: up+replaying at site-b and equal exports, while the daemon lives
wait_replicated() {
  local label=$1 end=$((SECONDS + TIMEOUT)) a b st t0=$SECONDS
  a=$(export_sha site-a)
  [[ -n $a ]] || fail "$label: cannot export $SPEC at site-a"
  while :; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$WORK/$label.out" >&2; fail "$label: the daemon exited"; }
    st=$(status_of || true)
    [[ $st == *error* ]] && fail "$label: site-b status $st"
    if [[ $st == "up+replaying "* ]]; then
      b=$(export_sha site-b)
      [[ $a == "$b" ]] && break
    fi
    ((SECONDS < end)) || fail "$label: not replicated after ${TIMEOUT}s: status '$st', site-a $a, site-b ${b:-?}"
    sleep 1
  done
  ok "$label: $SPEC up+replaying at site-b, sha256 equal ($a) after $((SECONDS - t0))s"
}
check_identity() {  # the daemon's uid and gid
  local label=$1 uid gid
  uid=$(awk '/^Uid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$DAEMON_PID/status")
  gid=$(awk '/^Gid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$DAEMON_PID/status")
  [[ $uid == "$CEPH_ID/$CEPH_ID/$CEPH_ID/$CEPH_ID" && $gid == "$CEPH_ID/$CEPH_ID/$CEPH_ID/$CEPH_ID" ]] \
    || fail "$label: the daemon runs as uid $uid gid $gid, want $CEPH_ID"
  ok "$label: the daemon runs as $CEPH_ID:$CEPH_ID"
}
check_asok() {  # the admin socket in the mounted /var/run/ceph, asked from inside the image
  local label=$1 out sock end=$((SECONDS + 20))
  until sock=$(compgen -G "$WORK/run/$ASOK_GLOB"); do
    ((SECONDS < end)) || fail "$label: no admin socket /var/run/ceph/$ASOK_GLOB (run dir: $(ls -A "$WORK/run"))"
    sleep 0.5
  done
  sock=/var/run/ceph/$(basename "$sock")
  out=$(in_image "$CEPH_ID:$CEPH_ID" -- timeout 20 ceph --admin-daemon "$sock" version) \
    || fail "$label: ceph --admin-daemon $sock version failed: $out"
  ok "$label: admin socket $sock answers: $(tr -d '\n ' <<<"$out")"
}
stop_daemon() {  # SIGTERM; must exit 0 within 60 s
  local label=$1 rc=0 end=$((SECONDS + 60))
  kill -TERM "$DAEMON_PID"
  while kill -0 "$DAEMON_PID" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
  kill -0 "$DAEMON_PID" 2>/dev/null && fail "$label: still running 60s after SIGTERM"
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  ((rc == 0)) || { tail -n 20 "$WORK/$label.out" >&2; fail "$label: exit status $rc after SIGTERM"; }
  ok "$label: SIGTERM, exit status 0"
}

# ---- A: the image's user, the stock unit's arguments ---------------------------------
step "A: ${ENTRYPOINT[*]} -f --cluster ceph --id rbd-mirror.b --setuser ceph --setgroup ceph (as $user)"
in_image "$user" RBD_MIRROR_RS_METRICS_ADDR="$METRICS_ADDR" -- \
  "${ENTRYPOINT[@]}" -f --cluster ceph --id rbd-mirror.b --setuser ceph --setgroup ceph \
  >"$WORK/A.out" 2>&1 &
DAEMON_PID=$!
wait_replicated A
check_identity A
check_asok A
LOG=$WORK/log/ceph-client.rbd-mirror.b.log   # Ceph's default $log_file in /var/log/ceph
[[ -s $LOG ]] || fail "A: no log file /var/log/ceph/ceph-client.rbd-mirror.b.log"
ok "A: log file /var/log/ceph/ceph-client.rbd-mirror.b.log ($(wc -l <"$LOG") lines)"
grep -q 'ignoring --setuser ceph since I am not root' "$LOG" || fail "A: no warning that --setuser is ignored when not root"
ok "A: --setuser ceph ignored with Ceph's warning (not root)"
stop_daemon A
log_lines_a=$(wc -l <"$LOG")

step "site-a: rbd bench writes while no daemon runs (journal entries for B to replay)"
before=$(export_sha site-a)
rbdc site-a bench --io-type write --io-size 4K --io-total 4M --io-pattern rand "$SPEC" | tail -n 1
[[ $(export_sha site-a) != "$before" ]] || fail "rbd bench left $SPEC at site-a unchanged"

# ---- B: cephadm's argument line and environment, started as root ----------------------
CEPHADM_ENV=(CONTAINER_IMAGE="localhost/rbd-mirror-rs:$label_version" NODE_NAME="$(hostname)"
  TCMALLOC_MAX_TOTAL_THREAD_CACHE_BYTES=134217728 CEPH_USE_RANDOM_NONCE=1
  RBD_MIRROR_RS_METRICS_ADDR="$METRICS_ADDR")
start_b() {
  in_image 0:0 "${CEPHADM_ENV[@]}" -- /usr/bin/rbd-mirror "$@" >"$WORK/B.out" 2>&1 &
  DAEMON_PID=$!
  local end=$((SECONDS + 5))   # a rejected command line ends the process at once
  while kill -0 "$DAEMON_PID" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
}
step "B: /usr/bin/rbd-mirror ${CEPHADM_ARGS[*]} (cephadm's line, as root)"
start_b "${CEPHADM_ARGS[@]}"
if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
  rc=0; wait "$DAEMON_PID" || rc=$?; DAEMON_PID=
  cat "$WORK/B.out" >&2
  fail "B: the daemon exited at once (status $rc) on cephadm's argument line"
fi
ok "B: cephadm's argument line accepted"
wait_replicated B
check_identity B
check_asok B
stop_daemon B

# where B's log went: the stock daemon, given cephadm's --default-log-to-file=false
# --default-log-to-stderr=true, logs to stderr only (the container's journal)
b_stderr=$(wc -l <"$WORK/B.out") b_file=$(($(wc -l <"$LOG") - log_lines_a))
note "B: $b_stderr line(s) on stdout/stderr, $b_file line(s) in /var/log/ceph/ceph-client.rbd-mirror.b.log; stderr begins:"
head -n 3 "$WORK/B.out" | cut -c 1-160 | sed 's/^/  | /'
((b_file == 0 && b_stderr > 0)) || fail "B: with --default-log-to-file=false the log must go to stderr only"
grep -q "connected to the local cluster" "$WORK/B.out" || fail "B: no 'connected to the local cluster' on stderr"
ok "B: output on stderr only, as cephadm asks (--default-log-to-file=false)"
echo
echo "container.sh: all checks passed in $((SECONDS - t_start))s"
echo "container: $passed passed, 0 failed"
