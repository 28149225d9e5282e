#!/usr/bin/env bash
# tests/lab/lab.sh — the project's two-cluster Ceph lab: "site-a" and "site-b", two
# independent single-host Ceph Pacific (16.2) clusters on loopback addresses, packaged
# daemons (no vstart.sh, no containers, no systemd), pool "mirror" with image-mode
# mirroring on both, peered with `rbd mirror pool peer bootstrap` exactly as an operator does.
# Optionally a third, "site-c" (RBD_MIRROR_LAB_SITES="site-a site-b site-c"): site-b
# receives from site-c on a second pool "mirror-c" (peered by "up"); site-a's pool "mirror"
# also transmits to site-c (one-to-many) only between "peer-c" and "unpeer-c", as each
# three-site test does (tests/lab/README.md says why this topology).
#
# usage: lab.sh up               create or restart the sites, pools, peering (idempotent)
#        lab.sh down             stop every daemon this script started (by its pid files only),
#                                at every site of the state directory
#        lab.sh status           daemons, health, mirroring status of each site
#        lab.sh env SITE         shell exports for that site (eval "$(lab.sh env site-b)")
#        lab.sh dir              print the state directory
#        lab.sh mirror-start [SITE|all]  start rbd-mirror (default site-b) as the stock unit
#                                would: --cluster SITE -c SITE.conf -f --id rbd-mirror.<a|b|c>,
#                                cwd = site dir; RBD_MIRROR_LAB_MIRROR_BIN (or
#                                CEPH_LAB_MIRROR_BIN) = another binary started the same way;
#                                RBD_MIRROR_LAB_MIRROR_ARGS = more arguments (word-split);
#                                RBD_MIRROR_LAB_MIRROR_INSTANCE=N (2..9): another instance at
#                                that site, --id rbd-mirror.<a|b>N (user made on first use),
#                                metrics on port <prefix>2(87+N)
#                                RBD_MIRROR_LAB_MIRROR_CGROUP=DIR: started in that cgroup-v2
#                                directory (written to DIR/cgroup.procs before the exec), so
#                                netfilter's cgroup match sees only its sockets (net_faults.rs)
#        lab.sh mirror-stop [SITE|all]   (default all; every instance of the site, or only
#                                RBD_MIRROR_LAB_MIRROR_INSTANCE's)
#        lab.sh osd-stop SITE    stop SITE's OSD (SIGTERM, as "down" stops it)
#        lab.sh osd-start SITE   start it again as "up" does; waits until it is up and the
#                                placement groups are active
#        lab.sh peer-token SITE  print a `rbd mirror pool peer bootstrap create` token of SITE
#        lab.sh peer-import SITE FILE    import a token into SITE (rx-tx)
#        lab.sh peer-c           add site-c as site-a's second peer on pool mirror and
#                                site-a as site-c's (rx-tx both, librbd's
#                                rbd_mirror_peer_site_add: the CLI refuses a second peer);
#                                idempotent. Not done by "up": with it, the stock daemon at
#                                site-a runs two competing pool replayers for pool mirror
#        lab.sh unpeer-c         remove them again (rbd mirror pool peer remove on site-a
#                                and site-c); idempotent. "up" does it too (a leftover of a
#                                killed three-site test). Pool mirror-c (site-c -> site-b,
#                                bootstrap rx-tx) is peered by "up" and stays
#        lab.sh purge            down, then delete the state directory
#
# Environment: RBD_MIRROR_LAB_DIR (state, default /tmp/rbd-mirror-rs-lab),
#   RBD_MIRROR_LAB_INSTANCE=N (0..3: a separate lab on 127.0.N.1/.2/.3, ports +N, state dir
#   default /tmp/rbd-mirror-rs-labN, so several can run on one machine),
#   RBD_MIRROR_LAB_OSD_BYTES (sparse bluestore file, default 16G), RBD_MIRROR_LAB_TIMEOUT
#   (seconds per wait, default 120), RBD_MIRROR_LAB_PROMETHEUS=1 (enable mgr prometheus),
#   RBD_MIRROR_LAB_SITES (the sites this host runs, default "site-a site-b", or "site-a site-b
#   site-c"; "up" peers a pair only when it runs both), RBD_MIRROR_LAB_SITE_A_IP / _SITE_B_IP
#   / _SITE_C_IP (a site's address instead of the loopback one: one site per machine, as
#   vagrant/provision.sh runs the lab).
#
# Layout: $RBD_MIRROR_LAB_DIR/<site>/{<site>.conf, <site>.client.<id>.keyring, fsid,
#   mon/ mgr/ osd/ run/ (pid files "pid exe", admin sockets) log/}, and peer-token.
# Addresses (chosen apart from ../shared's lab so both can run on one machine), instance 0:
#   site-a 127.0.0.1: mon v2 16300, v1 16789, daemons 16800-16899, prometheus 16283
#   site-b 127.0.0.2: mon v2 26300, v1 26789, daemons 26800-26899, prometheus 26283
#   site-c 127.0.0.3: mon v2 36300, v1 36789, daemons 36800-36899, prometheus 36283
#   (instance N: 127.0.N.1 / .2 / .3, port prefixes 16+N / 26+N / 36+N); rbd-mirror-rs
#   started by mirror-start serves /metrics on <site ip>:<prefix>287 (16287 / 26287 / 36287)
#
# Pitfalls this script handles (learned the hard way, keep them):
#  * memstore under-counts used bytes on Pacific once images with snapshots are deleted
#    and the OSD goes failsafe-full: the OSD is bluestore on a sparse file instead.
#  * mgr module options live in the mon config db only; prometheus is bound to the site's
#    address before the mgr first starts, or it would listen on "::" of both sites.
#  * rbd-mirror's per-pool local connection reads ./<cluster>.conf from the default search
#    path, so it must run with cwd = the site directory (then its peer connection, which
#    must use only the bootstrap mon_host + key, finds no conf: good).
#  * a daemon is identified by "pid exe" in its pid file: a recycled pid is never signalled.
#  * every ceph/rbd call is bounded by `timeout`, every wait by RBD_MIRROR_LAB_TIMEOUT.
#  * Pacific's `rbd mirror pool peer add` and `bootstrap import` refuse a pool's second peer
#    ("multiple peers are not currently supported"); librbd's peer_site_add does not, but
#    refuses a tx-only direction: site-a's peer site-c is rx-tx, added through python3-rbd.
set -euo pipefail

export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # Debian's python for the ceph CLI
unset CEPH_ARGS CEPH_CONF                          # never inherit a caller's cluster

INSTANCE=${RBD_MIRROR_LAB_INSTANCE:-0}
[[ $INSTANCE =~ ^[0-3]$ ]] || { echo "lab.sh: error: RBD_MIRROR_LAB_INSTANCE must be 0..3" >&2; exit 1; }
if ((INSTANCE == 0)); then STATE=${RBD_MIRROR_LAB_DIR:-/tmp/rbd-mirror-rs-lab}; else STATE=${RBD_MIRROR_LAB_DIR:-/tmp/rbd-mirror-rs-lab$INSTANCE}; fi
POOL=mirror
POOL_C=mirror-c   # site-c -> site-b, only with site-c
OSD_BYTES=${RBD_MIRROR_LAB_OSD_BYTES:-16G}
PG_NUM=8
TIMEOUT=${RBD_MIRROR_LAB_TIMEOUT:-120}
MIRROR_BIN=${RBD_MIRROR_LAB_MIRROR_BIN:-${CEPH_LAB_MIRROR_BIN:-}}
read -ra SITES <<<"${RBD_MIRROR_LAB_SITES:-site-a site-b}"
PACKAGES=(ceph-mon ceph-osd ceph-mgr ceph-common rbd-mirror jq uuid-runtime)

die() { echo "lab.sh: error: $*" >&2; exit 1; }
log() { echo "lab.sh: $*" >&2; }

site_ip()  { case $1 in site-a) echo "${RBD_MIRROR_LAB_SITE_A_IP:-127.0.$INSTANCE.1}" ;; site-b) echo "${RBD_MIRROR_LAB_SITE_B_IP:-127.0.$INSTANCE.2}" ;; site-c) echo "${RBD_MIRROR_LAB_SITE_C_IP:-127.0.$INSTANCE.3}" ;; *) die "unknown site '$1' (site-a, site-b or site-c)" ;; esac; }
site_port_prefix() { case $1 in site-a) echo $((16 + INSTANCE)) ;; site-b) echo $((26 + INSTANCE)) ;; site-c) echo $((36 + INSTANCE)) ;; *) die "unknown site '$1'" ;; esac; }
site_id()  { echo "${1#site-}"; }
site_dir() { echo "$STATE/$1"; }
conf()     { echo "$STATE/$1/$1.conf"; }
mon_host() { local ip p; ip=$(site_ip "$1"); p=$(site_port_prefix "$1"); echo "[v2:$ip:${p}300,v1:$ip:${p}789]"; }

cephc() { local s=$1; shift; timeout "$TIMEOUT" ceph --cluster "$s" -c "$(conf "$s")" --connect-timeout 15 "$@"; }
rbdc()  { local s=$1; shift; timeout "$TIMEOUT" rbd --cluster "$s" -c "$(conf "$s")" "$@"; }

wait_until() {  # wait_until WHAT CMD...: retry once a second, bounded
  local what=$1; shift; local end=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "gave up after ${TIMEOUT}s waiting for $what"
    sleep 1
  done
}

check_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  die "missing packages: ${missing[*]}
  install them (Debian 12, as root) with:  deploy/install-deps.sh
  or:  apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
}

# ---- processes: foreground daemons under setsid; "<pid> <exe>" in <site>/run/<name>.pid
is_running() {
  local f=$1 pid exe
  [[ -s $f ]] || return 1
  read -r pid exe <"$f"
  # a binary rebuilt under a running daemon reads as "<path> (deleted)": still ours
  [[ -d /proc/$pid && $(readlink "/proc/$pid/exe" 2>/dev/null) =~ ^"$exe"( \(deleted\))?$ ]] || return 1
  # /proc/<n> also exists for a thread id: a recycled pid that is a thread of another lab's
  # daemon is not ours. Ours is a process leader started with a conf of this state dir.
  [[ $(awk '/^Tgid:/ {print $2}' "/proc/$pid/status" 2>/dev/null) == "$pid" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE/"
}

start_daemon() {  # start_daemon SITE NAME BINARY ARGS...
  local s=$1 name=$2 bin; bin=$(command -v "$3") || die "$3 not found"; shift 3
  local d; d=$(site_dir "$s"); local pidfile=$d/run/$name.pid
  is_running "$pidfile" && return 0
  # START_CGROUP: a cgroup-v2 directory the daemon starts in (its sockets carry it)
  (cd "$d" && if [[ -n ${START_CGROUP:-} ]]; then echo "$BASHPID" >"$START_CGROUP/cgroup.procs"; fi &&
    exec setsid "$bin" --cluster "$s" -c "$(conf "$s")" -f "$@" \
    >>"log/$name.stdout" 2>&1 </dev/null) &
  echo "$! $(readlink -f "$bin")" >"$pidfile"
  sleep 0.3
  is_running "$pidfile" || die "$s: $name exited at once; see $d/log/ ($name.stdout, client.$name.log)"
}

stop_daemon() {  # stop_daemon SITE NAME: SIGTERM, bounded grace, then SIGKILL
  local pidfile; pidfile=$(site_dir "$1")/run/$2.pid
  [[ -f $pidfile ]] || return 0
  if is_running "$pidfile"; then
    local pid grace=60; read -r pid _ <"$pidfile"
    [[ $2 == rbd-mirror.* ]] && grace=20   # stock rbd-mirror sometimes hangs in shutdown
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + grace))
    while [[ -d /proc/$pid ]] && ((SECONDS < end)); do sleep 0.2; done
    if [[ -d /proc/$pid ]]; then
      log "$1: $2 still running ${grace}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while [[ -d /proc/$pid ]]; do sleep 0.1; done
    fi
  fi
  rm -f "$pidfile"
}

stop_site() {
  local d f; d=$(site_dir "$1")
  [[ -d $d/run ]] || return 0
  for f in "$d"/run/rbd-mirror.*.pid "$d"/run/osd.*.pid "$d"/run/mgr.*.pid "$d"/run/mon.*.pid; do
    [[ -e $f ]] && stop_daemon "$1" "$(basename "$f" .pid)"
  done
  return 0
}

# ---- creation ---------------------------------------------------------------------
write_conf() {
  local s=$1 d ip p bytes; d=$(site_dir "$s"); ip=$(site_ip "$s"); p=$(site_port_prefix "$s")
  bytes=$(numfmt --from=iec "$OSD_BYTES")
  cat >"$(conf "$s")" <<CONF
# written by tests/lab/lab.sh; regenerated on every "up"
[global]
fsid = $(cat "$d/fsid")
mon host = $(mon_host "$s")
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = ${p}800
ms bind port max = ${p}899
run dir = $d/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = $PG_NUM
osd pool default pgp num = $PG_NUM
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
public addr = $ip
mon data = $d/mon/\$id
log file = $d/log/\$name.log
mon cluster log file = $d/log/cluster.log
mon allow pool delete = true
auth allow insecure global id reclaim = false
mgr initial modules = iostat

[mgr]
public addr = $ip
mgr data = $d/mgr/\$id
log file = $d/log/\$name.log

[osd]
public addr = $ip
cluster addr = $ip
osd data = $d/osd/\$id
log file = $d/log/\$name.log
osd objectstore = bluestore
bluestore block path = $d/osd/\$id/block.img
bluestore block create = true
bluestore block size = $bytes
bluestore cache autotune = false
bluestore cache size = 268435456
osd memory target = 1073741824
osd op num shards = 2
osd op num threads per shard = 2

[client]
keyring = $d/$s.\$name.keyring

[client.rbd-mirror.$(site_id "$s")]
log file = $d/log/\$name.log
admin socket = $d/run/\$name.asok
CONF
}

create_site() {
  local s=$1 d id; d=$(site_dir "$s"); id=$(site_id "$s")
  log "$s: creating in $d"
  stop_site "$s"
  rm -rf "$d"; mkdir -p "$d"/{mon,mgr,osd,run,log}
  uuidgen >"$d/fsid"
  write_conf "$s"
  ceph-authtool --create-keyring "$d/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$d/$s.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$d/mon.keyring" --import-keyring "$d/$s.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$(cat "$d/fsid")" --enable-all-features \
    --set-min-mon-release pacific --addv "$id" "$(mon_host "$s")" "$d/monmap" >/dev/null
  ceph-mon --cluster "$s" -c "$(conf "$s")" --mkfs -i "$id" --monmap "$d/monmap" \
    --keyring "$d/mon.keyring" >/dev/null
  start_daemon "$s" "mon.$id" ceph-mon -i "$id"
  wait_until "$s monitor quorum" cephc "$s" quorum_status
  cephc "$s" config set mgr mgr/prometheus/server_addr "$(site_ip "$s")" --force
  cephc "$s" config set mgr mgr/prometheus/server_port "$(site_port_prefix "$s")283" --force

  mkdir -p "$d/mgr/$id"
  cephc "$s" auth get-or-create "mgr.$id" mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$d/mgr/$id/keyring"
  start_daemon "$s" "mgr.$id" ceph-mgr -i "$id"

  local uuid secret osd
  uuid=$(uuidgen); secret=$(ceph-authtool --gen-print-key)
  osd=$(echo "{\"cephx_secret\": \"$secret\"}" | cephc "$s" osd new "$uuid" -i -)
  mkdir -p "$d/osd/$osd"
  ceph-authtool --create-keyring "$d/osd/$osd/keyring" --name "osd.$osd" --add-key "$secret" >/dev/null
  ceph-osd --cluster "$s" -c "$(conf "$s")" -i "$osd" --mkfs --osd-uuid "$uuid" \
    >>"$d/log/osd-mkfs.log" 2>&1 || die "$s: ceph-osd --mkfs failed; see $d/log/osd-mkfs.log"
  echo "$osd" >"$d/osd-id"

  # the site's rbd-mirror user, with the caps the stock daemon documents
  cephc "$s" auth get-or-create "client.rbd-mirror.$id" mon 'profile rbd-mirror' osd 'profile rbd' \
    -o "$d/$s.client.rbd-mirror.$id.keyring"
  touch "$d/.created"
}

osd_up()        { [[ $(cephc "$1" osd stat -f json | jq .num_up_osds) -ge 1 ]]; }
mgr_available() { [[ $(cephc "$1" mgr stat -f json | jq .available) == true ]]; }
pgs_active()    { cephc "$1" pg stat -f json | jq -e '.pg_summary as $p | $p.num_pgs > 0 and $p.num_pgs == ([$p.num_pg_by_state[] | select(.name | startswith("active")) | .num] | add)' >/dev/null; }

start_site() {
  local s=$1 d id osd; d=$(site_dir "$s"); id=$(site_id "$s"); osd=$(cat "$d/osd-id")
  start_daemon "$s" "mon.$id" ceph-mon -i "$id"
  wait_until "$s monitor quorum" cephc "$s" quorum_status
  start_daemon "$s" "mgr.$id" ceph-mgr -i "$id"
  start_daemon "$s" "osd.$osd" ceph-osd -i "$osd"
  wait_until "$s osd.$osd up" osd_up "$s"
  wait_until "$s mgr available" mgr_available "$s"
}

setup_pool() {  # setup_pool SITE [POOL]
  local s=$1 pool=${2:-$POOL}
  if ! cephc "$s" osd pool ls | grep -qx "$pool"; then
    cephc "$s" osd pool create "$pool" "$PG_NUM" "$PG_NUM" >/dev/null 2>&1
    rbdc "$s" pool init "$pool"
  fi
  wait_until "$s placement groups active" pgs_active "$s"
  if [[ $(rbdc "$s" mirror pool info "$pool" --format json | jq -r .mode) != image ]]; then
    rbdc "$s" mirror pool enable "$pool" image --site-name "$s"
  fi
}

has_peer() { [[ $(rbdc "$1" mirror pool info "${2:-$POOL}" --format json | jq '.peers | length') -ge 1 ]]; }
has_peer_site() {  # has_peer_site SITE POOL PEER_SITE
  rbdc "$1" mirror pool info "$2" --format json | jq -e --arg p "$3" 'any(.peers[]; .site_name == $p)' >/dev/null
}

peer_token() { rbdc "$1" mirror pool peer bootstrap create --site-name "$1" "${2:-$POOL}"; }
peer_import() { rbdc "$1" mirror pool peer bootstrap import --site-name "$1" --direction rx-tx "${3:-$POOL}" "$2"; }

# peer_add_api SITE POOL PEER_SITE TOKEN_FILE: adds PEER_SITE as an rx-tx peer of SITE's
# POOL with librbd's rbd_mirror_peer_site_add (python3-rbd), which, unlike the CLI, accepts
# a pool's second peer; the token's mon_host and key become the peer's attributes.
peer_add_api() {
  timeout "$TIMEOUT" /usr/bin/python3 - "$1" "$(conf "$1")" "$2" "$3" "$4" <<'PY'
import base64, json, sys
import rados, rbd
site, conf, pool, peer, token = sys.argv[1:]
t = json.loads(base64.b64decode(open(token).read()))
with rados.Rados(clustername=site, conffile=conf) as cluster, cluster.open_ioctx(pool) as io:
    uuid = rbd.RBD().mirror_peer_add(io, peer, "client." + t["client_id"],
                                     rbd.RBD_MIRROR_PEER_DIRECTION_RX_TX)
    rbd.RBD().mirror_peer_set_attributes(io, uuid, {"mon_host": t["mon_host"], "key": t["key"]})
PY
}

peer_sites() {
  has_peer site-a && has_peer site-b && return 0
  log "peering site-a <-> site-b (bootstrap create on site-a, import rx-tx on site-b)"
  peer_token site-a >"$STATE/peer-token"
  peer_import site-b "$STATE/peer-token"
  wait_until "the peer to appear on site-a" has_peer site-a
}

need_site_c() {
  local s
  for s in site-a site-c; do
    is_running "$(site_dir "$s")/run/mon.$(site_id "$s").pid" ||
      die "$s is not running; run: RBD_MIRROR_LAB_SITES=\"site-a site-b site-c\" $0 up"
  done
}

# peer_a_c: pool mirror site-a <-> site-c (librbd peer_site_add on both: a second peer of
# site-a); the three-site tests do it for their own duration only.
peer_a_c() {
  need_site_c
  if ! has_peer_site site-a "$POOL" site-c; then
    log "peering site-a <-> site-c on $POOL (librbd peer_site_add on both: a second peer of site-a)"
    peer_token site-c >"$STATE/peer-token-c"
    peer_add_api site-a "$POOL" site-c "$STATE/peer-token-c"
  fi
  if ! has_peer_site site-c "$POOL" site-a; then
    peer_token site-a >"$STATE/peer-token-a"
    peer_add_api site-c "$POOL" site-a "$STATE/peer-token-a"
  fi
  if ! has_peer_site site-a "$POOL" site-c || ! has_peer_site site-c "$POOL" site-a; then
    die "site-a <-> site-c on $POOL: a peer is missing after adding it"
  fi
}

peer_uuids() {  # peer_uuids SITE POOL PEER_SITE: uuids of SITE's peers named PEER_SITE
  rbdc "$1" mirror pool info "$2" --format json | jq -r --arg p "$3" '.peers[] | select(.site_name == $p) | .uuid'
}

# unpeer_a_c: removes what peer_a_c adds, on both sides (only site-a's site-c peer and
# site-c's site-a peer of pool mirror; site-a's peer site-b stays).
unpeer_a_c() {
  need_site_c
  local s peer uuid
  for s in site-a site-c; do
    peer=site-c; [[ $s == site-c ]] && peer=site-a
    for uuid in $(peer_uuids "$s" "$POOL" "$peer"); do
      log "$s: removing peer $peer ($uuid) of $POOL"
      rbdc "$s" mirror pool peer remove "$POOL" "$uuid"
    done
  done
  if has_peer_site site-a "$POOL" site-c || has_peer_site site-c "$POOL" site-a; then
    die "site-a <-> site-c on $POOL: a peer is still there after removing it"
  fi
}

# peer_c_b: pool mirror-c site-c -> site-b (bootstrap; each site's single peer of the pool).
peer_c_b() {
  if ! has_peer_site site-b "$POOL_C" site-c; then
    log "peering site-c -> site-b on $POOL_C (bootstrap create on site-c, import rx-tx on site-b)"
    peer_token site-c "$POOL_C" >"$STATE/peer-token-c-$POOL_C"
    peer_import site-b "$STATE/peer-token-c-$POOL_C" "$POOL_C"
    wait_until "the peer to appear on site-c's $POOL_C" has_peer site-c "$POOL_C"
  fi
}

# ---- commands ---------------------------------------------------------------------
cmd_up() {
  check_packages
  mkdir -p "$STATE"
  local t0=$SECONDS s
  for s in "${SITES[@]}"; do
    [[ -f $(site_dir "$s")/.created ]] || create_site "$s"
    write_conf "$s"
    start_site "$s"
  done
  for s in "${SITES[@]}"; do
    setup_pool "$s"
    [[ $s != site-a && " ${SITES[*]} " == *" site-c "* ]] && setup_pool "$s" "$POOL_C"
    [[ ${RBD_MIRROR_LAB_PROMETHEUS:-0} == 1 ]] && cephc "$s" mgr module enable prometheus
  done
  [[ " ${SITES[*]} " == *" site-a "* && " ${SITES[*]} " == *" site-b "* ]] && peer_sites
  if [[ " ${SITES[*]} " == *" site-b "* && " ${SITES[*]} " == *" site-c "* ]]; then peer_c_b; fi
  # site-a <-> site-c on pool mirror only while a three-site test runs: a leftover goes
  if [[ " ${SITES[*]} " == *" site-a "* && " ${SITES[*]} " == *" site-c "* ]]; then unpeer_a_c; fi
  for s in "${SITES[@]}"; do log "$s: fsid $(cat "$(site_dir "$s")/fsid"), conf $(conf "$s")"; done
  log "up in $((SECONDS - t0))s"
}

cmd_down() {
  local s
  # every site of the state directory, also a site-c that "up" with the default sites skips
  for s in site-a site-b site-c; do stop_site "$s"; done
  log "down"
}

cmd_status() {
  local s f rc=0
  for s in "${SITES[@]}"; do
    echo "== $s ($(site_ip "$s"))"
    if [[ ! -f $(site_dir "$s")/.created ]]; then echo "  not created"; rc=1; continue; fi
    for f in "$(site_dir "$s")"/run/*.pid; do
      [[ -e $f ]] || continue
      if is_running "$f"; then echo "  $(basename "$f" .pid): running, pid $(cut -d' ' -f1 "$f")"
      else echo "  $(basename "$f" .pid): NOT RUNNING (stale pid file)"; rc=1; fi
    done
    if is_running "$(site_dir "$s")/run/mon.$(site_id "$s").pid"; then
      TIMEOUT=20 cephc "$s" -s 2>&1 | sed 's/^/  /' || rc=1
      TIMEOUT=20 rbdc "$s" mirror pool status "$POOL" 2>&1 | sed 's/^/  /' || rc=1
      if [[ $s != site-a && -f $(site_dir site-c)/.created ]]; then
        TIMEOUT=20 rbdc "$s" mirror pool status "$POOL_C" 2>&1 | sed 's/^/  /' || rc=1
      fi
    else rc=1; fi
  done
  return $rc
}

cmd_env() {
  local s=${1:?usage: lab.sh env site-a|site-b|site-c} d; site_ip "$s" >/dev/null; d=$(site_dir "$s")
  [[ -f $d/.created ]] || die "$s does not exist; run: $0 up"
  cat <<ENV
export CEPH_CONF='$(conf "$s")'
export RBD_MIRROR_LAB_SITE='$s'
export RBD_MIRROR_LAB_FSID='$(cat "$d/fsid")'
export RBD_MIRROR_LAB_MON_HOST='$(mon_host "$s")'
export RBD_MIRROR_LAB_KEYRING='$d/$s.client.admin.keyring'
export RBD_MIRROR_LAB_MIRROR_KEYRING='$d/$s.client.rbd-mirror.$(site_id "$s").keyring'
ENV
}

which_sites() { case ${1:-$2} in all) echo "${SITES[@]}" ;; site-a | site-b | site-c) echo "${1:-$2}" ;; *) die "unknown site '${1:-}'" ;; esac; }

mirror_instance() {  # the RBD_MIRROR_LAB_MIRROR_INSTANCE suffix ("" for the site's first)
  local n=${RBD_MIRROR_LAB_MIRROR_INSTANCE:-}
  [[ -z $n || $n == 1 ]] && return 0
  [[ $n =~ ^[2-9]$ ]] || die "RBD_MIRROR_LAB_MIRROR_INSTANCE must be 1..9"
  echo "$n"
}

cmd_mirror_start() {
  local s id asok n; n=$(mirror_instance)
  for s in $(which_sites "${1:-}" site-b); do
    [[ -f $(site_dir "$s")/.created ]] || die "$s does not exist; run: $0 up"
    id=$(site_id "$s")$n; asok=$(site_dir "$s")/run/client.rbd-mirror.$id.asok
    if [[ ! -f $(site_dir "$s")/$s.client.rbd-mirror.$id.keyring ]]; then
      cephc "$s" auth get-or-create "client.rbd-mirror.$id" mon 'profile rbd-mirror' osd 'profile rbd' \
        -o "$(site_dir "$s")/$s.client.rbd-mirror.$id.keyring"
    fi
    # ours serves Prometheus metrics on the site's address (the stock one has no endpoint),
    # or on its default (*:9287) with RBD_MIRROR_LAB_METRICS_DEFAULT=1
    if [[ -n ${RBD_MIRROR_LAB_METRICS_DEFAULT:-} ]]; then unset RBD_MIRROR_RS_METRICS_ADDR
    elif [[ -n $MIRROR_BIN ]]; then
      RBD_MIRROR_RS_METRICS_ADDR="$(site_ip "$s"):$(site_port_prefix "$s")2$((87 + ${n:-0}))"; export RBD_MIRROR_RS_METRICS_ADDR
    fi
    local more=()   # another instance: its own log and admin socket (the conf names the first's)
    [[ -n $n ]] && more=(--log-file "$(site_dir "$s")/log/client.rbd-mirror.$id.log" --admin-socket "$asok")
    # shellcheck disable=SC2086 # RBD_MIRROR_LAB_MIRROR_ARGS: several arguments
    START_CGROUP=${RBD_MIRROR_LAB_MIRROR_CGROUP:-} \
      start_daemon "$s" "rbd-mirror.$id" "${MIRROR_BIN:-rbd-mirror}" --id "rbd-mirror.$id" "${more[@]}" ${RBD_MIRROR_LAB_MIRROR_ARGS:-}
    if [[ -z $MIRROR_BIN ]]; then
      wait_until "$s rbd-mirror admin socket" timeout 10 ceph --admin-daemon "$asok" version
    fi
    log "$s: rbd-mirror.$id running ($(basename "${MIRROR_BIN:-rbd-mirror}")), log $(site_dir "$s")/log/"
  done
}

cmd_mirror_stop() {
  local s f n; n=$(mirror_instance)
  for s in $(which_sites "${1:-}" all); do
    if [[ -n ${RBD_MIRROR_LAB_MIRROR_INSTANCE:-} ]]; then stop_daemon "$s" "rbd-mirror.$(site_id "$s")$n"; continue; fi
    for f in "$(site_dir "$s")"/run/rbd-mirror."$(site_id "$s")"*.pid; do
      if [[ -e $f ]]; then stop_daemon "$s" "$(basename "$f" .pid)"; fi
    done
  done
}

one_site() { case ${1:-} in site-a | site-b | site-c) [[ -f $(site_dir "$1")/.created ]] || die "$1 does not exist; run: $0 up" ;; *) die "usage: lab.sh $2 site-a|site-b|site-c" ;; esac; }

cmd_osd_stop() {
  one_site "${1:-}" osd-stop
  stop_daemon "$1" "osd.$(cat "$(site_dir "$1")/osd-id")"
  log "$1: osd stopped"
}

cmd_osd_start() {
  one_site "${1:-}" osd-start
  local osd; osd=$(cat "$(site_dir "$1")/osd-id")
  start_daemon "$1" "osd.$osd" ceph-osd -i "$osd"
  wait_until "$1 osd.$osd up" osd_up "$1"
  wait_until "$1 placement groups active" pgs_active "$1"
  log "$1: osd.$osd up"
}

cmd_purge() { cmd_down; rm -rf "$STATE"; log "removed $STATE"; }

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env "${2:-}" ;;
  dir) echo "$STATE" ;;
  mirror-start) cmd_mirror_start "${2:-}" ;;
  mirror-stop) cmd_mirror_stop "${2:-}" ;;
  osd-stop) cmd_osd_stop "${2:-}" ;;
  osd-start) cmd_osd_start "${2:-}" ;;
  peer-token) site_ip "${2:-}" >/dev/null && peer_token "$2" ;;
  peer-c) peer_a_c ;;
  unpeer-c) unpeer_a_c ;;
  peer-import)
    [[ -n ${2:-} && -f ${3:-} ]] || die "usage: lab.sh peer-import SITE FILE"
    site_ip "$2" >/dev/null && peer_import "$2" "$3" ;;
  purge) cmd_purge ;;
  *) sed -n '11,44p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
