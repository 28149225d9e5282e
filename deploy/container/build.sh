#!/usr/bin/env bash
# deploy/container/build.sh — builds the rbd-mirror-rs container image on this machine with
# podman, without any image registry: the Debian 12 base image is made locally with
# debootstrap from the apt mirror this machine already uses, and reused once it exists.
#
# usage: deploy/container/build.sh [--binary PATH] [--rebuild-base]
#   --binary PATH    put this rbd-mirror-rs binary in the image (default: build it with
#                    `cargo build --release -p daemon --locked` and take target/release/rbd-mirror-rs)
#   --rebuild-base   make the base image again even if it exists
#
# Tags localhost/rbd-mirror-rs:<version> (the binary's own `--version`) and :latest, and prints
# the image id on the last line of stdout.
#
# Environment:
#   RBD_MIRROR_RS_BINARY      as --binary
#   RBD_MIRROR_IMAGE          image name (default localhost/rbd-mirror-rs)
#   RBD_MIRROR_BASE_IMAGE     base image (default localhost/debian:bookworm)
#   RBD_MIRROR_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the host's apt source for
#                             bookworm, read from /etc/apt/sources.list{,.d/*})
#
# Needs root (debootstrap, rootful podman); installs podman and debootstrap with apt-get when
# missing. Builds with `podman build --isolation=chroot` (the default OCI isolation needs
# cgroups that some hosts, e.g. hybrid cgroup v1/v2 ones, cannot give).
set -euo pipefail

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "build.sh: $*" >&2; }

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
IMAGE=${RBD_MIRROR_IMAGE:-localhost/rbd-mirror-rs}
BASE=${RBD_MIRROR_BASE_IMAGE:-localhost/debian:bookworm}
BINARY=${RBD_MIRROR_RS_BINARY:-}
REBUILD_BASE=0

while (($#)); do
  case $1 in
    --binary) [[ $# -ge 2 ]] || die "--binary needs a path"; BINARY=$2; shift 2 ;;
    --binary=*) BINARY=${1#--binary=}; shift ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

((EUID == 0)) || die "run as root (debootstrap and rootful podman)"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

# ---- tools --------------------------------------------------------------------------
need=()
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d /var/tmp/rbd-mirror-rs-build.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# ---- the host's apt configuration ---------------------------------------------------
# Every enabled source file (one-line *.list and deb822 *.sources), and the Acquire settings
# that reach the mirror (proxies, Valid-Until/Date checks of snapshot mirrors, retries).
apt_context() {
  local dir=$1 f
  mkdir -p "$dir/sources.list.d"
  : >"$dir/sources.list"
  [[ -f /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$dir/sources.list"
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && cp "$f" "$dir/sources.list.d/"
  done
  {
    echo "// written by deploy/container/build.sh from the building host's apt configuration"
    echo "Dir::Etc::SourceList \"/run/build-apt/sources.list\";"
    echo "Dir::Etc::SourceParts \"/run/build-apt/sources.list.d\";"
    apt-config dump | grep -E '^Acquire::(https?|ftp|Check-Valid-Until|Check-Date|Retries|ForceIPv4|ForceIPv6|Max-ValidTime|Min-ValidTime)( |::)' || true
  } >"$dir/apt.conf"
  grep -qrE '^[[:space:]]*(deb[[:space:]]|URIs:)' "$dir/sources.list" "$dir/sources.list.d" \
    || die "no apt source found in /etc/apt/sources.list{,.d/}"
}

# The host's Debian mirror for bookworm (deb822 stanza or one-line entry), for debootstrap.
debian_mirror() {
  if [[ -n ${RBD_MIRROR_DEBIAN_MIRROR:-} ]]; then echo "$RBD_MIRROR_DEBIAN_MIRROR"; return; fi
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # stanzas are separated by blank lines; take URIs of a stanza whose Suites has "bookworm"
    uri=$(awk 'BEGIN { RS = "" } /(^|\n)Suites:[^\n]*[[:space:]]bookworm([[:space:]]|$)/ && /(^|\n)Types:[^\n]*deb([[:space:]]|$)/ {
                 if (match($0, /(^|\n)URIs:[[:space:]]*[^[:space:]\n]+/)) { s = substr($0, RSTART, RLENGTH); sub(/^\n?URIs:[[:space:]]*/, "", s); print s; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i + 1) == "bookworm") { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  die "no Debian bookworm mirror in /etc/apt/sources.list{,.d/}; set RBD_MIRROR_DEBIAN_MIRROR"
}

# ---- base image ---------------------------------------------------------------------
if ((REBUILD_BASE == 0)) && podman image exists "$BASE"; then
  log "base image $BASE exists: reused"
else
  mirror=$(debian_mirror)
  log "making $BASE: debootstrap --variant=minbase bookworm from $mirror"
  t0=$SECONDS
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar --numeric-owner -C "$WORK/rootfs" -c . | podman import --quiet - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
  log "base image $BASE made in $((SECONDS - t0))s"
fi

# ---- the binary ---------------------------------------------------------------------
if [[ -z $BINARY ]]; then
  # shellcheck disable=SC1091
  [[ -f $HOME/.cargo/env ]] && source "$HOME/.cargo/env"
  command -v cargo >/dev/null || die "cargo not found (deploy/install-deps.sh installs it), or give --binary"
  log "building the release binary (cargo build --release -p daemon --locked)"
  (cd "$ROOT" && cargo build --release -p daemon --locked)
  BINARY=$ROOT/target/release/rbd-mirror-rs
fi
[[ -x $BINARY ]] || die "no executable binary at $BINARY"
VERSION=$("$BINARY" --version | awk '{print $2}')
[[ $VERSION =~ ^[0-9A-Za-z.+-]+$ ]] || die "cannot read the version of $BINARY (got '$VERSION')"

# ---- build --------------------------------------------------------------------------
ctx=$WORK/context
mkdir -p "$ctx"
cp "$HERE/Containerfile" "$ctx/Containerfile"
cp "$BINARY" "$ctx/rbd-mirror-rs"
apt_context "$ctx/apt"

log "building $IMAGE:$VERSION from $BASE"
t0=$SECONDS
podman build --isolation=chroot --pull=never \
  --build-arg "BASE=$BASE" --build-arg "VERSION=$VERSION" \
  -f "$ctx/Containerfile" -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$ctx" >&2
# earlier builds of ours that lost their tags (each keeps a copy of the binary)
podman image prune --force --filter "label=org.opencontainers.image.title=rbd-mirror-rs" >/dev/null \
  || log "warning: podman image prune failed"
id=$(podman image inspect --format '{{.Id}}' "$IMAGE:$VERSION")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE:$VERSION")
log "built $IMAGE:$VERSION and :latest in $((SECONDS - t0))s: id ${id:0:12}, $((size / 1048576)) MiB"
echo "$id"
