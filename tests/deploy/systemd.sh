#!/usr/bin/env bash
# tests/deploy/systemd.sh — the Debian package and its systemd unit, for real, on the lab:
#
#  1. builds the .deb (deploy/build-deb.sh, cargo-deb) and installs it with apt-get: the
#     binary, rbd-mirror-rs@.service, rbd-mirror-rs.target and /etc/default/rbd-mirror-rs
#     must land where the unit expects them;
#  2. `systemd-analyze verify` of the unit template (an instance) and the target: no error,
#     no warning;
#  3. starts the unit for site-b's client `rbd-mirror.b` with the conf and keyring in
#     /etc/ceph and CLUSTER in /etc/default/rbd-mirror-rs, as deploy/systemd/setup-site.sh
#     (what an operator does) puts them, under a cluster name of its own:
#       - under the machine's systemd when it runs one (`systemctl start`), or else
#       - with the unit's exact ExecStart line (its Environment/EnvironmentFile variables, %i
#         and ${CLUSTER} expanded), a test NOTIFY_SOCKET and WATCHDOG_USEC, and the unit's
#         sandbox as far as it can be reproduced without systemd: PrivateTmp, ProtectSystem=full
#         and ProtectHome (a private mount namespace), NoNewPrivileges and CapabilityBoundingSet
#         (setpriv), LimitNOFILE/LimitNPROC (prlimit);
#  4. checks: READY=1, the daemon runs as ceph, the admin socket and /metrics answer, a
#     journal-mode image written at site-a is replicated (`rbd mirror image status`
#     up+replaying, `rbd export | sha256sum` equal on both sites), WATCHDOG=1 keeps coming,
#     the unit's ExecReload gives RELOADING=1 then READY=1 and the daemon stays up, stop
#     (SIGTERM) gives STOPPING=1 and exit status 0; a start that cannot work (no keyring for
#     the id) exits non-zero, so Restart=on-failure applies;
#  5. removes the package, the conf and keyring it wrote, and its image (trap).
#
# Needs root and the lab (tests/lab/lab.sh up). Honours RBD_MIRROR_LAB_INSTANCE/_DIR as lab.sh.
#   RBD_MIRROR_RS_DEB=path.deb   install that package instead of building one
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

fail() { echo "systemd.sh: FAIL: $*" >&2; exit 1; }
log() { echo "systemd.sh: $*" >&2; }
((EUID == 0)) || fail "needs root (installs a package, writes /etc/ceph, drops to the ceph user)"

LAB=tests/lab/lab.sh
LAB_DIR=$($LAB dir)
[[ -f $LAB_DIR/site-b/.created ]] || fail "the lab is not up: run tests/lab/lab.sh up"
eval "$($LAB env site-a)"; A_CONF=$CEPH_CONF
eval "$($LAB env site-b)"; B_CONF=$CEPH_CONF; B_KEYRING=$RBD_MIRROR_LAB_MIRROR_KEYRING
B_FSID=$RBD_MIRROR_LAB_FSID; B_MON_HOST=$RBD_MIRROR_LAB_MON_HOST
unset CEPH_CONF
# Not the lab's name: a stock daemon of any lab finds no /etc/ceph/site-b.conf meanwhile.
CLUSTER=rbd-mirror-rs-test ID=rbd-mirror.b POOL=mirror
UNIT=rbd-mirror-rs@$ID.service UNIT_FILE=/lib/systemd/system/rbd-mirror-rs@.service
IMAGE=systemd-$$-$RANDOM
WORK=$(mktemp -d /run/rbd-mirror-rs-systemd-test.XXXXXX)   # not /tmp: PrivateTmp hides it
chmod 0755 "$WORK"
DAEMON_PID=

rbd_a() { timeout 60 rbd --cluster site-a -c "$A_CONF" "$@"; }
rbd_b() { timeout 60 rbd --cluster site-b -c "$B_CONF" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [[ -d /run/systemd/system ]]; then systemctl stop "$UNIT" 2>/dev/null; rm -rf "/run/systemd/system/$UNIT.d"; systemctl daemon-reload; fi
  [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && sleep 2 && kill -9 "$DAEMON_PID" 2>/dev/null
  [[ -n ${LISTENER_PID:-} ]] && kill "$LISTENER_PID" 2>/dev/null
  if ((rc != 0)); then
    log "the daemon's log (last 30 lines):"; tail -n 30 "/var/log/ceph/$CLUSTER-client.$ID.log" >&2 2>/dev/null
    log "notifications:"; cat "$WORK/notify.log" >&2 2>/dev/null
    log "output:"; tail -n 30 "$WORK/stdout.log" >&2 2>/dev/null
  fi
  rbd_a mirror image disable --force "$POOL/$IMAGE" >/dev/null 2>&1; rbd_a rm "$POOL/$IMAGE" >/dev/null 2>&1
  rbd_b mirror image disable --force "$POOL/$IMAGE" >/dev/null 2>&1; rbd_b rm "$POOL/$IMAGE" >/dev/null 2>&1
  rm -f "/etc/ceph/$CLUSTER.conf" "/etc/ceph/$CLUSTER.client.$ID.keyring" /var/log/ceph/"$CLUSTER"-client.rbd-mirror.{b,nokey}.log
  dpkg -s rbd-mirror-rs >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get purge -y -q rbd-mirror-rs >/dev/null
  rm -rf "$WORK"
  $LAB mirror-stop site-b >/dev/null 2>&1
  exit $rc
}
trap cleanup EXIT

# Never two daemons at site-b.
$LAB mirror-stop site-b >/dev/null

# 1. The package.
DEB=${RBD_MIRROR_RS_DEB:-$(deploy/build-deb.sh)}
[[ -f $DEB ]] || fail "no package at '$DEB'"
log "installing $DEB"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$(realpath "$DEB")" >/dev/null
for f in /usr/bin/rbd-mirror-rs "$UNIT_FILE" /lib/systemd/system/rbd-mirror-rs.target /etc/default/rbd-mirror-rs \
  /usr/share/doc/rbd-mirror-rs/examples/ceph.conf.sample /usr/share/doc/rbd-mirror-rs/operations.md; do
  [[ -f $f ]] || fail "the package did not install $f"
done
dpkg -L rbd-mirror-rs | grep -qx /usr/bin/rbd-mirror-rs || fail "dpkg -L does not list /usr/bin/rbd-mirror-rs"
/usr/bin/rbd-mirror-rs --version >/dev/null || fail "the installed binary does not run"

# 2. systemd's own check of the unit files.
out=$(cd / && systemd-analyze verify "/lib/systemd/system/$UNIT" /lib/systemd/system/rbd-mirror-rs.target 2>&1) ||
  fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"
log "systemd-analyze verify: clean"

# 3. The site's conf and keyring where the unit's --cluster/--id look for them, CLUSTER in
# /etc/default/rbd-mirror-rs: as an operator (and vagrant/provision.sh) sets a site up.
[[ ! -e /etc/ceph/$CLUSTER.conf ]] || fail "/etc/ceph/$CLUSTER.conf exists already; not overwriting it"
deploy/systemd/setup-site.sh "$CLUSTER" "$ID" "$B_FSID" "$B_MON_HOST" "$B_KEYRING"

unit_values() { sed -n "s/^$1=//p" "$UNIT_FILE"; }
WATCHDOG_USEC=2000000 # the test's: 1 s pings instead of the unit's 30 s

# The notify socket: every datagram, one line each, in notify.log.
start_listener() {
  python3 - "$WORK/notify.sock" "$WORK/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode(errors="replace").replace("\n", " ") + "\n")
PY
  LISTENER_PID=$!
  # The daemon sends as ceph: as systemd's own, the socket is everyone's to write to.
  for _ in $(seq 50); do [[ -S $WORK/notify.sock ]] && chmod 0777 "$WORK/notify.sock" && return; sleep 0.1; done
  fail "the notify listener did not start"
}
count() { grep -c -- "$1" "$WORK/notify.log" 2>/dev/null || true; }
wait_notify() { # what, occurrences, seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do (($(count "$1") >= $2)) && return; sleep 0.1; done
  fail "no '$1' (x$2) from the daemon in $3 s"
}

# The unit's environment: Environment=, then each EnvironmentFile= that exists, as systemd.
unit_env() {
  local e f
  for e in $(unit_values Environment); do echo "$e"; done
  for f in $(unit_values EnvironmentFile); do
    f=${f#-}
    [[ -f $f ]] && grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$f"
  done
}

# ExecStart with %i and ${CLUSTER} expanded from the unit's environment (the last wins).
exec_start() {
  local line cluster
  cluster=$(unit_env | sed -n 's/^CLUSTER=//p' | tail -n 1)
  [[ $cluster == "$CLUSTER" ]] || fail "the unit's environment gives CLUSTER=$cluster, not $CLUSTER"
  line=$(unit_values ExecStart)
  line=${line//%i/$ID}
  line=${line//\$\{CLUSTER\}/$cluster}
  echo "$line"
}

EXEC_START=$(exec_start)

main_pid() {
  if [[ -d /run/systemd/system ]]; then systemctl show -p MainPID --value "$UNIT"; else echo "$DAEMON_PID"; fi
}

# The unit's Limit*, or this machine's hard limit when lower (raising it needs
# CAP_SYS_RESOURCE, which systemd has and a sandboxed test machine may not).
limit() {
  local want have
  want=$(unit_values "$1"); have=$(ulimit -H "$2")
  if [[ $have != unlimited ]] && ((want > have)); then
    log "$1=$want: this machine's hard limit is $have, the test runs with that"; echo "$have"
  else echo "$want"; fi
}

start_emulated() {
  local env caps=() c sandbox
  mapfile -t env < <(unit_env)
  for c in $(unit_values CapabilityBoundingSet); do c=${c#CAP_}; caps+=("+${c,,}"); done
  local bounding
  bounding="-all$(IFS=,; echo "${caps[*]:+,${caps[*]}}")"
  # PrivateTmp, ProtectSystem=full (/usr, /boot, /efi, /etc read-only), ProtectHome.
  # shellcheck disable=SC2016 # expanded by the sandbox's shell
  sandbox='set -e; mount -t tmpfs -o mode=1777 tmpfs /tmp; mount -t tmpfs -o mode=1777 tmpfs /var/tmp
    for d in /usr /boot /efi /etc; do if [ -d $d ]; then mount --bind $d $d; mount -o remount,bind,ro $d; fi; done
    for d in /home /root /run/user; do if [ -d $d ]; then mount -t tmpfs -o ro,mode=0755 tmpfs $d; fi; done
    touch /etc/.rbd-mirror-rs-rw-test 2>/dev/null && { echo "sandbox: /etc is writable" >&2; exit 1; }
    exec "$@"'
  log "ExecStart: $EXEC_START"
  # shellcheck disable=SC2086 # the ExecStart line is split into words as systemd does
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${env[@]}" NOTIFY_SOCKET="$WORK/notify.sock" WATCHDOG_USEC=$WATCHDOG_USEC \
    prlimit --nofile="$(limit LimitNOFILE -n)" --nproc="$(limit LimitNPROC -u)" -- \
    unshare --mount --propagation private -- sh -c "$sandbox" sandbox \
    setpriv --no-new-privs --bounding-set "$bounding" -- $EXEC_START </dev/null >>"$WORK/stdout.log" 2>&1 &
  DAEMON_PID=$!
}

start_systemd() {
  mkdir -p "/run/systemd/system/$UNIT.d"
  printf '[Service]\nWatchdogSec=%s\n' "$((WATCHDOG_USEC / 1000000))" \
    >"/run/systemd/system/$UNIT.d/test.conf"
  systemctl daemon-reload
  systemctl start "$UNIT" || fail "systemctl start $UNIT: $(systemctl status "$UNIT" 2>&1 | tail -20)"
}

if [[ -d /run/systemd/system ]]; then
  log "the machine runs systemd: systemctl start $UNIT"
  start_systemd
  [[ $(systemctl show -p ActiveState --value "$UNIT") == active ]] || fail "$UNIT is not active"
  pid=$(main_pid)
else
  log "no systemd on this machine (pid 1 is $(ps -o comm= -p 1)): the unit's ExecStart with a test NOTIFY_SOCKET"
  start_listener
  start_emulated
  wait_notify READY=1 1 60
  pid=$DAEMON_PID
  kill -0 "$pid" 2>/dev/null || fail "the daemon exited"
fi

# 4. What the unit promises.
user=$(ps -o user= -p "$pid" | tr -d ' ')
[[ $user == ceph ]] || fail "the daemon runs as '$user', not ceph"
log "running as ceph, pid $pid"
# The stock daemon's default: $run_dir/$cluster-$name.$pid.$cctid.asok
asok=$(compgen -G "/var/run/ceph/$CLUSTER-client.$ID.$pid.*.asok" || true)
[[ -S $asok ]] || fail "no admin socket /var/run/ceph/$CLUSTER-client.$ID.$pid.*.asok"
timeout 10 ceph --admin-daemon "$asok" rbd mirror status >/dev/null || fail "the admin socket $asok does not answer"
curl -fsS http://127.0.0.1:9287/metrics | grep -q '^ceph_rbd_mirror_metadata' ||
  fail "/metrics does not answer on the default 0.0.0.0:9287"

rbd_a create "$POOL/$IMAGE" --size 64M --image-feature exclusive-lock,journaling
rbd_a mirror image enable "$POOL/$IMAGE" journal >/dev/null
rbd_a bench --io-type write --io-pattern rand --io-size 4K --io-total 4M "$POOL/$IMAGE" >/dev/null
deadline=$((SECONDS + 120))
until [[ $(rbd_b mirror image status "$POOL/$IMAGE" --format json 2>/dev/null | jq -r .state 2>/dev/null) == up+replaying ]] &&
  [[ $(rbd_b export "$POOL/$IMAGE" - 2>/dev/null | sha256sum) == $(rbd_a export "$POOL/$IMAGE" - 2>/dev/null | sha256sum) ]]; do
  ((SECONDS < deadline)) || fail "$POOL/$IMAGE not replicated in 120 s: $(rbd_b mirror image status "$POOL/$IMAGE" 2>&1)"
  sleep 1
done
log "$POOL/$IMAGE replicated (up+replaying, checksums equal)"

if [[ ! -d /run/systemd/system ]]; then
  n=$(count WATCHDOG=1); wait_notify WATCHDOG=1 $((n + 2)) 5
  log "WATCHDOG=1 every $((WATCHDOG_USEC / 2000)) ms"
  reload=$(unit_values ExecReload); reload=${reload//\$MAINPID/$pid}
  $reload
  wait_notify RELOADING=1 1 10; wait_notify READY=1 2 10
  sleep 1; kill -0 "$pid" 2>/dev/null || fail "the daemon exited after ExecReload"
  log "ExecReload: RELOADING=1, READY=1, still running"
  kill -TERM "$pid"
  rc=0; wait "$pid" || rc=$?
  DAEMON_PID=
  ((rc == 0)) || fail "the daemon exited $rc on SIGTERM"
  wait_notify STOPPING=1 1 1
  log "SIGTERM: STOPPING=1, exit status 0"
  # A start that cannot work exits non-zero (Restart=on-failure then applies).
  rc=0
  nokey=${EXEC_START/--id $ID/--id rbd-mirror.nokey}
  # shellcheck disable=SC2086 # the ExecStart line is split into words as systemd does
  env -i PATH=/usr/bin:/bin timeout 120 $nokey >"$WORK/fail.log" 2>&1 || rc=$?
  ((rc != 0 && rc != 124)) || fail "a start without a keyring exited $rc"
  log "a start without a keyring: exit status $rc ($(tail -n 1 "$WORK/fail.log"))"
else
  systemctl reload "$UNIT"; sleep 2
  [[ $(systemctl show -p ActiveState --value "$UNIT") == active ]] || fail "$UNIT is not active after reload"
  systemctl stop "$UNIT"
  [[ $(systemctl show -p Result --value "$UNIT") == success ]] || fail "$UNIT did not stop cleanly"
fi
log "ok"
