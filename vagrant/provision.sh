#!/usr/bin/env bash
# vagrant/provision.sh SITE SITE_A_IP SITE_B_IP: makes this machine one site of the two-site
# setup, with the scripts CI and the lab run, so what it does is tested on every CI run but
# for the VMs themselves:
#   deploy/install-deps.sh          Ceph Pacific packages, compilers, Rust (as tests/run.sh)
#   tests/lab/lab.sh up             a one-node cluster, pool "mirror" in image mode, this
#                                   site only, on the VM's address (RBD_MIRROR_LAB_SITES,
#                                   RBD_MIRROR_LAB_SITE_A_IP/_SITE_B_IP)
#   lab.sh peer-token / peer-import `rbd mirror pool peer bootstrap` through the synced folder
#   deploy/build-deb.sh, apt-get install, deploy/systemd/setup-site.sh, systemctl
#                                   site-b only: rbd-mirror-rs under its unit (as
#                                   tests/deploy/systemd.sh installs and starts it)
# Then a journal-mode image is created at site-a; site-b shows it replaying.
# Re-runnable (`vagrant provision`): every step is idempotent.
set -euo pipefail
site=${1:?usage: provision.sh SITE SITE_A_IP SITE_B_IP}
export RBD_MIRROR_LAB_SITE_A_IP=${2:?} RBD_MIRROR_LAB_SITE_B_IP=${3:?}
export RBD_MIRROR_LAB_SITES=$site RBD_MIRROR_LAB_DIR=/var/lib/rbd-mirror-rs-lab
cd "$(dirname "$0")/.."
token=vagrant/.peer-token

deploy/install-deps.sh
# shellcheck disable=SC1091
source "$HOME/.cargo/env"
tests/lab/lab.sh up
eval "$(tests/lab/lab.sh env "$site")"

case $site in
  site-a)
    tests/lab/lab.sh peer-token site-a >"$token"
    echo "provision: site-a is up; its peer token is in $token for site-b"
    ;;
  site-b)
    [[ -s $token ]] || { echo "provision: no $token: provision site-a first (vagrant up --no-parallel)" >&2; exit 1; }
    if [[ $(rbd -c "$CEPH_CONF" --cluster site-b mirror pool info mirror --format json | jq '.peers | length') == 0 ]]; then
      tests/lab/lab.sh peer-import site-b "$token"
    fi
    deb=$(deploy/build-deb.sh)
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$(realpath "$deb")"
    deploy/systemd/setup-site.sh site-b rbd-mirror.b "$RBD_MIRROR_LAB_FSID" "$RBD_MIRROR_LAB_MON_HOST" \
      "$RBD_MIRROR_LAB_MIRROR_KEYRING"
    systemctl enable --now rbd-mirror-rs@rbd-mirror.b
    systemctl --no-pager status rbd-mirror-rs@rbd-mirror.b | head -n 5
    echo "provision: site-b runs rbd-mirror-rs@rbd-mirror.b; on site-a try:"
    echo "  rbd -c $RBD_MIRROR_LAB_DIR/site-a/site-a.conf --cluster site-a create mirror/demo --size 1G --image-feature exclusive-lock,journaling"
    echo "  rbd -c $RBD_MIRROR_LAB_DIR/site-a/site-a.conf --cluster site-a mirror image enable mirror/demo journal"
    ;;
  *) echo "provision: unknown site $site" >&2; exit 2 ;;
esac
