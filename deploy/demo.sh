#!/usr/bin/env bash
# deploy/demo.sh — the demo on a fresh Debian 12 machine: installs what it needs, builds
# rbd-mirror-rs, brings up the two-cluster lab (tests/lab/lab.sh), creates on site-a an image
# mirrored in journal mode and one mirrored in snapshot mode, starts OUR daemon at site-b
# exactly as the stock one is started, and shows the stock tools agreeing: `rbd mirror image
# status` up+replaying on site-b, equal `rbd export | sha256sum` on both sites, and our
# Prometheus metrics.
#   tests/lab/lab.sh down     stops everything afterwards; tests/lab/lab.sh purge deletes it
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

deploy/install-deps.sh
# shellcheck disable=SC1091
[[ -f $HOME/.cargo/env ]] && source "$HOME/.cargo/env"

say() { printf '\n==== %s\n' "$*"; }

say "building rbd-mirror-rs (release)"
cargo build --release --locked -p daemon
bin=$root/target/release/rbd-mirror-rs

say "two Ceph clusters: site-a (127.0.0.1) and site-b (127.0.0.2)"
tests/lab/lab.sh up
lab=$(tests/lab/lab.sh dir)
a=(--cluster site-a -c "$lab/site-a/site-a.conf")
b=(--cluster site-b -c "$lab/site-b/site-b.conf")

say "a journaling image 'demo' on site-a, mirrored in journal mode, with 16 MiB written"
if ! rbd "${a[@]}" info mirror/demo >/dev/null 2>&1; then
  rbd "${a[@]}" create mirror/demo --size 256M --image-feature layering,exclusive-lock,object-map,fast-diff,journaling
  rbd "${a[@]}" mirror image enable mirror/demo journal
  rbd "${a[@]}" bench mirror/demo --io-type write --io-size 64K --io-total 16M >/dev/null
fi
rbd "${a[@]}" info mirror/demo

say "rbd-mirror-rs at site-b, started as the stock daemon is (lab.sh mirror-start)"
tests/lab/lab.sh mirror-stop site-b
RBD_MIRROR_LAB_MIRROR_BIN=$bin tests/lab/lab.sh mirror-start site-b

say "rbd-mirror-rs check (site-b, as client.rbd-mirror.b, from the site's directory)"
(cd "$lab/site-b" && "$bin" --cluster site-b -c site-b.conf --id rbd-mirror.b check)

say "waiting for site-b to replay mirror/demo"
for _ in $(seq 1 120); do
  state=$(rbd "${b[@]}" mirror image status mirror/demo --format json 2>/dev/null | jq -r .state || true)
  [[ $state == up+replaying ]] && break
  sleep 1
done
say "more writes on site-a while replicating: 4K random writes"
rbd "${a[@]}" bench mirror/demo --io-type write --io-size 4K --io-pattern rand --io-total 8M >/dev/null
sleep 5

say "rbd mirror image status mirror/demo (site-b)"
rbd "${b[@]}" mirror image status mirror/demo
say "rbd mirror pool status --verbose (site-b)"
rbd "${b[@]}" mirror pool status mirror --verbose || true
say "rbd export | sha256sum on both sites"
echo "site-a: $(rbd "${a[@]}" export --no-progress mirror/demo - | sha256sum)"
echo "site-b: $(rbd "${b[@]}" export --no-progress mirror/demo - | sha256sum)"

say "a second image 'demo-snap', mirrored in snapshot mode: 32 MiB written, then a mirror snapshot"
if ! rbd "${a[@]}" info mirror/demo-snap >/dev/null 2>&1; then
  rbd "${a[@]}" create mirror/demo-snap --size 256M --image-feature layering,exclusive-lock,object-map,fast-diff
  rbd "${a[@]}" mirror image enable mirror/demo-snap snapshot
fi
rbd "${a[@]}" bench mirror/demo-snap --io-type write --io-size 4M --io-total 32M >/dev/null
rbd "${a[@]}" mirror image snapshot mirror/demo-snap
# synced = site-b has a complete non-primary snapshot of site-a's newest mirror snapshot
newest=$(rbd "${a[@]}" snap ls --all --format json mirror/demo-snap | jq '[.[] | select(.namespace.type == "mirror") | .id] | max')
for _ in $(seq 1 120); do
  synced=$(rbd "${b[@]}" snap ls --all --format json mirror/demo-snap 2>/dev/null |
    jq --argjson id "$newest" 'any(.[]; .namespace.primary_snap_id == $id and .namespace.complete)' || true)
  [[ $synced == true ]] && break
  sleep 1
done
sleep 2   # the status is published right after the sync's last step (pruning)
say "rbd mirror image status mirror/demo-snap (site-b)"
rbd "${b[@]}" mirror image status mirror/demo-snap
echo "site-a: $(rbd "${a[@]}" export --no-progress mirror/demo-snap - | sha256sum)"
echo "site-b: $(rbd "${b[@]}" export --no-progress mirror/demo-snap - | sha256sum)"

say "our Prometheus metrics (lab: site-b's address, port 26287)"
curl -s http://127.0.0.2:26287/metrics | grep -E '^(ceph_rbd_mirror_(replay|image_replay|snapshot)|rbd_mirror_rs_image_(full_syncs|state|entries_behind_primary))' | head -n 12 || true
tail -n 3 "$lab/site-b/log/client.rbd-mirror.b.log"

cat <<MSG

rbd-mirror-rs keeps replicating mirror/demo. Try:
  rbd --cluster site-a -c $lab/site-a/site-a.conf bench mirror/demo --io-type write --io-total 32M
  rbd --cluster site-b -c $lab/site-b/site-b.conf mirror image status mirror/demo
  rbd --cluster site-a -c $lab/site-a/site-a.conf mirror image snapshot mirror/demo-snap
  curl -s http://127.0.0.2:26287/metrics
  tests/lab/lab.sh status
  tests/lab/lab.sh down        # stop (tests/lab/lab.sh purge also deletes $lab)
MSG
